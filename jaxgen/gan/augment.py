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
import numpy as np

from jaxgen.gan import layers

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


# ----------------------------------------------------------------------------------------------------------------
# ADA: adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial Networks with
# Limited Data", Sec. 2-3 and Appendix B; NVlabs/stylegan2-ada-pytorch `training/augment.py` `AugmentPipe`).
#
# Each transform is applied to an example with probability p (its multiplier is 1 in every official pipeline):
#   blit:  xflip (x -> -x), rotate90 (k * 90 degrees), xint (integer shift, uniform in +-1/8 of the image)
#   geom:  scale (isotropic, log2 s ~ N(0, 0.2^2)), rotate (uniform angle, before and after aniso, each with
#          probability 1 - sqrt(1 - p) so that one of them runs with probability p), aniso (log2 s ~ N(0, 0.2^2),
#          x * s and y / s), xfrac (shift ~ N(0, (1/8)^2) of the image)
#   color: brightness (+ N(0, 0.2^2)), contrast (* 2^N(0, 0.5^2)), lumaflip (Householder reflection of the colour
#          about the luma axis), hue (rotation about the luma axis, uniform angle), saturation (chroma * 2^N(0, 1));
#          hue and saturation only for RGB, and a 1-channel image gets the mean of the RGB rows (official)
# The geometric ones compose into one inverse affine matrix per example, executed as the official code does: reflect
# padding, 2x upsampling with the sym6 wavelet low-pass, bilinear sampling, sym6 downsampling. The colour ones
# compose into one 4x4 affine colour matrix. Pipelines: the official names 'blit', 'geom', 'color', 'bg', 'bgc'
# (the default); the official 'filter', 'noise' and 'cutout' transforms (pipelines 'bgcf', 'bgcfn', 'bgcfnc') are
# not implemented. Differences: the padding is always the largest the official code would use (H - 1, W - 1), so
# shapes are static under jit; the official code pads each batch only as far as its transforms need and reads
# zeros beyond that, which changes pixels only where a transform pulls in content from further than its margin.

BLIT, GEOM, COLOR = ("xflip", "rotate90", "xint"), ("scale", "rotate", "aniso", "xfrac"), (
    "brightness", "contrast", "lumaflip", "hue", "saturation")
AUGPIPES = {"blit": BLIT, "geom": GEOM, "color": COLOR, "bg": BLIT + GEOM, "bgc": BLIT + GEOM + COLOR}
# The official AugmentPipe strengths (its constructor's defaults, which train.py keeps).
XINT_MAX, SCALE_STD, ROTATE_MAX, ANISO_STD, XFRAC_STD = 0.125, 0.2, 1.0, 0.2, 0.125
BRIGHTNESS_STD, CONTRAST_STD, HUE_MAX, SATURATION_STD = 0.2, 0.5, 1.0, 1.0
# The geometric transforms' low-pass: the sym6 wavelet's 12 taps (`wavelets['sym6']` of the official code).
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633, 0.4910559419267466,
        0.787641141030194, 0.3379294217276218, -0.07263752278646252, -0.021060292512300564, 0.04472490177066578,
        0.0017677118642428036, -0.007800708325034148)


def check_augpipe(augpipe):
  """The transform names of `augpipe`, an official pipeline name or a tuple of transform names; a ValueError naming
  the known ones otherwise."""
  if isinstance(augpipe, (tuple, list)):
    unknown = sorted(set(augpipe) - set(BLIT + GEOM + COLOR))
    if unknown:
      raise ValueError(f"Unknown ADA transform(s) {unknown}; known: {', '.join(BLIT + GEOM + COLOR)}.")
    return tuple(augpipe)
  if augpipe not in AUGPIPES:
    raise ValueError(f"Unknown ADA pipeline augpipe={augpipe!r}; use one of {sorted(AUGPIPES)} ('bgc' is the "
                     f"official default; 'filter', 'noise' and 'cutout' are not implemented in jaxgen).")
  return AUGPIPES[augpipe]


def _matrix(rows):
  """[B, n, n] from n rows of n entries, each a scalar or a [B] array."""
  b = next(np.shape(e)[0] for row in rows for e in row if np.ndim(e))
  return jnp.stack([jnp.stack([jnp.broadcast_to(jnp.asarray(e, jnp.float32), (b,)) for e in row], -1)
                    for row in rows], -2)


def _translate2d(tx, ty):
  return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def _scale2d(sx, sy):
  return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def _rotate2d(theta):
  c, s = jnp.cos(theta), jnp.sin(theta)
  return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _draw(rng, names):
  """{name: (value key, gate key)} for each transform name."""
  return {n: tuple(jax.random.split(k)) for n, k in zip(names, jax.random.split(rng, len(names)))}


def _gate(rng, prob, value, identity, shape):
  """value where u < prob (u ~ U[0, 1) per example), else the identity value."""
  return jnp.where(jax.random.uniform(rng, shape) < prob, value, identity)


