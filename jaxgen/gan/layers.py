"""StyleGAN2 layers in pure JAX (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN").

Equalized learning rate (Karras et al. 2018, ProGAN Sec. 4.1), bias + activation with gain, FIR resampling with the
semantics of NVlabs/stylegan2-ada-pytorch `torch_utils/ops/upfirdn2d.py`, modulated/demodulated convolution
(StyleGAN2 Sec. 2.2, Eq. 1-3), noise inputs, toRGB and minibatch standard deviation. Layout is NHWC throughout,
kernels are HWIO. No custom ops: convolutions run through `jaxgen.ops` (per backend), FIR filters as XLA's fused
elementwise loops.
"""
import math
from typing import Optional
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import ops

LRELU_ALPHA = 0.2
# Default gains of bias_act.activation_funcs: keep the activations' second moment at 1 through the layer.
ACT_GAIN = {"linear": 1.0, "relu": math.sqrt(2.0), "lrelu": math.sqrt(2.0)}
DEFAULT_FILTER = (1, 3, 3, 1)


# ----------------------------------------------------------------------------------------------------------------
# Bias + activation.


def bias_act(x, b=None, act="linear", gain=None, clamp=None, axis=-1):
  """y = clamp(act(x + b) * gain, -clamp, clamp), as `torch_utils/ops/bias_act.py`.

  `gain=None` uses the activation's default gain (sqrt(2) for relu/lrelu, 1 for linear); leaky ReLU has slope 0.2.
  """
  if b is not None:
    shape = [1] * x.ndim
    shape[axis] = -1
    x = x + b.reshape(shape).astype(x.dtype)
  if act == "lrelu":
    x = jnp.where(x >= 0, x, x * LRELU_ALPHA)
  elif act == "relu":
    x = jax.nn.relu(x)
  elif act != "linear":
    raise ValueError(f"bias_act: unknown activation {act!r}; use 'linear', 'relu' or 'lrelu'.")
  gain = ACT_GAIN[act] if gain is None else gain
  if gain != 1:
    x = x * gain
  if clamp is not None:
    x = jnp.clip(x, -clamp, clamp)
  return x


# ----------------------------------------------------------------------------------------------------------------
# FIR resampling: upfirdn2d.


def setup_filter(f=DEFAULT_FILTER, normalize=True, flip_filter=False, gain=1.0, separable=None):
  """A resampling filter as `upfirdn2d.setup_filter`: 1-D taps become their outer product, normalised to sum 1.

  Returns a numpy float32 array `[fh, fw]` (or `[taps]` when separable; the default picks separable only for 8+ taps,
  as the official code does). Filters are constants, never parameters.
  """
  f = np.asarray(1.0 if f is None else f, dtype=np.float32)
  if f.ndim == 0:
    f = f[np.newaxis]
  if separable is None:
    separable = f.ndim == 1 and f.size >= 8
  if f.ndim == 1 and not separable:
    f = np.outer(f, f)
  if normalize:
    f = f / f.sum()
  if flip_filter:
    f = np.flip(f, axis=tuple(range(f.ndim)))
  return (f * gain ** (f.ndim / 2)).astype(np.float32)


def _parse_padding(padding):
  """[x0, x1, y0, y1] from an int, [x, y] or [x0, x1, y0, y1] (official order)."""
  if isinstance(padding, int):
    return padding, padding, padding, padding
  padding = list(padding)
  if len(padding) == 2:
    px, py = padding
    return px, px, py, py
  return tuple(padding)


def _filter_size(f):
  f = np.asarray(f)
  if f.ndim == 1:
    return f.shape[0], f.shape[0]
  return f.shape[1], f.shape[0]  # fw, fh


def _separate(f):
  """(fy, fx) 1-D taps if f is separable (rank 1), else None."""
  f = np.asarray(f, dtype=np.float64)
  if f.ndim == 1:
    return f, f
  u, s, vt = np.linalg.svd(f)
  if s.size > 1 and s[1] > 1e-7 * s[0]:
    return None
  return u[:, 0] * s[0], vt[0]


