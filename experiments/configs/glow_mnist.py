r"""Glow on MNIST (TFDS `mnist`, 8-bit). Paper: ~1.05 bits/dim (Glow on MNIST as reported by FFJORD, Grathwohl et
al. 2019, Table 2; the Glow paper has no MNIST figure).

python -m experiments.train --config=experiments/configs/glow_mnist.py --workdir=/tmp/glow_mnist \
  --config.data_dir=/path/to/tensorflow_datasets          # or ...py:smoke for a seconds-long check

Two levels (28 = 4 * 7); otherwise the openai/glow CIFAR-10 recipe. jaxgen: 1.71 bits/dim after 1,400 steps on a
CPU, far from converged (README, Results).
"""
import ml_collections


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.compute_dtype, config.matmul_precision = "float32", "default"  # README, "Precision"
  config.dataset = "mnist"  # TFDS name
  config.data_dir = ml_collections.config_dict.placeholder(str)  # passed to TFDS (None: its default)
  config.batch_size, config.total_steps = 64, 100_000
  config.model_name = "flows.glow"
  config.model = dict(image_shape=(28, 28, 1), levels=2, depth=16, hidden_channels=256, coupling="affine",
                      permutation="conv", learn_top=True, num_bits=8, remat=False, unroll=1)
  config.optimizer = dict(name="adam", lr=1e-3, warmup_steps=2_000, grad_clip_norm=100.0)
  config.ema_decay = 0.999
  config.log_every, config.eval_every, config.ckpt_every = 100, 2_000, 2_000
  config.eval_batch_size, config.eval_examples = 500, 0  # 0: the whole test split
  config.num_samples, config.sample_temperature = 64, 0.7
  config.figures = dict(temperatures=(0.0, 0.25, 0.5, 0.75, 1.0), num=10, pairs=6, interpolation_steps=8)
  if arg == "smoke":
    config.batch_size, config.total_steps = 8, 2
    config.model.update(depth=1, hidden_channels=8)
    config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
    config.eval_batch_size, config.eval_examples, config.num_samples = 8, 16, 4
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of glow_mnist; use :smoke.")
  return config
