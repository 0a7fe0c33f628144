"""Every experiment config: its :smoke variant trains 2 steps and evaluates through the trainer (TFDS mocked)."""
import glob
import importlib
import os

import pytest
import tensorflow_datasets as tfds

from jaxgen.training import trainer

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "configs")
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(CONFIG_DIR, "*.py"))
                 if not p.endswith("__init__.py"))


def test_every_config_is_covered():
  assert {"glow_quickstart", "glow_mnist", "glow_cifar10"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_config_trains_and_evaluates(name, tmp_path):
  module = importlib.import_module(f"experiments.configs.{name}")
  assert "python -m experiments.train" in module.__doc__  # the docstring gives the command
  config = module.get_config("smoke")
  config.total_steps = 2
  with tfds.testing.mock_data(num_examples=24):
    state = trainer.train_and_evaluate(config, str(tmp_path))
  assert int(state["step"]) == 2 and int(state["skipped_updates"]) == 0
  assert os.path.exists(tmp_path / "metrics.jsonl")
