r"""Glow on MNIST (TFDS `mnist`, 28x28x1, 8-bit). Expect ~1.05 bits/dim after long training (Glow on MNIST as
reported by Grathwohl et al. 2019, FFJORD, Table 2; the Glow paper itself has no MNIST figure).

python -m experiments.train --config=experiments/configs/glow_mnist.py --workdir=/tmp/glow_mnist \
  --config.data_dir=/path/to/tensorflow_datasets          # or ...py:smoke for a seconds-long check

28 = 4 * 7, so two levels (squeeze to 14x14x4, split, squeeze to 7x7x8); otherwise the openai/glow CIFAR-10
recipe: affine coupling, 1x1 convolutions, learned top prior, Adam 1e-3 with warmup, Polyak-averaged evaluation.
"""
import ml_collections


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
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
  if arg == "smoke":
    config.batch_size, config.total_steps = 8, 2
    config.model = dict(image_shape=(28, 28, 1), levels=2, depth=1, hidden_channels=8)
    config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
    config.eval_batch_size, config.eval_examples, config.num_samples = 8, 16, 4
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of glow_mnist; use :smoke.")
  return config
