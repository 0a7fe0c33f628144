"""What the experiment scripts share: console logging, one-line errors for bad input, huge-page malloc on Linux."""
import contextlib
import logging
import os
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging

from jaxgen import convert
from jaxgen.training import checkpoints

# Errors that mean "the input is wrong", each with a message that names the fix: shown as one line, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, checkpoints.CheckpointError, FloatingPointError,
               convert.ConversionError)


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


HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"


def hugepage_malloc_env(environ):
  """The environment with glibc's malloc asking for transparent huge pages (GLIBC_TUNABLES glibc.malloc.hugetlb=1,
  glibc >= 2.35), or None when it already does, when JAXGEN_HUGEPAGES=0, or off Linux.

  XLA:CPU keeps every buffer of a step in malloc'd memory; backed by 2 MiB pages its matmuls and fusions miss the
  TLB far less. On the 2-core benchmark machine the training step ran 1.16-1.45x faster (BENCHMARKS.md). Older
  glibc and other C libraries ignore the variable; THP must be "madvise" or "always" in
  /sys/kernel/mm/transparent_hugepage/enabled.
  """
  tunables = environ.get("GLIBC_TUNABLES", "")
  if not sys.platform.startswith("linux") or environ.get("JAXGEN_HUGEPAGES") == "0" or "malloc.hugetlb" in tunables:
    return None
  return dict(environ, GLIBC_TUNABLES=f"{tunables}:{HUGEPAGE_TUNABLE}" if tunables else HUGEPAGE_TUNABLE)


def _reexec_with_hugepage_malloc():
  """glibc reads its tunables at process start: re-execute this command once with them set (same pid, argv)."""
  env = hugepage_malloc_env(os.environ)
  if env is not None and getattr(sys, "orig_argv", None):
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)


def run(main):
  """absl's app.run with jaxgen's progress on the console and the libraries' INFO chatter (orbax) hidden.

  On Linux the process first re-executes itself with huge-page malloc (see `hugepage_malloc_env`).
  """
  _reexec_with_hugepage_malloc()
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
