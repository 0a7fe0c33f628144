"""StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN") with the training
recipe of NVlabs/stylegan2-ada-pytorch, as a jaxgen family (config.model_name = "gan.stylegan2").

`jaxgen.gan.networks` holds the hyperparameters (`Model`, re-exported here as the family's `Model`) and the
networks, `jaxgen.gan.training` the losses, the two optimisers (config.optimizer), the train state and the step.
This module is what the trainer and the scripts read: sampling from the generator's EMA, evaluation (FID / KID /
precision / recall), the figures (truncation sweep, style mixing), the projector, and `FAMILY`.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen.gan import networks
from jaxgen.gan import training
from jaxgen.gan.networks import Model  # noqa: F401  (the family's Model, built as Model(**config.model))
from jaxgen.gan.networks import tiny  # noqa: F401  (the family's Model, built as Model(**config.model))
from jaxgen.metrics import sample_quality
from jaxgen.training import family
from jaxgen.training import figures as figures_lib


def sample(state, rng, num, labels=None, *, model, truncation_psi=1.0, noise_mode="const"):
  """uint8 samples [num, R, R, C] from the EMA generator (state["ema_params"], truncation toward state["w_avg"],
  constant noise state["noise_const"])."""
  rng_z, rng_noise, rng_c = jax.random.split(rng, 3)
  z = jax.random.normal(rng_z, (num, model.z_dim))
  if model.num_classes > 0 and labels is None:
    labels = jax.random.randint(rng_c, (num,), 0, model.num_classes)
  img = networks.generate(state["ema_params"], state["w_avg"], z, labels, model=model, truncation_psi=truncation_psi,
                          noise_mode=noise_mode, rng_noise=rng_noise, noise_const=state["noise_const"])
  return networks.to_uint8(img)


def sample_images(state, rng, labels, *, model, config):
  """`Family.sample_images`: uint8 [num, H, W, C] from the EMA generator with random noise (as the official
  metrics), truncated by config.truncation_psi (default 1: none); `labels` [num] condition a class-conditional
  model."""
  psi = float(config.get("truncation_psi", 1.0))
  images = sample(state, rng, labels.shape[0], labels if model.num_classes else None, model=model,
                  truncation_psi=psi, noise_mode="random")
  return networks.crop_images(images, model.image_shape)


def evaluate(s, state, split, num_examples):
  """`Family.evaluate`: FID, KID and precision/recall of samples against `split` (jaxgen.metrics.sample_quality;
  settings in config.sample_metrics: the offline classifier by default, Inception-v3 with supplied weights)."""
  return sample_quality.evaluate(s, state, split, num_examples)


# ----------------------------------------------------------------------------------------------------------------
# Figures.


def truncation_sweep(state, rng, psis, num, *, model, labels=None):
  """{psi: uint8 [num, H, W, C]}: the same z (and noise) at each truncation psi, for sample grids."""
  draw = jax.jit(lambda s, psi: networks.crop_images(networks.to_uint8(networks.generate(
      s["ema_params"], s["w_avg"], jax.random.normal(rng, (num, model.z_dim)), labels, model=model,
      truncation_psi=psi, noise_mode="const", noise_const=s["noise_const"])), model.image_shape), static_argnums=1)
  ema = {k: state[k] for k in ("ema_params", "w_avg", "noise_const")}
  return {psi: np.asarray(draw(ema, float(psi))) for psi in psis}


def mixing_grid(state, rng, rows, cols, col_layers, *, model, truncation_psi=1.0, labels=None):
  """uint8 [(rows + 1) * (cols + 1), H, W, C]: a style-mixing figure (StyleGAN Fig. 3). Top row: the column
  sources; left column: the row sources; cell (i, j): row i's image with the layers in `col_layers` taken from
  column j (a blank top-left cell)."""
  g, w_avg, noise_const = state["ema_params"], state["w_avg"], state["noise_const"]
  rng_r, rng_c = jax.random.split(rng)
  zr, zc = jax.random.normal(rng_r, (rows, model.z_dim)), jax.random.normal(rng_c, (cols, model.z_dim))
  lr = None if labels is None else jnp.full((rows,), labels, jnp.int32)
  lc = None if labels is None else jnp.full((cols,), labels, jnp.int32)
  fn = functools.partial(networks.style_mixing_grid, model=model, col_layers=tuple(col_layers),
                         truncation_psi=truncation_psi, labels_rows=lr, labels_cols=lc, noise_const=noise_const)
  grid = jax.jit(fn)(g, w_avg, zr, zc)  # [rows, cols, R, R, C]
  gen = jax.jit(functools.partial(networks.generate, model=model, truncation_psi=truncation_psi,
                                  noise_const=noise_const))
  sources_r, sources_c = gen(g, w_avg, zr, lr), gen(g, w_avg, zc, lc)
  res = model.resolution
  blank = jnp.full((1, res, res, model.img_channels), 1.0)
  top = jnp.concatenate([blank, sources_c])  # [cols + 1, R, R, C]
  body = jnp.concatenate([sources_r[:, None], grid], axis=1).reshape((-1, res, res, model.img_channels))
  return np.asarray(networks.crop_images(networks.to_uint8(jnp.concatenate([top, body])), model.image_shape))


FIGURE_OPTIONS = dict(psis=(0.0, 0.25, 0.5, 0.75, 1.0), num=10, mix=5)


def figures(s, state, *, seed, psis, num, mix):
  """`Family.figures`: truncation.png (one row per psi, the same z in every row; psi 0 is the image of w_avg),
  truncation_PSI.png grids (num x num), and style_mixing_coarse.png / style_mixing_fine.png (StyleGAN Fig. 3,
  mix x mix: the top row and the left column are sources; cell (i, j) is row i's image with the coarse (first
  half) / fine (second half) layers' w taken from column j)."""
  model = s.model
  labels = figures_lib.labels_for(s, num * num) if model.num_classes else None
  sweep = truncation_sweep(state, jax.random.key(seed), psis, num * num, model=model, labels=labels)
  out = figures_lib.sweep_figures(sweep, num, "truncation.png", "truncation")
  half = model.num_ws // 2
  for name, layers_ in (("coarse", range(0, half)), ("fine", range(half, model.num_ws))):
    grid = mixing_grid(state, jax.random.key(seed + 1), mix, mix, layers_, model=model,
                       labels=0 if model.num_classes else None)
    out[f"style_mixing_{name}.png"] = figures_lib.grid(grid, columns=mix + 1)
  return out


