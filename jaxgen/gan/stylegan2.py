"""StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN") with the training
recipe of NVlabs/stylegan2-ada-pytorch (`training/networks.py`, `training/loss.py`, `training/training_loop.py`).

Networks: mapping network z -> w (Sec. 2 of StyleGAN, lr multiplier 0.01), skip-architecture synthesis network
with modulated/demodulated convolutions and noise inputs (StyleGAN2 Sec. 2.2, 4.1), residual (or 'orig')
discriminator with minibatch standard deviation; class conditioning through a label embedding in G and a
projection discriminator in D (Miyato & Koyama 2018), as the official code.

Training (pure functions, two optax optimisers):
  G main:  L_G = softplus(-D(G(z)))                                  (non-saturating logistic loss)
  G reg:   L_pl = w_pl * (|J_w^T y| - a)^2, every `pl_interval` steps (Sec. 3.2, path-length regularisation)
  D main:  L_D = softplus(D(G(z))) + softplus(-D(x))
  D reg:   L_R1 = gamma / 2 * |grad_x D(x)|^2, every `r1_interval` steps (lazy R1, Sec. 3.1)
  EMA of G with half-life `ema_kimg` thousand images and ramp-up.
Lazy regularisation runs the regulariser as its own optimiser step, multiplied by its interval, and corrects
Adam: with c = interval / (interval + 1), lr <- lr * c and beta <- beta ** c (Sec. 3.1; `training_loop.py`).

The shared trainer (config.model_name = "gan.stylegan2") uses `Model` (the hyperparameters in config.model),
`init_state`, `train_step`, `sample_images` and `evaluate` (FID / KID / precision-recall) from the last section.
"""
import dataclasses
import functools
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen.gan import augment
from jaxgen.gan import layers
from jaxgen.metrics import sample_quality
from jaxgen.training import family
from jaxgen.training import figures as figures_lib


