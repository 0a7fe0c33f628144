r"""StyleGAN2 on FFHQ 1024x1024: config F, FID 2.84 (Karras et al. 2020, Table 1; NVlabs/stylegan2 README, with
x-flips, which jaxgen does not do: expect worse), as stylegan2-ada-pytorch `--cfg=stylegan2 --aug=noaug`, in fp32.

python -m experiments.prepare_data --source=PATH/images1024x1024 --dest=ffhq1024
python -m experiments.train --config=experiments/configs/stylegan2_ffhq1024.py --workdir=/tmp/stylegan2_ffhq1024 \
  --config.dataset=folder:ffhq1024 --config.sample_metrics.inception_path=FILE.npz   # or ...py:smoke, :paper1024

Data: the 70,000 FFHQ images (no TFDS download). Batch 32 on 8 V100s for 25M images: 9 days 18 hours (NVlabs/
stylegan2 README). `:paper1024` is the ADA paper's 1024 baseline (R1 gamma 2). FID as stylegan2_ffhq256.py.
jaxgen: not run yet (needs an accelerator).
"""
from experiments.configs import stylegan2_ffhq256

# stylegan2-ada-pytorch cfg_specs['stylegan2']: mb=32, mbstd=4, fmaps=1, lrate=0.002, gamma=10, ema=10, ramp=None,
# map=8; 'paper1024' differs only in gamma=2.


def get_config(arg=None):
  config = stylegan2_ffhq256.get_config()
  config.dataset = "folder:ffhq1024"  # what experiments.prepare_data wrote (--dest)
  config.batch_size, config.total_steps = 32, 781_250  # kimg=25000
  config.model.update(image_shape=(1024, 1024, 3), channel_base=32768, mbstd_group_size=4, r1_gamma=10.0,
                      ema_kimg=10.0)
  config.optimizer = dict(config.optimizer, generator=dict(lr=0.002), discriminator=dict(lr=0.002))
  config.num_samples = 4
  if arg == "paper1024":
    config.model.update(r1_gamma=2.0)
  elif arg == "smoke":
    stylegan2_ffhq256.smoke(config)
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of stylegan2_ffhq1024; use :smoke or :paper1024.")
  return config
