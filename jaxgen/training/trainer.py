"""The one trainer: `train_and_evaluate(config, workdir)` for every family, on 1 CPU, N devices or a pod slice.

The global batch is split over a mesh axis "data" that spans every device of every host; the state is
replicated. What to run comes from the family: `jaxgen.<config.model_name>` defines `Model` and `FAMILY`
(`jaxgen.training.family.Family`: optimiser, state, train/eval steps, samples, figures). Randomness and data order
are functions of (seed, step), so a run resumed from its latest checkpoint continues exactly as if it had never
stopped.
"""
import dataclasses
import functools
import importlib
import logging
import os
import signal
import time
from typing import Any

from etils import epath
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np

from jaxgen import data
from jaxgen.training import checkpoints
from jaxgen.training import family as family_lib
from jaxgen.training import steps
from jaxgen.training import writers

logger = logging.getLogger("jaxgen")

REQUIRED_KEYS = ("seed", "dataset", "data_dir", "batch_size", "total_steps", "log_every", "eval_every",
                 "ckpt_every", "model_name", "model")
# Keys a config may leave out. The input pipeline's (jaxgen.data.Input):
#   augment: training-batch augmentation, dict(flip=bool, translate=pixels): random horizontal flips and random
#     shifts of up to `translate` pixels (bilinear, edges repeated), drawn from (seed, step); evaluation is never
#     augmented. Missing keys take these defaults.
#   data_workers: processes that read, decode and augment batches, and decode a split being cached (0: one
#     background thread of this process). They pay off for compressed images and translations on hosts with idle
#     cores, not for large raw-pixel images (a 256x256 folder), whose batches they must copy back (BENCHMARKS.md).
#   prefetch: batches read ahead of the step.
#   data_cache_mb: a split whose decoded images fit in this many MiB is decoded once into memory (0: never).
#   data_cache_dir: local directory that the shards of a folder:gs://... dataset, or the split's files of a TFDS
#     data_dir=gs://..., are copied to before reading ("": $JAXGEN_CACHE/data, else <system tmp>/jaxgen-data;
#     jaxgen.prepared.stage, stage_tfds).
# Numerics:
#   compute_dtype: "float32" or "bfloat16", the dtype of the model's activations and matmuls (`Model.dtype`);
#     parameters, optimiser state and the likelihood-critical terms stay float32 (README, "Precision").
#   matmul_precision: "default", "high" or "highest", jax.default_matmul_precision for every traced step (TPUs and
#     recent GPUs run float32 matmuls in reduced-precision passes under "default").
# And the step's: grad_accum_steps: n micro-batches of batch_size / n per update, their gradients averaged
#   (`steps.accumulate`): the update of the whole batch in the memory of one micro-batch.
COMPUTE_DTYPES = ("float32", "bfloat16")
MATMUL_PRECISIONS = ("default", "high", "highest")
DEFAULTS = dict(optimizer={}, ema_decay=0.0, compute_dtype="float32", matmul_precision="default",
                eval_split="test", eval_batch_size=0, eval_examples=0,
                keep_checkpoints=3, max_consecutive_skips=20, num_samples=64, sample_temperature=1.0,
                binarize="", skip_grad_norm=0.0, xla_cpu_options={}, figures={}, evals={},
                augment=dict(flip=False, translate=0.0), data_workers=0, prefetch=2, data_cache_mb=1024,
                data_cache_dir="", grad_accum_steps=1)


def with_defaults(config):
  """A copy of config with every trainer key present; raises on missing required keys."""
  missing = [k for k in REQUIRED_KEYS if k not in config]
  if missing:
    raise ValueError(f"The config lacks required key(s) {missing}; every config sets {list(REQUIRED_KEYS)}.")
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for key, value in DEFAULTS.items():
      if key not in config:
        config[key] = value
  return config


def model_fields(model_class):
  """The config.model keys a family's `Model` class takes (its dataclass fields but Flax's and the dtype)."""
  return {f.name for f in dataclasses.fields(model_class)} - {"parent", "name", "dtype"}


