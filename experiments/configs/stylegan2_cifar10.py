r"""StyleGAN2 on CIFAR-10: the official stylegan2-ada-pytorch `--cfg=cifar` configuration, in fp32.

python -m experiments.train --config=experiments/configs/stylegan2_cifar10.py --workdir=/tmp/stylegan2_cifar10 \
  --config.data_dir=/path/to/tensorflow_datasets   # or ...py:smoke (seconds), ...py:bench (speed)
  # class-conditional, as the released cifar10.pkl: add --config.model.num_classes=10

stylegan2-ada-pytorch train.py, cfg_specs['cifar'] = dict(ref_gpus=2, kimg=100000, mb=64, mbstd=32, fmaps=1,
lrate=0.0025, gamma=0.01, ema=500, ramp=0.05, map=2) and the `if cfg == 'cifar'` branch (pl_weight=0,
style_mixing_prob=0, D architecture 'orig'); channel_base = fmaps * 32768, channel_max 512, Adam betas (0, 0.99),
eps 1e-8, lazy R1 every 16 steps. G has 19.9M and D 20.7M parameters (unconditional). Differences: fp32 (as
`--fp32=1`: no fp16 layers, no conv clamp) and no ADA augmentation (the official default `--aug=ada` is not
implemented in jaxgen), so expect worse than the papers' numbers: FID 2.42 class-conditional (stylegan2-ada README
abstract) and 2.92 unconditional (ADA paper, Table 3; not re-checked by jaxgen), both with ADA, Inception FID
against the 50k training images after 100M images (1.56M steps of 64) on 2 GPUs. For Inception FID set
--config.sample_metrics.extractor=inception --config.sample_metrics.inception_path=inception_fid.npz (README).
`:bench` is the same networks unconditional at batch 8 (BENCHMARKS.md: one amortised step = G main + D main +
R1 every 16 steps + EMA).
"""
import ml_collections


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = "cifar10"  # TFDS name
  config.data_dir = ml_collections.config_dict.placeholder(str)  # passed to TFDS (None: its default)
  config.batch_size, config.total_steps = 64, 1_562_500  # kimg=100000
  config.model_name = "gan.stylegan2"
  config.model = dict(image_shape=(32, 32, 3), num_classes=0, z_dim=512, w_dim=512, mapping_layers=2,
                      channel_base=32768, channel_max=512, d_architecture="orig", mbstd_group_size=32,
                      r1_gamma=0.01, r1_interval=16, pl_weight=0.0, pl_interval=4, style_mixing_prob=0.0,
                      g_lr=0.0025, d_lr=0.0025, betas=(0.0, 0.99), eps=1e-8, ema_kimg=500.0, ema_rampup=0.05)
  config.optimizer = {}  # a GAN's two Adam optimisers are set in config.model (g_lr, d_lr, betas, eps)
  config.log_every, config.eval_every, config.ckpt_every = 100, 50_000, 10_000
  config.eval_split, config.eval_examples = "train", 0  # FID against the training images, as the official fid50k_full
  config.sample_metrics = dict(num_samples=50_000)
  config.num_samples = 64
  if arg == "bench":
    config.batch_size = 8
  elif arg == "smoke":
    config.batch_size, config.total_steps = 4, 2
    config.model = dict(image_shape=(32, 32, 3), z_dim=16, w_dim=16, mapping_layers=2, channel_base=64,
                        channel_max=8, d_architecture="orig", mbstd_group_size=32, r1_gamma=0.01, r1_interval=2,
                        pl_weight=0.0, style_mixing_prob=0.0, ema_kimg=500.0, ema_rampup=0.05)
    config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
    config.eval_split, config.eval_examples, config.num_samples = "test", 16, 4
    config.sample_metrics = dict(num_samples=16, batch_size=16, classifier_steps=5, classifier_examples=64,
                                 classifier_widths=(8,), classifier_embed_dim=8)
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of stylegan2_cifar10; use :smoke or :bench.")
  return config
