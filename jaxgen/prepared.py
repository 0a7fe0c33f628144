"""Prepared image datasets (`--config.dataset=folder:DIR`): the user's own images as raw uint8 pixels in array_record
files, one record per image, read with random access and no decoding.

`prepare` writes DIR from a folder (searched recursively) or a zip of PNG / JPEG / WebP images
(`python -m experiments.prepare_data`); `open_split` opens one split of it for `data.load("folder:DIR", split)`.
DIR holds `info.json` (image shape, classes, splits and their shard files, the options used, skipped files) and
`<split>-NNNNN.array_record` shards. A record is the label (int32, little-endian) followed by the image's
H*W*C uint8 pixels in HWC order. info.json lists every shard's size and sha256. It is written last and DIR only
appears by renaming a finished `DIR.partial`, so an interrupted run never leaves a directory that looks complete.

Object stores (DIR a URI such as gs://bucket/name; array_record reads local files only): `prepare` writes the dataset
in the system's temporary directory (TMPDIR), then uploads the shards and info.json last. `open_split` copies the
shards of the split it opens into a local cache directory (`cache_dir`: config.data_cache_dir, default
$JAXGEN_CACHE/data or <tmp>/jaxgen-data), checks each against info.json's size and sha256, and re-uses shards
copied and checked before.

Images are converted once, as StyleGAN2-ADA's dataset_tool does (`--transform=center-crop`: centre crop to a square,
then PIL's Lanczos resize), with three differences: EXIF orientation is applied, transparent pixels are composited
on white (dataset_tool refuses images with alpha), and 16-bit images keep their high byte.
"""
import collections
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import time
import zipfile

from etils import epath
import numpy as np
import PIL.Image
import PIL.ImageOps

logger = logging.getLogger("jaxgen")

INFO = "info.json"
FORMAT = "jaxgen-prepared-v1"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
LABEL_FILE = "dataset.json"  # StyleGAN2-ADA's labels: {"labels": [["relative/path.png", class], ...]}
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
SHARD_BYTES = 256 << 20  # records per shard: as many as fit in 256 MiB
PREPARE = "python -m experiments.prepare_data --source=IMAGES --dest={dest}"
SHARD_NAME = re.compile(r"[a-z]+-\d{5}\.array_record")
COPY_CHUNK = 16 << 20  # bytes per read when copying shards to or from an object store


def encode(image, label):
  """uint8 [H, W, C] image and int label -> one record."""
  return struct.pack("<i", int(label)) + np.ascontiguousarray(image, np.uint8).tobytes()


WRITER_OPTIONS = "group_size:1,snappy"


class Records:
  """One split's records as {"image": uint8 [H, W, C], "label": int}: `len`, `[i]` and `__getitems__(indices)`
  (one batched array_record read; the readers open lazily, so the object pickles)."""

  def __init__(self, shards, image_shape):
    from array_record.python import array_record_data_source  # pylint: disable=g-import-not-at-top
    # "path[0:n]" gives the record count up front: no file is opened until the first read.
    self._data = array_record_data_source.ArrayRecordDataSource(shards)
    self.image_shape = tuple(image_shape)

  def _decode(self, record):
    label, = struct.unpack_from("<i", record)
    return {"image": np.frombuffer(record, np.uint8, offset=4).reshape(self.image_shape), "label": label}

  def __len__(self):
    return len(self._data)

  def __getitem__(self, index):
    return self._decode(self._data[index])

  def __getitems__(self, indices):
    return [self._decode(r) for r in self._data.__getitems__(indices)]


def read_info(directory):
  """DIR/info.json as a dict; a one-line error naming prepare_data when DIR is not a complete prepared dataset."""
  root = epath.Path(directory).expanduser()
  if not (root / INFO).exists():
    what = "is not a complete prepared dataset (no info.json)" if root.exists() else "does not exist"
    raise FileNotFoundError(f"folder:{root} {what}; write it with {PREPARE.format(dest=root)}.")
  info = json.loads((root / INFO).read_text())
  if info.get("format") != FORMAT:
    raise ValueError(f"{root / INFO} is format {info.get('format')!r}, not {FORMAT!r}; prepare it again with "
                     f"{PREPARE.format(dest=root)} --overwrite.")
  return info


