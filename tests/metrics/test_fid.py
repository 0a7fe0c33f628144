"""FID and KID on feature arrays."""
import numpy as np
import pytest
import scipy.linalg

from jaxgen.metrics import fid


def _random_cov(rng, d, rank=None):
  a = rng.normal(size=(d, rank or d))
  return a @ a.T / d


def test_frechet_distance_matches_scipy_sqrtm_reference():
  rng = np.random.default_rng(0)
  for d in (2, 10, 40):
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    np.testing.assert_allclose(fid.frechet_distance(mu1, s1, mu2, s2), want, rtol=1e-8, atol=1e-8)


def test_frechet_distance_closed_form_and_near_singular_covariances():
  # Commuting (diagonal) covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
  a, b = np.array([1.0, 4.0, 0.0]), np.array([9.0, 1.0, 2.0])
  want = 1.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  np.testing.assert_allclose(fid.frechet_distance(np.zeros(3), np.diag(a), np.array([1.0, 0, 0]), np.diag(b)), want)
  # Rank-deficient covariances (fewer samples than dimensions): finite, non-negative, 0 for equal statistics.
  rng = np.random.default_rng(1)
  s = _random_cov(rng, 64, rank=5)
  s2 = _random_cov(rng, 64, rank=7)
  mu = rng.normal(size=64)
  assert fid.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-6)
  d = fid.frechet_distance(mu, s, mu, s2)
  assert np.isfinite(d) and d > 0


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_shift():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(500, 16))
  assert fid.fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)
  y = x + 0.5
  assert fid.fid_from_features(x, y) == pytest.approx(16 * 0.25, rel=1e-6)  # pure mean shift
  z = rng.normal(size=(40, 100))  # N < D: singular covariance
  assert fid.fid_from_features(z, z) == pytest.approx(0.0, abs=1e-6)


def test_kid_is_near_zero_for_one_distribution_and_positive_across_two():
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
  same, _ = fid.kernel_inception_distance(x, y, num_subsets=20, max_subset_size=200)
  diff, _ = fid.kernel_inception_distance(x, y + 1.0, num_subsets=20, max_subset_size=200)
  assert abs(same) < 0.02 and diff > 0.5
  # The estimator for one subset, written out: unbiased MMD^2 with k(a, b) = (a.b / D + 1)^3.
  xs, ys = x[:50], y[:50]
  k = lambda a, b: (a @ b.T / 8 + 1) ** 3
  m = 50
  want = ((k(xs, xs).sum() - np.trace(k(xs, xs))) / (m * (m - 1)) + (k(ys, ys).sum() - np.trace(k(ys, ys))) /
          (m * (m - 1)) - 2 * k(xs, ys).mean())
  got, _ = fid.kernel_inception_distance(ys, xs, num_subsets=1, max_subset_size=50)
  np.testing.assert_allclose(got, want, rtol=1e-10)