def _fir_axis(x, taps, axis, down):
  """Valid correlation of x with 1-D taps along `axis`, keeping every `down`-th output.

  Written as a sum of strided slices, which XLA fuses into one elementwise loop (faster on CPU than a depthwise
  convolution, and only the kept outputs are computed).
  """
  n_out = x.shape[axis] - len(taps) + 1
  n_keep = (n_out + down - 1) // down
  y = None
  for k, t in enumerate(taps):
    if t == 0:
      continue
    sl = jax.lax.slice_in_dim(x, k, k + (n_keep - 1) * down + 1, stride=down, axis=axis)
    y = sl * float(t) if y is None else y + sl * float(t)
  return y


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1.0):
  """Pad, upsample, FIR-filter and downsample images `[B, H, W, C]` (upfirdn2d semantics of the official code).

  1. upsample by inserting `up - 1` zeros after each pixel; 2. pad by `padding = [x0, x1, y0, y1]` (negative crops);
  3. convolve with the 2-D FIR filter f (true convolution unless `flip_filter`), keeping only outputs whose
  footprint lies in the image; 4. keep every `down`-th pixel. `gain` scales the result (applied to f as
  `gain ** (f.ndim / 2)`, exactly as the official code).
  """
  upx, upy = (up, up) if isinstance(up, int) else up
  downx, downy = (down, down) if isinstance(down, int) else down
  px0, px1, py0, py1 = _parse_padding(padding)
  b, h, w, c = x.shape
  if upx > 1 or upy > 1:
    x = x.reshape(b, h, 1, w, 1, c)
    x = jnp.pad(x, ((0, 0), (0, 0), (0, upy - 1), (0, 0), (0, upx - 1), (0, 0)))
    x = x.reshape(b, h * upy, w * upx, c)
  x = jnp.pad(x, ((0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0)), (0, 0)))
  x = x[:, max(-py0, 0): x.shape[1] - max(-py1, 0), max(-px0, 0): x.shape[2] - max(-px1, 0)]
  f = np.asarray(f, dtype=np.float64) * gain ** (np.ndim(f) / 2)
  if not flip_filter:
    f = np.flip(f, axis=tuple(range(f.ndim)))
  sep = _separate(f)
  if sep is not None:
    fy, fx = sep
    x = _fir_axis(x, fy, axis=1, down=downy)
    return _fir_axis(x, fx, axis=2, down=downx)
  fh, fw = f.shape
  ho, wo = x.shape[1] - fh + 1, x.shape[2] - fw + 1
  y = 0.0
  for i in range(fh):
    for j in range(fw):
      if f[i, j] != 0:
        y = y + float(f[i, j]) * x[:, i: i + ho: downy, j: j + wo: downx]
  return y


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1.0):
  """Upsample `[B, H, W, C]` by `up` with FIR filter f; output `[B, H*up, W*up, C]` for zero padding."""
  px0, px1, py0, py1 = _parse_padding(padding)
  fw, fh = _filter_size(f)
  p = [px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2]
  return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * up * up)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1.0):
  """Downsample `[B, H, W, C]` by `down` with FIR filter f; output `[B, H/down, W/down, C]` for zero padding."""
  px0, px1, py0, py1 = _parse_padding(padding)
  fw, fh = _filter_size(f)
  p = [px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2, py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2]
  return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain)


# ----------------------------------------------------------------------------------------------------------------
# Convolution with resampling: conv2d_resample.


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, impl="auto"):
  """Convolution (correlation) of `[B, H, W, C_in]` with `w [kh, kw, C_in/groups, C_out]`, with FIR resampling.

  Same result as the official `conv2d_resample` reference path: upfirdn2d(up, padding) -> conv -> upfirdn2d(down),
  with the padding bookkeeping of the official code (`padding` is the conv's own, e.g. kernel_size // 2).
  Implementation per case (`impl`: the `jaxgen.ops` kernel choice):
    up=2: a transposed (input-dilated) convolution at the input resolution (`ops.upsample_conv2d`), then the
          FIR filter on the upsampled grid: about 2.2x fewer multiply-adds than filtering first and convolving at
          the high resolution.
    down=2: FIR filter at the input resolution, then a stride-2 convolution (only kept outputs are computed);
          a 1x1 kernel downsamples first.
  Every convolution here is differentiated twice in training (R1 through D, path length through G), so the matmul
  forms are told so (`ops.conv2d(second_order=True)`).
  """
  kh, kw = w.shape[0], w.shape[1]
  px0 = px1 = py0 = py1 = padding
  if f is not None:
    fw, fh = _filter_size(f)
  if up > 1:
    px0 += (fw + up - 1) // 2
    px1 += (fw - up) // 2
    py0 += (fh + up - 1) // 2
    py1 += (fh - up) // 2
  if down > 1:
    px0 += (fw - down + 1) // 2
    px1 += (fw - down) // 2
    py0 += (fh - down + 1) // 2
    py1 += (fh - down) // 2

  if up == 1 and down == 1:
    return ops.conv2d(x, w, ((py0, py1), (px0, px1)), groups=groups, impl=impl, second_order=True)
  if down > 1 and up == 1:
    if kh == 1 and kw == 1:
      x = upfirdn2d(x, f, down=down, padding=[px0, px1, py0, py1])
      return ops.conv2d(x, w, groups=groups, impl=impl, second_order=True)
    x = upfirdn2d(x, f, padding=[px0, px1, py0, py1])
    return ops.conv2d(x, w, stride=down, groups=groups, impl=impl, second_order=True)
  # Upsampling. The reference inserts up-1 zeros after each pixel, pads by (p0, p1) and applies FIR and conv
  # (both valid, so their order does not matter). lhs_dilation inserts zeros only between pixels, so the
  # trailing up-1 zeros join the right padding; all padding goes on the input of the first (conv) stage.
  x = ops.upsample_conv2d(x, w, up, ((py0, py1 + up - 1), (px0, px1 + up - 1)), groups=groups, impl=impl,
                          second_order=True)
  x = upfirdn2d(x, f, gain=up * up)
  if down > 1:
    x = upfirdn2d(x, f, down=down)
  return x


