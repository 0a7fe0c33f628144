r"""StyleGAN2 (Karras et al. 2020) on the bundled MNIST digits: the no-download GAN quickstart. No paper number
applies; jaxgen: offline FID 32.4 at step 3,000 (8.7 min on 2 CPU cores, +3.7 min once for the offline classifier).

python -m experiments.train --config=experiments/configs/stylegan2_quickstart.py --workdir=/tmp/stylegan2
python -m experiments.sample --config=experiments/configs/stylegan2_quickstart.py --workdir=/tmp/stylegan2

The stylegan2-ada-pytorch `auto` recipe at reduced width (0.6M parameters) with DiffAugment. `:ada` swaps DiffAugment
for StyleGAN2-ADA (pipeline 'bgc', target 0.6, p adjusted every 4 steps, ada_kimg 20), `:noaug` trains without
augmentation (README, "StyleGAN2", compares the three on one budget); `:smoke` is a seconds-long check (`:ada,smoke`).
"""
import ml_collections

ADA_KIMG = 20  # p may move by 1 in 20k images: the official 500 is for runs ~100x longer than this one


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.compute_dtype, config.matmul_precision = "float32", "default"  # README, "Precision"
  config.dataset = "digits"  # 10k train / 2k test real MNIST digits shipped with jaxgen
  config.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir (None: TFDS default)
  config.batch_size, config.total_steps = 32, 3000
  config.model_name = "gan.stylegan2"
  config.model = dict(image_shape=(28, 28, 1), z_dim=128, w_dim=128, mapping_layers=2, channel_base=1024,
                      channel_max=64, mbstd_group_size=4, r1_gamma=0.1, r1_interval=16, pl_weight=2.0,
                      pl_interval=4, style_mixing_prob=0.9, ema_kimg=2.0, ema_rampup=0.05,
                      diffaugment="color,translation,cutout")  # DiffAugment: Zhao et al. 2020
  config.optimizer = dict(generator=dict(lr=0.0025), discriminator=dict(lr=0.0025), betas=(0.0, 0.99), eps=1e-8)
  config.log_every, config.eval_every, config.ckpt_every = 100, 1000, 500
  config.eval_examples = 0  # 0: the whole test split (2000 digits) as the real set
  config.sample_metrics = dict(num_samples=0)  # 0: as many samples as real images
  config.num_samples = 64
  config.figures = dict(psis=(0.0, 0.25, 0.5, 0.75, 1.0), num=10, mix=5)  # experiments.sample
  variants = set(arg.split(",")) if arg else set()
  if variants - {"smoke", "ada", "noaug"}:
    raise ValueError(f"Unknown variant {arg!r} of stylegan2_quickstart; use :smoke, :ada, :noaug or e.g. :ada,smoke.")
  if variants >= {"ada", "noaug"}:
    raise ValueError("Choose one of :ada and :noaug for stylegan2_quickstart.")
  if "ada" in variants:  # StyleGAN2-ADA's default: the 'bgc' pipeline, target 0.6, p adjusted every 4 steps
    config.model = dict(config.model, diffaugment="", augment="ada", augpipe="bgc", ada_target=0.6, ada_interval=4,
                        ada_kimg=ADA_KIMG)
  if "noaug" in variants:
    config.model = dict(config.model, diffaugment="")
  if "smoke" in variants:  # toy sizes, every regulariser every 2 steps, the official default lr and gamma
    config.batch_size, config.total_steps = 4, 3
    config.model = dict(config.model, z_dim=16, w_dim=16, channel_base=64, channel_max=8, mbstd_group_size=2,
                        r1_gamma=10.0, r1_interval=2, pl_interval=2, ema_kimg=0.01)
    config.optimizer = dict(config.optimizer, generator=dict(lr=0.002), discriminator=dict(lr=0.002))
    config.log_every, config.eval_every, config.ckpt_every = 1, 3, 3
    config.eval_examples, config.num_samples = 16, 4
    config.sample_metrics = dict(num_samples=16, batch_size=16, classifier_steps=5, classifier_examples=64,
                                 classifier_widths=(8,), classifier_embed_dim=8)
  return config
