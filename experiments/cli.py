"""What the experiment scripts share: console logging, one-line errors for bad input, huge-page malloc on Linux,
and the multi-process flags (`initialize_distributed`)."""
import contextlib
import importlib
import logging
import os
import sys

from absl import app
from absl import flags
from absl import logging as absl_logging
import jax
from ml_collections.config_flags import config_flags

from jaxgen import convert
from jaxgen.training import checkpoints
from jaxgen.training import trainer

# Errors that mean "the input is wrong", each with a message that names the fix: shown as one line, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, ConnectionError, checkpoints.CheckpointError, FloatingPointError,
               convert.ConversionError)


@contextlib.contextmanager
def clear_errors():
  try:
    yield
  except USER_ERRORS as e:
    sys.exit(f"error: {e}")


_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "Run as one process of several (TPU pod slice, multi-node GPU, or several processes on one "
    "machine): calls jax.distributed.initialize() before anything else. Where JAX cannot detect the cluster (TPU, "
    "SLURM and Open MPI it can) also pass --coordinator_address, --num_processes and --process_id.")
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address", None, "With --multihost: HOST:PORT of process 0, where it serves the coordination "
    "service (any free port; every process passes the same).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --multihost: how many processes the job has.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --multihost: this process's index, 0 .. N-1.")
_CONNECT_TIMEOUT = flags.DEFINE_integer(
    "connect_timeout", 300, "With --multihost: seconds to wait for every process to connect before giving up.")
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout", 100, "With --multihost: seconds after which a process that stopped answering (dead or hung) "
    "is declared dead and every other process stops with an error instead of waiting for it forever.")
_EXPLICIT = ("coordinator_address", "num_processes", "process_id")


def distributed_options(multihost, coordinator_address=None, num_processes=None, process_id=None,
                        connect_timeout=300, heartbeat_timeout=100):
  """The keyword arguments of jax.distributed.initialize for the --multihost flags, or None without --multihost.

  Raises ValueError, naming the fix, for a partial or inconsistent set of flags.
  """
  explicit = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
  given = [k for k, v in explicit.items() if v is not None]
  if not multihost:
    if given:
      raise ValueError(f"--{given[0]} only applies to a multi-process run; add --multihost.")
    return None
  if given and len(given) < len(explicit):
    missing = [f"--{k}" for k in _EXPLICIT if explicit[k] is None]
    raise ValueError(f"--multihost with {['--' + k for k in given]} also needs {missing} (or none of the three, "
                     f"where JAX detects the cluster: TPU, SLURM, Open MPI).")
  if coordinator_address is not None:
    host, _, port = coordinator_address.rpartition(":")
    if not host or not port.isdigit():
      raise ValueError(f"--coordinator_address={coordinator_address!r} must be HOST:PORT, e.g. 127.0.0.1:12345 on "
                       f"one machine or process 0's address on a cluster.")
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} must be in 0 .. --num_processes-1 = {num_processes - 1}.")
  for name, value in (("connect_timeout", connect_timeout), ("heartbeat_timeout", heartbeat_timeout)):
    if value <= 0:
      raise ValueError(f"--{name}={value} must be a positive number of seconds.")
  return explicit | {"initialization_timeout": connect_timeout, "heartbeat_timeout_seconds": heartbeat_timeout}


def initialize_distributed():
  """Joins the multi-process job the --multihost flags describe (nothing without --multihost); call it first.

  JAX's cluster detection fills in what is not given. On CPU the processes' collectives go over gloo (TCP). A
  process that dies or hangs is noticed by the others within --heartbeat_timeout seconds: they then exit with
  JAX's "detected fatal errors" message rather than wait forever.
  """
  options = distributed_options(_MULTIHOST.value, _COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value,
                                _PROCESS_ID.value, _CONNECT_TIMEOUT.value, _HEARTBEAT_TIMEOUT.value)
  if options is None:
    return
  if jax.config.jax_cpu_collectives_implementation is None:  # without one, CPU processes cannot exchange data
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**options)
  except Exception as e:  # XLA's errors (timeouts, refused connections) are not public types
    where = options["coordinator_address"] or "the detected coordinator"
    raise ConnectionError(
        f"could not join the multi-process job through {where} ({str(e).splitlines()[0][:300]}); start every "
        f"process within --connect_timeout={options['initialization_timeout']} s of the others, with the same "
        f"--coordinator_address and --num_processes and distinct --process_id.") from None
  logging.getLogger("jaxgen").info("Process %d of %d; devices: %d here, %d in all.", jax.process_index(),
                                   jax.process_count(), jax.local_device_count(), jax.device_count())


# Model fields every config may override without naming them: `--config.model.conv_impl=native` (jaxgen.ops).
MODEL_DEFAULTS = {"conv_impl": "auto"}


class _ConfigFileWithDefaults(config_flags.ConfigFileFlagParser):
  """A config file's `get_config()` with the trainer's optional keys filled in (`trainer.DEFAULTS`, and in
  config.model the `MODEL_DEFAULTS` its Model has) before it is locked, so that `--config.KEY=VALUE` can set them
  whether or not the file mentions them."""

  def parse(self, path):
    config = super().parse(path)
    if hasattr(config, "unlocked"):  # a file that failed to load is a placeholder that raises when used
      with config.unlocked():
        for key, value in trainer.DEFAULTS.items():
          if key not in config:
            config[key] = value
        _add_model_defaults(config)
    return config


def _add_model_defaults(config):
  """config.model gets each `MODEL_DEFAULTS` key it lacks where config.model_name's Model has that field."""
  model = config.get("model")
  if not hasattr(model, "unlocked") or not isinstance(config.get("model_name"), str):
    return
  try:
    fields = trainer.model_fields(importlib.import_module(f"jaxgen.{config.model_name}").Model)
  except (ImportError, AttributeError, TypeError):  # a bad model_name: the trainer names it in one line later
    return
  for key, value in MODEL_DEFAULTS.items():
    if key in fields and key not in model:
      model[key] = value


def define_config_flag(flag_values=flags.FLAGS, sys_argv=None):
  """The scripts' `--config=FILE[:VARIANT]` flag: the file's config, locked, with the trainer's defaults present.
  Defined once per `flag_values`: scripts imported into one process (tests, notebooks) share it."""
  if "config" in flag_values and isinstance(flag_values["config"], config_flags._ConfigFlag):  # pylint: disable=protected-access
    return flags.FlagHolder(flag_values, flag_values["config"])
  flag = config_flags._ConfigFlag(  # pylint: disable=protected-access; the public DEFINE takes no parser
      parser=_ConfigFileWithDefaults(name="config", lock_config=True), serializer=flags.ArgumentSerializer(),
      name="config", default=None, help_string="Path to an experiment config file (FILE.py or FILE.py:VARIANT).",
      flag_values=flag_values, sys_argv=sys_argv)
  return flags.DEFINE_flag(flag, flag_values)


def _parse_flags(argv):
  """absl's flag parsing, with a bad --config.key override reported in one line instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}\nPass --help for the flags.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # ml_collections: unknown key or bad value
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    sys.exit(f"error: a --config.KEY=VALUE override does not fit the config ({e}) in {bad}; "
             f"use keys that the config file or the trainer's defaults (jaxgen.training.trainer.DEFAULTS) define.")


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
  """absl's app.run with jaxgen's progress on the console and the libraries' INFO chatter (orbax) hidden, after
joining the multi-process job that --multihost asks for (`initialize_distributed`).

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
    with clear_errors():
      initialize_distributed()
    return main(argv)
  app.run(_main, flags_parser=_parse_flags)
