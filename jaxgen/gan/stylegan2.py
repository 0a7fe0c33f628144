"""StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN") with the training
recipe of NVlabs/stylegan2-ada-pytorch, as a jaxgen family (config.model_name = "gan.stylegan2").

`jaxgen.gan.networks` holds the hyperparameters (`Model`, re-exported here as the family's `Model`) and the
networks, `jaxgen.gan.training` the losses, the two optimisers (config.optimizer), the train state and the step.
This module is what the trainer and the scripts read: sampling from the generator's EMA, evaluation (FID / KID /
precision / recall), the figures (truncation sweep, style mixing), the projector, and `FAMILY`.
"""
import functools
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen.gan import networks
from jaxgen.gan import training
from jaxgen.gan.networks import Model  # noqa: F401  (the family's Model, built as Model(**config.model))
from jaxgen.gan.networks import tiny  # noqa: F401  (the family's Model, built as Model(**config.model))
from jaxgen.metrics import classifier
from jaxgen.metrics import sample_quality
from jaxgen.metrics import vgg16
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
# Projection: find w (and the noise maps) for an image.


class Projection(NamedTuple):
  """What `project` finds for one image."""
  ws: Any  # [num_ws, w_dim] the projected w of every layer (all rows equal in W mode)
  noise: Any  # the optimised noise maps, structured as state["noise_const"] ({..: [R, R]})
  distance: Any  # [] feature distance of G(ws, noise) to the target
  ws_steps: Any  # [steps, num_ws, w_dim] ws after each step with record_steps, else None


W_AVG_SAMPLES = 10_000  # the official projector's w_avg_samples


def w_stats(g_params, *, model, num_samples=W_AVG_SAMPLES, rng=None):
  """(w_avg [w_dim], w_std []) of `num_samples` mapped z ~ N(0, I), as projector.py: the projection starts at w_avg
  and w_std = sqrt(sum |w - w_avg|^2 / N) scales its noise on w. A class-conditional model draws uniform labels."""
  rng_z, rng_c = jax.random.split(jax.random.key(123) if rng is None else rng)
  z = jax.random.normal(rng_z, (num_samples, model.z_dim))
  labels = jax.random.randint(rng_c, (num_samples,), 0, model.num_classes) if model.num_classes else None
  w = networks.Generator(model).apply({"params": g_params}, z, labels, method="mapping")  # [N, w_dim]
  w_avg = jnp.mean(w, axis=0)
  return w_avg, jnp.sqrt(jnp.sum(jnp.square(w - w_avg)) / num_samples)


