r"""Writes sample grids from a trained model: a temperature sweep, and latent interpolations where the model has an
encoder (flows).

python -m experiments.sample --config=experiments/configs/glow_quickstart.py --workdir=/tmp/glow

DIR/samples/temperatures.png   one row per temperature T = 0, 0.25, ..., 1 (same noise in every row)
DIR/samples/temperature_T.png  a grid at each T (NVAE: with BatchNorm statistics re-adjusted to samples at T,
                               --readjust_bn_iterations passes, computed once per temperature; paper Sec. 5.2)
DIR/samples/interpolations.png one row per pair of test images: left and right are the reconstructed images,
                               between them decode((1 - a) z_left + a z_right) (flows: `encode` / `decode`)
DIR/samples/completions.png   models with `complete` (LMConv): one row per test image: the observed part (the
                               --missing region grey), --completions samples of that region given the rest,
                               the original; the console line gives their mean log p(x_missing | x_observed)
GANs (StyleGAN2) instead of temperatures and interpolations:
DIR/samples/truncation.png     one row per truncation psi = 0, 0.25, ..., 1 (same z in every row; psi 0 is the
                               image of w_avg), DIR/samples/truncation_PSI.png a grid at each psi
DIR/samples/style_mixing_coarse.png, style_mixing_fine.png   StyleGAN Fig. 3: the top row and the left column are
                               sources; cell (i, j) is row i's image with the coarse (first half) / fine (second
                               half) layers' w taken from column j
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
_READJUST_BN = flags.DEFINE_integer("readjust_bn_iterations", 500, "NVAE: generator passes that re-adjust the "
                                    "BatchNorm statistics at each temperature (official evaluate.py: 500; 0: off).")
_MISSING = flags.DEFINE_enum("missing", "bottom", ["top", "bottom", "left", "right", "center"],
                             "Completions: the region of each test image that is hidden and sampled.")
_COMPLETIONS = flags.DEFINE_integer("completions", 3, "Completions: samples per test image.")
_COMPLETE_IMAGES = flags.DEFINE_integer("complete_images", 6, "Completions: test images (rows).")
_PSIS = flags.DEFINE_list("psis", ["0", "0.25", "0.5", "0.75", "1"], "GANs: truncation psi values.")
_MIX = flags.DEFINE_integer("mix", 5, "GANs: rows and columns of the style-mixing grids.")
flags.mark_flags_as_required(["config", "workdir"])


def temperature_sweep(s, state, temperatures, num, seed):
  """{T: uint8 [num*num, H, W, C]} drawn with the same rng at every T."""
  variables = {"params": steps.eval_params(state), **state["model_state"]}
  classes = max(s.train_data.num_classes, 1)
  labels = jnp.arange(num * num) % classes
  conditional = {"labels": labels} if getattr(s.model, "num_classes", 0) else {}
  draw = jax.jit(lambda v, t: s.model.apply(v, jax.random.key(seed), num * num, t, method="sample", **conditional))
  return {t: np.asarray(draw(variables, t)) for t in temperatures}


def readjusted_temperature_sweep(s, state, temperatures, num, seed, iterations):
  """`temperature_sweep` for modules with a `TemperatureSampler` (NVAE): BatchNorm statistics re-adjusted to
  samples at each temperature, computed once per temperature and kept for that temperature's grid."""
  variables = {"params": steps.eval_params(state), **state["model_state"]}
  sampler = s.module.TemperatureSampler(s.model, variables, jax.random.key(seed + 1), num_iterations=iterations)
  return {t: np.asarray(sampler.sample(jax.random.key(seed), num * num, t)) for t in temperatures}


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


