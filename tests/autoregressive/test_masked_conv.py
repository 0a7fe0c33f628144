"""Locally masked convolution: masks equal a direct per-pixel construction, the layer equals lax.conv with
all-ones masks and a per-location convolution with the masked kernel, and its custom gradient is exact."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import ops
from jaxgen.autoregressive import masked_conv
from jaxgen.autoregressive import orders


def _reference_masks(order, h, w, k, dilation, include_center):
  """Direct construction: walk the order, mark window taps already generated (official kernel_masks)."""
  half = k // 2
  masks = np.zeros((h, w, k, k), np.float32)
  done = set()
  for r, c in order:
    for i, j in itertools.product(range(k), repeat=2):
      if (r + (i - half) * dilation, c + (j - half) * dilation) in done:
        masks[r, c, i, j] = 1.0
    masks[r, c, half, half] = float(include_center)
    done.add((int(r), int(c)))
  return masks


def _reference_conv(x, kernel, mask, dilation):
  """out[b, p] = sum_o mask[p, o] x[b, p + d o] W[o], location by location in numpy float64."""
  x, kernel, mask = (np.asarray(a, np.float64) for a in (x, kernel, mask))
  b, h, w, _ = x.shape
  k = kernel.shape[0]
  half = k // 2
  if mask.ndim == 4:
    mask = np.broadcast_to(mask, (b,) + mask.shape)
  out = np.zeros((b, h, w, kernel.shape[-1]))
  for r, c in itertools.product(range(h), range(w)):
    for i, j in itertools.product(range(k), repeat=2):
      rr, cc = r + (i - half) * dilation, c + (j - half) * dilation
      if 0 <= rr < h and 0 <= cc < w:
        out[:, r, c] += mask[:, r, c, i, j, None] * (x[:, rr, cc] @ kernel[i, j])
  return out


def test_kernel_masks_match_direct_construction():
  rng = np.random.default_rng(0)
  for (h, w), k, d, center in itertools.product([(5, 5), (4, 7)], [3, 5], [1, 2], [False, True]):
    for order in (orders.build("hilbert_rot90", h, w), orders.build("s_curve_flip", h, w),
                  orders.random_order(rng, h, w)):
      want = _reference_masks(order, h, w, k, d, center)
      np.testing.assert_array_equal(masked_conv.kernel_masks(order, h, w, k, d, center), want)
      np.testing.assert_array_equal(masked_conv.kernel_masks(jnp.asarray(order), h, w, k, d, center, xp=jnp), want)


def test_raster_masks_are_the_pixelcnn_masks_inside_the_image():
  order = orders.build("raster", 6, 6)
  m = masked_conv.kernel_masks(order, 6, 6, 3, 1, include_center=True)
  np.testing.assert_array_equal(m[3, 3], [[1, 1, 1], [1, 1, 0], [0, 0, 0]])
  m = masked_conv.kernel_masks(order, 6, 6, 3, 1, include_center=False)
  np.testing.assert_array_equal(m[3, 3], [[1, 1, 1], [1, 0, 0], [0, 0, 0]])


def _values_and_grads(f, x, kernel):
  """f(x, kernel), and the gradients of sum(sin(f)) with respect to x and kernel, in one jitted call."""
  out, vjp = jax.vjp(f, x, kernel)
  return out, vjp(jnp.cos(out))


def _reference_jnp(x, kernel, mask, d):
  """The per-location formula written as k*k shifted, masked products (autodiff gives its gradient)."""
  h, w = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (d, d), (d, d), (0, 0)))
  return sum(mask[..., i, j, None] * (xp[:, i * d:i * d + h, j * d:j * d + w] @ kernel[i, j])
             for i in range(3) for j in range(3))


@jax.jit
def _against_lax(x, kernel):
  ones = jnp.ones(x.shape[1:3] + (3, 3))
  results = {}
  for d, method in itertools.product([1, 2], ["matmul", "native"]):
    lax_conv = lambda x, kk, d=d: jax.lax.conv_general_dilated(x, kk, (1, 1), "SAME", rhs_dilation=(d, d),
                                                               dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ours = lambda x, kk, d=d, method=method: ops.locally_masked_conv2d(x, kk, ones, d, method)
    results[(d, method)] = (_values_and_grads(ours, x, kernel), _values_and_grads(lax_conv, x, kernel))
  return results


def test_all_ones_masks_equal_lax_conv_values_and_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 6, 5, 4))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, 4, 3))  # C_out <= C_in: "matmul" takes the taps form
  for key, (ours, ref) in _against_lax(x, kernel).items():
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=str(key))


CASES = [(1, "matmul", False), (2, "matmul", True), (1, "native", True), (2, "native", False)]


@jax.jit
def _against_reference(x, kernel, masks):
  results = []
  for (d, method, _), mask in zip(CASES, masks):
    ours = lambda x, kk, d=d, method=method, mask=mask: ops.locally_masked_conv2d(x, kk, mask, d, method)
    ref = lambda x, kk, d=d, mask=mask: _reference_jnp(x, kk, mask, d)
    results.append((_values_and_grads(ours, x, kernel), _values_and_grads(ref, x, kernel)))
  return results


def test_equals_per_location_masked_kernel_convolution():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  kernel = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)  # C_out <= C_in: "matmul" takes the taps form
  masks = [(rng.random((2, 5, 6, 3, 3) if per_example else (5, 6, 3, 3)) < 0.5).astype(np.float32)
           for _, _, per_example in CASES]
  results = _against_reference(x, kernel, masks)
  for (d, method, _), mask, (ours, ref) in zip(CASES, masks, results):
    # Location-by-location float64 numpy reference for the values ...
    np.testing.assert_allclose(ours[0], _reference_conv(x, kernel, mask, d), rtol=1e-4, atol=1e-4)
    # ... and autodiff through the shifted-product formula for the (hand-written, for taps) gradients.
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=f"{d} {method}")


def test_layer_output_depends_only_on_unmasked_neighbours():
  order = orders.random_order(np.random.default_rng(2), 4, 5)
  mask = masked_conv.kernel_masks(order, 4, 5, 3, 1, include_center=False)
  layer = masked_conv.LocallyMaskedConv(3, mask_weight=True)
  x = jax.random.normal(jax.random.key(3), (1, 4, 5, 2))
  params = layer.init(jax.random.key(4), x, mask)
  jac = jax.jit(jax.jacrev(lambda x: layer.apply(params, x, mask).sum(-1)))(x)  # [1, 4, 5, 1, 4, 5, 2]
  dep = np.abs(np.asarray(jac[0])).sum(axis=(2, 5)) > 0  # [4, 5, 4, 5]: output pixel -> input pixel
  rank = orders.rank_map(order, 4, 5)
  for r, c in itertools.product(range(4), range(5)):
    assert not np.any(dep[r, c] & (rank >= rank[r, c])), (r, c)


def test_static_masks_skip_unused_taps_exactly():
  # A concrete numpy mask whose bottom row is never used (raster / S-curve): those taps are dropped at
  # trace time; values and gradients still equal the per-location reference.
  rng = np.random.default_rng(5)
  x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  kernel = rng.normal(size=(3, 3, 3, 2)).astype(np.float32)
  for name, method, d in [("s_curve", "matmul", 1), ("raster", "native", 2)]:
    mask = masked_conv.kernel_masks(orders.build(name, 5, 6), 5, 6, 3, d, include_center=True)
    assert not mask[..., 2, :].any()
    ours = jax.jit(lambda x, kk: _values_and_grads(
        lambda x, kk: ops.locally_masked_conv2d(x, kk, mask, d, method), x, kk))(x, kernel)
    ref = jax.jit(lambda x, kk: _values_and_grads(lambda x, kk: _reference_jnp(x, kk, jnp.asarray(mask), d), x, kk))(
        x, kernel)
    np.testing.assert_allclose(ours[0], _reference_conv(x, kernel, mask, d), rtol=1e-4, atol=1e-4)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
