r"""Training-step throughput, compile time, peak memory and FLOP utilisation of a config, as one JSON line;
or, with --data_only, the input pipeline's throughput alone.

python -m experiments.benchmark --config=experiments/configs/glow_cifar10.py:bench [--real_data --data_dir=DIR]
python -m experiments.benchmark --config=experiments/configs/glow_cifar10.py --data_only --data_dir=DIR \
  --config.batch_size=256 [--legacy_rounds=3]

Runs the trainer's own jit-compiled step (same shardings, all devices) on synthetic uint8 images of the model's
shape, so no dataset is needed. images_per_sec is the median over --steps timed steps after --warmup steps;
images_per_sec_mean the mean (the amortised figure where some steps do more, e.g. a GAN's lazy R1).
--real_data also runs the step the way the trainer does (next batch, prefetched to the devices; dispatch; no wait
for the step), alternating --rounds of --steps steps fed by config.dataset's input pipeline with as many fed by one
synthetic batch, and reports both step times and the time each step waited for data (data_wait_ms).
--data_only times config.dataset's training batches (images/s, ms per batch) as the trainer's loop draws them;
--legacy_rounds alternates that with the loader jaxgen had before worker processes and the in-memory cache.

FLOPs and memory come from XLA: flops_per_step is the compiled step's `cost_analysis()` (one device's program),
mfu is the achieved FLOP/s over that of a 2048 x 2048 float32 matmul timed on the same device in the same run
(`matmul_flops_per_sec`), and compiled_memory is the step's `memory_analysis()` (`compiled_memory`).
--paper_size compiles the full config's step for one device at the paper's batch per device (`PAPER_DEVICE_BATCH`)
on abstract shapes only (no arrays, no step run) and says whether its memory fits a 16, 40 and 80 GiB device.
"""
import concurrent.futures
import itertools
import json
import os
import resource
import statistics
import time

from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from experiments import cli
from jaxgen import data
from jaxgen.training import trainer

