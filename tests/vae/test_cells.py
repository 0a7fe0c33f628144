"""NVAE cells (jaxgen/vae/cells.py): the posterior flows are autoregressive with the right log-det, the masks match
the official layout, and the CPU convolution paths equal lax's convolution in value and gradient."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.vae import cells

# Tests run tiny shapes: XLA's CPU backend optimisations cost more compile time than they save.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                    "xla_llvm_disable_expensive_passes": True})


# --- posterior flows -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _flow_setup(mirror):
  z = jax.random.normal(jax.random.key(4), (1, 3, 3, 4))  # 36 dims
  # jacfwd needs forward-mode AD: the native kernels (the CPU depthwise form has a custom VJP only).
  layer = cells.CellAR(mirror, "native") if mirror is not None else cells.PairedCellAR("native")
  params = _jit(layer.init)(jax.random.key(5, impl="rbg"), z)["params"]
  # Perturb every parameter (and raise the weight norms) so the checks do not pass on a near-identity map.
  leaves, tree = jax.tree.flatten_with_path(params)
  noise = np.random.RandomState(6)
  params = jax.tree.unflatten(tree, [
      leaf + 0.3 * noise.standard_normal(leaf.shape) + (1.5 if path[-1].key == "log_weight_norm" else 0.0)
      for path, leaf in leaves])
  fwd = lambda p, v: layer.apply({"params": p}, v.reshape(z.shape))
  out, jac = _jit(lambda p, v: (fwd(p, v), jax.jacfwd(lambda v: fwd(p, v)[0].reshape(-1))(v)))(params, z.reshape(-1))
  return z, params, out, np.asarray(jac)


def _raster_channel_order(h, w, c, mirror):
  """Position of each flattened (y, x, ch) index in the cell's autoregressive order."""
  y, x, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
  pos = y * w + x
  if mirror:
    pos = h * w - 1 - pos
  return (pos * c + ch).reshape(-1)


def test_flow_cells_are_autoregressive():
  for mirror in (False, True):
    z, _, _, jac = _flow_setup(mirror)
    order = _raster_channel_order(*z.shape[1:], mirror)
    later = order[None, :] >= order[:, None]  # [out i, in j]: j not before i
    off_diag = later & ~np.eye(len(order), dtype=bool)
    assert np.abs(jac[off_diag]).max() < 1e-6, "output depends on a later or same-position later-channel input"
    np.testing.assert_allclose(np.diag(jac), 1.0, atol=1e-6)
    earlier = ~later
    assert np.abs(jac[earlier]).max() > 1e-2, "no dependence on earlier latents: the flow is trivial"


def test_paired_flow_log_det_matches_jacfwd():
  z, params, (z_out, log_det), jac = _flow_setup(None)
  assert log_det.shape == (1,)
  np.testing.assert_allclose(log_det[0], np.linalg.slogdet(jac)[1], atol=1e-4)
  assert np.abs(z_out - z).max() > 1e-2  # it is not the identity
  # The CPU default implementation (shifted depthwise sums, custom VJP) gives the same map and Jacobian.
  shifted = cells.PairedCellAR("matmul")
  fwd = lambda v: shifted.apply({"params": params}, v.reshape(z.shape))[0].reshape(-1)
  np.testing.assert_allclose(_jit(jax.jacrev(fwd))(z.reshape(-1)), jac, atol=1e-5)


def test_conv_mask_matches_official_layout():
  # 1 -> 2 channels 3x3 with zero diagonal: centre blocked for output block 0, open for none of the inputs >= i.
  mask = cells.conv_mask(3, 2, 1, 4, zero_diag=True, mirror=False)  # [3, 3, 2, 4] HWIO
  np.testing.assert_array_equal(mask[0], 1.0)           # row above: everything
  np.testing.assert_array_equal(mask[1, 0], 1.0)        # left pixel: everything
  np.testing.assert_array_equal(mask[2], 0.0)           # row below: nothing
  np.testing.assert_array_equal(mask[1, 2], 0.0)        # right pixel: nothing
  np.testing.assert_array_equal(mask[1, 1], [[0, 0, 1, 1], [0, 0, 0, 0]])  # centre: out block i sees in < i
  np.testing.assert_array_equal(cells.conv_mask(3, 2, 1, 4, True, mirror=True), mask[::-1, ::-1])


