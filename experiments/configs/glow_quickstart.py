r"""Glow on the bundled MNIST digits: the no-download quickstart, about 5 minutes on 2 CPU cores.

python -m experiments.train --config=experiments/configs/glow_quickstart.py --workdir=/tmp/glow   # or ...py:smoke

No paper number (a 0.29M-parameter Glow on 10k digits; glow_mnist.py has the paper-size model). jaxgen: 1.85
bits/dim on the 2k test digits after 2,500 steps (README, Results).
"""
import ml_collections


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.compute_dtype, config.matmul_precision = "float32", "default"  # README, "Precision"
  config.dataset = "digits"  # 10k train / 2k test real MNIST digits shipped with jaxgen
  config.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir (None: TFDS default)
  config.batch_size, config.total_steps = 64, 2500
  config.model_name = "flows.glow"
  config.model = dict(image_shape=(28, 28, 1), levels=2, depth=8, hidden_channels=96, coupling="affine",
                      permutation="conv_lu", learn_top=True, unroll=8)
  config.optimizer = dict(name="adam", lr=1e-3, warmup_steps=100, schedule="cosine", grad_clip_norm=100.0)
  config.ema_decay = 0.0
  config.log_every, config.eval_every, config.ckpt_every = 50, 500, 500
  config.eval_examples = 0  # 0: the whole test split
  config.num_samples, config.sample_temperature = 64, 0.7  # the paper's figures use T = 0.7
  config.figures = dict(temperatures=(0.0, 0.25, 0.5, 0.75, 1.0), num=10, pairs=6, interpolation_steps=8)
  if arg == "smoke":
    config.batch_size, config.total_steps = 8, 3
    config.model.update(depth=2, hidden_channels=8, unroll=1)
    config.log_every, config.eval_every, config.ckpt_every = 1, 3, 3
    config.eval_examples, config.num_samples = 16, 4
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of glow_quickstart; use :smoke.")
  return config
