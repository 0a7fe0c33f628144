"""Fréchet distance (FID, Heusel et al. 2017) and kernel inception distance (KID, Bińkowski et al. 2018).

Both act on feature arrays [N, D] from any extractor (Inception-v3 pool3 in `jaxgen.metrics.inception`, or the
offline classifier in `jaxgen.metrics.classifier`), so they work on samples from every family. Statistics are
computed in float64 with numpy: the numbers are small, and float32 loses digits in the trace terms.
"""
import numpy as np


def feature_statistics(features):
  """Mean [D] and (unbiased) covariance [D, D] of features [N, D], in float64."""
  features = np.asarray(features, dtype=np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"feature_statistics needs features of shape [N >= 2, D], got {features.shape}.")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrt_psd(s):
  """Symmetric square root of a symmetric PSD matrix via its eigen-decomposition (negative round-off -> 0)."""
  vals, vecs = np.linalg.eigh((s + s.T) / 2)
  return (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T


def trace_sqrt_product(sigma1, sigma2):
  """tr( (sigma1 sigma2)^{1/2} ), computed stably.

  sigma1 sigma2 is not symmetric, but it is similar to the symmetric PSD matrix M = S1^{1/2} sigma2 S1^{1/2}
  (S1^{1/2} = symmetric root of sigma1), so both have the same non-negative eigenvalues lambda_i and the trace
  of the principal square root is sum_i sqrt(lambda_i). Only symmetric eigen-decompositions are used: no matrix
  inverse, so singular or near-singular covariances (N < D, duplicated features) are fine, and tiny negative
  eigenvalues from round-off are clipped to zero instead of producing complex parts (the failure mode of
  scipy.linalg.sqrtm on the raw product).
  """
  root1 = _sqrt_psd(np.asarray(sigma1, np.float64))
  m = root1 @ np.asarray(sigma2, np.float64) @ root1
  eig = np.linalg.eigvalsh((m + m.T) / 2)
  return float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))


def frechet_distance(mu1, sigma1, mu2, sigma2):
  """d^2 = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^{1/2})  between two Gaussians."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f"frechet_distance: shapes differ: mu {mu1.shape} vs {mu2.shape}, "
                     f"sigma {sigma1.shape} vs {sigma2.shape}.")
  diff = mu1 - mu2
  d = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
  return float(max(d, 0.0))  # exact arithmetic gives d >= 0; clip round-off


def fid_from_features(features1, features2):
  """FID between two feature sets [N1, D], [N2, D]."""
  return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def kernel_inception_distance(real_features, gen_features, num_subsets=100, max_subset_size=1000, seed=0):
  """KID: unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3, averaged over random
  subsets of size m = min(N_real, N_gen, max_subset_size) (Bińkowski et al. 2018, App. D; the estimator of
  stylegan2-ada-pytorch `metrics/kernel_inception_distance.py`, whose defaults these are).

  Returns (mean, std) over the subsets.
  """
  x_all = np.asarray(gen_features, np.float64)
  y_all = np.asarray(real_features, np.float64)
  n = x_all.shape[1]
  m = min(x_all.shape[0], y_all.shape[0], max_subset_size)
  if m < 2:
    raise ValueError("kernel_inception_distance needs at least 2 samples in each set.")
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(num_subsets):
    x = x_all[rng.choice(x_all.shape[0], m, replace=False)]
    y = y_all[rng.choice(y_all.shape[0], m, replace=False)]
    a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
    b = (x @ y.T / n + 1) ** 3
    # Unbiased: drop the diagonal (k(x_i, x_i)) terms of the within-set sums.
    values.append(((a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m) / m)
  values = np.asarray(values)
  return float(values.mean()), float(values.std())
