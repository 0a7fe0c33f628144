r"""NVAE on FFHQ 256x256, 5-bit: 0.69 bits/dim (Vahdat & Kautz 2020, Table 1; with flows, IW K=1000).

python -m experiments.prepare_data --source=PATH/images1024x1024 --dest=ffhq256 --resolution=256 --holdout=0.1
python -m experiments.train --config=experiments/configs/nvae_ffhq256.py --workdir=/tmp/nvae_ffhq256 \
  --config.dataset=folder:ffhq256                         # or ...py:smoke (one step at 256x256, tiny widths)

Data: the 70,000 FFHQ images (no TFDS download; NVAE's create_ffhq_lmdb.py holds out a random 7,000 and resizes
bilinearly). Official README command: as CelebA-HQ 256 (nvae_celebahq256.py) with spectral coefficient 1e-1,
learning rate 8e-3 and 200 epochs; 24 32-GB V100s, about 160 hours. jaxgen: not run yet (needs an accelerator).
"""
from experiments.configs import nvae_celebahq256


def get_config(arg=None):
  config = nvae_celebahq256.get_config(train_images=63_000, epochs=200)
  config.dataset = "folder:ffhq256"  # what experiments.prepare_data wrote (--dest)
  config.model.update(weight_decay_norm=1e-1)
  config.optimizer = dict(config.optimizer, lr=8e-3, end_lr_factor=1e-4 / 8e-3)  # official --learning_rate_min 1e-4
  if arg == "smoke":
    nvae_celebahq256.smoke(config)
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of nvae_ffhq256; use :smoke.")
  return config
