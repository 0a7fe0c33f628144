r"""NVAE on CIFAR-10 (8-bit). Paper: 2.91 bits/dim (Vahdat & Kautz 2020, Table 1; importance-weighted, K=1000),
after about 55 hours of training on V100s.

python -m experiments.train --config=experiments/configs/nvae_cifar10.py --workdir=/tmp/nvae_cifar10 \
  --config.data_dir=/path/to/tensorflow_datasets
python -m experiments.evaluate --config=experiments/configs/nvae_cifar10.py --workdir=/tmp/nvae_cifar10 \
  --config.data_dir=/path/to/tensorflow_datasets --config.iw_samples=1000   # the paper's figure: eval/iw_nll_bpd
python -m experiments.benchmark --config=experiments/configs/nvae_cifar10.py:bench   # training-step throughput

Variants: `:smoke`, a seconds-long CPU check; `:bench`, the size the official code was timed at (batch 8). FID as
NVAE measures it: --evals=sample_quality (protocol "nvae") with --config.sample_metrics.inception_path=pt_inception.npz.
jaxgen: not yet trained at this size (README.md's results table; `:bench` throughput in BENCHMARKS.md).
"""
import ml_collections

# Remaining differences from NVlabs/NVAE (train.py, evaluate.py, utils.py), none measured:
# - fp32 throughout (official: fp16 autocast with a GradScaler that skips only inf/NaN steps); jaxgen also skips
#   updates with a gradient norm above skip_grad_norm.
# - KL-balancing coefficients from the global batch of 256 (official: per GPU, 32 images). BatchNorm statistics come
#   from the global batch in both (official SyncBatchNorm); flax tracks the biased batch variance (torch: unbiased).
# - Cosine lr decay per step after the warm-up (official: stepped once per epoch).
# - Samples for grids and figures: temperature also scales the pixels' logistic noise and channels are coupled to
#   the rounded earlier channels (official: latents only, continuous coupling); 50 BN re-adjustment passes per
#   progress grid (official: 500). The "nvae" FID protocol follows the official one, with means rounded to 8 bits.

STEPS_PER_EPOCH = 195  # 50k images / (8 GPUs x 32)


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.compute_dtype, config.matmul_precision = "float32", "default"  # README, "Precision"
  config.dataset = "cifar10"  # TFDS name
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.batch_size, config.total_steps = 256, 400 * STEPS_PER_EPOCH  # official: 8 GPUs x 32, 400 epochs
  config.model_name = "vae.nvae"
  # The official README's CIFAR-10 command: 1 latent scale of 30 groups of 20 latents, one posterior flow per group
  # (the paper's "with flow"), 10-component discretized logistic mixture, KL warm-up over 30% of training.
  config.model = dict(
      image_shape=(32, 32, 3), num_bits=8, num_channels_enc=128, num_channels_dec=128,
      num_preprocess_blocks=1, num_preprocess_cells=2, num_postprocess_blocks=1, num_postprocess_cells=2,
      num_latent_scales=1, num_groups_per_scale=30, num_latent_per_group=20, num_cell_per_cond_enc=2,
      num_cell_per_cond_dec=2, num_mixture_dec=10, num_nf=1, use_se=True, res_dist=True,
      weight_decay_norm=1e-2,
      kl_anneal_steps=int(0.3 * config.total_steps), kl_const_steps=int(1e-4 * config.total_steps))
  # Official optimiser: torch Adamax(lr 1e-2, weight_decay 3e-4, eps 1e-3), 5 warm-up epochs, cosine to 1e-4.
  config.optimizer = dict(name="adamax", lr=1e-2, eps=1e-3, l2_weight_decay=3e-4, warmup_steps=5 * STEPS_PER_EPOCH,
                          schedule="cosine", end_lr_factor=1e-2)
  # Official CIFAR-10 training transform (datasets.py `_data_transforms_cifar10`): `RandomHorizontalFlip()` (p = 1/2)
  # and nothing else; evaluation images are not transformed. Drawn in the input pipeline from (seed, step).
  config.augment = dict(flip=True, translate=0.0)
  config.skip_grad_norm = 1e6  # skip (and count) updates with a larger gradient norm (loss in nats per image)
  config.log_every, config.eval_every, config.ckpt_every = 100, 3_900, 3_900
  config.eval_batch_size, config.eval_examples = 100, 0  # 0: the whole test split
  config.iw_samples, config.iw_chunk_size = 10, 1  # training-time evaluations (official: 10); the paper: 1000
  config.num_samples, config.sample_temperature = 64, 0.7
  config.readjust_bn_iterations = 50  # BN re-adjustment passes before each sample grid
  config.figures = dict(temperatures=(0.0, 0.25, 0.5, 0.75, 1.0), num=10, readjust_bn_iterations=500)  # paper: 500
  config.sample_metrics = dict(protocol="nvae")  # BN re-adjusted at sample_temperature (--temp), as evaluate.py
  if arg == "bench":
    config.batch_size = 8
    config.model = dict(config.model, num_channels_enc=32, num_channels_dec=32, num_groups_per_scale=5,
                        num_cell_per_cond_enc=1, num_cell_per_cond_dec=1)
  elif arg == "smoke":
    config.batch_size, config.total_steps = 8, 2
    config.model = dict(config.model, num_channels_enc=4, num_channels_dec=4, num_preprocess_cells=1,
                        num_postprocess_cells=1, num_groups_per_scale=2, num_latent_per_group=2,
                        num_cell_per_cond_enc=1, num_cell_per_cond_dec=1, num_mixture_dec=2, kl_anneal_steps=1,
                        kl_const_steps=0)
    config.optimizer = dict(config.optimizer, warmup_steps=1)
    config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
    config.eval_batch_size, config.eval_examples, config.num_samples = 8, 16, 4
    config.iw_samples, config.readjust_bn_iterations = 2, 2
    config.figures = dict(config.figures, num=2, readjust_bn_iterations=2)
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of nvae_cifar10; use :smoke or :bench.")
  return config
