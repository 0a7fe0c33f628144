"""The cross-family comparison: every trained run measured the same way, on the same data (issue 15).

`measure(workdirs, options)` restores each run directory (its `config.json` and latest checkpoint) and fills one row
of `COLUMNS` per run; a measure a family cannot give is None, written "none". What each column is:

  bpd, bpd_kind        bits/dim on the split: the exact NLL of a flow or autoregressive model ("exact"; Glow's with
                       uniform dequantisation noise, as it trains), NVAE's importance-weighted bound with K samples
                       ("IW bound, K=..."), or its ELBO when K = 0; None for a GAN. elbo_bpd: NVAE's ELBO.
  fid kid precision recall   `sample_quality.compare` of every run's samples against ONE reference set (the first
                       num_examples images of the split), in ONE feature space (one extractor, built once from the
                       shared `options.sample_metrics`), with the same number of samples from every run.
  latent_access, recon_rmse  `Family.reconstruct` (encode then decode) of the first num_reconstruct images and its
                       root-mean-square error on the [0, 1] pixel scale; None where the family has no encoder.
  completion_bpd       -log p(x_missing | x_observed) per hidden dimension (`completion.evaluate`), for models with an
                       exact conditional likelihood (LMConv).
  completion, completion_rmse  `Family.complete`: how, and the RMSE of the sampled fill against the hidden truth.
  sample_ms_per_image  wall time of the trainer's sampler on a batch of 64 after compilation, per image.
  params, steps, train_images, train_time_s, train_images_per_sec   the run's trained parameters (a GAN's generator
                       and discriminator) and budget: steps and images from the checkpoint, time and throughput from
                       the median logged step time in metrics.jsonl (compilation and evaluations excluded).
"""
import dataclasses
import functools
import json
import logging
import math
import os
import time
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
from PIL import ImageDraw

from jaxgen.metrics import completion
from jaxgen.metrics import sample_quality
from jaxgen.training import checkpoints
from jaxgen.training import trainer
from jaxgen.training import writers

logger = logging.getLogger("jaxgen")
COLUMNS = ("run", "model", "params", "steps", "train_images", "train_time_s", "train_images_per_sec", "bpd",
           "bpd_kind", "elbo_bpd", "fid", "kid", "precision", "recall", "latent_access", "recon_rmse",
           "completion_bpd", "completion", "completion_rmse", "sample_ms_per_image")
_SAME_DATA = ("dataset", "binarize")  # what every compared run must share (with image shape, from the dataset)


@dataclasses.dataclass(frozen=True)
class Options:
  """The settings every run is measured with (the same for all of them)."""
  split: str = "test"
  num_examples: int = 0  # images of the split for the likelihoods and the reference set (0: all)
  num_samples: int = 0  # generated images per run for FID / KID / precision / recall (0: as many as real ones)
  sample_metrics: dict = dataclasses.field(default_factory=dict)  # config.sample_metrics for all (extractor, ...)
  iw_samples: int = 100  # K of NVAE's importance-weighted bound (0: the ELBO only)
  iw_chunk_size: Optional[int] = None  # importance samples per forward pass (None: each run's config.iw_chunk_size)
  project_steps: int = 100  # StyleGAN2 projector steps per image
  num_reconstruct: int = 16  # images encoded and decoded, and completed
  missing: str = "top"  # the hidden region (jaxgen.metrics.completion.REGIONS)
  data_dir: Optional[str] = None  # overrides every run's config.data_dir where given
  sample_batch: int = 64
  seed: int = 0


def run_config(workdir, options):
  """The config that trained `workdir` (its config.json), with the shared measurement settings put in."""
  config = checkpoints.read_config(workdir)
  config.sample_metrics = dict(options.sample_metrics) | {"num_samples": options.num_samples}
  config.iw_samples = options.iw_samples
  if options.iw_chunk_size is not None:  # memory: eval_batch_size x iw_chunk_size images per pass
    config.iw_chunk_size = options.iw_chunk_size
  config.project_steps = options.project_steps
  if options.data_dir is not None:
    config.data_dir = options.data_dir
  return config


