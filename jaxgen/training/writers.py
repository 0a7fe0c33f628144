"""One metric writer: JSON lines (`metrics.jsonl`) plus TensorBoard event files (tensorboardX, no TensorFlow),
and PNG image grids. Only process 0 writes; on other processes every call is a no-op.
"""
import json
import logging
import math
import os

import jax
import numpy as np
from PIL import Image

logger = logging.getLogger("jaxgen")


def _scalar(value):
  value = np.asarray(value)
  return value.item() if value.size == 1 else value.tolist()


class MetricWriter:
  """`write(step, {"train/loss": ..., ...})` appends one JSON object to DIR/metrics.jsonl and TensorBoard scalars."""

  def __init__(self, workdir):
    self.active = jax.process_index() == 0
    self.workdir = workdir
    self._tb = None
    if self.active:
      os.makedirs(workdir, exist_ok=True)
      from tensorboardX import SummaryWriter  # imported only where written
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step, metrics):
    if not self.active:
      return
    row = {"step": int(step)} | {k: _scalar(v) for k, v in metrics.items()}
    with open(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
      f.write(json.dumps(row) + "\n")
    for key, value in row.items():
      if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
        self._tb.add_scalar(key, value, int(step))
    self._tb.flush()

  def close(self):
    if self._tb is not None:
      self._tb.close()


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
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture).save(path)


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
