"""Image completion: hidden regions, and the likelihood of a hidden region given the rest.

For an autoregressive model whose order generates the observed pixels first, p(x_missing | x_observed) is exact
(LMConv, Jain et al. 2020, Sec. 5.2: the CIFAR-10 figure hides the top half, 2.762 bits/dim with 2 S-curves).
`evaluate` is an evaluator for `experiments.evaluate --evals=completion` (options in config.evals.completion);
it needs a model with `conditional_log_prob(images, observed)` and `completion_orders(observed)`.
"""
import jax
import numpy as np

from jaxgen.training import steps

REGIONS = ("top", "bottom", "left", "right", "center")


def missing_region(name, height, width):
  """bool [H, W], True on the pixels a completion task hides: "top" / "bottom" / "left" / "right" half (the paper's
  CIFAR-10 conditional likelihood hides the top 16 rows), or "center" (the central H/2 x W/2 square)."""
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  regions = {"top": rows < height // 2, "bottom": rows >= height // 2, "left": cols < width // 2,
             "right": cols >= width // 2,
             "center": ((rows >= height // 4) & (rows < height // 4 + height // 2) & (cols >= width // 4)
                        & (cols < width // 4 + width // 2))}
  if name not in regions:
    raise ValueError(f"Unknown completion region {name!r}; use one of {list(REGIONS)}.")
  return regions[name]


def has_conditional_likelihood(model):
  """Whether `evaluate` applies: the model has `conditional_log_prob` (autoregressive models)."""
  return getattr(model, "conditional_log_prob", None) is not None


def evaluate(s, state, split, *, missing="top", num_examples=0):
  """-log p(x_missing | x_observed) over `split` (first num_examples; 0: all): "completion_nats" per image and
  "completion_bpd" per hidden dimension, with the region and the orders used."""
  if not has_conditional_likelihood(s.model):
    raise ValueError(f"The completion evaluator needs a model with conditional_log_prob (an autoregressive model); "
                     f"{s.config.model_name} has none: drop 'completion' from --evals.")
  observed = ~missing_region(missing, *s.train_data.image_shape[:2])  # [H, W]
  variables = steps.eval_variables(state)
  log_prob = jax.jit(lambda v, x: s.model.apply(v, x, observed, method="conditional_log_prob"))
  total, count = 0.0, 0.0
  for batch in s.input.eval_batches(split, num_examples, rows=slice(None)):
    total -= float(np.sum(np.asarray(log_prob(variables, batch["image"])) * batch["mask"]))
    count += float(batch["mask"].sum())
  dims = int((~observed).sum()) * s.train_data.image_shape[2]
  return {"completion_region": missing, "completion_orders": list(s.model.completion_orders(observed)),
          "completion_nats": total / count, "completion_bpd": total / count / (dims * np.log(2.0))}