def build_model(config):
  """-> (family, model): `jaxgen.<config.model_name>`'s FAMILY and its `Model(**config.model)`, with clear errors."""
  try:
    module = importlib.import_module(f"jaxgen.{config.model_name}")
  except ModuleNotFoundError as e:
    raise ValueError(f"config.model_name={config.model_name!r} names no module jaxgen.{config.model_name}; "
                     f"use e.g. 'flows.glow'.") from e
  kwargs = dict(config.model)
  if "dtype" in kwargs:
    raise ValueError("config.model.dtype is set from config.compute_dtype; set --config.compute_dtype instead.")
  fields = model_fields(module.Model)
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(f"Unknown config.model key(s) {unknown} for jaxgen.{config.model_name}.Model; "
                     f"known keys: {sorted(fields)}.")
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  dtype = config.get("compute_dtype", "float32")
  return family_lib.of(module), module.Model(**kwargs, dtype=jnp.dtype(dtype))


def check_precision(config):
  """config.compute_dtype and config.matmul_precision against the supported values: one-line errors."""
  if config.compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"config.compute_dtype={config.compute_dtype!r} is not supported; use one of {COMPUTE_DTYPES}.")
  if config.matmul_precision not in MATMUL_PRECISIONS:
    raise ValueError(f"config.matmul_precision={config.matmul_precision!r} is not supported; use one of "
                     f"{MATMUL_PRECISIONS}.")


def with_matmul_precision(fn, precision):
  """fn run under jax.default_matmul_precision(precision): entered inside fn, so it holds while jit traces fn."""
  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with jax.default_matmul_precision(precision):
      return fn(*args, **kwargs)
  return wrapped


def make_mesh():
  # Auto axes: XLA propagates shardings from the jit boundaries (explicit mode would type every reshape).
  return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_size(batch_size, what="config.batch_size"):
  if batch_size % jax.device_count():
    raise ValueError(f"{what}={batch_size} must be divisible by the number of devices ({jax.device_count()}); "
                     f"set it to a multiple of {jax.device_count()}.")


def check_dataset(model, dataset):
  """The model's image shape and classes against the data's: one-line errors naming the config key to set."""
  shape = model.image_shape
  if tuple(shape) != tuple(dataset.image_shape):
    prepared = (" (or prepare the folder again with --resolution and --channels to fit the model)"
                if dataset.name.startswith(data.FOLDER) else "")
    raise ValueError(f"config.model.image_shape={tuple(shape)} but {dataset.name!r} has images of shape "
                     f"{tuple(dataset.image_shape)}; set --config.model.image_shape='{tuple(dataset.image_shape)}' "
                     f"to match{prepared}.")
  num_classes = getattr(model, "num_classes", 0)
  if num_classes and not 0 < dataset.num_classes <= num_classes:
    has = f"has {dataset.num_classes} classes" if dataset.num_classes else "has no labels"
    raise ValueError(f"config.model.num_classes={num_classes} but {dataset.name!r} {has}; set "
                     f"--config.model.num_classes={dataset.num_classes} to match.")


