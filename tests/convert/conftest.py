"""Shared by the converter tests: the fixtures the official code wrote, and a converted run restored the way
experiments.evaluate restores one."""
import importlib.util
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from jaxgen import convert
from jaxgen.training import trainer

REFERENCE = os.path.join(os.path.dirname(__file__), "..", "reference")


def reference(family, name):
  return os.path.join(REFERENCE, family, name)


def load_npz(path):
  with np.load(path) as f:
    return dict(f)


def load_json(path):
  with open(path) as f:
    return json.load(f)


def config_from_workdir(workdir):
  """The config experiments.evaluate/sample/train get from --config=WORKDIR/config.py."""
  spec = importlib.util.spec_from_file_location("converted_config", os.path.join(workdir, "config.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def write_and_restore(config, variables, workdir):
  """write_run, then (Setup, state) as experiments.evaluate restores them (TFDS mocked: no dataset in tests)."""
  convert.write_run(config, variables, str(workdir))
  with tfds.testing.mock_data(num_examples=8):
    return trainer.restore_for_eval(config_from_workdir(str(workdir)), str(workdir))
