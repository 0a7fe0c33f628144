"""A RealNVP-style multi-scale flow (Dinh, Sohl-Dickstein & Bengio 2017, Sec. 3.6) on jaxgen's flow layers.

x (uint8 image) -> dequantise to [-1/2, 1/2) -> per level: squeeze, `depth` x (normalisation, affine coupling,
reverse channels), then factor out half the channels as standard-normal latents (the last level keeps all of them):
log p(x) = sum log N(eps; 0, I) + log_det - D log(n_bins). RealNVP's batch normalisation of the flow (Sec. 3.7) is
ActNorm here, its data-initialised per-channel affine counterpart (Glow, Sec. 3.1): the couplings' scales are at most
1, so the normalisations are what can expand the narrow range of the data.

It is also the smallest example of a jaxgen model family (README, "Adding a model"): a `Model` built from
`config.model` with `image_shape`, `losses` for the trainer and `sample` for its grids, and `FAMILY`, here the
likelihood families' shared `family.LIKELIHOOD`. Glow (jaxgen.flows.glow) adds ActNorm, 1x1 convolutions and
learned split priors to the same skeleton.
"""
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import ops
from jaxgen.flows import layers
from jaxgen.training import family


class Model(nn.Module):
  """RealNVP-style flow: image_shape (H, W, C) with H, W divisible by 2**levels; `depth` couplings per level.
  conv_impl: how the coupling networks' convolutions run, "auto" (per backend), "native" or "matmul" (`jaxgen.ops`).
  dtype: compute dtype of the coupling networks (config.compute_dtype); the flow and its log-det stay float32."""
  image_shape: Sequence[int] = (28, 28, 1)
  levels: int = 2
  depth: int = 4
  hidden_channels: int = 64
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  def setup(self):
    ops.check_impl(self.conv_impl)
    h, w, _ = self.image_shape
    if h % 2**self.levels or w % 2**self.levels:
      raise ValueError(f"image_shape {tuple(self.image_shape)} needs height and width divisible by 2**levels = "
                       f"{2**self.levels}; lower config.model.levels.")
    self.couplings = [[(layers.ActNorm(), layers.AffineCoupling(self.hidden_channels, self.conv_impl, self.dtype))
                       for _ in range(self.depth)] for _ in range(self.levels)]

  def forward_and_log_det(self, x):
    """x [B, H, W, C] in [-1/2, 1/2) -> (eps: one array per level, log_det [B])."""
    z, log_det, eps = x, jnp.zeros(x.shape[:1]), []
    for i, level in enumerate(self.couplings):
      z = layers.squeeze(z)
      for norm, coupling in level:
        z, ld_norm = norm.forward_and_log_det(z)
        z, ld = coupling.forward_and_log_det(z)
        z, log_det = z[..., ::-1], log_det + ld_norm + ld  # reversed: the next coupling changes the other half
      if i < self.levels - 1:
        z, e = jnp.split(z, 2, axis=-1)
        eps.append(e)
    return eps + [z], log_det

  def inverse_and_log_det(self, eps):
    """eps as from `forward_and_log_det` -> (x [B, H, W, C], log_det [B])."""
    z, log_det = eps[-1], jnp.zeros(eps[-1].shape[:1])
    for i in reversed(range(self.levels)):
      if i < self.levels - 1:
        z = jnp.concatenate([z, eps[i]], axis=-1)
      for norm, coupling in reversed(self.couplings[i]):
        z, ld = coupling.inverse_and_log_det(z[..., ::-1])
        z, ld_norm = norm.inverse_and_log_det(z)
        log_det += ld + ld_norm
      z = layers.unsqueeze(z)
    return z, log_det

  @property
  def latent_shapes(self):
    h, w, c = self.image_shape
    shapes = [(h // 2**(i + 1), w // 2**(i + 1), c * 2**(i + 1)) for i in range(self.levels - 1)]
    s = 2**self.levels
    return shapes + [(h // s, w // s, c * 2**(self.levels + 1))]

  def __call__(self, images, labels=None):
    return self.losses(images, labels)

  def losses(self, images, labels=None, *, train=True, step=None):
    """Per-example "loss" = "bpd" (bits/dim of the uniformly dequantised images) and "nll_nats".  All [B]."""
    del labels, train, step
    x = images.astype(jnp.float32) / 256.0 - 0.5
    x = x + jax.random.uniform(self.make_rng("sample"), x.shape) / 256.0
    eps, log_det = self.forward_and_log_det(x)
    dims = np.prod(self.image_shape)
    nll = -(layers.flow_log_prob(eps, log_det) - dims * np.log(256.0))
    return {"loss": nll / (dims * np.log(2.0)), "bpd": nll / (dims * np.log(2.0)), "nll_nats": nll}

  def sample(self, rng, num, temperature=1.0):
    """uint8 [num, H, W, C], every latent drawn from N(0, temperature^2 I)."""
    rngs = jax.random.split(rng, self.levels)
    eps = [temperature * jax.random.normal(r, (num,) + s) for r, s in zip(rngs, self.latent_shapes)]
    x, _ = self.inverse_and_log_det(eps)
    return jnp.clip(jnp.floor((x + 0.5) * 256.0), 0, 255).astype(jnp.uint8)


FAMILY = family.LIKELIHOOD
