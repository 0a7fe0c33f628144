r"""StyleGAN2 on the bundled MNIST digits: the no-download GAN quickstart, a few minutes on 2 CPU cores.

python -m experiments.train --config=experiments/configs/stylegan2_quickstart.py --workdir=/tmp/stylegan2
python -m experiments.sample --config=experiments/configs/stylegan2_quickstart.py --workdir=/tmp/stylegan2

A small StyleGAN2 (not an official config: the stylegan2-ada `auto` recipe at reduced width, 128-d z and w,
2 mapping layers, 32-64 channels) on 10k 28x28 digits zero-padded to 32x32. Every StyleGAN2 ingredient is on:
lazy R1 every 16 D steps, path length every 4 G steps, style mixing 0.9, G EMA with ramp-up. Evaluation reports
FID / KID / precision / recall of 2000 samples against the 2000 test digits in the features of jaxgen's offline
classifier (trained once on the digits and cached, see jaxgen.metrics.sample_quality): no paper number applies.
`:smoke` is a seconds-long check.

Known limitation (measured, 2 CPU cores): at this width and budget the GAN mode-collapses. FID / precision /
recall 164.0 / 0.11 / 0.10 at initialisation, 92.6 / 0.97 / 0.00 at step 750, 180.9 / 0.21 / 0.00 at step 1500
(2000 samples; 1500 steps = about 4 min of training on a quiet machine, 156 ms per amortised step, 34 s
compile). Every sample is one stroke-like digit that changes between evaluations (mode hopping). The
implementation is checked against the official code (whole-model G, D and R1 gradients equal those with XLA's
convolutions, tests/gan/test_stylegan2.py); what was tried without removing the collapse by step 500 (recall
<= 0.002 in 1000 samples): r1_gamma 1 and 10, g_lr = d_lr = 0.001, pl_weight 0, pl_weight 0 with no style
mixing, channels 64-128, mbstd group 32, the official `cifar` recipe at this width (D 'orig', mbstd 32,
gamma 0.01, no PL, no mixing), and class conditioning (num_classes=10: the generator ignores the label too,
although D's score drops by 1 for real digits with the wrong label). Diagnosis: G loses its sensitivity to w
within the first ~250 steps (path length |J_w^T y| 0.84 at init -> 0.12; pixel std across z 1.46 -> 0.13, while
the styles still vary by ~40% across z), and D's minibatch-stddev feature is too small on MNIST (0.08 for a real
batch, with D's 4x4 features at RMS 0.35) to penalise it: D scores a batch of one repeated real digit as high
as a varied batch.
"""
import ml_collections


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = "digits"  # 10k train / 2k test real MNIST digits shipped with jaxgen
  config.data_dir = ml_collections.config_dict.placeholder(str)  # TFDS data_dir (None: TFDS default)
  config.batch_size, config.total_steps = 32, 1500
  config.model_name = "gan.stylegan2"
  config.model = dict(image_shape=(28, 28, 1), z_dim=128, w_dim=128, mapping_layers=2, channel_base=1024,
                      channel_max=64, mbstd_group_size=4, r1_gamma=0.1, r1_interval=16, pl_weight=2.0,
                      pl_interval=4, style_mixing_prob=0.9, g_lr=0.0025, d_lr=0.0025, betas=(0.0, 0.99),
                      ema_kimg=2.0, ema_rampup=0.05)
  config.optimizer = {}  # a GAN's two Adam optimisers are set in config.model (g_lr, d_lr, betas)
  config.log_every, config.eval_every, config.ckpt_every = 50, 750, 250
  config.eval_examples = 0  # 0: the whole test split (2000 digits) as the real set
  config.sample_metrics = dict(num_samples=0)  # 0: as many samples as real images
  config.num_samples = 64
  if arg == "smoke":
    config.batch_size, config.total_steps = 4, 3
    config.model = dict(image_shape=(28, 28, 1), z_dim=16, w_dim=16, mapping_layers=2, channel_base=64,
                        channel_max=8, mbstd_group_size=2, r1_interval=2, pl_interval=2, ema_kimg=0.01,
                        ema_rampup=0.05)
    config.log_every, config.eval_every, config.ckpt_every = 1, 3, 3
    config.eval_examples, config.num_samples = 16, 4
    config.sample_metrics = dict(num_samples=16, batch_size=16, classifier_steps=5, classifier_examples=64,
                                 classifier_widths=(8,), classifier_embed_dim=8)
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of stylegan2_quickstart; use :smoke.")
  return config