# ----------------------------------------------------------------------------------------------------------------
# Equalized learning rate layers.


def _normal_init(lr_multiplier):
  """Weights ~ N(0, 1) / lr_multiplier: the runtime gain lr_multiplier / sqrt(fan_in) gives them unit-variance
  pre-activations and an effective learning rate scaled by lr_multiplier (ProGAN Sec. 4.1)."""
  def init(key, shape, dtype=jnp.float32):
    return jax.random.normal(key, shape, dtype) / lr_multiplier
  return init


class EqualDense(nn.Module):
  """Fully connected layer with equalized learning rate (`FullyConnectedLayer` of the official code).

  y = act(x @ (W * lr_mul / sqrt(fan_in)) + b * lr_mul) * gain,  W ~ N(0, 1) / lr_mul,  b = bias_init at init
  (as the official code, the forward bias starts at bias_init * lr_mul; every official use has lr_mul = 1 or
  bias_init = 0, e.g. the style affines start at 1 and the mapping layers at 0).
  """
  features: int
  use_bias: bool = True
  activation: str = "linear"
  lr_multiplier: float = 1.0
  bias_init: float = 0.0

  @nn.compact
  def __call__(self, x):  # x: [B, F_in]
    fan_in = x.shape[-1]
    w = self.param("kernel", _normal_init(self.lr_multiplier), (fan_in, self.features))
    weight_gain = self.lr_multiplier / math.sqrt(fan_in)
    x = x @ (w * weight_gain).astype(x.dtype)  # [B, F], in x's dtype
    b = None
    if self.use_bias:
      b = self.param("bias", nn.initializers.constant(self.bias_init), (self.features,)) * self.lr_multiplier
    return bias_act(x, b, act=self.activation)


