"""Discretized logistic mixture and Bernoulli in jaxgen.distributions: normalisation, a float64 numpy
reference, and samplers that match the probabilities."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import distributions as dist

_log_prob_pp = jax.jit(dist.discretized_logistic_mixture_log_prob_per_pixel, static_argnums=2)


def _random_params(rng, shape, num_channels, num_mix, scale=1.0):
  p = dist.dmol_num_params(num_channels, num_mix)
  params = scale * jax.random.normal(rng, shape + (p,))
  return params


def _numpy_reference(x_int, params, num_bits, num_channels):
  """float64 direct evaluation: sum_k pi_k prod_c [F(upper) - F(lower)], edges at +-inf."""
  params = np.asarray(params, np.float64)
  c = num_channels
  k = params.shape[-1] // (1 + 2 * c + c * (c - 1) // 2)
  logits = params[..., :k]
  means = params[..., k:k + c * k].reshape(params.shape[:-1] + (c, k))
  log_s = np.maximum(params[..., k + c * k:k + 2 * c * k].reshape(params.shape[:-1] + (c, k)), -7.0)
  coeffs = np.tanh(params[..., k + 2 * c * k:].reshape(params.shape[:-1] + (c * (c - 1) // 2, k)))
  levels = 2 ** num_bits - 1
  v = x_int.astype(np.float64) * 2.0 / levels - 1.0
  pi = np.exp(logits - logits.max(-1, keepdims=True))
  pi /= pi.sum(-1, keepdims=True)
  sig = lambda t: 1.0 / (1.0 + np.exp(-t))
  prob = pi.copy()
  pairs = [(ch, j) for ch in range(c) for j in range(ch)]
  for ch in range(c):
    m = means[..., ch, :].copy()
    for idx, (cc, j) in enumerate(pairs):
      if cc == ch:
        m = m + coeffs[..., idx, :] * v[..., j, None]
    s = np.exp(log_s[..., ch, :])
    hi = np.where(x_int[..., ch, None] == levels, 1.0, sig((v[..., ch, None] + 1.0 / levels - m) / s))
    lo = np.where(x_int[..., ch, None] == 0, 0.0, sig((v[..., ch, None] - 1.0 / levels - m) / s))
    prob = prob * (hi - lo)
  return np.log(prob.sum(-1))


def _all_pixels(num_bits, num_channels):
  grid = np.array(list(itertools.product(range(2 ** num_bits), repeat=num_channels)), np.int32)
  return grid  # [V^C, C]


def test_dmol_matches_numpy_reference_rgb_8bit_and_5bit():
  for num_bits in (8, 5):
    rng_p, rng_x = jax.random.split(jax.random.key(num_bits))
    params = _random_params(rng_p, (2, 3, 4), 3, 4)
    x = jax.random.randint(rng_x, (2, 3, 4, 3), 0, 2 ** num_bits)
    x = x.at[0, 0, 0].set(0).at[0, 0, 1].set(2 ** num_bits - 1)  # edge bins
    got = _log_prob_pp(x, params, num_bits)
    want = _numpy_reference(np.asarray(x), np.asarray(params), num_bits, 3)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    # Integers and [-1, 1] floats give the same answer; per-example is the per-pixel sum.
    v = x.astype(jnp.float32) * 2.0 / (2 ** num_bits - 1) - 1.0
    np.testing.assert_allclose(_log_prob_pp(v, params, num_bits), got,
                               rtol=1e-5, atol=1e-5)
    per_example = dist.discretized_logistic_mixture_log_prob(x, params, num_bits)
    assert per_example.shape == (2,)
    np.testing.assert_allclose(per_example, want.sum(axis=(1, 2)), rtol=1e-4)


def test_dmol_matches_numpy_reference_grey_with_sharp_scales():
  rng_p, rng_x = jax.random.split(jax.random.key(3))
  params = _random_params(rng_p, (5, 7), 1, 3, scale=3.0)  # log-scales down to the -7 clamp
  x = jax.random.randint(rng_x, (5, 7, 1), 0, 256)
  got = _log_prob_pp(x, params, 8)
  want = _numpy_reference(np.asarray(x), np.asarray(params), 8, 1)
  finite = np.isfinite(want) & (want > -30)  # float64 reference underflows far in the tails
  np.testing.assert_allclose(np.asarray(got)[finite], want[finite], rtol=1e-3, atol=1e-3)
  assert np.all(np.isfinite(got))


def test_dmol_narrow_bins_match_numpy_reference():
  # Scales from e^1.5 to e^4.5 put bins on both sides of the narrow-bin switch (width / s < 1e-3 from s > 7.8),
  # where the density at the centre replaces the bin's mass; edge bins included.
  rng_p, rng_x, rng_s = jax.random.split(jax.random.key(21), 3)
  params = _random_params(rng_p, (6, 8), 3, 4)
  log_scales = jax.random.uniform(rng_s, (6, 8, 12), minval=1.5, maxval=4.5)
  params = params.at[..., 4 + 12:4 + 24].set(log_scales)
  x = jax.random.randint(rng_x, (6, 8, 3), 0, 256).at[0, :4].set(0).at[1, :4].set(255)
  want = _numpy_reference(np.asarray(x), np.asarray(params), 8, 3)
  np.testing.assert_allclose(_log_prob_pp(x, params, 8), want, rtol=1e-5, atol=1e-5)  # float32 round-off
  with jax.enable_x64(True):  # in float64 the approximation's own error shows: below 1e-7
    got = dist.discretized_logistic_mixture_log_prob_per_pixel(x, jnp.asarray(params, jnp.float64))
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-7)
  grad = jax.grad(lambda p: dist.discretized_logistic_mixture_log_prob_per_pixel(x, p).sum())(params)
  assert np.all(np.isfinite(grad))


def test_dmol_sums_to_one_over_all_values():
  # Grey 8-bit (256 values), RGB 5-bit (32^3 values) and RGB 3-bit, with several parameter scales.
  for num_bits, c, scale in [(8, 1, 1.0), (8, 1, 4.0), (5, 3, 1.0), (5, 3, 3.0), (3, 3, 2.0)]:
    pixels = _all_pixels(num_bits, c)  # [N, C]
    params = _random_params(jax.random.key(num_bits * 10 + c), (4,), c, 5, scale)  # 4 parameter sets
    lp = _log_prob_pp(pixels[None], jnp.broadcast_to(params[:, None], (4, pixels.shape[0], params.shape[-1])),
                      num_bits)  # [4, N]
    np.testing.assert_allclose(jnp.exp(lp).sum(-1), 1.0, atol=2e-4)


def test_dmol_channels_are_causal_within_a_pixel():
  # p(r) must not depend on G's and B's parameters, p(r, g) not on B's: the joint is p(r) p(g|r) p(b|r,g).
  num_bits, c, k = 3, 3, 3
  pixels = _all_pixels(num_bits, c)  # [512, 3]
  params = _random_params(jax.random.key(12), (), c, k, scale=1.5)

  def marginals(params):
    p = jnp.exp(_log_prob_pp(pixels, jnp.broadcast_to(params, (512,) + params.shape), num_bits)).reshape(8, 8, 8)
    return p.sum((1, 2)), p.sum(2)  # p(r) [8], p(r, g) [8, 8]

  def channel_slots(ch):
    """Indices of the parameters of channel ch: its mean, log-scale and coupling coefficients."""
    means = [k + ch * k + i for i in range(k)]
    log_scales = [k + c * k + ch * k + i for i in range(k)]
    pairs = [idx for idx, (cc, _) in enumerate([(1, 0), (2, 0), (2, 1)]) if cc == ch]
    coeffs = [k + 2 * c * k + pair * k + i for pair in pairs for i in range(k)]
    return np.array(means + log_scales + coeffs)

  p_r, p_rg = marginals(params)
  noise = jax.random.normal(jax.random.key(13), params.shape)
  blue, green = channel_slots(2), channel_slots(1)
  p_r_b, p_rg_b = marginals(params.at[blue].add(noise[blue]))
  np.testing.assert_allclose(p_rg_b, p_rg, atol=1e-6)
  p_r_gb, p_rg_gb = marginals(params.at[np.concatenate([green, blue])].add(noise[np.concatenate([green, blue])]))
  np.testing.assert_allclose(p_r_gb, p_r, atol=1e-6)
  assert np.abs(np.asarray(p_rg_gb) - np.asarray(p_rg)).max() > 1e-3  # G's parameters do matter for p(r, g)


def test_dmol_gradients_finite():
  params = _random_params(jax.random.key(5), (3, 3), 3, 4, scale=5.0)
  x = jax.random.randint(jax.random.key(6), (3, 3, 3), 0, 256)
  g = jax.jit(jax.grad(lambda p: dist.discretized_logistic_mixture_log_prob_per_pixel(x, p).sum()))(params)
  assert np.all(np.isfinite(g))
  # Huge scales (bins much narrower than the logistic): still finite and normalised.
  wide = params.at[..., 4 + 12:4 + 24].set(30.0)
  assert np.all(np.isfinite(_log_prob_pp(x, wide, 8)))


def test_dmol_sampler_matches_probabilities():
  # 2-bit RGB: 64 possible pixels; the coupling must make the sampled joint equal the likelihood.
  num_bits, c, n = 2, 3, 200_000
  params = _random_params(jax.random.key(7), (), c, 3, scale=1.5)
  pixels = _all_pixels(num_bits, c)
  probs = jnp.exp(_log_prob_pp(pixels, jnp.broadcast_to(params, (pixels.shape[0],) + params.shape), num_bits))
  sample = jax.jit(dist.discretized_logistic_mixture_sample, static_argnums=(2, 3))
  samples = sample(jax.random.key(8), jnp.broadcast_to(params, (n,) + params.shape), c, num_bits)
  assert samples.dtype == jnp.int32 and samples.shape == (n, c)
  idx = (samples * jnp.array([16, 4, 1])).sum(-1)
  freq = np.bincount(np.asarray(idx), minlength=64) / n
  np.testing.assert_allclose(freq, probs, atol=5 * np.sqrt(0.25 / n))
  # Temperature 0 puts every draw of a single-component, single-channel mixture at its mean's bin.
  p1 = jnp.array([0.0, 0.3, -2.0])  # logit, mean 0.3, log-scale -2
  s0 = sample(jax.random.key(9), jnp.broadcast_to(p1, (100, 3)), 1, 8, 0.0)
  assert np.all(np.asarray(s0) == round((0.3 + 1) * 127.5))


def test_dmol_mode_is_the_most_likely_components_coupled_means():
  # RGB, 2 components: with one component's logit far ahead, every T=0 sample draws it, and the mode must agree.
  params = _random_params(jax.random.key(10), (50,), 3, 2, scale=0.5)
  sample = jax.jit(dist.discretized_logistic_mixture_sample, static_argnums=(2, 3))
  for ahead in (0, 1):
    p = params.at[:, ahead].set(30.0)
    mode = dist.discretized_logistic_mixture_mode(p, 3, 8)
    assert mode.dtype == jnp.int32 and mode.shape == (50, 3)
    np.testing.assert_array_equal(mode, sample(jax.random.key(11), p, 3, 8, 0.0))
  assert not np.array_equal(dist.discretized_logistic_mixture_mode(params.at[:, 0].set(30.0), 3, 8),
                            dist.discretized_logistic_mixture_mode(params.at[:, 1].set(30.0), 3, 8))


def test_bernoulli_log_prob_and_sample():
  logits = jax.random.normal(jax.random.key(0), (3, 4, 4, 1)) * 2
  x = jax.random.bernoulli(jax.random.key(1), 0.5, logits.shape).astype(jnp.uint8)
  p = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
  want = np.where(np.asarray(x) == 1, np.log(p), np.log(1 - p)).reshape(3, -1).sum(-1)
  np.testing.assert_allclose(dist.bernoulli_log_prob(x, logits), want, rtol=1e-5)
  s = jax.jit(dist.bernoulli_sample)(jax.random.key(2), jnp.broadcast_to(logits[0], (20000,) + logits.shape[1:]))
  np.testing.assert_allclose(s.mean(0), p[0], atol=0.02)


def test_dmol_mean_is_nvaes_weighted_and_clipped_coupled_mean():
  # K = 2 components with logits (0, log 3): weights 1/4, 3/4. Raw coefficients atanh(.) so alpha = 0.5, -1, 0.25.
  k, c = 2, 3
  logits = [0.0, np.log(3.0)]
  means = [[0.4, 0.8], [-0.2, 0.2], [0.9, 0.9]]  # [C, K]: weighted 0.7, 0.1, 0.9
  coeffs = np.arctanh([[0.5, 0.5], [-1 + 1e-7, -1 + 1e-7], [0.25, 0.25]])  # pairs (G|R), (B|R), (B|G)
  params = np.concatenate([logits, np.ravel(means), np.full(c * k, -3.0), np.ravel(coeffs)])[None].astype(np.float32)
  r = 0.7
  g = 0.1 + 0.5 * r  # 0.45
  b = np.clip(0.9 - 1.0 * r + 0.25 * g, -1, 1)
  np.testing.assert_allclose(dist.discretized_logistic_mixture_mean(jnp.asarray(params), c)[0], [r, g, b], atol=1e-5)
  params[0, k:k + k] = 2.0  # R's means beyond 1 are clipped before G and B use R
  np.testing.assert_allclose(dist.discretized_logistic_mixture_mean(jnp.asarray(params), c)[0, :2],
                             [1.0, 0.1 + 0.5], atol=1e-5)
