"""Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma & Dhariwal 2018), after openai/glow.

x (uint8 image) -> dequantise to [-1/2, 1/2) -> squeeze -> [K flow steps -> split] x (L-1) -> K flow steps -> top prior.
A flow step is ActNorm -> permutation (1x1 conv, LU 1x1 conv, reverse or shuffle) -> coupling (affine or additive).
The whole model is a bijection from x to standard-normal latents `eps`: one array per split level plus the top one,
because the split and top priors are written as affine bijections (see `layers.SplitPrior`), so
log p(x) = sum log N(eps; 0, I) + log_det - D log(n_bins) exactly as openai/glow's objective.

Steps within a level run under `nn.scan` (compile time does not grow with depth) and optionally under
`jax.checkpoint` (`remat=True`), the JAX counterpart of openai/glow's memory-saving gradients.
"""
from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import ops
from jaxgen.flows import layers
from jaxgen.training import family
from jaxgen.training import figures as figures_lib
from jaxgen.training import steps

DEQUANT_MIDPOINT = "midpoint"


class FlowStep(nn.Module):
  """One step of flow (Glow, Fig. 2a): ActNorm -> permutation -> coupling (its network in `dtype`)."""
  hidden_channels: int = 512
  coupling: str = "affine"
  permutation: str = "conv"
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  def setup(self):
    self.actnorm = layers.ActNorm()
    self.permute = layers.PERMUTATIONS[self.permutation]()
    self.couple = layers.COUPLINGS[self.coupling](self.hidden_channels, self.conv_impl, self.dtype)

  def forward_and_log_det(self, x):
    log_det = 0.0
    for layer in (self.actnorm, self.permute, self.couple):
      x, ld = layer.forward_and_log_det(x)
      log_det += ld
    return x, log_det

  def inverse_and_log_det(self, y):
    log_det = 0.0
    for layer in (self.couple, self.permute, self.actnorm):
      y, ld = layer.inverse_and_log_det(y)
      log_det += ld
    return y, log_det


def _scan_body(method, remat):
  def body(step, carry, _):
    x, log_det = carry
    y, ld = getattr(step, method)(x)
    return (y, log_det + ld), None
  return nn.remat(body, prevent_cse=False) if remat else body


class FlowSteps(nn.Module):
  """`depth` flow steps with stacked parameters, run by `nn.scan` (forward) or a reversed scan (inverse)."""
  depth: int
  hidden_channels: int = 512
  coupling: str = "affine"
  permutation: str = "conv"
  remat: bool = False
  unroll: int | bool = 1
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  def setup(self):
    self.step = FlowStep(self.hidden_channels, self.coupling, self.permutation, self.conv_impl, self.dtype)

  def _run(self, method, x, reverse):
    scan = nn.scan(_scan_body(method, self.remat), variable_axes={"params": 0, "constants": 0},
                   split_rngs={"params": True}, length=self.depth, reverse=reverse,
                   unroll=self.unroll)
    (y, log_det), _ = scan(self.step, (x, jnp.zeros(x.shape[:1])), None)
    return y, log_det

  def forward_and_log_det(self, x):
    return self._run("forward_and_log_det", x, reverse=False)

  def inverse_and_log_det(self, y):
    return self._run("inverse_and_log_det", y, reverse=True)


def _check_image_shape(image_shape, levels):
  h, w, c = image_shape
  if h % 2**levels or w % 2**levels:
    raise ValueError(
        f"Glow with levels={levels} squeezes {levels} times, so the image height and width must be divisible by "
        f"2**levels={2**levels}; got {h}x{w}. Set config.model.levels to at most "
        f"{int(np.log2(np.gcd(h, w) & -np.gcd(h, w)))}, or resize the images.")