def is_remote(path):
  """True for a URI with a scheme (gs://, s3://, ...): array_record cannot open it, so its shards are staged."""
  return "://" in str(path)


def open_split(directory, split, cache_dir=None):
  """-> (Records, info) of split `split` of the dataset that `prepare` wrote to `directory` (a local path, or a URI
  whose shards are first copied to `cache_dir` by `stage`)."""
  root = epath.Path(directory).expanduser()
  info = read_info(root)
  if split not in info["splits"]:
    hint = " (re-run prepare_data with --holdout=0.1 to hold out 10% as 'test', or set --config.eval_split=train)"
    raise ValueError(f"folder:{root} has splits {sorted(info['splits'])}, not {split!r}"
                     f"{hint if split == 'test' else ''}.")
  shards = info["splits"][split]["shards"]
  missing = [s["file"] for s in shards if not (root / s["file"]).exists()]
  if missing:
    raise FileNotFoundError(f"folder:{root} lacks {missing[0]} (and {len(missing) - 1} more shard(s)) that info.json "
                            f"lists; copy the whole directory, or prepare it again with --overwrite.")
  local = stage(root, info, split, cache_dir) if is_remote(root) else root
  return Records([f"{local / s['file']}[0:{s['num_examples']}]" for s in shards], info["image_shape"]), info


def default_cache_dir():
  """$JAXGEN_CACHE/data, else <system tmp>/jaxgen-data: where the shards of remote datasets are staged."""
  base = os.environ.get("JAXGEN_CACHE")
  return os.path.join(base, "data") if base else os.path.join(tempfile.gettempdir(), "jaxgen-data")


def file_digest(path, copy_to=None):
  """-> (bytes, sha256 hex) of the file at epath `path`, read in chunks (each also written to epath `copy_to`)."""
  digest, size = hashlib.sha256(), 0
  with contextlib.ExitStack() as stack:
    source = stack.enter_context(path.open("rb"))
    copy = stack.enter_context(copy_to.open("wb")) if copy_to is not None else None
    while chunk := source.read(COPY_CHUNK):
      digest.update(chunk)
      size += len(chunk)
      if copy is not None:
        copy.write(chunk)
  return size, digest.hexdigest()


def _copy_checked(files, local, what, mismatch):
  """Copies each (remote epath, expected {"bytes": n[, "sha256": hex]}) of `files` into the local directory `local`
  unless `<name>.verified` there records the same expectation for a file of that size. Each goes through a
  temporary name of this process (hosts may share a cache directory), is checked, renamed, then marked; a copy that
  does not match raises `mismatch(src, size, sha256, expected)`. Refuses before copying when the disk lacks room."""
  def done(src, expected):
    marker, dst = local / f"{src.name}.verified", local / src.name
    return (marker.exists() and json.loads(marker.read_text()) == expected and dst.exists()
            and dst.stat().length == expected["bytes"])

  todo = [(src, expected) for src, expected in files if not done(src, expected)]
  need, free = sum(e["bytes"] for _, e in todo), shutil.disk_usage(local).free
  if need > free:
    raise OSError(f"Staging {what} needs {need / 2**30:.2f} GiB in {local}, which has {free / 2**30:.2f} GiB free; "
                  f"set --config.data_cache_dir to a local disk with room.")
  if todo:
    logger.info("Copying %d file(s) (%.2f GiB) of %s to %s.", len(todo), need / 2**30, what, local)
  for src, expected in todo:
    partial = local / f"{src.name}.{os.getpid()}.partial"
    size, sha256 = file_digest(src, copy_to=partial)
    if size != expected["bytes"] or expected.get("sha256") not in (None, sha256):
      partial.unlink()
      raise mismatch(src, size, sha256, expected)
    partial.replace(local / src.name)
    marker_partial = local / f"{src.name}.verified.{os.getpid()}.partial"
    marker_partial.write_text(json.dumps(expected))
    marker_partial.replace(local / f"{src.name}.verified")


