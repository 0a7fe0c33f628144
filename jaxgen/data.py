"""Input pipelines: TFDS datasets through `tfds.data_source` (array_record, random access, no TensorFlow),
`folder:DIR`, the user's own images as `python -m experiments.prepare_data` wrote them (`jaxgen.prepared`), and
`digits`, real MNIST digits bundled with jaxgen so the quickstart needs no download.

Batches are uint8 images `[B, H, W, C]` with int32 labels `[B]`. Training order is a pure function of
(seed, step): epoch e visits the examples in the permutation drawn from (seed, e), and step s takes examples
s*B .. (s+1)*B - 1 of the concatenated epochs. A resumed run therefore sees exactly the batches an uninterrupted
one would, and each host of a multi-host job reads only its own slice of every global batch.

Binarized data (`binarize="dynamic"`: each pixel ~ Bernoulli(x / 255), redrawn every time an image is read, as
NVAE and the IWAE literature; `"threshold"`: x >= 128) hands out 0/1 uint8 images. Dynamic noise is a function
of (seed, step) for training batches and of (seed, batch index) for evaluation batches.
"""
from collections.abc import Iterator
import concurrent.futures
import dataclasses
import importlib.resources

import numpy as np

BUNDLED = "digits"
FOLDER = "folder:"  # prefix of a prepared image folder: "folder:DIR"
BINARIZE_MODES = ("", "dynamic", "threshold")
# Seeds of the data's randomness, [config.seed, ..., suffix]: each stream has its own suffix.
INIT_SEED = 2**31 - 1  # the batch that data-dependent init sees
TRAIN_NOISE = 0xB1  # dynamic binarization of training batches
EVAL_NOISE = 0xE7  # dynamic binarization of evaluation batches


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
    items = [self._source[int(i)] for i in indices]
    return {"image": np.stack([np.asarray(e["image"], np.uint8) for e in items]).reshape((-1,) + self.image_shape),
            "label": np.asarray([e.get("label", 0) for e in items], np.int32)}  # unlabelled sets: 0


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


def load(name, split, data_dir=None):
  """Returns a `Dataset` for `name` ("digits", "folder:DIR" or a TFDS name) and `split` ("train", "test", ...)."""
  if name == BUNDLED:
    return _load_bundled(split)
  if name.startswith(FOLDER):
    from jaxgen import prepared  # pylint: disable=g-import-not-at-top

    source, info = prepared.open_split(name[len(FOLDER):], split)
    return Dataset(name, split, len(source), tuple(info["image_shape"]), info["num_classes"], source)
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


def train_batches(dataset, batch_size, seed, start_step, rows=slice(None), prefetch=2,
                  binarize_mode="") -> Iterator[dict]:
  """Yields host-local training batches for steps start_step, start_step + 1, ... (decoded in a background thread)."""
  def fetch(step):
    batch = dataset.get(train_indices(dataset.num_examples, batch_size, seed, step)[rows])
    batch["image"] = binarize(batch["image"], binarize_mode, [seed, step, TRAIN_NOISE], rows)
    return batch

  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    pending = [pool.submit(fetch, start_step + i) for i in range(prefetch)]
    step = start_step + prefetch
    while True:
      batch = pending.pop(0).result()
      pending.append(pool.submit(fetch, step))
      step += 1
      yield batch


def eval_batches(dataset, batch_size, rows=slice(None), num_examples=None, binarize_mode="",
                 seed=0) -> Iterator[dict]:
  """Yields batches covering the first `num_examples` (default all) examples exactly once, in order.

  The last batch is padded to full size by repeating example 0; its "mask" (float32 [B], 1 for real examples)
  lets the caller average over real examples only.
  """
  total = dataset.num_examples if num_examples is None else min(num_examples, dataset.num_examples)
  for i, start in enumerate(range(0, total, batch_size)):
    idx = np.arange(start, start + batch_size)
    mask = (idx < total).astype(np.float32)
    idx = np.where(idx < total, idx, 0)
    batch = dataset.get(idx[rows])
    batch["image"] = binarize(batch["image"], binarize_mode, [seed, i, EVAL_NOISE], rows)
    batch["mask"] = mask[rows]
    yield batch


class Input:
  """The data of one run, built from the config: datasets, binarization, seed, batch sizes and this host's rows.

  config keys read: dataset, data_dir, binarize, seed, batch_size, eval_batch_size (0: batch_size).
  `train` is the train split (or `train_data`, e.g. synthetic images for benchmarks); other splits are opened once,
  on first use. Every batch is host-local: this process's rows of the global batch (`host_slice`).
  """

  def __init__(self, config, train_data=None, process_index=0, process_count=1):
    self.config = config
    check_binarize(config.binarize)
    self.train = train_data or load(config.dataset, "train", config.data_dir)
    self.batch_size = config.batch_size
    self.eval_batch_size = config.eval_batch_size or config.batch_size
    self.rows = host_slice(self.batch_size, process_index, process_count)
    self.eval_rows = host_slice(self.eval_batch_size, process_index, process_count)
    self._splits = {}

  def split(self, name):
    """The `Dataset` of split `name`, opened once."""
    if name not in self._splits:
      self._splits[name] = load(self.config.dataset, name, self.config.data_dir)
    return self._splits[name]

  def init_batch(self):
    """This host's rows of the batch that data-dependent init sees (openai/glow inits on training data)."""
    seed = [self.config.seed, INIT_SEED]
    idx = np.random.default_rng(seed).permutation(self.train.num_examples)[:self.batch_size]
    batch = self.train.get(idx[self.rows])
    batch["image"] = binarize(batch["image"], self.config.binarize, seed, self.rows)
    return batch

  def train_batches(self, start_step):
    """This host's training batches for steps start_step, start_step + 1, ... (`train_batches`)."""
    return train_batches(self.train, self.batch_size, self.config.seed, start_step, self.rows,
                         binarize_mode=self.config.binarize)

  def eval_batches(self, split, num_examples=None, batch_size=None, rows=None):
    """This host's batches covering the first num_examples (0 or None: all) of `split` once (`eval_batches`)."""
    batch_size = batch_size or self.eval_batch_size
    if rows is None:
      rows = self.eval_rows if batch_size == self.eval_batch_size else slice(None)
    return eval_batches(self.split(split), batch_size, rows, num_examples or None, self.config.binarize,
                        self.config.seed)

  def examples(self, split, num_examples=None):
    """uint8 [N, H, W, C]: the first num_examples (0 or None: all) images of `split`, binarized as in evaluation."""
    batches = self.eval_batches(split, num_examples, batch_size=1000, rows=slice(None))
    return np.concatenate([b["image"][b["mask"] > 0] for b in batches])