# ----------------------------------------------------------------------------------------------------------------
# Projection: find w for an image.


def project(g_params, w_avg, target, *, model, steps=200, lr=0.1, initial_noise_factor=0.05, noise_ramp_length=0.75,
            lr_rampdown_length=0.25, lr_rampup_length=0.05, feature_fn=None, rng=None, w_std=None, noise_const=None):
  """Find w such that G(w) matches `target` (a simplified `projector.py` of stylegan2-ada-pytorch, Sec. 5 of
  StyleGAN2): Adam on a single w broadcast to all layers, starting from w_avg, with a learning rate ramped up then
  cosine-decayed and Gaussian noise on w that decays to zero over the first `noise_ramp_length` of the steps.
  The official code compares VGG16 (LPIPS) features and also optimises the noise maps; here the distance is
  the squared error of `feature_fn(images)` (identity: pixels; pass e.g. the offline classifier's features) and
  noise is fixed ('const').

  Args:
    target: one image, uint8 [R, R, C].
    w_std: the spread of w for the noise scale (the official code estimates it from 10k samples); None: 1.
    noise_const: state["noise_const"], the constant noise images; None: the ones init draws.
  Returns:
    (w [w_dim], final distance).
  """
  gen = networks.Generator(model)
  feature_fn = feature_fn or (lambda x: x)
  target_feats = feature_fn(networks.to_float(target)[None])
  rng = jax.random.key(0) if rng is None else rng
  w_std = 1.0 if w_std is None else w_std
  tx = optax.adam(1.0, b1=0.9, b2=0.999)

  def distance(w):
    img = gen.apply(networks.g_variables(g_params, noise_const), networks.broadcast_ws(w[None], model.num_ws), "const",
                    method="synthesis")
    return jnp.sum(jnp.square(feature_fn(img) - target_feats))

  def body(i, carry):
    w, opt = carry
    t = i / steps
    noise_scale = w_std * initial_noise_factor * jnp.maximum(0.0, 1.0 - t / noise_ramp_length) ** 2
    rate = jnp.minimum(1.0, (1.0 - t) / lr_rampdown_length)
    rate = 0.5 - 0.5 * jnp.cos(rate * jnp.pi)
    rate = lr * rate * jnp.minimum(1.0, t / lr_rampup_length)  # `steps` may be traced (one compilation)
    w_noise = jax.random.normal(jax.random.fold_in(rng, i), w.shape) * noise_scale
    grads = jax.grad(lambda v: distance(v + w_noise))(w)
    updates, opt = tx.update(grads, opt)
    return w + rate * updates, opt

  w0 = jnp.asarray(w_avg, jnp.float32)
  w, _ = jax.lax.fori_loop(0, steps, body, (w0, tx.init(w0)))
  return w, distance(w)