class EqualConv(nn.Module):
  """2-D convolution with equalized learning rate and optional FIR up/down-sampling (`Conv2dLayer`).

  y = clamp(act(conv(x, W / sqrt(C_in k^2)) + b) * act_gain * gain),  W ~ N(0, 1), padding k // 2.
  """
  features: int
  kernel_size: int
  use_bias: bool = True
  activation: str = "linear"
  up: int = 1
  down: int = 1
  resample_filter: Sequence[int] = DEFAULT_FILTER
  conv_clamp: Optional[float] = None
  conv_impl: str = "auto"  # jaxgen.ops

  @nn.compact
  def __call__(self, x, gain=1.0):  # x: [B, H, W, C_in]
    c_in, k = x.shape[-1], self.kernel_size
    w = self.param("kernel", nn.initializers.normal(1.0), (k, k, c_in, self.features))
    w = (w * (1.0 / math.sqrt(c_in * k * k))).astype(x.dtype)  # computes in x's dtype
    f = setup_filter(self.resample_filter) if (self.up > 1 or self.down > 1) else None
    x = conv2d_resample(x, w, f, self.up, self.down, k // 2, impl=self.conv_impl)  # [B, H', W', C_out]
    b = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
    act_gain = ACT_GAIN[self.activation] * gain
    clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
    return bias_act(x, b, act=self.activation, gain=act_gain, clamp=clamp)


# ----------------------------------------------------------------------------------------------------------------
# Modulated convolution.


def demodulation_coefficients(weight, styles):
  """d[b, o] = 1 / sqrt(sum_{i,k} (s[b, i] * w[k, i, o])^2 + 1e-8)  (StyleGAN2 Eq. 3).  weight [kh,kw,I,O] -> [B, O]."""
  w_sq = jnp.sum(jnp.square(weight), axis=(0, 1))  # [I, O]
  return jax.lax.rsqrt(jnp.square(styles) @ w_sq + 1e-8)  # [B, O]


def modulated_conv2d(x, weight, styles, demodulate=True, up=1, down=1, padding=0, resample_filter=None,
                     fused=False, impl="auto"):
  """Modulated convolution (StyleGAN2 Sec. 2.2): w'[b] = w * s[b] (per input channel), optionally demodulated.

  x [B, H, W, I], weight [kh, kw, I, O] (unscaled), styles [B, I]  ->  [B, H', W', O].

  fused=True builds per-sample weights w''[b] = w * s[b] * d[b] and runs one grouped convolution with B groups,
  as the official `fused_modconv`. fused=False scales activations instead of weights:
      conv(x, w * s[b]) * d[b] = conv(x * s[b], w) * d[b],
  the same result (exact up to float round-off; `tests/gan/test_layers.py` checks it) with one shared weight, so
  the convolution is a single dense GEMM over the whole batch and its backward needs no per-sample weight
  gradients. Measured on the 2-core CPU (batch 8, 512 -> 512 channels, 3x3, forward + backward): 0.22 s against
  2.2 s for the grouped form at 16x16, and 0.64 s against 4.6 s for the 16 -> 32 up-sampling layer. XLA:CPU runs
  grouped convolutions with many groups poorly, so the activation form is the default; the official code makes
  the same choice in training (`fused_modconv = not training`). On GPU/TPU the two are closer; `fused=True`
  remains available. `impl` picks the convolution kernels (`jaxgen.ops`): "native" runs the grouped form as XLA's
  grouped convolution.
  """
  b = x.shape[0]
  kh, kw, c_in, c_out = weight.shape
  dcoefs = demodulation_coefficients(weight, styles) if demodulate else None  # [B, O]
  if not fused:
    x = x * styles[:, None, None, :].astype(x.dtype)
    x = conv2d_resample(x, weight.astype(x.dtype), f=resample_filter, up=up, down=down, padding=padding, impl=impl)
    if demodulate:
      x = x * dcoefs[:, None, None, :].astype(x.dtype)
    return x
  w = weight[None] * styles[:, None, None, :, None]  # [B, kh, kw, I, O]
  if demodulate:
    w = w * dcoefs[:, None, None, None, :]
  w = jnp.transpose(w, (1, 2, 3, 0, 4)).reshape(kh, kw, c_in, b * c_out)  # groups along output channels
  h, wd = x.shape[1], x.shape[2]
  x = jnp.transpose(x, (1, 2, 0, 3)).reshape(1, h, wd, b * c_in)  # [1, H, W, B*I]
  x = conv2d_resample(x, w.astype(x.dtype), f=resample_filter, up=up, down=down, padding=padding, groups=b,
                      impl=impl)
  ho, wo = x.shape[1], x.shape[2]
  return jnp.transpose(x.reshape(ho, wo, b, c_out), (2, 0, 1, 3))  # [B, H', W', O]


class ModulatedConv(nn.Module):
  """Modulated (and by default demodulated) convolution, StyleGAN2 Sec. 2.2.

  Called as `(x, styles)` with x [B, H, W, C_in] and styles [B, C_in] the per-input-channel scales s (the affine
  map from w to s lives outside). Weight W ~ N(0, 1) of shape [k, k, C_in, features];
      w'_{ijk} = s_i * w_{ijk},   w''_{ijk} = w'_{ijk} / sqrt(sum_{i,k} w'_{ijk}^2 + eps)   (Eq. 1 and 3).
  With demodulation the output has unit second moment when x does, whatever the scale of s; scaling s by a
  constant leaves the output unchanged. `fused` picks the grouped-convolution form (see `modulated_conv2d`).
  """
  features: int
  kernel_size: int
  demodulate: bool = True
  up: int = 1
  down: int = 1
  resample_filter: Sequence[int] = DEFAULT_FILTER
  fused: bool = False
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, styles):  # x: [B, H, W, C_in], styles: [B, C_in]
    k = self.kernel_size
    weight = self.param("kernel", nn.initializers.normal(1.0), (k, k, x.shape[-1], self.features))
    f = setup_filter(self.resample_filter) if (self.up > 1 or self.down > 1) else None
    return modulated_conv2d(x, weight, styles, demodulate=self.demodulate, up=self.up, down=self.down,
                            padding=k // 2, resample_filter=f, fused=self.fused,
                            impl=self.conv_impl)  # [B, H', W', features]


# ----------------------------------------------------------------------------------------------------------------
# Synthesis layers.


