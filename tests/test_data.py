"""Data order is a pure function of (seed, step); hosts split batches; evaluation covers each example once."""
import numpy as np
import pytest

from jaxgen import data


def test_training_order_is_a_permutation_per_epoch_and_reproducible():
  n, b = 10, 4
  first_epochs = np.concatenate([data.train_indices(n, b, seed=3, step=s) for s in range(5)])  # 20 = 2 epochs
  assert sorted(first_epochs[:10]) == list(range(10)) and sorted(first_epochs[10:20]) == list(range(10))
  np.testing.assert_array_equal(data.train_indices(n, b, 3, 2), data.train_indices(n, b, 3, 2))
  assert not np.array_equal(data.train_indices(n, b, 3, 0), data.train_indices(n, b, 4, 0))


def test_hosts_read_disjoint_slices_that_cover_the_batch():
  rows = [data.host_slice(8, p, 4) for p in range(4)]
  covered = np.concatenate([np.arange(8)[r] for r in rows])
  np.testing.assert_array_equal(covered, np.arange(8))


def test_eval_batches_cover_the_split_once_with_a_mask():
  ds = data.synthetic((2, 2, 1), num_examples=10)
  batches = list(data.eval_batches(ds, batch_size=4))
  assert [b["image"].shape[0] for b in batches] == [4, 4, 4]
  assert sum(b["mask"].sum() for b in batches) == 10
  np.testing.assert_array_equal(batches[-1]["mask"], [1, 1, 0, 0])


def test_bundled_digits_are_real_mnist():
  train, test = data.load("digits", "train"), data.load("digits", "test")
  assert train.num_examples == 10_000 and test.num_examples == 2_000 and train.image_shape == (28, 28, 1)
  batch = train.get(np.arange(64))
  assert batch["image"].dtype == np.uint8 and set(np.unique(batch["label"])) == set(range(10))
  # MNIST digits are mostly black background with bright strokes.
  assert 0.1 < (batch["image"] > 128).mean() < 0.25


def test_binarize_dynamic_is_bernoulli_and_host_consistent():
  images = np.tile(np.arange(0, 256, 15, dtype=np.uint8)[None, :, None, None], (4000, 1, 1, 1))  # [4000, 18, 1, 1]
  binary = data.binarize(images, "dynamic", [0, 5, 1])
  assert set(np.unique(binary)) <= {0, 1}
  np.testing.assert_allclose(binary.mean(axis=0)[:, 0, 0], images[0, :, 0, 0] / 255.0, atol=0.03)
  # Two hosts reading half the batch each see exactly the rows of the one-host batch.
  halves = [data.binarize(images[r], "dynamic", [0, 5, 1], r) for r in (data.host_slice(4000, i, 2) for i in (0, 1))]
  np.testing.assert_array_equal(np.concatenate(halves), binary)
  assert not np.array_equal(data.binarize(images, "dynamic", [0, 6, 1]), binary)  # fresh noise per step
  np.testing.assert_array_equal(data.binarize(images, "threshold", None)[0, :, 0, 0], images[0, :, 0, 0] >= 128)
  with pytest.raises(ValueError, match="config.binarize"):
    data.binarize(images, "bernoulli", None)


def test_tfds_images_without_declared_size_or_labels_load():
  """downsampled_imagenet/32x32 declares images (None, None, 3) and has no label: shape from the data, label 0."""
  import tensorflow_datasets as tfds
  images = [{"image": np.full((32, 32, 3), i, np.uint8)} for i in range(5)]
  with tfds.testing.mock_data(as_data_source_fn=lambda builder, split, **kwargs: images):
    dataset = data.load("downsampled_imagenet/32x32", "validation")
  batch = dataset.get([0, 3])
  assert dataset.image_shape == (32, 32, 3) and dataset.num_classes == 0
  np.testing.assert_array_equal(batch["image"][:, 0, 0, 0], [0, 3])
  np.testing.assert_array_equal(batch["label"], [0, 0])
