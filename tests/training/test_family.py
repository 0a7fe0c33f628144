"""The family contract (jaxgen.training.family): every family module exports a checked `Family`, and a wrong one,
or a wrong config.figures key, fails at once with an error that names the fix."""
import dataclasses
import glob
import importlib
import os
import types

import pytest

from experiments.configs import glow_quickstart
from jaxgen.training import family
from jaxgen.training import trainer

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "configs")
MODEL_NAMES = sorted({importlib.import_module(f"experiments.configs.{os.path.basename(p)[:-3]}").get_config().model_name
                      for p in glob.glob(os.path.join(CONFIG_DIR, "*.py")) if not p.endswith("__init__.py")})


def test_the_configs_cover_five_families():
  assert MODEL_NAMES == ["autoregressive.lmconv", "flows.glow", "flows.realnvp", "gan.stylegan2", "vae.nvae"]


@pytest.mark.parametrize("model_name", MODEL_NAMES)
def test_every_family_module_exports_a_family_and_a_model_with_an_image_shape(model_name):
  module = importlib.import_module(f"jaxgen.{model_name}")
  fam = family.of(module)
  assert isinstance(fam, family.Family)
  assert callable(fam.make_optimizer) and callable(fam.train_step) and callable(fam.figures)
  assert (fam.eval_step is None) != (fam.evaluate is None)  # per-batch sums, or a whole-set evaluation
  assert "image_shape" in {f.name for f in dataclasses.fields(module.Model)}
  assert fam.progress_keys


def test_a_misspelt_or_missing_field_is_a_type_error():
  fields = family.LIKELIHOOD._asdict()
  with pytest.raises(TypeError, match="sample_image"):
    family.Family(**fields, sample_image=None)  # misspelt
  with pytest.raises(ValueError, match="sample_image"):
    family.LIKELIHOOD._replace(sample_image=None)
  with pytest.raises(TypeError):
    family.Family(make_optimizer=None, init_state=None)  # most fields missing


def test_a_module_without_a_family_is_refused_with_the_fix():
  with pytest.raises(ValueError, match="FAMILY = family.LIKELIHOOD"):
    family.of(types.ModuleType("jaxgen.flows.mine"))


def test_unknown_figure_options_fail_in_setup():
  config = glow_quickstart.get_config("smoke")
  config.figures.temperature = 0.5  # the option is `temperatures`
  with pytest.raises(ValueError, match=r"Unknown config.figures key\(s\) \['temperature'\]"):
    trainer.setup(config)
  assert family.figure_options(family.of(importlib.import_module("jaxgen.flows.glow")),
                               glow_quickstart.get_config("smoke"))["pairs"] == 6
