r"""NVAE: a deep hierarchical VAE (Vahdat & Kautz 2020, "NVAE: A Deep Hierarchical Variational Autoencoder").

Structure (paper Sec. 3 and Fig. 2; NVlabs/NVAE model.py `AutoEncoder`), images at 2^b levels, x in [0, 1]:

  bottom-up:  stem Conv3x3(2x - 1) -> pre-processing cells (each block ends with a down cell, channels x2)
              -> encoder tower: per latent scale (finest first), per group: `num_cell_per_cond_enc` residual
                 cells, the features kept for that group's posterior; a down cell between scales.
  top-down:   learned input h_0 (prior_ftr0) -> per scale (coarsest first), per group: `num_cell_per_cond_dec`
              generative cells (not before the first group), then z_l joins through Conv1x1([h, z_l]);
              an up cell between scales -> post-processing cells (each block starts with an up cell)
              -> ELU-Conv3x3 -> decoder parameters (discretised logistic mixture, or Bernoulli logits).

Groups: `groups_per_scale` (official utils.py) gives scale 0 (the finest latent scale) `num_groups_per_scale`
groups; with `ada_groups` each coarser scale has half as many, at least `min_groups_per_scale`.

Latents (Sec. 3.2), all Normal with mu and log sigma passed through soft_clamp5(x) = 5 tanh(x / 5) and
sigma = exp(log sigma) + 0.01 (official distributions.py `Normal`):
  p(z_1) = N(0, 1.01^2)  (the official N(mu=0, log_sigma=0) including its +0.01),
  p(z_l | z_<l) = N(mu_p, sigma_p)                          from ELU-Conv1x1 of the top-down features,
  q(z_l | x, z_<l) = N(mu_p + dmu_q, exp(log sigma_p + dlog sigma_q))   (`res_dist`, residual Normal),
  KL(q || p) analytic per element: 0.5 (dmu^2 / sigma_p^2 + sigma_q^2 / sigma_p^2) - 0.5 - log(sigma_q / sigma_p).
With `num_nf` > 0, each posterior sample goes through that many `PairedCellAR` volume-preserving autoregressive
flows and the KL becomes the one-sample estimate log q(z) - log p(z) (official `with_nf`).

Training objective (official train.py / utils.py): recon + beta * KL-balanced sum over groups (beta = KL warm-up
coefficient; balancing only while beta < 1) + lambda * (sum of spectral norms + sum of max |BN gamma|).

Precision: `dtype` (config.compute_dtype) is the dtype of the networks' activations and convolutions; the
posterior and prior parameters, every log-density and KL term, the decoder's logistic mixture (or Bernoulli), the
spectral and BatchNorm regularisers and the importance-weighted estimator's log-sum-exp are float32.

Evaluation: `log_prob` is the ELBO (one posterior sample, BN in inference mode); `importance_weighted_log_prob`
the K-sample bound log (1/K) sum_k p(x, z_k) / q(z_k | x), computed in chunks.

Sampling: `sample(rng, num, temperature)` scales every prior's sigma (and the logistic noise of the output) by
the temperature. The paper re-adjusts BatchNorm statistics at that temperature (Sec. 5.2):
`readjust_batch_stats` returns them (500 generator passes in training mode, batch 16, as the official evaluate.py);
keep the result and pass it as "batch_stats" to `sample`, so it is computed once per temperature
(`TemperatureSampler` does this).

`FAMILY` (`jaxgen.training.family.Family`, what the trainer reads) is the likelihood family (the shared
`train_step`; flips are the data loader's `config.augment`) with NVAE's own `eval_step` (per-batch sums of
the negative ELBO, the K-sample importance-weighted NLL with K = config.iw_samples, the KL per group and per latent
unit), `summarize` (means, and the active units from the per-unit KL of the whole split), `sample_images` (BN
statistics re-adjusted by config.readjust_bn_iterations passes; decoder means with config.decoder_means) and `figures`
(temperature sweeps through `TemperatureSampler`; options config.figures.temperatures, num and
readjust_bn_iterations). The BN running averages and the power-iteration vectors live in "batch_stats", i.e. in the
train state's "model_state", and are checkpointed.
"""
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import distributions
from jaxgen import ops
from jaxgen.training import family
from jaxgen.training import figures as figures_lib
from jaxgen.training import steps
from jaxgen.vae import cells
from jaxgen.vae import spectral

CHANNEL_MULT = 2


# ----------------------------------------------------------------------------------------------
# Pieces of the official utils.py / distributions.py.
# ----------------------------------------------------------------------------------------------


