"""Locally masked convolution (Jain, Abbeel & Pathak 2020, LMConv, Sec. 3.1, Eq. 2-3).

An ordinary convolution applies the same kernel at every output location. A locally masked convolution
applies, at output location p, the kernel multiplied by a binary mask M_p over the k x k window:

    out[b, p, :] = bias + sum_{o in window} M_p[o] * x[b, p + d*o, :] @ W[o]          (d: dilation)

so the mask is shared by the batch and the channels and varies over locations. For an autoregressive
order, M_p[o] = 1 iff pixel p + d*o is generated before p (`kernel_masks`); the first layer excludes the
centre (mask "A"), later layers include it ("B"), so that the output at p never sees pixel p or later
pixels of the order.

The official code (ajayjain/lmconv, locally_masked_convolution.py) builds the im2col patch tensor
[B, k*k*C_in, H*W], multiplies it by the mask and does one matrix product, recomputing the patches in a
custom backward. Here the same arithmetic is regrouped around the output side instead (`method="taps"`):

    Y = x @ [W[o] for o in window]                      one GEMM: [B*H*W, C_in] x [C_in, k*k*C_out]
    out[p] = sum_o M_p[o] * Y[p + d*o, o, :]             a masked sum of k*k shifted slices

which never builds the k*k*C_in patch tensor; the backward needs only x and the masks (the shifted masked
sum is linear in Y), so nothing large is stored for it. When C_in < C_out the patch tensor is the smaller
one and `method="patches"` (explicit im2col, masked, one GEMM) is used instead. Both equal `lax.conv`
when every mask is all ones (tested).
"""
import functools

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.autoregressive import orders as orders_lib


def kernel_masks(order, height, width, kernel_size=3, dilation=1, include_center=True, xp=np):
  """Per-location kernel masks for a generation order (LMConv Sec. 3.1; official `masking.kernel_masks`).

  mask[r, c, i, j] = 1 iff the pixel (r + d*(i - k//2), c + d*(j - k//2)) lies inside the image and is
  generated before (r, c); the centre tap is `include_center` (False for the first layer, "A"; True for
  later layers, "B"). Taps outside the image are 0 (they see zero padding anyway).

  Args:
    order: int [H*W, 2] (row, col) generation order (numpy, or traced jax array with xp=jax.numpy).
    xp: numpy (static masks, computed once) or jax.numpy (traced orders).
  Returns:
    float32 [H, W, k, k].
  """
  if kernel_size % 2 != 1:
    raise ValueError(f"kernel_size must be odd, got {kernel_size}.")
  half = kernel_size // 2
  rank = orders_lib.rank_map(order, height, width, xp=xp)  # [H, W]
  pad = half * dilation
  big = height * width  # rank of the padding: never "before" anything
  rank_pad = xp.pad(rank, pad, constant_values=big)  # [H + 2 pad, W + 2 pad]
  taps = []
  for i in range(kernel_size):
    for j in range(kernel_size):
      neighbour = rank_pad[i * dilation:i * dilation + height, j * dilation:j * dilation + width]
      taps.append(neighbour < rank)
  masks = xp.stack(taps, axis=-1).reshape(height, width, kernel_size, kernel_size)
  center = xp.zeros((kernel_size, kernel_size), bool)
  if xp is np:
    center[half, half] = True
  else:
    center = center.at[half, half].set(True)
  masks = xp.where(center, include_center, masks)
  return masks.astype(xp.float32)


def order_masks(order, height, width, kernel_size=3, max_dilation=2, xp=np):
  """The three mask sets of the LMConv network (official `get_masks`): first layer ("A", centre excluded),
  later layers ("B"), and dilated later layers ("B", dilation `max_dilation`).  Each float32 [H, W, k, k]."""
  return (kernel_masks(order, height, width, kernel_size, 1, False, xp),
          kernel_masks(order, height, width, kernel_size, 1, True, xp),
          kernel_masks(order, height, width, kernel_size, max_dilation, True, xp))


