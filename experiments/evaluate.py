r"""Evaluates a trained model over a whole split and prints one JSON object.

python -m experiments.evaluate --config=experiments/configs/glow_cifar10.py --workdir=/tmp/glow_cifar10

Uses the latest checkpoint in --workdir (and its EMA parameters when the config keeps them). For likelihood
models the object holds the per-example averages of the model's terms, e.g. "bpd" (bits per dimension), over
every example of the split.

NVAE (jaxgen.vae.nvae.evaluate): "nelbo_bpd" (negative ELBO, one posterior sample), "iw_nll_bpd" (importance-
weighted NLL with K = config.iw_samples samples; the papers' figure: --config.iw_samples=1000), "_nats" twins for
binarized data, "kl_group_NN" (KL of each latent group) and "active_units" (of "latent_units").

--missing=REGION (models with `conditional_log_prob`, e.g. LMConv) adds "completion_bpd" / "completion_nats":
-log p(x_missing | x_observed) of the hidden REGION (top, bottom, left, right or center) given the rest, per hidden
dimension / per image, with the orders that generate the observed pixels first. The LMConv paper's CIFAR-10
conditional figure (2.762 bits/dim with 2 S-curve orders) is --missing=top.

--sample_metrics (any family) adds "fid", "kid", "kid_std", "precision", "recall" of the model's samples (drawn as
the trainer draws them, e.g. at config.sample_temperature) against the split, in the features of jaxgen's offline
classifier or of Inception-v3 (config.sample_metrics; see jaxgen.metrics.sample_quality). GANs report these anyway.
"""
import json

from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from experiments import cli
from jaxgen import data
from jaxgen.training import steps
from jaxgen.training import trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a training run.")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: config.eval_split, usually 'test').")
_MISSING = flags.DEFINE_enum("missing", None, ["top", "bottom", "left", "right", "center"],
                             "Also report -log p(x_missing | x_observed) of this hidden region (models with "
                             "`conditional_log_prob`, e.g. LMConv).")
_SAMPLE_METRICS = flags.DEFINE_bool("sample_metrics", False, "Also report FID / KID / precision / recall of samples "
                                    "(config.sample_metrics sets the features and the number of samples).")
flags.mark_flags_as_required(["config", "workdir"])


def completion_likelihood(s, state, split, missing, num_examples=None):
  """-log p(x_missing | x_observed) averaged over the split: nats per image and bits per hidden dimension."""
  variables = {"params": steps.eval_params(state), **state["model_state"]}
  dataset = s.eval_data(split)
  observed = ~s.module.missing_region(missing, *dataset.image_shape[:2])  # [H, W]
  log_prob = jax.jit(lambda v, x: s.model.apply(v, x, observed, method="conditional_log_prob"))
  total, count = 0.0, 0.0
  for batch in data.eval_batches(dataset, s.config.eval_batch_size or s.config.batch_size, slice(None),
                                 num_examples, s.config.binarize, s.config.seed):
    total -= float(np.sum(np.asarray(log_prob(variables, batch["image"])) * batch["mask"]))
    count += float(batch["mask"].sum())
  dims = int((~observed).sum()) * dataset.image_shape[2]
  return {"completion_region": missing, "completion_orders": list(s.model.completion_orders(observed)),
          "completion_nats": total / count, "completion_bpd": total / count / (dims * np.log(2.0))}


def sample_metrics(s, state, split):
  """FID / KID / precision / recall of samples against `split` (jaxgen.metrics.sample_quality), any family."""
  from jaxgen.metrics import sample_quality  # pylint: disable=g-import-not-at-top
  return sample_quality.evaluate_samples(s, state, split, s.config.eval_examples)


def main(argv):
  del argv
  with cli.clear_errors():
    s, state = trainer.restore_for_eval(_CONFIG.value, _WORKDIR.value)
    split = _SPLIT.value or s.config.eval_split
    results = trainer.evaluate_state(s, state, split=split)
    if _MISSING.value:
      results |= completion_likelihood(s, state, split, _MISSING.value)
    if _SAMPLE_METRICS.value and "fid" not in results:
      results |= sample_metrics(s, state, split)
  print(json.dumps({"step": int(state["step"]), "dataset": s.config.dataset, "split": split} | results))


if __name__ == "__main__":
  cli.run(main)
