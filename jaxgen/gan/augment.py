"""Differentiable augmentation of the discriminator's inputs: DiffAugment (Zhao et al. 2020, "Differentiable
Augmentation for Data-Efficient GAN Training", Sec. 3 and mit-han-lab/data-efficient-gans `DiffAugment_pytorch.py`).

The same random transformation family is applied to real and generated images every time D sees them (D main,
G main, and R1, whose gradient is taken w.r.t. the un-augmented reals), so D cannot memorise the training set and
G is not pushed to reproduce the augmentations: the transforms are differentiable and G's gradient flows through
them. Policies (comma-separated, applied in the order given, each with the paper's strengths):
  color:       brightness x + (u - 1/2); saturation (x - mean_c) * 2u + mean_c; contrast (x - mean) * (u + 1/2) + mean
  translation: integer shifts of up to 1/8 of the image in each axis, filling with 0
  cutout:      a square of half the image side at a random centre set to 0
with u ~ U[0, 1) per example. Images are float [B, H, W, C] in about [-1, 1] (0 is mid-grey, the official fill).
"""
import jax
import jax.numpy as jnp

POLICIES = ("color", "translation", "cutout")


def check_policy(policy):
  """Raises ValueError for an unknown policy name; returns the list of names ('' -> [])."""
  names = [p for p in policy.split(",") if p] if policy else []
  for p in names:
    if p not in POLICIES:
      raise ValueError(f"Unknown DiffAugment policy {p!r} in {policy!r}; use a comma-separated subset of "
                       f"{','.join(POLICIES)} (e.g. 'translation,cutout'), or '' for none.")
  return names


def _color(x, rng):
  rng_b, rng_s, rng_c = jax.random.split(rng, 3)
  u = lambda r: jax.random.uniform(r, (x.shape[0], 1, 1, 1), x.dtype)
  x = x + (u(rng_b) - 0.5)
  mean_c = jnp.mean(x, axis=3, keepdims=True)
  x = (x - mean_c) * (u(rng_s) * 2.0) + mean_c
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) * (u(rng_c) + 0.5) + mean


def _shift_matrices(shift, n, dtype):
  """[B, n, n] one-hot matrices m with (m @ v)[i] = v[i + shift] (0 outside the image)."""
  i = jnp.arange(n)
  return (i[None, None, :] == i[None, :, None] + shift[:, None, None]).astype(dtype)


def _translation(x, rng, ratio=0.125):
  """out[b, i, j] = x[b, i + ty_b, j + tx_b] (0 outside), t ~ U{-s..s}, s = round(ratio * size)."""
  b, h, w, _ = x.shape
  sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
  rng_y, rng_x = jax.random.split(rng)
  ty = jax.random.randint(rng_y, (b,), -sy, sy + 1)
  tx = jax.random.randint(rng_x, (b,), -sx, sx + 1)
  # Shifts as one-hot matmuls: exact, differentiable in x, and cheap at GAN-discriminator sizes.
  x = jnp.einsum("bij,bjwc->biwc", _shift_matrices(ty, h, x.dtype), x)
  return jnp.einsum("bkw,biwc->bikc", _shift_matrices(tx, w, x.dtype), x)


def _cutout(x, rng, ratio=0.5):
  """Zero a square of side round(ratio * size) centred at a random pixel (clipped at the borders)."""
  b, h, w, _ = x.shape
  ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
  rng_y, rng_x = jax.random.split(rng)
  oy = jax.random.randint(rng_y, (b, 1), 0, h + (1 - ch % 2))
  ox = jax.random.randint(rng_x, (b, 1), 0, w + (1 - cw % 2))
  rows = jnp.arange(h)[None, :] - (oy - ch // 2)  # [B, H]
  cols = jnp.arange(w)[None, :] - (ox - cw // 2)  # [B, W]
  inside = ((rows >= 0) & (rows < ch))[:, :, None] & ((cols >= 0) & (cols < cw))[:, None, :]  # [B, H, W]
  return x * (~inside)[..., None].astype(x.dtype)


_FNS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(x, rng, policy):
  """DiffAugment of x [B, H, W, C] under `policy` ('' or e.g. 'color,translation,cutout'); returns [B, H, W, C]."""
  names = check_policy(policy)
  for name, rng_p in zip(names, jax.random.split(rng, max(len(names), 1))):
    x = _FNS[name](x, rng_p)
  return x
