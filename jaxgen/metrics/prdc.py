"""Improved precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for Assessing
Generative Models", Sec. 2), plus density and coverage (Naeem et al. 2020, Sec. 3), on feature arrays [N, D].

The real (resp. generated) manifold is the union of balls around each sample with radius the distance to its
k-th nearest neighbour in the same set (k = 3). Precision = fraction of generated samples inside the real
manifold; recall = fraction of real samples inside the generated manifold. As stylegan2-ada-pytorch
`metrics/precision_recall.py`: the k-th neighbour is the (k+1)-th smallest distance (the sample itself is at 0),
and a probe is inside when its distance to some manifold sample is <= that sample's radius.
"""
import numpy as np


def pairwise_distances(a, b, batch_size=1024):
  """Euclidean distances [N_a, N_b] in float64, in row batches (|a|^2 - 2 a.b + |b|^2, clipped at 0)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  b_sq = np.sum(b * b, axis=1)
  out = np.empty((a.shape[0], b.shape[0]))
  for i in range(0, a.shape[0], batch_size):
    x = a[i: i + batch_size]
    d2 = np.sum(x * x, axis=1)[:, None] - 2.0 * x @ b.T + b_sq[None, :]
    out[i: i + batch_size] = np.sqrt(np.clip(d2, 0.0, None))
  return out


def knn_radii(features, k=3):
  """Distance from each sample to its k-th nearest other sample, [N]."""
  d = pairwise_distances(features, features)
  return np.partition(d, k, axis=1)[:, k]  # index k: the 0-th smallest is the sample itself


def precision_recall(real_features, gen_features, k=3):
  """(precision, recall) in [0, 1]."""
  real, gen = np.asarray(real_features, np.float64), np.asarray(gen_features, np.float64)
  if min(real.shape[0], gen.shape[0]) <= k:
    raise ValueError(f"precision_recall needs more than k={k} samples in each set.")
  real_radii, gen_radii = knn_radii(real, k), knn_radii(gen, k)
  d = pairwise_distances(gen, real)  # [N_gen, N_real]
  precision = np.mean(np.any(d <= real_radii[None, :], axis=1))
  recall = np.mean(np.any(d.T <= gen_radii[None, :], axis=1))
  return float(precision), float(recall)


def density_coverage(real_features, gen_features, k=3):
  """(density, coverage) of Naeem et al. 2020: density = mean over generated samples of the number of real balls
  containing them, divided by k; coverage = fraction of real balls that contain at least one generated sample."""
  real, gen = np.asarray(real_features, np.float64), np.asarray(gen_features, np.float64)
  real_radii = knn_radii(real, k)
  inside = pairwise_distances(gen, real) <= real_radii[None, :]  # [N_gen, N_real]
  return float(inside.sum() / (k * gen.shape[0])), float(np.mean(inside.any(axis=0)))
