r"""NVAE on CelebA-HQ 256x256, 5-bit: 0.70 bits/dim (Vahdat & Kautz 2020, Table 1; with flows, IW K=1000).

python -m experiments.prepare_data --source=PATH/celeba_hq_256 --dest=celebahq256 --resolution=256 --holdout=0.1
python -m experiments.train --config=experiments/configs/nvae_celebahq256.py --workdir=/tmp/nvae_celebahq256 \
  --config.dataset=folder:celebahq256                     # or ...py:smoke (one step at 256x256, tiny widths)

Data: the 30,000 CelebA-HQ images (no TFDS download; NVAE uses openai/glow's 27,000 / 3,000 split). Official README
command: 30 channels, 5 latent scales of 16 groups (ada, min 4) x 20 latents, 2 flows, batch 4 x 24 GPUs, 300
epochs, spectral coefficient 1e-2 annealed from 1. 24 32-GB V100s, about 94 hours (NVAE README; NVlabs/NVAE#17:
8 GPUs run out of memory). The rest as nvae_cifar10.py. jaxgen: not run yet (needs an accelerator).
"""
from experiments.configs import nvae_cifar10

TRAIN_IMAGES = 27_000


def get_config(arg=None, *, train_images=TRAIN_IMAGES, epochs=300):
  config = nvae_cifar10.get_config()
  config.dataset = "folder:celebahq256"  # what experiments.prepare_data wrote (--dest)
  steps_per_epoch = train_images // 96  # 24 GPUs x 4, last partial batch dropped
  config.batch_size, config.total_steps = 96, epochs * steps_per_epoch
  config.model.update(
      image_shape=(256, 256, 3), num_bits=5, num_channels_enc=30, num_channels_dec=30,
      num_latent_scales=5, num_groups_per_scale=16, ada_groups=True, min_groups_per_scale=4, num_nf=2,
      weight_decay_norm=1e-2, weight_decay_norm_anneal=True, weight_decay_norm_init=1.0,
      kl_anneal_steps=int(0.3 * config.total_steps), kl_const_steps=int(1e-4 * config.total_steps))
  config.optimizer = dict(config.optimizer, warmup_steps=5 * steps_per_epoch)  # official --warmup_epochs 5
  config.eval_batch_size, config.num_samples = 24, 16
  config.log_every, config.eval_every, config.ckpt_every = 100, 10 * steps_per_epoch, 2 * steps_per_epoch
  if arg == "smoke":
    smoke(config)
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of nvae_celebahq256; use :smoke.")
  return config


def smoke(config):
  """The real resolution and latent scales (with flows) at 4 channels and 2 latents per group: one group per scale
  (two on a single scale, which with one would be the one-latent "vanilla" model), one cell per block."""
  config.batch_size, config.total_steps = 2, 2
  groups = 1 if config.model.num_latent_scales > 1 else 2  # each group is one more copy of the cells to compile
  config.model.update(num_channels_enc=4, num_channels_dec=4, num_preprocess_cells=1, num_postprocess_cells=1,
                      num_groups_per_scale=groups, min_groups_per_scale=1, num_latent_per_group=2,
                      num_cell_per_cond_enc=1, num_cell_per_cond_dec=1, num_mixture_dec=2, num_nf=1,
                      kl_anneal_steps=1, kl_const_steps=0)
  config.optimizer = dict(config.optimizer, warmup_steps=1)
  config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
  config.eval_batch_size, config.eval_examples, config.num_samples = 2, 4, 2
  config.iw_samples, config.readjust_bn_iterations = 2, 2
  config.figures = dict(config.figures, num=2, readjust_bn_iterations=2)
