"""Data order and augmentation are pure functions of (seed, step), whatever the workers, hosts or resume point;
hosts split batches; evaluation covers each example once."""
import ml_collections
import numpy as np
import pytest
import scipy.ndimage

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


class Records:
  """A random-access source like a prepared folder's: `len`, `[i]` and `__getitems__` -> [{"image", "label"}].
  Module-level, so it pickles into worker processes."""

  def __init__(self, images, getitems=True):
    self.images, self.getitems = images, getitems

  def __len__(self):
    return len(self.images)

  def __getitem__(self, i):
    return {"image": self.images[i], "label": i % 10}

  def __getattr__(self, name):  # `__getitems__` only when asked for: the reader must handle both kinds
    if name == "__getitems__" and self.__dict__.get("getitems"):
      return lambda keys: [self[k] for k in keys]
    raise AttributeError(name)


def _records(n=40, shape=(4, 4, 3), getitems=True):
  images = np.random.default_rng(0).integers(0, 256, (n,) + shape, dtype=np.uint8)
  return data.Dataset("records", "train", n, shape, 10, Records(images, getitems)), images


def _config(**kwargs):
  return ml_collections.ConfigDict(dict(dataset="digits", data_dir=None, seed=3, binarize="", batch_size=8,
                                        eval_batch_size=0, augment=dict(flip=False, translate=0.0), data_workers=0,
                                        prefetch=2, data_cache_mb=0) | kwargs)


def test_training_order_is_unchanged_and_every_reader_gives_the_same_batches():
  # The indices the loader before parallel workers used (same seed, same steps): the data order must not change.
  np.testing.assert_array_equal(np.concatenate([data.train_indices(10, 4, 3, s) for s in range(4)]),
                                [9, 6, 0, 2, 1, 4, 7, 5, 3, 8, 4, 1, 2, 8, 5, 0])
  np.testing.assert_array_equal(data.train_indices(1000, 6, 0, 170), [864, 568, 881, 86, 392, 367])
  bulk, images = _records()
  one_by_one, _ = _records(getitems=False)
  in_memory = data.cached(one_by_one, max_bytes=10**6)
  assert isinstance(in_memory._source, dict) and data.cached(bulk, max_bytes=100) is bulk  # too big: streamed
  for ds in (bulk, one_by_one, in_memory):
    for step, batch in zip(range(3, 8), data.train_batches(ds, 8, seed=3, start_step=3)):
      idx = data.train_indices(40, 8, 3, step)
      np.testing.assert_array_equal(batch["image"], images[idx])
      np.testing.assert_array_equal(batch["label"], idx % 10)


def test_worker_processes_give_the_batches_of_one_thread():
  ds, _ = _records()
  augment = dict(flip=True, translate=1.5)
  one = data.train_batches(ds, 8, seed=1, start_step=0, augment=augment, binarize_mode="dynamic")
  two = data.train_batches(ds, 8, seed=1, start_step=0, augment=augment, binarize_mode="dynamic", workers=2)
  for _, a, b in zip(range(6), one, two):  # 6 steps: past an epoch (40 examples), each worker serves several
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])


def test_resume_and_host_count_do_not_change_the_augmented_batches():
  ds, _ = _records()
  kwargs = dict(seed=5, augment=dict(flip=True, translate=2.0), binarize_mode="dynamic")
  run = [b["image"] for _, b in zip(range(5), data.train_batches(ds, 8, start_step=0, **kwargs))]
  resumed = next(data.train_batches(ds, 8, start_step=3, **kwargs))["image"]
  np.testing.assert_array_equal(resumed, run[3])
  hosts = [next(data.train_batches(ds, 8, start_step=3, rows=data.host_slice(8, p, 2), **kwargs))["image"]
           for p in range(2)]
  np.testing.assert_array_equal(np.concatenate(hosts), run[3])
  assert not np.array_equal(run[3], run[4])


