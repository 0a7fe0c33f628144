r"""NVAE on CelebA 64x64 (8-bit): 2.03 bits/dim (Vahdat & Kautz 2020, Table 1; with flows, IW K=1000).

python -m experiments.prepare_data --source=PATH/celeba_cropped --dest=celeba64 --resolution=64 --holdout=0.1
python -m experiments.train --config=experiments/configs/nvae_celeba64.py --workdir=/tmp/nvae_celeba64 \
  --config.dataset=folder:celeba64                        # or ...py:smoke (one step at 64x64, tiny widths)

Data: CelebA's img_align_celeba (202,599 images, 178x218). NVAE crops the box (15, 40, 163, 188) before resizing to
64 and trains on the official 162,770-image train partition: crop the images first (prepare_data centre-crops).
Official README command: 64 channels, 3 latent scales of 20 groups (ada) x 20 latents, 1 flow, batch 16 x 8 GPUs,
90 epochs, spectral coefficient 1e-1. 8 16-GB V100s, about 92 hours. jaxgen: not run yet (needs an accelerator).
"""
from experiments.configs import nvae_celebahq256
from experiments.configs import nvae_cifar10

STEPS_PER_EPOCH = 162_770 // 128  # 8 GPUs x 16, last partial batch dropped


def get_config(arg=None):
  config = nvae_cifar10.get_config()
  config.dataset = "folder:celeba64"  # what experiments.prepare_data wrote (--dest)
  config.batch_size, config.total_steps = 128, 90 * STEPS_PER_EPOCH
  config.model.update(
      image_shape=(64, 64, 3), num_channels_enc=64, num_channels_dec=64, num_latent_scales=3,
      num_groups_per_scale=20, ada_groups=True, num_nf=1, weight_decay_norm=1e-1,
      kl_anneal_steps=int(0.3 * config.total_steps), kl_const_steps=int(1e-4 * config.total_steps))
  config.optimizer = dict(config.optimizer, warmup_steps=5 * STEPS_PER_EPOCH)  # official --warmup_epochs 5
  config.log_every, config.eval_every, config.ckpt_every = 100, 5 * STEPS_PER_EPOCH, STEPS_PER_EPOCH
  if arg == "smoke":
    nvae_celebahq256.smoke(config)
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of nvae_celeba64; use :smoke.")
  return config