def stage(root, info, split, cache_dir=None):
  """Copies the shards of `split` of the remote dataset `root` to a local directory and returns it (an epath).

  The directory is cache_dir/<name>-<hash of root's URI and info.json>. A shard is copied through a temporary name,
  checked against info.json's size and sha256 (the remote file's size where info.json predates them), and then
  marked with `<shard>.verified`; a marked shard of the right size is re-used, not copied again. Each process
  copies what it reads (every host reads every shard: its rows of each batch come from the whole split).
  """
  key = hashlib.sha256((str(root) + json.dumps(info, sort_keys=True)).encode()).hexdigest()[:12]
  local = epath.Path(cache_dir or default_cache_dir()).expanduser() / f"{root.name}-{key}"
  local.mkdir(parents=True, exist_ok=True)
  files = [(root / shard["file"], {"bytes": shard.get("bytes") or (root / shard["file"]).stat().length,
                                    "sha256": shard.get("sha256")})
           for shard in info["splits"][split]["shards"]]

  def mismatch(src, size, sha256, expected):
    listed = f"{expected['bytes']} bytes" + (f", sha256 {expected['sha256'][:12]}..." if expected["sha256"] else "")
    return ValueError(f"{src} is {size} bytes with sha256 {sha256[:12]}..., but {root / INFO} lists {listed}: it is "
                      f"truncated or corrupt; copy it again, or prepare again with {PREPARE.format(dest=root)} "
                      f"--overwrite.")

  _copy_checked(files, local, f"split {split!r} of folder:{root}", mismatch)
  return local


