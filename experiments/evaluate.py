r"""Evaluates a trained model over a whole split and prints one JSON object.

python -m experiments.evaluate --config=experiments/configs/NAME.py --workdir=DIR [--evals=completion,sample_quality]

Uses the latest checkpoint in --workdir (and its EMA parameters when the config keeps them). The object holds the
family's results (`trainer.evaluate_state`): for likelihood models the per-example averages of the model's terms
over every example of the split, e.g. "bpd" (bits per dimension), plus what the family's `summarize` adds; a family
with a whole-set `evaluate` (a GAN: FID / KID / precision / recall) reports that instead.

--evals=NAME[,NAME] adds the evaluators `jaxgen.metrics.NAME.evaluate(s, state, split, **config.evals.NAME)`:
  completion      -log p(x_missing | x_observed) of a hidden region (config.evals.completion.missing: top, bottom,
                  left, right or center) for autoregressive models.
  sample_quality  FID / KID / precision / recall of samples against the split (settings: config.sample_metrics).
"""
import importlib
import json

from absl import flags
import jax

from experiments import cli
from jaxgen.training import trainer

_CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a training run.")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: config.eval_split, usually 'test').")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 0, "Evaluate the family on the first N examples of the split "
                                     "(0: all of it).")
_EVALS = flags.DEFINE_list("evals", [], "Extra evaluators, modules of jaxgen.metrics (completion, sample_quality); "
                           "their options are config.evals.NAME.")
flags.mark_flags_as_required(["config", "workdir"])


def evaluators(names, config):
  """[(name, evaluate function, options)], each checked to exist before any evaluation runs."""
  out = []
  for name in names:
    try:
      module = importlib.import_module(f"jaxgen.metrics.{name}")
      fn = module.evaluate
    except (ModuleNotFoundError, AttributeError):
      raise ValueError(f"--evals names {name!r}, which is no evaluator (a module of jaxgen.metrics with an "
                       f"`evaluate` function); use completion or sample_quality.") from None
    out.append((name, fn, dict((config.get("evals", None) or {}).get(name, None) or {})))
  return out


def evaluate(s, state, split=None, names=(), num_examples=0):
  """The family's results on `split` (its first num_examples; 0: all), then each named evaluator's."""
  split = split or s.config.eval_split
  chosen = evaluators(names, s.config)
  results = trainer.evaluate_state(s, state, split=split, num_examples=num_examples)
  for _, fn, options in chosen:
    results |= fn(s, state, split, **options)
  return results


def main(argv):
  del argv
  with cli.clear_errors():
    evaluators(_EVALS.value, _CONFIG.value)  # a misspelt evaluator fails before anything is restored
    s, state = trainer.restore_for_eval(_CONFIG.value, _WORKDIR.value)
    split = _SPLIT.value or s.config.eval_split
    results = evaluate(s, state, split, _EVALS.value, _NUM_EXAMPLES.value)
  if jax.process_index() == 0:  # every process computes the results; one prints them
    print(json.dumps({"step": int(state["step"]), "dataset": s.config.dataset, "split": split} | results))


if __name__ == "__main__":
  cli.run(main)
