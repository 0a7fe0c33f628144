"""NVAE parts: residual-normal KL, groups and KL balancing, posterior flows, spectral regulariser, optimiser."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen.training import optim
from jaxgen.vae import cells
from jaxgen.vae import nvae
from jaxgen.vae import spectral

# Tests run tiny shapes: XLA's CPU backend optimisations cost more compile time than they save.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                    "xla_llvm_disable_expensive_passes": True})


def _residual_normal(seed, shape, scale=1.0):
  """Prior params and residual posterior params (mu_p + dmu, log_sig_p + dlog_sig), as in nvae.Model."""
  mu_p, log_sig_p, dmu, dlog = scale * np.random.RandomState(seed).standard_normal((4,) + shape).astype(np.float32)
  q = nvae.normal_params(mu_p + dmu, log_sig_p + dlog)
  p = nvae.normal_params(mu_p, log_sig_p)
  return q, p


def test_residual_normal_kl_equals_monte_carlo():
  q, p = _residual_normal(0, (6,), scale=0.7)
  kl = nvae.normal_kl_elementwise(*q, *p)  # [6]
  eps = np.random.RandomState(1).standard_normal((400_000, 6)).astype(np.float32)
  z = q[0] + q[1] * eps
  log_ratio = nvae.normal_log_prob_elementwise(z, *q) - nvae.normal_log_prob_elementwise(z, *p)
  mc, se = log_ratio.mean(0), log_ratio.std(0) / np.sqrt(z.shape[0])
  assert np.all(np.abs(mc - kl) < 5 * se + 1e-4), (mc, kl, se)
  # Log-densities are proper: a standard normal at 0 has log N = -0.5 log(2 pi).
  np.testing.assert_allclose(nvae.normal_log_prob_elementwise(0.0, 0.0, 1.0), -0.5 * np.log(2 * np.pi), rtol=1e-6)


def test_kl_nonnegative_and_zero_for_zero_residual():
  q, p = _residual_normal(2, (10_000,), scale=4.0)  # many values beyond the soft clamp
  kl = nvae.normal_kl_elementwise(*q, *p)
  assert np.all(np.isfinite(kl)) and np.all(kl >= -1e-6)
  mu_p, log_sig_p = np.random.RandomState(3).standard_normal((2, 100)).astype(np.float32)
  same = nvae.normal_params(mu_p, log_sig_p)
  np.testing.assert_allclose(nvae.normal_kl_elementwise(*same, *same), 0.0, atol=1e-6)
  # soft clamp: 5 tanh(x / 5) stays inside (-5, 5) and is close to identity near 0.
  x = jnp.array([-100.0, -0.01, 0.0, 0.01, 100.0])
  c = nvae.soft_clamp5(x)
  assert np.all(np.abs(c) <= 5.0) and np.allclose(c[1:4], x[1:4], atol=1e-6)


def test_groups_per_scale_and_kl_balancer_coeff_match_official():
  assert nvae.groups_per_scale(2, 10, ada_groups=True) == [10, 5]
  assert nvae.groups_per_scale(5, 16, ada_groups=True, min_groups_per_scale=4) == [16, 8, 4, 4, 4]
  assert nvae.groups_per_scale(3, 7, ada_groups=False) == [7, 7, 7]
  # Decoder order: the coarse scale (5 groups) gets 1/5, the fine one (10 groups) 4/10; normalised by the min.
  np.testing.assert_allclose(nvae.kl_balancer_coeff([10, 5]), [1.0] * 5 + [2.0] * 10)
  # KL warm-up: constant min coefficient, then linear, then 1.
  coeff = functools.partial(nvae.kl_coeff, anneal_steps=100, const_steps=10, min_coeff=1e-4)
  np.testing.assert_allclose([coeff(0), coeff(60), coeff(110), coeff(1000)], [1e-4, 0.5, 1.0, 1.0], rtol=1e-6)


def test_kl_balance_reweights_only_during_warmup():
  kl_all = jnp.array([[1.0, 10.0], [3.0, 30.0]])  # [B=2, G=2]
  alpha = jnp.array([1.0, 1.0])
  out = nvae.kl_balance(kl_all, 0.5, alpha)
  # gamma proportional to mean |KL| + 0.01: (2.01, 20.01), normalised to mean 1.
  gamma = np.array([2.01, 20.01]) / np.mean([2.01, 20.01])
  np.testing.assert_allclose(out, 0.5 * (np.asarray(kl_all) * gamma).sum(1), rtol=1e-5)
  np.testing.assert_allclose(nvae.kl_balance(kl_all, 1.0, alpha), kl_all.sum(1), rtol=1e-6)
  # The coefficients are constants: d/dKL of the balanced term is beta * gamma.
  grad = jax.grad(lambda k: nvae.kl_balance(k, 0.5, alpha).sum())(kl_all)
  np.testing.assert_allclose(grad, 0.5 * np.broadcast_to(gamma, (2, 2)), rtol=1e-5)


# --- posterior flows -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _flow_setup(mirror):
  z = jax.random.normal(jax.random.key(4), (1, 3, 3, 4))  # 36 dims
  # jacfwd needs forward-mode AD: lax's grouped convolution (the CPU default has a custom VJP only).
  layer = cells.CellAR(mirror, "lax") if mirror is not None else cells.PairedCellAR("lax")
  params = _jit(layer.init)(jax.random.key(5, impl="rbg"), z)["params"]
  # Perturb every parameter (and raise the weight norms) so the checks do not pass on a near-identity map.
  leaves, tree = jax.tree.flatten_with_path(params)
  noise = np.random.RandomState(6)
  params = jax.tree.unflatten(tree, [
      l + 0.3 * noise.standard_normal(l.shape) + (1.5 if path[-1].key == "log_weight_norm" else 0.0)
      for path, l in leaves])
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
  shifted = cells.PairedCellAR("shifted")
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


# --- spectral regularisation -----------------------------------------------------------------------


def test_power_iteration_converges_to_numpy_largest_singular_value():
  noise = np.random.RandomState(0)
  kernels = [jnp.asarray(noise.standard_normal(s), jnp.float32)
             for s in [(3, 3, 4, 5), (3, 3, 4, 5), (1, 1, 6, 3), (5, 5, 1, 7)]]
  reg = spectral.SpectralRegularizer()
  variables = _jit(functools.partial(reg.init, update=False))(jax.random.key(0), kernels)
  apply = _jit(lambda v, k: reg.apply(v, k, update=True, mutable=["batch_stats"]))
  for _ in range(5):
    total, upd = apply(variables, kernels)
    variables = {**variables, **upd}
  expected = sum(np.linalg.svd(np.asarray(spectral.kernel_to_matrix(k)), compute_uv=False)[0] for k in kernels)
  np.testing.assert_allclose(total, expected, rtol=1e-4)
  # Two kernels share a shape: they are iterated as one batch, one state entry per matrix shape.
  assert sorted(variables["batch_stats"]) == ["power_iteration_3x6", "power_iteration_5x36",
                                                "power_iteration_7x25"]
  # The gradient of the estimate is u v^T (the gradient of the top singular value).
  w = np.asarray(spectral.kernel_to_matrix(kernels[2]))
  grad = _jit(jax.grad(lambda k: reg.apply(variables, [k], update=False)))(kernels[2])
  u, _, vt = np.linalg.svd(w)
  np.testing.assert_allclose(np.abs(spectral.kernel_to_matrix(grad)), np.abs(np.outer(u[:, 0], vt[0])), atol=1e-3)


def test_batchnorm_loss_and_coefficient_schedule():
  params = {"a": {"BatchNorm_0": {"scale": jnp.array([0.5, -2.0]), "bias": jnp.array([9.0, 9.0])}},
            "b": {"scale": jnp.array([1.5]), "kernel": jnp.full((2, 2), 7.0)}}
  np.testing.assert_allclose(spectral.batchnorm_scale_loss(params), 3.5)
  np.testing.assert_allclose(spectral.regularization_coefficient(0.3, 1e-2), 1e-2)
  coeff = functools.partial(spectral.regularization_coefficient, weight_decay_norm=1e-2,
                            weight_decay_norm_init=1.0, anneal=True)
  np.testing.assert_allclose([coeff(0.0), coeff(0.5), coeff(1.0)], [1.0, 0.1, 1e-2], rtol=1e-5)


# --- optimiser -------------------------------------------------------------------------------------


def test_adamax_matches_torch_adamax_with_l2_and_schedule():
  """The NVAE configs' optimizer: torch.optim.Adamax(lr, weight_decay=3e-4, eps=1e-3), warm-up, cosine to 1e-4."""
  opt = dict(name="adamax", lr=1e-2, eps=1e-3, l2_weight_decay=3e-4, warmup_steps=10, schedule="cosine",
             end_lr_factor=1e-2)
  _, sched = optim.build(opt, total_steps=110)
  # Official train.py: lr * step / warmup_iters during warm-up, then cosine annealing to learning_rate_min.
  np.testing.assert_allclose([sched(0), sched(5), sched(10), sched(60), sched(110)],
                             [0.0, 5e-3, 1e-2, 1e-4 + (1e-2 - 1e-4) * 0.5, 1e-4], rtol=1e-5)

  tx, _ = optim.build(opt | dict(warmup_steps=0, schedule="constant"), total_steps=10)
  p = jnp.array([1.0, -2.0, 0.5])
  grads = [jnp.array([0.1, 0.2, -0.3]), jnp.array([-0.5, 0.0, 0.1])]
  state = tx.init(p)
  ref_p, m, u = np.asarray(p), np.zeros(3), np.zeros(3)
  for t, g in enumerate(grads, 1):
    upd, state = tx.update(g, state, p)
    p = optax.apply_updates(p, upd)
    g = np.asarray(g) + 3e-4 * ref_p  # torch.optim.Adamax: weight decay enters the gradient
    m = 0.9 * m + 0.1 * g
    u = np.maximum(0.999 * u, np.abs(g) + 1e-3)
    ref_p = ref_p - 1e-2 / (1 - 0.9 ** t) * m / u
  np.testing.assert_allclose(p, ref_p, rtol=1e-6)


def test_depthwise_shifted_conv_equals_grouped_conv():
  noise = np.random.RandomState(9)
  x = jnp.asarray(noise.standard_normal((2, 5, 6, 4)), jnp.float32)
  w = jnp.asarray(noise.standard_normal((5, 5, 1, 4)), jnp.float32)
  ref = jax.lax.conv_general_dilated(x, w, (1, 1), [(2, 2), (2, 2)], dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=4)
  np.testing.assert_allclose(cells.depthwise_conv_shifted(x, w, 2), ref, atol=1e-5)
  # The custom gradient equals the grouped convolution's.
  loss = lambda f: (lambda x, w: jnp.sum(jnp.sin(f(x, w))))
  grads = jax.grad(loss(lambda x, w: cells.depthwise_conv_shifted(x, w, 2)), argnums=(0, 1))(x, w)
  ref_grads = jax.grad(loss(lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), [(2, 2), (2, 2)], dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=4)),
                       argnums=(0, 1))(x, w)
  for got, ref in zip(grads, ref_grads):
    np.testing.assert_allclose(got, ref, atol=1e-4)


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