class SynthesisLayer(nn.Module):
  """Affine(w) -> modulated 3x3 conv (optionally up x2) -> + noise * strength -> bias + lrelu (`SynthesisLayer`).

  The affine map is equalized-lr with bias initialised to 1, so styles start around 1. Noise modes:
  'random' draws N(0, 1) per example from the "noise" rng stream; 'const' adds a fixed per-layer image [R, R], the
  variable "noise_const/noise" (the official `noise_const` buffer; init draws it from `key(noise_seed)`, and an
  apply without the "noise_const" collection uses those init values); 'none' adds nothing.
  """
  features: int
  resolution: int
  kernel_size: int = 3
  up: int = 1
  use_noise: bool = True
  activation: str = "lrelu"
  resample_filter: Sequence[int] = DEFAULT_FILTER
  conv_clamp: Optional[float] = None
  fused_modconv: bool = False
  noise_seed: int = 0
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, w, noise_mode="random", gain=1.0):  # x: [B, H, W, C_in], w: [B, w_dim]
    styles = EqualDense(x.shape[-1], bias_init=1.0, name="affine")(w)  # [B, C_in]
    x = ModulatedConv(self.features, self.kernel_size, demodulate=True, up=self.up,
                      resample_filter=self.resample_filter, fused=self.fused_modconv, conv_impl=self.conv_impl,
                      name="conv")(x, styles)
    if self.use_noise:
      strength = self.param("noise_strength", nn.initializers.zeros, ())
      shape = (x.shape[0], self.resolution, self.resolution, 1)
      draw_const = lambda: jax.random.normal(jax.random.key(self.noise_seed), shape[1:3], jnp.float32)
      if self.is_initializing() or self.has_variable("noise_const", "noise"):
        const = self.variable("noise_const", "noise", draw_const).value  # [R, R]
      else:
        const = draw_const() if noise_mode == "const" else None
      if noise_mode == "random":
        x = x + jax.random.normal(self.make_rng("noise"), shape, x.dtype) * strength.astype(x.dtype)
      elif noise_mode == "const":
        x = x + const[None, :, :, None].astype(x.dtype) * strength.astype(x.dtype)
      elif noise_mode != "none":
        raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}.")
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
    return bias_act(x, bias, act=self.activation, gain=ACT_GAIN[self.activation] * gain, clamp=clamp)


class ToRGB(nn.Module):
  """1x1 modulated conv without demodulation, styles scaled by 1/sqrt(C_in) (the conv's weight gain), + bias."""
  img_channels: int
  conv_clamp: Optional[float] = None
  fused_modconv: bool = False
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, w):  # x: [B, H, W, C], w: [B, w_dim]
    styles = EqualDense(x.shape[-1], bias_init=1.0, name="affine")(w) * (1.0 / math.sqrt(x.shape[-1]))
    x = ModulatedConv(self.img_channels, 1, demodulate=False, fused=self.fused_modconv, conv_impl=self.conv_impl,
                      name="conv")(x, styles)
    bias = self.param("bias", nn.initializers.zeros, (self.img_channels,))
    return bias_act(x, bias, clamp=self.conv_clamp)  # [B, H, W, img_channels]


def minibatch_stddev(x, group_size=4, num_channels=1):
  """Minibatch standard deviation (ProGAN Sec. 3; `MinibatchStdLayer`): append `num_channels` feature maps holding
  the std over groups of `group_size` examples, averaged over channels and pixels.

  Example i belongs to group i mod (B / G), as in the official reshape [G, n, ...]. x [B, H, W, C] -> [B, H, W, C+F].
  """
  b, h, w, c = x.shape
  g = min(group_size, b) if group_size is not None else b
  dtype, x32 = x.dtype, x.astype(jnp.float32)  # the statistic in float32 whatever the activations' dtype
  if b % g:
    raise ValueError(f"minibatch_stddev: batch {b} is not divisible by the group size {g}; "
                     f"pick a batch size that is a multiple of mbstd_group_size.")
  f = num_channels
  y = x32.reshape(g, b // g, h, w, f, c // f)  # [G, n, H, W, F, c]
  y = y - y.mean(axis=0)
  y = jnp.sqrt(jnp.square(y).mean(axis=0) + 1e-8)  # [n, H, W, F, c]
  y = y.mean(axis=(1, 2, 4))  # [n, F]
  y = jnp.tile(y, (g, 1))[:, None, None, :]  # [B, 1, 1, F]
  y = jnp.broadcast_to(y, (b, h, w, f)).astype(dtype)
  return jnp.concatenate([x, y], axis=-1)  # [B, H, W, C+F]


def normalize_2nd_moment(x, axis=-1, eps=1e-8):
  """x / sqrt(mean(x^2) + eps) along `axis` (applied to z and to the label embedding)."""
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=axis, keepdims=True) + eps)
