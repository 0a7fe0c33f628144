"""pytorch-fid's Inception weights -> jaxgen.metrics.inception: pool3 features equal pytorch-fid's FID network
(resize to 299 and scaling included). The weights are random (seeded) in pytorch-fid's state-dict format, rebuilt
here in numpy by the fixture script's own function: the real 91 MB file is neither committed nor downloaded."""
import importlib.util

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxgen import convert
from jaxgen.convert import inception as convert_inception
from jaxgen.metrics import inception
from jaxgen.metrics import sample_quality
from tests.convert import conftest

TORCH_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def fixture_script():
  spec = importlib.util.spec_from_file_location("inception_make_fixture",
                                                conftest.reference("inception", "make_fixture.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def published_shapes():
  """{torch name: shape} of pytorch-fid's FID Inception state dict (jaxgen's tree in torch names, plus fc)."""
  tree = jax.eval_shape(inception.InceptionV3().init, jax.random.key(0), jnp.zeros((1, 299, 299, 3)))
  shapes = {"fc.weight": (1008, 2048), "fc.bias": (1008,)}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    keys = [str(k.key) for k in path]
    name = ".".join(keys[1:-1] + [TORCH_LEAF[keys[-1]]])
    shapes[name] = (leaf.shape[3], leaf.shape[2], leaf.shape[0], leaf.shape[1]) if keys[-1] == "kernel" else leaf.shape
    if keys[-1] == "var":
      shapes[name.replace("running_var", "num_batches_tracked")] = ()
  return shapes


@pytest.mark.parametrize("resize, key", [("pytorch_fid", "pool3"), ("stylegan2_ada", "pool3_ada")])
def test_pool3_features_equal_the_official_network(resize, key, tmp_path):
  state_dict = fixture_script().random_state_dict(published_shapes())
  _, flat = convert_inception.convert({"state_dict": state_dict})
  np.savez(tmp_path / "inception.npz", **flat)
  ref = conftest.load_npz(conftest.reference("inception", "official.npz"))
  feats = inception.pool3_features(inception.load_variables(tmp_path / "inception.npz"), ref["images"], resize=resize)
  # Measured: max abs diff 7.6e-6 (pytorch_fid) and 6.7e-6 (stylegan2_ada) on features up to 15 (mean 1.7); the
  # two front ends differ by up to 0.29, so each is told apart from the other.
  np.testing.assert_allclose(feats, ref[key], rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("resize, key", [("pytorch_fid", "logits"), ("stylegan2_ada", "logits_ada")])
def test_logits_equal_the_official_network(resize, key, tmp_path):
  state_dict = fixture_script().random_state_dict(published_shapes())
  _, flat = convert_inception.convert({"state_dict": state_dict})
  np.savez(tmp_path / "inception.npz", **flat)
  ref = conftest.load_npz(conftest.reference("inception", "official.npz"))
  variables = inception.load_variables(tmp_path / "inception.npz")
  got = inception.logits(variables, ref["images"], resize=resize)
  # Measured: max abs diff 8.4e-6 (pytorch_fid) and 9.2e-6 (stylegan2_ada) on logits up to 13 (max rel diff 9e-4,
  # at logits near 0; median 6e-7); the front ends differ by up to 0.17.
  np.testing.assert_allclose(got, ref[key], rtol=1e-5, atol=2e-5)
  del flat["params/fc/kernel"], flat["params/fc/bias"]  # an npz from before fc was kept: pool3 only
  np.savez(tmp_path / "old.npz", **flat)
  with pytest.raises(ValueError, match="jaxgen.convert.inception.write_npz"):
    inception.logits(inception.load_variables(tmp_path / "old.npz"), ref["images"][:1])


def test_the_front_end_is_a_sample_metrics_option():
  config = ml_collections.ConfigDict({"sample_metrics": {"inception_detector": "stylegan2-ada"}})
  assert sample_quality.settings(config)["inception_detector"] == "stylegan2-ada"
  assert sample_quality.DETECTORS["stylegan2-ada"].keywords == {"resize": "stylegan2_ada"}
  config.sample_metrics.inception_detector = "tf"
  with pytest.raises(ValueError, match="inception_detector='tf'"):
    sample_quality.settings(config)


def test_other_files_are_refused():
  with pytest.raises(convert.ConversionError, match="unexpected entry 'Mixed_5b.extra.weight'"):
    convert_inception.convert({"state_dict": {"Mixed_5b.extra.weight": np.zeros((1, 1, 1, 1))}})
  with pytest.raises(convert.ConversionError, match="no --config overrides"):
    convert_inception.convert({"state_dict": {}}, {"batch_size": "8"})


def test_read_takes_the_published_state_dict_format(tmp_path):
  torch = pytest.importorskip("torch")
  state_dict = fixture_script().random_state_dict(published_shapes())
  torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, tmp_path / "pt_inception.pth")
  got = convert_inception.read(str(tmp_path / "pt_inception.pth"))["state_dict"]
  assert sorted(got) == sorted(state_dict)
  for k, v in state_dict.items():
    np.testing.assert_array_equal(got[k], v, err_msg=k)
  torch.save({"state_dict": {}, "args": None}, tmp_path / "nvae.pt")
  with pytest.raises(convert.ConversionError, match="looks like a nvae checkpoint"):
    convert_inception.read(str(tmp_path / "nvae.pt"))
  torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "detector.pt"))
  with pytest.raises(convert.ConversionError, match="is a TorchScript network"):
    convert_inception.read(str(tmp_path / "detector.pt"))
