r"""StyleGAN2 on the bundled MNIST digits: the no-download GAN quickstart, 9 minutes on 2 CPU cores.

python -m experiments.train --config=experiments/configs/stylegan2_quickstart.py --workdir=/tmp/stylegan2
python -m experiments.sample --config=experiments/configs/stylegan2_quickstart.py --workdir=/tmp/stylegan2

A small StyleGAN2 (not an official config: the stylegan2-ada-pytorch `auto` recipe at reduced width, 128-d z and
w, 2 mapping layers, 32-64 channels, 0.6M parameters) on 10k 28x28 digits zero-padded to 32x32, with DiffAugment
(color, translation, cutout: Zhao et al. 2020) on every image D sees. Every StyleGAN2 ingredient is on: lazy R1
every 16 D steps, path length every 4 G steps, style mixing 0.9, G EMA with ramp-up. Evaluation reports FID / KID /
precision / recall of 2000 samples against the 2000 test digits in the features of jaxgen's offline classifier
(trained once on the digits and cached, see jaxgen.metrics.sample_quality; 2000 real training digits score FID
0.44 there): no paper number applies. Training takes 8.7 min (about 145 ms per amortised step), plus 3.7 min
once for the offline classifier at the first evaluation. `:smoke` is a seconds-long check.

Measured in a fresh clone on 2 quiet CPU cores (2000 samples): FID / precision / recall 164.0 / 0.11 / 0.10 at
initialisation, 99.95 / 0.93 / 0.00 at step 1000, 53.8 / 0.84 / 0.08 at step 2000, 32.4 / 0.71 / 0.07 at step 3000
(varied digits). The first ~1000 steps are a collapsed phase, every sample one digit that changes between
evaluations (mode hopping): the official stylegan2-ada-pytorch networks and loss behave the same at this config
and data (two seeds, 750 steps: recall 0.0035 and 0.0005, every sample the same "0"), so this is StyleGAN2's early
training, not a jaxgen bug. Without DiffAugment the collapse outlasts a CPU budget: 3000 steps ended at FID 132.6,
recall 0.00.
"""
import ml_collections


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = "digits"  # 10k train / 2k test real MNIST digits shipped with jaxgen
  config.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir (None: TFDS default)
  config.batch_size, config.total_steps = 32, 3000
  config.model_name = "gan.stylegan2"
  config.model = dict(image_shape=(28, 28, 1), z_dim=128, w_dim=128, mapping_layers=2, channel_base=1024,
                      channel_max=64, mbstd_group_size=4, r1_gamma=0.1, r1_interval=16, pl_weight=2.0,
                      pl_interval=4, style_mixing_prob=0.9, g_lr=0.0025, d_lr=0.0025, betas=(0.0, 0.99),
                      ema_kimg=2.0, ema_rampup=0.05, diffaugment="color,translation,cutout")
  config.optimizer = {}  # a GAN's two Adam optimisers are set in config.model (g_lr, d_lr, betas)
  config.log_every, config.eval_every, config.ckpt_every = 100, 1000, 500
  config.eval_examples = 0  # 0: the whole test split (2000 digits) as the real set
  config.sample_metrics = dict(num_samples=0)  # 0: as many samples as real images
  config.num_samples = 64
  if arg == "smoke":
    config.batch_size, config.total_steps = 4, 3
    config.model = dict(image_shape=(28, 28, 1), z_dim=16, w_dim=16, mapping_layers=2, channel_base=64,
                        channel_max=8, mbstd_group_size=2, r1_interval=2, pl_interval=2, ema_kimg=0.01,
                        ema_rampup=0.05, diffaugment="color,translation,cutout")
    config.log_every, config.eval_every, config.ckpt_every = 1, 3, 3
    config.eval_examples, config.num_samples = 16, 4
    config.sample_metrics = dict(num_samples=16, batch_size=16, classifier_steps=5, classifier_examples=64,
                                 classifier_widths=(8,), classifier_embed_dim=8)
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of stylegan2_quickstart; use :smoke.")
  return config