class Model(nn.Module):
  """Glow (Kingma & Dhariwal 2018, Sec. 3, Fig. 2b), multi-scale, optionally class-conditional.

  Attributes:
    image_shape: (H, W, C) of the data; H and W divisible by 2**levels.
    levels: L, number of scales (squeeze, K steps, split; the last level has no split).
    depth: K, flow steps per level.
    hidden_channels: width of the coupling networks (512 in the paper).
    coupling: "affine" (paper) or "additive".
    permutation: "conv" (the paper's 1x1 conv), "conv_lu", "reverse" or "shuffle" (the ablation).
    learn_top: learn a per-channel mean and log-std of the top prior (openai/glow `--learntop`).
    num_classes: > 0 makes the top prior depend on the label (`--ycond`).
    class_loss_weight: weight of the classifier's bits on the top latent (`--weight_y`).
    num_bits: 8, or 5 as in the CelebA-HQ experiments; bits/dim are then per 5-bit subpixel.
    remat: rematerialise each flow step in the backward pass (less memory, ~30% more compute).
    unroll: flow steps per iteration of the scan over a level's steps; True unrolls the level completely. 1 keeps
      compile time flat in depth (paper size compiles in seconds); on CPU, where XLA's loops copy each step's
      saved activations, unrolling trains ~1.3x faster at the cost of compile time growing with depth.
    conv_impl: how convolutions run, "auto" (per backend), "native" or "matmul" (`jaxgen.ops`).
    dtype: compute dtype of the coupling networks (config.compute_dtype); the flow itself, its log-determinants
      and the priors stay float32 (see `layers`).
  """
  image_shape: Sequence[int] = (32, 32, 3)
  levels: int = 3
  depth: int = 32
  hidden_channels: int = 512
  coupling: str = "affine"
  permutation: str = "conv"
  learn_top: bool = True
  num_classes: int = 0
  class_loss_weight: float = 0.0
  num_bits: int = 8
  remat: bool = False
  unroll: int | bool = 1
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  def setup(self):
    _check_image_shape(self.image_shape, self.levels)
    ops.check_impl(self.conv_impl)
    if self.coupling not in layers.COUPLINGS:
      raise ValueError(f"Unknown coupling {self.coupling!r}; choose one of {sorted(layers.COUPLINGS)}.")
    if self.permutation not in layers.PERMUTATIONS:
      raise ValueError(f"Unknown permutation {self.permutation!r}; choose one of {sorted(layers.PERMUTATIONS)}.")
    if not 1 <= self.num_bits <= 8:
      raise ValueError(f"num_bits must be in 1..8, got {self.num_bits}.")
    self.steps = [FlowSteps(self.depth, self.hidden_channels, self.coupling, self.permutation, self.remat,
                            self.unroll, self.conv_impl, self.dtype)
                  for _ in range(self.levels)]
    self.splits = [layers.SplitPrior(self.conv_impl) for _ in range(self.levels - 1)]
    c_top = self.top_shape[-1]
    if self.learn_top:
      self.top = self.param("top", nn.initializers.zeros, (2 * c_top,))  # [mean, log_std] per channel
    if self.num_classes:
      self.top_from_label = nn.Dense(2 * c_top, kernel_init=nn.initializers.zeros)
      if self.class_loss_weight:  # openai/glow --weight_y: a linear classifier of the mean top z
        self.classifier = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros)

  @property
  def top_shape(self):
    h, w, c = self.image_shape
    s = 2**self.levels
    return (h // s, w // s, c * 2 ** (self.levels + 1))

  @property
  def latent_shapes(self):
    """Shapes (per example) of the latents `eps` returned by `forward_and_log_det`: splits, then top."""
    h, w, c = self.image_shape
    shapes = [(h // 2 ** (i + 1), w // 2 ** (i + 1), c * 2 ** (i + 1)) for i in range(self.levels - 1)]
    return shapes + [self.top_shape]

  def _top_mean_and_log_std(self, batch, labels):
    c_top = self.top_shape[-1]
    h = jnp.zeros((batch, 2 * c_top))
    if self.learn_top:
      h = h + self.top
    if self.num_classes:
      if labels is None:
        raise ValueError("This Glow is class-conditional (num_classes > 0): pass labels.")
      h = h + self.top_from_label(jax.nn.one_hot(labels, self.num_classes))
    return h[:, None, None, :c_top], h[:, None, None, c_top:]  # [B, 1, 1, C_top] each

  def _encode(self, x):
    """x -> (top z before its prior [B, h, w, c], split latents eps, log_det [B]) of the flow steps and splits."""
    if tuple(x.shape[1:]) != tuple(self.image_shape):
      raise ValueError(f"Glow was built for images of shape {tuple(self.image_shape)}, got {tuple(x.shape[1:])}.")
    z, log_det = layers.squeeze(x), jnp.zeros(x.shape[:1])
    eps = []
    for i in range(self.levels):
      z, ld = self.steps[i].forward_and_log_det(z)
      log_det += ld
      if i < self.levels - 1:
        (z, e), ld = self.splits[i].forward_and_log_det(z)
        eps.append(e)
        log_det += ld
        z = layers.squeeze(z)
    return z, eps, log_det

  def _with_top_prior(self, z, eps, log_det, labels):
    mean, log_std = self._top_mean_and_log_std(z.shape[0], labels)
    log_det = log_det - jnp.sum(jnp.broadcast_to(log_std, z.shape), axis=(1, 2, 3))
    return eps + [(z - mean) * jnp.exp(-log_std)], log_det

  def forward_and_log_det(self, x, labels=None):
    """x: [B, H, W, C] continuous (dequantised, in [-1/2, 1/2)) -> (eps: list of [B, h, w, c], log_det [B])."""
    return self._with_top_prior(*self._encode(x), labels)

  def _class_logits(self, z):
    """Classifier logits [B, num_classes] from the top z before its prior (openai/glow model.py: `h_y =
    reduce_mean(z, [1, 2])`), which does not depend on the label the prior is conditioned on."""
    return self.classifier(jnp.mean(z, axis=(1, 2)))

  @property
  def _classifies(self):
    return bool(self.num_classes and self.class_loss_weight)

  def inverse_and_log_det(self, eps, labels=None):
    """eps: list of latents as from `forward_and_log_det` -> (x [B, H, W, C], log_det [B])."""
    mean, log_std = self._top_mean_and_log_std(eps[-1].shape[0], labels)
    z = mean + eps[-1] * jnp.exp(log_std)
    log_det = jnp.sum(jnp.broadcast_to(log_std, z.shape), axis=(1, 2, 3))
    for i in reversed(range(self.levels)):
      if i < self.levels - 1:
        z, ld = self.splits[i].inverse_and_log_det((layers.unsqueeze(z), eps[i]))
        log_det += ld
      z, ld = self.steps[i].inverse_and_log_det(z)
      log_det += ld
    return layers.unsqueeze(z), log_det

  # --- images <-> the continuous space of the flow -------------------------------------------------------------

  @property
  def num_bins(self):
    return 2**self.num_bits

  def preprocess(self, images, noise=None):
    """uint8 [B, H, W, C] -> continuous x in [-1/2, 1/2): drop to num_bits, scale, add noise in [0, 1/n_bins).

    noise: None for uniform dequantisation noise from the "sample" rng stream (the paper's), or "midpoint".
    """
    x = images.astype(jnp.float32)
    if self.num_bits < 8:
      x = jnp.floor(x / 2 ** (8 - self.num_bits))
    x = x / self.num_bins - 0.5
    if noise == DEQUANT_MIDPOINT:
      return x + 0.5 / self.num_bins
    return x + jax.random.uniform(self.make_rng("sample"), x.shape) / self.num_bins

  def postprocess(self, x):
    """Continuous x -> uint8 images (the 8-bit value of the bin x falls in)."""
    bins = jnp.clip(jnp.floor((x + 0.5) * self.num_bins), 0, self.num_bins - 1)
    return (bins * 2 ** (8 - self.num_bits)).astype(jnp.uint8)

  def __call__(self, images, labels=None):
    """Latents of images (uniform dequantisation noise from the "sample" stream).  Also what `init` runs, so it calls
    every submodule `losses` uses, the classifier included (its parameters exist only if init created them)."""
    z, eps, log_det = self._encode(self.preprocess(images))
    if self._classifies:
      self._class_logits(z)
    return self._with_top_prior(z, eps, log_det, labels)

  def log_prob(self, images, labels=None, noise=None):
    """log p(images) in nats per example, [B]: the dequantised continuous log-density minus D log(n_bins).

    With uniform noise (default) this is the unbiased single-sample estimate of the paper's variational
    dequantisation bound; noise="midpoint" makes it deterministic.
    """
    eps, log_det = self.forward_and_log_det(self.preprocess(images, noise), labels)
    return layers.flow_log_prob(eps, log_det) - np.prod(self.image_shape) * np.log(self.num_bins)

  def losses(self, images, labels=None, *, train=True, step=None):
    """Per-example training terms: "loss" (bits/dim, plus weighted classifier bits), "bpd", ...  All [B]."""
    del train, step  # Glow has no train-time-only behaviour and no schedules.
    z, eps, log_det = self._encode(self.preprocess(images))
    eps, log_det = self._with_top_prior(z, eps, log_det, labels)
    dims = np.prod(self.image_shape)
    nll = -(layers.flow_log_prob(eps, log_det) - dims * np.log(self.num_bins))
    bpd = nll / (dims * np.log(2.0))
    out = {"loss": bpd, "bpd": bpd, "nll_nats": nll, "log_det": log_det / dims}
    if self._classifies:
      logits = self._class_logits(z)
      bits_y = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1)[:, 0] / np.log(2.0)
      out["loss"] = bpd + self.class_loss_weight * bits_y
      out["class_bits"] = bits_y
      out["class_error"] = (jnp.argmax(logits, -1) != labels).astype(jnp.float32)
    return out

  def encode(self, images, labels=None):
    """Deterministic latents of images (mid-bin dequantisation), for interpolation and manipulation."""
    return self.forward_and_log_det(self.preprocess(images, DEQUANT_MIDPOINT), labels)[0]

  def decode(self, eps, labels=None):
    """Latents -> uint8 images."""
    return self.postprocess(self.inverse_and_log_det(eps, labels)[0])

  def sample(self, rng, num, temperature=1.0, labels=None):
    """num images from the model with every latent drawn from N(0, temperature^2 I).  -> uint8 [num, H, W, C]."""
    rngs = jax.random.split(rng, len(self.latent_shapes))
    eps = [temperature * jax.random.normal(r, (num,) + s) for r, s in zip(rngs, self.latent_shapes)]
    return self.decode(eps, labels)


# A tiny model for tests (sizes of real runs live in experiments/configs).
GlowTiny = functools.partial(Model, image_shape=(4, 4, 1), levels=2, depth=2, hidden_channels=4)


def figures(s, state, *, seed, temperatures, num, pairs, interpolation_steps):
  """The temperature sweep (`figures.temperature_figures`) and interpolations.png: one row per pair of test images,
  between their reconstructions the decoded linear interpolations of their latents (`figures.interpolations`)."""
  out = figures_lib.temperature_figures(s, state, seed=seed, temperatures=temperatures, num=num)
  batch = s.input.split(s.config.eval_split).get(np.arange(2 * pairs))
  images = figures_lib.interpolations(s, state, batch["image"], batch["label"],
                                      [(2 * p, 2 * p + 1) for p in range(pairs)], interpolation_steps)
  return out | {"interpolations.png": figures_lib.grid(images, columns=interpolation_steps)}


def encode(s, state, images, labels, rng=None):
  """`Family.encode`: `Model.encode`, the exact latents (mid-bin dequantisation; `rng` is not needed)."""
  del rng
  labels = jnp.asarray(labels) if s.model.num_classes else None
  return jax.jit(functools.partial(s.model.apply, method="encode"))(steps.eval_variables(state), jnp.asarray(images),
                                                                     labels)


def decode(s, state, latents, labels):
  """`Family.decode`: `Model.decode`."""
  labels = jnp.asarray(labels) if s.model.num_classes else None
  return np.asarray(jax.jit(functools.partial(s.model.apply, method="decode"))(steps.eval_variables(state), latents,
                                                                               labels))


def reconstruct(s, state, images, labels):
  """`Family.reconstruct`: decode(encode(images)) with mid-bin dequantisation, the identity up to float round-off."""
  return decode(s, state, encode(s, state, images, labels), labels), "exact inverse"


FAMILY = family.LIKELIHOOD._replace(
    figures=figures, figure_options=figures_lib.TEMPERATURE_OPTIONS | dict(pairs=6, interpolation_steps=8),
    reconstruct=reconstruct, encode=encode, decode=decode)
