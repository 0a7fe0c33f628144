"""Generation orders over an H x W image (Jain, Abbeel & Pathak 2020, LMConv, Sec. 3.2 and Fig. 3).

An order is an integer array `[H*W, 2]` of (row, col) pairs: the pixel generated at step t is `order[t]`.
Any permutation of the pixels is an order; `validate_order` checks one.

Named orders are built by `build(name, height, width)`. A name is a base curve followed by an optional
symmetry of the image:

    name = base [ "_rot90" | "_rot180" | "_rot270" ] [ "_flip" ]

- base: "raster" (row by row, left to right), "s_curve" (row by row, alternating direction, starting at the
  top-left going right), "hilbert" (the generalised Hilbert curve of Cerveny, "gilbert", defined for any
  H, W; the classical Hilbert curve up to a symmetry when H = W is a power of two).
- "_rotK": the curve drawn on the image is rotated clockwise by K degrees (for 90/270 the base curve is
  laid out on the W x H grid, so every name is valid for non-square images).
- "_flip": after the rotation, the drawing is mirrored left-right (col -> W-1-col).

`variants(base)` lists the 8 names of a base (the dihedral group of the square), the set the paper's
order-agnostic training draws from (the official `augment_orders`). Reversal is not among them. On a
square image the 8 are distinct; on a non-square one, "_rot90"/"_rot270" use the base curve of the W x H
grid, and for "hilbert" two names can then give the same order.
"""
import itertools

import numpy as np

BASES = ("raster", "s_curve", "hilbert")
SYMMETRIES = ("", "_rot90", "_rot180", "_rot270", "_flip", "_rot90_flip", "_rot180_flip", "_rot270_flip")


def raster(height, width):
  """Row-major scan: [H*W, 2]."""
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  return np.stack([rows.ravel(), cols.ravel()], axis=-1).astype(np.int32)


def s_curve(height, width):
  """Boustrophedon scan: even rows left to right, odd rows right to left.  [H*W, 2]."""
  order = raster(height, width).reshape(height, width, 2)
  order[1::2] = order[1::2, ::-1]
  return order.reshape(-1, 2)


def _gilbert(x0, y0, ax, ay, bx, by, out):
  """Appends to `out` the (x, y) cells of the generalised Hilbert curve on the rectangle spanned by the
  major axis (ax, ay) and minor axis (bx, by) from corner (x0, y0) (Cerveny's recursive construction:
  split the long side in two when the rectangle is wide, else into up / across / down parts)."""
  w, h = abs(ax + ay), abs(bx + by)
  dax, day = int(np.sign(ax)), int(np.sign(ay))
  dbx, dby = int(np.sign(bx)), int(np.sign(by))
  if h == 1:
    out.extend((x0 + i * dax, y0 + i * day) for i in range(w))
    return
  if w == 1:
    out.extend((x0 + i * dbx, y0 + i * dby) for i in range(h))
    return
  ax2, ay2, bx2, by2 = ax // 2, ay // 2, bx // 2, by // 2
  if 2 * w > 3 * h:
    if abs(ax2 + ay2) % 2 and w > 2:  # keep the halves of even length so the pieces join
      ax2, ay2 = ax2 + dax, ay2 + day
    _gilbert(x0, y0, ax2, ay2, bx, by, out)
    _gilbert(x0 + ax2, y0 + ay2, ax - ax2, ay - ay2, bx, by, out)
  else:
    if abs(bx2 + by2) % 2 and h > 2:
      bx2, by2 = bx2 + dbx, by2 + dby
    _gilbert(x0, y0, bx2, by2, ax2, ay2, out)
    _gilbert(x0 + bx2, y0 + by2, ax, ay, bx - bx2, by - by2, out)
    _gilbert(x0 + (ax - dax) + (bx2 - dbx), y0 + (ay - day) + (by2 - dby),
             -bx2, -by2, -(ax - ax2), -(ay - ay2), out)


def hilbert(height, width):
  """Generalised Hilbert ("gilbert") curve for any H x W, starting at the top-left.  [H*W, 2]."""
  cells = []
  if width >= height:
    _gilbert(0, 0, width, 0, 0, height, cells)
  else:
    _gilbert(0, 0, 0, height, width, 0, cells)
  xy = np.asarray(cells, np.int32)
  return np.stack([xy[:, 1], xy[:, 0]], axis=-1)  # (x=col, y=row) -> (row, col)


_BASE_FNS = {"raster": raster, "s_curve": s_curve, "hilbert": hilbert}


def parse(name):
  """'s_curve_rot90_flip' -> ('s_curve', 90, True).  Raises ValueError for unknown names."""
  for base in sorted(BASES, key=len, reverse=True):
    if name == base or name.startswith(base + "_"):
      rest = name[len(base):]
      for rot, flip in itertools.product((0, 90, 180, 270), (False, True)):
        if rest == (f"_rot{rot}" if rot else "") + ("_flip" if flip else ""):
          return base, rot, flip
  raise ValueError(f"unknown order name {name!r}; expected base[_rot90|_rot180|_rot270][_flip] with base in "
                   f"{BASES}, e.g. 's_curve', 'hilbert_rot90_flip'.")


