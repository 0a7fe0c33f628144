r"""LMConv on CelebA-HQ 64x64, 5-bit: the official `celeba_ep749_s8.pth` model (320 filters, 8 S-curve orders). The
ajayjain/lmconv README shows its completions and gives no bits/dim; the paper's CelebA-HQ results are completions too.

python -m experiments.prepare_data --source=PATH/celeba_hq_256 --dest=celebahq64 --resolution=64 --holdout=0.1
python -m experiments.train --config=experiments/configs/lmconv_celebahq64.py --workdir=/tmp/lmconv_celebahq64 \
  --config.dataset=folder:celebahq64                      # or ...py:smoke (one step at 64x64, tiny widths)

Data: CelebA-HQ (no TFDS download; official: openai/glow's 256x256 records, 27,000 / 3,000, resized to 64).
ajayjain/lmconv: `main.py -d celebahq --celeba_size 64 --n_bits 5 -b 24 --ours -md 2 -k 3 --normalization pono
--order s_curve --nr_filters 320 -dp 0`, 750 epochs; hardware and time not stated. jaxgen: not run yet.
"""
from experiments.configs import lmconv_cifar10
from jaxgen.autoregressive import orders

STEPS_PER_EPOCH = 27_000 // 24


def get_config(arg=None):
  config = lmconv_cifar10.get_config()
  config.dataset = "folder:celebahq64"  # what experiments.prepare_data wrote (--dest)
  config.batch_size, config.total_steps = 24, 750 * STEPS_PER_EPOCH
  config.model.update(image_shape=(64, 64, 3), nr_filters=320, num_bits=5)
  official_scale = 24 * 64 * 64 * 3  # batch x dimensions: official summed loss / jaxgen loss (lmconv_cifar10.py)
  config.optimizer = dict(config.optimizer, eps=1e-8 / official_scale, grad_clip_norm=2e6 / official_scale)
  config.eval_batch_size = 24
  config.log_every, config.eval_every, config.ckpt_every = 100, 10 * STEPS_PER_EPOCH, STEPS_PER_EPOCH
  if arg == "smoke":  # the real 64x64 masks and dilations, no resnets, 4 filters
    config.batch_size, config.total_steps = 2, 2
    config.model.update(nr_resnet=0, nr_filters=4, nr_logistic_mix=2, train_orders=orders.S_CURVES[:2],
                        eval_orders=orders.S_CURVES[:2])
    config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
    config.eval_batch_size, config.eval_examples, config.num_samples = 2, 4, 2
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of lmconv_celebahq64; use :smoke.")
  return config
