"""StyleGAN2 training (Karras et al. 2020; NVlabs/stylegan2-ada-pytorch `training/loss.py`, `training_loop.py`):
losses, regularisers, the two optimisers, the train state and the pure step functions.

  G main:  L_G = softplus(-D(G(z)))                                  (non-saturating logistic loss)
  G reg:   L_pl = w_pl * (|J_w^T y| - a)^2, every `pl_interval` steps (Sec. 3.2, path-length regularisation)
  D main:  L_D = softplus(D(G(z))) + softplus(-D(x))
  D reg:   L_R1 = gamma / 2 * |grad_x D(x)|^2, every `r1_interval` steps (lazy R1, Sec. 3.1)
  EMA of G with half-life `ema_kimg` thousand images and ramp-up.
  ADA (Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data", Sec. 3): every image D
  sees is augmented with probability p; every `ada_interval` steps, r_t = E[sign(D(real))] over the reals D saw
  since the last adjustment (D main and R1) moves p by sign(r_t - ada_target) * B * ada_interval / (ada_kimg * 1000),
  p >= 0 (`training_loop.py`). B is the global batch: under jit the sums span every device.
Lazy regularisation runs the regulariser as its own optimiser step, multiplied by its interval, and corrects
Adam: with c = interval / (interval + 1), lr <- lr * c and beta <- beta ** c (Sec. 3.1; `training_loop.py`).

The train state is the trainer's dict (jaxgen.training.steps), with a GAN's parts:
  step               int32 []
  params             {"generator", "discriminator"}: the two networks' "params"
  ema_params         the generator's EMA (what sampling and evaluation use: `steps.eval_params`)
  w_avg              float32 [w_dim]   running mean of w, the centre of truncation
  noise_const        the generator's constant noise images [R, R] per synthesis layer (noise_mode='const'; the
                     official `noise_const` buffers, never trained: so that official weights keep theirs)
  pl_mean            float32 []        running mean of the path lengths
  opt                {"generator", "discriminator"}: optax.adam states
  stats              {"r1_penalty", "pl_penalty"}: the latest regulariser values
  ada                only with config.model.augment 'ada' or 'fixed': {"p": the augmentation probability,
                     "signs", "count": sum of sign(D(real)) and number of reals since the last adjustment} (float32
                     []), so that a resumed run continues with the same p and the same partial interval
  skipped_updates, consecutive_skips   int32 []  (`steps.keep_if_finite`)
"""
import math

import jax
import jax.numpy as jnp
import optax

from jaxgen.gan import augment
from jaxgen.gan import networks
from jaxgen.metrics import sample_quality
from jaxgen.training import steps

# ----------------------------------------------------------------------------------------------------------------
# Losses.


def r1_penalty(d_fn, real):
  """R1 (Mescheder et al. 2018): |grad_x sum_b D(x)_b|^2 per example, [B]. `d_fn` maps images to logits [B].

  The gradient of the summed logits, as the official code (minibatch-stddev couples the examples, so this is not
  the per-example gradient of D(x_b) alone).
  """
  return r1_penalty_and_logits(d_fn, real)[0]


def r1_penalty_and_logits(d_fn, real):
  """(`r1_penalty` [B], the logits D(real) [B] it differentiated)."""
  def summed(x):
    logits = d_fn(x)
    return jnp.sum(logits), logits

  grads, logits = jax.grad(summed, has_aux=True)(real)  # [B, H, W, C]
  return jnp.sum(jnp.square(grads), axis=(1, 2, 3)), logits


def path_length(synth_fn, ws, rng):
  """Path lengths |J_w^T y|, y ~ N(0, I) / sqrt(H W) (StyleGAN2 Sec. 3.2), [B]. `synth_fn` maps ws to images.

  The gradient of sum(img * y) w.r.t. ws [B, L, D] is squared, summed over D, averaged over the L layers.
  """
  img_shape = jax.eval_shape(synth_fn, ws).shape
  noise = jax.random.normal(rng, img_shape) / math.sqrt(img_shape[1] * img_shape[2])
  grads = jax.grad(lambda v: jnp.sum(synth_fn(v) * noise))(ws)  # [B, L, D]
  return jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=2), axis=1))


