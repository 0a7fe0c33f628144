"""Convolution kernels, chosen per backend in one place.

Model code calls these by what they compute; `impl` says how:
  "native": `lax.conv_general_dilated` (grouped, strided, input-dilated as lax does them): what GPU and TPU
            compilers are built for.
  "matmul": the rewrites of `jaxgen.ops.matmul` (im2col, shift-add, Winograd, polyphase, shifted sums, each
            with hand-written gradients where autodiff's would be slow), which XLA:CPU runs several times faster.
  "auto":   "matmul" on CPU, "native" elsewhere (`jax.default_backend()` at trace time).
Every model takes `conv_impl` (default "auto") in `config.model`, so `--config.model.conv_impl=native` forces a
choice for an experiment. Both give the same values and gradients to float round-off (`tests/ops`). Layout
NHWC, kernels HWIO, correlation as lax; results are in the dtype of the inputs; `precision` goes to lax.
"""
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.ops import matmul

IMPLS = ("auto", "native", "matmul")


def check_impl(impl):
  """Raises ValueError unless impl is one of IMPLS (call it where a config's value enters a model)."""
  if impl not in IMPLS:
    raise ValueError(f"conv_impl must be one of {IMPLS}, got {impl!r}; set config.model.conv_impl to one of them.")


def resolve(impl):
  """"native" or "matmul" for impl, resolving "auto" by `jax.default_backend()`."""
  check_impl(impl)
  if impl == "auto":
    return "matmul" if jax.default_backend() == "cpu" else "native"
  return impl


def _padding(padding):
  """((y0, y1), (x0, x1)) from an int p or that pair of pairs."""
  if isinstance(padding, int):
    return (padding, padding), (padding, padding)
  (py0, py1), (px0, px1) = padding
  return (py0, py1), (px0, px1)


def conv2d(x, w, padding=0, stride=1, groups=1, taps=None, impl="auto", precision=None, second_order=False):
  """Correlation of x [B, H, W, I] with w [kh, kw, I / groups, O], zero padding p or ((y0, y1), (x0, x1)),
  square stride:  `lax.conv_general_dilated(x, w, (s, s), padding, feature_group_count=groups)` -> [B, H', W', O].

  taps: optional static tuple of the (i, j) kernel positions that may be non-zero (w is zero at the others, as in
  autoregressively masked kernels); the matmul forms skip the rest. second_order: the caller takes second-order
  gradients through it (R1, path length); the matmul forms then avoid XLA:CPU's convolution (`matmul.conv2d`).
  """
  padding = _padding(padding)
  if resolve(impl) == "native":
    return matmul.lax_conv(x, w, padding, stride, groups, precision=precision)
  return matmul.conv2d(x, w, padding, stride, groups, taps, precision, second_order)


def upsample_conv2d(x, w, up, padding=0, groups=1, impl="auto", precision=None, second_order=False):
  """Correlation of x dilated by `up` (up - 1 zeros between pixels) with w, zero padding as `conv2d`:
  `lax.conv_general_dilated(x, w, (1, 1), padding, lhs_dilation=(up, up), feature_group_count=groups)`.

  The transposed convolution of upsampling layers; "matmul" runs it in polyphase form at the input resolution.
  """
  padding = _padding(padding)
  if resolve(impl) == "native":
    return matmul.lax_conv(x, w, padding, groups=groups, lhs_dilation=up, precision=precision)
  return matmul.conv_transpose_polyphase(x, w, up, padding, groups, precision, second_order)


def locally_masked_conv2d(x, kernel, mask, dilation=1, impl="auto", precision=None):
  """Locally masked correlation (Jain et al. 2020, LMConv Eq. 2-3), stride 1, "same" zero padding:
  out[b, p] = sum_{o in window} mask[(b,) p, o] * x[b, p + d*o] @ kernel[o].

  x [B, H, W, C_in], kernel [k, k, C_in, C_out], mask [H, W, k, k] (shared by the batch) or [B, H, W, k, k];
  -> [B, H, W, C_out]. With an all-ones mask it is `lax.conv_general_dilated` with rhs_dilation d. A concrete
  numpy mask is inspected: taps that are zero at every location are left out of the computation altogether.
  "native": the official code's form, masked im2col patches [B, H, W, T, C_in] and one GEMM. "matmul": the same
  arithmetic regrouped around the output side when C_in >= C_out, Y = x @ [kernel[o] for o] (one GEMM,
  [B H W, C_in] x [C_in, T C_out]), out[p] = sum_o mask[p, o] Y[p + d o, o], with a hand-written backward that
  keeps only x and the masks, never the T-fold patches; the patch form when C_in < C_out (smaller there).
  """
  b, h, w, c_in = x.shape
  k = kernel.shape[0]
  c_out = kernel.shape[-1]
  if kernel.shape[:3] != (k, k, c_in):
    raise ValueError(f"kernel shape {kernel.shape} does not match input channels {c_in}.")
  if mask.shape[-4:] != (h, w, k, k):
    raise ValueError(f"mask shape {mask.shape} must end with (H, W, k, k) = {(h, w, k, k)}.")
  use_taps = resolve(impl) == "matmul" and c_in >= c_out
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
  if use_taps:
    return matmul.masked_taps_conv(x, taps, flat_mask, offsets, pad, precision)
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  patches = jnp.stack([matmul.window(xp, o, h, w) for o in offsets], axis=3)  # [B, H, W, T, C_in]
  return jnp.einsum("bhwtc,tcn->bhwn", patches * flat_mask[..., None], taps, precision=precision)
