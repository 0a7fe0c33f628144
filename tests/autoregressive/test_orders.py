"""Generation orders: every name is a permutation, the 8 symmetries are distinct, the Hilbert curve is
continuous, validation rejects non-permutations, completion orders put observed pixels first."""
import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.autoregressive import orders


def test_every_named_order_is_a_permutation_on_any_size():
  for (h, w), base, sym in itertools.product([(1, 1), (1, 5), (4, 4), (5, 3), (6, 9), (7, 7), (28, 28)],
                                             orders.BASES, orders.SYMMETRIES):
    order = orders.build(base + sym, h, w)
    assert order.dtype == np.int32 and order.shape == (h * w, 2)
    assert len(np.unique(order[:, 0] * w + order[:, 1])) == h * w


def test_raster_and_s_curve_explicit():
  np.testing.assert_array_equal(orders.rank_map(orders.build("raster", 2, 3), 2, 3), [[0, 1, 2], [3, 4, 5]])
  np.testing.assert_array_equal(orders.rank_map(orders.build("s_curve", 3, 3), 3, 3),
                                [[0, 1, 2], [5, 4, 3], [6, 7, 8]])
  # rot90: the S-curve rotated clockwise starts at the top-right and runs down the last column.
  np.testing.assert_array_equal(orders.rank_map(orders.build("s_curve_rot90", 2, 3), 2, 3),
                                [[4, 3, 0], [5, 2, 1]])
  np.testing.assert_array_equal(orders.rank_map(orders.build("raster_flip", 2, 2), 2, 2), [[1, 0], [3, 2]])


def test_eight_variants_distinct_on_squares():
  for n, base in itertools.product([2, 3, 5, 8, 32], orders.BASES):
    assert len({orders.build(v, n, n).tobytes() for v in orders.variants(base)}) == 8


def test_hilbert_is_continuous():
  # Consecutive pixels are 4-neighbours, except a single diagonal step when the long side is odd and the
  # short side even (a property of the generalised Hilbert curve).
  for h, w in itertools.product(range(1, 18), repeat=2):
    order = orders.build("hilbert", h, w)
    steps = np.abs(np.diff(order, axis=0))
    non_adjacent = steps.sum(-1) != 1
    long_odd_short_even = max(h, w) % 2 == 1 and min(h, w) % 2 == 0 and h != w
    assert non_adjacent.sum() <= (1 if long_odd_short_even else 0), (h, w)
    assert np.all(steps[non_adjacent] == 1)


def _classical_hilbert_d2xy(n, d):
  x = y = 0
  s, t = 1, d
  while s < n:
    rx = 1 & (t // 2)
    ry = 1 & (t ^ rx)
    if ry == 0:
      if rx == 1:
        x, y = s - 1 - x, s - 1 - y
      x, y = y, x
    x, y, t = x + s * rx, y + s * ry, t // 4
    s *= 2
  return x, y


def test_hilbert_matches_classical_curve_on_powers_of_two():
  for n in (2, 4, 8, 16):
    classical = np.array([_classical_hilbert_d2xy(n, d) for d in range(n * n)])  # the textbook d2xy
    ours = {orders.build(v, n, n).tobytes() for v in orders.variants("hilbert")}
    candidates = [classical, classical[:, ::-1]]
    assert any(np.ascontiguousarray(c.astype(np.int32)).tobytes() in ours for c in candidates), n


def test_validate_order_rejects_non_permutations():
  good = orders.build("raster", 3, 4)
  np.testing.assert_array_equal(orders.validate_order(good.astype(np.int64), 3, 4), good)
  with pytest.raises(ValueError, match="shape"):
    orders.validate_order(good[:-1], 3, 4)
  dup = good.copy()
  dup[1] = dup[0]
  with pytest.raises(ValueError, match="more than once"):
    orders.validate_order(dup, 3, 4)
  out = good.copy()
  out[0] = (3, 0)
  with pytest.raises(ValueError, match="outside"):
    orders.validate_order(out, 3, 4)
  with pytest.raises(ValueError, match="integer"):
    orders.validate_order(good.astype(np.float32), 3, 4)
  with pytest.raises(ValueError, match="unknown order"):
    orders.build("zigzag", 3, 4)
  random = orders.random_order(np.random.default_rng(0), 3, 4)
  np.testing.assert_array_equal(orders.validate_order(random, 3, 4), random)


def test_observed_first_and_traced_rank_map():
  rng = np.random.default_rng(1)
  base = orders.build("hilbert", 5, 6)
  observed = rng.random((5, 6)) < 0.4
  for xp in (np, jnp):
    order = np.asarray(orders.observed_first(xp.asarray(base), xp.asarray(observed), xp=xp))
    n_obs = observed.sum()
    assert observed[order[:n_obs, 0], order[:n_obs, 1]].all()
    assert not observed[order[n_obs:, 0], order[n_obs:, 1]].any()
    rank = orders.rank_map(base, 5, 6)
    assert np.all(np.diff(rank[order[:n_obs, 0], order[:n_obs, 1]]) > 0)  # base sequence kept in each group
    assert np.all(np.diff(rank[order[n_obs:, 0], order[n_obs:, 1]]) > 0)
  np.testing.assert_array_equal(orders.rank_map(jnp.asarray(base), 5, 6, xp=jnp), orders.rank_map(base, 5, 6))
