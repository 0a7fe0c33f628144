r"""Trains any jaxgen model: python -m experiments.train --config=experiments/configs/NAME.py[:variant] --workdir=DIR.

Re-running the same command resumes from DIR's latest checkpoint. Override any config key with --config.key=value.
On a TPU pod slice or several GPU hosts run it on every host with --multihost, plus --coordinator_address=HOST:PORT
--num_processes=N --process_id=I where JAX cannot detect the cluster (experiments/cli.py; README, "Several hosts").
"""
import logging

from absl import app
from absl import flags
import jax

from experiments import cli
from jaxgen.training import trainer

_CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and samples.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.getLogger("jaxgen").info("JAX devices: %s (process %d of %d)", jax.devices(), jax.process_index(),
                                   jax.process_count())
  with cli.clear_errors():
    trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
