r"""Turns a published checkpoint into a jaxgen run directory (config + orbax checkpoint at step 0).

python -m experiments.convert --family=FAMILY --checkpoint=PATH --workdir=DIR [--config.KEY=VALUE ...]

FAMILY is a module of jaxgen.convert (glow, lmconv, nvae, stylegan2). The config comes from what the file records;
--config.KEY=VALUE sets what it does not (e.g. --config.data_dir=DIR). DIR then holds config.py, so that
python -m experiments.evaluate --config=DIR/config.py --workdir=DIR   (and experiments.sample, experiments.train to
fine-tune) use it unchanged. Converting needs PyTorch: pip install -e '.[convert]'.
"""
import functools
import importlib
import sys

from absl import flags

from experiments import cli
from jaxgen import convert

_FAMILY = flags.DEFINE_string("family", None, "Module of jaxgen.convert: glow, lmconv, nvae or stylegan2.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "The published checkpoint file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "New directory for the converted run.")
flags.mark_flags_as_required(["family", "checkpoint", "workdir"])


def overrides(args):
  """{"a.b": "value"} from --config.a.b=value arguments (values parsed against the config in `convert`)."""
  out = {}
  for arg in args:
    key, sep, value = arg[len("--config."):].partition("=")
    if not sep:
      raise convert.ConversionError(f"{arg!r} has no value; use --config.{key}=VALUE.")
    out[key] = value
  return out


def family_module(name):
  try:
    return importlib.import_module(f"jaxgen.convert.{name}")
  except ModuleNotFoundError:
    raise convert.ConversionError(f"--family={name!r} is not a module of jaxgen.convert; use glow, lmconv, nvae or "
                                  f"stylegan2.") from None


def run(family, checkpoint, workdir, config_overrides=None):
  """read -> convert -> write_run; returns the config file written in workdir."""
  module = family_module(family)
  if hasattr(module, "write_npz"):  # inception, vgg16: a metric network's weights, not a run
    raise convert.ConversionError(f"--family={family} holds a metric network's weights, which convert to an .npz, "
                                  f"not a run: python -c \"from jaxgen.convert import {family}; "
                                  f"{family}.write_npz('IN.pth', 'OUT.npz')\" (jaxgen.convert.{family}'s docstring).")
  convert.check_workdir(workdir)  # before the (slow) read
  config, variables = module.convert(module.read(checkpoint), config_overrides or {})
  return convert.write_run(config, variables, workdir)


def main(argv, config_args=()):
  with cli.clear_errors():
    if len(argv) > 1:
      raise convert.ConversionError(f"Unexpected argument(s) {argv[1:]}; use --config.KEY=VALUE.")
    config_py = run(_FAMILY.value, _CHECKPOINT.value, _WORKDIR.value, overrides(config_args))
  print(f"Wrote {_WORKDIR.value}; evaluate with: python -m experiments.evaluate --config={config_py} "
        f"--workdir={_WORKDIR.value}")


if __name__ == "__main__":
  # --config.KEY=VALUE are no absl flags (there is no config file to define them): take them out first.
  config_args = [a for a in sys.argv[1:] if a.startswith("--config.")]
  sys.argv = [a for a in sys.argv if not a.startswith("--config.")]
  cli.run(functools.partial(main, config_args=config_args))