def geometric_matrix(rng, p, names, height, width, b):
  """G_inv [B, 3, 3]: output pixel (x, y, 1) -> input pixel, in pixel units about the image centre (official
  order: xflip, rotate90, xint, scale, pre-rotation, aniso, post-rotation, xfrac; each right-multiplied)."""
  keys = _draw(rng, BLIT + GEOM + ("rotate_post",))
  g = jnp.broadcast_to(jnp.eye(3), (b, 3, 3))
  unif, normal = (lambda k, s=(b,): jax.random.uniform(k, s)), (lambda k, s=(b,): jax.random.normal(k, s))
  if "xflip" in names:
    k, kg = keys["xflip"]
    i = _gate(kg, p, jnp.floor(unif(k) * 2), 0.0, (b,))
    g = g @ _scale2d(1 / (1 - 2 * i), 1)
  if "rotate90" in names:
    k, kg = keys["rotate90"]
    i = _gate(kg, p, jnp.floor(unif(k) * 4), 0.0, (b,))
    g = g @ _rotate2d(np.pi / 2 * i)
  if "xint" in names:
    k, kg = keys["xint"]
    t = _gate(kg, p, (unif(k, (b, 2)) * 2 - 1) * XINT_MAX, 0.0, (b, 1))
    g = g @ _translate2d(-jnp.round(t[:, 0] * width), -jnp.round(t[:, 1] * height))
  if "scale" in names:
    k, kg = keys["scale"]
    s = _gate(kg, p, jnp.exp2(normal(k) * SCALE_STD), 1.0, (b,))
    g = g @ _scale2d(1 / s, 1 / s)
  p_rot = 1 - jnp.sqrt(jnp.clip(1 - p, 0, 1))  # P(pre or post) = p
  if "rotate" in names:
    k, kg = keys["rotate"]
    g = g @ _rotate2d(_gate(kg, p_rot, (unif(k) * 2 - 1) * np.pi * ROTATE_MAX, 0.0, (b,)))
  if "aniso" in names:
    k, kg = keys["aniso"]
    s = _gate(kg, p, jnp.exp2(normal(k) * ANISO_STD), 1.0, (b,))
    g = g @ _scale2d(1 / s, s)
  if "rotate" in names:
    k, kg = keys["rotate_post"]
    g = g @ _rotate2d(_gate(kg, p_rot, (unif(k) * 2 - 1) * np.pi * ROTATE_MAX, 0.0, (b,)))
  if "xfrac" in names:
    k, kg = keys["xfrac"]
    t = _gate(kg, p, normal(k, (b, 2)) * XFRAC_STD, 0.0, (b, 1))
    g = g @ _translate2d(-t[:, 0] * width, -t[:, 1] * height)
  return g


def _bilinear(x, iy, ix):
  """x [B, H, W, C] sampled at pixel coordinates iy, ix [B, h, w] (pixel k's centre at k), zero outside (as
  grid_sample with align_corners=False and zero padding); [B, h, w, C]."""
  b, h, w, _ = x.shape
  y0, x0 = jnp.floor(iy), jnp.floor(ix)
  out = 0.0
  for dy in (0, 1):
    for dx in (0, 1):
      yy, xx = y0 + dy, x0 + dx
      weight = (1 - jnp.abs(iy - yy)) * (1 - jnp.abs(ix - xx))
      inside = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
      yi, xi = jnp.clip(yy, 0, h - 1).astype(jnp.int32), jnp.clip(xx, 0, w - 1).astype(jnp.int32)
      pix = x[jnp.arange(b)[:, None, None], yi, xi]  # [B, h, w, C]
      out = out + pix * jnp.where(inside, weight, 0.0)[..., None]
  return out


def apply_geometric(x, g_inv):
  """Executes G_inv [B, 3, 3] on x [B, H, W, C] as the official code: reflect pad, upsample 2x (sym6), bilinear
  sampling of the (H + 2 * 3) * 2 square around the image, downsample 2x (sym6) and crop back to H x W."""
  _, h, w, _ = x.shape
  f = layers.setup_filter(SYM6)  # [12], normalised to sum 1
  hz_pad = len(SYM6) // 4
  x = jnp.pad(x, ((0, 0), (h - 1, h - 1), (w - 1, w - 1), (0, 0)), mode="reflect")
  x = layers.upsample2d(x, f, up=2)  # [B, 2(3H - 2), 2(3W - 2), C]
  hu, wu = x.shape[1:3]
  ho, wo = (h + 2 * hz_pad) * 2, (w + 2 * hz_pad) * 2
  # Output pixel (i, j) -> its centred upsampled coordinate u -> the original-resolution point (u + 1/2) / 2 ->
  # G_inv -> back to upsampled (2 v - 1/2) -> the input pixel index (official affine_grid + grid_sample chain).
  uy, ux = jnp.meshgrid(jnp.arange(ho) - (ho - 1) / 2, jnp.arange(wo) - (wo - 1) / 2, indexing="ij")
  pts = jnp.stack([(ux + 0.5) / 2, (uy + 0.5) / 2, jnp.ones_like(ux)], 0).reshape(3, -1)  # [3, ho * wo]
  src = jnp.einsum("bij,jn->bin", g_inv, pts)  # [B, 3, ho * wo]
  ix = (2 * src[:, 0] - 0.5 + (wu - 1) / 2).reshape(-1, ho, wo)
  iy = (2 * src[:, 1] - 0.5 + (hu - 1) / 2).reshape(-1, ho, wo)
  x = _bilinear(x, iy, ix)
  return layers.downsample2d(x, f, down=2, padding=-hz_pad * 2, flip_filter=True)  # [B, H, W, C]


