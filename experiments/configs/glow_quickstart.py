r"""Glow on the bundled MNIST digits: the no-download quickstart, a few minutes on 2 CPU cores.

python -m experiments.train --config=experiments/configs/glow_quickstart.py --workdir=/tmp/glow

Expect eval bits/dim to fall from ~7 to about 1.85 in 2500 steps, about 5 minutes on 2 CPU cores, and samples
that are recognisable digits (no paper number: a small model on 10k digits; full-size Glow on all of MNIST reaches
~1.05, see glow_mnist.py). `:smoke` is a seconds-long check.
"""
import ml_collections


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
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
  if arg == "smoke":
    config.batch_size, config.total_steps = 8, 3
    config.model = dict(image_shape=(28, 28, 1), levels=2, depth=2, hidden_channels=8)
    config.log_every, config.eval_every, config.ckpt_every = 1, 3, 3
    config.eval_examples, config.num_samples = 16, 4
  return config
