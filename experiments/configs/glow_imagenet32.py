r"""Glow on ImageNet 32x32 (van den Oord et al. downsampled ImageNet): 4.09 bits/dim (Kingma & Dhariwal 2018, Table 2).

python -m experiments.train --config=experiments/configs/glow_imagenet32.py --workdir=/tmp/glow_imagenet32 \
  --config.data_dir=/path/to/tensorflow_datasets          # or ...py:smoke (one step at 32x32, tiny widths)

Data: TFDS `downsampled_imagenet/32x32` (1,281,149 train / 49,999 validation images), prepared once in array_record:
tfds.builder('downsampled_imagenet/32x32', data_dir=DIR).download_and_prepare(file_format='array_record').
openai/glow: `--problem imagenet-oord --image_size 32 --n_level 3 --depth 48 --flow_permutation 2 --flow_coupling 1
--learntop --lr 0.001 --n_bits_x 8`, 8 GPUs x 64 images; the paper states no training time. The rest (optimizer,
Polyak averaging, warm-up) as glow_cifar10.py. jaxgen: not run yet (needs an accelerator: 8 GPUs or a TPU slice).
"""
from experiments.configs import glow_cifar10


def get_config(arg=None):
  config = glow_cifar10.get_config()
  config.dataset = "downsampled_imagenet/32x32"  # TFDS name; its held-out split is "validation"
  config.eval_split = "validation"
  # 8 GPUs x 64, so glow_cifar10's Adamax (beta2 from openai's 50k-image epoch) and warm-up hold unchanged;
  # ~160 epochs of ImageNet (openai/glow runs until stopped).
  config.batch_size, config.total_steps = 512, 400_000
  config.model.update(depth=48)
  config.ckpt_every, config.eval_every = 10_000, 10_000
  if arg == "smoke":  # the real 32x32 x 3-level structure, one step per flow level, 4 hidden channels
    config.batch_size, config.total_steps = 8, 2
    config.model.update(depth=1, hidden_channels=4, remat=False)
    config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
    config.eval_batch_size, config.eval_examples, config.num_samples = 8, 16, 4
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of glow_imagenet32; use :smoke.")
  return config
