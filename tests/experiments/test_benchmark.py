"""experiments/benchmark.py times the trainer's own compiled step: its figures must be those of real steps."""
from experiments import benchmark
from experiments.configs import glow_cifar10


def test_benchmark_times_the_trainers_step_with_its_options():
  config = glow_cifar10.get_config("smoke")  # carries glow_cifar10's xla_cpu_options
  result = benchmark.benchmark(config, steps=3, warmup=1)
  assert result["xla_cpu_options"] == dict(config.xla_cpu_options)
  assert result["images_per_sec"] > 0 and result["step_ms_min"] <= result["step_ms_median"]
  assert abs(result["images_per_sec"] - 1e3 * config.batch_size / result["step_ms_median"]) < 1e-6
  assert result["compile_s"] > 0 and result["flops_per_step"] > 0
  assert result["params"] > 0 and result["peak_memory_mib"] > 0