def _global_batch(local, sharding):
  """Host-local numpy batch -> global jax.Array split over the "data" axis."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local)


@dataclasses.dataclass(eq=False)
class Setup:
  """Everything a run needs, built and checked before any compute: family, model, data, mesh, compiled functions."""
  config: ml_collections.ConfigDict
  family: family_lib.Family
  model: Any  # config.model_name's `Model(**config.model)`
  tx: Any  # family.make_optimizer(config, model=model)
  input: data.Input
  mesh: jax.sharding.Mesh
  batch_sharding: NamedSharding
  replicated: NamedSharding
  abstract_state: Any
  state_sharding: Any

  @property
  def train_data(self):
    return self.input.train

  def init(self):
    batch = self.batch(self.input.init_batch())
    init_fn = jax.jit(self._traced(self.family.init_state, tx=self.tx), out_shardings=self.state_sharding)
    return init_fn(jax.random.key(self.config.seed), batch)

  @functools.cached_property
  def train_step(self):
    """The jit-compiled step. On CPU it is compiled with config.xla_cpu_options, XLA debug options chosen per
    config because they help one model and hurt another (Glow's 256-channel coupling networks gain from YNNPACK
    dot fusion, NVAE and LMConv lose); other backends ignore them."""
    fn = self._traced(self.family.train_step, tx=self.tx)
    return jax.jit(fn, in_shardings=(self.state_sharding, self.batch_sharding, self.replicated),
                   out_shardings=(self.state_sharding, self.replicated), donate_argnums=0,
                   compiler_options=xla_cpu_options(self.config))

  def _traced(self, fn, **kwargs):
    """fn with the model and config bound, traced under config.matmul_precision."""
    return with_matmul_precision(functools.partial(fn, model=self.model, config=self.config, **kwargs),
                                 self.config.matmul_precision)

  @functools.cached_property
  def eval_step(self):
    return jax.jit(self._traced(self.family.eval_step),
                   in_shardings=(self.state_sharding, self.batch_sharding, self.replicated),
                   out_shardings=self.replicated)

  @functools.cached_property
  def sample(self):
    return jax.jit(self._traced(self.family.sample_images),
                   in_shardings=(self.state_sharding, self.replicated, self.replicated),
                   out_shardings=self.replicated)

  def batch(self, local):
    return _global_batch(local, self.batch_sharding)


def xla_cpu_options(config):
  """config.xla_cpu_options as jit compiler options: on CPU only, None when empty."""
  return (dict(config.xla_cpu_options) or None) if jax.default_backend() == "cpu" else None


def check_xla_cpu_options(config):
  """Raises ValueError naming the option when XLA rejects config.xla_cpu_options (a trivial compile, ~10 ms)."""
  options = xla_cpu_options(config)
  if options is None:
    return
  try:
    jax.jit(lambda: jnp.zeros(()), compiler_options=options).lower().compile()
  except Exception as e:  # XLA's error type is not public API
    raise ValueError(f"config.xla_cpu_options={options} is refused by XLA: {str(e).splitlines()[0]}; use "
                     f"XLA DebugOptions field names and enum values (e.g. LIBRARY_FUSION_TYPE_DOT).") from None


def setup(config, train_data=None):
  """Checks the config, the data and the model (shapes only: no compile, no FLOPs), and returns a `Setup`.

  train_data: a `data.Dataset` to use instead of config.dataset's train split (benchmarks use synthetic data).
  """
  config = with_defaults(config)
  for key in ("batch_size", "total_steps", "log_every", "eval_every", "ckpt_every"):
    if int(config[key]) <= 0:
      raise ValueError(f"config.{key} must be positive, got {config[key]}.")
  check_batch_size(config.batch_size)
  steps.check_grad_accum(config, jax.device_count())
  data.check_binarize(config.binarize)
  if config.eval_batch_size:
    check_batch_size(config.eval_batch_size, "config.eval_batch_size")
  check_xla_cpu_options(config)
  check_precision(config)
  family, model = build_model(config)
  family_lib.figure_options(family, config)  # a misspelt config.figures key fails now, not after training
  inputs = data.Input(config, train_data, jax.process_index(), jax.process_count())
  check_dataset(model, inputs.train)
  if config.dataset.startswith(data.FOLDER) and train_data is None:  # given train_data (benchmarks, converters):
    inputs.split(config.eval_split)  # a folder prepared without --holdout has no "test": say so now, not after training
  tx = family.make_optimizer(config, model=model)
  mesh = make_mesh()
  batch_sharding, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  host_batch = inputs.init_batch()
  abstract_batch = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct((config.batch_size,) + x.shape[1:], x.dtype), host_batch)
  # eval_shape runs the model's setup and shape logic: bad configs fail here, in seconds.
  abstract_state = jax.eval_shape(
      functools.partial(family.init_state, model=model, tx=tx, config=config), jax.random.key(0), abstract_batch)
  state_sharding = jax.tree.map(lambda _: replicated, abstract_state)
  abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                abstract_state, state_sharding)
  return Setup(config, family, model, tx, inputs, mesh, batch_sharding, replicated, abstract_state, state_sharding)


def restore_or_init(s, checkpointer):
  if checkpointer.latest_step() is not None:
    logger.info("Resuming from %s/%d.", checkpointer.directory, checkpointer.latest_step())
    return checkpointer.restore(s.abstract_state)
  return s.init()


def evaluate_state(s, state, split=None, num_examples=None):
  """The family's results over a split (default config.eval_split; num_examples 0 or None: all of it).

  `family.summarize` of `family.eval_step`'s sums over every batch, or `family.evaluate` where the family has one.
  """
  split = split or s.config.eval_split
  if s.family.evaluate is not None:
    return s.family.evaluate(s, state, split, num_examples)
  rng = jax.random.key(s.config.seed + 1)
  totals = None
  for i, local in enumerate(s.input.eval_batches(split, num_examples)):
    sums = s.eval_step(state, s.batch(local), jax.random.fold_in(rng, i))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  return s.family.summarize(jax.device_get(totals))


def evaluate_each(s, state, images, labels):
  """[{name: float}] of the family's eval_step results for each image on its own (uint8 [N, H, W, C], labels [N]),
  e.g. each image's bits/dim. One process; each image goes in a batch of one real row per device (mask)."""
  if s.family.eval_step is None:
    raise ValueError(f"{s.config.model_name} has no per-example evaluation (no eval_step).")
  n = jax.device_count()
  rng = jax.random.key(s.config.seed + 1)
  out = []
  for image, label in zip(images, labels):
    local = {"image": np.repeat(np.asarray(image)[None], n, 0), "label": np.full((n,), label, np.int32),
             "mask": (np.arange(n) == 0).astype(np.float32)}
    out.append(s.family.summarize(jax.device_get(s.eval_step(state, s.batch(local), rng))))
  return out


