"""Every flow layer: round trip, inverse log_det = -forward log_det, log_det = slogdet(jacfwd), on perturbed params."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.flows import layers
from tests.conftest import perturb

SHAPE = (2, 2, 2, 4)  # 16 dims per example: the jacobian is 16x16

LAYERS = {
    "actnorm": layers.ActNorm,
    "conv": functools.partial(layers.InvertibleConv1x1, lu=False),
    "conv_lu": functools.partial(layers.InvertibleConv1x1, lu=True),
    "reverse": layers.Reverse,
    "shuffle": layers.Shuffle,
    "affine": functools.partial(layers.AffineCoupling, hidden_channels=8),
    "additive": functools.partial(layers.AdditiveCoupling, hidden_channels=8),
    "squeeze": layers.Squeeze,
}


def _init(layer, x, scale=0.1):
  variables = layer.init(jax.random.key(1), x, method="forward_and_log_det")
  return {**variables, "params": perturb(variables.get("params", {}), scale)}


def _flat(tree):
  return jnp.concatenate([t.reshape(t.shape[0], -1) for t in jax.tree.leaves(tree)], axis=-1)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_is_a_bijection_with_the_jacobian_log_det(name):
  x = jax.random.normal(jax.random.key(0), SHAPE) + 0.3
  layer = LAYERS[name]()
  variables = _init(layer, x)
  fwd = jax.jit(functools.partial(layer.apply, variables, method="forward_and_log_det"))
  inv = jax.jit(functools.partial(layer.apply, variables, method="inverse_and_log_det"))
  y, log_det = fwd(x)
  x_rec, inv_log_det = inv(y)
  chex.assert_shape(log_det, (SHAPE[0],))
  assert _flat(y).shape == (SHAPE[0], np.prod(SHAPE[1:]))
  np.testing.assert_allclose(x_rec, x, atol=1e-5)
  np.testing.assert_allclose(inv_log_det, -log_det, atol=1e-5)
  for b in range(SHAPE[0]):
    jac = jax.jacfwd(lambda v: _flat(fwd(v.reshape((1,) + SHAPE[1:]))[0])[0])(x[b].reshape(-1))
    sign, log_abs = jnp.linalg.slogdet(jac)
    assert sign != 0
    np.testing.assert_allclose(log_det[b], log_abs, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", ["affine", "conv_lu", "actnorm"])
def test_perturbed_layer_is_not_the_identity(name):
  # Guards the checks above: with perturbed params these layers change x and have a non-zero log_det.
  x = jax.random.normal(jax.random.key(0), SHAPE)
  layer = LAYERS[name]()
  y, log_det = layer.apply(_init(layer, x), x, method="forward_and_log_det")
  assert float(jnp.abs(y - x).max()) > 1e-2
  assert float(jnp.abs(log_det).min()) > 1e-3


def test_split_prior_is_a_bijection_with_the_jacobian_log_det():
  x = jax.random.normal(jax.random.key(0), SHAPE)
  layer = layers.SplitPrior()
  variables = _init(layer, x)
  (x_1, eps), log_det = layer.apply(variables, x, method="forward_and_log_det")
  x_rec, inv_log_det = layer.apply(variables, (x_1, eps), method="inverse_and_log_det")
  np.testing.assert_allclose(x_rec, x, atol=1e-5)
  np.testing.assert_allclose(inv_log_det, -log_det, atol=1e-5)
  fwd = lambda v: _flat(layer.apply(variables, v.reshape((1,) + SHAPE[1:]), method="forward_and_log_det")[0])[0]
  jac = jax.jacfwd(fwd)(x[0].reshape(-1))
  np.testing.assert_allclose(log_det[0], jnp.linalg.slogdet(jac)[1], atol=1e-4)
  assert float(jnp.abs(log_det).min()) > 1e-3  # the prior's scale is not 1 after perturbation


def test_actnorm_data_dependent_init_normalises_the_init_batch():
  x = 3.0 + 2.5 * jax.random.normal(jax.random.key(0), (16, 4, 4, 3)) * jnp.array([1.0, 0.1, 4.0])
  layer = layers.ActNorm()
  variables = jax.jit(layer.init)(jax.random.key(1), x)  # DDI under jit
  y = layer.apply(variables, x)
  np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1.0, atol=1e-4)


def test_lu_conv_starts_as_a_rotation_and_matches_plain_conv_parametrisation():
  x = jax.random.normal(jax.random.key(0), SHAPE)
  layer = layers.InvertibleConv1x1(lu=True)
  variables = layer.init(jax.random.key(3), x, method="forward_and_log_det")
  kernel, log_det = layer.apply(variables, SHAPE[-1], method="_kernel_and_log_det")
  np.testing.assert_allclose(kernel @ kernel.T, np.eye(SHAPE[-1]), atol=1e-5)  # random rotation at init
  np.testing.assert_allclose(log_det, 0.0, atol=1e-5)
  assert set(variables["constants"]) == {"perm", "sign_s"}  # fixed, not trained


def _edge_padded_reference(x, kernel):
  """openai/glow's edge-biased conv written directly: pad, append the border channel, 'VALID' lax.conv."""
  k = kernel.shape[0]
  a = k // 2
  padded = jnp.pad(x, ((0, 0), (a, a), (a, a), (0, 0)))
  border = jnp.pad(jnp.zeros(x.shape[:3] + (1,)), ((0, 0), (a, a), (a, a), (0, 0)), constant_values=1.0)
  return jax.lax.conv_general_dilated(jnp.concatenate([padded, border], -1), kernel, (1, 1), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("impl,c_in,c_out", [("native", 3, 7), ("matmul", 3, 7), ("matmul", 8, 3)])
def test_edge_conv_equals_lax_conv_with_a_border_channel(impl, c_in, c_out):
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, c_in))
  kernel = jax.random.normal(jax.random.key(1), (3, 3, c_in + 1, c_out))
  np.testing.assert_allclose(layers.edge_conv(x, kernel, impl), _edge_padded_reference(x, kernel), atol=1e-4)


def test_squeeze_matches_openai_glow_channel_order():
  x = jnp.arange(2 * 4 * 4 * 3).reshape(2, 4, 4, 3)
  y = layers.squeeze(x)
  # openai/glow squeeze2d: channel index = c * 4 + 2 * row_in_patch + col_in_patch.
  assert y[0, 0, 0, 1 * 4 + 2 * 1 + 0] == x[0, 1, 0, 1]
  np.testing.assert_array_equal(layers.unsqueeze(y), x)


def test_hidden_conv_with_folded_actnorm_equals_conv_then_actnorm():
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
  layer = layers.Conv(features=7, kernel_size=3)
  variables = {"params": perturb(layer.init(jax.random.key(1), x)["params"], 0.1)}
  p = variables["params"]
  reference = (_edge_padded_reference(x, p["kernel"]) + p["actnorm"]["bias"]) * jnp.exp(
      layers.LOG_SCALE_FACTOR * p["actnorm"]["log_scale"])
  np.testing.assert_allclose(layer.apply(variables, x), reference, rtol=1e-5, atol=1e-5)
