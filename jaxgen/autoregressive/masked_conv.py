"""Locally masked convolution (Jain, Abbeel & Pathak 2020, LMConv, Sec. 3.1, Eq. 2-3).

An ordinary convolution applies the same kernel at every output location. A locally masked convolution
applies, at output location p, the kernel multiplied by a binary mask M_p over the k x k window:

    out[b, p, :] = bias + sum_{o in window} M_p[o] * x[b, p + d*o, :] @ W[o]          (d: dilation)

so the mask is shared by the batch and the channels and varies over locations. For an autoregressive
order, M_p[o] = 1 iff pixel p + d*o is generated before p (`kernel_masks`); the first layer excludes the
centre (mask "A"), later layers include it ("B"), so that the output at p never sees pixel p or later
pixels of the order.

The official code (ajayjain/lmconv, locally_masked_convolution.py) builds the im2col patch tensor
[B, k*k*C_in, H*W], multiplies it by the mask and does one matrix product; `jaxgen.ops.locally_masked_conv2d`
does that ("native") or regroups the same arithmetic around the output side ("matmul", the CPU choice).
"""
from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import ops
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
  """Locally masked convolution layer: `ops.locally_masked_conv2d(x, kernel, mask) + bias`.

  `mask_weight=True` adds the official `--learn_weight_for_masks` term sum_o M_p[o] * V[o] (a learned
  per-tap bias that tells the layer which neighbours it sees).
  """
  features: int
  kernel_size: int = 3
  dilation: int = 1
  use_bias: bool = True
  mask_weight: bool = False
  conv_impl: str = "auto"  # jaxgen.ops
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
    y = ops.locally_masked_conv2d(x, kernel.astype(x.dtype), mask, self.dilation, impl=self.conv_impl)
    if self.mask_weight:
      v = self.param("mask_kernel", nn.initializers.zeros, (k, k, self.features), jnp.float32)
      if tap_perm is not None:
        v = jnp.take(v.reshape(k * k, -1), tap_perm, axis=0).reshape(v.shape)
      y = y + jnp.einsum("...hwij,ijn->...hwn", mask.astype(x.dtype), v.astype(x.dtype))
    if self.use_bias:
      y = y + self.param("bias", torch_bias_init(fan_in), (self.features,), jnp.float32).astype(x.dtype)
    return y  # [B, H, W, features]