def check_options(options):
  """One-line errors for a bad hidden region or sample-metric setting, before any run is trained or restored."""
  completion.missing_region(options.missing, 1, 1)
  sample_quality.settings(ml_collections.ConfigDict({"sample_metrics": dict(options.sample_metrics)}))


def check_same_data(names, configs):
  """One-line ValueError unless every config trains on the same data (dataset and binarization)."""
  seen = {name: tuple(config.get(k, "") for k in _SAME_DATA) for name, config in zip(names, configs)}
  if len(set(seen.values())) > 1:
    listing = ", ".join(f"{n}: {dict(zip(_SAME_DATA, v))}" for n, v in seen.items())
    raise ValueError(f"The comparison needs the same data for every run, but the runs differ ({listing}); compare "
                     f"runs trained on one dataset with one binarization.")


def budget_steps(budget, batch_size):
  """"steps:N" or "images:N" -> train steps for a run of `batch_size` (images rounded up to whole steps)."""
  kind, _, value = (budget or "").partition(":")
  if kind not in ("steps", "images") or not value.isdigit() or int(value) <= 0:
    raise ValueError(f"--budget={budget!r}: use steps:N or images:N with N > 0 (the same for every config; a "
                     f"wall-clock budget is not supported).")
  return int(value) if kind == "steps" else math.ceil(int(value) / batch_size)


def train_for_budget(configs, names, budget, root):
  """Trains each config for the same `budget` (`budget_steps`) into root/NAME, resuming there; returns the run
  directories. The budget and the data are checked for every config before any training. The trainer's own
  evaluation at the last step covers one eval batch, its sample grid 8 images (the comparison measures each run)."""
  if not root:
    raise ValueError("Training configs for a comparison needs --workdir_root=DIR, where the runs are trained.")
  for config in configs:
    config.total_steps = budget_steps(budget, config.batch_size)
    # The comparison measures every run itself: the trainer's own last evaluation and sample grid stay small.
    config.eval_examples = config.get("eval_batch_size") or config.batch_size
    config.num_samples = min(config.num_samples, 8)
  check_same_data(names, configs)
  workdirs = [os.path.join(root, name) for name in names]
  for config, workdir in zip(configs, workdirs):
    trainer.train_and_evaluate(config, workdir)
  return workdirs


def training_budget(workdir, config, state):
  """{params, steps, train_images, train_time_s, train_images_per_sec} of a run (see the module docstring)."""
  steps = int(jax.device_get(state["step"]))
  step_times = []
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as f:
      step_times = [row["perf/step_time_s"] for row in map(json.loads, f) if "perf/step_time_s" in row]
  step_time = float(np.median(step_times)) if step_times else None
  return {"params": int(sum(x.size for x in jax.tree.leaves(state["params"]))), "steps": steps,
          "train_images": steps * int(config.batch_size),
          "train_time_s": None if step_time is None else steps * step_time,
          "train_images_per_sec": None if step_time is None else config.batch_size / step_time}


def likelihood(s, state, options):
  """{bpd, bpd_kind, elbo_bpd} from the family's evaluation over the split; all None for a family without one."""
  if s.family.eval_step is None:
    return {"bpd": None, "bpd_kind": None, "elbo_bpd": None}
  results = trainer.evaluate_state(s, state, options.split, options.num_examples)
  if "bpd" in results:
    return {"bpd": results["bpd"], "bpd_kind": "exact", "elbo_bpd": None}
  if "iw_nll_bpd" in results:
    bound = {"bpd": results["iw_nll_bpd"], "bpd_kind": f"IW bound, K={s.config.iw_samples}"}
  else:
    bound = {"bpd": results["nelbo_bpd"], "bpd_kind": "ELBO"}
  return bound | {"elbo_bpd": results["nelbo_bpd"]}


def _unit_scale(s):
  return 1.0 if s.config.binarize else 255.0  # pixels on [0, 1]


