"""The whole Glow: a bijection with the jacfwd log-det, a normalised density, exact log_prob, sampling, encode and
decode."""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import distributions
from jaxgen.flows import glow
from tests.conftest import perturb


def _images(shape, batch=4, seed=0):
  return jax.random.randint(jax.random.key(seed), (batch,) + shape, 0, 256).astype(jnp.uint8)


def _init(model, images, scale=0.05, labels=None):
  variables = model.init({"params": jax.random.key(1), "sample": jax.random.key(2)}, images, labels)
  return {**variables, "params": perturb(variables["params"], scale)}


def _flat(eps):
  return jnp.concatenate([e.reshape(e.shape[0], -1) for e in eps], axis=-1)


@pytest.mark.parametrize("permutation, coupling, num_classes", [
    ("conv", "affine", 0), ("conv_lu", "additive", 3), ("shuffle", "affine", 0)])
def test_glow_is_a_bijection_with_the_jacobian_log_det(permutation, coupling, num_classes):
  model = glow.Model(image_shape=(4, 4, 2), levels=2, depth=2, hidden_channels=8, permutation=permutation,
                     coupling=coupling, num_classes=num_classes)
  images = _images((4, 4, 2))
  labels = jnp.array([0, 1, 2, 1]) if num_classes else None
  variables = _init(model, images, labels=labels)
  x = model.apply(variables, images, method="preprocess", rngs={"sample": jax.random.key(5)})
  fwd = jax.jit(functools.partial(model.apply, variables, method="forward_and_log_det"))
  inv = jax.jit(functools.partial(model.apply, variables, method="inverse_and_log_det"))
  eps, log_det = fwd(x, labels)
  assert [e.shape[1:] for e in eps] == [tuple(s) for s in model.latent_shapes]
  assert _flat(eps).shape == (4, 32)  # the latents hold exactly the input's dimensions
  x_rec, inv_log_det = inv(eps, labels)
  np.testing.assert_allclose(x_rec, x, atol=2e-5)
  np.testing.assert_allclose(inv_log_det, -log_det, rtol=1e-5, atol=1e-3)
  log_abs_det = jax.jit(lambda v, lb: jnp.linalg.slogdet(
      jax.jacfwd(lambda u: _flat(fwd(u.reshape((1, 4, 4, 2)), lb)[0])[0])(v))[1])
  for b in range(2):
    lb = None if labels is None else labels[b:b + 1]
    np.testing.assert_allclose(log_det[b], log_abs_det(x[b].reshape(-1), lb), rtol=1e-5, atol=2e-3)


def test_log_prob_is_a_normalised_density_and_matches_change_of_variables():
  # A one-step flow on 2x2x1 images (4 dims), checked without the model's own log-det:
  # (1) log_prob = log N(eps) + log|det d eps / dx| (jacobian from autodiff) - D log 256 at the dequantised point;
  # (2) the continuous density integrates to 1 (importance sampling from a wide Gaussian).
  model = glow.Model(image_shape=(2, 2, 1), levels=1, depth=1, hidden_channels=4, permutation="conv")
  images = _images((2, 2, 1), batch=16)
  variables = _init(model, images, scale=0.3)  # far from the identity
  log_p = model.apply(variables, images, noise=glow.DEQUANT_MIDPOINT, method="log_prob")
  x = model.apply(variables, images, glow.DEQUANT_MIDPOINT, method="preprocess")
  to_eps = lambda v: _flat(model.apply(variables, v.reshape(1, 2, 2, 1), method="forward_and_log_det")[0])[0]
  for b in range(4):
    jac = jax.jacfwd(to_eps)(x[b].reshape(-1))
    direct = (distributions.standard_normal_log_prob(to_eps(x[b].reshape(-1))[None])[0]
              + jnp.linalg.slogdet(jac)[1] - 4 * np.log(256.0))
    np.testing.assert_allclose(log_p[b], direct, rtol=1e-5, atol=1e-3)

  # Closer to init, so the density has no tails beyond the proposal's reach; the log-det is still ~ +5 nats,
  # so a sign or scale error anywhere would move the integral by orders of magnitude.
  variables = _init(model, images, scale=0.05)
  sigma = 0.6
  v = sigma * jax.random.normal(jax.random.key(7), (200_000, 2, 2, 1))
  eps, log_det = jax.jit(functools.partial(model.apply, variables, method="forward_and_log_det"))(v)
  log_density = distributions.standard_normal_log_prob(_flat(eps)) + log_det
  log_q = distributions.gaussian_log_prob(v, 0.0, jnp.log(sigma))
  assert abs(float(jnp.mean(jnp.exp(log_density - log_q))) - 1.0) < 0.03
  assert float(jnp.mean(log_det)) > 2.0 and float(jnp.std(log_det)) > 1e-3