_CONFIG = cli.define_config_flag()
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", 0.0, "Device peak (TFLOP/s, all devices) for FLOP utilisation.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir of config.dataset (sets config.data_dir).")
_REAL_DATA = flags.DEFINE_bool("real_data", False, "Also time steps fed by config.dataset's input pipeline.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "--real_data: alternated rounds of real-data and synthetic steps.")
_DATA_ONLY = flags.DEFINE_bool("data_only", False, "Time the input pipeline alone (--steps batches per round).")
_LEGACY_ROUNDS = flags.DEFINE_integer("legacy_rounds", 0, "--data_only: rounds of the earlier loader, alternated.")
# Trainer defaults a config file need not define (so --config.KEY cannot set them): set here for A/B runs.
_DATA_WORKERS = flags.DEFINE_integer("data_workers", None, "Sets config.data_workers.")
_DATA_CACHE_MB = flags.DEFINE_integer("data_cache_mb", None, "Sets config.data_cache_mb (0: stream every batch).")
_PAPER_SIZE = flags.DEFINE_bool("paper_size", False, "Compile-only memory estimate at the paper's batch per device.")
_DEVICE_BATCH = flags.DEFINE_integer("device_batch", None, "--paper_size: batch per device (default: the paper's).")
flags.mark_flags_as_required(["config"])


# The papers' batch per device (GPU) for each paper config: the global batch over the GPUs its source trained on.
PAPER_DEVICE_BATCH = {
    "glow_cifar10": 64, "glow_imagenet32": 64,  # openai/glow: 8 GPUs x 64
    "glow_celebahq256": 1,  # openai/glow: 40 GPUs x 1
    "nvae_cifar10": 32, "nvae_mnist": 200, "nvae_celeba64": 16, "nvae_imagenet32": 24,  # NVAE README commands
    "nvae_celebahq256": 4, "nvae_ffhq256": 4,  # 24 GPUs x 4
    "lmconv_cifar10": 32, "lmconv_mnist_binarized": 32, "lmconv_celebahq64": 24,  # ajayjain/lmconv -b, one process
    "stylegan2_cifar10": 32,  # stylegan2-ada-pytorch cfg 'cifar': mb 64 on 2 GPUs
    "stylegan2_ffhq256": 8,  # cfg 'paper256': mb 64 on 8 GPUs
    "stylegan2_ffhq1024": 4,  # cfg 'stylegan2': mb 32 on 8 GPUs
}
DEVICE_GIB = (16, 40, 80)


def matmul_flops_per_sec(n=2048, repeats=10):
  """FLOP/s of an n x n float32 matmul (2 n^3 FLOPs) on the first device: median of `repeats` timed calls after
  one warm-up call. The reference that `mfu` divides by, measured in the same process as the step."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  matmul = jax.jit(jnp.matmul).lower(a, a).compile()
  jax.block_until_ready(matmul(a, a))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(matmul(a, a))
    times.append(time.perf_counter() - t0)
  return 2.0 * n**3 / statistics.median(times)


def compiled_flops(compiled):
  """FLOPs of one call of a compiled function (one device's program), from XLA's cost analysis; 0 if it has none."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def compiled_memory(compiled):
  """MiB per device from XLA's memory analysis of a compiled function: arguments, outputs, temporaries, the outputs
  aliased to donated arguments, and total = arguments + outputs - aliased + temporaries (what the device holds
  while the step runs; buffers the runtime adds, e.g. cuDNN workspaces and the CUDA context, are not in it)."""
  m = compiled.memory_analysis()
  mib = lambda b: b / 2**20
  total = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
  return {"arguments_mib": mib(m.argument_size_in_bytes), "outputs_mib": mib(m.output_size_in_bytes),
          "aliased_mib": mib(m.alias_size_in_bytes), "temp_mib": mib(m.temp_size_in_bytes), "total_mib": mib(total)}


def paper_size(config, name, device_batch=None):
  """Compiles `config`'s train step for one device at `device_batch` images (default PAPER_DEVICE_BATCH[name]) on
  abstract shapes (ShapeDtypeStructs: no state or batch is allocated, no step runs) and returns its
  `compiled_memory` and whether the total fits a device of each size in DEVICE_GIB."""
  if device_batch is None:
    if name not in PAPER_DEVICE_BATCH:
      raise ValueError(f"No paper batch per device is recorded for {name!r} (known: {sorted(PAPER_DEVICE_BATCH)}); "
                       f"pass --device_batch=N.")
    device_batch = PAPER_DEVICE_BATCH[name]
  if jax.device_count() != 1:
    raise ValueError(f"--paper_size estimates one device's memory; run it with one device (found "
                     f"{jax.device_count()}: unset XLA_FLAGS=--xla_force_host_platform_device_count).")
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.batch_size = device_batch
    config.dataset = "synthetic"  # never open the paper's (manually downloaded) data: only its shape matters
    if "sample_metrics" in config:
      config.sample_metrics = {"protocol": ""}  # how samples are scored leaves the step alone: no Inception file
  shape = _image_shape(config)
  s = trainer.setup(config, train_data=data.synthetic(shape, num_examples=device_batch, num_classes=0))
  batch = {"image": jax.ShapeDtypeStruct((device_batch,) + shape, jnp.uint8, sharding=s.batch_sharding),
           "label": jax.ShapeDtypeStruct((device_batch,), jnp.int32, sharding=s.batch_sharding)}
  t0 = time.perf_counter()
  compiled = s.train_step.lower(s.abstract_state, batch, jax.random.key(0)).compile()
  memory = compiled_memory(compiled)
  return {"config": name, "model": dict(s.config.model), "device_batch": device_batch,
          "backend": jax.default_backend(), "compile_s": time.perf_counter() - t0,
          "params": int(sum(x.size for x in jax.tree.leaves(s.abstract_state["params"]))),
          "flops_per_step": compiled_flops(compiled), "compiled_memory": memory,
          "fits_gib": {str(g): memory["total_mib"] <= g * 1024 for g in DEVICE_GIB}}


def _image_shape(config):
  return tuple(trainer.build_model(trainer.with_defaults(config))[1].image_shape)


def benchmark(config, steps=10, warmup=3, peak_tflops=0.0, real_data=False, rounds=3):
  """-> dict with images_per_sec, compile_s, peak_memory_mib, params, flops_per_step, ... (see module doc);
  with real_data also real_data_step_ms, synthetic_step_ms, data_wait_ms, ... (`_real_data_steps`)."""
  shape = _image_shape(config)
  synthetic = data.synthetic(shape, num_examples=max(4 * config.batch_size, 256))
  s = trainer.setup(config, train_data=None if real_data else synthetic)
  state = s.init()
  local = synthetic.get(np.arange(s.config.batch_size)[s.input.rows])
  batch = s.batch(local)
  rng = jax.random.key(0)
  t0 = time.perf_counter()
  compiled = s.train_step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    state, _ = compiled(state, batch, rng)
  jax.block_until_ready(state)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  step_s = statistics.median(times)
  flops = compiled_flops(compiled)
  matmul_rate = matmul_flops_per_sec()
  mem = jax.local_devices()[0].memory_stats() or {}
  peak_bytes = mem.get("peak_bytes_in_use") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  result = {
      "config": s.config.model_name, "model": dict(s.config.model), "batch_size": s.config.batch_size,
      "xla_cpu_options": dict(s.config.xla_cpu_options), "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
      "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}", "backend": jax.default_backend(),
      "images_per_sec": s.config.batch_size / step_s, "step_ms_median": 1e3 * step_s,
      "step_ms_min": 1e3 * min(times), "compile_s": compile_s,
      # Steps whose cost varies with the step number (a GAN's lazy R1 every 16 steps) need the mean over a multiple
      # of the period: --steps=32 gives the amortised figure.
      "images_per_sec_mean": s.config.batch_size / statistics.mean(times), "step_ms_mean": 1e3 * statistics.mean(times),
      "peak_memory_mib": peak_bytes / 2**20,
      "peak_memory_kind": "device peak_bytes_in_use" if mem.get("peak_bytes_in_use") else "process max RSS",
      "params": int(sum(x.size for x in jax.tree.leaves(state["params"]))),
      "flops_per_step": flops, "tflops_per_sec": flops / step_s / 1e12,
      "matmul_tflops_per_sec": matmul_rate / 1e12, "mfu": flops / step_s / matmul_rate,
      "compiled_memory": compiled_memory(compiled),
  }
  if peak_tflops:
    result["flop_utilisation"] = result["tflops_per_sec"] / peak_tflops
  if real_data:
    result |= _real_data_steps(s, compiled, state, batch, rng, steps, warmup, rounds)
  return result


def _real_data_steps(s, compiled, state, synthetic, rng, steps, warmup, rounds):
  """Steps as the trainer's loop runs them (next batch, already on the devices; dispatch), fed alternately by the
  input pipeline and by `synthetic`, one batch already on the devices; per round, the mean step over `steps` steps
  and the time blocked in next(batches). Rounds alternate which kind runs first (real, synthetic, synthetic, real,
  ...), so a machine that speeds up or slows down during the run favours neither."""
  t0 = time.perf_counter()
  batches = s.input.train_batches(0, put=s.batch)  # as the trainer: decoded, augmented, on the devices
  next(batches)  # the split is decoded into memory first where it fits config.data_cache_mb
  first_batch_s = time.perf_counter() - t0
  real, fake, waits = [], [], []
  for r in range(rounds):
    for kind in ("real", "synthetic")[::1 if r % 2 == 0 else -1]:
      wait = 0.0
      for i in range(warmup + steps):
        if i == warmup:
          jax.block_until_ready(state)
          t0, wait = time.perf_counter(), 0.0
        t_next = time.perf_counter()
        batch = next(batches) if kind == "real" else synthetic
        wait += time.perf_counter() - t_next
        state, _ = compiled(state, batch, rng)
      jax.block_until_ready(state)
      step_s = (time.perf_counter() - t0) / steps
      if kind == "real":
        real.append(step_s)
        waits.append(wait / steps)
      else:
        fake.append(step_s)
  ratio = statistics.median(real) / statistics.median(fake)
  return {"dataset": s.config.dataset, "data_workers": s.config.data_workers,
          "cached": isinstance(s.input.cached("train")._source, dict), "first_batch_s": first_batch_s,
          "real_data_step_ms": [1e3 * t for t in real], "synthetic_step_ms": [1e3 * t for t in fake],
          "data_wait_ms": [1e3 * t for t in waits], "real_over_synthetic": ratio,
          "real_over_synthetic_per_round": [r / f for r, f in zip(real, fake)],
          "waited_for_data": bool(statistics.median(waits) > 0.01 * statistics.median(real))}


def legacy_train_batches(dataset, batch_size, seed, start_step, rows=slice(None), prefetch=2):
  """The loader before worker processes and the cache (for A/B runs): one example at a time through the source's
  `[i]` (TFDS decodes each), stacked in one background thread, `prefetch` batches ahead."""
  def fetch(step):
    indices = data.train_indices(dataset.num_examples, batch_size, seed, step)[rows]
    items = [dataset._source[int(i)] for i in indices]
    return {"image": np.stack([np.asarray(e["image"], np.uint8) for e in items]),
            "label": np.asarray([e["label"] for e in items], np.int32)}

  with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
    pending = [pool.submit(fetch, start_step + i) for i in range(prefetch)]
    for step in itertools.count(start_step + prefetch):
      batch = pending.pop(0).result()
      pending.append(pool.submit(fetch, step))
      yield batch


def data_benchmark(config, batches_per_round=50, warmup=5, legacy_rounds=0):
  """-> dict: images_per_sec and ms_per_batch of config.dataset's training batches (`data.Input.train_batches`,
  this host's rows), the time to the first batch (which includes decoding a cached split), and with legacy_rounds
  the earlier loader's figures from rounds alternated with as many of the current loader."""
  config = trainer.with_defaults(config)
  trainer.check_batch_size(config.batch_size)
  inputs = data.Input(config, process_index=jax.process_index(), process_count=jax.process_count())
  t0 = time.perf_counter()
  current = inputs.train_batches(0)
  next(current)
  first_batch_s = time.perf_counter() - t0
  loaders = {"current": current}
  if legacy_rounds:
    loaders["legacy"] = legacy_train_batches(inputs.train, inputs.batch_size, config.seed, 0, inputs.rows)
  seconds = {name: [] for name in loaders}  # per round: seconds per batch
  for _ in range(max(legacy_rounds, 1)):
    for name, batches in loaders.items():
      for _ in range(warmup):
        next(batches)
      t0 = time.perf_counter()
      for _ in range(batches_per_round):
        next(batches)
      seconds[name].append((time.perf_counter() - t0) / batches_per_round)
  per_host = inputs.rows.stop - inputs.rows.start
  result = {"dataset": config.dataset, "batch_size": config.batch_size, "host_batch": per_host,
            "data_workers": config.data_workers, "prefetch": config.prefetch, "data_cache_mb": config.data_cache_mb,
            "cached": isinstance(inputs.cached("train")._source, dict), "augment": inputs.augment,
            "first_batch_s": first_batch_s, "cpu_count": os.cpu_count()}
  for name, values in seconds.items():
    prefix = "" if name == "current" else "legacy_"
    result |= {f"{prefix}images_per_sec": per_host / statistics.median(values),
               f"{prefix}ms_per_batch": 1e3 * statistics.median(values),
               f"{prefix}images_per_sec_rounds": [per_host / v for v in values]}
  if legacy_rounds:
    result["speedup"] = result["images_per_sec"] / result["legacy_images_per_sec"]
  for batches in loaders.values():
    batches.close()
  return result


def main(argv):
  del argv
  config = _CONFIG.value.copy_and_resolve_references()
  with config.unlocked():
    for key, flag in (("data_dir", _DATA_DIR), ("data_workers", _DATA_WORKERS), ("data_cache_mb", _DATA_CACHE_MB)):
      if flag.value is not None:
        config[key] = flag.value
  with cli.clear_errors():
    if _PAPER_SIZE.value:
      path = config_flags.get_config_filename(flags.FLAGS["config"]).split(":")[0]  # without the :variant
      name = os.path.basename(path).removesuffix(".py")
      result = paper_size(config, name, _DEVICE_BATCH.value)
    elif _DATA_ONLY.value:
      result = data_benchmark(config, _STEPS.value, _WARMUP.value, _LEGACY_ROUNDS.value)
    else:
      result = benchmark(config, _STEPS.value, _WARMUP.value, _PEAK_TFLOPS.value, _REAL_DATA.value, _ROUNDS.value)
  print(json.dumps(result, default=str))


if __name__ == "__main__":
  cli.run(main)
