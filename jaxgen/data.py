"""Input pipelines: TFDS datasets through `tfds.data_source` (array_record, random access, no TensorFlow),
`folder:DIR`, the user's own images as `python -m experiments.prepare_data` wrote them (`jaxgen.prepared`), and
`digits`, real MNIST digits bundled with jaxgen so the quickstart needs no download.

Batches are uint8 images `[B, H, W, C]` with int32 labels `[B]`. Training order is a pure function of
(seed, step): epoch e visits the examples in the permutation drawn from (seed, e), and step s takes examples
s*B .. (s+1)*B - 1 of the concatenated epochs. A resumed run therefore sees exactly the batches an uninterrupted
one would, and each host of a multi-host job reads only its own slice of every global batch.

Loading: `Dataset.get` reads a batch with one bulk read (`__getitems__`) where the source has one. `Input` decodes
a split that fits in config.data_cache_mb once into memory, after which reading a batch is an array gather; larger
splits are decoded per batch. Batches are read, decoded and augmented config.prefetch ahead in config.data_workers
processes (0: one background thread). Every batch is a pure function of (seed, step), so the number of workers
changes neither the batches nor their order.

Augmentation (config.augment, training batches only): random horizontal flips and random translations of up to
`translate` pixels (bilinear, edges repeated, floored to uint8: openai/glow's Keras `ImageDataGenerator` shifts).
Each example's flip and shift are drawn for the whole global batch from (seed, step) and sliced to this host's rows.

Binarized data (`binarize="dynamic"`: each pixel ~ Bernoulli(x / 255), redrawn every time an image is read, as
NVAE and the IWAE literature; `"threshold"`: x >= 128) hands out 0/1 uint8 images. Dynamic noise is a function
of (seed, step) for training batches and of (seed, batch index) for evaluation batches.
"""
import collections
from collections.abc import Iterator
import concurrent.futures
import dataclasses
import functools
import importlib.resources
import itertools
import multiprocessing
import queue
import threading

import numpy as np