def write_samples(s, state, path, num=None, writer=None, step=None):
  """Writes a grid of num samples as the PNG `path` and, with a `writer`, as TensorBoard image "samples" at step."""
  num = num or s.config.num_samples
  labels = jnp.arange(num) % max(s.train_data.num_classes, 1)
  images = s.sample(state, jax.random.key(s.config.seed + 2), labels)
  grid = writers.image_grid(jax.device_get(images), binary=bool(s.config.binarize))
  writers.save_png(path, grid, scale=2)
  if writer is not None:
    writer.write_images(step, {"samples": grid})
  return images


class _StopRequest:
  """Turns SIGTERM (TPU preemption) and SIGINT into a stop the loop checks after each step: `stop(step)`.

  One process: a Python handler sets a flag. Several processes: they must all stop after the same step, or the
  checkpoint they save together (orbax) would wait forever for the processes that went on training. JAX's
  preemption service (on by default with jax.distributed) catches SIGTERM in C++, tells every process through the
  coordination service, and `reached_preemption_sync_point(step)` is then True on all of them at one agreed step.
  That call only reads a local flag (~10 us a step measured on CPU), where an allgather of our own stop flag would
  be a cross-host collective every step. So SIGTERM is left to JAX's handler, and SIGINT is turned into a SIGTERM
  to this process, which the service then propagates the same way. With the service turned off
  (jax_enable_preemption_service=False) no handler is installed: a signal ends the process, and the others stop
  when its heartbeats do.
  """

  def __init__(self):
    self.requested = None
    self._previous = {}
    several = jax.process_count() > 1
    self._sync = several and jax.config.jax_enable_preemption_service
    for sig in (signal.SIGTERM, signal.SIGINT) if self._sync or not several else ():
      if self._sync and sig == signal.SIGTERM:
        continue  # JAX's preemption notifier owns SIGTERM
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: no handlers, no graceful stop
        pass

  def _handle(self, signum, frame):
    self.requested = signal.Signals(signum).name
    if self._sync:
      os.kill(os.getpid(), signal.SIGTERM)

  def stop(self, step):
    """Whether to save and stop after `step` (called after every step, on every process)."""
    if self._sync:
      if multihost_utils.reached_preemption_sync_point(step):
        self.requested = self.requested or "SIGTERM (on some process)"
        return True
      return False
    return self.requested is not None

  def restore(self):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the final train state."""
  s = setup(config)
  config = s.config
  checkpoints.check_workdir_config(workdir, config)
  checkpointer = checkpoints.Checkpointer(workdir, keep=config.keep_checkpoints)
  writer = writers.MetricWriter(workdir)
  state = restore_or_init(s, checkpointer)
  start = int(jax.device_get(state["step"]))
  logger.info("Training %s on %s (%d train examples) on %d device(s); params: %d; steps %d -> %d.",
               config.model_name, config.dataset, s.train_data.num_examples, jax.device_count(),
               sum(x.size for x in jax.tree.leaves(state["params"])), start, config.total_steps)
  batches = s.input.train_batches(start, put=s.batch)  # on the devices, config.prefetch batches ahead
  rng = jax.random.key(config.seed)
  stop = _StopRequest()
  step, previous, interval = start, None, []
  try:
    while step < config.total_steps:
      state, metrics = s.train_step(state, next(batches), rng)
      step += 1
      if step == start + 1:  # the first step compiled: time from here on
        jax.block_until_ready(metrics)
        interval_start, busy, timed_from = time.perf_counter(), 0.0, step
      # Read the previous step's metrics once this one is queued, so the device never waits for the host.
      if previous is not None:
        interval.append(_checked(jax.device_get(previous), config))
      previous = metrics
      if step % config.log_every == 0 or step == config.total_steps:
        interval.append(_checked(jax.device_get(previous), config))
        previous = None
        now = time.perf_counter()
        _log_train(writer, step, config, interval, step - timed_from, now - interval_start - busy,
                   s.family.progress_keys)
        interval, interval_start, busy, timed_from = [], now, 0.0, step
      t_busy = time.perf_counter()
      if step % config.eval_every == 0 or step == config.total_steps:
        results = evaluate_state(s, state, num_examples=config.eval_examples)
        writer.write(step, {f"eval/{k}": v for k, v in results.items()})
        logger.info("eval at step %d: %s", step, {k: round(v, 4) for k, v in results.items()})
        write_samples(s, state, epath.Path(workdir) / "samples" / f"step_{step:08d}.png", writer=writer, step=step)
      if step % config.ckpt_every == 0 or step == config.total_steps:
        checkpointer.save(state)
      if stop.stop(step):
        logger.warning("%s received: saving step %d and stopping.", stop.requested, step)
        checkpointer.save(state)
        break
      busy += time.perf_counter() - t_busy
  finally:
    stop.restore()
    checkpointer.close()
    writer.close()
  return state


def _checked(metrics, config):
  """Stops the run after config.max_consecutive_skips non-finite updates in a row; returns metrics."""
  if int(metrics["consecutive_skips"]) >= config.max_consecutive_skips:
    raise FloatingPointError(
        f"{int(metrics['consecutive_skips'])} updates in a row had a non-finite loss or gradient (or a gradient "
        f"norm above config.skip_grad_norm, where set) and were skipped; stopping (the last checkpoint holds "
        f"finite values). Lower config.optimizer.lr, set config.optimizer.grad_clip_norm, raise "
        f"config.skip_grad_norm, or lengthen config.optimizer.warmup_steps.")
  return metrics


def _log_train(writer, step, config, interval_metrics, interval_steps, interval_time, progress_keys):
  """Interval means of the step's metrics; the last value of counters and learning rates."""
  last = interval_metrics[-1]
  row = {}
  for k in last:
    if k == "skipped_updates":
      row[f"train/{k}"] = int(last[k])
    elif k == "lr" or k.endswith("_lr"):
      row[f"train/{k}"] = float(last[k])
    elif k != "consecutive_skips":
      row[f"train/{k}"] = float(np.mean([np.asarray(m[k]) for m in interval_metrics]))
  images_per_sec, eta = float("nan"), float("nan")
  if interval_steps:  # steps timed in this interval (the compiling first step is not)
    images_per_sec = config.batch_size * interval_steps / max(interval_time, 1e-9)
    row["perf/images_per_sec"] = images_per_sec
    row["perf/step_time_s"] = interval_time / interval_steps
    eta = (config.total_steps - step) * interval_time / interval_steps
  writer.write(step, row)
  writers.log_progress(step, config.total_steps, row, images_per_sec, eta, progress_keys)


def restore_for_eval(config, workdir):
  """(Setup, state) from the latest checkpoint in workdir, for evaluation and sampling scripts."""
  s = setup(config)
  checkpoints.check_workdir_config(workdir, s.config, write=False)
  checkpointer = checkpoints.Checkpointer(workdir, keep=s.config.keep_checkpoints)
  if checkpointer.latest_step() is None:
    raise FileNotFoundError(f"No checkpoint in {checkpointer.directory}; train first with "
                            f"python -m experiments.train --config=... --workdir={workdir}.")
  state = checkpointer.restore(s.abstract_state)
  checkpointer.close()
  return s, state