def noise_regularization(noise):
  """Sum over the noise maps [R, R] and their 2x2 average-pooled pyramid down to 8x8 of the squared mean product
  with the map shifted by one pixel, along each axis (StyleGAN2 Sec. 5, projector.py): about 0 for white noise, so
  the maps cannot smuggle the image's structure in."""
  total = 0.0
  for n in jax.tree.leaves(noise):
    while True:
      total += jnp.mean(n * jnp.roll(n, 1, axis=1)) ** 2 + jnp.mean(n * jnp.roll(n, 1, axis=0)) ** 2
      if n.shape[0] <= 8:
        break
      n = n.reshape(n.shape[0] // 2, 2, n.shape[1] // 2, 2).mean(axis=(1, 3))
  return total


def _normalize_noise(noise):
  """Every map to zero mean and unit variance (after each step, as projector.py)."""
  def one(n):
    n = n - jnp.mean(n)
    return n * jax.lax.rsqrt(jnp.mean(jnp.square(n)))
  return jax.tree.map(one, noise)


def synthesize(g_params, ws, noise, *, model):
  """G's images [B, R, R, C] in about [-1, 1] from ws [B, num_ws, w_dim] with the noise maps `noise` ('const')."""
  return networks.Generator(model).apply(networks.g_variables(g_params, noise), ws, "const", method="synthesis")


def project(g_params, target, w_avg, w_std, noise_const, *, model, steps=1000, w_plus=False, optimize_noise=True,
            lr=0.1, lr_rampup_length=0.05, lr_rampdown_length=0.25, initial_noise_factor=0.05,
            noise_ramp_length=0.75, regularize_noise_weight=1e5, feature_fn=None, rng=None, record_steps=False):
  """Finds ws (and noise maps) such that G(ws) matches `target`: the projector of StyleGAN2 Sec. 5, with the
  schedule and defaults of stylegan2-ada-pytorch `projector.py`.

  Adam (0.9, 0.999) on w, starting at w_avg, and on the noise maps, drawn afresh from N(0, 1); the learning rate
  ramps up over the first `lr_rampup_length` of the steps and down (cosine) over the last `lr_rampdown_length`;
  Gaussian noise of scale w_std * initial_noise_factor * max(0, 1 - t / noise_ramp_length)^2 is added to w; the loss
  is the feature distance plus regularize_noise_weight * `noise_regularization`, and the maps are renormalised after
  each step. W mode (default, as the official code) optimises one w for all layers; `w_plus` one w per layer
  (W+, Abdal et al. 2019). The distance is the squared error of `feature_fn` (identity: pixels;
  `projection_features` gives the official VGG16 LPIPS, or a classifier-feature LPIPS).

  Args:
    target: one image, uint8 [R, R, C].
    w_avg, w_std: from `w_stats`.
    noise_const: state["noise_const"]: the maps' shapes, and the maps used when not `optimize_noise`.
    feature_fn: float images [1, R, R, C] in [-1, 1] -> features [1, ...].
    w_plus: bool, may be traced.
    record_steps: also return ws after each step (for a progress video).
  Returns:
    a `Projection`.
  """
  feature_fn = feature_fn or (lambda x: x)
  target_feats = feature_fn(networks.to_float(target)[None])
  rng_noise, rng_w = jax.random.split(jax.random.key(0) if rng is None else rng)
  if optimize_noise:
    keys = jax.random.split(rng_noise, len(jax.tree.leaves(noise_const)))
    noise0 = jax.tree.unflatten(jax.tree.structure(noise_const), [
        jax.random.normal(k, n.shape, jnp.float32) for k, n in zip(keys, jax.tree.leaves(noise_const))])
  else:
    noise0 = noise_const
  tx = optax.adam(1.0, b1=0.9, b2=0.999)
  # w is [num_ws, w_dim] in both modes; in W mode its rows get one noise draw and the summed gradient, so they stay
  # equal and Adam moves them as the official single w. `w_plus` may then be traced: one compilation for both.
  tie = lambda x: jnp.where(w_plus, x, jnp.broadcast_to(jnp.sum(x, 0, keepdims=True), x.shape))

  def distance(w, noise):
    return jnp.sum(jnp.square(feature_fn(synthesize(g_params, w[None], noise, model=model)) - target_feats))

  def loss_fn(params, w_noise):
    w, noise = params
    dist = distance(w + w_noise, noise)
    reg = noise_regularization(noise) if optimize_noise else 0.0
    return dist + regularize_noise_weight * reg, dist

  def body(carry, i):
    params, opt = carry
    t = i / steps
    noise_scale = w_std * initial_noise_factor * jnp.maximum(0.0, 1.0 - t / noise_ramp_length) ** 2
    ramp = jnp.minimum(1.0, (1.0 - t) / lr_rampdown_length)
    ramp = (0.5 - 0.5 * jnp.cos(ramp * jnp.pi)) * jnp.minimum(1.0, t / lr_rampup_length)
    w_noise = jax.random.normal(jax.random.fold_in(rng_w, i), params[0].shape) * noise_scale  # [num_ws, w_dim]
    w_noise = jnp.where(w_plus, w_noise, w_noise[:1])
    (grad_w, grad_noise), _ = jax.grad(loss_fn, has_aux=True)(params, w_noise)
    if not optimize_noise:
      grad_noise = jax.tree.map(jnp.zeros_like, grad_noise)
    updates, opt = tx.update((tie(grad_w), grad_noise), opt)
    w, noise = jax.tree.map(lambda p, u: p + lr * ramp * u, params, updates)
    noise = _normalize_noise(noise) if optimize_noise else noise
    return ((w, noise), opt), (w if record_steps else None)

  w0 = jnp.broadcast_to(jnp.asarray(w_avg, jnp.float32), (model.num_ws, model.w_dim))
  params0 = (w0, noise0)
  ((w, noise), _), ws_steps = jax.lax.scan(body, (params0, tx.init(params0)), jnp.arange(steps))
  return Projection(w, noise, distance(w, noise), ws_steps)


DISTANCES = ("classifier", "pixel", "vgg16")


def _vgg16_features(variables, x, *, image_shape, conv_impl):
  x = vgg16.projector_input(networks.crop_images(x, image_shape))
  return vgg16.lpips_features(variables, x, conv_impl=conv_impl)


def _classifier_features(params, x, *, image_shape, net):
  return classifier.perceptual_features(params, (networks.crop_images(x, image_shape) + 1.0) * 127.5, model=net)


def projection_features(s, distance="classifier", vgg16_weights=None):
  """The projector's `feature_fn` for `distance`: "classifier", the LPIPS-style `perceptual_features` of the offline
  classifier trained on config.dataset (config.sample_metrics' classifier settings; cached); "pixel" (squared
  error of the [-1, 1] pixels); or "vgg16", the official distance: VGG16 LPIPS features (`jaxgen.metrics.vgg16`)
  of the weights in `vgg16_weights` (the .npz path, or the variables `vgg16.load_variables` returned), behind the
  official front end `vgg16.projector_input` (gray -> RGB; area-downsampled to 256x256 when larger; kept at native
  size when smaller, except below 16x16, upsampled by pixel repetition). Images are cropped to the data's shape
  first (padding is no part of the image).

  The function is a `jax.tree_util.Partial` holding the network's weights as pytree leaves: passed to a jitted
  function as an argument (as `project_image` does), the weights are inputs, not constants baked into the program
  (59 MB for VGG16)."""
  model = s.model
  if distance == "pixel":
    return jax.tree_util.Partial(functools.partial(networks.crop_images, image_shape=model.image_shape))
  if distance == "vgg16":
    if vgg16_weights is None:
      raise ValueError(f"The vgg16 distance needs VGG16 LPIPS weights: pass --vgg16=FILE ({vgg16.HOW_TO_CONVERT}).")
    variables = vgg16_weights if isinstance(vgg16_weights, dict) else vgg16.load_variables(vgg16_weights)
    fn = functools.partial(_vgg16_features, image_shape=model.image_shape, conv_impl=model.conv_impl)
    return jax.tree_util.Partial(fn, variables)
  if distance != "classifier":
    raise ValueError(f"distance={distance!r}: use one of {DISTANCES}.")
  if s.train_data.num_classes < 2:
    raise ValueError(f"The classifier distance trains a classifier on {s.config.dataset!r}'s labels and it has "
                     f"none; pass --distance=pixel.")
  net, params = sample_quality.trained_classifier(s.config.dataset, s.config.data_dir,
                                                  sample_quality.settings(s.config), seed=s.config.seed)
  return jax.tree_util.Partial(functools.partial(_classifier_features, image_shape=model.image_shape, net=net), params)


def project_image(s, state, image, *, steps=1000, w_plus=False, optimize_noise=True, distance="classifier",
                  w_avg_samples=W_AVG_SAMPLES, seed=303, vgg16_weights=None):
  """`project` of the EMA generator onto one uint8 image [H, W, C] (the data's shape), ws recorded at every step;
  `distance` and `vgg16_weights` as `projection_features`. Returns (Projection, uint8 [H, W, C] projected image)."""
  model, g = s.model, state["ema_params"]
  feature_fn = projection_features(s, distance, vgg16_weights=vgg16_weights)
  w_avg, w_std = jax.jit(functools.partial(w_stats, model=model, num_samples=w_avg_samples))(g)
  target = networks.pad_images(jnp.asarray(image)[None], model.resolution)[0]  # [R, R, C]
  fn = jax.jit(functools.partial(project, model=model, steps=steps, optimize_noise=optimize_noise, record_steps=True))
  p = fn(g, target, w_avg, w_std, state["noise_const"], w_plus=w_plus, rng=jax.random.key(seed), feature_fn=feature_fn)
  return p, render(g, p.ws[None], p.noise, model=model)[0]


def render(g_params, ws, noise, *, model, batch_size=16):
  """uint8 [N, H, W, C] images of ws [N, num_ws, w_dim] with the noise maps `noise`, batch_size at a time."""
  fn = jax.jit(lambda g, n, w: networks.crop_images(networks.to_uint8(synthesize(g, w, n, model=model)),
                                                    model.image_shape))
  n = len(ws)
  batch_size = min(batch_size, n)
  ws = jnp.concatenate([ws, jnp.repeat(ws[-1:], -n % batch_size, axis=0)])  # equal batches: one compilation
  return np.concatenate([np.asarray(fn(g_params, noise, ws[i:i + batch_size]))
                         for i in range(0, len(ws), batch_size)])[:n]


PROJECT_STEPS = 100  # default of config.project_steps, the projector's Adam steps per image in comparisons


def project_images(s, state, images, observed):
  """uint8 [N, H, W, C]: G(ws, noise) for each image's projection (`project` with the official schedule in W mode,
  noise maps optimised, EMA generator; squared pixel error over the `observed` pixels only, numpy bool [H, W];
  config.project_steps steps, default 100)."""
  model = s.model
  weight = networks.pad_images(jnp.asarray(observed, jnp.float32)[None, :, :, None], model.resolution)[0]  # [R, R, 1]
  num_steps = int(s.config.get("project_steps", PROJECT_STEPS))
  g = state["ema_params"]

  def one(target, w_avg, w_std):  # uint8 [R, R, C] -> float [R, R, C] in [-1, 1]
    p = project(g, target, w_avg, w_std, state["noise_const"], model=model, steps=num_steps,
                feature_fn=lambda x: x * weight)
    return synthesize(g, p.ws[None], p.noise, model=model)[0]

  targets = networks.pad_images(jnp.asarray(images), model.resolution)  # [N, R, R, C]
  w_avg, w_std = jax.jit(functools.partial(w_stats, model=model))(g)
  out = jax.jit(jax.vmap(one, in_axes=(0, None, None)))(targets, w_avg, w_std)
  return np.asarray(networks.crop_images(networks.to_uint8(out), model.image_shape)), num_steps


def reconstruct(s, state, images, labels):
  """`Family.reconstruct`: G(w) with w from the projector (`project_images` on every pixel)."""
  del labels  # the projector optimises w directly
  out, num_steps = project_images(s, state, images, np.ones(s.model.image_shape[:2], bool))
  return out, f"projector ({num_steps} steps, pixel L2, W and noise)"


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
