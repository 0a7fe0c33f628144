"""Every experiment config: each family's quickstart `:smoke` trains 2 steps and evaluates through the trainer; the
other configs' `:smoke` variants pass `trainer.setup` (config keys, data, model shapes, figure options: everything
but compilation). TFDS is mocked."""
import glob
import importlib
import os

import pytest
import tensorflow_datasets as tfds

from jaxgen.training import trainer
from tests.experiments.test_paper_configs import PAPER_CONFIGS

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "configs")
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(CONFIG_DIR, "*.py"))
                 if not p.endswith("__init__.py"))
TRAINED = ("glow_quickstart", "nvae_quickstart", "lmconv_quickstart", "stylegan2_quickstart", "realnvp_quickstart")


def _config(name, variant="smoke"):
  module = importlib.import_module(f"experiments.configs.{name}")
  assert "python -m experiments.train" in module.__doc__  # the docstring gives the command
  return module.get_config(variant)


@pytest.mark.parametrize("name", TRAINED)
def test_quickstart_smoke_trains_and_evaluates(name, tmp_path):
  config = _config(name)
  config.total_steps = 2
  state = trainer.train_and_evaluate(config, str(tmp_path))
  assert int(state["step"]) == 2 and int(state["skipped_updates"]) == 0
  assert os.path.exists(tmp_path / "metrics.jsonl")


# The paper configs' datasets are manual downloads: test_paper_configs.py runs their :smoke on synthetic images.
@pytest.mark.parametrize("name", [c for c in CONFIGS if c not in TRAINED + PAPER_CONFIGS])
def test_smoke_config_sets_up(name):
  with tfds.testing.mock_data(num_examples=24):
    s = trainer.setup(_config(name))
  assert tuple(s.model.image_shape) == tuple(s.train_data.image_shape)


def test_docstrings_are_short_and_give_the_paper_and_jaxgen_figures():
  for name in CONFIGS:
    doc = importlib.import_module(f"experiments.configs.{name}").__doc__
    assert len(doc.strip().splitlines()) <= 12, name  # measurement histories live in README.md and BENCHMARKS.md
    assert "jaxgen" in doc, name  # jaxgen's own result (or that there is none yet)
