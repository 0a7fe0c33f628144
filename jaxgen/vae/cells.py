"""NVAE building blocks (Vahdat & Kautz 2020, NVAE, Sec. 3.1 and Fig. 3; NVlabs/NVAE neural_operations.py).

Every convolution is a `Conv2D`: weight-normalised like the official `Conv2D` (w = exp(g) v / ||v||, one log-norm g
per output channel) unless `weight_norm=False` (the inverted-residual cells' convolutions, as in the official code),
optionally masked for the autoregressive posterior flows (official `ARConv2d`). Each `Conv2D` computes its effective
kernel in `effective_kernel`, which `nvae.Model` intercepts to run the spectral regulariser over every convolution.

Residual cells (Fig. 3 of the paper), both ending in squeeze-and-excitation and added to the skip with weight 0.1:
  encoder:    BN-Swish-Conv3x3-BN-Swish-Conv3x3-SE                       (`res_bnswish` x 2)
  generative: BN-Conv1x1-BN-Swish-DWConv5x5-BN-Swish-Conv1x1-BN-SE      (`mconv_e6k5g0`, expansion 6;
                                                                         post-processing cells use expansion 3)
BatchNorm uses PyTorch momentum 0.05 (flax momentum 0.95) and eps 1e-5 as the official code (BN_EPS, momentum=0.05).
Precision: every layer computes in the dtype of its input (float32 parameters cast to it), so a model that feeds
bfloat16 activations runs its cells in bfloat16; BatchNorm statistics are reduced in float32.
PyTorch tracks the unbiased batch variance in its running estimate, flax the biased one: a (B*H*W)/(B*H*W-1) factor.
"""
import functools
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import ops

BN_MOMENTUM = 0.95  # flax convention: running = 0.95 running + 0.05 batch (PyTorch momentum=0.05).
BN_EPS = 1e-5
SKIP_SCALE = 0.1  # official `Cell.forward`: skip + 0.1 * s


def swish(x):
  """Swish / SiLU, x * sigmoid(x) (Ramachandran et al. 2017), used after every BN in NVAE's cells."""
  return jax.nn.swish(x)


def batch_norm(train: bool, name: Optional[str] = None, dtype=None):
  """BatchNorm with NVAE's momentum and eps; statistics live in the "batch_stats" collection.

  Under `jax.jit` with the batch sharded over devices the mean and variance are global (no axis_name needed).
  `dtype`: of the output (pass the input's); the batch statistics are reduced in float32 either way.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS, name=name, dtype=dtype,
                      force_float32_reductions=True)


def _torch_uniform_bias_init(fan_in):
  """PyTorch's default conv/linear bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda rng, shape, dtype=jnp.float32: jax.random.uniform(rng, shape, dtype, -bound, bound)


# PyTorch's default kaiming_uniform(a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)) = variance scaling 1/3.
_torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def channel_mask(c_in, groups, c_out, zero_diag):
  """Which input channels each output channel may see at the kernel centre, [c_out, c_in // groups].

  Official `channel_mask` (neural_ar_operations.py): with c_out = r c_in, output block i (r channels) sees input
  channels <= i (< i with zero_diag); with c_in = r c_out, output i sees input channels < (i+1) r (< i r).
  Depthwise (groups = c_in): every channel sees itself unless zero_diag.
  """
  if c_in % c_out and c_out % c_in:
    raise ValueError(f"masked conv needs one of c_in={c_in}, c_out={c_out} to divide the other")
  if groups == c_in and groups != 1:
    return np.zeros([c_out, 1], np.float32) if zero_diag else np.ones([c_out, 1], np.float32)
  if groups != 1:
    raise ValueError("masked conv supports groups == 1 or groups == c_in")
  mask = np.ones([c_out, c_in], np.float32)
  if c_out >= c_in:
    ratio = c_out // c_in
    for i in range(c_in):
      mask[i * ratio:(i + 1) * ratio, i + 1:] = 0
      if zero_diag:
        mask[i * ratio:(i + 1) * ratio, i] = 0
  else:
    ratio = c_in // c_out
    for i in range(c_out):
      mask[i, (i + 1) * ratio:] = 0
      if zero_diag:
        mask[i, i * ratio:(i + 1) * ratio] = 0
  return mask