# ----------------------------------------------------------------------------------------------------------------
# Hyperparameters and presets.


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a StyleGAN2 run apart from data and batch size (defaults: official `stylegan2`)."""
  resolution: int = 32
  img_channels: int = 3
  num_classes: int = 0  # 0: unconditional
  z_dim: int = 512
  w_dim: int = 512
  mapping_layers: int = 8
  mapping_lr_multiplier: float = 0.01
  w_avg_beta: float = 0.995
  channel_base: int = 32768  # channels at resolution r: min(channel_base // r, channel_max)
  channel_max: int = 512
  conv_clamp: Optional[float] = None  # the official fp16 configs use 256; fp32 uses None
  fused_modconv: bool = False  # grouped-conv form; False scales activations instead (faster on CPU, same result)
  d_architecture: str = "resnet"  # 'resnet' or 'orig' (the official `cifar` config uses 'orig')
  mbstd_group_size: int = 4
  mbstd_num_channels: int = 1
  d_mapping_layers: int = 8  # label mapping of the projection discriminator (official default)
  cmap_dim: Optional[int] = None  # None: channels at 4x4
  # Losses.
  r1_gamma: float = 10.0
  r1_interval: Optional[int] = 16  # None: R1 in every D step, no lazy correction
  pl_weight: float = 2.0
  pl_interval: Optional[int] = 4
  pl_batch_shrink: int = 2
  pl_decay: float = 0.01
  style_mixing_prob: float = 0.9
  # DiffAugment policy for every image D sees ('' none; e.g. 'color,translation,cutout'; jaxgen.gan.augment).
  diffaugment: str = ""
  # Optimisers and EMA.
  g_lr: float = 0.002
  d_lr: float = 0.002
  betas: Sequence[float] = (0.0, 0.99)
  eps: float = 1e-8
  ema_kimg: float = 10.0
  ema_rampup: Optional[float] = None

  def __post_init__(self):
    r = self.resolution
    if r < 4 or r & (r - 1):
      raise ValueError(f"StyleGAN2 needs a power-of-two resolution >= 4, got {r}; pad or resize the images "
                       f"(e.g. MNIST 28x28 -> 32x32) and set resolution accordingly.")
    if self.d_architecture not in ("resnet", "orig"):
      raise ValueError(f"d_architecture must be 'resnet' or 'orig', got {self.d_architecture!r}.")
    if self.pl_batch_shrink < 1:
      raise ValueError("pl_batch_shrink must be >= 1.")
    augment.check_policy(self.diffaugment)

  @property
  def num_ws(self):
    """Number of per-layer w vectors: two convs per block from 8x8 up, one at 4x4, plus the last toRGB."""
    return 2 * int(math.log2(self.resolution)) - 2

  def channels(self, res):
    return min(self.channel_base // res, self.channel_max)


# The official `cifar` config (stylegan2-ada-pytorch train.py, cfg_specs['cifar'] and the `if cfg == 'cifar'`
# branch): map=2, mbstd=32, fmaps=1 (channel_base 32768 -> 512 channels at every resolution up to 32x32),
# lrate=0.0025, gamma=0.01, ema=500 kimg, ramp=0.05, no path-length regularisation, no style mixing,
# D architecture 'orig'. G about 19.9M and D about 20.7M parameters unconditional. (Batch 64 on 2 GPUs there.)
cifar = functools.partial(
    Config, resolution=32, img_channels=3, mapping_layers=2, mbstd_group_size=32, channel_base=32768,
    channel_max=512, d_architecture="orig", r1_gamma=0.01, pl_weight=0.0, style_mixing_prob=0.0,
    g_lr=0.0025, d_lr=0.0025, ema_kimg=500.0, ema_rampup=0.05)

# A small model for 32x32 digits in a CPU budget (not an official config): the `auto` recipe at reduced width.
small = functools.partial(
    Config, resolution=32, img_channels=1, z_dim=128, w_dim=128, mapping_layers=2, channel_base=2048,
    channel_max=128, mbstd_group_size=4, r1_gamma=0.1, g_lr=0.0025, d_lr=0.0025, ema_kimg=2.0, ema_rampup=0.05)

# Tiny config for tests: 8x8 images, a few channels; every feature on (PL, mixing, R1, resnet D).
tiny = functools.partial(
    Config, resolution=8, img_channels=3, z_dim=16, w_dim=16, mapping_layers=2, channel_base=64,
    channel_max=16, mbstd_group_size=2, d_mapping_layers=2, r1_gamma=1.0, ema_kimg=0.01, ema_rampup=0.05)


def make_config(model_cfg):
  """A `Config` from a Config, a dict (e.g. `config.model`), or a dict with `preset` naming one of the presets."""
  if isinstance(model_cfg, Config):
    return model_cfg
  kwargs = dict(model_cfg)
  preset = kwargs.pop("preset", None)
  presets = {"cifar": cifar, "small": small, "tiny": tiny, None: Config}
  if preset not in presets:
    raise ValueError(f"Unknown StyleGAN2 preset {preset!r}; use one of {sorted(p for p in presets if p)}.")
  if "betas" in kwargs:
    kwargs["betas"] = tuple(kwargs["betas"])
  return presets[preset](**kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Networks.


class MappingNetwork(nn.Module):
  """z -> w: normalise z (and the label embedding) to unit second moment, concatenate, then `num_layers`
  equalized-lr dense layers with leaky ReLU and lr multiplier 0.01 (StyleGAN Sec. 2; `MappingNetwork`).

  Returns w [B, w_dim] (broadcasting to the num_ws layers and truncation happen outside, see `mapping`).
  """
  z_dim: int
  w_dim: int
  num_classes: int = 0
  num_layers: int = 8
  lr_multiplier: float = 0.01
  embed_features: Optional[int] = None

  @nn.compact
  def __call__(self, z, labels=None):  # z: [B, z_dim] or None, labels: [B] int
    parts = []
    if self.z_dim > 0:
      parts.append(layers.normalize_2nd_moment(z.astype(jnp.float32)))
    if self.num_classes > 0:
      if labels is None:
        raise ValueError("This model is class-conditional (num_classes > 0): pass integer labels.")
      c = jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)  # [B, num_classes]
      y = layers.EqualDense(self.embed_features or self.w_dim, name="embed")(c)
      parts.append(layers.normalize_2nd_moment(y))
    x = jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
    for i in range(self.num_layers):
      x = layers.EqualDense(self.w_dim, activation="lrelu", lr_multiplier=self.lr_multiplier, name=f"fc{i}")(x)
    return x  # [B, w_dim]


class SynthesisBlock(nn.Module):
  """One resolution of the skip generator: [const] or up-conv, conv, toRGB added to the upsampled image."""
  features: int
  resolution: int
  img_channels: int
  is_first: bool
  resample_filter: Sequence[int] = layers.DEFAULT_FILTER
  conv_clamp: Optional[float] = None
  fused_modconv: bool = False

  @nn.compact
  def __call__(self, x, img, ws, noise_mode="random"):  # ws: [B, num_conv + 1, w_dim]
    kw = dict(resolution=self.resolution, resample_filter=self.resample_filter, conv_clamp=self.conv_clamp,
              fused_modconv=self.fused_modconv)
    seed = 2 * self.resolution  # distinct fixed noise per layer for noise_mode='const'
    if self.is_first:
      const = self.param("const", nn.initializers.normal(1.0), (4, 4, self.features))
      x = jnp.broadcast_to(const, (ws.shape[0],) + const.shape)  # [B, 4, 4, C]
      x = layers.SynthesisLayer(self.features, noise_seed=seed, name="conv1", **kw)(x, ws[:, 0], noise_mode)
      i = 1
    else:
      x = layers.SynthesisLayer(self.features, up=2, noise_seed=seed, name="conv0", **kw)(x, ws[:, 0], noise_mode)
      x = layers.SynthesisLayer(self.features, noise_seed=seed + 1, name="conv1", **kw)(x, ws[:, 1], noise_mode)
      i = 2
    if img is not None:
      img = layers.upsample2d(img, layers.setup_filter(self.resample_filter))
    y = layers.ToRGB(self.img_channels, conv_clamp=self.conv_clamp, fused_modconv=self.fused_modconv,
                     name="torgb")(x, ws[:, i])
    img = y if img is None else img + y
    return x, img  # [B, R, R, C], [B, R, R, img_channels]


class SynthesisNetwork(nn.Module):
  """ws [B, num_ws, w_dim] -> image [B, R, R, img_channels] in about [-1, 1] (skip architecture, Fig. 7)."""
  cfg: Config

  @nn.compact
  def __call__(self, ws, noise_mode="random"):
    cfg = self.cfg
    if ws.shape[1] != cfg.num_ws:
      raise ValueError(f"ws has {ws.shape[1]} layers, the synthesis network needs {cfg.num_ws}.")
    x = img = None
    w_idx = 0
    for res in [2 ** i for i in range(2, int(math.log2(cfg.resolution)) + 1)]:
      num_conv = 1 if res == 4 else 2
      block = SynthesisBlock(cfg.channels(res), res, cfg.img_channels, is_first=res == 4, conv_clamp=cfg.conv_clamp,
                             fused_modconv=cfg.fused_modconv, name=f"b{res}")
      # Each block reads num_conv + 1 consecutive ws: its toRGB shares its w with the next block's first conv.
      x, img = block(x, img, ws[:, w_idx: w_idx + num_conv + 1], noise_mode)
      w_idx += num_conv
    return img


class Generator(nn.Module):
  """Mapping + synthesis. Methods: `mapping(z, labels) -> w [B, w_dim]`, `synthesis(ws, noise_mode)`, and
  `__call__(z, labels, noise_mode)` (no truncation, used for init). Noise uses the "noise" rng stream."""
  cfg: Config

  def setup(self):
    cfg = self.cfg
    self.mapping_net = MappingNetwork(cfg.z_dim, cfg.w_dim, cfg.num_classes, cfg.mapping_layers,
                                      cfg.mapping_lr_multiplier)
    self.synthesis_net = SynthesisNetwork(cfg)

  def mapping(self, z, labels=None):
    return self.mapping_net(z, labels)  # [B, w_dim]

  def synthesis(self, ws, noise_mode="random"):
    return self.synthesis_net(ws, noise_mode)  # [B, R, R, C]

  def __call__(self, z, labels=None, noise_mode="random"):
    w = self.mapping(z, labels)
    return self.synthesis(broadcast_ws(w, self.cfg.num_ws), noise_mode)


class DiscriminatorBlock(nn.Module):
  """[fromRGB] -> conv 3x3 -> conv 3x3 down 2, with a 1x1 down residual scaled by sqrt(1/2) for 'resnet'."""
  tmp_channels: int
  out_channels: int
  is_first: bool
  architecture: str = "resnet"
  resample_filter: Sequence[int] = layers.DEFAULT_FILTER
  conv_clamp: Optional[float] = None

  @nn.compact
  def __call__(self, x, img):
    if self.is_first:
      x = layers.EqualConv(self.tmp_channels, 1, activation="lrelu", conv_clamp=self.conv_clamp, name="fromrgb")(img)
    conv = functools.partial(layers.EqualConv, activation="lrelu", conv_clamp=self.conv_clamp)
    if self.architecture == "resnet":
      y = layers.EqualConv(self.out_channels, 1, use_bias=False, down=2, resample_filter=self.resample_filter,
                           name="skip")(x, gain=math.sqrt(0.5))
      x = conv(self.tmp_channels, 3, name="conv0")(x)
      x = conv(self.out_channels, 3, down=2, resample_filter=self.resample_filter, name="conv1")(x,
                                                                                                 gain=math.sqrt(0.5))
      return y + x
    x = conv(self.tmp_channels, 3, name="conv0")(x)
    return conv(self.out_channels, 3, down=2, resample_filter=self.resample_filter, name="conv1")(x)


class Discriminator(nn.Module):
  """image [B, R, R, C] in [-1, 1] (and labels) -> logits [B].

  Conditioning by projection, as the official code: a mapping network (z_dim=0) maps the one-hot label to
  cmap [B, cmap_dim] and the logit is <out(x), cmap> / sqrt(cmap_dim).
  """
  cfg: Config

  @nn.compact
  def __call__(self, img, labels=None):
    cfg = self.cfg
    x = None
    for res in [2 ** i for i in range(int(math.log2(cfg.resolution)), 2, -1)]:
      x = DiscriminatorBlock(cfg.channels(res), cfg.channels(res // 2), is_first=res == cfg.resolution,
                             architecture=cfg.d_architecture, conv_clamp=cfg.conv_clamp, name=f"b{res}")(x, img)
    if x is None:  # resolution 4: the epilogue reads the image through a fromRGB
      x = layers.EqualConv(cfg.channels(4), 1, activation="lrelu", conv_clamp=cfg.conv_clamp, name="fromrgb")(img)
    # Epilogue at 4x4.
    c4 = cfg.channels(4)
    cmap_dim = (cfg.cmap_dim or c4) if cfg.num_classes > 0 else 0
    if cfg.mbstd_num_channels > 0:
      x = layers.minibatch_stddev(x, cfg.mbstd_group_size, cfg.mbstd_num_channels)
    x = layers.EqualConv(c4, 3, activation="lrelu", conv_clamp=cfg.conv_clamp, name="b4_conv")(x)
    x = layers.EqualDense(c4, activation="lrelu", name="b4_fc")(x.reshape(x.shape[0], -1))
    x = layers.EqualDense(1 if cmap_dim == 0 else cmap_dim, name="b4_out")(x)  # [B, 1 or cmap_dim]
    if cmap_dim > 0:
      cmap = MappingNetwork(0, cmap_dim, cfg.num_classes, cfg.d_mapping_layers, cfg.mapping_lr_multiplier,
                            name="mapping")(None, labels)  # [B, cmap_dim]
      return jnp.sum(x * cmap, axis=-1) / math.sqrt(cmap_dim)  # [B]
    return x[:, 0]  # [B]


# ----------------------------------------------------------------------------------------------------------------
# Latent manipulation: broadcasting, truncation, style mixing.


def broadcast_ws(w, num_ws):
  """[B, w_dim] -> [B, num_ws, w_dim]."""
  return jnp.broadcast_to(w[:, None, :], (w.shape[0], num_ws, w.shape[-1]))


def truncate(ws, w_avg, psi=1.0, cutoff=None):
  """Truncation trick (StyleGAN Sec. 3.2): w' = w_avg + psi * (w - w_avg), on the first `cutoff` layers (all if
  None). ws [B, num_ws, w_dim]."""
  if psi == 1.0:
    return ws
  truncated = w_avg + psi * (ws - w_avg)
  if cutoff is None:
    return truncated
  layer = jnp.arange(ws.shape[1])[None, :, None]
  return jnp.where(layer < cutoff, truncated, ws)


def mix_styles(ws_a, ws_b, cutoff):
  """Style mixing: layers >= cutoff take their w from ws_b (cutoff may be traced). Both [B, num_ws, w_dim]."""
  layer = jnp.arange(ws_a.shape[1])[None, :, None]
  return jnp.where(layer < cutoff, ws_a, ws_b)


def update_w_avg(w_avg, w, beta):
  """w_avg <- lerp(mean_b w, w_avg, beta) = mean + beta * (w_avg - mean)  (tracked during training)."""
  mean = jnp.mean(jax.lax.stop_gradient(w), axis=0)
  return mean + beta * (w_avg - mean)


def generate(g_params, w_avg, z, labels=None, *, cfg, truncation_psi=1.0, truncation_cutoff=None,
             noise_mode="const", rng_noise=None):
  """Images [B, R, R, C] in about [-1, 1] from z [B, z_dim], with truncation toward `w_avg`."""
  cfg = make_config(cfg)
  gen = Generator(cfg)
  w = gen.apply({"params": g_params}, z, labels, method="mapping")
  ws = truncate(broadcast_ws(w, cfg.num_ws), w_avg, truncation_psi, truncation_cutoff)
  rngs = {"noise": rng_noise} if rng_noise is not None else {}
  return gen.apply({"params": g_params}, ws, noise_mode, method="synthesis", rngs=rngs)


def style_mixing_grid(g_params, w_avg, z_rows, z_cols, *, cfg, col_layers, truncation_psi=1.0,
                      noise_mode="const", labels_rows=None, labels_cols=None):
  """Style mixing at inference (StyleGAN Fig. 3): image [i, j] takes the layers in `col_layers` from column j's w
  and the rest from row i's w (e.g. col_layers=range(0, 4): coarse styles from the columns). Returns
  [len(z_rows), len(z_cols), R, R, C] in about [-1, 1]."""
  cfg = make_config(cfg)
  gen = Generator(cfg)
  def ws_of(z, labels):
    w = gen.apply({"params": g_params}, z, labels, method="mapping")
    return truncate(broadcast_ws(w, cfg.num_ws), w_avg, truncation_psi)
  wr, wc = ws_of(z_rows, labels_rows), ws_of(z_cols, labels_cols)  # [R, L, D], [C, L, D]
  take_col = np.zeros(cfg.num_ws, bool)
  take_col[list(col_layers)] = True
  ws = jnp.where(take_col[None, None, :, None], wc[None, :], wr[:, None])  # [R, C, L, D]
  nr, nc = ws.shape[:2]
  img = gen.apply({"params": g_params}, ws.reshape((nr * nc,) + ws.shape[2:]), noise_mode, method="synthesis")
  return img.reshape((nr, nc) + img.shape[1:])


def to_uint8(img):
  """[-1, 1] float images -> uint8 [0, 255] (the official `(img * 127.5 + 128).clamp(0, 255)`)."""
  return jnp.clip(img * 127.5 + 128.0, 0, 255).astype(jnp.uint8)


def to_float(images):
  """uint8 [0, 255] -> float32 [-1, 1] (the official `img / 127.5 - 1`)."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def sample(state, rng, num, labels=None, *, cfg, truncation_psi=1.0, noise_mode="const"):
  """uint8 samples [num, R, R, C] from the EMA generator."""
  cfg = make_config(cfg)
  rng_z, rng_noise, rng_c = jax.random.split(rng, 3)
  z = jax.random.normal(rng_z, (num, cfg.z_dim))
  if cfg.num_classes > 0 and labels is None:
    labels = jax.random.randint(rng_c, (num,), 0, cfg.num_classes)
  img = generate(state["g_ema_params"], state["w_avg"], z, labels, cfg=cfg, truncation_psi=truncation_psi,
                 noise_mode=noise_mode, rng_noise=rng_noise)
  return to_uint8(img)


