"""One metric writer: JSON lines (`metrics.jsonl`) plus TensorBoard event files (tensorboardX, no TensorFlow),
and PNG image grids. Only process 0 writes; on other processes every call is a no-op.

Every path goes through `etils.epath`, so a workdir may be local or remote (`gs://`, `s3://`, ... through fsspec or
TensorFlow's gfile, whichever epath finds). Object stores cannot append: there a file that grows (metrics.jsonl, the
TensorBoard events) is rewritten whole at each flush, which keeps it readable while the run goes on.
"""
import io
import json
import logging
import math

from etils import epath
import jax
import numpy as np
from PIL import Image

logger = logging.getLogger("jaxgen")


def is_remote(path):
  """True for paths with a URI scheme (gs://, s3://, ...): object stores, where files cannot be appended to."""
  return "://" in str(path)


class GrowingFile:
  """A binary file written in pieces through epath: appended to locally, rewritten whole (from memory) on object
  stores. `existing=True` keeps what the file already holds (a resumed run's metrics)."""

  def __init__(self, path, existing=False):
    self.path = epath.Path(path)
    self._remote = is_remote(self.path)
    self._buffer = io.BytesIO()
    if existing and self._remote and self.path.exists():
      self._buffer.write(self.path.read_bytes())
    if not existing:
      self.path.write_bytes(b"")
    self._pending = b""

  def write(self, data):
    self._pending += data

  def flush(self):
    if not self._pending:
      return
    if self._remote:
      self._buffer.write(self._pending)
      self.path.write_bytes(self._buffer.getvalue())
    else:
      with self.path.open("ab") as f:
        f.write(self._pending)
    self._pending = b""

  def close(self):
    self.flush()


class _TensorBoardFiles:
  """tensorboardX writer factory for URI-scheme logdirs: event files through `GrowingFile` (tensorboardX's own
  gs:// writer needs google-cloud-storage; s3:// needs boto3)."""

  def open(self, path):
    return GrowingFile(path)

  def directory_check(self, path):
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def _scalar(value):
  value = np.asarray(value)
  return value.item() if value.size == 1 else value.tolist()


class MetricWriter:
  """`write(step, {"train/loss": ..., ...})` appends one JSON object to DIR/metrics.jsonl and TensorBoard scalars;
  `write_images(step, {"samples": picture})` adds TensorBoard image summaries."""

  def __init__(self, workdir):
    self.active = jax.process_index() == 0
    self.workdir = epath.Path(workdir)
    self._tb = self._jsonl = None
    if self.active:
      self.workdir.mkdir(parents=True, exist_ok=True)
      self._jsonl = GrowingFile(self.workdir / "metrics.jsonl", existing=True)
      from tensorboardX import SummaryWriter  # imported only where written
      from tensorboardX import record_writer
      if is_remote(self.workdir):
        record_writer.register_writer_factory(str(self.workdir).split("://")[0], _TensorBoardFiles())
      self._tb = SummaryWriter(str(self.workdir / "tensorboard"))

  def write(self, step, metrics):
    if not self.active:
      return
    row = {"step": int(step)} | {k: _scalar(v) for k, v in metrics.items()}
    self._jsonl.write((json.dumps(row) + "\n").encode())
    self._jsonl.flush()
    for key, value in row.items():
      if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
        self._tb.add_scalar(key, value, int(step))
    self._tb.flush()

  def write_images(self, step, pictures):
    """TensorBoard images: {tag: uint8 [H, W, C] picture (C = 1 or 3)}, e.g. a sample grid."""
    if not self.active:
      return
    for tag, picture in pictures.items():
      self._tb.add_image(tag, np.asarray(picture, np.uint8), int(step), dataformats="HWC")
    self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()
      self._jsonl.close()


def image_grid(images, columns=None, pad=1, binary=False):
  """uint8 [N, H, W, C] -> one uint8 [rows*(H+pad)+pad, cols*(W+pad)+pad, C] picture (binary: 0/1 -> 0/255)."""
  images = np.asarray(images) * np.uint8(255 if binary else 1)
  n, h, w, c = images.shape
  columns = columns or int(math.ceil(math.sqrt(n)))
  rows = int(math.ceil(n / columns))
  grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = image
  return grid


def save_png(path, picture, scale=1):
  """Writes a uint8 [H, W, C] picture (C = 1 or 3) as PNG, upscaled by an integer factor for viewing."""
  if jax.process_index() != 0:
    return
  picture = np.asarray(picture)
  if scale > 1:
    picture = picture.repeat(scale, axis=0).repeat(scale, axis=1)
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  buffer = io.BytesIO()
  Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture).save(buffer, format="PNG")
  path.write_bytes(buffer.getvalue())


def format_duration(seconds):
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def log_progress(step, total_steps, metrics, images_per_sec, eta_seconds, keys=("loss",)):
  """One console line: step, the metrics named in `keys` (the family's progress keys), throughput and ETA."""
  shown = " | ".join(f"{k} {v:.4g}" for k, v in metrics.items()
                     if isinstance(v, (int, float)) and k.split("/")[-1] in keys)
  speed = "" if math.isnan(images_per_sec) else f" | {images_per_sec:.1f} img/s | ETA {format_duration(eta_seconds)}"
  logger.info("step %d/%d (%.0f%%) | %s%s", step, total_steps, 100.0 * step / total_steps, shown, speed)
