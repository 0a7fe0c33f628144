r"""Evaluates a trained model over a whole split and prints one JSON object.

python -m experiments.evaluate --config=experiments/configs/glow_cifar10.py --workdir=/tmp/glow_cifar10

Uses the latest checkpoint in --workdir (and its EMA parameters when the config keeps them). For likelihood
models the object holds the per-example averages of the model's terms, e.g. "bpd" (bits per dimension), over
every example of the split.
"""
import json

from absl import flags
from ml_collections import config_flags

from experiments import cli
from jaxgen.training import trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a training run.")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: config.eval_split, usually 'test').")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  with cli.clear_errors():
    s, state = trainer.restore_for_eval(_CONFIG.value, _WORKDIR.value)
    split = _SPLIT.value or s.config.eval_split
    results = trainer.evaluate_state(s, state, split=split)
  print(json.dumps({"step": int(state["step"]), "dataset": s.config.dataset, "split": split} | results))


if __name__ == "__main__":
  cli.run(main)
