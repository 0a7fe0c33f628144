"""The scripts' --config flag: the trainer's optional keys can be overridden even where the file does not set them,
and a misspelt key still fails."""
from absl import flags
import pytest

from experiments import cli
from jaxgen.training import trainer

CONFIG = "experiments/configs/glow_quickstart.py:smoke"


def _parse(*overrides, config=CONFIG):
  argv = ["prog", f"--config={config}", *overrides]
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


@pytest.mark.parametrize("name", ["glow_quickstart", "realnvp_quickstart", "nvae_quickstart", "lmconv_quickstart",
                                  "stylegan2_quickstart"])
def test_conv_impl_is_overridable_for_every_family_and_checked(name):
  """README's --config.model.conv_impl=native works although no config file names conv_impl; the file's model keys
  stay, a misspelt model key still fails, and the value reaches the model the trainer builds."""
  config = _parse("--config.model.conv_impl=native", config=f"experiments/configs/{name}.py:smoke")
  assert config.model.conv_impl == "native"
  assert _parse(config=f"experiments/configs/{name}.py:smoke").model.conv_impl == "auto"
  _, model = trainer.build_model(config)
  assert model.conv_impl == "native"
  with pytest.raises(Exception, match="conv_implx"):
    _parse("--config.model.conv_implx=native", config=f"experiments/configs/{name}.py:smoke")
