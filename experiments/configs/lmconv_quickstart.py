r"""LMConv (locally masked PixelCNN++) on the bundled MNIST digits: the no-download quickstart, minutes on 2 CPU cores.

python -m experiments.train --config=experiments/configs/lmconv_quickstart.py --workdir=/tmp/lmconv_qs
python -m experiments.sample --config=experiments/configs/lmconv_quickstart.py --workdir=/tmp/lmconv_qs \
  --temperatures=1 --num=4 --complete_images=8  # 16 samples; completions of the hidden bottom half

A small LMConv network (1 gated resnet per block, 32 filters, 5 logistics; 0.49M parameters) trained
order-agnostically over the 8 S-curve orders, as the paper's CIFAR-10 model, with 8-bit discretized logistic
mixture outputs. Expect train bits/dim to fall from ~2.6 (first 25 steps) to ~1.3, and eval bits/dim of about 1.31
with one S-curve order and 1.29 with the 8-order ensemble after 600 steps of 16 images (evaluate.py on all 2000
test digits: 1.307 and 1.287; --missing=top: 1.238 bits/dim for the top half given the bottom half): measured
18 minutes wall (13 of them training) on a 2-core machine shared with other jobs, but only 5.5 CPU-minutes, so a
few minutes on a quiet one. No paper number: a small model, one epoch of 10k digits. Samples are pen strokes
rather than digits at this budget; completions of the hidden bottom half (sample.py, completions.png) are mostly
recognisable. Sampling is one network pass per pixel (784 here, ~4 s per image on 2 CPU cores), so the grids
are small. `:smoke` is a seconds-long check.
"""
import ml_collections

from jaxgen.autoregressive import orders

S_CURVES = list(orders.variants("s_curve"))  # the 8 rotations/reflections of the S-curve


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = "digits"  # 10k train / 2k test real MNIST digits shipped with jaxgen
  config.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir (None: TFDS default)
  config.batch_size, config.total_steps = 16, 600
  config.model_name = "autoregressive.lmconv"
  config.model = dict(image_shape=(28, 28, 1), likelihood="dmol", nr_resnet=1, nr_filters=32, nr_logistic_mix=5,
                      kernel_size=3, max_dilation=2, dropout_rate=0.0, normalization="pono",
                      train_orders=S_CURVES, eval_orders=S_CURVES)
  config.optimizer = dict(name="adam", lr=2e-3, warmup_steps=50, schedule="cosine", grad_clip_norm=100.0)
  config.ema_decay = 0.0
  config.log_every, config.eval_every, config.ckpt_every = 25, 600, 200
  # Evaluating 8 orders costs 8 forward passes per image, sampling one pass per pixel: keep both small here;
  # `python -m experiments.evaluate` scores the whole test split.
  config.eval_batch_size, config.eval_examples = 64, 512
  config.num_samples, config.sample_temperature = 16, 1.0
  if arg == "smoke":
    config.batch_size, config.total_steps = 4, 3
    config.model = dict(image_shape=(28, 28, 1), likelihood="dmol", nr_resnet=0, nr_filters=4, nr_logistic_mix=2,
                        train_orders=S_CURVES[:2], eval_orders=S_CURVES[:2])
    config.log_every, config.eval_every, config.ckpt_every = 1, 3, 3
    config.eval_batch_size, config.eval_examples, config.num_samples = 4, 8, 2
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of lmconv_quickstart; use :smoke.")
  return config