def conv_mask(kernel_size, c_in, groups, c_out, zero_diag, mirror):
  """Autoregressive kernel mask in HWIO layout, [k, k, c_in // groups, c_out] (official `create_conv_mask`).

  Raster order over positions (rows above, then pixels to the left), `channel_mask` at the centre;
  `mirror` flips the kernel spatially (reverse raster order, same channel order).
  """
  m = (kernel_size - 1) // 2
  mask = np.ones([c_out, c_in // groups, kernel_size, kernel_size], np.float32)
  mask[:, :, m:, :] = 0
  mask[:, :, m, :m] = 1
  mask[:, :, m, m] = channel_mask(c_in, groups, c_out, zero_diag)
  if mirror:
    mask = mask[:, :, ::-1, ::-1]
  return np.ascontiguousarray(mask.transpose(2, 3, 1, 0))  # OIHW -> HWIO


def live_taps(mask):
  """The (i, j) positions of an HWIO kernel mask with any non-zero entry, a static tuple."""
  return tuple((i, j) for i in range(mask.shape[0]) for j in range(mask.shape[1]) if np.any(mask[i, j]))


class Conv2D(nn.Module):
  """Convolution with weight normalisation (Salimans & Kingma 2016), official `Conv2D` / `ARConv2d`.

  w = exp(g) * v / (||v|| + 1e-5), norm over (kh, kw, c_in) per output channel; g is initialised to
  log(||v_init|| + 1e-2) (+ log(weight_init_coeff)) so the layer starts as its PyTorch-initialised self.
  With `masked`, v is multiplied by the autoregressive mask of `conv_mask` first. The official data-dependent
  init (`data_init=True`) is used only by `ELUConv` of the `res_elu` architecture, not by NVAE's `res_mbconv`.
  """
  features: int
  kernel_size: int = 3
  stride: int = 1
  padding: int = 0
  groups: int = 1
  use_bias: bool = False
  weight_norm: bool = True
  masked: bool = False
  zero_diag: bool = False
  mirror: bool = False
  weight_init_coeff: float = 1.0
  conv_impl: str = "auto"  # jaxgen.ops

  def _mask(self, c_in):  # numpy (static), or None
    if not self.masked:
      return None
    return conv_mask(self.kernel_size, c_in, self.groups, self.features, self.zero_diag, self.mirror)

  @nn.compact
  def __call__(self, x):  # x: [B, H, W, C_in]
    c_in = x.shape[-1]
    if c_in % self.groups:
      raise ValueError(f"input channels {c_in} not divisible by groups {self.groups}")
    k = self.kernel_size
    kernel = self.param("kernel", _torch_kernel_init, (k, k, c_in // self.groups, self.features))
    mask = self._mask(c_in)
    log_weight_norm = None
    if self.weight_norm:
      def init_log_norm(_):
        v = kernel if mask is None else kernel * mask
        return jnp.log(jnp.sqrt(jnp.sum(v * v, axis=(0, 1, 2))) + 1e-2) + math.log(self.weight_init_coeff)
      log_weight_norm = self.param("log_weight_norm", init_log_norm)  # [C_out]
    w = self.effective_kernel(kernel, log_weight_norm, mask)  # [k, k, C_in/groups, C_out]
    taps = None if mask is None else live_taps(mask)  # masked: the matmul forms skip the taps the mask zeroes
    y = ops.conv2d(x, w.astype(x.dtype), self.padding, self.stride, self.groups, taps, impl=self.conv_impl)
    if self.use_bias:
      fan_in = k * k * c_in // self.groups
      y = y + self.param("bias", _torch_uniform_bias_init(fan_in), (self.features,)).astype(y.dtype)
    return y  # [B, H', W', C_out]

  def effective_kernel(self, kernel, log_weight_norm, mask):
    """The kernel the convolution uses (masked, weight-normalised), [k, k, C_in/groups, C_out].

    `nvae.Model` intercepts this method to collect every convolution's kernel for spectral regularisation.
    """
    if mask is not None:
      kernel = kernel * mask
    if log_weight_norm is not None:
      norm = jnp.sqrt(jnp.sum(kernel * kernel, axis=(0, 1, 2)))  # [C_out]
      kernel = jnp.exp(log_weight_norm) * kernel / (norm + 1e-5)
    return kernel


class SqueezeExcitation(nn.Module):
  """Squeeze-and-excitation (Hu et al. 2018), official `SE`: x * sigmoid(W2 relu(W1 mean_hw(x))).

  Hidden width max(C/16, 4).
  """

  @nn.compact
  def __call__(self, x):  # x: [B, H, W, C]
    c = x.shape[-1]
    hidden = max(c // 16, 4)
    se = jnp.mean(x, axis=(1, 2))  # [B, C]
    se = nn.Dense(hidden, kernel_init=_torch_kernel_init, bias_init=_torch_uniform_bias_init(c), dtype=x.dtype)(se)
    se = nn.relu(se)
    se = nn.Dense(c, kernel_init=_torch_kernel_init, bias_init=_torch_uniform_bias_init(hidden), dtype=x.dtype)(se)
    return x * jax.nn.sigmoid(se)[:, None, None, :]


def upsample_nearest(x):  # [B, H, W, C] -> [B, 2H, 2W, C]
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _align_corners_matrix(n):
  """[2n, n] bilinear interpolation weights of a 2x upsampling with align_corners=True."""
  m = np.zeros([2 * n, n], np.float32)
  if n == 1:
    m[:, 0] = 1.0
    return m
  pos = np.arange(2 * n) * (n - 1) / (2 * n - 1)
  lo = np.floor(pos).astype(int)
  hi = np.minimum(lo + 1, n - 1)
  frac = (pos - lo).astype(np.float32)
  m[np.arange(2 * n), lo] += 1.0 - frac
  m[np.arange(2 * n), hi] += frac
  return m


def upsample_bilinear_align_corners(x):
  """2x bilinear upsampling with align_corners=True (official `UpSample`).  [B, H, W, C] -> [B, 2H, 2W, C]."""
  mh = jnp.asarray(_align_corners_matrix(x.shape[1]), x.dtype)
  mw = jnp.asarray(_align_corners_matrix(x.shape[2]), x.dtype)
  return jnp.einsum("ph,qw,bhwc->bpqc", mh, mw, x)


class BNSwishConv(nn.Module):
  """BN-Swish-Conv3x3 (official `BNSwishConv`); `stride` 2 halves the resolution, -1 doubles it (nearest)."""
  features: int
  stride: int = 1
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool):
    x = swish(batch_norm(train, dtype=x.dtype)(x))
    if self.stride == -1:
      x = upsample_nearest(x)
    return Conv2D(self.features, 3, stride=abs(self.stride), padding=1, use_bias=True, conv_impl=self.conv_impl)(x)


class FactorizedReduce(nn.Module):
  """Skip path of down-sampling cells (official `FactorizedReduce`): Swish, then four 1x1 stride-2 convolutions
  on the four pixel phases, concatenated to C_out channels."""
  features: int
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x):  # x: [B, H, W, C] -> [B, H/2, W/2, features]
    if self.features % 2:
      raise ValueError("FactorizedReduce needs an even number of output channels")
    x = swish(x)
    q = self.features // 4
    phases = [x[:, 0::2, 0::2], x[:, 1::2, 1::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2]]
    sizes = [q, q, q, self.features - 3 * q]
    return jnp.concatenate([Conv2D(c, 1, use_bias=True, conv_impl=self.conv_impl)(p) for c, p in zip(sizes, phases)],
                           axis=-1)


class InvertedResidual(nn.Module):
  """Generative (depthwise-separable) branch, official `InvertedResidual` with k=5, g=0 (depthwise):

  [Up-nearest] - BN - Conv1x1(E C) - BN - Swish - DWConv5x5 - BN - Swish - Conv1x1(C_out) - BN.
  Its convolutions are not weight-normalised (`weight_norm=False` in the official code) and have no bias.
  """
  features: int
  expansion: int = 6
  stride: int = 1  # 1 or -1 (upsample)
  kernel_size: int = 5
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool):
    if self.stride == -1:
      x = upsample_nearest(x)
    hidden = int(round(x.shape[-1] * self.expansion))
    bn = functools.partial(batch_norm, train, dtype=x.dtype)
    x = bn()(x)
    x = Conv2D(hidden, 1, weight_norm=False, conv_impl=self.conv_impl)(x)
    x = swish(bn()(x))
    x = Conv2D(hidden, self.kernel_size, padding=(self.kernel_size - 1) // 2, groups=hidden, weight_norm=False,
               conv_impl=self.conv_impl)(x)
    x = swish(bn()(x))
    x = Conv2D(self.features, 1, weight_norm=False, conv_impl=self.conv_impl)(x)
    return bn()(x)


class ResidualCell(nn.Module):
  """NVAE residual cell (official `Cell` with the `res_mbconv` architecture): skip(s) + 0.1 * SE(branch(s)).

  kind "encoder": branch = BNSwishConv3x3 x 2 (cells of the pre-processing and bottom-up towers);
  kind "decoder": branch = InvertedResidual with `expansion` (6 in the top-down tower, 3 in post-processing).
  resample: "none"; "down" (stride 2, skip = FactorizedReduce, channels x2 by the caller's `features`);
  "up" (branch upsamples nearest, skip = bilinear align-corners upsample + Conv1x1 without bias).
  """
  features: int
  kind: str = "encoder"
  resample: str = "none"
  expansion: int = 6
  use_se: bool = True
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, s, train: bool):  # s: [B, H, W, C] -> [B, H', W', features]
    stride = {"none": 1, "down": 2, "up": -1}[self.resample]
    if self.resample == "none":
      skip = s
    elif self.resample == "down":
      skip = FactorizedReduce(self.features, self.conv_impl)(s)
    else:
      skip = Conv2D(self.features, 1, conv_impl=self.conv_impl)(upsample_bilinear_align_corners(s))
    if self.kind == "encoder":
      x = BNSwishConv(self.features, stride, self.conv_impl)(s, train)
      x = BNSwishConv(self.features, 1, self.conv_impl)(x, train)
    elif self.kind == "decoder":
      if stride == 2:
        raise ValueError("decoder cells do not down-sample")
      x = InvertedResidual(self.features, self.expansion, stride, conv_impl=self.conv_impl)(s, train)
    else:
      raise ValueError(f"unknown cell kind {self.kind!r}")
    if self.use_se:
      x = SqueezeExcitation()(x)
    return skip + SKIP_SCALE * x


class EncCombiner(nn.Module):
  """Official `EncCombinerCell`: x_enc + Conv1x1(x_dec)."""
  features: int
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x_enc, x_dec):
    return x_enc + Conv2D(self.features, 1, use_bias=True, conv_impl=self.conv_impl)(x_dec)