# ----------------------------------------------------------------------------------------------------------------
# Losses.


def r1_penalty(d_fn, real):
  """R1 (Mescheder et al. 2018): |grad_x sum_b D(x)_b|^2 per example, [B]. `d_fn` maps images to logits [B].

  The gradient of the summed logits, as the official code (minibatch-stddev couples the examples, so this is not
  the per-example gradient of D(x_b) alone).
  """
  grads = jax.grad(lambda x: jnp.sum(d_fn(x)))(real)  # [B, H, W, C]
  return jnp.sum(jnp.square(grads), axis=(1, 2, 3))


def path_length(synth_fn, ws, rng):
  """Path lengths |J_w^T y|, y ~ N(0, I) / sqrt(H W) (StyleGAN2 Sec. 3.2), [B]. `synth_fn` maps ws to images.

  The gradient of sum(img * y) w.r.t. ws [B, L, D] is squared, summed over D, averaged over the L layers.
  """
  img_shape = jax.eval_shape(synth_fn, ws).shape
  noise = jax.random.normal(rng, img_shape) / math.sqrt(img_shape[1] * img_shape[2])
  grads = jax.grad(lambda v: jnp.sum(synth_fn(v) * noise))(ws)  # [B, L, D]
  return jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=2), axis=1))


def lazy_regularization(lr, betas, interval):
  """Adam hyperparameters corrected for lazy regularisation (StyleGAN2 Sec. 3.1, `training_loop.py`):
  c = interval / (interval + 1); lr * c and beta ** c, so that the interval + 1 optimiser steps per `interval`
  minibatches move as far, with the same moment time constants, as `interval` plain steps."""
  if interval is None:
    return lr, tuple(betas)
  c = interval / (interval + 1)
  return lr * c, tuple(b ** c for b in betas)