def stage_tfds(name, data_dir, split, cache_dir=None):
  """Copies what TFDS needs to read `split` of dataset `name` from a remote `data_dir` (gs://...) to a local
  TFDS data_dir and returns that directory (a str): array_record cannot open remote files.

  The files of the version this TFDS reads (`tfds.builder_cls(NAME).VERSION`, or NAME:VERSION) under
  data_dir/NAME/VERSION: its metadata (dataset_info.json, features.json, label lists) and the split's
  `*-SPLIT.array_record-*` shards, into cache_dir/tfds-<hash of data_dir>/NAME/VERSION. Each file is copied through
  a temporary name and checked against the remote file's size, then marked `<file>.verified`; a marked file of the
  right size is re-used.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top; only TFDS datasets need it

  base, _, pinned = name.partition(":")
  version = pinned or str(tfds.builder_cls(base.split("/")[0]).VERSION)
  root = epath.Path(data_dir) / base / version
  if not (root / "dataset_info.json").exists():
    raise FileNotFoundError(f"No prepared TFDS dataset {base} {version} in {data_dir} ({root}/dataset_info.json is "
                            f"missing): prepare it on a machine with the data (tfds.builder('{base}').download_and_"
                            f"prepare(file_format='array_record')) and copy its directory there.")
  key = hashlib.sha256(str(epath.Path(data_dir)).encode()).hexdigest()[:12]
  local_dir = epath.Path(cache_dir or default_cache_dir()).expanduser() / f"tfds-{key}"
  local = local_dir / base / version
  local.mkdir(parents=True, exist_ok=True)
  split_base = re.split(r"[\[+]", split)[0]
  files = [(f, {"bytes": f.stat().length}) for f in root.iterdir()
           if f.is_file() and (".array_record" not in f.name or f"-{split_base}.array_record" in f.name)]

  def mismatch(src, size, sha256, expected):
    del sha256
    return ValueError(f"Copying {src} gave {size} bytes where the store lists {expected['bytes']}: it changed or the "
                      f"copy was cut; run again.")

  _copy_checked(files, local, f"split {split!r} of TFDS {base} {version} in {data_dir}", mismatch)
  return str(local_dir)


# ---- Reading the source images.

def center_crop(img, resolution):
  """PIL image -> the largest centred square, resized to resolution x resolution with Lanczos."""
  w, h = img.size
  side = min(w, h)
  left, top = (w - side) // 2, (h - side) // 2
  img = img.crop((left, top, left + side, top + side))
  return img if side == resolution else img.resize((resolution, resolution), PIL.Image.Resampling.LANCZOS)


def to_pixels(img, channels, resolution=None):
  """PIL image -> uint8 [H, W, channels]: EXIF orientation applied, transparency composited on white, 16-bit
  samples reduced to their high byte, then (with `resolution`) `center_crop`."""
  img = PIL.ImageOps.exif_transpose(img)
  if img.mode.startswith("I;16"):
    img = PIL.Image.fromarray((np.asarray(img) >> 8).astype(np.uint8))
  if img.has_transparency_data:
    # Transparent pixels often hold arbitrary colours: white is what a viewer shows on a page.
    img = PIL.Image.alpha_composite(PIL.Image.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
  img = img.convert("L" if channels == 1 else "RGB")
  if resolution:
    img = center_crop(img, resolution)
  pixels = np.asarray(img, np.uint8)
  return pixels.reshape(pixels.shape[:2] + (channels,))


def read_image(path, image_shape):
  """A user's image file (PNG, JPEG, ...) of any size -> uint8 [H, W, C] for a model of `image_shape` (H, W, C):
  `to_pixels` with C's colour mode (RGB to grayscale or back), the largest centred crop of H:W's aspect, resized
  with Lanczos. A missing or unreadable file is an error that says so."""
  h, w, c = image_shape
  if c not in (1, 3):
    raise ValueError(f"The model has {c} image channels; --image files can feed only 1 (grayscale) or 3 (RGB).")
  path = epath.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist; pass an image file (PNG, JPEG, ...).")
  try:
    with path.open("rb") as f, PIL.Image.open(f) as img:
      img = PIL.ImageOps.exif_transpose(img)
      side_w, side_h = img.size
      scale = min(side_w / w, side_h / h)  # the largest centred box of aspect w:h
      cw, ch = round(w * scale), round(h * scale)
      left, top = (side_w - cw) // 2, (side_h - ch) // 2
      img = img.crop((left, top, left + cw, top + ch)).resize((w, h), PIL.Image.Resampling.LANCZOS)
      return to_pixels(img, c)
  except (PIL.UnidentifiedImageError, OSError) as e:
    raise ValueError(f"{path} is {_error(e)}; pass a PNG or JPEG file.") from None


class _Source:
  """The images of a folder (recursively) or a zip: `names` (relative '/' paths, sorted), `ignored` (other files),
  `open(name)` (binary file object) and `label_file` (the root's dataset.json, or None)."""

  def __init__(self, path, stack):
    path = epath.Path(path)
    self.path = path
    if path.is_file() and path.suffix.lower() == ".zip":
      self._zip = zipfile.ZipFile(stack.enter_context(path.open("rb")))
      files = [i.filename for i in self._zip.infolist() if not i.is_dir()]
    elif path.is_dir():
      self._zip = None
      files = [(d / f).relative_to(path).as_posix() for d, _, names in path.walk() for f in names]
    else:
      raise FileNotFoundError(f"--source={path} is neither a folder nor a .zip file; pass the folder of your images.")
    files.sort()
    # Hidden files and macOS zip metadata (__MACOSX/, ._name.jpg) are not images even when named like one.
    junk = {f for f in files if any(p.startswith((".", "__MACOSX")) for p in f.split("/"))}
    self.names = [f for f in files if f.lower().endswith(EXTENSIONS) and f not in junk]
    self.label_file = LABEL_FILE if LABEL_FILE in files else None
    images = set(self.names) | {self.label_file}
    self.ignored = [f for f in files if f not in images]

  def open(self, name):
    return self._zip.open(name) if self._zip else (self.path / name).open("rb")

  def read_labels(self):
    with self.open(self.label_file) as f:
      return json.load(f)


def _ordered_map(fn, items, workers):
  """fn over items in `workers` threads, results in order, a bounded number in flight (PIL decodes and resizes
  without holding the GIL, so threads use every core)."""
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    pending = collections.deque()
    for item in items:
      pending.append(pool.submit(fn, item))
      if len(pending) >= 4 * workers:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


class _Progress:
  """Logs `done/total` with rate and ETA at most every `every_s` seconds, and at the end."""

  def __init__(self, what, total, every_s=10.0):
    self.what, self.total, self.every_s = what, total, every_s
    self.start = self.last = time.monotonic()

  def update(self, done):
    now = time.monotonic()
    if done < self.total and now - self.last < self.every_s:
      return
    self.last = now
    rate = done / max(now - self.start, 1e-9)
    eta = (self.total - done) / rate if rate else float("inf")
    logger.info("%s %d/%d images (%.0f/s), ETA %.0fs", self.what, done, self.total, rate, eta)


def _error(e):
  if isinstance(e, PIL.UnidentifiedImageError):
    return "not an image PIL can read (unknown format or corrupt header)"
  return f"{type(e).__name__}: {e}"


def _header(source, name):
  """-> ((width, height) as displayed, is_gray, error): reads the header only, not the pixels."""
  try:
    with source.open(name) as f, PIL.Image.open(f) as img:
      w, h = img.size
      exif = img.info.get("exif")
      if exif and _orientation(exif) in (5, 6, 7, 8):
        w, h = h, w  # rotated by 90 degrees when displayed
      return (w, h), img.mode in GRAY_MODES, None
  except Exception as e:  # pylint: disable=broad-except  # any decoder error means "unreadable": list it
    return None, None, _error(e)


def _orientation(exif_bytes):
  exif = PIL.Image.Exif()
  exif.load(exif_bytes)
  return exif.get(0x0112, 1)


def _pixels(source, name, channels, resolution, shape):
  try:
    with source.open(name) as f, PIL.Image.open(f) as img:
      pixels = to_pixels(img, channels, resolution)
  except Exception as e:  # pylint: disable=broad-except
    return None, _error(e)
  if pixels.shape != shape:
    return None, f"decoded to shape {pixels.shape}, not {shape} as its header said"
  return pixels, None


def _listing(failures, limit=100):
  lines = [f"  {name}: {reason}" for name, reason in failures[:limit]]
  if len(failures) > limit:
    lines.append(f"  ... and {len(failures) - limit} more")
  return "\n".join(lines)


def _stop_on(failures, on_error):
  if failures and on_error == "stop":
    raise ValueError(f"{len(failures)} image file(s) could not be read; nothing was written:\n{_listing(failures)}\n"
                     f"Fix or remove them, or pass --on_error=skip to leave them out (info.json then lists them).")


# ---- Labels, channels, splits.

def _labels(source, names, labels):
  """-> (label per name, num_classes, class_names) under --labels=auto|none|subfolders|PATH."""
  if labels == "none" or (labels == "auto" and source.label_file is None):
    return [0] * len(names), 0, None
  if labels == "subfolders":
    outside = [n for n in names if "/" not in n]
    if outside:
      raise ValueError(f"--labels=subfolders needs every image in a class subfolder, but {len(outside)} are at the top "
                       f"of --source (e.g. {outside[0]!r}); move them into one, or pass --labels=none.")
    class_names = sorted({n.split("/")[0] for n in names})
    index = {c: i for i, c in enumerate(class_names)}
    return [index[n.split("/")[0]] for n in names], len(class_names), class_names
  if labels == "auto":
    where, read = f"{source.path}/{LABEL_FILE}", source.read_labels
  else:
    where, read = labels, lambda: json.loads(epath.Path(labels).read_text())
    if not epath.Path(labels).is_file():
      raise FileNotFoundError(f"--labels={labels} is not a file; pass auto, none, subfolders or the path of a "
                              f"dataset.json.")
  try:
    content = read()
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f"{where} is not valid JSON ({e}); fix it or pass --labels=none.") from None
  if not isinstance(content, dict) or "labels" not in content:
    raise ValueError(f"{where} has no \"labels\" list; write it as {{\"labels\": [[\"path.png\", 0], ...]}} or pass "
                     f"--labels=none.")
  entries = content["labels"]
  if entries is None:  # dataset_tool writes {"labels": null} for an unlabelled set
    return [0] * len(names), 0, None
  table = {}
  for entry in entries:
    if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], int) and entry[1] >= 0):
      raise ValueError(f"{where}: label entry {entry!r} is not [\"relative/path.png\", class >= 0]; jaxgen takes "
                       f"integer class labels.")
    table[entry[0]] = entry[1]
  missing = sorted(set(table) - set(names))
  if missing:
    raise ValueError(f"{where} names {len(missing)} file(s) that are not images in --source (e.g. {missing[0]!r}); "
                     f"give paths relative to --source with '/' separators, or remove those entries.")
  unlabelled = [n for n in names if n not in table]
  if unlabelled:
    raise ValueError(f"{len(unlabelled)} image(s) have no label in {where} (e.g. {unlabelled[0]!r}); add them to it, "
                     f"or pass --labels=none.")
  return [table[n] for n in names], max(table.values()) + 1, None