def _rmse(s, a, b, where=None):
  diff = (np.asarray(a, np.float64) - np.asarray(b, np.float64)) / _unit_scale(s)
  if where is not None:
    diff = diff[np.broadcast_to(where[None, :, :, None], diff.shape)]
  return float(np.sqrt(np.mean(diff**2)))


def latent_access(s, state, images, labels):
  """{latent_access: how, recon_rmse} of `Family.reconstruct`; None for both where the family has none."""
  if s.family.reconstruct is None:
    return {"latent_access": None, "recon_rmse": None}
  rec, how = s.family.reconstruct(s, state, images, labels)
  return {"latent_access": how, "recon_rmse": _rmse(s, rec, images)}


def completions(s, state, images, options):
  """{completion_bpd, completion: how, completion_rmse} for the hidden region `options.missing`."""
  hidden = completion.missing_region(options.missing, *images.shape[1:3])  # [H, W]
  out = {"completion_bpd": None, "completion": None, "completion_rmse": None}
  if completion.has_conditional_likelihood(s.model):
    out["completion_bpd"] = completion.evaluate(s, state, options.split, missing=options.missing,
                                                num_examples=options.num_examples)["completion_bpd"]
  if s.family.complete is not None:
    filled, how = s.family.complete(s, state, jax.random.key(options.seed), images, ~hidden)
    out |= {"completion": how, "completion_rmse": _rmse(s, filled, images, hidden)}
  return out


def timed_samples(s, state, options):
  """(uint8 [sample_batch, H, W, C] samples, milliseconds per image of a call after compilation)."""
  labels = jnp.arange(options.sample_batch, dtype=jnp.int32) % max(s.train_data.num_classes, 1)
  rng = jax.random.key(options.seed)
  jax.block_until_ready(s.sample(state, rng, labels))  # compile
  start = time.perf_counter()
  images = jax.block_until_ready(s.sample(state, rng, labels))
  return np.asarray(images), 1000.0 * (time.perf_counter() - start) / options.sample_batch