def make_optimizers(cfg):
  """(g_tx, d_tx): Adam with betas (0, 0.99), eps 1e-8 and the lazy-regularisation correction.

  As in the official code the correction depends only on the interval, not on whether the regulariser's weight is
  zero (the `cifar` config has pl_weight=0 and still trains G with lr * 4/5).
  """
  cfg = make_config(cfg)
  out = []
  for lr, interval in ((cfg.g_lr, cfg.pl_interval), (cfg.d_lr, cfg.r1_interval)):
    lr, (b1, b2) = lazy_regularization(lr, cfg.betas, interval)
    out.append(optax.adam(lr, b1=b1, b2=b2, eps=cfg.eps))
  return tuple(out)


# ----------------------------------------------------------------------------------------------------------------
# State and step functions.


def init_gan_state(rng, model_cfg, batch_shape):
  """The full training state, a dict pytree.

  Args:
    rng: PRNG key.
    model_cfg: a `Config` or dict for `make_config`.
    batch_shape: the image batch shape [B, R, R, C] (B must be a multiple of the mbstd group size or smaller).
  Returns:
    {"step": int32, "g_params", "d_params", "g_ema_params", "w_avg" [w_dim], "pl_mean" scalar,
     "g_opt", "d_opt", "stats": {"r1_penalty", "pl_penalty"} (latest regulariser values)}.
  """
  cfg = make_config(model_cfg)
  b, h, w, c = batch_shape
  if (h, w, c) != (cfg.resolution, cfg.resolution, cfg.img_channels):
    raise ValueError(f"Images of shape {(h, w, c)} do not match the model ({cfg.resolution}, {cfg.resolution}, "
                     f"{cfg.img_channels}); set model.resolution / model.img_channels or resize the data.")
  rng_g, rng_d, rng_noise = jax.random.split(rng, 3)
  z = jnp.zeros((b, cfg.z_dim))
  labels = jnp.zeros((b,), jnp.int32) if cfg.num_classes > 0 else None
  # jit: an eager init dispatches every small op separately and is several times slower than compiling it.
  g_params = jax.jit(Generator(cfg).init)({"params": rng_g, "noise": rng_noise}, z, labels)["params"]
  d_params = jax.jit(Discriminator(cfg).init)(rng_d, jnp.zeros(batch_shape), labels)["params"]
  g_tx, d_tx = make_optimizers(cfg)
  return {
      "step": jnp.zeros((), jnp.int32),
      "g_params": g_params,
      "d_params": d_params,
      "g_ema_params": jax.tree.map(jnp.copy, g_params),
      "w_avg": jnp.zeros((cfg.w_dim,), jnp.float32),
      "pl_mean": jnp.zeros((), jnp.float32),
      "g_opt": g_tx.init(g_params),
      "d_opt": d_tx.init(d_params),
      "stats": {"r1_penalty": jnp.zeros(()), "pl_penalty": jnp.zeros(())},
  }


def _sanitize(grads):
  """nan -> 0, +-inf -> +-1e5, as the official `misc.nan_to_num` on every gradient before the optimiser step."""
  return jax.tree.map(lambda g: jnp.nan_to_num(g, nan=0.0, posinf=1e5, neginf=-1e5), grads)