# --- convolutions ----------------------------------------------------------------------------------


def test_masked_convs_skipping_dead_taps_equal_lax_convolution_and_gradients():
  # Conv2D's CPU paths for masked kernels use only the taps the autoregressive mask leaves alive: the depthwise
  # shifted sum (5x5, 13 of 25 taps) and the tap matmul (3x3 with zero diagonal, 5 of 9 taps, and mirrored).
  noise = np.random.RandomState(11)
  x = jnp.asarray(noise.standard_normal((2, 6, 7, 4)), jnp.float32)
  cases = [dict(features=4, kernel_size=5, padding=2, groups=4, zero_diag=False, mirror=False),
           dict(features=8, kernel_size=3, padding=1, zero_diag=True, mirror=False),
           dict(features=8, kernel_size=3, padding=1, zero_diag=True, mirror=True)]
  for case in cases:
    layer = cells.Conv2D(masked=True, **case)
    params = layer.init(jax.random.key(1), x)["params"]
    params = jax.tree.map(lambda p: p + 0.3 * jnp.asarray(noise.standard_normal(p.shape), p.dtype), params)
    taps = cells.live_taps(layer._mask(4))
    assert len(taps) == (13 if case["kernel_size"] == 5 else 5)

    def reference(params, x):
      mask = layer._mask(4)
      w = layer.effective_kernel(params["kernel"], params["log_weight_norm"], mask)
      p = case["padding"]
      return jax.lax.conv_general_dilated(x, w, (1, 1), [(p, p), (p, p)], dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                          feature_group_count=case.get("groups", 1))

    loss = lambda f: (lambda params, x: jnp.sum(jnp.sin(f(params, x))))
    fast = lambda params, x: layer.apply({"params": params}, x)
    np.testing.assert_allclose(fast(params, x), reference(params, x), atol=1e-5)
    grads = jax.grad(loss(fast), argnums=(0, 1))(params, x)
    ref_grads = jax.grad(loss(reference), argnums=(0, 1))(params, x)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
      np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_1x1_conv2d_as_matmul_equals_lax_convolution_and_gradients():
  # Conv2D's CPU path for 1x1 kernels (stride 1 and 2) is a 2-D matmul; it must equal lax's convolution.
  noise = np.random.RandomState(10)
  x = jnp.asarray(noise.standard_normal((2, 6, 6, 3)), jnp.float32)
  for stride in (1, 2):
    layer = cells.Conv2D(4, 1, stride=stride, use_bias=True)
    params = layer.init(jax.random.key(0), x)["params"]
    params = {**params, "bias": params["bias"] + 0.5}

    def ref(params, x):
      w = layer.apply({"params": params}, params["kernel"], params["log_weight_norm"], None,
                      method=cells.Conv2D.effective_kernel)
      return jax.lax.conv_general_dilated(x, w, (stride, stride), [(0, 0), (0, 0)],
                                          dimension_numbers=("NHWC", "HWIO", "NHWC")) + params["bias"]

    got = lambda params, x: layer.apply({"params": params}, x)
    np.testing.assert_allclose(got(params, x), ref(params, x), atol=1e-5)
    loss = lambda f: (lambda params, x: jnp.sum(jnp.sin(f(params, x))))
    grads = jax.grad(loss(got), argnums=(0, 1))(params, x)
    ref_grads = jax.grad(loss(ref), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
      np.testing.assert_allclose(a, b, atol=1e-4)
