r"""Training-step throughput, compile time, peak memory and FLOP utilisation of a config, as one JSON line.

python -m experiments.benchmark --config=experiments/configs/glow_cifar10.py:bench

Runs the trainer's own jit-compiled step (same shardings, all devices) on synthetic uint8 images of the model's
shape, so no dataset is needed. images_per_sec is the median over --steps timed steps after --warmup steps;
images_per_sec_mean the mean (the amortised figure where some steps do more, e.g. a GAN's lazy R1).
"""
import json
import os
import resource
import statistics
import time

from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from experiments import cli
from jaxgen import data
from jaxgen.training import trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to an experiment config file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
_PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", 0.0, "Device peak (TFLOP/s, all devices) for FLOP utilisation.")
flags.mark_flags_as_required(["config"])


def _image_shape(config):
  return tuple(trainer.build_model(trainer.with_defaults(config))[1].image_shape)


def benchmark(config, steps=10, warmup=3, peak_tflops=0.0):
  """-> dict with images_per_sec, compile_s, peak_memory_mib, params, flops_per_step, ... (see module doc)."""
  shape = _image_shape(config)
  s = trainer.setup(config, train_data=data.synthetic(shape, num_examples=max(4 * config.batch_size, 256)))
  state = s.init()
  batch = s.batch(s.train_data.get(np.arange(s.config.batch_size)))
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
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0)) if cost else 0.0
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
  }
  if peak_tflops:
    result["flop_utilisation"] = result["tflops_per_sec"] / peak_tflops
  return result


def main(argv):
  del argv
  with cli.clear_errors():
    result = benchmark(_CONFIG.value, _STEPS.value, _WARMUP.value, _PEAK_TFLOPS.value)
  print(json.dumps(result, default=str))


if __name__ == "__main__":
  cli.run(main)
