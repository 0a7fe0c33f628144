"""Log-densities, samplers and divergences shared by the model families.

Every `*_log_prob` returns the log-density summed over all non-batch axes, in nats, shape `[B]`,
unless its docstring says otherwise.
"""
import jax
import jax.numpy as jnp
import numpy as np

_LOG_2PI = float(np.log(2.0 * np.pi))


def _sum_except_batch(x):
  return x.reshape(x.shape[0], -1).sum(axis=-1)


def standard_normal_log_prob(z):
  """log N(z; 0, I), summed per example.  z: [B, ...] -> [B]."""
  return _sum_except_batch(-0.5 * (jnp.square(z) + _LOG_2PI))


def gaussian_log_prob(z, mean, log_scale):
  """log N(z; mean, exp(log_scale)^2), summed per example.  All [B, ...] -> [B]."""
  return _sum_except_batch(gaussian_log_prob_elementwise(z, mean, log_scale))


def gaussian_log_prob_elementwise(z, mean, log_scale):
  """Elementwise log N(z; mean, exp(log_scale)^2), same shape as z."""
  return -0.5 * (jnp.square((z - mean) * jnp.exp(-log_scale)) + _LOG_2PI) - log_scale


def gaussian_sample(rng, mean, log_scale, temperature=1.0):
  """mean + temperature * exp(log_scale) * eps, eps ~ N(0, I)."""
  eps = jax.random.normal(rng, mean.shape, mean.dtype)
  return mean + temperature * jnp.exp(log_scale) * eps


# ----------------------------------------------------------------------------------------------
# Discretized logistic mixture (Salimans et al. 2017, PixelCNN++, Sec. 2.1-2.2).
# ----------------------------------------------------------------------------------------------
#
# A pixel x = (x_0, ..., x_{C-1}) with sub-pixels on the grid {0, ..., 2^num_bits - 1}, rescaled to
# v = 2 x / (2^num_bits - 1) - 1 in [-1, 1], has probability
#
#   p(x) = sum_k pi_k prod_c [ sigma((v_c + w/2 - m_kc) / s_kc) - sigma((v_c - w/2 - m_kc) / s_kc) ],
#
# with bin width w = 2 / (2^num_bits - 1), the lowest bin's lower edge at -inf and the highest bin's upper
# edge at +inf, and the channel coupling of PixelCNN++ (Sec. 2.2): the mean of channel c is
#   m_kc = mu_kc + sum_{j<c} alpha_k(c, j) v_j,  alpha = tanh(raw coefficient),
# so for RGB, G's mean depends linearly on R and B's on R and G.
#
# Parameter layout along the last axis (K mixtures, C channels; C=3: 10K values, C=1: 3K values):
#   [ logits (K) | means (C*K, channel-major) | log_scales (C*K) | coeffs (C(C-1)/2 * K) ]
# with the coefficient pairs (c, j), j < c, in the order (1,0), (2,0), (2,1), ... (lower triangle, row-major).
# log_scales are clamped below at -7 as in PixelCNN++.

_DMOL_MIN_LOG_SCALE = -7.0