def color_matrix(rng, p, names, channels, b):
  """C [B, 4, 4]: homogeneous colour transform, C @ (r, g, b, 1) (official order: brightness, contrast, lumaflip,
  hue, saturation; each left-multiplied). Hue and saturation are identities for a 1-channel image."""
  keys = _draw(rng, COLOR)
  eye = jnp.broadcast_to(jnp.eye(4), (b, 4, 4))
  c = eye
  v = jnp.asarray([1, 1, 1, 0], jnp.float32) / np.sqrt(3)  # the luma axis
  vv = jnp.outer(v, v)
  unif, normal = (lambda k: jax.random.uniform(k, (b,))), (lambda k: jax.random.normal(k, (b,)))
  if "brightness" in names:
    k, kg = keys["brightness"]
    t = _gate(kg, p, normal(k) * BRIGHTNESS_STD, 0.0, (b,))
    c = _matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]]) @ c
  if "contrast" in names:
    k, kg = keys["contrast"]
    s = _gate(kg, p, jnp.exp2(normal(k) * CONTRAST_STD), 1.0, (b,))
    c = _matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]]) @ c
  if "lumaflip" in names:
    k, kg = keys["lumaflip"]
    i = _gate(kg, p, jnp.floor(unif(k) * 2), 0.0, (b,))
    c = (eye - 2 * vv * i[:, None, None]) @ c  # Householder reflection
  if "hue" in names and channels > 1:
    k, kg = keys["hue"]
    theta = _gate(kg, p, (unif(k) * 2 - 1) * np.pi * HUE_MAX, 0.0, (b,))
    cs, sn, cc = jnp.cos(theta), jnp.sin(theta), 1 - jnp.cos(theta)
    vx, vy, vz = v[0], v[1], v[2]
    rot = _matrix([[vx * vx * cc + cs, vx * vy * cc - vz * sn, vx * vz * cc + vy * sn, 0],
                   [vy * vx * cc + vz * sn, vy * vy * cc + cs, vy * vz * cc - vx * sn, 0],
                   [vz * vx * cc - vy * sn, vz * vy * cc + vx * sn, vz * vz * cc + cs, 0], [0, 0, 0, 1]])
    c = rot @ c  # Rodrigues rotation about v
  if "saturation" in names and channels > 1:
    k, kg = keys["saturation"]
    s = _gate(kg, p, jnp.exp2(normal(k) * SATURATION_STD), 1.0, (b,))
    c = (vv + (jnp.eye(4) - vv) * s[:, None, None]) @ c
  return c


def apply_color(x, c):
  """C [B, 4, 4] on x [B, H, W, C] with C = 3 (affine in RGB) or 1 (x * sum of the mean RGB row + its offset)."""
  channels = x.shape[-1]
  if channels == 3:
    return jnp.einsum("bij,bhwj->bhwi", c[:, :3, :3], x) + c[:, None, None, :3, 3]
  m = jnp.mean(c[:, :3, :], axis=1)  # [B, 4]
  return x * jnp.sum(m[:, :3], axis=1)[:, None, None, None] + m[:, 3][:, None, None, None]


def ada_augment(x, rng, p, augpipe="bgc"):
  """The ADA pipeline `augpipe` (a name of AUGPIPES or a tuple of transform names) at probability p (a traced
  scalar) on x [B, H, W, C] in about [-1, 1], C = 1 or 3;
  returns [B, H, W, C], differentiable in x. Every transform of the pipeline runs (as the identity where its gate
  is closed), so p = 0 gives x back up to float round-off."""
  names = check_augpipe(augpipe)
  b, h, w, channels = x.shape
  if channels not in (1, 3):
    raise ValueError(f"ADA augments 1- or 3-channel images, got {channels} channels; set config.model.augment="
                     f"'noaug'.")
  rng_geom, rng_color = jax.random.split(rng)
  p = jnp.asarray(p, jnp.float32)
  if any(n in names for n in BLIT + GEOM):
    x = apply_geometric(x, geometric_matrix(rng_geom, p, names, h, w, b))
  if any(n in names for n in COLOR):
    x = apply_color(x, color_matrix(rng_color, p, names, channels, b))
  return x