def groups_per_scale(num_scales, num_groups_per_scale, ada_groups=False, min_groups_per_scale=1, divider=2):
  """Groups at each latent scale, finest scale first (official utils.py `groups_per_scale`)."""
  groups, n = [], num_groups_per_scale
  for _ in range(num_scales):
    if n < 1:
      raise ValueError("num_groups_per_scale must be >= 1")
    groups.append(n)
    if ada_groups:
      n = max(min_groups_per_scale, n // divider)
  return groups


def kl_balancer_coeff(groups):
  """alpha_i of KL balancing, official `kl_balancer_coeff(fun='square')`, in decoder order (coarsest first).

  A group at decoder scale i (0 = coarsest) gets 4^i / (groups at that scale), normalised so the smallest is 1.
  """
  num_scales = len(groups)
  coeff = np.concatenate([np.full(groups[num_scales - i - 1], (2.0 ** i) ** 2 / groups[num_scales - i - 1])
                          for i in range(num_scales)])
  return coeff / coeff.min()  # [G]


def kl_coeff(step, anneal_steps, const_steps, min_coeff):
  """KL warm-up beta(step) = max(min((step - const_steps) / anneal_steps, 1), min_coeff) (official `kl_coeff`)."""
  step = jnp.asarray(step, jnp.float32)
  return jnp.maximum(jnp.minimum((step - const_steps) / max(anneal_steps, 1), 1.0), min_coeff)


def kl_balance(kl_all, beta, alpha):
  """beta * sum_i gamma_i KL_i per example (official `kl_balancer(kl_balance=True)`).  kl_all [B, G] -> [B].

  gamma_i is proportional to (mean_batch |KL_i| + 0.01) / alpha_i, normalised to mean 1 and not differentiated;
  balancing applies only while beta < 1, afterwards the plain sum.
  """
  coeff = jnp.mean(jnp.abs(kl_all), axis=0) + 0.01  # [G]
  coeff = coeff / alpha * jnp.sum(coeff)
  coeff = jax.lax.stop_gradient(coeff / jnp.mean(coeff))
  balanced = jnp.sum(kl_all * coeff, axis=1)
  return beta * jnp.where(beta < 1.0, balanced, jnp.sum(kl_all, axis=1))


def soft_clamp5(x):
  """Differentiable clamp to (-5, 5): 5 tanh(x / 5) (official `soft_clamp5`)."""
  return 5.0 * jnp.tanh(x / 5.0)


def normal_params(mu, log_sigma, temperature=1.0):
  """(mu, sigma) of the official `Normal`: soft-clamped, sigma = (exp(log sigma) + 0.01) * temperature."""
  return soft_clamp5(mu), (jnp.exp(soft_clamp5(log_sigma)) + 1e-2) * temperature


def normal_log_prob_elementwise(z, mu, sigma):
  """log N(z; mu, sigma^2) per element, for the (mu, sigma) of `normal_params` (`distributions`' Gaussian)."""
  return distributions.gaussian_log_prob_elementwise(z, mu, jnp.log(sigma))


def normal_kl_elementwise(mu_q, sigma_q, mu_p, sigma_p):
  """KL(N(mu_q, sigma_q) || N(mu_p, sigma_p)) per element (official `Normal.kl`)."""
  term1 = (mu_q - mu_p) / sigma_p
  term2 = sigma_q / sigma_p
  return 0.5 * (term1 * term1 + term2 * term2) - 0.5 - jnp.log(term2)


def preprocess_images(images, *, num_bits=8, binarized=False, pad=0):
  """uint8 [B, H, W, C] -> (x in [0, 1] zero-padded [B, H+2p, W+2p, C], likelihood targets [B, H, W, C]).

  Binarized: targets are the 0/1 images. Otherwise targets are the `num_bits`-bit levels floor(x / 2^(8-b))
  (official utils.py `pre_process`) and x = levels / (2^b - 1).
  """
  if binarized:
    target = images
    x = images.astype(jnp.float32)
  else:
    if not jnp.issubdtype(images.dtype, jnp.integer):
      raise ValueError("images must be integers (uint8 0..255) as the input pipeline hands them out")
    target = jnp.floor_divide(images.astype(jnp.int32), 2 ** (8 - num_bits))
    x = target.astype(jnp.float32) / (2 ** num_bits - 1)
  if pad:
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  return x, target


def _sum_hwc(x):  # [B, H, W, C] -> [B]
  return jnp.sum(x, axis=(1, 2, 3))


# ----------------------------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------------------------


class Model(nn.Module):
  """NVAE. Hyperparameters follow the official train.py flags of the same names.

  Images enter as uint8 [B, H, W, C]: 0/1 with `binarized` (Bernoulli decoder), otherwise 8-bit values reduced
  to `num_bits` bits as official `pre_process` (floor(x / 2^(8 - b))) and modelled by a discretised logistic
  mixture with `num_mixture_dec` components. `pad` pixels of zeros are added on each side (2 for 28x28 MNIST,
  as the official loader) and left out of the likelihood and the samples.
  """
  image_shape: tuple = (32, 32, 3)  # (H, W, C)
  binarized: bool = False
  num_bits: int = 8
  pad: int = 0
  # Architecture.
  num_channels_enc: int = 32
  num_channels_dec: int = 32
  num_preprocess_blocks: int = 2
  num_preprocess_cells: int = 3
  num_postprocess_blocks: int = 2
  num_postprocess_cells: int = 3
  num_cell_per_cond_enc: int = 1
  num_cell_per_cond_dec: int = 1
  num_latent_scales: int = 1
  num_groups_per_scale: int = 10
  num_latent_per_group: int = 20
  ada_groups: bool = False
  min_groups_per_scale: int = 1
  num_mixture_dec: int = 10
  num_nf: int = 0
  use_se: bool = True
  res_dist: bool = True
  # Objective.
  kl_anneal_steps: int = 0       # official kl_anneal_portion (0.3) * total steps
  kl_const_steps: int = 0        # official kl_const_portion (1e-4) * total steps
  kl_const_coeff: float = 1e-4
  kl_balance: bool = True
  weight_decay_norm: float = 1e-2
  weight_decay_norm_init: float = 10.0
  weight_decay_norm_anneal: bool = False
  num_power_iterations: int = spectral.NUM_POWER_ITERATIONS
  report_kl_per_group: bool = True
  # Convolution kernels (jaxgen.ops, same math): "auto" = the matmul forms on CPU (several times faster there),
  # lax convolutions elsewhere; "native" also supports forward-mode AD (the depthwise shifted sum has a custom VJP).
  conv_impl: str = "auto"
  # Compute dtype of the networks (config.compute_dtype); the likelihood terms stay float32 (module docstring).
  dtype: Any = jnp.float32
  # Recompute each residual cell in the backward pass (jax.checkpoint) instead of storing its activations: less
  # memory, about one more forward pass of compute; same parameters and gradients.
  remat: bool = False

  # --- static structure ------------------------------------------------------------------------

  @property
  def groups(self):
    return groups_per_scale(self.num_latent_scales, self.num_groups_per_scale, self.ada_groups,
                            self.min_groups_per_scale)

  @property
  def num_groups(self):
    return sum(self.groups)

  @property
  def padded_size(self):
    """(H + 2 pad, W + 2 pad): the size the networks see."""
    height, width, _ = self.image_shape
    return height + 2 * self.pad, width + 2 * self.pad

  @property
  def _top_size(self):
    """(h, w) of the coarsest latent scale and of prior_ftr0."""
    return tuple(n // 2 ** self._num_downsamplings for n in self.padded_size)

  @property
  def _num_downsamplings(self):
    return self.num_preprocess_blocks + self.num_latent_scales - 1

  def latent_shapes(self):
    """(h, w, c) of every latent group in decoder order (coarsest scale first)."""
    shapes, (top_h, top_w) = [], self._top_size
    for s in range(self.num_latent_scales):
      shape = (top_h * 2 ** s, top_w * 2 ** s, self.num_latent_per_group)
      shapes += [shape] * self.groups[self.num_latent_scales - s - 1]
    return shapes

  def _check_config(self):
    factor = 2 ** self._num_downsamplings
    if len(self.image_shape) != 3:
      raise ValueError(f"image_shape must be (H, W, C), got {self.image_shape}")
    if any(n % factor for n in self.padded_size):
      raise ValueError(
          f"image_shape[:2] + 2 * pad = {self.padded_size} must be divisible by 2^(num_preprocess_blocks + "
          f"num_latent_scales - 1) = {factor}; change pad, num_preprocess_blocks or num_latent_scales.")
    if not 1 <= self.num_bits <= 8:
      raise ValueError(f"num_bits must be in 1..8, got {self.num_bits}")
    ops.check_impl(self.conv_impl)
    if self.binarized and self.num_bits != 8:
      raise ValueError("binarized data uses a Bernoulli decoder; num_bits does not apply (leave it at 8)")
    if self.num_preprocess_cells < 1 or self.num_postprocess_cells < 1:
      raise ValueError("num_preprocess_cells and num_postprocess_cells must be >= 1")
    if self.num_postprocess_blocks != self.num_preprocess_blocks:
      raise ValueError("num_postprocess_blocks must equal num_preprocess_blocks, or the decoder's output "
                       "resolution differs from the input's")

  @property
  def _vanilla(self):
    return self.num_latent_scales == 1 and self.num_groups_per_scale == 1

  def _encoder_plan(self):
    """Ops of the bottom-up tower, official `init_encoder_tower`: ('cell'|'combiner'|'down', channels)."""
    plan, mult = [], CHANNEL_MULT ** self.num_preprocess_blocks
    if self._vanilla:
      return plan, mult
    for s in range(self.num_latent_scales):
      for g in range(self.groups[s]):
        plan += [("cell", self.num_channels_enc * mult)] * self.num_cell_per_cond_enc
        if not (s == self.num_latent_scales - 1 and g == self.groups[s] - 1):
          plan.append(("combiner", self.num_channels_enc * mult))
      if s < self.num_latent_scales - 1:
        plan.append(("down", self.num_channels_enc * mult * CHANNEL_MULT))
        mult *= CHANNEL_MULT
    return plan, mult

  def _decoder_plan(self):
    """Ops of the top-down tower, official `init_decoder_tower`: ('cell'|'combiner'|'up', channels)."""
    plan, mult = [], CHANNEL_MULT ** self._num_downsamplings
    if self._vanilla:
      return plan, mult
    for s in range(self.num_latent_scales):
      for g in range(self.groups[self.num_latent_scales - s - 1]):
        if not (s == 0 and g == 0):
          plan += [("cell", self.num_channels_dec * mult)] * self.num_cell_per_cond_dec
        plan.append(("combiner", self.num_channels_dec * mult))
      if s < self.num_latent_scales - 1:
        plan.append(("up", self.num_channels_dec * mult // CHANNEL_MULT))
        mult //= CHANNEL_MULT
    return plan, mult

  @property
  def _num_output_params(self):
    if self.binarized:
      return self.image_shape[-1]
    return distributions.dmol_num_params(self.image_shape[-1], self.num_mixture_dec)

  def setup(self):
    self._check_config()
    cell = nn.remat(cells.ResidualCell, static_argnums=(2,)) if self.remat else cells.ResidualCell  # 2: `train`
    c_enc, c_dec, latent = self.num_channels_enc, self.num_channels_dec, self.num_latent_per_group
    self.stem = cells.Conv2D(c_enc, 3, padding=1, use_bias=True, conv_impl=self.conv_impl)
    pre, mult = [], 1
    for _ in range(self.num_preprocess_blocks):
      for c in range(self.num_preprocess_cells):
        if c == self.num_preprocess_cells - 1:
          pre.append(cell(c_enc * mult * CHANNEL_MULT, "encoder", "down", use_se=self.use_se,
                                        conv_impl=self.conv_impl))
          mult *= CHANNEL_MULT
        else:
          pre.append(cell(c_enc * mult, "encoder", "none", use_se=self.use_se, conv_impl=self.conv_impl))
    self.pre_process = pre

    enc_plan, mult = self._encoder_plan()
    enc_ops = []
    for kind, ch in enc_plan:
      if kind == "combiner":
        enc_ops.append(cells.EncCombiner(ch, self.conv_impl))
      else:
        enc_ops.append(cell(ch, "encoder", "down" if kind == "down" else "none",
                                          use_se=self.use_se, conv_impl=self.conv_impl))
    self.enc_tower = enc_ops
    self.enc0 = cells.Conv2D(c_enc * mult, 1, use_bias=True, conv_impl=self.conv_impl)  # used as ELU-Conv-ELU

    # Per-group samplers and flows, decoder order (input channels are inferred).
    enc_sampler, dec_sampler, nf_cells = [], [], []
    for s in range(self.num_latent_scales):
      for g in range(self.groups[self.num_latent_scales - s - 1]):
        enc_sampler.append(cells.Conv2D(2 * latent, 3, padding=1, use_bias=True, conv_impl=self.conv_impl))
        nf_cells += [cells.PairedCellAR(self.conv_impl) for _ in range(self.num_nf)]
        if not (s == 0 and g == 0):
          dec_sampler.append(cells.Conv2D(2 * latent, 1, use_bias=True, conv_impl=self.conv_impl))  # used as ELU-Conv
    self.enc_sampler, self.dec_sampler, self.nf_cells = enc_sampler, dec_sampler, nf_cells

    dec_plan, mult = self._decoder_plan()
    dec_ops = []
    for kind, ch in dec_plan:
      if kind == "combiner":
        dec_ops.append(cells.DecCombiner(ch, self.conv_impl))
      else:
        dec_ops.append(cell(ch, "decoder", "up" if kind == "up" else "none", expansion=6,
                                          use_se=self.use_se, conv_impl=self.conv_impl))
    self.dec_tower = dec_ops
    if self._vanilla:
      self.stem_decoder = cells.Conv2D(c_enc * mult, 1, use_bias=True, conv_impl=self.conv_impl)

    top_channels = c_dec * CHANNEL_MULT ** self._num_downsamplings
    # Learned input of the top-down path, torch.rand init.
    self.prior_ftr0 = self.param("prior_ftr0", nn.initializers.uniform(1.0), self._top_size + (top_channels,))

    post = []
    for _ in range(self.num_postprocess_blocks):
      for c in range(self.num_postprocess_cells):
        if c == 0:
          post.append(cell(c_dec * mult // CHANNEL_MULT, "decoder", "up", expansion=3,
                                         use_se=self.use_se, conv_impl=self.conv_impl))
          mult //= CHANNEL_MULT
        else:
          post.append(cell(c_dec * mult, "decoder", "none", expansion=3, use_se=self.use_se,
                                         conv_impl=self.conv_impl))
    self.post_process = post
    self.image_conditional = cells.Conv2D(self._num_output_params, 3, padding=1, use_bias=True,
                                          conv_impl=self.conv_impl)
    self.spectral_regularizer = spectral.SpectralRegularizer(self.num_power_iterations)

  # --- data ------------------------------------------------------------------------------------

  def _preprocess(self, images):
    """uint8 [B, H, W, C] -> (x in [0, 1] padded [B, H+2p, W+2p, C], targets for the likelihood)."""
    if images.ndim != 4 or images.shape[1:] != tuple(self.image_shape):
      raise ValueError(f"expected images [B, {', '.join(map(str, self.image_shape))}], got {images.shape}; set "
                       f"the model's image_shape to the dataset's.")
    return preprocess_images(images, num_bits=self.num_bits, binarized=self.binarized, pad=self.pad)

  def _crop(self, y):
    if not self.pad:
      return y
    p, (height, width, _) = self.pad, self.image_shape
    return y[:, p:p + height, p:p + width]

  def _nll(self, params, target):
    """-log p(x | z) per example.  params [B, H, W, P] (cropped), target uint8/int [B, H, W, C] -> [B]."""
    if self.binarized:
      return -distributions.bernoulli_log_prob(target, params)
    return -distributions.discretized_logistic_mixture_log_prob(target, params, self.num_bits)

  # --- networks --------------------------------------------------------------------------------

  def _flows(self, z, group):
    log_det = jnp.zeros(z.shape[:1], z.dtype)
    for n in range(self.num_nf):
      z, ld = self.nf_cells[group * self.num_nf + n](z)
      log_det = log_det + ld
    return z, log_det

  def _group_terms(self, q, p, z0, z, log_det):
    """Per-group log q, log p [B], KL [B] and per-example KL of every channel, summed over positions [B, C]."""
    log_q_el = normal_log_prob_elementwise(z0, *q)
    log_p_el = normal_log_prob_elementwise(z, *p)
    if self.num_nf:
      kl_el = log_q_el - log_p_el  # one-sample estimate (official `with_nf`)
      kl = _sum_hwc(kl_el) - log_det
    else:
      kl_el = normal_kl_elementwise(*q, *p)
      kl = _sum_hwc(kl_el)
    kl_diag = jnp.sum(kl_el, axis=(1, 2))  # [B, C]
    return _sum_hwc(log_q_el) - log_det, _sum_hwc(log_p_el), kl, kl_diag

  def _prior_params(self, idx, s):
    """Unclamped (mu, log sigma) of p(z_idx | z_<idx) from the decoder features s before group idx: zeros for the
    top group (N(0, 1) before the official +0.01), ELU-Conv1x1 of s for the others."""
    if idx == 0:
      zeros = jnp.zeros(s.shape[:1] + self.latent_shapes()[0], jnp.float32)
      return zeros, zeros
    return jnp.split(self.dec_sampler[idx - 1](jax.nn.elu(s)).astype(jnp.float32), 2, axis=-1)

  def _top_down(self, batch, train, draw_z):
    """The decoder: prior_ftr0 -> tower -> post-processing -> decoder parameters [batch, H, W, P] (cropped).

    draw_z(idx, s) -> z_idx [batch, h, w, c] gives each group's latent from the features s that reach the group's
    combiner (the posterior sample in `_forward`, a prior sample in `generate`); it is called once per group, in
    decoder order, and for the single latent of the vanilla (one-group) model.
    """
    s = jnp.broadcast_to(self.prior_ftr0[None], (batch,) + self.prior_ftr0.shape).astype(self.dtype)  # [B, h, w, C]
    dec_plan, _ = self._decoder_plan()
    idx = 0
    for (kind, _), op in zip(dec_plan, self.dec_tower):
      if kind == "combiner":
        s = op(s, draw_z(idx, s).astype(self.dtype))
        idx += 1
      else:
        s = op(s, train)
    if self._vanilla:
      s = self.stem_decoder(draw_z(0, s).astype(self.dtype))
    for cell in self.post_process:
      s = cell(s, train)
    return self._crop(self.image_conditional(jax.nn.elu(s))).astype(jnp.float32)  # the likelihood in float32

  def _forward(self, x, train, posterior_mean=False):
    """Encoder + decoder on x in [0, 1] (padded).  Returns decoder params (cropped) and the latent terms.

    posterior_mean: every group's z is the mean of q(z | x, z_<l) (before the flows) instead of a sample.
    """
    s = self.stem((2.0 * x - 1.0).astype(self.dtype))
    for cell in self.pre_process:
      s = cell(s, train)
    enc_plan, _ = self._encoder_plan()
    combiners, combiner_inputs = [], []
    for (kind, _), op in zip(enc_plan, self.enc_tower):
      if kind == "combiner":
        combiners.append(op)
        combiner_inputs.append(s)
      else:
        s = op(s, train)
    combiners.reverse()
    combiner_inputs.reverse()
    top_ftr = jax.nn.elu(self.enc0(jax.nn.elu(s)))
    terms, zs = [], []

    def posterior_sample(idx, s):
      """z_idx ~ q(z_idx | x, z_<idx) (then the flows), recording the group's log q, log p and KL terms."""
      mu_p, log_sig_p = self._prior_params(idx, s)
      if idx == 0:
        mu_q, log_sig_q = jnp.split(self.enc_sampler[0](top_ftr).astype(jnp.float32), 2, axis=-1)
      else:
        ftr = combiners[idx - 1](combiner_inputs[idx - 1], s)
        mu_q, log_sig_q = jnp.split(self.enc_sampler[idx](ftr).astype(jnp.float32), 2, axis=-1)
        if self.res_dist:
          mu_q, log_sig_q = mu_p + mu_q, log_sig_p + log_sig_q
      q = normal_params(mu_q, log_sig_q)
      z0 = q[0] if posterior_mean else q[0] + q[1] * jax.random.normal(self.make_rng("sample"), q[0].shape,
                                                                          q[0].dtype)
      z, log_det = self._flows(z0, idx)
      terms.append(self._group_terms(q, normal_params(mu_p, log_sig_p), z0, z, log_det))
      zs.append(z)
      return z

    params = self._top_down(x.shape[0], train, posterior_sample)
    log_q, log_p, kl, kl_diag = zip(*terms)
    return params, dict(log_q=sum(log_q), log_p=sum(log_p), kl_all=jnp.stack(kl, axis=1),  # [B, G]
                        kl_diag=list(kl_diag), z=zs)

  def _forward_collecting_kernels(self, x, train):
    """`_forward`, also returning the effective kernel of every convolution (for spectral regularisation)."""
    kernels = []

    def collect(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == "effective_kernel" and isinstance(context.module, cells.Conv2D):
        kernels.append(out)
      return out

    if not self.remat:
      with nn.intercept_methods(collect):
        params, aux = self._forward(x, train)
      return params, aux, kernels
    # A kernel computed inside a checkpointed cell cannot leave it through the interceptor (it would leak the
    # checkpoint's tracer): collect them from a pass of the same model without remat on one example, whose
    # activations XLA drops as unused (the kernels depend on the parameters only).
    params, aux = self._forward(x, train)
    _, _, kernels = self.clone(parent=None, remat=False).apply(
        self.variables, x[:1], False, rngs={"sample": self.make_rng("sample")},
        method=Model._forward_collecting_kernels)
    return params, aux, kernels

  # --- public API ------------------------------------------------------------------------------

  def __call__(self, images, labels=None, *, train: bool = False, step=None):
    return self.losses(images, labels, train=train, step=step)

  def losses(self, images, labels=None, *, train: bool, step=None):
    """Per-example losses [B]. "loss" is what training minimises; the rest are reported.

    Training: recon + KL-balanced beta * KL + lambda * (spectral + BN-scale) regularisation; evaluation (or
    train=False): the negative ELBO. "nelbo" is always recon + KL (no warm-up), in nats, and "nelbo_bpd" its
    bits per dimension (also "nelbo_nats" for binarized data, the unit of the MNIST literature).
    """
    del labels  # unconditional
    return self._losses_and_aux(images, train=train, step=step)[0]

  def evaluation_terms(self, images, labels=None):
    """(`losses(train=False)`, per-example KL of every latent unit [B, U]) from one forward pass.

    A unit is a channel of a group's latent (U = groups x latents per group), its KL summed over positions;
    a unit is active when its KL averaged over the data exceeds 0.1 nats (official `kl/total_active`).
    """
    del labels
    out, aux = self._losses_and_aux(images, train=False, step=None)
    return out, jnp.concatenate(aux["kl_diag"], axis=1)  # [B, U]

  def _losses_and_aux(self, images, *, train, step):
    x, target = self._preprocess(images)
    params, aux, kernels = self._forward_collecting_kernels(x, train)
    recon = self._nll(params, target)  # [B]
    kl_all = aux["kl_all"]  # [B, G]
    kl = jnp.sum(kl_all, axis=1)
    nelbo = recon + kl
    spectral_loss = self.spectral_regularizer(kernels, update=train)
    bn_loss = spectral.batchnorm_scale_loss(self.variables["params"])
    beta = jnp.ones((), jnp.float32)
    if train and step is not None and self.kl_anneal_steps > 0:
      beta = kl_coeff(step, self.kl_anneal_steps, self.kl_const_steps, self.kl_const_coeff)
    if train:
      alpha = jnp.asarray(kl_balancer_coeff(self.groups), jnp.float32)
      kl_term = kl_balance(kl_all, beta, alpha) if self.kl_balance else beta * kl
      lam = spectral.regularization_coefficient(beta, self.weight_decay_norm, self.weight_decay_norm_init,
                                                self.weight_decay_norm_anneal)
      loss = recon + kl_term + lam * (spectral_loss + bn_loss)
    else:
      lam = jnp.zeros((), jnp.float32)
      loss = nelbo
    batch = images.shape[0]
    active = sum(jnp.sum(jnp.mean(d, axis=0) > 0.1) for d in aux["kl_diag"]).astype(jnp.float32)
    full = lambda v: jnp.broadcast_to(v, (batch,))
    out = dict(loss=loss, nelbo=nelbo, recon=recon, kl=kl, kl_coeff=full(beta), spectral_loss=full(spectral_loss),
               bn_loss=full(bn_loss), reg_coeff=full(lam), active_units=full(active))
    out["nelbo_bpd"] = nelbo / (np.prod(images.shape[1:]) * np.log(2.0))
    if self.binarized:
      out["nelbo_nats"] = nelbo
    if self.report_kl_per_group:
      out.update({f"kl_group_{i:02d}": kl_all[:, i] for i in range(kl_all.shape[1])})
    return out, aux

  def log_prob(self, images):
    """ELBO per example [B] in nats (one posterior sample; BN in inference mode)."""
    x, target = self._preprocess(images)
    params, aux = self._forward(x, train=False)
    return -(self._nll(params, target) + jnp.sum(aux["kl_all"], axis=1))

  def log_importance_weights(self, images):
    """log p(x | z) + log p(z) - log q(z | x) for one z ~ q per example, [B] (BN in inference mode)."""
    x, target = self._preprocess(images)
    params, aux = self._forward(x, train=False)
    return -self._nll(params, target) + aux["log_p"] - aux["log_q"]

  def kl_per_group(self, images):
    """KL of every group [B, G] (decoder order) and of every latent unit [B, U] (a group's channel, summed over
    positions; see `evaluation_terms` for active units)."""
    x, _ = self._preprocess(images)
    _, aux = self._forward(x, train=False)
    return aux["kl_all"], jnp.concatenate(aux["kl_diag"], axis=1)

  def posterior_latents(self, images):
    """One sample z_l ~ q of every group (after the flows), decoder order: list of [B, h_l, w_l, c]."""
    x, _ = self._preprocess(images)
    return self._forward(x, train=False)[1]["z"]

  def reconstruct(self, images):
    """uint8 [B, H, W, C]: the images decoded from their posterior means (every group's z the mean of q), the
    decoder's distribution read deterministically (`_read_images`)."""
    x, _ = self._preprocess(images)
    params, _ = self._forward(x, train=False, posterior_mean=True)
    return self._read_images(params)

  def encode(self, images, posterior_mean=True):
    """Every group's latent z_l for images, decoder order (list of [B, h_l, w_l, c]): with `posterior_mean` the mean
    of q(z_l | x, z_<l) (then the flows), else a sample (the "sample" rng stream)."""
    x, _ = self._preprocess(images)
    return self._forward(x, train=False, posterior_mean=posterior_mean)[1]["z"]

  def decode(self, zs):
    """uint8 [B, H, W, C]: the decoder run on given latents `zs` (as `encode` returns them), read by `_read_images`;
    decode(encode(x)) equals reconstruct(x)."""
    return self._read_images(self._top_down(zs[0].shape[0], False, lambda idx, s: zs[idx]))

  def _read_images(self, params):
    """Decoder parameters [B, H, W, P] -> uint8 images: Bernoulli p > 1/2 for binarized data, else the most likely
    mixture component's mean, rounded to the data's levels."""
    if self.binarized:
      return (params > 0).astype(jnp.uint8)
    levels = distributions.discretized_logistic_mixture_mode(params, self.image_shape[-1], self.num_bits)
    return jnp.round(levels.astype(jnp.float32) * (255.0 / (2 ** self.num_bits - 1))).astype(jnp.uint8)

  def generate(self, rng, num: int, temperature: float = 1.0, train: bool = False):
    """Top-down pass from the prior at `temperature`: decoder parameters [num, H, W, P] (cropped).

    With train=True BatchNorm normalises with the batch statistics and updates its running averages
    (the official BN re-adjustment runs this under `model.train()`).
    """
    def prior_sample(idx, s):
      mu, sigma = normal_params(*self._prior_params(idx, s), temperature)
      return mu + sigma * jax.random.normal(jax.random.fold_in(rng, idx), mu.shape, mu.dtype)

    return self._top_down(num, train, prior_sample)

  def sample(self, rng, num: int, temperature: float = 1.0):
    """uint8 [num, H, W, C] samples at `temperature` (0/1 for binarized data, 8-bit values otherwise).

    Uses the "batch_stats" it is given: pass the result of `readjust_batch_stats` for the paper's samples.
    """
    rng_latent, rng_pixels = jax.random.split(rng)
    params = self.generate(rng_latent, num, temperature, train=False)
    if self.binarized:
      return distributions.bernoulli_sample(rng_pixels, params).astype(jnp.uint8)
    levels = distributions.discretized_logistic_mixture_sample(
        rng_pixels, params, self.image_shape[-1], self.num_bits, temperature)
    scale = 255.0 / (2 ** self.num_bits - 1)
    return jnp.round(levels.astype(jnp.float32) * scale).astype(jnp.uint8)


# ----------------------------------------------------------------------------------------------
# Evaluation and sampling helpers (pure functions of the variables).
# ----------------------------------------------------------------------------------------------


def importance_weighted_log_prob(model, variables, images, rng, num_samples=1000, chunk_size=10):
  """log (1/K) sum_k p(x, z_k) / q(z_k | x), z_k ~ q (Burda et al. 2016), per example [B] in nats.

  The K samples are drawn `chunk_size` at a time (the batch repeated chunk_size times per forward pass) and
  folded into a running log-sum-exp, so memory is that of a batch of B * chunk_size. K=1000 in the paper.
  """
  batch = images.shape[0]
  chunk_size = max(1, min(chunk_size, num_samples))
  num_chunks = -(-num_samples // chunk_size)
  tiled = jnp.tile(images, (chunk_size, 1, 1, 1))  # [chunk * B, H, W, C], sample-major

  def body(acc, i):
    log_w = model.apply(variables, tiled, rngs={"sample": jax.random.fold_in(rng, i)},
                        method=Model.log_importance_weights).reshape(chunk_size, batch)
    valid = (i * chunk_size + jnp.arange(chunk_size)) < num_samples
    log_w = jnp.where(valid[:, None], log_w, -jnp.inf)
    return jnp.logaddexp(acc, jax.nn.logsumexp(log_w, axis=0)), None

  acc, _ = jax.lax.scan(body, jnp.full((batch,), -jnp.inf), jnp.arange(num_chunks))
  return acc - math.log(num_samples)


def readjust_batch_stats(model, variables, rng, temperature, num_samples=16, num_iterations=500):
  """BatchNorm statistics re-adjusted to samples at `temperature` (paper Sec. 5.2; official evaluate.py `set_bn`).

  Runs the generator `num_iterations` times in training mode on `num_samples` prior samples, letting every
  decoder BN update its running averages (momentum 0.05 per pass, so the old statistics fade out). Returns the
  whole new "batch_stats" collection; keep it (e.g. in a dict keyed by temperature) and sample with
  `{"params": ..., "batch_stats": it}` so the 500 passes are not repeated on every call.
  """
  def body(i, batch_stats):
    _, updated = model.apply({**variables, "batch_stats": batch_stats}, jax.random.fold_in(rng, i), num_samples,
                             temperature, train=True, method=Model.generate, mutable=["batch_stats"])
    return updated["batch_stats"]

  return jax.lax.fori_loop(0, num_iterations, body, variables["batch_stats"])


def decoder_mean_images(model, variables, rng, num, temperature=1.0):
  """uint8 [num, H, W, C] 8-bit images of the decoder's means at latent `temperature`, as official NVAE's FID
  generator (train.py `create_generator_vae`: `output.mean`): p(x = 1 | z) * 255 for binarized data, else the
  mixture-weighted logistic means (`distributions.discretized_logistic_mixture_mean`) * 255, rounded."""
  params = model.apply(variables, rng, num, temperature, method=Model.generate)
  if model.binarized:
    mean = jax.nn.sigmoid(params)
  else:
    mean = (distributions.discretized_logistic_mixture_mean(params, model.image_shape[-1]) + 1.0) / 2.0
  return jnp.round(mean * 255.0).astype(jnp.uint8)


def display_images(model, variables, rng, num, temperature):
  """uint8 [num, H, W, C] images to look at: `Model.sample`, except for binarized data the Bernoulli means
  p(x = 1 | z) * 255 (official train.py shows `output.mean` for Bernoulli decoders; 0/1 samples look like noise)."""
  if not model.binarized:
    return model.apply(variables, rng, num, temperature, method=Model.sample)
  return decoder_mean_images(model, variables, jax.random.split(rng)[0], num, temperature)


class TemperatureSampler:
  """Samples at any temperature with BatchNorm statistics re-adjusted to that temperature, each computed once.

    sampler = nvae.TemperatureSampler(model, variables, jax.random.key(1))
    images = sampler.sample(jax.random.key(0), 64, temperature=0.7)  # 500 generator passes at 0.7, then cached

  The statistics of a temperature (`readjust_batch_stats`, official evaluate.py `set_bn`: 500 passes of 16
  samples) are kept in `self.cache`; later calls at that temperature reuse them. One compiled function serves
  every temperature. `num_iterations=0` samples with the running averages from training.
  """

  def __init__(self, model, variables, rng, num_samples=16, num_iterations=500):
    self.model, self.variables, self.rng, self.num_iterations = model, variables, rng, num_iterations
    self.cache = {}  # temperature -> "batch_stats"
    self._readjust = jax.jit(functools.partial(readjust_batch_stats, model, num_samples=num_samples,
                                               num_iterations=num_iterations))
    self._sample = jax.jit(functools.partial(display_images, model), static_argnums=2)

  def batch_stats(self, temperature):
    key = float(temperature)
    if key not in self.cache:
      self.cache[key] = self._readjust(self.variables, self.rng, jnp.float32(key))
    return self.cache[key]

  def sample(self, rng, num, temperature=1.0):
    """uint8 [num, H, W, C] at `temperature` (`display_images`), with the statistics re-adjusted to it."""
    variables = dict(self.variables)
    if self.num_iterations:
      variables["batch_stats"] = self.batch_stats(temperature)
    return self._sample(variables, rng, num, jnp.float32(temperature))


# ----------------------------------------------------------------------------------------------
# The family: what the shared trainer runs (`FAMILY`, jaxgen.training.family).
# ----------------------------------------------------------------------------------------------

ACTIVE_UNIT_THRESHOLD = 0.1  # nats (official train.py: `torch.sum(kl_diag_i > 0.1)`)


def eval_step(state, batch, rng, *, model, config):
  """Per-batch sums over real (mask == 1) examples of `Model.losses` (train=False: "nelbo", "nelbo_bpd", ...,
  KL per group), of the per-unit KL "kl_units" [U], and with config.iw_samples = K > 0 of the importance-weighted
  NLL with K samples, "iw_nll_bpd" (and "iw_nll_nats" for binarized data), drawn config.iw_chunk_size at a time
  (memory of a batch of eval_batch_size x iw_chunk_size images). Plus "count".
  """
  variables = steps.eval_variables(state)
  rng_elbo, rng_iw = jax.random.split(rng)
  terms, kl_units = model.apply(variables, batch["image"], rngs={"sample": rng_elbo},
                                method=Model.evaluation_terms)
  mask = batch["mask"].astype(jnp.float32)  # [B]
  sums = {name: jnp.sum(value * mask) for name, value in terms.items()}
  sums["kl_units"] = jnp.sum(kl_units * mask[:, None], axis=0)  # [U]
  num_samples = int(config.get("iw_samples", 0))
  if num_samples:
    nll = -importance_weighted_log_prob(model, variables, batch["image"], rng_iw, num_samples,
                                        int(config.get("iw_chunk_size", 1)))  # [B]
    sums["iw_nll_bpd"] = jnp.sum(nll * mask) / (np.prod(model.image_shape) * np.log(2.0))
    if model.binarized:
      sums["iw_nll_nats"] = jnp.sum(nll * mask)
  return sums | {"count": jnp.sum(mask)}


def summarize(totals):
  """Means of `eval_step`'s sums over a split, and the number of active latent units.

  Active units need data-level statistics: each unit's KL is summed over the examples, divided by their number,
  and thresholded at 0.1 nats afterwards (not a per-batch count averaged). Adds "active_units" and
  "latent_units" (U) to the means.
  """
  totals = dict(totals)
  kl_units = np.asarray(totals.pop("kl_units"), np.float64) / float(totals["count"])  # [U]
  return family.mean_summary(totals) | {"active_units": int(np.sum(kl_units > ACTIVE_UNIT_THRESHOLD)),
                                        "latent_units": int(kl_units.size)}


def sample_images(state, rng, labels, *, model, config):
  """`Family.sample_images`: uint8 [num, H, W, C] `Model.sample` draws at config.sample_temperature (0/1 for
  binarized data), or with config.decoder_means the 8-bit `decoder_mean_images` (NVAE's FID protocol).

  With config.readjust_bn_iterations = n > 0 the BatchNorm statistics are first re-adjusted by n generator passes
  of config.readjust_bn_batch (default 16) samples at config.readjust_bn_temperature (default: the sampling
  temperature). The paper uses 500 passes; a few dozen suffice for a progress grid, since each pass moves the
  running averages by momentum 0.05. The parameters change between the trainer's calls, so nothing is cached
  here; `TemperatureSampler` caches for a fixed model.
  """
  variables = steps.eval_variables(state)
  rng_bn, rng_sample = jax.random.split(rng)
  iterations = int(config.get("readjust_bn_iterations", 0))
  if iterations:
    variables["batch_stats"] = readjust_batch_stats(
        model, variables, rng_bn, config.get("readjust_bn_temperature", config.sample_temperature),
        num_samples=int(config.get("readjust_bn_batch", 16)), num_iterations=iterations)
  if config.get("decoder_means", False):
    return decoder_mean_images(model, variables, rng_sample, labels.shape[0], config.sample_temperature)
  return model.apply(variables, rng_sample, labels.shape[0], config.sample_temperature, method=Model.sample)


def figures(s, state, *, seed, temperatures, num, readjust_bn_iterations):
  """temperatures.png and temperature_T.png grids (`figures.sweep_figures`), each temperature's samples drawn with
  BatchNorm statistics re-adjusted at that temperature by `readjust_bn_iterations` generator passes (paper Sec.
  5.2; official evaluate.py: 500; 0: the running averages from training), computed once per temperature."""
  sampler = TemperatureSampler(s.model, steps.eval_variables(state), jax.random.key(seed + 1),
                               num_iterations=readjust_bn_iterations)
  sweep = {float(t): np.asarray(sampler.sample(jax.random.key(seed), num * num, t)) for t in temperatures}
  return figures_lib.sweep_figures(sweep, num, "temperatures.png", "temperature")


def encode(s, state, images, labels, rng=None):
  """`Family.encode`: `Model.encode`, the posterior means (rng None) or a posterior sample drawn with rng."""
  del labels  # unconditional
  fn = jax.jit(functools.partial(s.model.apply, posterior_mean=rng is None, method=Model.encode))
  return fn(steps.eval_variables(state), jnp.asarray(images), rngs={} if rng is None else {"sample": rng})


def decode(s, state, latents, labels):
  """`Family.decode`: `Model.decode`."""
  del labels
  return np.asarray(jax.jit(lambda v, z: s.model.apply(v, z, method=Model.decode))(steps.eval_variables(state),
                                                                                        latents))


def reconstruct(s, state, images, labels):
  """`Family.reconstruct`: `Model.reconstruct`, the images decoded from their posterior means."""
  del labels  # unconditional
  fn = jax.jit(lambda v, x: s.model.apply(v, x, method=Model.reconstruct))
  return np.asarray(fn(steps.eval_variables(state), jnp.asarray(images))), "posterior mean"


FAMILY = family.LIKELIHOOD._replace(
    train_step=steps.train_step, eval_step=eval_step, summarize=summarize, sample_images=sample_images, figures=figures,
    figure_options=figures_lib.TEMPERATURE_OPTIONS | dict(readjust_bn_iterations=500),
    progress_keys=("loss", "nelbo_bpd", "grad_norm"), reconstruct=reconstruct, encode=encode, decode=decode)


# ----------------------------------------------------------------------------------------------
# Size preset for tests (the experiment sizes live in experiments/configs/nvae_*.py).
# ----------------------------------------------------------------------------------------------

# For tests: 8x8 RGB, one latent scale of 2 groups, no flows (~30 convolutions).
Tiny = functools.partial(
    Model, image_shape=(8, 8, 3), num_channels_enc=8, num_channels_dec=8, num_preprocess_blocks=1,
    num_preprocess_cells=1, num_postprocess_blocks=1, num_postprocess_cells=1, num_latent_scales=1,
    num_groups_per_scale=2, num_latent_per_group=2, num_mixture_dec=2, num_nf=0, kl_anneal_steps=10)