PROJECT_STEPS = 100  # default of config.project_steps, the projector's Adam steps per image


def project_images(s, state, images, observed):
  """uint8 [N, H, W, C]: G(w) for each image's w found by `project` (EMA generator, constant noise, squared pixel
  error over the `observed` pixels only, numpy bool [H, W]; config.project_steps Adam steps, default 100)."""
  model = s.model
  weight = networks.pad_images(jnp.asarray(observed, jnp.float32)[None, :, :, None], model.resolution)[0]  # [R, R, 1]
  num_steps = int(s.config.get("project_steps", PROJECT_STEPS))

  def one(target):  # uint8 [R, R, C] -> float [R, R, C] in [-1, 1]
    w, _ = project(state["ema_params"], state["w_avg"], target, model=model, steps=num_steps,
                   feature_fn=lambda x: x * weight)
    return networks.Generator(model).apply({"params": state["ema_params"]}, networks.broadcast_ws(
        w[None], model.num_ws), "const", method="synthesis")[0]

  targets = networks.pad_images(jnp.asarray(images), model.resolution)  # [N, R, R, C]
  out = networks.crop_images(networks.to_uint8(jax.jit(jax.vmap(one))(targets)), model.image_shape)
  return np.asarray(out), num_steps


def reconstruct(s, state, images, labels):
  """`Family.reconstruct`: G(w) with w from the projector (`project_images` on every pixel)."""
  del labels  # the projector optimises w directly
  out, num_steps = project_images(s, state, images, np.ones(s.model.image_shape[:2], bool))
  return out, f"projector ({num_steps} steps, pixel L2)"


def complete(s, state, rng, images, observed):
  """`Family.complete`: the observed pixels kept, the hidden ones from G(w), w projected onto the observed ones."""
  del rng  # the projector is deterministic here (its noise key is fixed)
  out, num_steps = project_images(s, state, images, observed)
  return np.where(observed[None, :, :, None], images, out), f"projector on observed pixels ({num_steps} steps)"


FAMILY = family.Family(
    make_optimizer=training.make_optimizer, init_state=training.init_state, train_step=training.train_step,
    eval_step=None, summarize=family.mean_summary, sample_images=sample_images, figures=figures,
    figure_options=FIGURE_OPTIONS, evaluate=evaluate, progress_keys=("g_loss", "d_loss"), reconstruct=reconstruct,
    complete=complete)
