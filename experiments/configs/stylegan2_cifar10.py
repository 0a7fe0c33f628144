r"""StyleGAN2 (Karras et al. 2020) on CIFAR-10: the official stylegan2-ada-pytorch `--cfg=cifar` configuration, in
fp32. The papers report FID 2.92 unconditional (ADA paper, Table 3) and 2.42 class-conditional (stylegan2-ada README),
both with ADA (`--aug=ada`, target 0.6, pipeline 'bgc'), as here (config.model.augment). Not yet trained by jaxgen.

python -m experiments.train --config=experiments/configs/stylegan2_cifar10.py --workdir=/tmp/stylegan2_cifar10 \
  --config.data_dir=/path/to/tensorflow_datasets   # or ...py:smoke (seconds), ...py:bench (speed)
  # class-conditional, as the released cifar10.pkl: add --config.model.num_classes=10

G 19.9M, D 20.7M parameters. FID as fid50k_full (protocol "stylegan2-ada": 50k samples, the 50k training images,
NVIDIA's Inception): --config.sample_metrics.inception_path=FILE.npz; protocol='' uses the offline classifier.
`:bench` is the same networks at batch 8 (BENCHMARKS.md); `:smoke` is a seconds-long check.
"""
import ml_collections

# stylegan2-ada-pytorch train.py cfg_specs['cifar'] (ref_gpus=2, mb=64, mbstd=32, fmaps=1, lrate=0.0025, gamma=0.01,
# ema=500, ramp=0.05, map=2, kimg=100000) and its `if cfg == 'cifar'` branch (pl_weight=0, style_mixing_prob=0,
# D 'orig'), as --fp32=1 (no fp16 layers, no conv clamp). Remaining differences, none measured:
# - ADA (the official default --aug=ada: 'bgc', target 0.6, interval 4, 500 kimg) without the mirrored dataset
#   (--mirror is off in the official cifar runs too).
# - Generated labels of a conditional model are the real batch's labels permuted (official: drawn from the
#   dataset); path-length mean and minibatch-stddev groups over the global batch (official: per GPU; same group
#   size, and pl_weight = 0 here).
# - Precision/recall use the Inception (or classifier) features of the FID (official pr50k3: VGG16, float16) and
#   the FID covariance is unbiased (official: biased, negligible at 50k).


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.compute_dtype, config.matmul_precision = "float32", "default"  # README, "Precision"
  config.dataset = "cifar10"  # TFDS name
  config.data_dir = ml_collections.config_dict.placeholder(str)  # passed to TFDS (None: its default)
  config.batch_size, config.total_steps = 64, 1_562_500  # kimg=100000
  config.model_name = "gan.stylegan2"
  config.model = dict(image_shape=(32, 32, 3), num_classes=0, z_dim=512, w_dim=512, mapping_layers=2,
                      channel_base=32768, channel_max=512, d_architecture="orig", mbstd_group_size=32,
                      r1_gamma=0.01, r1_interval=16, pl_weight=0.0, pl_interval=4, style_mixing_prob=0.0,
                      ema_kimg=500.0, ema_rampup=0.05, augment="ada", augpipe="bgc", ada_target=0.6, ada_interval=4,
                      ada_kimg=500.0)
  config.optimizer = dict(generator=dict(lr=0.0025), discriminator=dict(lr=0.0025), betas=(0.0, 0.99), eps=1e-8)
  config.log_every, config.eval_every, config.ckpt_every = 100, 50_000, 10_000
  config.eval_split, config.eval_examples = "train", 0  # FID against the training images, as the official fid50k_full
  config.sample_metrics = dict(protocol="stylegan2-ada")  # fid50k_full: 50k samples, whole train split
  config.num_samples = 64
  config.figures = dict(psis=(0.0, 0.25, 0.5, 0.75, 1.0), num=10, mix=5)  # experiments.sample
  if arg == "bench":
    config.batch_size = 8
    config.model = dict(config.model, augment="noaug")  # the networks' speed, as BENCHMARKS.md measured it
    config.sample_metrics = dict(protocol="")  # times training steps only: no Inception weights needed
  elif arg == "smoke":
    config.batch_size, config.total_steps = 4, 2
    # noaug: ADA's step is compiled and checked in tests/gan/test_ada.py; this smoke run stays a seconds-long one
    config.model = dict(config.model, z_dim=16, w_dim=16, channel_base=64, channel_max=8, r1_interval=2,
                        augment="noaug")
    config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
    config.eval_split, config.eval_examples, config.num_samples = "test", 16, 4
    config.sample_metrics = dict(num_samples=16, batch_size=16, classifier_steps=5, classifier_examples=64,
                                 classifier_widths=(8,), classifier_embed_dim=8)
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of stylegan2_cifar10; use :smoke or :bench.")
  return config