def _gen_labels(batch, rng, num_classes, num):
  """Labels for generated images: the batch's labels in a random order (a draw from the data's label
  distribution, as the official code draws gen_c from the training set)."""
  if num_classes == 0:
    return None
  return jax.random.permutation(rng, batch["label"])[:num].astype(jnp.int32)


def _run_mapping(cfg, g_params, z, labels, rng, mixing):
  """ws [B, num_ws, w_dim] with style-mixing regularisation; returns (ws, w of the main z for w_avg)."""
  gen = Generator(cfg)
  w = gen.apply({"params": g_params}, z, labels, method="mapping")
  ws = broadcast_ws(w, cfg.num_ws)
  if mixing and cfg.style_mixing_prob > 0:
    rng_cut, rng_p, rng_z = jax.random.split(rng, 3)
    # One cutoff for the whole batch: uniform in [1, num_ws), or num_ws (no mixing) with prob 1 - p.
    cutoff = jax.random.randint(rng_cut, (), 1, cfg.num_ws)
    cutoff = jnp.where(jax.random.uniform(rng_p) < cfg.style_mixing_prob, cutoff, cfg.num_ws)
    w2 = gen.apply({"params": g_params}, jax.random.normal(rng_z, z.shape), labels, method="mapping")
    ws = mix_styles(ws, broadcast_ws(w2, cfg.num_ws), cutoff)
  return ws, w


def _synthesis(cfg, g_params, ws, rng_noise):
  return Generator(cfg).apply({"params": g_params}, ws, "random", method="synthesis", rngs={"noise": rng_noise})


def _discriminator(cfg, d_params, img, labels, rng_aug=None):
  """D's logits [B]; with cfg.diffaugment and an `rng_aug`, D sees the DiffAugment of img."""
  if cfg.diffaugment and rng_aug is not None:
    img = augment.diff_augment(img, rng_aug, cfg.diffaugment)
  return Discriminator(cfg).apply({"params": d_params}, img, labels)


