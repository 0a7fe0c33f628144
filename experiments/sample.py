r"""Writes sample grids from a trained model: a temperature sweep, and latent interpolations where the model has an
encoder (flows).

python -m experiments.sample --config=experiments/configs/glow_quickstart.py --workdir=/tmp/glow

DIR/samples/temperatures.png   one row per temperature T = 0, 0.25, ..., 1 (same noise in every row)
DIR/samples/temperature_T.png  a grid at each T
DIR/samples/interpolations.png one row per pair of test images: left and right are the reconstructed images,
                               between them decode((1 - a) z_left + a z_right) (flows: `encode` / `decode`)
"""
import os

from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from experiments import cli
from jaxgen import data
from jaxgen.training import steps
from jaxgen.training import trainer
from jaxgen.training import writers

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an experiment config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of a training run.")
_TEMPERATURES = flags.DEFINE_list("temperatures", ["0", "0.25", "0.5", "0.75", "1"], "Sampling temperatures.")
_NUM = flags.DEFINE_integer("num", 10, "Samples per temperature row / grid side.")
_PAIRS = flags.DEFINE_integer("pairs", 6, "Pairs of test images to interpolate between.")
_STEPS = flags.DEFINE_integer("steps", 8, "Images per interpolation row, ends included.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.mark_flags_as_required(["config", "workdir"])


def temperature_sweep(s, state, temperatures, num, seed):
  """{T: uint8 [num*num, H, W, C]} drawn with the same rng at every T."""
  variables = {"params": steps.eval_params(state), **state["model_state"]}
  classes = max(s.train_data.num_classes, 1)
  labels = jnp.arange(num * num) % classes
  conditional = {"labels": labels} if getattr(s.model, "num_classes", 0) else {}
  draw = jax.jit(lambda v, t: s.model.apply(v, jax.random.key(seed), num * num, t, method="sample", **conditional))
  return {t: np.asarray(draw(variables, t)) for t in temperatures}


def interpolations(s, state, pairs, num_steps):
  """uint8 [pairs * num_steps, H, W, C]: decoded linear interpolations between encoded test images."""
  variables = {"params": steps.eval_params(state), **state["model_state"]}
  test = data.load(s.config.dataset, s.config.eval_split, s.config.data_dir)
  batch = test.get(np.arange(2 * pairs))
  labels = jnp.asarray(batch["label"]) if getattr(s.model, "num_classes", 0) else None
  eps = s.model.apply(variables, jnp.asarray(batch["image"]), labels, method="encode")
  alphas = jnp.linspace(0.0, 1.0, num_steps)
  rows = []
  for p in range(pairs):
    mixed = [jnp.stack([(1 - a) * e[2 * p] + a * e[2 * p + 1] for a in alphas]) for e in eps]
    row_labels = None if labels is None else jnp.full((num_steps,), labels[2 * p])
    rows.append(np.asarray(s.model.apply(variables, mixed, row_labels, method="decode")))
  return np.concatenate(rows)


def main(argv):
  del argv
  with cli.clear_errors():
    s, state = trainer.restore_for_eval(_CONFIG.value, _WORKDIR.value)
    out = os.path.join(_WORKDIR.value, "samples")
    temperatures = [float(t) for t in _TEMPERATURES.value]
    sweep = temperature_sweep(s, state, temperatures, _NUM.value, _SEED.value)
    for t, images in sweep.items():
      writers.save_png(os.path.join(out, f"temperature_{t:g}.png"), writers.image_grid(images), scale=2)
    rows = np.concatenate([images[:_NUM.value] for images in sweep.values()])
    writers.save_png(os.path.join(out, "temperatures.png"), writers.image_grid(rows, columns=_NUM.value), scale=2)
    written = [f"{out}/temperatures.png", f"{out}/temperature_T.png for T in {temperatures}"]
    if hasattr(s.model, "encode") and hasattr(s.model, "decode"):
      images = interpolations(s, state, _PAIRS.value, _STEPS.value)
      writers.save_png(os.path.join(out, "interpolations.png"), writers.image_grid(images, columns=_STEPS.value),
                       scale=2)
      written.append(f"{out}/interpolations.png")
  print("\n".join(written))


if __name__ == "__main__":
  cli.run(main)