class DecCombiner(nn.Module):
  """Official `DecCombinerCell`: Conv1x1([s, z])."""
  features: int
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, s, z):
    return Conv2D(self.features, 1, use_bias=True, conv_impl=self.conv_impl)(jnp.concatenate([s, z], axis=-1))


# ----------------------------------------------------------------------------------------------
# Posterior flows (paper Sec. 3.2 "normalizing flows"; official model.py `CellAR`, `PairedCellAR`,
# neural_ar_operations.py `ARInvertedResidual`, `ELUConv`).
# ----------------------------------------------------------------------------------------------


class ARInvertedResidual(nn.Module):
  """Masked Conv3x3(E n_z, zero diagonal) - ELU - masked DWConv5x5 - ELU: features of the earlier latents."""
  expansion: int = 6
  kernel_size: int = 5
  mirror: bool = False
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, z):  # z: [B, H, W, n_z] -> [B, H, W, E n_z]
    hidden = int(round(z.shape[-1] * self.expansion))
    h = Conv2D(hidden, 3, padding=1, masked=True, zero_diag=True, mirror=self.mirror, conv_impl=self.conv_impl)(z)
    h = jax.nn.elu(h)
    h = Conv2D(hidden, self.kernel_size, padding=(self.kernel_size - 1) // 2, groups=hidden, masked=True,
               zero_diag=False, mirror=self.mirror, conv_impl=self.conv_impl)(h)
    return jax.nn.elu(h)


