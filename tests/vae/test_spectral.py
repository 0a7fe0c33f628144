"""NVAE's regularisers (jaxgen/vae/spectral.py): power iteration finds the largest singular values, and the
BatchNorm-scale loss and the coefficient schedule are the official ones."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.vae import spectral

# Tests run tiny shapes: XLA's CPU backend optimisations cost more compile time than they save.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                    "xla_llvm_disable_expensive_passes": True})


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
