"""The converter core and CLI: what every family's conversion relies on."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from experiments import convert as convert_cli
from jaxgen import convert
from jaxgen.convert import glow as convert_glow
from tests.convert import conftest


def glow_official():
  return {"state_dict": conftest.load_npz(conftest.reference("glow", "glow_lu_affine/state_dict.npz")),
          "hparams": conftest.load_json(conftest.reference("glow", "glow_lu_affine/hparams.json"))}


@pytest.mark.parametrize("edit, message", [
    (lambda v: v["params"].pop("top"), "lack 1 leaf/leaves .* params/top"),
    (lambda v: v["params"].update(extra=np.zeros(3)), "hold 1 leaf/leaves .* params/extra"),
    (lambda v: v["model_state"]["constants"]["steps_0"]["step"]["permute"].update(
        perm=np.zeros((2, 12, 11))), r"model_state/constants/steps_0/step/permute/perm has shape \(2, 12, 11\)"),
    (lambda v: v["params"].update(top=np.full(48, np.nan)), "params/top holds NaN"),
    (lambda v: v.update(optimizer={}), r"state field\(s\) \['optimizer'\]"),
])
def test_write_run_checks_every_leaf_before_writing(edit, message, tmp_path):
  config, variables = convert_glow.convert(glow_official())
  edit(variables)
  with pytest.raises(convert.ConversionError, match=message):
    convert.write_run(config, variables, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_a_workdir_that_holds_a_run_is_refused_before_reading(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  with pytest.raises(convert.ConversionError, match="already holds a run"):
    convert_cli.run("glow", "/no/such/file.pt", str(tmp_path))
  with pytest.raises(convert.ConversionError, match="--family='nvea' is not a module of jaxgen.convert"):
    convert_cli.run("nvea", "/no/such/file.pt", str(tmp_path / "new"))
  with pytest.raises(convert.ConversionError, match="vgg16.write_npz"):  # weights for a metric, not a run
    convert_cli.run("vgg16", "/no/such/file.pth", str(tmp_path / "new"))


def test_cli_overrides_become_a_dict():
  assert convert_cli.overrides(["--config.data_dir=/d", "--config.model.remat=false"]) == {
      "data_dir": "/d", "model.remat": "false"}
  with pytest.raises(convert.ConversionError, match="has no value"):
    convert_cli.overrides(["--config.data_dir"])


def test_training_evaluation_and_sampling_never_import_torch():
  # Any attempt to import torch fails and is recorded, whether or not torch is installed here.
  script = textwrap.dedent("""
      import importlib.abc, sys
      attempts = []
      class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
          if name.split(".")[0] == "torch":
            attempts.append(name)
            raise ImportError("blocked")
      sys.meta_path.insert(0, Block())
      import jax
      import experiments.evaluate  # its flags; experiments.train and sample share them, so one of the three
      import jaxgen.convert.glow, jaxgen.convert.lmconv
      from experiments.configs import glow_quickstart
      from jaxgen.training import trainer
      config = glow_quickstart.get_config("smoke")
      s = trainer.setup(config)
      state, metrics = s.train_step(s.init(), s.batch(next(s.input.train_batches(0))), jax.random.key(0))
      s.sample(state, jax.random.key(1), jax.numpy.zeros(2, int))
      assert not attempts and "torch" not in sys.modules, attempts
      print("ok", float(metrics["loss"]))
      """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
  assert result.returncode == 0 and result.stdout.startswith("ok"), result.stderr[-2000:]
