r"""StyleGAN2 (Karras et al. 2020) on MNIST, 28x28 digits zero-padded to 32x32: the stylegan2-ada-pytorch `auto`
recipe for one GPU. No paper reports StyleGAN2 on MNIST; `:small` scores offline FID 1.11 (README.md's table).

python -m experiments.train --config=experiments/configs/stylegan2_mnist.py --workdir=/tmp/stylegan2_mnist \
  --config.data_dir=/path/to/tensorflow_datasets        # or ...py:smoke (seconds), ...py:small (CPU, ~1 h)

`train.py --cfg=auto --gpus=1` at resolution 32: batch 32, mbstd group 4, fmaps 0.5 (channel_base 16384), lr 0.0025,
gamma = 0.0002 * 32^2 / 32 = 0.0064, EMA 10 kimg with ramp-up 0.05, 2 mapping layers; fp32, no ADA. FID / KID /
precision / recall use jaxgen's offline MNIST classifier against the 10k test digits (jaxgen.metrics.sample_quality).
`:small` is the quickstart's 0.6M-parameter GAN (DiffAugment) on all 60k digits for 20,000 steps of 32 (74 min on 2
CPU cores; FID 41.7 / 16.4 / 3.54 / 1.55 / 1.10 at steps 2.5k / 5k / 10k / 15k / 20k with 2000 samples, 1.11 with
--config.sample_metrics.num_samples=10000 at the end); `:smoke` is a seconds-long check.
"""
import ml_collections

from experiments.configs import stylegan2_quickstart


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.compute_dtype, config.matmul_precision = "float32", "default"  # README, "Precision"
  config.dataset = "mnist"  # TFDS name
  config.data_dir = ml_collections.config_dict.placeholder(str)  # passed to TFDS (None: its default)
  config.batch_size, config.total_steps = 32, 200_000  # 6.4M images
  config.model_name = "gan.stylegan2"
  config.model = dict(image_shape=(28, 28, 1), z_dim=512, w_dim=512, mapping_layers=2, channel_base=16384,
                      channel_max=512, mbstd_group_size=4, r1_gamma=0.0064, r1_interval=16, pl_weight=2.0,
                      pl_interval=4, style_mixing_prob=0.9, ema_kimg=10.0, ema_rampup=0.05)
  config.optimizer = dict(generator=dict(lr=0.0025), discriminator=dict(lr=0.0025), betas=(0.0, 0.99), eps=1e-8)
  config.log_every, config.eval_every, config.ckpt_every = 100, 10_000, 5_000
  config.eval_examples = 0  # 0: the whole test split (10k digits) as the real set
  config.sample_metrics = dict(num_samples=10_000)
  config.num_samples = 64
  config.figures = dict(psis=(0.0, 0.25, 0.5, 0.75, 1.0), num=10, mix=5)  # experiments.sample
  if arg == "smoke":
    config.batch_size, config.total_steps = 4, 2
    config.model = dict(config.model, z_dim=16, w_dim=16, channel_base=64, channel_max=8, mbstd_group_size=2,
                        r1_interval=2, pl_interval=2, ema_kimg=0.01)
    config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
    config.eval_examples, config.num_samples = 16, 4
    config.sample_metrics = dict(num_samples=16, batch_size=16, classifier_steps=5, classifier_examples=64,
                                 classifier_widths=(8,), classifier_embed_dim=8)
  elif arg == "small":  # the quickstart's 0.6M-parameter GAN on all of MNIST, with DiffAugment, for CPU budgets
    config.total_steps = 20_000  # 640k images
    quickstart = stylegan2_quickstart.get_config()
    config.model, config.optimizer = dict(quickstart.model), dict(quickstart.optimizer)
    config.log_every, config.eval_every, config.ckpt_every = 500, 2500, 2500
    config.sample_metrics = dict(num_samples=2000)  # intermediate evaluations; `evaluate` can use 10k at the end
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of stylegan2_mnist; use :smoke or :small.")
  return config
