"""Glow-PyTorch checkpoints -> jaxgen: latents, log-det and bits/dim equal the official code's at fixed noise."""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import convert
from jaxgen.convert import glow as convert_glow
from jaxgen.flows import layers
from jaxgen.training import steps
from jaxgen.training import trainer
from tests.convert import conftest


def official(name):
  return {"state_dict": conftest.load_npz(conftest.reference("glow", f"{name}/state_dict.npz")),
          "hparams": conftest.load_json(conftest.reference("glow", f"{name}/hparams.json"))}


def outputs(model, variables, ref):
  """jaxgen's latents, log-det and bits/dim at the fixture's dequantisation noise."""
  x = ref["images"].astype(np.float32) / 256.0 - 0.5 + ref["noise"].astype(np.float32) / 256.0
  eps, log_det = model.apply(variables, jnp.asarray(x), method="forward_and_log_det")
  dims = x[0].size
  bpd = -(layers.flow_log_prob(eps, log_det) - dims * np.log(256.0)) / (dims * np.log(2.0))
  return eps, log_det, bpd


def assert_matches_official(eps, log_det, bpd, ref):
  # Measured: eps max abs diff 4.8e-6, log-det 4.9e-4 of ~3.4e3 (1.4e-7 relative), bpd 1.9e-6 of ~9.6.
  for i, e in enumerate(eps):
    np.testing.assert_allclose(e, ref[f"eps_{i}"], rtol=1e-5, atol=2e-5)
  np.testing.assert_allclose(log_det, ref["log_det"], rtol=1e-5)
  np.testing.assert_allclose(bpd, ref["bpd"], rtol=1e-5)


@pytest.fixture(scope="module")
def restored(tmp_path_factory):
  config, variables = convert_glow.convert(official("glow_lu_affine"))
  return conftest.write_and_restore(config, variables, tmp_path_factory.mktemp("glow") / "run")


def test_published_settings_convert_through_a_run_directory_to_the_official_outputs(restored):
  s, state = restored
  assert s.config.model.permutation == "conv_lu" and s.config.model.image_shape == [32, 32, 3]
  ref = conftest.load_npz(conftest.reference("glow", "glow_lu_affine/official.npz"))
  assert_matches_official(*outputs(s.model, steps.eval_variables(state), ref), ref)


def test_plain_conv_additive_without_learned_top_matches_the_official_outputs():
  config, variables = convert_glow.convert(official("glow_conv_additive"))
  assert config.model.permutation == "conv" and config.model.coupling == "additive" and not config.model.learn_top
  ref = conftest.load_npz(conftest.reference("glow", "glow_conv_additive/official.npz"))
  _, model = trainer.build_model(config)
  assert_matches_official(*outputs(model, {"params": variables["params"], **variables["model_state"]}, ref), ref)


def test_overrides_set_what_the_file_does_not_record():
  config, _ = convert_glow.convert(official("glow_lu_affine"), {"data_dir": "/data", "model.remat": "false",
                                                               "batch_size": "16"})
  assert (config.data_dir, config.model.remat, config.batch_size) == ("/data", False, 16)
  with pytest.raises(convert.ConversionError, match="no key 'lr_typo'"):
    convert_glow.convert(official("glow_lu_affine"), {"optimizer.lr_typo": "1"})


@pytest.mark.parametrize("change, message", [
    ({"y_condition": True}, "y_condition=true"),
    ({"flow_permutation": "shuffle"}, "flow_permutation=shuffle"),
    ({"K": 3}, "L=2 x K=3"),
])
def test_settings_jaxgen_cannot_load_are_named(change, message):
  bad = official("glow_lu_affine")
  bad["hparams"] |= change
  with pytest.raises(convert.ConversionError, match=message):
    convert_glow.convert(bad)


def test_write_run_names_a_misshapen_leaf_and_writes_nothing(tmp_path):
  config, variables = convert_glow.convert(official("glow_lu_affine"))
  variables["params"]["steps_1"]["step"]["actnorm"]["bias"] = np.zeros((2, 5), np.float32)
  with pytest.raises(convert.ConversionError, match=r"params/steps_1/step/actnorm/bias has shape \(2, 5\)"):
    convert.write_run(config, variables, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_read_refuses_a_checkpoint_of_another_family_and_a_truncated_file(tmp_path):
  pytest.importorskip("torch")
  with pytest.raises(convert.ConversionError, match="looks like a lmconv checkpoint"):
    convert_glow.read(conftest.reference("lmconv", "rgb/cifar_s8.pth"))
  truncated = tmp_path / "glow_affine_coupling.pt"
  with open(conftest.reference("glow", "glow_lu_affine/glow_affine_coupling.pt"), "rb") as f:
    truncated.write_bytes(f.read()[:5000])
  with pytest.raises(convert.ConversionError, match="not a readable torch checkpoint"):
    convert_glow.read(str(truncated))


def test_read_returns_the_state_dict_the_fixture_saved():
  pytest.importorskip("torch")
  got = convert_glow.read(conftest.reference("glow", "glow_lu_affine/glow_affine_coupling.pt"))
  want = official("glow_lu_affine")
  assert got["hparams"] == want["hparams"] and sorted(got["state_dict"]) == sorted(want["state_dict"])
  for k, v in want["state_dict"].items():
    np.testing.assert_array_equal(got["state_dict"][k], v)


def _convert_cli(tmp_path, checkpoint):
  workdir = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.convert", "--family=glow", f"--checkpoint={checkpoint}",
       f"--workdir={workdir}", "--config.data_dir=/nowhere"],
      capture_output=True, text=True, timeout=300, env=dict(os.environ, JAXGEN_HUGEPAGES="0"))
  return result, workdir


def test_cli_without_torch_says_which_extra_to_install_and_writes_nothing(tmp_path):
  try:
    import torch  # noqa: F401
    pytest.skip("torch is installed: test_cli_writes_a_run_directory covers the CLI")
  except ImportError:
    pass
  result, workdir = _convert_cli(tmp_path, conftest.reference("glow", "glow_lu_affine/glow_affine_coupling.pt"))
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1].startswith("error: Reading ")
  assert "pip install -e '.[convert]'" in result.stderr and "Traceback" not in result.stderr
  assert not os.path.exists(workdir)


def test_cli_writes_a_run_directory(tmp_path):
  pytest.importorskip("torch")
  checkpoint = conftest.reference("glow", "glow_lu_affine/glow_affine_coupling.pt")  # hparams.json beside it
  result, workdir = _convert_cli(tmp_path, checkpoint)
  assert result.returncode == 0, result.stderr
  assert json.load(open(workdir / "config.json"))["data_dir"] == "/nowhere"
  assert os.listdir(workdir / "checkpoints") == ["0"]
  result, _ = _convert_cli(tmp_path, checkpoint)  # a second time: the directory holds a run
  assert "already holds a run" in result.stderr
