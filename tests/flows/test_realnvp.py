"""The RealNVP-style flow (the smallest model family): a bijection with the jacfwd log-det, and samples."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.flows import realnvp
from tests.conftest import perturb


def _flat(eps):
  return jnp.concatenate([e.reshape(e.shape[0], -1) for e in eps], axis=-1)


def test_realnvp_is_a_bijection_with_the_jacobian_log_det():
  model = realnvp.Model(image_shape=(4, 4, 2), levels=2, depth=2, hidden_channels=8)
  images = jax.random.randint(jax.random.key(0), (3, 4, 4, 2), 0, 256).astype(jnp.uint8)
  variables = model.init({"params": jax.random.key(1), "sample": jax.random.key(2)}, images)
  variables = {"params": perturb(variables["params"], 0.02)}  # zero-init couplings: a constant scale
  x = jax.random.uniform(jax.random.key(3), (3, 4, 4, 2), minval=-0.5, maxval=0.5)
  fwd = jax.jit(functools.partial(model.apply, variables, method="forward_and_log_det"))
  eps, log_det = fwd(x)
  assert [e.shape[1:] for e in eps] == [tuple(s) for s in model.latent_shapes]
  assert _flat(eps).shape == (3, 32)  # the latents hold exactly the input's dimensions
  assert float(jnp.std(log_det)) > 1e-3  # perturbed: the log-det depends on x
  x_rec, inv_log_det = model.apply(variables, eps, method="inverse_and_log_det")
  np.testing.assert_allclose(x_rec, x, atol=2e-5)
  np.testing.assert_allclose(inv_log_det, -log_det, rtol=1e-5, atol=1e-4)
  for b in range(2):
    jac = jax.jacfwd(lambda u: _flat(fwd(u.reshape((1, 4, 4, 2)))[0])[0])(x[b].reshape(-1))
    np.testing.assert_allclose(log_det[b], jnp.linalg.slogdet(jac)[1], rtol=1e-5, atol=1e-4)
  samples = model.apply(variables, jax.random.key(4), 5, 0.7, method="sample")
  assert samples.shape == (5, 4, 4, 2) and samples.dtype == jnp.uint8