def _window(x_padded, offset, height, width):
  """The slice of a padded [B, H + 2p, W + 2p, ...] array aligned with a tap at `offset` = (p + d*di, p + d*dj)."""
  return x_padded[:, offset[0]:offset[0] + height, offset[1]:offset[1] + width]


def _shifted_masked_sum(y, mask, offsets, pad):
  """out[q] = sum_t mask[q, t] * y[q + o_t, t].  y [B, H, W, T, C], mask [(B,) H, W, T] -> [B, H, W, C]."""
  h, w = y.shape[1:3]
  y = jnp.pad(y, ((0, 0), (pad, pad), (pad, pad), (0, 0), (0, 0)))
  out = 0.0
  for t, offset in enumerate(offsets):
    out = out + mask[..., t, None] * _window(y, offset, h, w)[..., t, :]
  return out


def _shifted_masked_sum_adjoint(g, mask, offsets, pad):
  """Adjoint of `_shifted_masked_sum`: dy[q, t] = mask[q - o_t, t] * g[q - o_t].  -> [B, H, W, T, C]."""
  h, w = g.shape[1:3]
  gm = jnp.pad(g[..., None, :] * mask[..., None], ((0, 0), (pad, pad), (pad, pad), (0, 0), (0, 0)))
  return jnp.stack([_window(gm, (2 * pad - o[0], 2 * pad - o[1]), h, w)[..., t, :] for t, o in enumerate(offsets)],
                   axis=3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _taps_conv(x, taps, mask, offsets, pad):
  """sum over taps t of mask[..., t] * (x @ taps[t]) shifted by offsets[t].  taps [T, C_in, C_out]."""
  return _taps_conv_fwd(x, taps, mask, offsets, pad)[0]


def _taps_conv_fwd(x, taps, mask, offsets, pad):
  b, h, w, c_in = x.shape
  n, _, c_out = taps.shape
  w_all = taps.transpose(1, 0, 2).reshape(c_in, n * c_out)  # [C_in, T*C_out]
  y = (x.reshape(-1, c_in) @ w_all).reshape(b, h, w, n, c_out)  # one GEMM
  # Residuals: only the input, the kernel and the masks; the T-fold product y is not kept.
  return _shifted_masked_sum(y, mask, offsets, pad), (x, taps, mask)


def _taps_conv_bwd(offsets, pad, res, g):
  x, taps, mask = res
  c_in = x.shape[-1]
  n, _, c_out = taps.shape
  dy = _shifted_masked_sum_adjoint(g, mask, offsets, pad).reshape(-1, n * c_out)  # [B*H*W, T*C_out]
  w_all = taps.transpose(1, 0, 2).reshape(c_in, n * c_out)
  dx = (dy @ w_all.T).reshape(x.shape)
  d_taps = (x.reshape(-1, c_in).T @ dy).reshape(c_in, n, c_out).transpose(1, 0, 2)
  return dx, d_taps, jnp.zeros_like(mask)  # masks are constants of the order: no gradient


_taps_conv.defvjp(_taps_conv_fwd, _taps_conv_bwd)


def locally_masked_conv2d(x, kernel, mask, dilation=1, method="auto"):
  """Locally masked 2-D convolution, stride 1, "same" zero padding.

  Args:
    x: [B, H, W, C_in].
    kernel: [k, k, C_in, C_out] (HWIO, as `lax.conv` with dimension numbers NHWC/HWIO/NHWC).
    mask: [H, W, k, k] (shared by the batch) or [B, H, W, k, k] (one order per example); any real values
      are allowed (binary for LMConv). A concrete numpy mask is inspected: taps that are zero at every
      location (e.g. the row below for an S-curve) are left out of the computation altogether.
    dilation: kernel dilation d.
    method: "taps" (masked sum of shifted per-tap products), "patches" (masked im2col + one GEMM) or
      "auto" (patches when C_in < C_out, else taps). All give the same result.
  Returns:
    [B, H, W, C_out].
  """
  b, h, w, c_in = x.shape
  k = kernel.shape[0]
  c_out = kernel.shape[-1]
  if kernel.shape[:3] != (k, k, c_in):
    raise ValueError(f"kernel shape {kernel.shape} does not match input channels {c_in}.")
  if mask.shape[-4:] != (h, w, k, k):
    raise ValueError(f"mask shape {mask.shape} must end with (H, W, k, k) = {(h, w, k, k)}.")
  pad = (k // 2) * dilation
  flat_mask = mask.reshape(mask.shape[:-2] + (k * k,))
  live = list(range(k * k))
  if isinstance(mask, np.ndarray):  # static mask: drop the taps no location uses
    live = [t for t in live if np.any(flat_mask[..., t] != 0)]
    if not live:
      return jnp.zeros((b, h, w, c_out), x.dtype)
  flat_mask = jnp.asarray(flat_mask[..., np.array(live)], x.dtype)  # [(B,) H, W, T]
  taps = kernel.reshape(k * k, c_in, c_out)[np.array(live)]  # [T, C_in, C_out]
  offsets = tuple((pad + dilation * (t // k - k // 2), pad + dilation * (t % k - k // 2)) for t in live)
  if method == "auto":
    method = "patches" if c_in < c_out else "taps"
  if method == "taps":
    return _taps_conv(x, taps, flat_mask, offsets, pad)
  if method == "patches":
    xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    patches = jnp.stack([_window(xp, o, h, w) for o in offsets], axis=3)  # [B, H, W, T, C_in]
    return jnp.einsum("bhwtc,tcn->bhwn", patches * flat_mask[..., None], taps)
  raise ValueError(f"unknown method {method!r}; expected 'auto', 'taps' or 'patches'.")


# PyTorch's default Conv2d / Linear initialisation, which the official code uses: kernel
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a=sqrt(5)) and the same range for the bias.
# Non-zero biases matter here: a pixel whose first-layer mask is empty (the first pixel of the order)
# gets the bias alone, and with zero biases its channels are all equal, so positional normalisation divides
# by sqrt(eps) and the gradients explode through the stack of normalisations.
TORCH_KERNEL_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in):
  bound = 1.0 / np.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class LocallyMaskedConv(nn.Module):
  """Locally masked convolution layer: `locally_masked_conv2d(x, kernel, mask) + bias`.

  `mask_weight=True` adds the official `--learn_weight_for_masks` term sum_o M_p[o] * V[o] (a learned
  per-tap bias that tells the layer which neighbours it sees).
  """
  features: int
  kernel_size: int = 3
  dilation: int = 1
  use_bias: bool = True
  mask_weight: bool = False
  method: str = "auto"
  kernel_init: nn.initializers.Initializer = TORCH_KERNEL_INIT

  @nn.compact
  def __call__(self, x, mask, tap_perm=None):  # x [B, H, W, C_in], mask [(B,) H, W, k, k]
    """tap_perm: optional int [k*k]; the kernel is used with its taps permuted, W'[t] = W[tap_perm[t]]
    (to run a rotated/flipped order in the base order's frame, see `orders.symmetry_maps`)."""
    k = self.kernel_size
    fan_in = k * k * x.shape[-1]
    kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
    if tap_perm is not None:
      kernel = jnp.take(kernel.reshape((k * k,) + kernel.shape[2:]), tap_perm, axis=0).reshape(kernel.shape)
    y = locally_masked_conv2d(x, kernel.astype(x.dtype), mask, self.dilation, self.method)
    if self.mask_weight:
      v = self.param("mask_kernel", nn.initializers.zeros, (k, k, self.features), jnp.float32)
      if tap_perm is not None:
        v = jnp.take(v.reshape(k * k, -1), tap_perm, axis=0).reshape(v.shape)
      y = y + jnp.einsum("...hwij,ijn->...hwn", mask.astype(x.dtype), v.astype(x.dtype))
    if self.use_bias:
      y = y + self.param("bias", torch_bias_init(fan_in), (self.features,), jnp.float32).astype(x.dtype)
    return y  # [B, H, W, features]
