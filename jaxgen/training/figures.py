"""Figures shared by families: sample grids, and the temperature sweep every likelihood model draws.

A family's `figures(s, state, *, seed, **options)` returns {file name: uint8 [H, W, C] picture}; `experiments.sample`
writes them under DIR/samples/. The helpers here build those pictures.
"""
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.training import steps
from jaxgen.training import writers

TEMPERATURE_OPTIONS = dict(temperatures=(0.0, 0.25, 0.5, 0.75, 1.0), num=10)


def labels_for(s, num):
  """int32 [num]: class labels cycling over the data's classes (all 0 for unconditional data)."""
  return jnp.arange(num, dtype=jnp.int32) % max(s.train_data.num_classes, 1)


def grid(images, columns=None, binary=False):
  """uint8 [N, H, W, C] -> one picture (0/1 images of binarized data shown as 0/255)."""
  return writers.image_grid(np.asarray(images), columns=columns, binary=binary)


def sweep_figures(sweep, num, rows_name, prefix, binary=False):
  """{value: uint8 [num*num, H, W, C]} -> {rows_name: one row of `num` images per value,
  f"{prefix}_{value}.png": a num x num grid per value}."""
  out = {f"{prefix}_{value:g}.png": grid(images, columns=num, binary=binary) for value, images in sweep.items()}
  rows = np.concatenate([np.asarray(images)[:num] for images in sweep.values()])
  return {rows_name: grid(rows, columns=num, binary=binary)} | out


def temperature_sweep(s, state, temperatures, num, seed):
  """{T: uint8 [num*num, H, W, C]}: `Model.sample` with the same rng at every temperature T."""
  variables = steps.eval_variables(state)
  labels = labels_for(s, num * num)
  conditional = {"labels": labels} if getattr(s.model, "num_classes", 0) else {}
  draw = jax.jit(lambda v, t: s.model.apply(v, jax.random.key(seed), num * num, t, method="sample", **conditional))
  return {float(t): np.asarray(draw(variables, t)) for t in temperatures}


def temperature_figures(s, state, *, seed, temperatures, num):
  """temperatures.png (one row per temperature, the same noise in every row) and temperature_T.png grids."""
  sweep = temperature_sweep(s, state, temperatures, num, seed)
  return sweep_figures(sweep, num, "temperatures.png", "temperature", binary=bool(s.config.binarize))


def interpolation_latents(latents, pairs, num_steps):
  """Latents [len(pairs) * num_steps, ...] (each leaf): for each (i, j) in `pairs`, (1 - a) z_i + a z_j for
  a = 0 ... 1 in num_steps steps, z the leaves of `latents` [N, ...]."""
  alphas = jnp.linspace(0.0, 1.0, num_steps)
  i, j = (np.asarray([p[k] for p in pairs], np.int32) for k in (0, 1))

  def mix(z):  # [N, ...] -> [len(pairs) * num_steps, ...]
    a = alphas.reshape((1, -1) + (1,) * (z.ndim - 1))
    return ((1 - a) * z[i][:, None] + a * z[j][:, None]).reshape((-1,) + z.shape[1:])
  return jax.tree.map(mix, latents)


def interpolations(s, state, images, labels, pairs, num_steps):
  """uint8 [len(pairs) * num_steps, H, W, C]: `interpolation_latents` of `Family.encode` of `images`, decoded (the
  ends are the reconstructions); each row takes image i's label."""
  latents = s.family.encode(s, state, images, labels)
  row_labels = np.repeat(np.asarray(labels)[[i for i, _ in pairs]], num_steps)
  return np.asarray(s.family.decode(s, state, interpolation_latents(latents, pairs, num_steps), row_labels))