def dmol_num_params(num_channels, num_mixtures):
  """Size of the last axis of the parameters for `num_channels` channels and `num_mixtures` components."""
  c = num_channels
  return num_mixtures * (1 + 2 * c + c * (c - 1) // 2)


def _dmol_unpack(params, num_channels):
  """Splits [..., P] into logits [..., K], means/log_scales [..., C, K], coeffs [..., C(C-1)/2, K]."""
  c = num_channels
  per_mix = 1 + 2 * c + c * (c - 1) // 2
  if params.shape[-1] % per_mix:
    raise ValueError(f"last axis of params ({params.shape[-1]}) is not a multiple of {per_mix}, the number of "
                     f"values per mixture component for {c} channels; see dmol_num_params.")
  k = params.shape[-1] // per_mix
  batch = params.shape[:-1]
  logits = params[..., :k]
  means = params[..., k:k + c * k].reshape(batch + (c, k))
  log_scales = params[..., k + c * k:k + 2 * c * k].reshape(batch + (c, k))
  log_scales = jnp.maximum(log_scales, _DMOL_MIN_LOG_SCALE)
  coeffs = jnp.tanh(params[..., k + 2 * c * k:].reshape(batch + (c * (c - 1) // 2, k)))
  return logits, means, log_scales, coeffs


def _dmol_coupled_means(means, coeffs, v):
  """m_c = mu_c + sum_{j<c} alpha(c, j) v_j.  means [..., C, K], coeffs [..., C(C-1)/2, K], v [..., C]."""
  c = means.shape[-2]
  out, pair = [], 0
  for ch in range(c):
    m = means[..., ch, :]
    for j in range(ch):
      m = m + coeffs[..., pair, :] * v[..., j, None]
      pair += 1
    out.append(m)
  return jnp.stack(out, axis=-2)  # [..., C, K]


def _log1mexp(d):
  """log(1 - exp(d)) for d < 0 as log(-expm1(d)): exact where it matters (d near 0, where 1 - exp(d) cancels) and
  within 1e-7 absolute elsewhere (the result is then below 1e-7 in size itself), one transcendental pair instead of
  Maechler's (2012) two-branch form, whose `where` evaluates both branches."""
  return jnp.log(-jnp.expm1(d))


def to_unit_interval_grid(x, num_bits=8):
  """Integers {0..2^bits-1} -> floats on the grid in [-1, 1]; floats are returned unchanged (assumed scaled)."""
  if jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer):
    return jnp.asarray(x, jnp.float32) * (2.0 / (2 ** num_bits - 1)) - 1.0
  return jnp.asarray(x)


def discretized_logistic_mixture_log_prob_per_pixel(x, params, num_bits=8):
  """log p(pixel) of the discretized logistic mixture, per pixel (Salimans et al. 2017, Sec. 2.1-2.2).

  Args:
    x: `[..., C]` pixels. Integer dtype: values in {0, ..., 2^num_bits - 1} (e.g. the pipeline's uint8).
      Floating dtype: values already rescaled to [-1, 1] as v = 2 x / (2^num_bits - 1) - 1 (on the grid).
    params: `[..., P]`, P = dmol_num_params(C, K), laid out as described above this function.
    num_bits: bits per sub-pixel (8 for ordinary images, 5 for NVAE's CelebA-HQ / FFHQ setting).

  Returns:
    `[...]` log-probabilities in nats (x's shape without the channel axis), the joint over the C channels.

  Each bin's mass is computed exactly and stably as log(sigma(a) - sigma(b)) through log-sigmoids on the
  side of the mean where they do not saturate; when the bin is much narrower than the logistic scale
  (width / s < 1e-3), the density at the bin centre times the width is used instead (the error is
  O((width/s)^2)). This replaces PixelCNN++'s 1e-5 threshold hack and agrees with it wherever that is exact.
  """
  v = to_unit_interval_grid(x, num_bits).astype(params.dtype)  # [..., C]
  c = v.shape[-1]
  logits, means, log_scales, coeffs = _dmol_unpack(params, c)
  m = _dmol_coupled_means(means, coeffs, v)  # [..., C, K]
  half_width = 1.0 / (2 ** num_bits - 1)
  centered = v[..., None] - m  # [..., C, K]
  inv_s = jnp.exp(-log_scales)
  plus_in = inv_s * (centered + half_width)
  min_in = inv_s * (centered - half_width)
  # Interior bins: log(sigma(plus) - sigma(min)) = log(sigma(-min) - sigma(-plus)); use the side whose
  # log-sigmoids do not round to 0. Edge bins absorb the tails: x = 0 has log sigma(plus), x = 2^b - 1 has
  # log(1 - sigma(min)) = log sigma(-min), which is exactly the larger log-sigmoid "hi" with its argument chosen
  # by the bin instead of by the side. (Selecting the arguments, not the results, halves the log-sigmoids.)
  eps = 0.5 * half_width
  first = v[..., None] < -1.0 + eps  # [..., C, 1]
  last = v[..., None] > 1.0 - eps
  upper = centered > 0
  log_hi = jax.nn.log_sigmoid(jnp.where(first, plus_in, jnp.where(last | upper, -min_in, plus_in)))
  log_lo = jax.nn.log_sigmoid(jnp.where(upper, -plus_in, min_in))
  log_delta = log_hi + _log1mexp(jnp.minimum(log_lo - log_hi, -1e-30))
  # When the bin is much narrower than the logistic (width / s < 1e-3): the density at the bin centre times the
  # width. Its log, mid - log s - 2 softplus(mid) = log sigma(mid) + log sigma(-mid) - log s, comes from the two
  # log-sigmoids already computed, whose arguments sit symmetrically +-half a bin around +-mid: their mean is
  # log sigma(+-mid) to within (width / 2s)^2 / 8 < 4e-8 (log sigma is concave with |log sigma''| <= 1/4).
  mid_in = inv_s * centered
  log_pdf_mid = log_hi + log_lo + jnp.where(upper, mid_in, -mid_in) - log_scales
  narrow = (plus_in - min_in) < 1e-3
  log_interior = jnp.where(narrow, log_pdf_mid + np.log(2.0 * half_width), log_delta)
  log_p = jnp.where(first | last, log_hi, log_interior)  # [..., C, K]
  log_mix = log_p.sum(axis=-2) + jax.nn.log_softmax(logits, axis=-1)  # [..., K]
  return jax.nn.logsumexp(log_mix, axis=-1)  # [...]


def discretized_logistic_mixture_log_prob(x, params, num_bits=8):
  """Per-example log p(x) in nats: the per-pixel log-probabilities summed.  x [B, H, W, C] -> [B].

  See `discretized_logistic_mixture_log_prob_per_pixel` for the conventions of x (integers or [-1, 1] floats).
  """
  return _sum_except_batch(discretized_logistic_mixture_log_prob_per_pixel(x, params, num_bits))


def discretized_logistic_mixture_sample(rng, params, num_channels=3, num_bits=8, temperature=1.0):
  """Samples pixels from the discretized logistic mixture.  params [..., P] -> int32 [..., C] in {0..2^b-1}.

  The component k ~ Categorical(softmax(logits)) is shared by the channels of a pixel; then channel by
  channel, y_c = m_kc + temperature * s_kc * Logistic(0, 1) with m_kc coupled to the already sampled
  channels, and y_c is rounded to the nearest grid value after clipping to [-1, 1], which draws exactly
  from the bin masses of `discretized_logistic_mixture_log_prob_per_pixel` when temperature = 1.
  The coupling uses the discretized earlier channels (as the likelihood does; PixelCNN++ uses the
  continuous draws). `temperature` scales the logistic noise (LMConv's `logistic_temperature`); the
  mixture weights are left untouched.
  """
  logits, _, _, _ = _dmol_unpack(params, num_channels)
  rng_mix, rng_logistic = jax.random.split(rng)
  k = jax.random.categorical(rng_mix, logits, axis=-1)  # [...]
  return _dmol_levels(params, num_channels, num_bits, k, rng_logistic, temperature)


def discretized_logistic_mixture_mode(params, num_channels=3, num_bits=8):
  """The deterministic read-out of a mixture: the most likely component's (coupled) means, on the grid.
  params [..., P] -> int32 [..., C] in {0..2^b-1}. For reconstructions (`sample` at temperature 0 with k = argmax)."""
  logits, _, _, _ = _dmol_unpack(params, num_channels)
  return _dmol_levels(params, num_channels, num_bits, jnp.argmax(logits, axis=-1), None, 0.0)


def _dmol_levels(params, num_channels, num_bits, k, rng_logistic, temperature):
  """Component k [...] of every pixel, plus temperature-scaled logistic noise (none for rng_logistic None),
  coupled channel by channel and rounded to the grid: int32 [..., C]."""
  logits, means, log_scales, coeffs = _dmol_unpack(params, num_channels)
  one_hot = jax.nn.one_hot(k, logits.shape[-1], dtype=params.dtype)[..., None, :]  # [..., 1, K]
  mu = (means * one_hot).sum(-1)  # [..., C]
  s = jnp.exp((log_scales * one_hot).sum(-1))  # [..., C]
  alpha = (coeffs * one_hot).sum(-1)  # [..., C(C-1)/2]
  noise = jnp.zeros_like(mu)
  if rng_logistic is not None:
    u = jax.random.uniform(rng_logistic, mu.shape, params.dtype, minval=1e-5, maxval=1.0 - 1e-5)
    noise = temperature * s * (jnp.log(u) - jnp.log1p(-u))  # [..., C]
  levels = 2 ** num_bits - 1
  ints, vs, pair = [], [], 0
  for ch in range(num_channels):
    m = mu[..., ch]
    for j in range(ch):
      m = m + alpha[..., pair] * vs[j]
      pair += 1
    y = jnp.clip(m + noise[..., ch], -1.0, 1.0)
    q = jnp.round((y + 1.0) * (levels / 2.0))
    ints.append(q.astype(jnp.int32))
    vs.append(q * (2.0 / levels) - 1.0)
  return jnp.stack(ints, axis=-1)  # [..., C]


def discretized_logistic_mixture_mean(params, num_channels=3):
  """NVAE's "mean" image of the mixture (official distributions.py `DiscMixLogistic.mean`), floats [..., C] in
  [-1, 1]: the mixture-weighted means and coefficients, channel c = clip(mu_c + sum_{j<c} alpha(c, j) x_j, -1, 1)
  on the already clipped earlier channels. (Not the exact mean of the mixture; what NVAE's FID samples are.)"""
  logits, means, _, coeffs = _dmol_unpack(params, num_channels)
  weights = jax.nn.softmax(logits, axis=-1)[..., None, :]  # [..., 1, K]
  mu, alpha = (means * weights).sum(-1), (coeffs * weights).sum(-1)  # [..., C], [..., C(C-1)/2]
  xs, pair = [], 0
  for ch in range(num_channels):
    m = mu[..., ch]
    for j in range(ch):
      m = m + alpha[..., pair] * xs[j]
      pair += 1
    xs.append(jnp.clip(m, -1.0, 1.0))
  return jnp.stack(xs, axis=-1)  # [..., C]


# ----------------------------------------------------------------------------------------------
# Bernoulli from logits.
# ----------------------------------------------------------------------------------------------


def bernoulli_log_prob_elementwise(x, logits):
  """log Bernoulli(x; sigmoid(logits)) elementwise; x in {0, 1} (any dtype), same shape as logits."""
  x = jnp.asarray(x, logits.dtype)
  return x * jax.nn.log_sigmoid(logits) + (1.0 - x) * jax.nn.log_sigmoid(-logits)


def bernoulli_log_prob(x, logits):
  """log Bernoulli(x; sigmoid(logits)) summed per example.  [B, ...] -> [B]."""
  return _sum_except_batch(bernoulli_log_prob_elementwise(x, logits))


def bernoulli_sample(rng, logits, temperature=1.0):
  """x ~ Bernoulli(sigmoid(logits / temperature)), as int32 in {0, 1}, same shape as logits."""
  return jax.random.bernoulli(rng, jax.nn.sigmoid(logits / temperature)).astype(jnp.int32)