# ----------------------------------------------------------------------------------------------------------------
# Optimisers.

# config.optimizer: the official stylegan2 config's Adam (lr 0.002, betas (0, 0.99), eps 1e-8) for G and D.
OPTIMIZER_DEFAULTS = dict(generator=dict(lr=0.002), discriminator=dict(lr=0.002), betas=(0.0, 0.99), eps=1e-8)


def lazy_regularization(lr, betas, interval):
  """Adam hyperparameters corrected for lazy regularisation (StyleGAN2 Sec. 3.1, `training_loop.py`):
  c = interval / (interval + 1); lr * c and beta ** c, so that the interval + 1 optimiser steps per `interval`
  minibatches move as far, with the same moment time constants, as `interval` plain steps."""
  if interval is None:
    return lr, tuple(betas)
  c = interval / (interval + 1)
  return lr * c, tuple(b ** c for b in betas)


def adam_settings(model, optimizer=None):
  """{"generator", "discriminator"} -> (lr, (b1, b2), eps) of each Adam, lazily corrected with G's pl_interval and
  D's r1_interval. `optimizer` is config.optimizer (OPTIMIZER_DEFAULTS where a key is missing).

  As in the official code the correction depends only on the interval, not on whether the regulariser's weight is
  zero (the `cifar` config has pl_weight=0 and still trains G with lr * 4/5).
  """
  given = {k: dict(v) if k in ("generator", "discriminator") else v
           for k, v in (dict(optimizer) if optimizer is not None else {}).items()}
  unknown = sorted(set(given) - set(OPTIMIZER_DEFAULTS))
  unknown += [f"{k}.{n}" for k in ("generator", "discriminator") for n in sorted(set(given.get(k, {})) - {"lr"})]
  if unknown:
    raise ValueError(f"Unknown config.optimizer key(s) {unknown} for StyleGAN2; known keys: generator.lr, "
                     f"discriminator.lr, betas, eps.")
  opts = OPTIMIZER_DEFAULTS | given
  betas = tuple(opts["betas"])
  out = {}
  for part, interval in (("generator", model.pl_interval), ("discriminator", model.r1_interval)):
    lr = dict(OPTIMIZER_DEFAULTS[part], **opts[part])["lr"]
    out[part] = lazy_regularization(lr, betas, interval) + (opts["eps"],)
  return out


def make_optimizers(model, optimizer=None):
  """{"generator", "discriminator"}: Adam (`adam_settings`) for each network."""
  return {part: optax.adam(lr, b1=b1, b2=b2, eps=eps)
          for part, (lr, (b1, b2), eps) in adam_settings(model, optimizer).items()}


def make_optimizer(config, *, model):
  """`Family.make_optimizer`: `make_optimizers` for the model and config.optimizer, after checking the config."""
  check_config(config)
  return make_optimizers(model, config.get("optimizer", None))


def check_config(config):
  """The trainer settings a GAN cannot use are ValueErrors (before anything is compiled)."""
  if config.get("ema_decay", 0.0):
    raise ValueError("StyleGAN2 keeps its own generator EMA (config.model.ema_kimg, ema_rampup); set "
                     "config.ema_decay = 0.")
  if config.get("binarize", ""):
    raise ValueError("StyleGAN2 trains on 8-bit images; set config.binarize = ''.")
  sample_quality.settings(config)  # bad config.sample_metrics fail here, before training, not at the first eval


# ----------------------------------------------------------------------------------------------------------------
# State and step functions.