def test_flips_and_translations_move_pixels_as_specified():
  image = np.arange(5 * 6 * 2, dtype=np.uint8).reshape(1, 5, 6, 2) * 4  # [1, 5, 6, 2], distinct values
  images = np.repeat(image, 64, axis=0)  # [64, 5, 6, 2]
  flipped = data.augment_images(images, dict(flip=True, translate=0.0), [0, 1], batch_size=64)
  is_flipped = np.array([np.array_equal(f, image[0, :, ::-1]) for f in flipped])
  assert all(is_flipped | np.all(flipped == image, axis=(1, 2, 3))) and 16 < is_flipped.sum() < 48
  # Integer shifts move whole pixels; outside the image the edge row / column repeats.
  x = image.astype(np.float32)
  shifted = data.translate(x, np.array([[1.0, -2.0]]))[0]
  rows, cols = np.clip(np.arange(5) + 1, 0, 4), np.clip(np.arange(6) - 2, 0, 5)
  np.testing.assert_array_equal(shifted, x[0][rows][:, cols])
  # Fractional shifts interpolate bilinearly, as scipy.ndimage (Keras ImageDataGenerator) does.
  for dy, dx in [(0.3, -1.7), (-2.6, 0.45)]:
    want = scipy.ndimage.shift(x[0], (-dy, -dx, 0), order=1, mode="nearest")
    np.testing.assert_allclose(data.translate(x, np.array([[dy, dx]]))[0], want, atol=1e-4)
  a = data.augment_images(images, dict(flip=False, translate=2.0), [0, 1], batch_size=64)
  np.testing.assert_array_equal(a, data.augment_images(images, dict(flip=False, translate=2.0), [0, 1], 64))
  assert a.dtype == np.uint8 and len({x.tobytes() for x in a}) > 32  # a different shift per image
  assert not np.array_equal(a, data.augment_images(images, dict(flip=False, translate=2.0), [0, 2], 64))


def test_input_augments_training_batches_only_and_evaluates_each_example_once():
  ds, images = _records(n=21, shape=(6, 6, 1))
  inputs = data.Input(_config(augment=dict(flip=True, translate=2.0), data_cache_mb=1), train_data=ds)
  inputs._splits["test"] = ds
  assert isinstance(inputs.cached("train")._source, dict)  # 756 bytes fit in 1 MiB
  batch = next(inputs.train_batches(0))
  assert not np.array_equal(batch["image"], images[data.train_indices(21, 8, 3, 0)])
  put = next(inputs.train_batches(0, put=lambda b: ("on device", b)))  # the trainer's device prefetch
  assert put[0] == "on device" and np.array_equal(put[1]["image"], batch["image"])
  with pytest.raises(ZeroDivisionError):  # a failed transfer surfaces in the training loop
    next(inputs.train_batches(0, put=lambda b: 1 / 0))
  batches = list(inputs.eval_batches("test"))
  assert len(batches) == 3 and sum(b["mask"].sum() for b in batches) == 21
  real = np.concatenate([b["image"][b["mask"] > 0] for b in batches])
  np.testing.assert_array_equal(real, images)  # in order, once each, not augmented


@pytest.mark.parametrize("augment, match", [
    (dict(flip=True, rotate=10), "Unknown config.augment key"),
    (dict(flip="yes"), "config.augment.flip"),
    (dict(translate=-1.0), "config.augment.translate"),
    (dict(translate=6.0), r"\[0, 6\)"),
])
def test_bad_augment_settings_fail_before_loading(augment, match):
  with pytest.raises(ValueError, match=match):
    data.check_augment(augment, (6, 8, 3))


def test_bad_loader_settings_name_the_key():
  ds, _ = _records()
  with pytest.raises(ValueError, match="config.data_workers"):
    data.Input(_config(data_workers=-1), train_data=ds)
  with pytest.raises(ValueError, match="config.augment.translate"):
    data.Input(_config(augment=dict(translate=4.0)), train_data=ds)  # images are 4x4


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
