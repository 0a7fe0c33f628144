"""Convolutions rewritten as matmuls, shifted slices and adds: the forms XLA:CPU runs fast.

Each function equals a `lax.conv_general_dilated` call (stated in its docstring) in values and gradients, up to
float round-off; `tests/ops/test_conv.py` checks values, gradients and the second-order gradients R1 and path
length need. Why they exist: XLA:CPU runs the kernel gradient of its convolutions, grouped and input-dilated
convolutions, and convolutions padded by more than k // 2 through slow generic paths, while its dot is close to
peak. `conv2d` picks the form per shape; `jaxgen.ops` calls it only on CPU (or when a config forces "matmul").
Layout NHWC, kernels HWIO, correlation (no kernel flip), as lax. All compute in the dtype of their inputs;
`precision` goes to every dot and convolution.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def lax_conv(x, w, padding=((0, 0), (0, 0)), stride=1, groups=1, lhs_dilation=1, precision=None):
  """`lax.conv_general_dilated` in NHWC / HWIO with square strides and input dilation."""
  return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, lhs_dilation=(lhs_dilation, lhs_dilation),
                                      dimension_numbers=DIMENSION_NUMBERS, feature_group_count=groups,
                                      precision=precision)


def pad_hw(x, padding):
  """Zero-pad (or, for negative amounts, crop) the two spatial axes of [B, H, W, C] by ((y0, y1), (x0, x1))."""
  (py0, py1), (px0, px1) = padding
  if py0 == py1 == px0 == px1 == 0:
    return x
  return jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (py0, py1, 0), (px0, px1, 0), (0, 0, 0)))


def channel_matmul(x, w, precision=None):
  """x [..., C] @ w [C, D] -> [..., D], a 1x1 convolution, as a 2-D matmul over the flattened batch and space.

  Autodiff of the 2-D form gives the weight gradient as one (N, C)^T (N, D) matmul, which XLA:CPU runs about
  twice as fast as the rank-4 dot_general it emits for jnp.dot(x, w), and far faster than a 1x1 convolution's
  kernel gradient (a convolution plus transposes).
  """
  y = jnp.dot(x.reshape(-1, x.shape[-1]), w, precision=precision)
  return y.reshape(x.shape[:-1] + (w.shape[-1],))


def conv_im2col(x, w, padding=((0, 0), (0, 0)), stride=1, precision=None):
  """Correlation of x [B, H, W, I] with w [kh, kw, I, O] as one matmul (im2col): [B, H', W', O].

  patches[b, i, j, (u, v, c)] = pad(x)[b, stride i + u, stride j + v, c];  y = patches @ w.reshape(kh kw I, O).
  Same multiply-adds as the convolution (only kept outputs are computed for stride > 1). Forward, input gradient
  (g @ w^T, then overlapping adds) and kernel gradient (patches^T @ g) are 2-D matmuls, and so are the
  second-order terms of R1. StyleGAN2's 3x3, 512-channel layer at 32x32 (batch 8): forward + backward 1.45x
  faster than XLA:CPU's convolution, whose kernel gradient alone took ~4x the layer's forward.
  """
  kh, kw, c_in, c_out = w.shape
  x = pad_hw(x, padding)
  b, h, wd, _ = x.shape
  ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
  pieces = [x[:, u: u + stride * (ho - 1) + 1: stride, v: v + stride * (wo - 1) + 1: stride]
            for u in range(kh) for v in range(kw)]
  patches = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=-1)  # [B, H', W', kh kw I]
  return channel_matmul(patches, w.reshape(kh * kw * c_in, c_out), precision)


def conv_shift_add(x, w, padding=((0, 0), (0, 0)), precision=None):
  """Stride-1 correlation as one matmul and kh*kw shifted adds: [B, H, W, I] -> [B, H', W', O].

  P = x @ w (as [I, kh kw O]);  y[h, w] = sum_{i,j} pad(P)[h+i, w+j, (i, j)].
  Same arithmetic as the convolution, but the wide intermediate is P (kh kw O channels) instead of im2col's
  patches (kh kw I), so it is the form for many input and few output channels: Glow's zero-initialised output
  convolutions (512 -> 2C) run an order of magnitude faster than XLA:CPU's convolution, and only the small P is
  padded, never the wide input.
  """
  kh, kw, c_in, c_out = w.shape
  p = channel_matmul(x, w.transpose(2, 0, 1, 3).reshape(c_in, kh * kw * c_out), precision)  # [B, H, W, kh kw O]
  p = pad_hw(p, padding)
  h, wd = p.shape[1] - kh + 1, p.shape[2] - kw + 1
  # Each tap's O channels are a slice of P's last axis (not an axis of a 6-D reshape): the backward pass then
  # assembles dP in one pass instead of through a padded [B, H', W', kh, kw, O] tensor (Glow :bench step 7% faster
  # in an interleaved A/B).
  return sum(p[:, i:i + h, j:j + wd, (i * kw + j) * c_out:(i * kw + j + 1) * c_out]
             for i in range(kh) for j in range(kw))


def conv_taps(x, w, padding, taps, precision=None):
  """A stride-1 correlation over only the kernel taps `taps` (the others are zero in w), as one matmul of the
  concatenated shifted copies.  x [B, H, W, I], w [k, k, I, O] -> [B, H', W', O].

  For autoregressive masks: a raster-order 3x3 kernel has 5 live taps of 9 (the centre's channel mask is not
  all zero), so the contraction is 5 I instead of 9 I, and the kernel gradient is a plain 2-D matmul.
  """
  kh, kw = w.shape[:2]
  xp = pad_hw(x, padding)
  h_out, w_out = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
  cols = jnp.concatenate([xp[:, i:i + h_out, j:j + w_out, :] for i, j in taps], axis=-1)  # [B, H', W', T I]
  return channel_matmul(cols, jnp.concatenate([w[i, j] for i, j in taps], axis=0), precision)


# Winograd F(2x2, 3x3) (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks", Sec. 4.1):
# for a 4x4 input tile d and a 3x3 kernel g, the 2x2 correlation output is Y = A^T [(G g G^T) * (B^T d B)] A.
_WINO_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
_WINO_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
_WINO_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def _lincomb(terms, coefs):
  """sum_i coefs[i] * terms[i] for constant coefficients, skipping zeros and multiplications by +-1."""
  out = None
  for c, t in zip(coefs, terms):
    if c == 0:
      continue
    t = t if c == 1 else (-t if c == -1 else t * float(c))
    out = t if out is None else out + t
  return out


def conv3x3_winograd(x, w, padding=((1, 1), (1, 1)), precision=None):
  """Stride-1 correlation of x [B, H, W, I] with a 3x3 kernel w [3, 3, I, O], in Winograd F(2x2, 3x3) form.

  The padded input is cut into overlapping 4x4 tiles at stride 2 (one per 2x2 block of outputs) and transformed,
  V = B^T d B; the kernel is transformed, U = G g G^T [4, 4, I, O]; then 16 matmuls M_ab = V_ab @ U_ab over all
  tiles and the output transform Y = A^T M A. Mathematically equal to the convolution; 16 instead of 36
  multiply-adds per 2x2 outputs and channel pair, so forward, input gradient (dV = dM @ U^T) and kernel gradient
  (dU = V^T @ dM) each do 2.25x fewer FLOPs than im2col, all as batched matmuls. The transforms only add and
  halve (entries 0, +-1, +-1/2), so the result differs from direct convolution by float round-off (about 1e-6
  relative). Output height and width must be even.
  """
  b = x.shape[0]
  c_in, c_out = w.shape[2], w.shape[3]
  xp = pad_hw(x, padding)
  th, tw = (xp.shape[1] - 2) // 2, (xp.shape[2] - 2) // 2  # tiles per column / row
  # Input transform, rows then columns, with strided slices (their transposes are cheap interior pads).
  rows = [xp[:, u: u + 2 * th - 1: 2] for u in range(4)]  # [B, th, W + 2, I]
  v = []
  for a in range(4):
    va = _lincomb(rows, _WINO_BT[a])
    cols = [va[:, :, u: u + 2 * tw - 1: 2] for u in range(4)]  # [B, th, tw, I]
    v += [_lincomb(cols, _WINO_BT[c]) for c in range(4)]
  v = jnp.stack(v).reshape(16, b * th * tw, c_in)  # [16, T, I]
  wr = [_lincomb([w[u] for u in range(3)], _WINO_G[a]) for a in range(4)]  # [3, I, O] each
  u = jnp.stack([_lincomb([wa[k] for k in range(3)], _WINO_G[c]) for wa in wr for c in range(4)])  # [16, I, O]
  m = jax.lax.dot_general(v, u.astype(v.dtype), (((2,), (1,)), ((0,), (0,))), precision=precision)  # [16, T, O]
  return _wino_output(m.reshape(4, 4, b, th, tw, c_out))  # [B, H', W', O]


@jax.custom_vjp
def _wino_output(m):
  """Winograd output transform Y = A^T M A: m [4, 4, B, th, tw, O] -> y [B, 2 th, 2 tw, O].

  A custom VJP, because autodiff transposes the 16 slices into pads that XLA:CPU sums in one slow loop; the
  transpose written out (`_wino_output_t`, a gather of the four output phases) is several times faster.
  """
  _, _, b, th, tw, c = m.shape
  mr = [[_lincomb([m[a, c] for a in range(4)], _WINO_AT[p]) for c in range(4)] for p in range(2)]
  y = [jnp.stack([_lincomb(mr[p], _WINO_AT[q]) for q in range(2)], axis=3) for p in range(2)]  # [B, th, tw, 2, O]
  return jnp.stack(y, axis=2).reshape(b, 2 * th, 2 * tw, c)  # [B, th, 2, tw, 2, O] -> [B, H', W', O]


@jax.custom_vjp
def _wino_output_t(y):
  """The transpose of `_wino_output`: dM_ac = sum_pq A^T_pa A^T_qc dY_pq;
  y [B, 2 th, 2 tw, O] -> [4, 4, B, th, tw, O]."""
  b, h, w, c = y.shape
  y = y.reshape(b, h // 2, 2, w // 2, 2, c)
  yr = [[y[:, :, p, :, q] for q in range(2)] for p in range(2)]  # dY_pq [B, th, tw, O]
  ya = [[_lincomb([yr[p][q] for p in range(2)], _WINO_AT[:, a]) for q in range(2)] for a in range(4)]
  m = [jnp.stack([_lincomb(ya[a], _WINO_AT[:, cc]) for cc in range(4)]) for a in range(4)]  # [4, B, th, tw, O]
  return jnp.stack(m)


_wino_output.defvjp(lambda m: (_wino_output(m), None), lambda _, g: (_wino_output_t(g),))
_wino_output_t.defvjp(lambda y: (_wino_output_t(y), None), lambda _, g: (_wino_output(g),))


def _flip_transpose(w, groups):
  """The kernel of a convolution's input gradient: spatially flipped, in/out channels swapped per group."""
  kh, kw, in_g, out = w.shape
  w = w.reshape(kh, kw, in_g, groups, out // groups)
  w = jnp.transpose(w, (0, 1, 4, 3, 2)).reshape(kh, kw, out // groups, groups * in_g)
  return w[::-1, ::-1]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def grouped_conv2d(x, w, padding=((0, 0), (0, 0)), groups=1, precision=None):
  """Stride-1 XLA convolution with a custom VJP that keeps every convolution of the backward pass, and of the
  backward of the backward (R1, path length), in a form XLA:CPU runs fast:
    dL/dx = grouped_conv2d(g, flip(w)^T, padding k - 1 - p)    (itself one, so higher orders recurse)
    dL/dw = weight-gradient convolution of pad(x) (explicit pad behind an optimization barrier) with g.
  Why: XLA:CPU computes weight gradients of convolutions padded by more than k // 2 through a generic path
  about 50x slower than the usual one; autodiff of a valid convolution produces exactly that in R1's double
  backward (the input gradient is a "full" convolution, padding k - 1).
  """
  return lax_conv(x, w, padding, groups=groups, precision=precision)


def _grouped_conv2d_fwd(x, w, padding, groups, precision):
  return grouped_conv2d(x, w, padding, groups, precision), (x, w)


def _grouped_conv2d_bwd(padding, groups, precision, res, g):
  x, w = res
  kh, kw = w.shape[:2]
  (py0, py1), (px0, px1) = padding
  gx = grouped_conv2d(g, _flip_transpose(w, groups), ((kh - 1 - py0, kh - 1 - py1), (kw - 1 - px0, kw - 1 - px1)),
                      groups, precision)
  xp = jax.lax.optimization_barrier(pad_hw(x, padding))  # no folding into the convolution
  gw = jax.vjp(lambda v: lax_conv(xp, v, groups=groups, precision=precision), w)[1](g)[0]
  return gx, gw


grouped_conv2d.defvjp(_grouped_conv2d_fwd, _grouped_conv2d_bwd)


def _all_taps(kh, kw):
  return tuple((i, j) for i in range(kh) for j in range(kw))


def _shifted_sum(xp, w, h_out, w_out, taps):
  """sum_{(i,j) in taps} xp[:, i:i+h_out, j:j+w_out, :] * w[i, j, 0]: a depthwise correlation of the padded input
  restricted to the kernel taps `taps` (the others are zero)."""
  (i, j), *rest = taps
  out = xp[:, i:i + h_out, j:j + w_out, :] * w[i, j, 0]
  for i, j in rest:
    out = out + xp[:, i:i + h_out, j:j + w_out, :] * w[i, j, 0]
  return out


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv_shifted(x, w, padding, taps=None):
  """Depthwise stride-1 correlation as a sum of kh*kw shifted, channel-scaled copies of the input.

  Equals `lax.conv_general_dilated(..., feature_group_count=C)`: x [B, H, W, C], w [kh, kw, 1, C] ->
  [B, H', W', C]. On XLA:CPU grouped convolutions and their gradients are several times slower than this form,
  whose gradient is again a shifted sum (input) and one variadic reduction producing all kernel taps in a
  single pass (kernel). `taps`: a static tuple of the (i, j) kernel positions that may be non-zero (None: all);
  a masked (autoregressive) kernel passes its live taps, the others cost nothing and get a zero gradient.
  First-order reverse mode only (no forward mode, no second order): use "native" for `jax.jacfwd`.
  """
  kh, kw = w.shape[:2]
  xp = pad_hw(x, padding)
  return _shifted_sum(xp, w, xp.shape[1] - kh + 1, xp.shape[2] - kw + 1, taps or _all_taps(kh, kw))


def _depthwise_fwd(x, w, padding, taps):
  return depthwise_conv_shifted(x, w, padding, taps), (x, w)


def _depthwise_bwd(padding, taps, res, g):
  x, w = res
  kh, kw = w.shape[:2]
  taps = taps or _all_taps(kh, kw)
  (py0, py1), (px0, px1) = padding
  # dx is the full correlation of g with the flipped kernel.
  gp = pad_hw(g, ((kh - 1 - py0, kh - 1 - py1), (kw - 1 - px0, kw - 1 - px1)))
  dx = _shifted_sum(gp, w[::-1, ::-1], x.shape[1], x.shape[2], tuple((kh - 1 - i, kw - 1 - j) for i, j in taps))
  # Kernel taps in channel-major layout [C, B, H, W], so the reduction runs over contiguous memory: the NVAE
  # training step measured ~12% faster on XLA:CPU than with the reduction over the leading axes of [B, H, W, C].
  xp = pad_hw(x, padding).transpose(3, 0, 1, 2)
  gt = g.transpose(3, 0, 1, 2)
  h_out, w_out = g.shape[1], g.shape[2]
  prods = tuple(xp[:, :, i:i + h_out, j:j + w_out] * gt for i, j in taps)
  sums = jax.lax.reduce(prods, tuple(jnp.zeros((), g.dtype) for _ in prods),
                        lambda a, b: tuple(u + v for u, v in zip(a, b)), (1, 2, 3))
  by_tap, zero = dict(zip(taps, sums)), jnp.zeros(w.shape[-1:], g.dtype)
  dw = jnp.stack([by_tap.get(tap, zero) for tap in _all_taps(kh, kw)]).reshape(kh, kw, 1, -1).astype(w.dtype)
  return dx, dw


depthwise_conv_shifted.defvjp(_depthwise_fwd, _depthwise_bwd)


# Winograd when the batch has at least this many 2x2 output tiles: below, its 16 matmuls are too small to beat one
# im2col matmul. Measured on 2 CPU cores, 512 channels, forward + backward against im2col: 1.7x faster at 32x32
# (batch 8, 2048 tiles), 1.3x at 16x16 (512 tiles), 1.3x slower at 8x8 (128 tiles).
WINOGRAD_MIN_TILES = 512
# ... and at least this many channel pairs I * O: Winograd's transforms cost O(I + 4 O) per tile against its
# 16 I O multiply-adds. Forward + backward, batch 8 at 32x32: 32 -> 32 channels 1.3x slower than XLA's
# convolution, 32 -> 100 2x faster; 64 -> 64 at 16x16 1.3x faster.
WINOGRAD_MIN_CHANNEL_PAIRS = 2048
# Dense convolutions with input channels in this range and at most twice as many output channels (and no Winograd)
# stay XLA convolutions: XLA:CPU's own convolution is the fastest there (forward + backward at batch 8: 16 -> 16
# and 32 -> 32 channels at 32x32 3x and 2x faster than im2col), while with few input channels and many outputs
# (Glow's C/2 -> 256: 24 -> 256 at 8x8, 5x slower than im2col) or many channels (StyleGAN2's 512) im2col wins.
XLA_CONV_CHANNELS = (16, 64)


def _use_winograd(x, w, padding, stride):
  kh, kw, c_in, c_out = w.shape
  (py0, py1), (px0, px1) = padding
  ho, wo = x.shape[1] + py0 + py1 - 2, x.shape[2] + px0 + px1 - 2
  return (kh == kw == 3 and stride == 1 and ho % 2 == 0 and wo % 2 == 0 and c_in * c_out >= WINOGRAD_MIN_CHANNEL_PAIRS
          and x.shape[0] * (ho // 2) * (wo // 2) >= WINOGRAD_MIN_TILES)


def conv2d(x, w, padding=((0, 0), (0, 0)), stride=1, groups=1, taps=None, precision=None, second_order=False):
  """Correlation of x [B, H, W, I] with w [kh, kw, I / groups, O], zero padding ((y0, y1), (x0, x1)), stride s,
  in the form XLA:CPU runs fastest for its shape. Equals `lax_conv(x, w, padding, stride, groups)`.

  Dense (groups = 1): 1x1 -> `channel_matmul`; masked kernels with static live `taps` -> `conv_taps`;
  at most half as many output as input channels -> `conv_shift_add`; 3x3 with enough tiles and channels ->
  `conv3x3_winograd`; input channels in `XLA_CONV_CHANNELS` and at most twice as many outputs -> XLA's convolution;
  else `conv_im2col` (strided: only the kept outputs).
  Depthwise (groups = I = O) -> `depthwise_conv_shifted`. Other grouped convolutions (StyleGAN2's fused modulated
  convolution) -> `grouped_conv2d` (stride 1) or `conv_strided_polyphase`.
  second_order: the caller differentiates twice (StyleGAN2's R1 and path-length terms): never XLA's convolution,
  whose second-order gradients XLA:CPU runs several times slower than the matmul forms' (StyleGAN2 quickstart,
  32-64 channels: R1 steps 4.7 s against 0.6 s, path-length steps 1.4 s against 0.5 s).
  """
  kh, kw, _, c_out = w.shape
  c_in = x.shape[-1]
  if groups == 1:
    if kh == kw == 1:
      return channel_matmul(pad_hw(x, padding)[:, ::stride, ::stride], w[0, 0], precision)
    if stride == 1:
      if taps is not None:
        return conv_taps(x, w, padding, taps, precision)
      # Few outputs: shift-add's one matmul beats Winograd, whose input transform alone costs O(C_in) per tile
      # (Glow :bench, its 256 -> 12 output convolutions at 16x16: 1.3x slower step with Winograd, BENCHMARKS.md).
      if 2 * c_out <= c_in:
        return conv_shift_add(x, w, padding, precision)
      if _use_winograd(x, w, padding, stride):
        return conv3x3_winograd(x, w, padding, precision)
    if not second_order and XLA_CONV_CHANNELS[0] <= c_in < XLA_CONV_CHANNELS[1] and c_out <= 2 * c_in:
      return lax_conv(x, w, padding, stride, precision=precision)
    return conv_im2col(x, w, padding, stride, precision)
  if stride == 1:
    if groups == c_in == c_out:
      return depthwise_conv_shifted(x, w, padding, taps)
    return grouped_conv2d(x, w, padding, groups, precision)
  return conv_strided_polyphase(pad_hw(x, padding), w, stride, groups, precision, second_order)


def conv_strided_polyphase(x, w, stride, groups=1, precision=None, second_order=False):
  """Equals the valid correlation `lax_conv(x, w, stride=stride, groups=groups)`, computed as a sum over the
  stride*stride input phases of stride-1 convolutions with the taps of each phase.

  out[i] = sum_u w[u] x[s i + u] = sum_r sum_a w[r + s a] x_r[i + a],  x_r[j] = x[r + s j].
  Why: the gradient of a strided convolution w.r.t. its input is an input-dilated convolution, which XLA:CPU
  runs through a slow generic path; here forward, backward and R1's double backward are all stride-1
  convolutions plus strided slices (whose gradients are cheap interior pads). Same multiply-adds.
  """
  kh, kw = w.shape[:2]
  h, wd = x.shape[1], x.shape[2]
  h_out, w_out = (h - kh) // stride + 1, (wd - kw) // stride + 1
  out = None
  for ry in range(min(stride, kh)):
    for rx in range(min(stride, kw)):
      wk = w[ry::stride, rx::stride]  # [n_y, n_x, I, O]
      n_y, n_x = wk.shape[:2]
      xs = x[:, ry: ry + stride * (h_out + n_y - 1): stride, rx: rx + stride * (w_out + n_x - 1): stride]
      y = conv2d(xs, wk, groups=groups, precision=precision, second_order=second_order)  # [B, h_out, w_out, O]
      out = y if out is None else out + y
  return out


def _polyphase_taps(k, up, pad0):
  """Per output phase r, the (tap offset d, kernel index) pairs of an input-dilated correlation along one axis.

  With z the input dilated by `up` (z[up*i] = x[i]) and padded by pad0 on the left, the correlation output is
  y[m] = sum_k w[k] z[m + k - pad0]; for m = up*j + r only the k with (r + k - pad0) % up == 0 contribute, reading
  x[j + d] with d = (r + k - pad0) / up.
  """
  taps = [[((r + kk - pad0) // up, kk) for kk in range(k) if (r + kk - pad0) % up == 0] for r in range(up)]
  ds = [d for t in taps for d, _ in t]
  return taps, min(ds), max(ds)


def conv_transpose_polyphase(x, w, up, padding, groups=1, precision=None, second_order=False):
  """Equals `lax_conv(x, w, padding, groups=groups, lhs_dilation=up)`, computed in polyphase form: for each of
  the up*up output phases, one dense convolution at the input resolution with only the kernel taps that phase
  reads, then an interleave (depth-to-space).

  Why: XLA:CPU runs input-dilated convolutions (and their gradients) through a slow generic path (about 30x
  slower than this for a 3x3, 512-channel StyleGAN2 layer at 16->32, forward + backward); here every phase is a
  plain convolution and the phases together do exactly the k*k multiply-adds per input pixel of a transposed
  convolution, none on inserted zeros.
  """
  kh, kw, _, c_out = w.shape
  b, h, wd, _ = x.shape
  (pad_y0, pad_y1), (pad_x0, pad_x1) = padding
  taps_y, dy0, dy1 = _polyphase_taps(kh, up, pad_y0)
  taps_x, dx0, dx1 = _polyphase_taps(kw, up, pad_x0)
  out_h = (h - 1) * up + 1 + pad_y0 + pad_y1 - kh + 1
  out_w = (wd - 1) * up + 1 + pad_x0 + pad_x1 - kw + 1
  jh, jw = -(-out_h // up), -(-out_w // up)  # rows / columns per phase
  lo_y, lo_x = max(-dy0, 0), max(-dx0, 0)
  xp = jnp.pad(x, ((0, 0), (lo_y, max(jh + dy1 - h, 0)), (lo_x, max(jw + dx1 - wd, 0)), (0, 0)))
  rows = []
  for ty in taps_y:
    cols = []
    for tx in taps_x:
      if not ty or not tx:  # a phase that reads no tap (only when up > kernel size) is all zeros
        cols.append(jnp.zeros((b, jh, jw, c_out), x.dtype))
        continue
      # Offsets d of one phase are consecutive (taps k = r - pad0 + up*d), so each phase is a correlation.
      kern = w[np.array([k for _, k in ty])][:, np.array([k for _, k in tx])]  # [n_y, n_x, I_g, O]
      y0, x0 = lo_y + ty[0][0], lo_x + tx[0][0]
      sl = xp[:, y0: y0 + jh + len(ty) - 1, x0: x0 + jw + len(tx) - 1]
      cols.append(conv2d(sl, kern, groups=groups, precision=precision, second_order=second_order))  # [B, jh, jw, O]
    rows.append(jnp.stack(cols, axis=3))  # [B, jh, jw, up_x, O]
  y = jnp.stack(rows, axis=2).reshape(b, jh * up, jw * up, c_out)  # [B, jh, up_y, jw, up_x, O] -> interleaved
  return y[:, :out_h, :out_w]  # [B, out_h, out_w, O]


def window(x_padded, offset, height, width):
  """The slice of a padded [B, H + 2p, W + 2p, ...] array aligned with a tap at `offset` = (p + d*di, p + d*dj)."""
  return x_padded[:, offset[0]:offset[0] + height, offset[1]:offset[1] + width]


def _shifted_masked_sum(y, mask, offsets, pad):
  """out[q] = sum_t mask[q, t] * y[q + o_t, t].  y [B, H, W, T, C], mask [(B,) H, W, T] -> [B, H, W, C]."""
  h, w = y.shape[1:3]
  y = jnp.pad(y, ((0, 0), (pad, pad), (pad, pad), (0, 0), (0, 0)))
  out = 0.0
  for t, offset in enumerate(offsets):
    out = out + mask[..., t, None] * window(y, offset, h, w)[..., t, :]
  return out


def _shifted_masked_sum_adjoint(g, mask, offsets, pad):
  """Adjoint of `_shifted_masked_sum`: dy[q, t] = mask[q - o_t, t] * g[q - o_t].  -> [B, H, W, T, C]."""
  h, w = g.shape[1:3]
  gm = jnp.pad(g[..., None, :] * mask[..., None], ((0, 0), (pad, pad), (pad, pad), (0, 0), (0, 0)))
  return jnp.stack([window(gm, (2 * pad - o[0], 2 * pad - o[1]), h, w)[..., t, :] for t, o in enumerate(offsets)],
                   axis=3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def masked_taps_conv(x, taps, mask, offsets, pad, precision=None):
  """A locally masked convolution regrouped around its output side: Y = x @ [taps[t] for t] (one GEMM,
  [B H W, C_in] x [C_in, T C_out]), out[q] = sum_t mask[q, t] Y[q + o_t, t], with a hand-written backward that
  keeps only x, the taps and the masks, never the T-fold product.
  x [B, H, W, C_in], taps [T, C_in, C_out], mask [(B,) H, W, T], offsets: T (dy, dx) into the input padded by
  `pad`.  -> [B, H, W, C_out].
  """
  return _taps_conv_fwd(x, taps, mask, offsets, pad, precision)[0]


def _taps_conv_fwd(x, taps, mask, offsets, pad, precision):
  b, h, w, c_in = x.shape
  n, _, c_out = taps.shape
  w_all = taps.transpose(1, 0, 2).reshape(c_in, n * c_out)  # [C_in, T*C_out]
  y = channel_matmul(x, w_all, precision).reshape(b, h, w, n, c_out)  # one GEMM
  # Residuals: only the input, the kernel and the masks; the T-fold product y is not kept.
  return _shifted_masked_sum(y, mask, offsets, pad), (x, taps, mask)


def _taps_conv_bwd(offsets, pad, precision, res, g):
  x, taps, mask = res
  c_in = x.shape[-1]
  n, _, c_out = taps.shape
  dy = _shifted_masked_sum_adjoint(g, mask, offsets, pad).reshape(-1, n * c_out)  # [B*H*W, T*C_out]
  w_all = taps.transpose(1, 0, 2).reshape(c_in, n * c_out)
  dx = jnp.dot(dy, w_all.T, precision=precision).reshape(x.shape)
  d_taps = jnp.dot(x.reshape(-1, c_in).T, dy, precision=precision).reshape(c_in, n, c_out).transpose(1, 0, 2)
  return dx, d_taps, jnp.zeros_like(mask)  # masks are constants of the order: no gradient


masked_taps_conv.defvjp(_taps_conv_fwd, _taps_conv_bwd)