def completions(s, state, missing, num_images, per_image, seed):
  """Image completion (models with `complete`, e.g. LMConv) of the first `num_images` test images.

  Returns (uint8 [num_images * (per_image + 2), H, W, C]: per image the observed part with the hidden region grey,
  `per_image` completions at config.sample_temperature, the original (binary images shown as 0/255);
  log p(x_missing | x_observed) of the originals in nats [num_images]).
  """
  variables = {"params": steps.eval_params(state), **state["model_state"]}
  test = data.load(s.config.dataset, s.config.eval_split, s.config.data_dir)
  images = data.binarize(test.get(np.arange(num_images))["image"], s.config.binarize, [s.config.seed, 0, 0xE7])
  hidden = s.module.missing_region(missing, *images.shape[1:3])  # [H, W], True where sampled
  fill = jax.jit(lambda v, rng, x: s.model.apply(v, rng, x, ~hidden, s.config.sample_temperature, method="complete"))
  completed, cond_log_prob = fill(variables, jax.random.key(seed), jnp.asarray(np.repeat(images, per_image, axis=0)))
  scale = 255 if s.config.binarize else 1
  completed = np.asarray(completed).reshape((num_images, per_image) + images.shape[1:]) * scale
  observed = np.where(hidden[None, :, :, None], 128, images * scale)
  rows = np.concatenate([observed[:, None], completed, images[:, None] * scale], axis=1)
  return rows.reshape((-1,) + images.shape[1:]).astype(np.uint8), np.asarray(cond_log_prob)[::per_image]


def gan_figures(s, state, out, psis, num, mix, seed):
  """Truncation sweep and style-mixing grids of a GAN (modules with `truncation_sweep`, e.g. StyleGAN2)."""
  model, classes = s.model, max(s.train_data.num_classes, 1)
  labels = jnp.arange(num * num) % classes if getattr(model, "num_classes", 0) else None
  sweep = s.module.truncation_sweep(state, jax.random.key(seed), psis, num * num, model=model, labels=labels)
  for psi, images in sweep.items():
    writers.save_png(os.path.join(out, f"truncation_{psi:g}.png"), writers.image_grid(images), scale=2)
  rows = np.concatenate([images[:num] for images in sweep.values()])
  writers.save_png(os.path.join(out, "truncation.png"), writers.image_grid(rows, columns=num), scale=2)
  written = [f"{out}/truncation.png", f"{out}/truncation_PSI.png for PSI in {psis}"]
  half = model.num_ws // 2
  for name, layers in (("coarse", range(0, half)), ("fine", range(half, model.num_ws))):
    grid = s.module.mixing_grid(state, jax.random.key(seed + 1), mix, mix, layers, model=model,
                                labels=0 if getattr(model, "num_classes", 0) else None)
    writers.save_png(os.path.join(out, f"style_mixing_{name}.png"), writers.image_grid(grid, columns=mix + 1),
                     scale=2)
    written.append(f"{out}/style_mixing_{name}.png")
  return written


def main(argv):
  del argv
  with cli.clear_errors():
    s, state = trainer.restore_for_eval(_CONFIG.value, _WORKDIR.value)
    out = os.path.join(_WORKDIR.value, "samples")
    if hasattr(s.module, "truncation_sweep"):  # GANs: truncation and style mixing (no temperature, no encoder)
      print("\n".join(gan_figures(s, state, out, [float(p) for p in _PSIS.value], _NUM.value, _MIX.value,
                                   _SEED.value)))
      return
    temperatures = [float(t) for t in _TEMPERATURES.value]
    if hasattr(s.module, "TemperatureSampler"):
      sweep = readjusted_temperature_sweep(s, state, temperatures, _NUM.value, _SEED.value, _READJUST_BN.value)
    else:
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
    if hasattr(s.model, "complete"):
      grid, cond_log_prob = completions(s, state, _MISSING.value, _COMPLETE_IMAGES.value, _COMPLETIONS.value,
                                        _SEED.value)
      writers.save_png(os.path.join(out, "completions.png"), writers.image_grid(grid, columns=_COMPLETIONS.value + 2),
                       scale=2)
      written.append(f"{out}/completions.png ({_MISSING.value} hidden; -log p(x_missing | x_observed) of the "
                     f"originals: {-cond_log_prob.mean():.1f} nats)")
  print("\n".join(written))


if __name__ == "__main__":
  cli.run(main)