BUNDLED = "digits"
FOLDER = "folder:"  # prefix of a prepared image folder: "folder:DIR"
BINARIZE_MODES = ("", "dynamic", "threshold")
# Seeds of the data's randomness, [config.seed, ..., suffix]: each stream has its own suffix.
INIT_SEED = 2**31 - 1  # the batch that data-dependent init sees
TRAIN_NOISE = 0xB1  # dynamic binarization of training batches
EVAL_NOISE = 0xE7  # dynamic binarization of evaluation batches
AUGMENT_FLIP = 0xF1  # horizontal flips of training batches
AUGMENT_SHIFT = 0x5F  # translations of training batches
AUGMENT_DEFAULTS = dict(flip=False, translate=0.0)
CACHE_CHUNK = 2048  # examples per task when a split is decoded into memory


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One split of a dataset with random access: `get(indices)` -> {"image": uint8 [n,H,W,C], "label": int32 [n]}."""
  name: str
  split: str
  num_examples: int
  image_shape: tuple
  num_classes: int
  _source: object = dataclasses.field(repr=False)

  def get(self, indices):
    indices = np.asarray(indices)
    if isinstance(self._source, dict):  # in-memory arrays
      return {"image": self._source["image"][indices], "label": self._source["label"][indices]}
    items = _read(self._source, indices)
    return {"image": np.stack([np.asarray(e["image"], np.uint8) for e in items]).reshape((-1,) + self.image_shape),
            "label": np.asarray([e.get("label", 0) for e in items], np.int32)}  # unlabelled sets: 0

  @property
  def nbytes(self):
    """Bytes of the decoded images."""
    return self.num_examples * int(np.prod(self.image_shape))


def _read(source, indices):
  """Examples `indices` of a random-access source: one bulk read where it has `__getitems__` (array_record reads
  the records of a batch together, several times faster than one at a time), else one `[i]` per example."""
  keys = [int(i) for i in indices]
  if hasattr(source, "__getitems__"):
    try:
      return source.__getitems__(keys)
    except TypeError:  # tfds.testing.mock_data's __getitems__ (tfds 4.9) takes the keys as `self`; [i] works
      pass
  return [source[i] for i in keys]


def cached(dataset, max_bytes, workers=0):
  """`dataset` decoded once into memory when its images fit in `max_bytes` (else `dataset` itself).

  Decodes CACHE_CHUNK examples per task, in `workers` processes when there are several chunks.
  """
  if isinstance(dataset._source, dict) or dataset.nbytes > max_bytes:
    return dataset
  n = dataset.num_examples
  images = np.empty((n,) + tuple(dataset.image_shape), np.uint8)
  labels = np.empty(n, np.int32)
  chunks = [np.arange(start, min(start + CACHE_CHUNK, n)) for start in range(0, n, CACHE_CHUNK)]
  parts = _ordered_map(_get, dataset, chunks, workers if len(chunks) > 1 else 0, ahead=2 * max(workers, 1))
  for idx, part in zip(chunks, parts):
    images[idx], labels[idx] = part["image"], part["label"]
  return dataclasses.replace(dataset, _source={"image": images, "label": labels})


def _get(dataset, indices):
  return dataset.get(indices)


def _put_ahead(batches, put, size):
  """Yields put(batch) for each of `batches`, computed up to `size` ahead by a daemon thread, so the consumer
  blocks only when none is ready (not on the loader behind it). Errors reach the consumer."""
  ready = queue.Queue(maxsize=size)
  done = object()

  def run():
    try:
      for batch in batches:
        ready.put(put(batch))
      ready.put(done)
    except Exception as e:  # handed to the consumer, raised there
      ready.put(e)

  threading.Thread(target=run, daemon=True).start()  # daemon: a dropped iterator's thread does not block exit
  while (item := ready.get()) is not done:
    if isinstance(item, Exception):
      raise item
    yield item


_worker_dataset = None  # the dataset of a worker process (set once, by its pool's initializer)


def _init_worker(dataset):
  global _worker_dataset
  _worker_dataset = dataset


def _call_in_worker(fn, item):
  return fn(_worker_dataset, item)


def _ordered_map(fn, dataset, items, workers, ahead):
  """Yields fn(dataset, item) for each item of `items` (possibly endless), in order, with up to `ahead` calls
  running in `workers` processes (each holds its own copy of `dataset`) or, with workers=0, in one thread."""
  if workers:
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"),  # fork is unsafe once JAX runs threads
        initializer=_init_worker, initargs=(dataset,))
    submit = functools.partial(pool.submit, _call_in_worker, fn)
  else:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    submit = functools.partial(pool.submit, fn, dataset)
  pending = collections.deque()
  try:
    for item in items:
      pending.append(submit(item))
      if len(pending) > ahead:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()
  finally:
    pool.shutdown(wait=False, cancel_futures=True)


def _load_bundled(split):
  if split not in ("train", "test"):
    raise ValueError(f"The bundled 'digits' dataset has splits 'train' and 'test', not {split!r}.")
  with importlib.resources.files("jaxgen").joinpath("assets/digits.npz").open("rb") as f:
    arrays = np.load(f)
    source = {"image": arrays[f"{split}_images"], "label": arrays[f"{split}_labels"].astype(np.int32)}
  return Dataset(BUNDLED, split, len(source["label"]), source["image"].shape[1:], 10, source)


def synthetic(image_shape, num_examples=256, num_classes=10, seed=0):
  """Random uint8 images of a given shape (for benchmarks: speed does not depend on pixel values)."""
  rng = np.random.default_rng(seed)
  source = {"image": rng.integers(0, 256, (num_examples,) + tuple(image_shape), dtype=np.uint8),
            "label": rng.integers(0, max(num_classes, 1), num_examples, dtype=np.int32)}
  return Dataset("synthetic", "train", num_examples, tuple(image_shape), num_classes, source)


def _missing_data_error(name, data_dir, where):
  return FileNotFoundError(
      f"TFDS dataset {name!r} is not prepared in array_record format under data_dir={data_dir!r} (looked in {where}). "
      f"Pass --config.data_dir=DIR where DIR/{name}/<version>/ holds it, or prepare it once on a machine with network: "
      f"pip install tensorflow-cpu && python -c \"import tensorflow_datasets as tfds; "
      f"tfds.builder('{name}', data_dir='DIR').download_and_prepare(file_format='array_record')\"; "
      f"or use --config.dataset=digits (bundled, no download).")


def load(name, split, data_dir=None, cache_dir=None):
  """Returns a `Dataset` for `name` ("digits", "folder:DIR" or a TFDS name) and `split` ("train", "test", ...).

  cache_dir: where the shards of a folder on an object store (folder:gs://...) are copied (`prepared.stage`), and
    the split's files of a TFDS data_dir on one (gs://..., `prepared.stage_tfds`).
  """
  if name == BUNDLED:
    return _load_bundled(split)
  if name.startswith(FOLDER):
    from jaxgen import prepared  # pylint: disable=g-import-not-at-top

    source, info = prepared.open_split(name[len(FOLDER):], split, cache_dir)
    return Dataset(name, split, len(source), tuple(info["image_shape"]), info["num_classes"], source)
  if data_dir and "://" in str(data_dir):
    from jaxgen import prepared  # pylint: disable=g-import-not-at-top

    data_dir = prepared.stage_tfds(name, data_dir, split, cache_dir)  # array_record reads local files only
  import tensorflow_datasets as tfds  # imported here: the bundled dataset and tests do not need it

  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ValueError(f"Unknown dataset {name!r}: set config.dataset to 'digits' (bundled) or a TFDS image dataset "
                     f"name such as 'mnist', 'fashion_mnist' or 'cifar10'.") from None
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except (NotImplementedError, RuntimeError, FileNotFoundError, AssertionError) as e:
    # TFDS reports missing data as "file format TFRECORD is not supported" and the like: say what to do instead.
    raise _missing_data_error(name, data_dir, builder.data_dir) from e
  features = builder.info.features
  if "image" not in features:
    raise ValueError(f"TFDS dataset {name!r} has no 'image' feature; jaxgen models images.")
  image_shape = tuple(features["image"].shape)
  if None in image_shape:
    # downsampled_imagenet/32x32 declares (None, None, 3) and holds only 32x32 images: the first image's shape
    # (Dataset.get fails on an image of another size).
    image_shape = tuple(np.asarray(source[0]["image"]).shape)
  num_classes = features["label"].num_classes if "label" in features else 0
  return Dataset(name, split, len(source), image_shape, num_classes, source)


def check_binarize(mode):
  if mode not in BINARIZE_MODES:
    raise ValueError(f"config.binarize={mode!r} is not one of {BINARIZE_MODES} "
                     f"('dynamic': Bernoulli(x/255) per read, 'threshold': x >= 128, '': 8-bit images).")


def binarize(images, mode, rng_seed, rows=slice(None)):
  """uint8 images [B, ...] -> 0/1 uint8 images under `mode` ("" returns them unchanged).

  The dynamic noise is drawn for the whole global batch from `rng_seed` (a list of ints) and then sliced to this
  host's `rows`, so every host count sees the same binarized batch. `images` are this host's rows.
  """
  check_binarize(mode)
  if not mode:
    return images
  if mode == "threshold":
    return (images >= 128).astype(np.uint8)
  rng = np.random.default_rng(rng_seed)
  global_rows = rows.stop if rows.stop is not None else images.shape[0]
  u = rng.random((global_rows,) + images.shape[1:], dtype=np.float32)[rows]
  return (u * 255.0 < images).astype(np.uint8)


def check_augment(augment, image_shape=None):
  """config.augment -> {"flip": bool, "translate": float}, the defaults filled in; raises on a bad setting."""
  augment = dict(augment or {})
  unknown = sorted(set(augment) - set(AUGMENT_DEFAULTS))
  if unknown:
    raise ValueError(f"Unknown config.augment key(s) {unknown}; the keys are {sorted(AUGMENT_DEFAULTS)} "
                     f"(e.g. --config.augment.flip=True --config.augment.translate=3.2).")
  augment = {**AUGMENT_DEFAULTS, **augment}
  if not isinstance(augment["flip"], (bool, np.bool_)):
    raise ValueError(f"config.augment.flip={augment['flip']!r} must be True or False.")
  translate = augment["translate"]
  limit = min(image_shape[:2]) if image_shape else np.inf
  if isinstance(translate, (bool, np.bool_)) or not isinstance(translate, (int, float)) or not 0 <= translate < limit:
    raise ValueError(f"config.augment.translate={translate!r} must be a number of pixels in [0, {limit}) "
                     f"(the largest shift; 0: none).")
  return {"flip": bool(augment["flip"]), "translate": float(translate)}


def augment_images(images, augment, rng_seed, batch_size, rows=slice(None)):
  """uint8 images [b, H, W, C] (this host's `rows` of a global batch of `batch_size`) -> augmented uint8 images.

  augment: check_augment's dict. flip: each image mirrored left-right with probability 1/2. translate = t: each
  image shifted by (dy, dx) ~ U(-t, t)^2 pixels, out[i, j] = in(i + dy, j + dx) interpolated bilinearly with the
  edge rows and columns repeated outside, then floored (Keras `ImageDataGenerator(width_shift_range=...)` with
  `fill_mode="nearest"`, as openai/glow feeds it). The draws come from rng_seed (a list of ints) for all
  `batch_size` rows, so every host count gets the same augmented global batch.
  """
  if augment["flip"]:
    flip = (np.random.default_rng(rng_seed + [AUGMENT_FLIP]).random(batch_size) < 0.5)[rows]  # [b]
    images = images.copy()
    images[flip] = images[flip, :, ::-1]
  if augment["translate"]:
    t = augment["translate"]
    shifts = np.random.default_rng(rng_seed + [AUGMENT_SHIFT]).uniform(-t, t, (batch_size, 2))[rows]  # [b, 2]
    images = np.floor(translate(images, shifts)).astype(np.uint8)
  return images


def _shift_rows(x, shift):
  """x [b, H, ...] sampled at row i + shift[b]: linear interpolation, edge rows repeated outside -> float32."""
  b, size = x.shape[:2]
  pos = np.arange(size)[None, :] + shift[:, None]  # [b, H]
  low = np.floor(pos)
  w = (pos - low).astype(np.float32).reshape(b * size, 1)
  base = size * np.arange(b)[:, None]
  low = low.astype(np.int64)
  rows = x.reshape(b * size, -1)  # whole rows are gathered: one contiguous copy each
  lo, hi = rows[(np.clip(low, 0, size - 1) + base).ravel()], rows[(np.clip(low + 1, 0, size - 1) + base).ravel()]
  out = hi.astype(np.float32)
  out -= lo
  out *= w
  out += lo
  return out.reshape(x.shape)


def translate(images, shifts):
  """images [b, H, W, C] shifted by shifts [b, 2] = (dy, dx) pixels: out[i, j] = in(i + dy, j + dx), bilinear,
  edge values repeated outside the image (scipy.ndimage.shift(order=1, mode="nearest") per image) -> float32."""
  columns_first = np.ascontiguousarray(_shift_rows(images, shifts[:, 0]).swapaxes(1, 2))  # [b, W, H, C]
  return np.ascontiguousarray(_shift_rows(columns_first, shifts[:, 1]).swapaxes(1, 2))


def train_indices(num_examples, batch_size, seed, step):
  """Global example indices of training batch `step`: [batch_size], a pure function of (seed, step)."""
  positions = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
  epochs, offsets = np.divmod(positions, num_examples)
  out = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    perm = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
    out[epochs == epoch] = perm[offsets[epochs == epoch]]
  return out


def host_slice(global_batch_size, process_index, process_count):
  """The rows of each global batch that this host reads (hosts split the batch evenly, in order)."""
  per_host = global_batch_size // process_count
  return slice(process_index * per_host, (process_index + 1) * per_host)


def train_batch(dataset, step, *, batch_size, seed, rows=slice(None), binarize_mode="", augment=None):
  """This host's `rows` of training batch `step`: read, augmented, binarized; a pure function of (seed, step)."""
  batch = dataset.get(train_indices(dataset.num_examples, batch_size, seed, step)[rows])
  if augment:
    batch["image"] = augment_images(batch["image"], augment, [seed, step], batch_size, rows)
  batch["image"] = binarize(batch["image"], binarize_mode, [seed, step, TRAIN_NOISE], rows)
  return batch


def train_batches(dataset, batch_size, seed, start_step, rows=slice(None), prefetch=2, binarize_mode="",
                  augment=None, workers=0) -> Iterator[dict]:
  """Yields host-local training batches (`train_batch`) for steps start_step, start_step + 1, ..., `prefetch`
  ahead, decoded in `workers` processes (0: one background thread). augment: check_augment's dict or None."""
  fn = functools.partial(train_batch, batch_size=batch_size, seed=seed, rows=rows, binarize_mode=binarize_mode,
                         augment=augment)
  return _ordered_map(fn, dataset, itertools.count(start_step), workers, max(prefetch, workers, 1))


def eval_batch(dataset, i, *, batch_size, total, rows=slice(None), binarize_mode="", seed=0):
  """Batch i of `eval_batches`."""
  idx = np.arange(i * batch_size, (i + 1) * batch_size)
  mask = (idx < total).astype(np.float32)
  idx = np.where(idx < total, idx, 0)
  batch = dataset.get(idx[rows])
  batch["image"] = binarize(batch["image"], binarize_mode, [seed, i, EVAL_NOISE], rows)
  batch["mask"] = mask[rows]
  return batch


def eval_batches(dataset, batch_size, rows=slice(None), num_examples=None, binarize_mode="", seed=0,
                 prefetch=2, workers=0) -> Iterator[dict]:
  """Yields batches covering the first `num_examples` (default all) examples exactly once, in order, never augmented.

  The last batch is padded to full size by repeating example 0; its "mask" (float32 [B], 1 for real examples)
  lets the caller average over real examples only. Read `prefetch` batches ahead, in `workers` processes (0: one
  background thread).
  """
  total = dataset.num_examples if num_examples is None else min(num_examples, dataset.num_examples)
  fn = functools.partial(eval_batch, batch_size=batch_size, total=total, rows=rows, binarize_mode=binarize_mode,
                         seed=seed)
  return _ordered_map(fn, dataset, range(-(-total // batch_size)), workers, max(prefetch, workers, 1))


class Input:
  """The data of one run, built from the config: datasets, binarization, augmentation, seed, batch sizes, loading
  and this host's rows.

  config keys read: dataset, data_dir, binarize, seed, batch_size, eval_batch_size (0: batch_size), augment,
  data_workers, prefetch, data_cache_mb, data_cache_dir (trainer.DEFAULTS documents them).
  `train` is the train split (or `train_data`, e.g. synthetic images for benchmarks); other splits are opened once,
  on first use. Batches come from the split decoded into memory when it fits in data_cache_mb (decoded on first
  use). Every batch is host-local: this process's rows of the global batch (`host_slice`).
  """

  def __init__(self, config, train_data=None, process_index=0, process_count=1):
    self.config = config
    check_binarize(config.binarize)
    # A config that did not pass through trainer.with_defaults loads in one thread, uncached, unaugmented.
    self.workers, self.prefetch = config.get("data_workers", 0), config.get("prefetch", 2)
    self.cache_mb = config.get("data_cache_mb", 0)
    for key, value in (("data_workers", self.workers), ("prefetch", self.prefetch), ("data_cache_mb", self.cache_mb)):
      if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"config.{key}={value!r} must be an integer >= 0.")
    self.cache_dir = config.get("data_cache_dir") or None
    self.train = train_data or load(config.dataset, "train", config.data_dir, self.cache_dir)
    self.augment = check_augment(config.get("augment"), self.train.image_shape)
    self.batch_size = config.batch_size
    self.eval_batch_size = config.eval_batch_size or config.batch_size
    self.rows = host_slice(self.batch_size, process_index, process_count)
    self.eval_rows = host_slice(self.eval_batch_size, process_index, process_count)
    self._splits = {}
    self._cached = {}

  def split(self, name):
    """The `Dataset` of split `name`, opened once."""
    if name not in self._splits:
      self._splits[name] = load(self.config.dataset, name, self.config.data_dir, self.cache_dir)
    return self._splits[name]

  def cached(self, name):
    """Split `name` ("train": `train`) in memory when it fits in config.data_cache_mb (`cached`), decoded once."""
    if name not in self._cached:
      dataset = self.train if name == "train" else self.split(name)
      self._cached[name] = cached(dataset, self.cache_mb << 20, self.workers)
    return self._cached[name]

  def init_batch(self):
    """This host's rows of the batch that data-dependent init sees (openai/glow inits on augmented training data)."""
    seed = [self.config.seed, INIT_SEED]
    idx = np.random.default_rng(seed).permutation(self.train.num_examples)[:self.batch_size]
    batch = self.train.get(idx[self.rows])
    # len(idx): a dataset smaller than the batch (synthetic init data) gives fewer rows than batch_size.
    batch["image"] = augment_images(batch["image"], self.augment, seed, len(idx), self.rows)
    batch["image"] = binarize(batch["image"], self.config.binarize, seed, self.rows)
    return batch

  def train_batches(self, start_step, put=None):
    """This host's training batches for steps start_step, start_step + 1, ... (`train_batches`); with `put`
    (e.g. host batch -> global device array), put(batch) done config.prefetch batches ahead in a background thread,
    so the transfer to the devices overlaps the step."""
    dataset = self.cached("train")
    batches = train_batches(dataset, self.batch_size, self.config.seed, start_step, self.rows, self.prefetch,
                            self.config.binarize, self.augment, self.workers)
    return batches if put is None else _put_ahead(batches, put, max(self.prefetch, 1))

  def eval_batches(self, split, num_examples=None, batch_size=None, rows=None):
    """This host's batches covering the first num_examples (0 or None: all) of `split` once (`eval_batches`)."""
    batch_size = batch_size or self.eval_batch_size
    if rows is None:
      rows = self.eval_rows if batch_size == self.eval_batch_size else slice(None)
    dataset = self.cached(split)
    return eval_batches(dataset, batch_size, rows, num_examples or None, self.config.binarize, self.config.seed,
                        self.prefetch, self.workers)

  def examples(self, split, num_examples=None):
    """uint8 [N, H, W, C]: the first num_examples (0 or None: all) images of `split`, binarized as in evaluation."""
    batches = self.eval_batches(split, num_examples, batch_size=1000, rows=slice(None))
    return np.concatenate([b["image"][b["mask"] > 0] for b in batches])
