r"""NVAE on ImageNet 32x32 (van den Oord et al.'s downsampled ImageNet): 3.92 bits/dim (Vahdat & Kautz 2020, Table 1;
with flows, IW K=1000).

python -m experiments.train --config=experiments/configs/nvae_imagenet32.py --workdir=/tmp/nvae_imagenet32 \
  --config.data_dir=/path/to/tensorflow_datasets          # or ...py:smoke (one step at 32x32, tiny widths)

Data: TFDS `downsampled_imagenet/32x32` (1,281,149 train / 49,999 validation images), prepared once in array_record:
tfds.builder('downsampled_imagenet/32x32', data_dir=DIR).download_and_prepare(file_format='array_record').
Official README command: 192 channels, 1 latent scale of 28 groups x 20 latents, 1 flow, batch 24 x 24 GPUs, 45
epochs, 1 warm-up epoch, spectral coefficient 1e-2 annealed from 1. 24 16-GB V100s, about 70 hours.
jaxgen: not run yet (needs an accelerator).
"""
from experiments.configs import nvae_celebahq256
from experiments.configs import nvae_cifar10

STEPS_PER_EPOCH = 1_281_149 // 576  # 24 GPUs x 24, last partial batch dropped


def get_config(arg=None):
  config = nvae_cifar10.get_config()
  config.dataset = "downsampled_imagenet/32x32"  # TFDS name; its held-out split is "validation"
  config.eval_split = "validation"
  config.batch_size, config.total_steps = 576, 45 * STEPS_PER_EPOCH
  config.model.update(
      num_channels_enc=192, num_channels_dec=192, num_groups_per_scale=28, weight_decay_norm=1e-2,
      weight_decay_norm_anneal=True, weight_decay_norm_init=1.0,
      kl_anneal_steps=int(0.3 * config.total_steps), kl_const_steps=int(1e-4 * config.total_steps))
  config.optimizer = dict(config.optimizer, warmup_steps=STEPS_PER_EPOCH)  # official --warmup_epochs 1
  config.log_every, config.eval_every, config.ckpt_every = 100, STEPS_PER_EPOCH, STEPS_PER_EPOCH // 4
  if arg == "smoke":
    nvae_celebahq256.smoke(config)
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of nvae_imagenet32; use :smoke.")
  return config
