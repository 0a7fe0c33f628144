"""experiments/benchmark.py times the trainer's own compiled step: its figures must be those of real steps; with
real data it says how long steps waited for the input pipeline, and --data_only times the pipeline alone.
The scripts run with huge-page malloc on Linux (experiments/cli.py)."""
import json
import os
import subprocess
import sys
import time

import pytest
import tensorflow_datasets as tfds

from experiments import benchmark
from experiments import cli
from experiments.configs import glow_cifar10
from jaxgen import data

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
LINUX = sys.platform.startswith("linux")


def test_benchmark_times_the_trainers_step_and_the_wait_for_data(monkeypatch):
  config = glow_cifar10.get_config("smoke")  # carries glow_cifar10's xla_cpu_options
  slow_batch = data.train_batch

  def train_batch(*args, **kwargs):  # a loader 300 ms per batch, far slower than the smoke step
    time.sleep(0.3)
    return slow_batch(*args, **kwargs)

  monkeypatch.setattr(data, "train_batch", train_batch)
  with tfds.testing.mock_data(num_examples=32):
    result = benchmark.benchmark(config, steps=3, warmup=1, real_data=True, rounds=1)
  assert result["xla_cpu_options"] == dict(config.xla_cpu_options)
  assert result["images_per_sec"] > 0 and result["step_ms_min"] <= result["step_ms_median"]
  assert abs(result["images_per_sec"] - 1e3 * config.batch_size / result["step_ms_median"]) < 1e-6
  assert result["compile_s"] > 0 and result["flops_per_step"] > 0
  assert result["matmul_tflops_per_sec"] > 0
  assert result["mfu"] > 0
  assert abs(result["mfu"] - result["tflops_per_sec"] / result["matmul_tflops_per_sec"]) < 1e-9 * result["mfu"]
  memory = result["compiled_memory"]  # the state is donated: its outputs alias its arguments
  assert 0 < memory["aliased_mib"] <= memory["arguments_mib"] and memory["temp_mib"] > 0
  assert result["params"] > 0 and result["peak_memory_mib"] > 0
  assert result["dataset"] == "cifar10" and result["cached"]
  assert result["waited_for_data"] and result["data_wait_ms"][0] > 100, result
  assert result["real_data_step_ms"][0] > result["data_wait_ms"][0] and result["real_over_synthetic"] > 1
  assert result["real_over_synthetic_per_round"] == [pytest.approx(result["real_over_synthetic"])]


def test_paper_size_compiles_at_a_batch_per_device_without_arrays():
  config = glow_cifar10.get_config("smoke")
  result = benchmark.paper_size(config, "glow_cifar10", device_batch=2)
  memory = result["compiled_memory"]
  assert result["device_batch"] == 2 and result["flops_per_step"] > 0
  total = memory["arguments_mib"] + memory["outputs_mib"] - memory["aliased_mib"] + memory["temp_mib"]
  assert abs(memory["total_mib"] - total) < 1e-6 and memory["temp_mib"] > 0
  assert result["fits_gib"] == {"16": True, "40": True, "80": True}  # a smoke model: a few MiB
  with pytest.raises(ValueError, match="No paper batch per device is recorded for 'mine'"):
    benchmark.paper_size(config, "mine")


def test_data_only_times_the_pipeline_against_the_earlier_loader():
  config = glow_cifar10.get_config("smoke")
  with tfds.testing.mock_data(num_examples=32):
    result = benchmark.data_benchmark(config, batches_per_round=3, warmup=1, legacy_rounds=2)
  assert result["dataset"] == "cifar10" and result["host_batch"] == config.batch_size and result["cached"]
  assert len(result["images_per_sec_rounds"]) == len(result["legacy_images_per_sec_rounds"]) == 2
  assert abs(result["images_per_sec"] - 1e3 * config.batch_size / result["ms_per_batch"]) < 1e-6
  assert result["speedup"] == result["images_per_sec"] / result["legacy_images_per_sec"]
  assert result["augment"] == {"flip": False, "translate": 3.2}  # glow_cifar10's --dal 1 shifts


def test_hugepage_malloc_env_adds_the_glibc_tunable_once():
  env = cli.hugepage_malloc_env({"PATH": "/bin"})
  if not LINUX:
    assert env is None
    return
  assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  assert cli.hugepage_malloc_env(env) is None  # already set: no second re-exec
  kept = cli.hugepage_malloc_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
  assert kept["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert cli.hugepage_malloc_env({"JAXGEN_HUGEPAGES": "0"}) is None  # opt-out


def test_scripts_reexecute_with_hugepage_malloc():
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "JAXGEN_HUGEPAGES")}
  out = subprocess.run([sys.executable, "-m", "experiments.benchmark",
                        "--config=experiments/configs/glow_quickstart.py:smoke", "--steps=1", "--warmup=0"],
                       cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert ("glibc.malloc.hugetlb=1" in result["glibc_tunables"]) == LINUX
