r"""StyleGAN2 on FFHQ 256x256: the stylegan2-ada-pytorch `--cfg=paper256` configuration, in fp32. FID 3.81 on FFHQ
with x-flips (140k images; Karras et al. 2020b, Fig. 7); jaxgen has no x-flips: expect worse.

python -m experiments.prepare_data --source=PATH/images1024x1024 --dest=ffhq256 --resolution=256
python -m experiments.train --config=experiments/configs/stylegan2_ffhq256.py --workdir=/tmp/stylegan2_ffhq256 \
  --config.dataset=folder:ffhq256 --config.sample_metrics.inception_path=FILE.npz   # or ...py:smoke

Data: the 70,000 FFHQ images (no TFDS download); the ADA README resizes with a box filter to match its FIDs (#283).
Batch 64 on 8 V100s for 25M images: 1 day 11 hours in the official mixed precision (ADA README). FID as
fid50k_full (protocol "stylegan2-ada", NVIDIA's Inception; README.md). jaxgen: not run yet (needs an accelerator).
"""
import ml_collections

# stylegan2-ada-pytorch train.py cfg_specs['paper256']: ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=0.5,
# lrate=0.0025, gamma=1, ema=20, ramp=None, map=8; --fp32=1 (no fp16 layers, no conv clamp), --aug=noaug.


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.compute_dtype, config.matmul_precision = "float32", "default"  # README, "Precision"
  config.dataset = "folder:ffhq256"  # what experiments.prepare_data wrote (--dest)
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.batch_size, config.total_steps = 64, 390_625  # kimg=25000
  config.model_name = "gan.stylegan2"
  config.model = dict(image_shape=(256, 256, 3), z_dim=512, w_dim=512, mapping_layers=8, channel_base=16384,
                      channel_max=512, mbstd_group_size=8, r1_gamma=1.0, r1_interval=16, pl_weight=2.0,
                      pl_interval=4, style_mixing_prob=0.9, ema_kimg=20.0, ema_rampup=None)
  config.optimizer = dict(generator=dict(lr=0.0025), discriminator=dict(lr=0.0025), betas=(0.0, 0.99), eps=1e-8)
  config.log_every, config.eval_every, config.ckpt_every = 100, 20_000, 5_000
  config.eval_split, config.eval_examples = "train", 0  # FID against the training images (official fid50k_full)
  config.sample_metrics = dict(protocol="stylegan2-ada")  # fid50k_full: 50k samples, whole train split
  config.num_samples = 16
  config.figures = dict(psis=(0.0, 0.25, 0.5, 0.75, 1.0), num=10, mix=5)  # experiments.sample
  if arg == "smoke":
    smoke(config)
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of stylegan2_ffhq256; use :smoke.")
  return config


def smoke(config):
  """Every block and mapping layer at the real resolution, with 2 channels per layer; all regularisers on."""
  config.batch_size, config.total_steps = 2, 2
  resolution = config.model.image_shape[0]  # channels at r: min(channel_base // r, channel_max), so 2 everywhere
  config.model = dict(config.model, z_dim=8, w_dim=8, channel_base=2 * resolution, channel_max=2, mbstd_group_size=2,
                      r1_interval=2, pl_interval=2)
  config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
  config.eval_examples, config.num_samples = 4, 2
  config.sample_metrics = dict(num_samples=4, batch_size=4, classifier_steps=5, classifier_examples=16,
                               classifier_widths=(8,), classifier_embed_dim=8)