def _image_shape(sizes, grays, names, resolution, channels):
  """The one image shape of the set: [H, W, C]."""
  if channels == "auto":
    channels = 1 if all(grays) else 3
  if resolution:
    return (resolution, resolution, channels)
  distinct = collections.Counter(sizes)
  if len(distinct) > 1:
    (common, _), (other, _) = distinct.most_common(2)
    example = names[sizes.index(other)]
    raise ValueError(f"The images have {len(distinct)} different sizes (most are {common[0]}x{common[1]}, "
                     f"{example!r} is {other[0]}x{other[1]}); pass --resolution=N to centre-crop and resize "
                     f"them all to NxN.")
  w, h = sizes[0]
  return (h, w, channels)


def _split_of(num, holdout, seed):
  """-> split name per image: a seeded random `holdout` fraction is "test", the rest "train"."""
  num_test = int(round(holdout * num))
  if holdout and not 0 < num_test < num:
    raise ValueError(f"--holdout={holdout} of {num} images leaves {num - num_test} for train and {num_test} for "
                     f"test; choose a fraction that leaves at least one image in each, or --holdout=0.")
  test = np.random.default_rng(seed).permutation(num)[:num_test]
  splits = np.full(num, "train", dtype=object)
  splits[test] = "test"
  return list(splits)