def init_state(rng, batch, *, model, tx, config):
  """`Family.init_state`: the train state (module docstring) for `model`, from a data batch's shape.

  batch["image"] is uint8 [B, H, W, C] with (H, W, C) = model.image_shape; B must be a multiple of the minibatch
  standard deviation group (or smaller).
  """
  b, h, w, c = batch["image"].shape
  if (h, w, c) != model.image_shape:
    raise ValueError(f"config.model.image_shape={model.image_shape} but the data has images of shape {(h, w, c)}; "
                     f"set --config.model.image_shape to match.")
  if b % min(model.mbstd_group_size or b, b):
    raise ValueError(f"config.batch_size={b} must be a multiple of config.model.mbstd_group_size="
                     f"{model.mbstd_group_size} (minibatch standard deviation groups); change one of them.")
  accum = config.get("grad_accum_steps", 1)
  if accum > 1 and (model.mbstd_group_size is None or (b // accum) % min(model.mbstd_group_size, b)):
    raise ValueError(f"config.grad_accum_steps={accum} leaves micro-batches of {b // accum} images, which must be a "
                     f"multiple of config.model.mbstd_group_size={model.mbstd_group_size} for the minibatch-stddev "
                     f"groups to stay the batch's; lower grad_accum_steps or raise the batch.")
  rng_g, rng_d, rng_noise = jax.random.split(rng, 3)
  z = jnp.zeros((b, model.z_dim))
  labels = jnp.zeros((b,), jnp.int32) if model.num_classes > 0 else None
  images = jnp.zeros((b, model.resolution, model.resolution, model.img_channels))  # [B, R, R, C]
  # jit: an eager init dispatches every small op separately and is several times slower than compiling it.
  g_vars = jax.jit(networks.Generator(model).init)({"params": rng_g, "noise": rng_noise}, z, labels)
  g_params = g_vars["params"]
  d_params = jax.jit(networks.Discriminator(model).init)(rng_d, images, labels)["params"]
  zero = jnp.zeros((), jnp.int32)
  ada = {}
  if model.augment != "noaug":  # the key only where it is used: states of runs without ADA keep their layout
    f32 = lambda v: jnp.full((), v, jnp.float32)
    ada = {"ada": {"p": f32(model.augment_p), "signs": f32(0.0), "count": f32(0.0)}}
  return ada | {
      "step": zero,
      "params": {"generator": g_params, "discriminator": d_params},
      "ema_params": jax.tree.map(jnp.copy, g_params),
      "w_avg": jnp.zeros((model.w_dim,), jnp.float32),
      "noise_const": g_vars["noise_const"],
      "pl_mean": jnp.zeros((), jnp.float32),
      "opt": {"generator": tx["generator"].init(g_params), "discriminator": tx["discriminator"].init(d_params)},
      "stats": {"r1_penalty": jnp.zeros(()), "pl_penalty": jnp.zeros(())},
      "skipped_updates": zero,
      "consecutive_skips": zero,
  }


def _sanitize(grads):
  """nan -> 0, +-inf -> +-1e5, as the official `misc.nan_to_num` on every gradient before the optimiser step."""
  return jax.tree.map(lambda g: jnp.nan_to_num(g, nan=0.0, posinf=1e5, neginf=-1e5), grads)


def _update(state, part, tx, grads):
  """`state` with network `part` ("generator" or "discriminator") and its Adam state moved by `grads`."""
  params, opt = state["params"][part], state["opt"][part]
  updates, opt = tx[part].update(_sanitize(grads), opt, params)
  return dict(state, params=dict(state["params"], **{part: optax.apply_updates(params, updates)}),
              opt=dict(state["opt"], **{part: opt}))


def _gen_labels(batch, rng, num_classes, num):
  """Labels for generated images: the batch's labels in a random order (a draw from the data's label
  distribution, as the official code draws gen_c from the training set)."""
  if num_classes == 0:
    return None
  return jax.random.permutation(rng, batch["label"])[:num].astype(jnp.int32)


def _run_mapping(model, g_params, z, labels, rng, mixing):
  """ws [B, num_ws, w_dim] with style-mixing regularisation; returns (ws, w of the main z for w_avg)."""
  gen = networks.Generator(model)
  w = gen.apply({"params": g_params}, z, labels, method="mapping")
  ws = networks.broadcast_ws(w, model.num_ws)
  if mixing and model.style_mixing_prob > 0:
    rng_cut, rng_p, rng_z = jax.random.split(rng, 3)
    # One cutoff for the whole batch: uniform in [1, num_ws), or num_ws (no mixing) with prob 1 - p.
    cutoff = jax.random.randint(rng_cut, (), 1, model.num_ws)
    cutoff = jnp.where(jax.random.uniform(rng_p) < model.style_mixing_prob, cutoff, model.num_ws)
    w2 = gen.apply({"params": g_params}, jax.random.normal(rng_z, z.shape), labels, method="mapping")
    ws = networks.mix_styles(ws, networks.broadcast_ws(w2, model.num_ws), cutoff)
  return ws, w


def _synthesis(model, g_params, ws, rng_noise):
  return networks.Generator(model).apply({"params": g_params}, ws, "random", method="synthesis",
                                         rngs={"noise": rng_noise})


def _discriminator(model, d_params, img, labels, rng_aug=None, augment_p=None):
  """D's logits [B]; with an `rng_aug`, D sees img augmented by model.diffaugment, or by ADA (model.augment) at
  probability `augment_p`."""
  if rng_aug is not None and model.diffaugment:
    img = augment.diff_augment(img, rng_aug, model.diffaugment)
  elif rng_aug is not None and model.augment != "noaug":
    img = augment.ada_augment(img, rng_aug, augment_p, model.augpipe)
  return networks.Discriminator(model).apply({"params": d_params}, img, labels)


def _augment_p(state):
  """The ADA probability of this step (None without ADA)."""
  return state["ada"]["p"] if "ada" in state else None


def _count_signs(state, sign_sum, count):
  """state with `sign_sum` (the sum of sign(D(real)) over `count` reals) added to the ADA statistics (unchanged
  without ADA)."""
  if "ada" not in state:
    return state
  ada = state["ada"]
  return dict(state, ada=dict(ada, signs=ada["signs"] + sign_sum, count=ada["count"] + count))


def ada_adjust(ada, step, batch_size, *, model):
  """The ADA heuristic after step `step` (0-based): when (step + 1) % ada_interval == 0, r_t = signs / count and
  p <- max(p + sign(r_t - ada_target) * batch_size * ada_interval / (ada_kimg * 1000), 0), statistics reset.
  Unchanged for augment='fixed'."""
  if model.augment != "ada":
    return ada
  due = (step + 1) % model.ada_interval == 0
  r_t = ada["signs"] / jnp.maximum(ada["count"], 1.0)
  adjust = jnp.sign(r_t - model.ada_target) * (batch_size * model.ada_interval) / (model.ada_kimg * 1000)
  zero = jnp.zeros((), jnp.float32)
  return {"p": jnp.where(due, jnp.maximum(ada["p"] + adjust, 0.0), ada["p"]),
          "signs": jnp.where(due, zero, ada["signs"]), "count": jnp.where(due, zero, ada["count"])}


def _accumulated(grads_fn, state, batch, rng, model, accum):
  """`steps.accumulate` of grads_fn(state, micro_batch, rng, model=model) over `accum` micro-batches."""
  return steps.accumulate(lambda micro, r: grads_fn(state, micro, r, model=model), batch, rng, accum)


def _g_main_grads(state, batch, rng, *, model):
  b = batch["image"].shape[0]
  rng_z, rng_c, rng_mix, rng_noise = jax.random.split(rng, 4)
  rng_aug = jax.random.fold_in(rng, 1)  # folded, not split: runs without DiffAugment draw the same z as before
  z = jax.random.normal(rng_z, (b, model.z_dim))
  labels = _gen_labels(batch, rng_c, model.num_classes, b)

  def loss_fn(g_params):
    ws, w = _run_mapping(model, g_params, z, labels, rng_mix, mixing=True)
    img = _synthesis(model, g_params, ws, rng_noise)
    logits = _discriminator(model, state["params"]["discriminator"], img, labels, rng_aug, _augment_p(state))
    return jnp.mean(jax.nn.softplus(-logits)), (w, logits)

  (loss, (w, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"]["generator"])
  return {"grads": grads, "w": jnp.mean(w, axis=0), "g_loss": loss, "fake_score": jnp.mean(logits)}


def g_main_step(state, batch, rng, *, model, tx, accum=1):
  """One G step on the non-saturating loss mean(softplus(-D(G(z)))). Updates G, its Adam state and w_avg.
  accum > 1: the gradients' mean over that many micro-batches (`steps.accumulate`), as in all four phases."""
  out = _accumulated(_g_main_grads, state, batch, rng, model, accum)
  new = dict(_update(state, "generator", tx, out["grads"]),
             w_avg=networks.update_w_avg(state["w_avg"], out["w"][None], model.w_avg_beta))
  return new, {"g_loss": out["g_loss"], "fake_score": out["fake_score"],
               "g_grads_finite": steps.all_finite(out["grads"])}


def _g_reg_grads(state, batch, rng, *, model):
  b = max(batch["image"].shape[0] // model.pl_batch_shrink, 1)
  rng_z, rng_c, rng_mix, rng_noise, rng_pl = jax.random.split(rng, 5)
  z = jax.random.normal(rng_z, (b, model.z_dim))
  labels = _gen_labels(batch, rng_c, model.num_classes, b)
  gain = model.pl_interval or 1

  def loss_fn(g_params):
    ws, w = _run_mapping(model, g_params, z, labels, rng_mix, mixing=True)
    lengths = path_length(lambda v: _synthesis(model, g_params, v, rng_noise), ws, rng_pl)  # [b]
    # As the official code, the updated running mean keeps its gradient inside the penalty.
    pl_mean = state["pl_mean"] + model.pl_decay * (jnp.mean(lengths) - state["pl_mean"])
    penalty = jnp.square(lengths - pl_mean)
    return jnp.mean(penalty * model.pl_weight) * gain, (w, pl_mean, jnp.mean(penalty))

  (_, (w, pl_mean, penalty)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"]["generator"])
  return {"grads": grads, "w": jnp.mean(w, axis=0), "pl_mean": jax.lax.stop_gradient(pl_mean), "penalty": penalty}


def g_reg_step(state, batch, rng, *, model, tx, accum=1):
  """Path-length regularisation step (StyleGAN2 Sec. 3.2) on B // pl_batch_shrink samples:
  a <- a + decay * (mean |J^T y| - a);  loss = mean(w_pl * (|J^T y| - a)^2) * pl_interval.

  With accum > 1 each micro-batch's penalty uses the running mean updated with its own lengths (the official code
  does the same per round), and the new running mean is their mean: a + decay * (mean over the batch - a), as for
  the whole batch (the official code chains the rounds' updates instead: a difference of order decay^2).
  """
  out = _accumulated(_g_reg_grads, state, batch, rng, model, accum)
  return dict(_update(state, "generator", tx, out["grads"]), pl_mean=out["pl_mean"],
              w_avg=networks.update_w_avg(state["w_avg"], out["w"][None], model.w_avg_beta),
              stats=dict(state["stats"], pl_penalty=out["penalty"]))


def _d_main_grads(state, batch, rng, *, model):
  real = networks.to_float(batch["image"])  # [B, R, R, C]
  b = real.shape[0]
  rng_z, rng_c, rng_mix, rng_noise = jax.random.split(rng, 4)
  rng_aug_fake, rng_aug_real = jax.random.fold_in(rng, 1), jax.random.fold_in(rng, 2)
  z = jax.random.normal(rng_z, (b, model.z_dim))
  gen_labels = _gen_labels(batch, rng_c, model.num_classes, b)
  real_labels = batch["label"].astype(jnp.int32) if model.num_classes > 0 else None
  g_params = state["params"]["generator"]
  ws, w = _run_mapping(model, g_params, z, gen_labels, rng_mix, mixing=True)
  fake = jax.lax.stop_gradient(_synthesis(model, g_params, ws, rng_noise))

  def loss_fn(d_params):
    fake_logits = _discriminator(model, d_params, fake, gen_labels, rng_aug_fake, _augment_p(state))
    real_logits = _discriminator(model, d_params, real, real_labels, rng_aug_real, _augment_p(state))
    loss = jnp.mean(jax.nn.softplus(fake_logits)) + jnp.mean(jax.nn.softplus(-real_logits))
    return loss, (fake_logits, real_logits)

  (loss, (fake_logits, real_logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state["params"]["discriminator"])
  return {"grads": grads, "w": jnp.mean(w, axis=0), "d_loss": loss, "real_score": jnp.mean(real_logits),
          "d_fake_score": jnp.mean(fake_logits), "real_sign": jnp.mean(jnp.sign(real_logits)),
          "sign_sum": jnp.sum(jnp.sign(real_logits))}


def d_main_step(state, batch, rng, *, model, tx, accum=1):
  """One D step on mean(softplus(D(G(z)))) + mean(softplus(-D(x))). Updates D, its Adam state and w_avg."""
  out = _accumulated(_d_main_grads, state, batch, rng, model, accum)
  grads = out.pop("grads")
  # The micro-batches' mean of their sign sums, times their number: the batch's sum (exact: small integers).
  state = _count_signs(state, out.pop("sign_sum") * accum, batch["image"].shape[0])
  new = dict(_update(state, "discriminator", tx, grads),
             w_avg=networks.update_w_avg(state["w_avg"], out.pop("w")[None], model.w_avg_beta))
  return new, out | {"d_grads_finite": steps.all_finite(grads)}


def _d_reg_grads(state, batch, rng, *, model):
  real = networks.to_float(batch["image"])
  labels = batch["label"].astype(jnp.int32) if model.num_classes > 0 else None
  gain = model.r1_interval or 1

  def loss_fn(d_params):
    d_fn = lambda x: _discriminator(model, d_params, x, labels, rng, _augment_p(state))
    penalty, logits = r1_penalty_and_logits(d_fn, real)  # [B], [B]
    return jnp.mean(penalty * (model.r1_gamma / 2)) * gain, (jnp.mean(penalty), logits)

  (_, (penalty, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"]["discriminator"])
  return {"grads": grads, "penalty": penalty, "sign_sum": jnp.sum(jnp.sign(jax.lax.stop_gradient(logits)))}


def d_reg_step(state, batch, rng, *, model, tx, accum=1):
  """Lazy R1 step: loss = mean(gamma / 2 * |grad_x D(x)|^2) * r1_interval on the real batch (with DiffAugment,
  the gradient of D(augment(x)) w.r.t. the un-augmented x, as DiffAugment and ADA do). With ADA, these D(real)
  count toward r_t too, as in the official code."""
  out = _accumulated(_d_reg_grads, state, batch, rng, model, accum)
  state = _count_signs(state, out["sign_sum"] * accum, batch["image"].shape[0])
  return dict(_update(state, "discriminator", tx, out["grads"]), stats=dict(state["stats"], r1_penalty=out["penalty"]))


def ema_beta(step, batch_size, ema_kimg, ema_rampup):
  """beta = 0.5 ** (B / max(ema_nimg, 1e-8)), ema_nimg = min(ema_kimg * 1000, cur_nimg * ema_rampup) with
  cur_nimg = step * B the images seen before this step (`training_loop.py`); beta = 0 at step 0."""
  ema_nimg = ema_kimg * 1000.0
  if ema_rampup is not None:
    ema_nimg = jnp.minimum(ema_nimg, step.astype(jnp.float32) * batch_size * ema_rampup)
  return 0.5 ** (batch_size / jnp.maximum(ema_nimg, 1e-8))


def ema_step(state, batch_size, *, model):
  """G_ema <- G + beta * (G_ema - G)."""
  beta = ema_beta(state["step"], batch_size, model.ema_kimg, model.ema_rampup)
  ema = jax.tree.map(lambda p, e: p + beta * (e - p), state["params"]["generator"], state["ema_params"])
  return dict(state, ema_params=ema), {"ema_beta": beta}


def train_step(state, batch, rng, *, model, tx, config):
  """`Family.train_step`: one amortised StyleGAN2 iteration, in the official phase order: G main, [G reg],
  D main, [D reg], EMA.

  batch: {"image": uint8 [B, H, W, C] (zero-padded here to R x R), "label": int32 [B]}; `rng` is folded with
  state["step"]. The regularisers run when state["step"] % interval == 0, chosen by `lax.cond`: under jit both
  branches are compiled into the one program, but XLA executes only the taken branch, so the amortised cost is
  what it should be and the trainer keeps one step function and one compilation (with one sharding spec) for
  resume and multi-device runs; the regularisers' double backward costs compile time only.

  config.grad_accum_steps = n > 1: every phase (the lazy regularisers too) averages its gradients over n
  micro-batches of B / n before its one optimiser step, as the official code's rounds of `batch_gpu` images; each
  micro-batch draws its own latents and noise, w_avg and the path-length mean move once per phase by the batch's
  mean, and minibatch-stddev groups stay the whole batch's (`steps.micro_batches` splits with a stride).

  An iteration whose losses, regulariser values or main gradients are not finite is skipped as a whole
  (`steps.keep_if_finite`: state kept, step advanced, counted). Metrics: "g_loss", "d_loss", the scores,
  "r1_penalty" / "pl_penalty" (latest regularisation step), "pl_mean", "ema_beta", "g_lr" / "d_lr" (the lazily
  corrected rates used), "skipped_updates", "consecutive_skips"; with ADA, "augment_p" (the p this step used).
  """
  batch = {"image": networks.pad_images(batch["image"], model.resolution), "label": batch["label"]}
  step = state["step"]
  rng = jax.random.fold_in(rng, step)
  rng_gm, rng_gr, rng_dm, rng_dr = jax.random.split(rng, 4)

  accum = config.get("grad_accum_steps", 1)
  new, metrics = g_main_step(state, batch, rng_gm, model=model, tx=tx, accum=accum)
  if model.pl_weight > 0:
    fn = lambda s: g_reg_step(s, batch, rng_gr, model=model, tx=tx, accum=accum)
    new = fn(new) if model.pl_interval is None else jax.lax.cond(step % model.pl_interval == 0, fn, lambda s: s, new)
  new, m = d_main_step(new, batch, rng_dm, model=model, tx=tx, accum=accum)
  metrics |= m
  if model.r1_gamma > 0:
    fn = lambda s: d_reg_step(s, batch, rng_dr, model=model, tx=tx, accum=accum)
    new = fn(new) if model.r1_interval is None else jax.lax.cond(step % model.r1_interval == 0, fn, lambda s: s, new)
  new, m = ema_step(new, batch["image"].shape[0], model=model)
  metrics |= m | new["stats"] | {"pl_mean": new["pl_mean"]}
  if "ada" in new:
    new = dict(new, ada=ada_adjust(new["ada"], step, batch["image"].shape[0], model=model))
    metrics |= {"augment_p": state["ada"]["p"]}  # the p this step used

  finite = metrics.pop("g_grads_finite") & metrics.pop("d_grads_finite")
  for key in ("g_loss", "d_loss", "r1_penalty", "pl_penalty"):
    finite &= jnp.isfinite(metrics[key])
  new = steps.keep_if_finite(new, state, finite)
  rates = adam_settings(model, config.get("optimizer", None))
  return new, metrics | {"g_lr": rates["generator"][0], "d_lr": rates["discriminator"][0],
                         "skipped_updates": new["skipped_updates"], "consecutive_skips": new["consecutive_skips"]}
