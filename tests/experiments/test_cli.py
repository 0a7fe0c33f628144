"""The scripts' --config flag: the trainer's optional keys can be overridden even where the file does not set them,
and a misspelt key still fails."""
from absl import flags
import pytest

from experiments import cli
from jaxgen.training import trainer

CONFIG = "experiments/configs/glow_quickstart.py:smoke"


def _parse(*overrides):
  argv = ["prog", f"--config={CONFIG}", *overrides]
  flag_values = flags.FlagValues()
  handle = cli.define_config_flag(flag_values, sys_argv=argv)
  flag_values(argv)
  return handle.value


def test_trainer_default_keys_are_overridable():
  config = _parse("--config.prefetch=5", "--config.augment.flip=True")
  assert config.prefetch == 5 and config.augment.flip
  assert set(trainer.DEFAULTS) <= set(config)


def test_defaults_do_not_replace_the_files_values_and_unknown_keys_fail():
  config = _parse("--config.num_samples=9")
  assert config.sample_temperature == 0.7 != trainer.DEFAULTS["sample_temperature"]  # the file's value stays
  assert config.num_samples == 9
  with pytest.raises(Exception, match="prefetchx"):
    _parse("--config.prefetchx=3")
