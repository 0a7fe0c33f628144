r"""LMConv (locally masked PixelCNN++) on the bundled MNIST digits: the no-download quickstart, 3 minutes on 2 CPUs.

python -m experiments.train --config=experiments/configs/lmconv_quickstart.py --workdir=/tmp/lmconv   # or ...py:smoke
python -m experiments.evaluate --config=experiments/configs/lmconv_quickstart.py --workdir=/tmp/lmconv \
  --evals=completion     # + -log p(top half | bottom half)
python -m experiments.sample --config=experiments/configs/lmconv_quickstart.py --workdir=/tmp/lmconv

A 0.49M-parameter network trained over the 8 S-curve orders, as the paper's CIFAR-10 model. No paper number (one
epoch of 10k digits). jaxgen: 1.313 bits/dim with one order, 1.297 with the 8-order ensemble, 1.248 for the top half
given the bottom half (README, Results). Sampling draws one pixel per step, so the figures are small.
"""
import ml_collections

from jaxgen.autoregressive import orders


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.compute_dtype, config.matmul_precision = "float32", "default"  # README, "Precision"
  config.dataset = "digits"  # 10k train / 2k test real MNIST digits shipped with jaxgen
  config.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir (None: TFDS default)
  config.batch_size, config.total_steps = 16, 600
  config.model_name = "autoregressive.lmconv"
  config.model = dict(image_shape=(28, 28, 1), likelihood="dmol", nr_resnet=1, nr_filters=32, nr_logistic_mix=5,
                      kernel_size=3, max_dilation=2, dropout_rate=0.0, normalization="pono",
                      train_orders=orders.S_CURVES, eval_orders=orders.S_CURVES)
  config.optimizer = dict(name="adam", lr=2e-3, warmup_steps=50, schedule="cosine", grad_clip_norm=100.0)
  config.ema_decay = 0.0
  config.log_every, config.eval_every, config.ckpt_every = 25, 600, 200
  # Evaluating 8 orders costs 8 forward passes per image: the periodic evaluation uses 512 test digits;
  # `python -m experiments.evaluate` scores the whole test split.
  config.eval_batch_size, config.eval_examples = 64, 512
  config.num_samples, config.sample_temperature = 16, 1.0
  config.evals = dict(completion=dict(missing="top"))  # -log p(top half | bottom half), with --evals=completion
  config.figures = dict(temperatures=(1.0,), num=4, missing="bottom", completions=3, complete_images=8)
  if arg == "smoke":
    config.batch_size, config.total_steps = 4, 3
    config.model.update(nr_resnet=0, nr_filters=4, nr_logistic_mix=2, train_orders=orders.S_CURVES[:2],
                        eval_orders=orders.S_CURVES[:2])
    config.log_every, config.eval_every, config.ckpt_every = 1, 3, 3
    config.eval_batch_size, config.eval_examples, config.num_samples = 4, 8, 2
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of lmconv_quickstart; use :smoke.")
  return config
