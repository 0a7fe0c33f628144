r"""Glow on CelebA-HQ 256x256, 5-bit, 6 levels: the paper's face samples (Kingma & Dhariwal 2018, Sec. 6; no bits/dim).

python -m experiments.prepare_data --source=PATH/celeba_hq_256 --dest=celebahq256 --resolution=256 --holdout=0.1
python -m experiments.train --config=experiments/configs/glow_celebahq256.py --workdir=/tmp/glow_celebahq256 \
  --config.dataset=folder:celebahq256                     # or ...py:smoke (one step at 256x256, tiny widths)

Data: the 30,000 CelebA-HQ images (no TFDS download; openai/glow's split is 27,000 train / 3,000 test).
openai/glow: `--problem celeba --image_size 256 --n_level 6 --depth 32 --flow_permutation 2 --flow_coupling 0
--learntop --lr 0.001 --n_bits_x 5` on 40 GPUs, 1 image each (batch 64 anchored at 32x32: 64 * 32^2 / 256^2 per GPU);
no training time stated. jaxgen: not run yet (needs an accelerator: 40 GPUs or a TPU pod slice).
"""
from experiments.configs import glow_cifar10


def get_config(arg=None):
  config = glow_cifar10.get_config()
  config.dataset = "folder:celebahq256"  # what experiments.prepare_data wrote (--dest)
  config.batch_size, config.total_steps = 40, 500_000  # 40 GPUs x 1; openai/glow runs until stopped
  config.model.update(image_shape=(256, 256, 3), levels=6, depth=32, coupling="additive", num_bits=5)
  # openai/glow counts images at the 32x32 anchor, 40 x 64 per step: an epoch of 50,000 is ceil(50000 / 2560) = 20
  # steps (Adamax beta2 = 1 - 1/20), the warm-up of 10 x 50,000 images 196 steps.
  config.optimizer = dict(config.optimizer, b2=1 - 1 / 20, warmup_steps=196)
  config.eval_batch_size = 40
  config.num_samples = 16  # openai/glow draws 4 x 4 grids above 64x64
  config.log_every, config.eval_every, config.ckpt_every = 100, 10_000, 5_000
  if arg == "smoke":  # the real 256x256 x 6-level structure, one step per level, 4 hidden channels
    config.batch_size, config.total_steps = 2, 2
    config.model.update(depth=1, hidden_channels=4, remat=False)
    config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
    config.eval_batch_size, config.eval_examples, config.num_samples = 2, 4, 2
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of glow_celebahq256; use :smoke.")
  return config
