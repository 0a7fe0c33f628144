"""NVlabs/NVAE checkpoints -> jaxgen: encoder and decoder outputs, log q, log p, KL per group and the
reconstruction NLL equal the official code's, with the official posterior noise fed in and BatchNorm in eval mode
(running statistics). Fixtures: tests/reference/nvae/make_fixture.py."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import convert
from jaxgen.convert import nvae as convert_nvae
from jaxgen.training import steps
from jaxgen.training import trainer
from tests.convert import conftest


def official(name):
  return {"state_dict": conftest.load_npz(conftest.reference("nvae", f"{name}/state_dict.npz")),
          "args": conftest.load_json(conftest.reference("nvae", f"{name}/args.json"))}


def outputs(model, variables, ref, monkeypatch):
  """jaxgen's encoder output (ELU of enc0), decoder parameters, log q, log p, KL terms and reconstruction NLL, with
  the official posterior noise (eps_0, eps_1, ... in decoder order) in place of jax.random.normal's."""
  noise = [jnp.asarray(ref[f"eps_{i}"]) for i in range(sum(k.startswith("eps_") for k in ref))]

  def fed(rng, shape, dtype=jnp.float32):
    eps = noise.pop(0)
    assert eps.shape == tuple(shape), (eps.shape, shape)
    return eps.astype(dtype)

  def run(module, images):
    x, target = module._preprocess(images)
    params, aux = module._forward(x, train=False)
    return params, aux, module._nll(params, target)

  monkeypatch.setattr(jax.random, "normal", fed)  # called while tracing: the noise becomes constants
  (params, aux, recon), inter = jax.jit(lambda v, im: model.apply(
      v, im, method=run, rngs={"sample": jax.random.key(0)}, capture_intermediates=lambda m, _: m.name == "enc0",
      mutable=["intermediates"]))(variables, jnp.asarray(ref["images"]))
  assert not noise, "every fed noise tensor is used"
  return dict(enc0=jax.nn.elu(inter["intermediates"]["enc0"]["__call__"][0]), params=params, recon=recon,
              log_q=aux["log_q"], log_p=aux["log_p"], kl_all=aux["kl_all"],
              kl_diag=np.concatenate([np.mean(k, axis=0) for k in aux["kl_diag"]]))


def assert_matches_official(out, ref, model):
  logits = ref["logits"]  # official layout, top-left 8x8 corner
  if not model.binarized:
    logits = logits[..., convert_nvae.dmol_permutation(model.num_mixture_dec)]
  # Measured (CIFAR-10-style / MNIST-style): enc0 max abs diff 1.2e-7 / 1.5e-7 and decoder parameters 1.5e-7 / 3e-8
  # (values up to ~0.5); log q, log p, KL per group and recon max relative diff 5.3e-7 / 5.2e-7 (log p ~2.5e3 /
  # 4.8e2, recon ~1.9e4 / 5.1e2 nats); per-channel KL 3.9e-6 / 4.9e-7 relative.
  np.testing.assert_allclose(out["enc0"], ref["enc0"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(out["params"][:, :8, :8], logits, rtol=1e-5, atol=1e-5)
  for key in ("log_q", "log_p", "kl_all", "kl_diag", "recon"):
    np.testing.assert_allclose(out[key], ref[key], rtol=1e-5, atol=1e-4, err_msg=key)


@pytest.fixture(scope="module")
def restored(tmp_path_factory):
  config, variables = convert_nvae.convert(official("nvae_cifar10"))
  return conftest.write_and_restore(config, variables, tmp_path_factory.mktemp("nvae") / "run")


def test_cifar10_checkpoint_through_a_run_directory_matches_the_official_outputs(restored, monkeypatch):
  s, state = restored
  assert s.config.dataset == "cifar10" and s.config.model.num_nf == 1 and s.config.model.num_mixture_dec == 3
  ref = conftest.load_npz(conftest.reference("nvae", "nvae_cifar10/official.npz"))
  assert_matches_official(outputs(s.model, steps.eval_variables(state), ref, monkeypatch), ref, s.model)


def test_mnist_bernoulli_checkpoint_matches_the_official_outputs(monkeypatch):
  config, variables = convert_nvae.convert(official("nvae_mnist"))
  assert (config.dataset, config.binarize, config.model.pad, config.model.binarized) == ("mnist", "dynamic", 2, True)
  _, model = trainer.build_model(config)
  ref = conftest.load_npz(conftest.reference("nvae", "nvae_mnist/official.npz"))
  variables = {"params": variables["params"], **variables["model_state"]}
  assert_matches_official(outputs(model, variables, ref, monkeypatch), ref, model)


def test_config_comes_from_args_with_the_defaults_of_older_files():
  args = {k: v for k, v in official("nvae_cifar10")["args"].items()
          if k not in convert_nvae.OLD_FILE_DEFAULTS}  # as in files written before these flags existed
  model = convert_nvae.model_config(args)
  assert (model["ada_groups"], model["min_groups_per_scale"], model["num_mixture_dec"]) == (False, 1, 10)
  assert model["image_shape"] == (32, 32, 3) and model["num_bits"] == 8 and not model["binarized"]
  celeba = convert_nvae.model_config(args | {"dataset": "celeba_64", "num_x_bits": 5})
  assert celeba["image_shape"] == (64, 64, 3) and celeba["num_bits"] == 5


@pytest.mark.parametrize("change, message", [
    ({"arch_instance": "res_elu"}, "arch_instance='res_elu'"),
    ({"dataset": "omniglot"}, "dataset='omniglot'"),
    ({"num_mixture_dec": 1}, "num_mixture_dec=1"),
])
def test_settings_jaxgen_cannot_express_are_named(change, message):
  bad = official("nvae_cifar10")
  bad["args"] |= change
  with pytest.raises(convert.ConversionError, match=message):
    convert_nvae.convert(bad)


def test_state_dict_entries_without_a_place_or_shape_are_named():
  bad = official("nvae_cifar10")
  bad["state_dict"]["enc_tower.0.extra.weight"] = np.zeros((4, 4, 1, 1), np.float32)
  with pytest.raises(convert.ConversionError, match=r"enc_tower\.0\.extra\.weight"):
    convert_nvae.convert(bad)
  bad = official("nvae_cifar10")
  bad["args"]["num_latent_per_group"] = 4  # the samplers' weights hold 2 x 3 channels
  with pytest.raises(convert.ConversionError, match="do not fit the model args describe"):
    convert_nvae.convert(bad)


def test_read_gives_the_published_file_as_the_fixture_npz():
  pytest.importorskip("torch")
  got = convert_nvae.read(conftest.reference("nvae", "nvae_cifar10/nvae_cifar10.pt"))
  want = official("nvae_cifar10")
  assert sorted(got["state_dict"]) == sorted(want["state_dict"])
  for k, v in want["state_dict"].items():
    np.testing.assert_array_equal(got["state_dict"][k], v, err_msg=k)
  assert json.loads(json.dumps(got["args"])) == want["args"] and got["epoch"] == 0
  assert os.path.getsize(conftest.reference("nvae", "nvae_cifar10/nvae_cifar10.pt")) < 300_000