class CellAR(nn.Module):
  """Volume-preserving autoregressive flow cell: z' = z - mu(z), mu autoregressive in (raster, channel) order.

  mu = MaskedConv1x1(ELU(ARInvertedResidual(z))), its weight norm scaled by 0.1 so it starts near 0.
  dz'_i/dz_j = 0 for j after i and 1 on the diagonal, so log|det dz'/dz| = 0. `mirror` reverses the spatial
  order. As in the official code the cell sees only z, not the encoder features.
  """
  mirror: bool = False
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, z):  # z: [B, H, W, n_z]
    h = ARInvertedResidual(mirror=self.mirror, conv_impl=self.conv_impl)(z)
    mu = Conv2D(z.shape[-1], 1, use_bias=True, masked=True, zero_diag=False, mirror=self.mirror,
                weight_init_coeff=0.1)(jax.nn.elu(h))
    return z - mu, jnp.zeros(z.shape[:1], z.dtype)  # [B, H, W, n_z], log_det [B]


class PairedCellAR(nn.Module):
  """Two `CellAR`s, the second mirrored (official `PairedCellAR`).  Returns (z', log_det [B])."""
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, z):
    z, log_det1 = CellAR(mirror=False, conv_impl=self.conv_impl)(z)
    z, log_det2 = CellAR(mirror=True, conv_impl=self.conv_impl)(z)
    return z, log_det1 + log_det2
