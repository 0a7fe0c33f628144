r"""StyleGAN2 on MNIST (28x28 digits zero-padded to 32x32), the stylegan2-ada-pytorch `auto` recipe for one GPU.

python -m experiments.train --config=experiments/configs/stylegan2_mnist.py --workdir=/tmp/stylegan2_mnist \
  --config.data_dir=/path/to/tensorflow_datasets        # or ...py:smoke (seconds), ...py:small (CPU, ~1 h)

stylegan2-ada-pytorch `train.py --cfg=auto --gpus=1` at resolution 32 (cfg_specs['auto'] and its formulas):
batch 32, mbstd group 4, fmaps 0.5 (channel_base 16384: 512 channels at every resolution up to 32), lr 0.0025,
gamma = 0.0002 * 32^2 / 32 = 0.0064, EMA 10 kimg with ramp-up 0.05, 2 mapping layers; path length and style
mixing at their defaults; fp32 (no conv clamp), no ADA augmentation. No paper reports StyleGAN2 on MNIST:
FID / KID / precision / recall here use jaxgen's offline MNIST classifier (jaxgen.metrics.sample_quality), against
the 10k test digits; the README's results table has jaxgen's figure and its budget.

`:small` trains the quickstart's 0.6M-parameter GAN (32-64 channels, DiffAugment color,translation,cutout) on all
60k digits for 20,000 steps of 32 (640k images, 74 min wall on 2 CPU cores), the size a CPU can afford; 10k
training digits score FID 0.11 against the test set in the same features. Measured (FID / precision / recall,
2000 samples against the 10k test digits): 41.7 / 0.85 / 0.04 at step 2500, 16.4 / 0.80 / 0.35 at 5000,
3.54 / 0.79 / 0.71 at 10,000, 1.55 / 0.83 / 0.80 at 15,000, 1.10 / 0.84 / 0.79 at 20,000; `evaluate` with
--config.sample_metrics.num_samples=10000 gives FID 1.11, KID 0.14, precision 0.84, recall 0.73.
"""
import ml_collections

from experiments.configs import stylegan2_quickstart


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = "mnist"  # TFDS name
  config.data_dir = ml_collections.config_dict.placeholder(str)  # passed to TFDS (None: its default)
  config.batch_size, config.total_steps = 32, 200_000  # 6.4M images
  config.model_name = "gan.stylegan2"
  config.model = dict(image_shape=(28, 28, 1), z_dim=512, w_dim=512, mapping_layers=2, channel_base=16384,
                      channel_max=512, mbstd_group_size=4, r1_gamma=0.0064, r1_interval=16, pl_weight=2.0,
                      pl_interval=4, style_mixing_prob=0.9, g_lr=0.0025, d_lr=0.0025, betas=(0.0, 0.99),
                      ema_kimg=10.0, ema_rampup=0.05)
  config.optimizer = {}  # a GAN's two Adam optimisers are set in config.model (g_lr, d_lr, betas)
  config.log_every, config.eval_every, config.ckpt_every = 100, 10_000, 5_000
  config.eval_examples = 0  # 0: the whole test split (10k digits) as the real set
  config.sample_metrics = dict(num_samples=10_000)
  config.num_samples = 64
  if arg == "smoke":
    config.batch_size, config.total_steps = 4, 2
    config.model = dict(image_shape=(28, 28, 1), z_dim=16, w_dim=16, mapping_layers=2, channel_base=64,
                        channel_max=8, mbstd_group_size=2, r1_interval=2, pl_interval=2, ema_kimg=0.01,
                        ema_rampup=0.05)
    config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
    config.eval_examples, config.num_samples = 16, 4
    config.sample_metrics = dict(num_samples=16, batch_size=16, classifier_steps=5, classifier_examples=64,
                                 classifier_widths=(8,), classifier_embed_dim=8)
  elif arg == "small":  # the quickstart's 0.6M-parameter GAN on all of MNIST, with DiffAugment, for CPU budgets
    config.total_steps = 20_000  # 640k images
    config.model = dict(stylegan2_quickstart.get_config().model)  # DiffAugment included
    config.log_every, config.eval_every, config.ckpt_every = 500, 2500, 2500
    config.sample_metrics = dict(num_samples=2000)  # intermediate evaluations; `evaluate` can use 10k at the end
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of stylegan2_mnist; use :smoke or :small.")
  return config
