"""The offline classifier whose features score samples without a download (jaxgen.metrics.classifier)."""
import jax
import numpy as np

from jaxgen.metrics import classifier


def test_offline_classifier_trains_and_embeds():
  # Two classes a small CNN separates only by spatial structure: horizontal vs vertical bars.
  rng = np.random.default_rng(0)
  n = 256
  labels = rng.integers(0, 2, size=n)
  images = rng.integers(0, 60, size=(n, 10, 10, 1))
  for i in range(n):
    pos = rng.integers(2, 8)
    if labels[i]:
      images[i, :, pos] = 255
    else:
      images[i, pos, :] = 255
  images = images.astype(np.uint8)
  model = classifier.Classifier(num_classes=2, widths=(8, 16), embed_dim=16)
  params, loss = classifier.train(jax.random.key(0), images, labels, model=model, steps=60, batch_size=16, lr=1e-2)
  assert classifier.accuracy(params, images, labels, model=model) > 0.95
  feats = classifier.embed(params, images[:10], model=model, batch_size=4)
  assert feats.shape == (10, 16) and np.all(np.isfinite(feats))