def check_options(resolution, channels, labels, holdout, on_error):
  """One-line errors for options that cannot work, before any file is read."""
  if resolution is not None and resolution <= 0:
    raise ValueError(f"--resolution={resolution} must be a positive number of pixels (or leave it out to keep the "
                     f"images' own size).")
  if channels not in ("auto", 1, 3):
    raise ValueError(f"--channels={channels!r} must be auto, 1 (grayscale) or 3 (RGB).")
  if not labels:
    raise ValueError("--labels must be auto, none, subfolders or the path of a dataset.json.")
  if not 0.0 <= holdout < 1.0:
    raise ValueError(f"--holdout={holdout} must be a fraction in [0, 1), e.g. 0.1 to hold out 10% as 'test'.")
  if on_error not in ("stop", "skip"):
    raise ValueError(f"--on_error={on_error!r} must be 'stop' or 'skip'.")


# ---- Writing.

class _ShardWriter:
  """One split's records, in shards `<split>-NNNNN.array_record` of at most `per_shard` records."""

  def __init__(self, directory, split, per_shard):
    self.directory, self.split, self.per_shard = directory, split, per_shard
    self.shards, self._writer = [], None

  def add(self, record):
    if self._writer is None or self.shards[-1]["num_examples"] == self.per_shard:
      self._close_shard()
      from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
      name = f"{self.split}-{len(self.shards):05d}.array_record"
      # group_size:1: every record is its own chunk, so a random read touches one record only. snappy, not the
      # default brotli: reading 256x256 RGB records was 1.2k images/s with brotli, 6.6k with snappy (one thread).
      self._writer = array_record_module.ArrayRecordWriter(os.fspath(self.directory / name), WRITER_OPTIONS)
      self.shards.append({"file": name, "num_examples": 0})
    self._writer.write(record)
    self.shards[-1]["num_examples"] += 1

  def _close_shard(self):
    if self._writer is not None:
      self._writer.close()
      self._writer = None
      shard = self.shards[-1]
      shard["bytes"], shard["sha256"] = file_digest(self.directory / shard["file"])

  def close(self):
    self._close_shard()
    return {"num_examples": sum(s["num_examples"] for s in self.shards), "shards": self.shards}


