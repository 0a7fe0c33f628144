r"""A RealNVP-style flow (Dinh et al. 2017) on the bundled MNIST digits: the smallest model family, minutes on a CPU.

python -m experiments.train --config=experiments/configs/realnvp_quickstart.py --workdir=/tmp/realnvp   # or ...py:smoke

The README's "Adding a model" example (jaxgen/flows/realnvp.py): ActNorm, affine couplings and channel reversals over
2 levels, 82k parameters. No paper number (RealNVP reports no MNIST figure). jaxgen: 2.06 bits/dim on the 2k test
digits after 2,000 steps (README, Results); samples are strokes, not digits, at this size.
"""
import ml_collections


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.compute_dtype, config.matmul_precision = "float32", "default"  # README, "Precision"
  config.dataset = "digits"  # 10k train / 2k test real MNIST digits shipped with jaxgen
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.batch_size, config.total_steps = 64, 2000
  config.model_name = "flows.realnvp"
  config.model = dict(image_shape=(28, 28, 1), levels=2, depth=4, hidden_channels=64)
  config.optimizer = dict(name="adam", lr=1e-3, warmup_steps=100, schedule="cosine", grad_clip_norm=100.0)
  config.log_every, config.eval_every, config.ckpt_every = 50, 500, 500
  config.num_samples, config.sample_temperature = 64, 0.7
  config.figures = dict(temperatures=(0.0, 0.25, 0.5, 0.75, 1.0), num=10)
  if arg == "smoke":
    config.batch_size, config.total_steps = 8, 3
    config.model.update(depth=2, hidden_channels=8)
    config.log_every, config.eval_every, config.ckpt_every = 1, 3, 3
    config.eval_examples, config.num_samples = 16, 4
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of realnvp_quickstart; use :smoke.")
  return config
