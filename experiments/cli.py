"""What the experiment scripts share: console logging and one-line errors for bad input."""
import contextlib
import logging
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging

from jaxgen.training import checkpoints

# Errors that mean "the input is wrong", each with a message that names the fix: shown as one line, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, checkpoints.CheckpointError, FloatingPointError)


@contextlib.contextmanager
def clear_errors():
  try:
    yield
  except USER_ERRORS as e:
    sys.exit(f"error: {e}")


def _parse_flags(argv):
  """absl's flag parsing, with a bad --config.key override reported in one line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}\nPass --help for the flags.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # ml_collections: unknown key or bad value
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    sys.exit(f"error: a --config.KEY=VALUE override does not fit the config ({e}) in {bad}; "
             f"use only keys that the config file defines.")


def run(main):
  """absl's app.run with jaxgen's progress on the console and the libraries' INFO chatter (orbax) hidden."""
  def _main(argv):
    absl_logging.set_verbosity(absl_logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    jaxgen_logger = logging.getLogger("jaxgen")
    jaxgen_logger.addHandler(handler)
    jaxgen_logger.setLevel(logging.INFO)
    jaxgen_logger.propagate = False
    return main(argv)
  app.run(_main, flags_parser=_parse_flags)
