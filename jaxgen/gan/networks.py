"""StyleGAN2's hyperparameters (`Model`) and networks (Karras et al. 2020, "Analyzing and Improving the Image Quality
of StyleGAN"; NVlabs/stylegan2-ada-pytorch `training/networks.py`).

Mapping network z -> w (StyleGAN Sec. 2, lr multiplier 0.01), skip-architecture synthesis network with
modulated/demodulated convolutions and noise inputs (StyleGAN2 Sec. 2.2, 4.1), residual (or 'orig') discriminator
with minibatch standard deviation; class conditioning through a label embedding in G and a projection
discriminator in D (Miyato & Koyama 2018), as the official code. Then the latent manipulations: broadcasting w to
the layers, truncation, style mixing, and the image conversions.

`Model` lives here, under `training.py` and `stylegan2.py`, because all three read it: the networks their sizes,
the steps the losses and the EMA, the family the image shape. `jaxgen.gan.stylegan2` re-exports it as the family's
`Model`.
"""
import dataclasses
import functools
import math
from typing import Any
from typing import Optional
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import ops
from jaxgen.gan import augment
from jaxgen.gan import layers


def _next_power_of_two(n):
  return 1 << max(int(n) - 1, 1).bit_length()


@dataclasses.dataclass(frozen=True)
class Model:
  """Everything that defines a StyleGAN2 apart from data, batch size and optimiser, as `config.model`
  (defaults: the official `stylegan2` config; the optimisers are `config.optimizer`, see `training.make_optimizer`).

  image_shape (H, W, C): the networks run at resolution R = the next power of two >= max(H, W), with
  img_channels = C; smaller images are zero-padded (black borders: MNIST 28x28 -> 32x32) before D sees them and
  G's samples are cropped back to H x W. `resolution` and `img_channels` may be left out (derived from
  image_shape) or given (then they must agree).

  Channels at resolution r: min(channel_base // r, channel_max). The generator's EMA has a half-life of ema_kimg
  thousand images, ramped up as min(ema_kimg * 1000, images seen * ema_rampup) when ema_rampup is set.

  dtype (config.compute_dtype, not a config.model key): the synthesis network's and the discriminator's activations
  and convolutions; the mapping networks, styles, demodulation, minibatch-stddev statistics, the images G returns,
  D's logits, and so the losses, R1 and path-length norms, are float32.
  """
  image_shape: Sequence[int] = (32, 32, 3)
  resolution: Optional[int] = None  # derived from image_shape
  img_channels: Optional[int] = None  # derived from image_shape
  num_classes: int = 0  # 0: unconditional
  z_dim: int = 512
  w_dim: int = 512
  mapping_layers: int = 8
  mapping_lr_multiplier: float = 0.01
  w_avg_beta: float = 0.995
  channel_base: int = 32768
  channel_max: int = 512
  conv_clamp: Optional[float] = None  # the official fp16 configs use 256; fp32 uses None
  fused_modconv: bool = False  # grouped-conv form; False scales activations instead (faster on CPU, same result)
  conv_impl: str = "auto"  # convolution kernels: "auto" (per backend), "native" or "matmul" (jaxgen.ops)
  d_architecture: str = "resnet"  # 'resnet' or 'orig' (the official `cifar` config uses 'orig')
  mbstd_group_size: Optional[int] = 4  # None: the whole batch is one group (TF-era pickles, e.g. ffhq.pkl)
  mbstd_num_channels: int = 1
  d_mapping_layers: int = 8  # label mapping of the projection discriminator (official default)
  d_mapping_lr_multiplier: Optional[float] = None  # None: mapping_lr_multiplier (TF-converted pickles: 0.1)
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
  # Recompute each synthesis and discriminator block in the backward pass (jax.checkpoint) instead of storing its
  # activations: less memory at large resolutions, about one more forward pass of compute; same parameters.
  remat: bool = False
  # Adaptive discriminator augmentation (StyleGAN2-ADA; jaxgen.gan.augment.ada_augment) of every image D sees:
  # 'noaug', 'ada' (p starts at augment_p and moves toward E[sign(D(real))] = ada_target every ada_interval steps,
  # by batch * ada_interval / (ada_kimg * 1000) each time) or 'fixed' (p = augment_p throughout); pipeline augpipe.
  augment: str = "noaug"
  augpipe: str = "bgc"
  augment_p: float = 0.0
  ada_target: float = 0.6
  ada_interval: int = 4
  ada_kimg: float = 500.0
  # Generator EMA.
  ema_kimg: float = 10.0
  ema_rampup: Optional[float] = None
  dtype: Any = jnp.float32

  def __post_init__(self):
    r = self.resolution
    if r is not None and (r < 4 or r & (r - 1)):
      raise ValueError(f"StyleGAN2 needs a power-of-two resolution >= 4, got {r}; pad or resize the images "
                       f"(e.g. MNIST 28x28 -> 32x32) and set resolution accordingly.")
    h, w, c = self.image_shape
    for name, derived in (("resolution", _next_power_of_two(max(h, w, 4))), ("img_channels", c)):
      given = getattr(self, name)
      if given is None:
        object.__setattr__(self, name, derived)  # frozen dataclass: set once, here
      elif given != derived:
        raise ValueError(f"config.model.{name}={given} does not fit image_shape={tuple(self.image_shape)} "
                         f"(which needs {name}={derived}); drop config.model.{name} to derive it.")
    object.__setattr__(self, "image_shape", tuple(self.image_shape))
    if self.d_architecture not in ("resnet", "orig"):
      raise ValueError(f"d_architecture must be 'resnet' or 'orig', got {self.d_architecture!r}.")
    if self.pl_batch_shrink < 1:
      raise ValueError("pl_batch_shrink must be >= 1.")
    augment.check_policy(self.diffaugment)
    ops.check_impl(self.conv_impl)
    if self.augment not in ("noaug", "ada", "fixed"):
      raise ValueError(f"config.model.augment must be 'noaug', 'ada' or 'fixed', got {self.augment!r}.")
    if self.augment != "noaug":
      augment.check_augpipe(self.augpipe)
      if self.diffaugment:
        raise ValueError(f"config.model.augment={self.augment!r} and diffaugment={self.diffaugment!r} both augment "
                         f"D's inputs; set one of them off (augment='noaug' or diffaugment='').")
      if c not in (1, 3):
        raise ValueError(f"ADA augments 1- or 3-channel images, not {c}; set config.model.augment='noaug'.")
      if self.ada_interval < 1 or self.ada_kimg <= 0 or self.augment_p < 0:
        raise ValueError("config.model.ada_interval must be >= 1, ada_kimg > 0 and augment_p >= 0.")

  @property
  def num_ws(self):
    """Number of per-layer w vectors: two convs per block from 8x8 up, one at 4x4, plus the last toRGB."""
    return 2 * int(math.log2(self.resolution)) - 2

  def channels(self, res):
    return min(self.channel_base // res, self.channel_max)


# For tests only: 8x8 images, a few channels; every feature on (PL, mixing, R1, resnet D).
tiny = functools.partial(
    Model, image_shape=(8, 8, 3), z_dim=16, w_dim=16, mapping_layers=2, channel_base=64, channel_max=16,
    mbstd_group_size=2, d_mapping_layers=2, r1_gamma=1.0, ema_kimg=0.01, ema_rampup=0.05)


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
  conv_impl: str = "auto"
  dtype: Any = jnp.float32  # of the activations (the learned constant is cast to it)

  @nn.compact
  def __call__(self, x, img, ws, noise_mode="random"):  # ws: [B, num_conv + 1, w_dim]
    kw = dict(resolution=self.resolution, resample_filter=self.resample_filter, conv_clamp=self.conv_clamp,
              fused_modconv=self.fused_modconv, conv_impl=self.conv_impl)
    seed = 2 * self.resolution  # distinct fixed noise per layer for noise_mode='const'
    if self.is_first:
      const = self.param("const", nn.initializers.normal(1.0), (4, 4, self.features))
      x = jnp.broadcast_to(const.astype(self.dtype), (ws.shape[0],) + const.shape)  # [B, 4, 4, C]
      x = layers.SynthesisLayer(self.features, noise_seed=seed, name="conv1", **kw)(x, ws[:, 0], noise_mode)
      i = 1
    else:
      x = layers.SynthesisLayer(self.features, up=2, noise_seed=seed, name="conv0", **kw)(x, ws[:, 0], noise_mode)
      x = layers.SynthesisLayer(self.features, noise_seed=seed + 1, name="conv1", **kw)(x, ws[:, 1], noise_mode)
      i = 2
    if img is not None:
      img = layers.upsample2d(img, layers.setup_filter(self.resample_filter))
    y = layers.ToRGB(self.img_channels, conv_clamp=self.conv_clamp, fused_modconv=self.fused_modconv,
                     conv_impl=self.conv_impl, name="torgb")(x, ws[:, i])
    img = y if img is None else img + y
    return x, img  # [B, R, R, C], [B, R, R, img_channels]


class SynthesisNetwork(nn.Module):
  """ws [B, num_ws, w_dim] -> image [B, R, R, img_channels] in about [-1, 1] (skip architecture, Fig. 7)."""
  model: Model

  @nn.compact
  def __call__(self, ws, noise_mode="random"):
    model = self.model
    if ws.shape[1] != model.num_ws:
      raise ValueError(f"ws has {ws.shape[1]} layers, the synthesis network needs {model.num_ws}.")
    x = img = None
    w_idx = 0
    for res in [2 ** i for i in range(2, int(math.log2(model.resolution)) + 1)]:
      num_conv = 1 if res == 4 else 2
      block_cls = nn.remat(SynthesisBlock, static_argnums=(4,)) if model.remat else SynthesisBlock  # 4: noise_mode
      block = block_cls(model.channels(res), res, model.img_channels, is_first=res == 4,
                        conv_clamp=model.conv_clamp, fused_modconv=model.fused_modconv,
                        conv_impl=model.conv_impl, dtype=model.dtype, name=f"b{res}")
      # Each block reads num_conv + 1 consecutive ws: its toRGB shares its w with the next block's first conv.
      x, img = block(x, img, ws[:, w_idx: w_idx + num_conv + 1], noise_mode)
      w_idx += num_conv
    return img.astype(jnp.float32)


class Generator(nn.Module):
  """Mapping + synthesis. Methods: `mapping(z, labels) -> w [B, w_dim]`, `synthesis(ws, noise_mode)`, and
  `__call__(z, labels, noise_mode)` (no truncation, used for init). Noise uses the "noise" rng stream."""
  model: Model

  def setup(self):
    model = self.model
    self.mapping_net = MappingNetwork(model.z_dim, model.w_dim, model.num_classes, model.mapping_layers,
                                      model.mapping_lr_multiplier)
    self.synthesis_net = SynthesisNetwork(model)

  def mapping(self, z, labels=None):
    return self.mapping_net(z, labels)  # [B, w_dim]

  def synthesis(self, ws, noise_mode="random"):
    return self.synthesis_net(ws, noise_mode)  # [B, R, R, C]

  def __call__(self, z, labels=None, noise_mode="random"):
    w = self.mapping(z, labels)
    return self.synthesis(broadcast_ws(w, self.model.num_ws), noise_mode)


class DiscriminatorBlock(nn.Module):
  """[fromRGB] -> conv 3x3 -> conv 3x3 down 2, with a 1x1 down residual scaled by sqrt(1/2) for 'resnet'."""
  tmp_channels: int
  out_channels: int
  is_first: bool
  architecture: str = "resnet"
  resample_filter: Sequence[int] = layers.DEFAULT_FILTER
  conv_clamp: Optional[float] = None
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, img):
    conv = functools.partial(layers.EqualConv, activation="lrelu", conv_clamp=self.conv_clamp,
                             conv_impl=self.conv_impl)
    if self.is_first:
      x = conv(self.tmp_channels, 1, name="fromrgb")(img)
    if self.architecture == "resnet":
      y = layers.EqualConv(self.out_channels, 1, use_bias=False, down=2, resample_filter=self.resample_filter,
                           conv_impl=self.conv_impl, name="skip")(x, gain=math.sqrt(0.5))
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
  model: Model

  @nn.compact
  def __call__(self, img, labels=None):
    model = self.model
    img = img.astype(model.dtype)  # R1's gradient is taken w.r.t. the float32 images before this cast
    x = None
    block_cls = nn.remat(DiscriminatorBlock) if model.remat else DiscriminatorBlock
    for res in [2 ** i for i in range(int(math.log2(model.resolution)), 2, -1)]:
      x = block_cls(model.channels(res), model.channels(res // 2), is_first=res == model.resolution,
                    architecture=model.d_architecture, conv_clamp=model.conv_clamp,
                    conv_impl=model.conv_impl, name=f"b{res}")(x, img)
    conv = functools.partial(layers.EqualConv, activation="lrelu", conv_clamp=model.conv_clamp,
                             conv_impl=model.conv_impl)
    if x is None:  # resolution 4: the epilogue reads the image through a fromRGB
      x = conv(model.channels(4), 1, name="fromrgb")(img)
    # Epilogue at 4x4.
    c4 = model.channels(4)
    cmap_dim = (model.cmap_dim or c4) if model.num_classes > 0 else 0
    if model.mbstd_num_channels > 0:
      x = layers.minibatch_stddev(x, model.mbstd_group_size, model.mbstd_num_channels)
    x = conv(c4, 3, name="b4_conv")(x)
    x = layers.EqualDense(c4, activation="lrelu", name="b4_fc")(x.reshape(x.shape[0], -1))
    x = layers.EqualDense(1 if cmap_dim == 0 else cmap_dim, name="b4_out")(x)  # [B, 1 or cmap_dim]
    if cmap_dim > 0:
      lr_multiplier = model.mapping_lr_multiplier if model.d_mapping_lr_multiplier is None else \
          model.d_mapping_lr_multiplier
      cmap = MappingNetwork(0, cmap_dim, model.num_classes, model.d_mapping_layers, lr_multiplier,
                            name="mapping")(None, labels)  # [B, cmap_dim]
      return jnp.sum(x.astype(jnp.float32) * cmap, axis=-1) / math.sqrt(cmap_dim)  # [B]
    return x[:, 0].astype(jnp.float32)  # [B]


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


def g_variables(g_params, noise_const=None):
  """The generator's variables: its params and, when given, the constant noise images (state["noise_const"];
  without them the layers use the ones init draws)."""
  return {"params": g_params} | ({"noise_const": noise_const} if noise_const is not None else {})


def generate(g_params, w_avg, z, labels=None, *, model, truncation_psi=1.0, truncation_cutoff=None,
             noise_mode="const", rng_noise=None, noise_const=None):
  """Images [B, R, R, C] in about [-1, 1] from z [B, z_dim], with truncation toward `w_avg`; noise_mode='const'
  adds `noise_const` (state["noise_const"])."""
  gen = Generator(model)
  w = gen.apply({"params": g_params}, z, labels, method="mapping")
  ws = truncate(broadcast_ws(w, model.num_ws), w_avg, truncation_psi, truncation_cutoff)
  rngs = {"noise": rng_noise} if rng_noise is not None else {}
  return gen.apply(g_variables(g_params, noise_const), ws, noise_mode, method="synthesis", rngs=rngs)


def style_mixing_grid(g_params, w_avg, z_rows, z_cols, *, model, col_layers, truncation_psi=1.0,
                      noise_mode="const", labels_rows=None, labels_cols=None, noise_const=None):
  """Style mixing at inference (StyleGAN Fig. 3): image [i, j] takes the layers in `col_layers` from column j's w
  and the rest from row i's w (e.g. col_layers=range(0, 4): coarse styles from the columns). Returns
  [len(z_rows), len(z_cols), R, R, C] in about [-1, 1]."""
  gen = Generator(model)

  def ws_of(z, labels):
    w = gen.apply({"params": g_params}, z, labels, method="mapping")
    return truncate(broadcast_ws(w, model.num_ws), w_avg, truncation_psi)
  wr, wc = ws_of(z_rows, labels_rows), ws_of(z_cols, labels_cols)  # [R, L, D], [C, L, D]
  take_col = np.zeros(model.num_ws, bool)
  take_col[list(col_layers)] = True
  ws = jnp.where(take_col[None, None, :, None], wc[None, :], wr[:, None])  # [R, C, L, D]
  nr, nc = ws.shape[:2]
  img = gen.apply(g_variables(g_params, noise_const), ws.reshape((nr * nc,) + ws.shape[2:]), noise_mode,
                  method="synthesis")
  return img.reshape((nr, nc) + img.shape[1:])


def to_uint8(img):
  """[-1, 1] float images -> uint8 [0, 255] (the official `(img * 127.5 + 128).clamp(0, 255)`)."""
  return jnp.clip(img * 127.5 + 128.0, 0, 255).astype(jnp.uint8)


def to_float(images):
  """uint8 [0, 255] -> float32 [-1, 1] (the official `img / 127.5 - 1`)."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def pad_images(images, resolution):
  """uint8 [B, H, W, C] -> [B, R, R, C], zero-padded symmetrically (extra row/column at the end)."""
  _, h, w, _ = images.shape
  ph, pw = resolution - h, resolution - w
  if not ph and not pw:
    return images
  return jnp.pad(images, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))


def crop_images(images, image_shape):
  """[B, R, R, C] -> the centre [B, H, W, C] (inverse of `pad_images`)."""
  h, w = image_shape[:2]
  top, left = (images.shape[1] - h) // 2, (images.shape[2] - w) // 2
  return images[:, top: top + h, left: left + w]