def g_main_step(state, batch, rng, *, cfg, g_tx):
  """One G step on the non-saturating loss mean(softplus(-D(G(z)))). Updates G, its Adam state and w_avg."""
  cfg = make_config(cfg)
  b = batch["image"].shape[0]
  rng_z, rng_c, rng_mix, rng_noise = jax.random.split(rng, 4)
  rng_aug = jax.random.fold_in(rng, 1)  # folded, not split: runs without DiffAugment draw the same z as before
  z = jax.random.normal(rng_z, (b, cfg.z_dim))
  labels = _gen_labels(batch, rng_c, cfg.num_classes, b)

  def loss_fn(g_params):
    ws, w = _run_mapping(cfg, g_params, z, labels, rng_mix, mixing=True)
    img = _synthesis(cfg, g_params, ws, rng_noise)
    logits = _discriminator(cfg, state["d_params"], img, labels, rng_aug)
    return jnp.mean(jax.nn.softplus(-logits)), (w, logits)

  (loss, (w, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["g_params"])
  finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
  updates, g_opt = g_tx.update(_sanitize(grads), state["g_opt"], state["g_params"])
  new = dict(state, g_params=optax.apply_updates(state["g_params"], updates), g_opt=g_opt,
             w_avg=update_w_avg(state["w_avg"], w, cfg.w_avg_beta))
  return new, {"g_loss": loss, "fake_score": jnp.mean(logits), "g_grads_finite": finite}


def g_reg_step(state, batch, rng, *, cfg, g_tx):
  """Path-length regularisation step (StyleGAN2 Sec. 3.2) on B // pl_batch_shrink samples:
  a <- a + decay * (mean |J^T y| - a);  loss = mean(w_pl * (|J^T y| - a)^2) * pl_interval."""
  cfg = make_config(cfg)
  b = max(batch["image"].shape[0] // cfg.pl_batch_shrink, 1)
  rng_z, rng_c, rng_mix, rng_noise, rng_pl = jax.random.split(rng, 5)
  z = jax.random.normal(rng_z, (b, cfg.z_dim))
  labels = _gen_labels(batch, rng_c, cfg.num_classes, b)
  gain = cfg.pl_interval or 1

  def loss_fn(g_params):
    ws, w = _run_mapping(cfg, g_params, z, labels, rng_mix, mixing=True)
    lengths = path_length(lambda v: _synthesis(cfg, g_params, v, rng_noise), ws, rng_pl)  # [b]
    # As the official code, the updated running mean keeps its gradient inside the penalty.
    pl_mean = state["pl_mean"] + cfg.pl_decay * (jnp.mean(lengths) - state["pl_mean"])
    penalty = jnp.square(lengths - pl_mean)
    return jnp.mean(penalty * cfg.pl_weight) * gain, (w, pl_mean, jnp.mean(penalty))

  (loss, (w, pl_mean, penalty)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["g_params"])
  updates, g_opt = g_tx.update(_sanitize(grads), state["g_opt"], state["g_params"])
  stats = dict(state["stats"], pl_penalty=penalty)
  new = dict(state, g_params=optax.apply_updates(state["g_params"], updates), g_opt=g_opt,
             pl_mean=jax.lax.stop_gradient(pl_mean), w_avg=update_w_avg(state["w_avg"], w, cfg.w_avg_beta),
             stats=stats)
  return new, {}


def d_main_step(state, batch, rng, *, cfg, d_tx):
  """One D step on mean(softplus(D(G(z)))) + mean(softplus(-D(x))). Updates D, its Adam state and w_avg."""
  cfg = make_config(cfg)
  real = to_float(batch["image"])
  b = real.shape[0]
  rng_z, rng_c, rng_mix, rng_noise = jax.random.split(rng, 4)
  rng_aug_fake, rng_aug_real = jax.random.fold_in(rng, 1), jax.random.fold_in(rng, 2)
  z = jax.random.normal(rng_z, (b, cfg.z_dim))
  gen_labels = _gen_labels(batch, rng_c, cfg.num_classes, b)
  real_labels = batch["label"].astype(jnp.int32) if cfg.num_classes > 0 else None
  ws, w = _run_mapping(cfg, state["g_params"], z, gen_labels, rng_mix, mixing=True)
  fake = jax.lax.stop_gradient(_synthesis(cfg, state["g_params"], ws, rng_noise))

  def loss_fn(d_params):
    fake_logits = _discriminator(cfg, d_params, fake, gen_labels, rng_aug_fake)
    real_logits = _discriminator(cfg, d_params, real, real_labels, rng_aug_real)
    loss = jnp.mean(jax.nn.softplus(fake_logits)) + jnp.mean(jax.nn.softplus(-real_logits))
    return loss, (fake_logits, real_logits)

  (loss, (fake_logits, real_logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["d_params"])
  finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
  updates, d_opt = d_tx.update(_sanitize(grads), state["d_opt"], state["d_params"])
  new = dict(state, d_params=optax.apply_updates(state["d_params"], updates), d_opt=d_opt,
             w_avg=update_w_avg(state["w_avg"], w, cfg.w_avg_beta))
  return new, {"d_loss": loss, "real_score": jnp.mean(real_logits), "d_fake_score": jnp.mean(fake_logits),
               "real_sign": jnp.mean(jnp.sign(real_logits)), "d_grads_finite": finite}


def d_reg_step(state, batch, rng, *, cfg, d_tx):
  """Lazy R1 step: loss = mean(gamma / 2 * |grad_x D(x)|^2) * r1_interval on the real batch (with DiffAugment,
  the gradient of D(augment(x)) w.r.t. the un-augmented x, as DiffAugment and ADA do)."""
  cfg = make_config(cfg)
  real = to_float(batch["image"])
  labels = batch["label"].astype(jnp.int32) if cfg.num_classes > 0 else None
  gain = cfg.r1_interval or 1

  def loss_fn(d_params):
    penalty = r1_penalty(lambda x: _discriminator(cfg, d_params, x, labels, rng), real)  # [B]
    return jnp.mean(penalty * (cfg.r1_gamma / 2)) * gain, jnp.mean(penalty)

  (_, penalty), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["d_params"])
  updates, d_opt = d_tx.update(_sanitize(grads), state["d_opt"], state["d_params"])
  stats = dict(state["stats"], r1_penalty=penalty)
  return dict(state, d_params=optax.apply_updates(state["d_params"], updates), d_opt=d_opt, stats=stats), {}


def ema_beta(step, batch_size, ema_kimg, ema_rampup):
  """beta = 0.5 ** (B / max(ema_nimg, 1e-8)), ema_nimg = min(ema_kimg * 1000, cur_nimg * ema_rampup) with
  cur_nimg = step * B the images seen before this step (`training_loop.py`); beta = 0 at step 0."""
  ema_nimg = ema_kimg * 1000.0
  if ema_rampup is not None:
    ema_nimg = jnp.minimum(ema_nimg, step.astype(jnp.float32) * batch_size * ema_rampup)
  return 0.5 ** (batch_size / jnp.maximum(ema_nimg, 1e-8))


def ema_step(state, batch_size, *, cfg):
  """G_ema <- G + beta * (G_ema - G)."""
  cfg = make_config(cfg)
  beta = ema_beta(state["step"], batch_size, cfg.ema_kimg, cfg.ema_rampup)
  ema = jax.tree.map(lambda p, e: p + beta * (e - p), state["g_params"], state["g_ema_params"])
  return dict(state, g_ema_params=ema), {"ema_beta": beta}


def gan_train_step(state, batch, rng, *, cfg, g_reg=None, d_reg=None):
  """One amortised StyleGAN2 iteration, in the official phase order: G main, [G reg], D main, [D reg], EMA.

  Args:
    state: from `init_gan_state`.
    batch: {"image": uint8 [B, R, R, C], "label": int [B] if conditional}.
    rng: a PRNG key; it is folded with state["step"], so the same key can be passed every step.
    cfg: a `Config` (or dict); static.
    g_reg, d_reg: None (default) decides with `lax.cond` on state["step"] % interval == 0 inside one compiled
      program; True / False decides statically, for a caller that compiles one program per phase pattern.
  Returns:
    (new_state, metrics): metrics are scalars ("g_loss", "d_loss", scores, "r1_penalty" / "pl_penalty" from the
    latest regularisation step, "ema_beta", gradient finiteness flags).

  Why lax.cond by default: under jit both branches are compiled into the one program, but XLA executes only the
  taken branch at run time, so the amortised cost is what it should be and the caller keeps a single step
  function and a single compilation (with one sharding spec) for resume and multi-device runs. The cost is
  compile time (the regularisers' double backward is compiled once, inside the same program). A caller that
  prefers separate executables passes static g_reg / d_reg and jits up to four variants.
  """
  cfg = make_config(cfg)
  g_tx, d_tx = make_optimizers(cfg)
  step = state["step"]
  rng = jax.random.fold_in(rng, step)
  rng_gm, rng_gr, rng_dm, rng_dr = jax.random.split(rng, 4)
  b = batch["image"].shape[0]

  state, metrics = g_main_step(state, batch, rng_gm, cfg=cfg, g_tx=g_tx)
  if cfg.pl_weight > 0:
    fn = lambda s: g_reg_step(s, batch, rng_gr, cfg=cfg, g_tx=g_tx)[0]
    if cfg.pl_interval is None or g_reg:
      state = fn(state)
    elif g_reg is None:
      state = jax.lax.cond(step % cfg.pl_interval == 0, fn, lambda s: s, state)
  state, m = d_main_step(state, batch, rng_dm, cfg=cfg, d_tx=d_tx)
  metrics |= m
  if cfg.r1_gamma > 0:
    fn = lambda s: d_reg_step(s, batch, rng_dr, cfg=cfg, d_tx=d_tx)[0]
    if cfg.r1_interval is None or d_reg:
      state = fn(state)
    elif d_reg is None:
      state = jax.lax.cond(step % cfg.r1_interval == 0, fn, lambda s: s, state)
  state, m = ema_step(state, b, cfg=cfg)
  metrics |= m | state["stats"] | {"pl_mean": state["pl_mean"]}
  state = dict(state, step=step + 1)
  return state, metrics


# ----------------------------------------------------------------------------------------------------------------
# Projection: find w for an image.


def project(g_params, w_avg, target, *, cfg, steps=200, lr=0.1, initial_noise_factor=0.05, noise_ramp_length=0.75,
            lr_rampdown_length=0.25, lr_rampup_length=0.05, feature_fn=None, rng=None, w_std=None):
  """Find w such that G(w) matches `target` (a simplified `projector.py` of stylegan2-ada-pytorch, Sec. 5 of
  StyleGAN2): Adam on a single w broadcast to all layers, starting from w_avg, with a learning rate ramped up then
  cosine-decayed and Gaussian noise on w that decays to zero over the first `noise_ramp_length` of the steps.
  The official code compares VGG16 (LPIPS) features and also optimises the noise maps; here the distance is
  the squared error of `feature_fn(images)` (identity: pixels; pass e.g. the offline classifier's features) and
  noise is fixed ('const').

  Args:
    target: one image, uint8 [R, R, C].
    w_std: the spread of w for the noise scale (the official code estimates it from 10k samples); None: 1.
  Returns:
    (w [w_dim], final distance).
  """
  cfg = make_config(cfg)
  gen = Generator(cfg)
  feature_fn = feature_fn or (lambda x: x)
  target_feats = feature_fn(to_float(target)[None])
  rng = jax.random.key(0) if rng is None else rng
  w_std = 1.0 if w_std is None else w_std
  tx = optax.adam(1.0, b1=0.9, b2=0.999)

  def distance(w):
    img = gen.apply({"params": g_params}, broadcast_ws(w[None], cfg.num_ws), "const", method="synthesis")
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


# ----------------------------------------------------------------------------------------------------------------
# The shared trainer's interface (config.model_name = "gan.stylegan2"): Model, init_state, train_step,
# sample_images, evaluate. The trainer's state is the state above re-keyed: "params" {"generator", "discriminator"}
# (the trainer counts parameters there), "ema_params" (G's EMA, what `steps.eval_params` picks), "opt"
# {"generator", "discriminator"}, plus the trainer's counters.


def _next_power_of_two(n):
  return 1 << max(int(n) - 1, 1).bit_length()


@dataclasses.dataclass(frozen=True)
class Model(Config):
  """StyleGAN2 as `config.model`: every `Config` field (optimiser settings included), plus the data's image_shape.

  image_shape (H, W, C): the networks run at resolution R = the next power of two >= max(H, W), with
  img_channels = C; smaller images are zero-padded (black borders: MNIST 28x28 -> 32x32) before D sees them and
  G's samples are cropped back to H x W. `resolution` and `img_channels` may be left out (derived from
  image_shape) or given (then they must agree).

  Optimisers: G and D each have Adam(g_lr / d_lr, betas, eps) with the lazy-regularisation correction, set
  here; `config.optimizer` must stay empty (the trainer's single optimiser does not apply to a GAN).
  """
  resolution: Optional[int] = None
  img_channels: Optional[int] = None
  image_shape: Sequence[int] = (32, 32, 3)

  def __post_init__(self):
    h, w, c = self.image_shape
    res = _next_power_of_two(max(h, w, 4))
    for name, derived in (("resolution", res), ("img_channels", c)):
      given = getattr(self, name)
      if given is None:
        object.__setattr__(self, name, derived)  # frozen dataclass: set once, here
      elif given != derived:
        raise ValueError(f"config.model.{name}={given} does not fit image_shape={tuple(self.image_shape)} "
                         f"(which needs {name}={derived}); drop config.model.{name} to derive it.")
    object.__setattr__(self, "image_shape", tuple(self.image_shape))
    object.__setattr__(self, "betas", tuple(self.betas))
    super().__post_init__()


def _pad(images, resolution):
  """uint8 [B, H, W, C] -> [B, R, R, C], zero-padded symmetrically (extra row/column at the end)."""
  _, h, w, _ = images.shape
  ph, pw = resolution - h, resolution - w
  if not ph and not pw:
    return images
  return jnp.pad(images, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))


def _crop(images, image_shape):
  """[B, R, R, C] -> the centre [B, H, W, C] (inverse of `_pad`)."""
  h, w = image_shape[:2]
  top, left = (images.shape[1] - h) // 2, (images.shape[2] - w) // 2
  return images[:, top: top + h, left: left + w]


def _to_gan_state(state):
  return {"step": state["step"], "g_params": state["params"]["generator"],
          "d_params": state["params"]["discriminator"], "g_ema_params": state["ema_params"], "w_avg": state["w_avg"],
          "pl_mean": state["pl_mean"], "g_opt": state["opt"]["generator"], "d_opt": state["opt"]["discriminator"],
          "stats": state["stats"]}


def _to_trainer_state(gan, skipped_updates, consecutive_skips):
  return {"step": gan["step"], "params": {"generator": gan["g_params"], "discriminator": gan["d_params"]},
          "ema_params": gan["g_ema_params"], "w_avg": gan["w_avg"], "pl_mean": gan["pl_mean"],
          "opt": {"generator": gan["g_opt"], "discriminator": gan["d_opt"]}, "stats": gan["stats"],
          "skipped_updates": skipped_updates, "consecutive_skips": consecutive_skips}


def _check_trainer_config(config):
  if dict(config.get("optimizer", None) or {}):
    raise ValueError(f"StyleGAN2 ignores config.optimizer ({dict(config.optimizer)}): its two Adam optimisers are set "
                     f"by config.model.g_lr, d_lr, betas and eps; remove config.optimizer.")
  if config.get("ema_decay", 0.0):
    raise ValueError("StyleGAN2 keeps its own generator EMA (config.model.ema_kimg, ema_rampup); set "
                     "config.ema_decay = 0.")
  if config.get("binarize", ""):
    raise ValueError("StyleGAN2 trains on 8-bit images; set config.binarize = ''.")
  sample_quality.settings(config)  # bad config.sample_metrics fail here, before training, not at the first eval


def init_state(rng, batch, *, model, tx, config):
  """The trainer's state for a StyleGAN2 `model` (a `Model`), from a data batch's shape. `tx` is unused."""
  del tx
  _check_trainer_config(config)
  b, h, w, c = batch["image"].shape
  if (h, w, c) != model.image_shape:
    raise ValueError(f"config.model.image_shape={model.image_shape} but the data has images of shape {(h, w, c)}; "
                     f"set --config.model.image_shape to match.")
  if b % min(model.mbstd_group_size, b):
    raise ValueError(f"config.batch_size={b} must be a multiple of config.model.mbstd_group_size="
                     f"{model.mbstd_group_size} (minibatch standard deviation groups); change one of them.")
  gan = init_gan_state(rng, model, (b, model.resolution, model.resolution, model.img_channels))
  zero = jnp.zeros((), jnp.int32)
  return _to_trainer_state(gan, zero, zero)


def train_step(state, batch, rng, *, model, tx, config):
  """One amortised StyleGAN2 iteration (`gan_train_step`: lazy R1 / path length chosen by lax.cond on the step).

  An iteration whose losses, gradients or regulariser values are not finite is skipped as a whole (state kept,
  step advanced, counted in skipped_updates / consecutive_skips), as the likelihood families' steps do.
  """
  del tx, config
  real = {"image": _pad(batch["image"], model.resolution), "label": batch["label"]}
  gan, metrics = gan_train_step(_to_gan_state(state), real, rng, cfg=model)
  finite = metrics["g_grads_finite"] & metrics["d_grads_finite"]
  for key in ("g_loss", "d_loss", "r1_penalty", "pl_penalty"):
    finite &= jnp.isfinite(metrics[key])
  old = _to_gan_state(state)
  gan = {k: v if k == "step" else jax.tree.map(lambda a, b: jnp.where(finite, a, b), v, old[k])
         for k, v in gan.items()}
  skipped = state["skipped_updates"] + (~finite).astype(jnp.int32)
  consecutive = jnp.where(finite, 0, state["consecutive_skips"] + 1)
  metrics = {k: v for k, v in metrics.items() if not k.endswith("_finite")}
  metrics |= dict(zip(("g_lr", "d_lr"), (lazy_regularization(lr, model.betas, interval)[0] for lr, interval in
                                         ((model.g_lr, model.pl_interval), (model.d_lr, model.r1_interval)))))
  return _to_trainer_state(gan, skipped, consecutive), metrics | {"skipped_updates": skipped,
                                                                   "consecutive_skips": consecutive}


def sample_images(state, rng, labels, *, model, config):
  """uint8 [num, H, W, C] from the EMA generator with random noise (as the official metrics), truncated by
  config.truncation_psi (default 1: none); `labels` [num] condition a class-conditional model."""
  psi = float(config.get("truncation_psi", 1.0))
  images = sample(_to_gan_state(state), rng, labels.shape[0], labels if model.num_classes else None, cfg=model,
                  truncation_psi=psi, noise_mode="random")
  return _crop(images, model.image_shape)


def evaluate(s, state, split, num_examples):
  """FID, KID and precision/recall of samples against `split` (jaxgen.metrics.sample_quality; settings in
  config.sample_metrics: the offline classifier by default, Inception-v3 with supplied weights)."""
  return sample_quality.evaluate(s, state, split, num_examples)


def truncation_sweep(state, rng, psis, num, *, model, labels=None):
  """{psi: uint8 [num, H, W, C]}: the same z (and noise) at each truncation psi, for sample grids."""
  gan = _to_gan_state(state)
  draw = jax.jit(lambda g, psi: _crop(to_uint8(generate(
      g["g_ema_params"], g["w_avg"], jax.random.normal(rng, (num, model.z_dim)), labels, cfg=model,
      truncation_psi=psi, noise_mode="const")), model.image_shape), static_argnums=1)
  return {psi: np.asarray(draw(gan, float(psi))) for psi in psis}


def mixing_grid(state, rng, rows, cols, col_layers, *, model, truncation_psi=1.0, labels=None):
  """uint8 [(rows + 1) * (cols + 1), H, W, C]: a style-mixing figure (StyleGAN Fig. 3). Top row: the column
  sources; left column: the row sources; cell (i, j): row i's image with the layers in `col_layers` taken from
  column j (a blank top-left cell)."""
  gan = _to_gan_state(state)
  rng_r, rng_c = jax.random.split(rng)
  zr, zc = jax.random.normal(rng_r, (rows, model.z_dim)), jax.random.normal(rng_c, (cols, model.z_dim))
  lr = None if labels is None else jnp.full((rows,), labels, jnp.int32)
  lc = None if labels is None else jnp.full((cols,), labels, jnp.int32)
  fn = functools.partial(style_mixing_grid, cfg=model, col_layers=tuple(col_layers), truncation_psi=truncation_psi,
                         labels_rows=lr, labels_cols=lc)
  grid = jax.jit(fn)(gan["g_ema_params"], gan["w_avg"], zr, zc)  # [rows, cols, R, R, C]
  gen = jax.jit(functools.partial(generate, cfg=model, truncation_psi=truncation_psi))
  sources_r = gen(gan["g_ema_params"], gan["w_avg"], zr, lr)
  sources_c = gen(gan["g_ema_params"], gan["w_avg"], zc, lc)
  res = model.resolution
  blank = jnp.full((1, res, res, model.img_channels), 1.0)
  top = jnp.concatenate([blank, sources_c])  # [cols + 1, R, R, C]
  body = jnp.concatenate([sources_r[:, None], grid], axis=1).reshape((-1, res, res, model.img_channels))
  return np.asarray(_crop(to_uint8(jnp.concatenate([top, body])), model.image_shape))


def figures(s, state, *, seed, psis, num, mix):
  """truncation.png (one row per psi, the same z in every row; psi 0 is the image of w_avg), truncation_PSI.png
  grids, and style_mixing_coarse.png / style_mixing_fine.png (StyleGAN Fig. 3: the top row and the left column
  are sources; cell (i, j) is row i's image with the coarse (first half) / fine (second half) layers' w taken
  from column j)."""
  model = s.model
  labels = figures_lib.labels_for(s, num * num) if model.num_classes else None
  sweep = truncation_sweep(state, jax.random.key(seed), psis, num * num, model=model, labels=labels)
  out = figures_lib.sweep_figures(sweep, num, "truncation")
  half = model.num_ws // 2
  for name, layers_ in (("coarse", range(0, half)), ("fine", range(half, model.num_ws))):
    grid = mixing_grid(state, jax.random.key(seed + 1), mix, mix, layers_, model=model,
                       labels=0 if model.num_classes else None)
    out[f"style_mixing_{name}.png"] = figures_lib.grid(grid, columns=mix + 1)
  return out


def _make_optimizer(config):
  """None: G's and D's Adam are built inside the step from config.model (g_lr, d_lr, betas, eps)."""
  _check_trainer_config(config)
  return None


FAMILY = family.Family(
    make_optimizer=_make_optimizer, init_state=init_state, train_step=train_step, eval_step=None,
    summarize=family.mean_summary, sample_images=sample_images, figures=figures,
    figure_options=dict(psis=(0.0, 0.25, 0.5, 0.75, 1.0), num=10, mix=5), evaluate=evaluate,
    progress_keys=("g_loss", "d_loss"))
