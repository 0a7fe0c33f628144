"""Precision / recall and density / coverage (Kynkaanniemi et al. 2019; Naeem et al. 2020) on feature arrays."""
import numpy as np

from jaxgen.metrics import prdc


def test_precision_recall_of_identical_and_disjoint_sets():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(200, 5))
  assert prdc.precision_recall(x, x) == (1.0, 1.0)
  assert prdc.precision_recall(x, x + 100.0) == (0.0, 0.0)
  # Generated samples collapsed onto a small part of the data: high precision, low recall.
  p, r = prdc.precision_recall(x, x[np.argsort(np.linalg.norm(x - x[0], axis=1))[:20]])
  assert p == 1.0 and r < 0.5
  density, coverage = prdc.density_coverage(x, x)
  assert coverage == 1.0 and density >= 1.0


def test_knn_radii_match_brute_force():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(30, 4))
  d = np.linalg.norm(x[:, None] - x[None], axis=-1)
  np.testing.assert_allclose(prdc.knn_radii(x, k=3), np.sort(d, axis=1)[:, 3], rtol=1e-8, atol=1e-6)