def transform(order, height, width, rot, flip):
  """Applies a clockwise rotation by `rot` degrees, then a left-right mirror if `flip`, to an order drawn on
  the grid that the rotation maps onto H x W (W x H for 90/270).  Returns the order on H x W."""
  r, c = order[:, 0], order[:, 1]
  src_h = width if rot in (90, 270) else height  # rows of the grid the order lives on
  src_w = height if rot in (90, 270) else width
  if rot == 90:
    r, c = c, src_h - 1 - r
  elif rot == 180:
    r, c = src_h - 1 - r, src_w - 1 - c
  elif rot == 270:
    r, c = src_w - 1 - c, r
  if flip:
    c = width - 1 - c
  return np.stack([r, c], axis=-1).astype(np.int32)


def build(name, height, width):
  """The named order on an H x W image: int32 [H*W, 2] of (row, col)."""
  base, rot, flip = parse(name)
  h, w = (width, height) if rot in (90, 270) else (height, width)
  return validate_order(transform(_BASE_FNS[base](h, w), height, width, rot, flip), height, width)


def variants(base):
  """The 8 names of `base` under the symmetries of the square, identity first."""
  if base not in BASES:
    raise ValueError(f"unknown base order {base!r}; expected one of {BASES}.")
  return tuple(base + s for s in SYMMETRIES)


def validate_order(order, height, width):
  """Checks that `order` ([H*W, 2] integers) visits every pixel of H x W exactly once; returns it as int32."""
  order = np.asarray(order)
  if order.shape != (height * width, 2):
    raise ValueError(f"an order for a {height}x{width} image must have shape ({height * width}, 2), "
                     f"got {order.shape}.")
  if not np.issubdtype(order.dtype, np.integer):
    raise ValueError(f"an order must hold integer (row, col) pairs, got dtype {order.dtype}.")
  if order.min(initial=0) < 0 or np.any(order[:, 0] >= height) or np.any(order[:, 1] >= width):
    raise ValueError(f"order has (row, col) pairs outside the {height}x{width} image.")
  flat = order[:, 0] * width + order[:, 1]
  if len(np.unique(flat)) != height * width:
    raise ValueError("order visits some pixel more than once (it must be a permutation of the pixels).")
  return order.astype(np.int32)


def random_order(rng, height, width):
  """A uniformly random permutation of the pixels (numpy Generator `rng`).  [H*W, 2]."""
  return raster(height, width)[rng.permutation(height * width)]


def rank_map(order, height, width, xp=np):
  """rank[r, c] = t where order[t] = (r, c): the step at which each pixel is generated.  [H, W].

  `xp` is numpy or jax.numpy; with jax.numpy `order` may be traced.
  """
  flat = order[:, 0] * width + order[:, 1]
  n = height * width
  if xp is np:
    rank = np.empty(n, np.int32)
    rank[flat] = np.arange(n, dtype=np.int32)
  else:
    rank = xp.zeros(n, xp.int32).at[flat].set(xp.arange(n, dtype=xp.int32))
  return rank.reshape(height, width)


def observed_first(order, observed, xp=np):
  """The order that visits observed pixels first, then the others, each group in `order`'s sequence.

  order: [H*W, 2]; observed: bool [H, W].  For image completion: the log-probabilities of the unobserved
  pixels under the returned order are log p(x_missing | x_observed).  Works traced with xp=jax.numpy.
  """
  seen = observed[order[:, 0], order[:, 1]]  # [H*W] in order's sequence
  n = order.shape[0]
  key = xp.where(seen, 0, n) + xp.arange(n)  # observed first, stable within each group
  return order[xp.argsort(key)]


def symmetry_maps(name, size, kernel_size):
  """For a square image, the symmetry T of a named order (order = T(base order) pixel by pixel), as
  (position map [size*size]: flat index of T(p) for each flat p, tap map [k*k]: flat tap of A_T(o) for
  each tap o, A_T the linear part of T).  Used to run any of the 8 variants through the base order's masks:

      Net_{T.o}(x; W)(T p) = Net_o(x o T; W o A_T)(p)

  because the masks satisfy M_{T.o}(T p, A_T o) = M_o(p, o) (see lmconv.Model).
  """
  _, rot, flip = parse(name)
  positions = transform(raster(size, size), size, size, rot, flip)
  taps = transform(raster(kernel_size, kernel_size), kernel_size, kernel_size, rot, flip)
  return positions[:, 0] * size + positions[:, 1], taps[:, 0] * kernel_size + taps[:, 1]


# The 8 rotations/reflections of the S-curve: the orders of the paper's CIFAR-10 and binarized-MNIST models.
S_CURVES = variants("s_curve")