def _check_dest(dest, overwrite):
  """One-line errors, before any image is read, for a DEST that holds something `prepare` must not replace."""
  if (dest / INFO).exists() and not overwrite:
    raise ValueError(f"--dest={dest} already holds a prepared dataset; pass --overwrite to replace it, or "
                     f"choose another --dest.")
  # On an object store, shards without info.json are what an interrupted upload left: `_upload` replaces them.
  leftover = lambda f: is_remote(dest) and SHARD_NAME.fullmatch(f.name)  # noqa: E731
  if dest.exists() and not (dest / INFO).exists() and (
      not dest.is_dir() or not all(leftover(f) for f in dest.iterdir())):
    raise ValueError(f"--dest={dest} exists and is not a prepared dataset; choose a new or empty --dest.")


def _claim(dest, overwrite):
  """Checks DEST before any image is read; -> the DEST.partial directory to write into (emptied)."""
  _check_dest(dest, overwrite)
  partial = dest.parent / (dest.name + ".partial")
  if partial.exists():
    logger.info("Removing %s, left by an interrupted run.", partial)
    partial.rmtree()
  partial.mkdir(parents=True)
  return partial


def prepare(source, dest, *, resolution=None, channels="auto", labels="auto", holdout=0.0, seed=0, on_error="stop",
            overwrite=False, workers=None):
  """Writes the images under `source` (folder or .zip) as a prepared dataset at `dest`; returns its info dict.

  resolution: None keeps the images' size (all must share it), N centre-crops and resizes each to NxN.
  channels: "auto" (1 if every image is stored as grayscale, else 3), 1 or 3.
  labels: "auto" (source's dataset.json if present, else none), "none", "subfolders" (one folder per class,
    classes numbered in sorted order) or the path of a StyleGAN2-ADA dataset.json.
  holdout: the fraction of images (a permutation drawn from `seed`) written as split "test"; the rest is "train".
  on_error: "stop" (list the unreadable files and write nothing) or "skip" (leave them out, list them in info.json).
  """
  check_options(resolution, channels, labels, holdout, on_error)
  source, dest = epath.Path(source).expanduser(), epath.Path(dest).expanduser()
  if is_remote(dest):
    _check_dest(dest, overwrite)
    with tempfile.TemporaryDirectory(prefix="jaxgen-prepare-") as local:
      info = prepare(source, epath.Path(local) / dest.name, resolution=resolution, channels=channels, labels=labels,
                     holdout=holdout, seed=seed, on_error=on_error, workers=workers)
      _upload(epath.Path(local) / dest.name, dest)
    return info
  workers = workers or os.cpu_count() or 1
  with contextlib.ExitStack() as stack:
    src = _Source(source, stack)
    if not src.names:
      raise ValueError(f"--source={source} holds no {'/'.join(EXTENSIONS)} images (searched recursively); point it "
                       f"at the folder or .zip that contains them.")
    if src.ignored:
      logger.info("Ignoring %d file(s) that are not images, e.g. %s.", len(src.ignored), src.ignored[0])
    label_of, num_classes, class_names = _labels(src, src.names, labels)
    partial = _claim(dest, overwrite)
    try:
      info = _write(src, partial, label_of, resolution, channels, holdout, seed, on_error, workers)
      info.update(num_classes=num_classes, class_names=class_names, source=os.fspath(source), ignored=src.ignored,
                  options=dict(resolution=resolution, channels=channels, labels=labels, holdout=holdout, seed=seed,
                               on_error=on_error))
      (partial / INFO).write_text(json.dumps(info, indent=1))  # last: its presence marks a complete dataset
      if dest.exists():
        dest.rmtree()  # complete with --overwrite (checked by _claim), or empty
      partial.rename(dest)
    except BaseException:
      partial.rmtree()
      raise
  counts = {k: v["num_examples"] for k, v in info["splits"].items()}
  logger.info("Wrote %s: %s images of shape %s, %d classes, splits %s.", dest, sum(counts.values()),
              tuple(info["image_shape"]), num_classes, counts)
  return info