class _Progress:
  """Logs each phase of a run's measurement with its duration, and the run's overall progress with an ETA."""

  def __init__(self, names):
    self.names, self.start, self.done = names, time.perf_counter(), 0

  def phase(self, run, what, fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    logger.info("compare %s: %s in %s", run, what, writers.format_duration(time.perf_counter() - start))
    return out

  def run_done(self, run):
    self.done += 1
    elapsed = time.perf_counter() - self.start
    eta = elapsed / self.done * (len(self.names) - self.done)
    logger.info("compare: %d/%d runs measured (%s done) | %s elapsed | ETA %s", self.done, len(self.names), run,
                writers.format_duration(elapsed), writers.format_duration(eta))


def _logged_batches(sample, run, num_batches):
  """`sample` (bound to a state) that logs each call's progress through `num_batches` calls, with an ETA."""
  start, calls = time.perf_counter(), [0]

  def logged(rng, labels):
    out = jax.block_until_ready(sample(rng, labels))
    calls[0] += 1
    elapsed = time.perf_counter() - start
    eta = elapsed / calls[0] * (num_batches - calls[0])
    logger.info("compare %s: samples batch %d/%d | %s elapsed | ETA %s", run, calls[0], num_batches,
                writers.format_duration(elapsed), writers.format_duration(eta))
    return out
  return logged


def measure(workdirs, options=Options()):
  """-> (rows, settings, panels): one {column: value or None} per run in COLUMNS order, the shared settings, and
  one uint8 [H, W, C] sample grid per run. The runs' data and the shared settings are checked before any run is
  restored; each run's model and checkpoint when it is restored (`trainer.restore_for_eval`). Each phase is logged
  with its duration, and the whole with an ETA."""
  names = [os.path.basename(os.path.normpath(w)) for w in workdirs]
  configs = [run_config(w, options) for w in workdirs]
  check_same_data(names, configs)
  check_options(options)
  rows, panels, shared = [], [], None
  progress = _Progress(names)
  for name, workdir, config in zip(names, workdirs, configs):
    s, state = trainer.restore_for_eval(config, workdir)
    if shared is None:  # one reference set and one feature extractor for every run
      opts = sample_quality.settings(s.config)
      extract = progress.phase(name, "feature extractor", sample_quality.feature_extractor, s.config, opts)
      real = s.input.examples(options.split, options.num_examples)
      count = min(options.num_reconstruct, len(real))
      num = options.num_samples or len(real)
      shared = dict(real_features=extract(real * 255 if s.config.binarize else real), images=real[:count],
                    labels=s.input.split(options.split).get(np.arange(count))["label"])
      settings = {"dataset": s.config.dataset, "binarize": s.config.binarize, "split": options.split,
                  "num_real": int(len(real)), "num_samples": int(num), "extractor": opts["extractor"],
                  "iw_samples": options.iw_samples, "project_steps": options.project_steps,
                  "missing": options.missing, "num_reconstruct": count}
    row = {"run": name, "model": s.config.model_name} | training_budget(workdir, s.config, state)
    row |= progress.phase(name, "likelihood", likelihood, s, state, options)
    batch = min(opts["batch_size"], num)
    sample = _logged_batches(functools.partial(sample_quality.sampler(s, opts["sampler"]), state), name,
                             -(-num // batch))
    gen = sample_quality.generated_images(sample, s.train_data.num_classes, num, batch, options.seed + 3)
    if s.config.binarize:
      gen = np.where(gen > 0, 255, 0).astype(np.uint8)
    row |= sample_quality.compare(shared["real_features"], extract(gen))
    row |= progress.phase(name, "latent access", latent_access, s, state, shared["images"], shared["labels"])
    row |= progress.phase(name, "completion", completions, s, state, shared["images"], options)
    samples, row["sample_ms_per_image"] = progress.phase(name, "timed samples", timed_samples, s, state, options)
    panels.append(writers.image_grid(samples, columns=8, binary=bool(s.config.binarize)))
    rows.append({k: row[k] for k in COLUMNS})
    progress.run_done(name)
  return rows, settings, panels


def cell(value):
  """A table cell: "none" for None, 4 significant digits for floats."""
  if value is None:
    return "none"
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def markdown(rows, settings):
  """The comparison as a Markdown table, the shared settings on one line above it."""
  lines = ["Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), "",
           "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  lines += ["| " + " | ".join(cell(row[k]) for k in COLUMNS) + " |" for row in rows]
  return "\n".join(lines) + "\n"


def side_by_side(panels, titles, gap=4, title_height=12):
  """One picture: the panels left to right on white, `gap` pixels apart, each under its title."""
  height = max(p.shape[0] for p in panels)
  out = []
  for panel, title in zip(panels, titles):
    header = Image.new("L", (panel.shape[1], title_height), 255)
    ImageDraw.Draw(header).text((1, 0), title, fill=0)
    header = np.repeat(np.asarray(header)[:, :, None], panel.shape[2], axis=2)
    column = np.concatenate([header, np.pad(panel, ((0, height - panel.shape[0]), (0, 0), (0, 0)),
                                            constant_values=255)])
    out.append(np.pad(column, ((0, 0), (0, gap), (0, 0)), constant_values=255))
  return np.concatenate(out, axis=1)[:, :-gap]


def write(out_dir, rows, settings, panels):
  """out_dir/comparison.md, comparison.json ({"settings", "columns", "runs"}) and comparison.png (one panel of
  samples per run under the run's name, in the rows' order); returns the three paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = [os.path.join(out_dir, f"comparison.{ext}") for ext in ("md", "json", "png")]
  with open(paths[0], "w") as f:
    f.write(markdown(rows, settings))
  with open(paths[1], "w") as f:
    json.dump({"settings": settings, "columns": list(COLUMNS), "runs": rows}, f, indent=2)
  writers.save_png(paths[2], side_by_side(panels, [row["run"] for row in rows]), scale=2)
  return paths
