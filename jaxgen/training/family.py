"""The family contract: everything the trainer and the scripts need from a model family, as one value.

A family module (`jaxgen.<config.model_name>`, e.g. `jaxgen.flows.glow`) defines `Model`, a class built as
`Model(**config.model, dtype=config.compute_dtype)` (the compute dtype of its networks; the likelihood terms stay
float32), and `FAMILY`, a `Family`. The trainer reads nothing else from the module: no base class,
no registry, no probing for optional names. Likelihood models share `LIKELIHOOD` (and `_replace` what they do
differently); the GAN builds its own. Every function is pure, and the trainer jits the step functions with
explicit shardings (the batch split over the mesh axis "data", the state replicated), binding the keyword
arguments with `functools.partial`.
"""
from typing import Any
from typing import Callable
from typing import NamedTuple
from typing import Optional

import numpy as np

from jaxgen.training import figures as figures_lib
from jaxgen.training import optim
from jaxgen.training import steps


class Family(NamedTuple):
  """How the trainer runs one model family (optax's `GradientTransformation` is the model: pure functions).

  make_optimizer(config, *, model) -> tx
      An optax.GradientTransformation built from config.optimizer (a dict of them for a family with several,
      e.g. a GAN's {"generator", "discriminator"}, whose lazy-regularisation corrections depend on the model).
      Unknown config.optimizer keys are a ValueError.
  init_state(rng, batch, *, model, tx, config) -> state
      The train state, a dict pytree that holds at least "step" (int32 []), "params", "skipped_updates" and
      "consecutive_skips" (int32 []). `batch` is a data batch ({"image": uint8 [B, H, W, C], "label": int32 [B]}),
      which data-dependent init (Glow's ActNorm) sees. Runs under `jax.eval_shape` in `trainer.setup`, so a config
      the family cannot train raises its ValueError there, before anything is compiled.
  train_step(state, batch, rng, *, model, tx, config) -> (state, metrics)
      One update. `rng` is the same key every step: fold in state["step"]. An update whose loss or gradients are
      not finite is skipped (`steps.keep_if_finite`) and counted. `metrics` are scalars and always include the
      learning rate(s) used ("lr", or one "<name>_lr" per optimiser), "skipped_updates" and "consecutive_skips".
  eval_step(state, batch, rng, *, model, config) -> sums
      Per-batch sums over the real examples (batch["mask"] == 1) of per-example terms, plus "count"; the trainer
      adds them up over a split. None for a family that only evaluates whole sets (see `evaluate`).
  summarize(totals) -> {name: float}
      The results from eval_step's sums totalled over a split (numpy); e.g. means, or NVAE's active units.
  sample_images(state, rng, labels, *, model, config) -> uint8 [N, H, W, C]
      N = labels.shape[0] samples for the trainer's grids and the sample-quality metrics (labels condition
      class-conditional models and are ignored by the others): 0/1 images for binarized data, else 8-bit values.
  figures(s, state, *, seed, **options) -> {file name: uint8 [H, W, C] picture}
      The family's own pictures (temperature sweeps, interpolations, completions, truncation, style mixing) that
      `experiments.sample` writes. `s` is the trainer's `Setup`; `options` are `figure_options` updated by
      config.figures.
  figure_options: {name: default}
      Every option `figures` takes, with its default; a config.figures key outside it is an error.
  evaluate(s, state, split, num_examples) -> {name: float}, or None
      Replaces the trainer's loop over eval_step and summarize, for results that need whole sets (a GAN's FID).
  progress_keys: names of train metrics shown on the console's progress line (all go to metrics.jsonl).
  reconstruct(s, state, images, labels) -> (uint8 [N, H, W, C], how), or None
      Latent access for `jaxgen.metrics.comparison`: encode then decode data images (uint8 [N, H, W, C], labels
      int32 [N]); `how` says how in a few words (e.g. "exact inverse"). None: the family has no encoder.
  encode(s, state, images, labels, rng=None) -> latents, or None
      Latents of data images (uint8 [N, H, W, C], labels int32 [N]): a pytree whose leaves have a leading N axis
      and that mixes linearly (interpolation). rng None: the deterministic code (Glow's exact inverse, NVAE's
      posterior means); a key: a sampled one where the encoder is stochastic. None: the family has no encoder.
  decode(s, state, latents, labels) -> uint8 [N, H, W, C], or None
      The images of `encode`'s latents (or of mixtures of them). None exactly where `encode` is None.
  complete(s, state, rng, images, observed) -> (uint8 [N, H, W, C], how), or None
      Sampled completion: images equal to `images` where `observed` (numpy bool [H, W]) and filled in by the model
      elsewhere; `how` says how. None: the family cannot complete a hidden region.
  """
  make_optimizer: Callable[..., Any]
  init_state: Callable[..., Any]
  train_step: Callable[..., Any]
  eval_step: Optional[Callable[..., Any]]
  summarize: Callable[..., Any]
  sample_images: Callable[..., Any]
  figures: Callable[..., Any]
  figure_options: dict
  evaluate: Optional[Callable[..., Any]] = None
  progress_keys: tuple = ("loss", "bpd", "grad_norm")
  reconstruct: Optional[Callable[..., Any]] = None
  complete: Optional[Callable[..., Any]] = None
  encode: Optional[Callable[..., Any]] = None
  decode: Optional[Callable[..., Any]] = None


def mean_summary(totals):
  """eval_step sums -> per-example means, plus "num_examples"."""
  totals = dict(totals)
  count = totals.pop("count")
  return {k: float(np.asarray(v) / count) for k, v in totals.items()} | {"num_examples": int(count)}


LIKELIHOOD = Family(
    make_optimizer=optim.make_optimizer,
    init_state=steps.init_state,
    train_step=steps.train_step,
    eval_step=steps.eval_step,
    summarize=mean_summary,
    sample_images=steps.sample_images,
    figures=figures_lib.temperature_figures,
    figure_options=figures_lib.TEMPERATURE_OPTIONS,
)


def of(module):
  """The module's `FAMILY`, checked: a one-line error for a module that defines no family or a wrong one."""
  family = vars(module).get("FAMILY")
  if not isinstance(family, Family):
    raise ValueError(f"{module.__name__} defines no FAMILY = jaxgen.training.family.Family(...) (found "
                     f"{type(family).__name__}); a likelihood model sets FAMILY = family.LIKELIHOOD.")
  return family


def figure_options(family, config):
  """family.figure_options updated by config.figures; unknown keys are a ValueError naming the known ones."""
  given = dict(config.get("figures", None) or {})
  unknown = sorted(set(given) - set(family.figure_options))
  if unknown:
    raise ValueError(f"Unknown config.figures key(s) {unknown} for {config.model_name}; known keys: "
                     f"{sorted(family.figure_options)}.")
  return dict(family.figure_options) | given