def _upload(local, dest):
  """Copies the finished dataset `local` to the object store path `dest`. A dataset already there loses its info.json
  first and the new info.json is copied last, so an interrupted upload never leaves one that looks complete."""
  if (dest / INFO).exists():
    (dest / INFO).unlink()
  if dest.exists():
    dest.rmtree()
  dest.mkdir(parents=True, exist_ok=True)
  files = sorted(f for f in local.iterdir() if f.name != INFO)
  for i, f in enumerate(files):
    logger.info("Uploading %s (%d/%d) to %s.", f.name, i + 1, len(files), dest)
    file_digest(f, copy_to=dest / f.name)
  (dest / INFO).write_text((local / INFO).read_text())
  logger.info("Uploaded %s.", dest)


def _write(src, partial, label_of, resolution, channels, holdout, seed, on_error, workers):
  names = src.names
  progress = _Progress("Read the headers of", len(names))
  headers = []
  for i, header in enumerate(_ordered_map(lambda n: _header(src, n), names, workers)):
    headers.append(header)
    progress.update(i + 1)
  failures = [(n, h[2]) for n, h in zip(names, headers) if h[2]]
  _stop_on(failures, on_error)
  keep = [i for i, h in enumerate(headers) if not h[2]]
  if not keep:
    raise ValueError(f"None of the {len(names)} image files could be read:\n{_listing(failures)}")
  shape = _image_shape([headers[i][0] for i in keep], [headers[i][1] for i in keep], [names[i] for i in keep],
                       resolution, channels)
  split_of = dict(zip(keep, _split_of(len(keep), holdout, seed)))
  per_shard = max(1, SHARD_BYTES // (4 + int(np.prod(shape))))
  writers = {s: _ShardWriter(partial, s, per_shard) for s in sorted(set(split_of.values()))}
  progress = _Progress("Prepared", len(keep))
  decode = lambda i: _pixels(src, names[i], shape[-1], resolution, shape)  # noqa: E731
  for done, (i, (pixels, error)) in enumerate(zip(keep, _ordered_map(decode, keep, workers))):
    if error:
      failures.append((names[i], error))
    else:
      writers[split_of[i]].add(encode(pixels, label_of[i]))
    progress.update(done + 1)
  splits = {s: w.close() for s, w in writers.items()}
  _stop_on(failures, on_error)
  empty = [s for s, v in splits.items() if not v["num_examples"]]
  if empty:
    raise ValueError(f"Split(s) {empty} have no readable images left:\n{_listing(failures)}")
  if failures:
    logger.warning("Skipped %d unreadable file(s) (--on_error=skip):\n%s", len(failures), _listing(failures))
  return dict(format=FORMAT, record="int32 label (little-endian), then uint8 pixels [H, W, C]", image_shape=shape,
              splits=splits, alpha="composited on white",
              skipped=[{"path": n, "reason": r} for n, r in failures])