def test_losses_give_bits_per_dim_of_log_prob_and_5_bit_data():
  model = glow.Model(image_shape=(4, 4, 1), levels=1, depth=1, hidden_channels=4, num_bits=5)
  images = _images((4, 4, 1))
  variables = _init(model, images)
  rngs = {"sample": jax.random.key(3)}
  terms = model.apply(variables, images, method="losses", rngs=rngs)
  log_p = model.apply(variables, images, method="log_prob", rngs=rngs)  # same noise: same stream and key
  chex.assert_shape(terms["bpd"], (4,))
  np.testing.assert_allclose(terms["bpd"], -log_p / (16 * np.log(2.0)), rtol=1e-5)
  x = model.apply(variables, images, method="preprocess", rngs=rngs)
  # 5 bits: 32 bins of width 1/32 in [-1/2, 1/2); the dequantised value stays in the pixel's bin.
  np.testing.assert_array_equal(jnp.floor((x + 0.5) * 32), images // 8)


def test_sampling_encode_and_decode():
  model = glow.Model(image_shape=(4, 4, 1), levels=2, depth=1, hidden_channels=4, num_classes=2)
  images = _images((4, 4, 1))
  labels = jnp.array([0, 1, 0, 1])
  variables = _init(model, images, labels=labels)
  sample = jax.jit(functools.partial(model.apply, variables, method="sample"), static_argnums=1)
  samples = sample(jax.random.key(0), 6, 0.7, jnp.zeros(6, jnp.int32))
  assert samples.dtype == jnp.uint8 and samples.shape == (6, 4, 4, 1)
  assert len(np.unique(np.asarray(samples).reshape(6, -1), axis=0)) == 6
  # Temperature 0: every latent is zero, so every image of a class is the same.
  cold = sample(jax.random.key(0), 6, 0.0, jnp.zeros(6, jnp.int32))
  np.testing.assert_array_equal(cold[0], cold[1])
  # Decoding the latents of images gives the images back (mid-bin encoding, exact bijection).
  eps = jax.jit(functools.partial(model.apply, variables, method="encode"))(images, labels)
  decode = jax.jit(functools.partial(model.apply, variables, method="decode"))
  np.testing.assert_array_equal(decode(eps, labels), images)
  with pytest.raises(ValueError, match="pass labels"):
    model.apply(variables, images, method="encode")


def test_remat_and_unroll_compute_the_same_gradients():
  images = _images((4, 4, 1))
  grads = []
  for kwargs in (dict(), dict(remat=True), dict(unroll=True)):
    model = glow.Model(image_shape=(4, 4, 1), levels=1, depth=3, hidden_channels=4, **kwargs)
    variables = _init(model, images)
    loss = lambda p: model.apply({**variables, "params": p}, images, method="losses",
                                 rngs={"sample": jax.random.key(0)})["loss"].mean()
    grads.append(jax.jit(jax.grad(loss))(variables["params"]))
  for other in grads[1:]:
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6), grads[0], other)


def test_paper_size_model_builds_with_the_papers_parameter_count():
  model = glow.Model(image_shape=(32, 32, 3), levels=3, depth=32, hidden_channels=512)
  shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "sample": jax.random.key(1)},
                                             jnp.zeros((2, 32, 32, 3), jnp.uint8)))
  params = sum(np.prod(x.shape) for x in jax.tree.leaves(shapes["params"]))
  assert 44e6 < params < 45e6  # openai/glow's CIFAR-10 model: ~44.2M parameters


def test_class_conditional_glow_with_a_classifier_loss_inits_and_its_classifier_does_not_see_the_label():
  # openai/glow --ycond --weight_y: init (what the trainer runs) creates the classifier, and the classifier reads the
  # top z before the label-conditioned prior, so p(y | x) is one distribution over the classes whatever label is fed.
  model = glow.Model(image_shape=(4, 4, 1), levels=2, depth=1, hidden_channels=4, num_classes=3,
                     class_loss_weight=0.5)
  images = _images((4, 4, 1))
  variables = _init(model, images, scale=0.2, labels=jnp.array([0, 1, 2, 1]))
  assert variables["params"]["classifier"]["kernel"].shape == (8, 3)  # top z: 1x1x8
  losses = jax.jit(lambda c: model.apply(variables, images, jnp.full((4,), c), method="losses",
                                         rngs={"sample": jax.random.key(3)}))
  probs = jnp.stack([2.0 ** -losses(c)["class_bits"] for c in range(3)])  # p(y = c | x) for each fed label c
  np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-5)
  out = losses(1)
  np.testing.assert_allclose(out["loss"], out["bpd"] + 0.5 * out["class_bits"], rtol=1e-6)
