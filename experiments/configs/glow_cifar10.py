r"""Glow on CIFAR-10, the openai/glow setup: 3.35 bits/dim (Kingma & Dhariwal 2018, Table 2).

python -m experiments.train --config=experiments/configs/glow_cifar10.py --workdir=/tmp/glow_cifar10 \
  --config.data_dir=/path/to/tensorflow_datasets          # or ...py:smoke (seconds), ...py:bench (speed)

openai/glow: `--problem cifar10 --n_level 3 --depth 32 --flow_permutation 2 --flow_coupling 1 --learntop --lr 0.001`
on 8 GPUs x 64 images, its default Adamax, raw weights evaluated (remaining differences below the docstring).
`:bench` is the size Glow implementations are timed at (depth 8, 256 channels, LU 1x1 conv, batch 16; BENCHMARKS.md).
jaxgen: not trained yet (README, Results).
"""
import ml_collections

# Remaining differences from openai/glow (train.py, optim.py, model.py), none measured:
# - Adamax's eps sits inside the max (optax) instead of after it (negligible). openai also keeps a Polyak average
#   (decay beta2) but never evaluates it (`# model.polyak_swap()`), so jaxgen evaluates the raw weights
#   (ema_decay = 0) and keeps no average.
# - The learned top prior is one value per channel; openai's edge-biased conv also varies at the 4x4 border.
# - Top prior, label embedding and classifier lack openai's exp(3 logs) output scale (same function class).
# - ActNorm data-dependent init on one batch of 512 (openai: 256 per GPU, rank 0's broadcast); log|det W| in
#   float32 (openai: float64).


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.compute_dtype, config.matmul_precision = "float32", "default"  # README, "Precision"
  config.dataset = "cifar10"  # TFDS name
  config.data_dir = ml_collections.config_dict.placeholder(str)  # passed to TFDS (None: its default)
  config.batch_size, config.total_steps = 512, 200_000  # 8 GPUs x 64 as in openai/glow; ~2000 epochs
  config.model_name = "flows.glow"
  config.model = dict(image_shape=(32, 32, 3), levels=3, depth=32, hidden_channels=512, coupling="affine",
                      permutation="conv", learn_top=True, num_bits=8, remat=True, unroll=1)
  # openai/glow's default Adamax: beta2 = 1 - 1/(iterations per epoch) = 1 - 1/ceil(50k / 512), step size scaled by
  # sqrt(1 - beta2^t); linear warmup over 10 epochs of images (--epochs_warmup 10), then constant; no clipping.
  config.optimizer = dict(name="adamax", lr=1e-3, b1=0.9, b2=1 - 1 / 98, sqrt_b2_correction=True, warmup_steps=977,
                          grad_clip_norm=0.0)
  config.ema_decay = 0.0  # openai/glow evaluates the raw weights (train.py: `# model.polyak_swap()`)
  # openai/glow's default `--dal 1` (data_loaders/get_mnist_cifar.py): Keras (2.2.0, its requirements.txt)
  # `ImageDataGenerator(width_shift_range=0.1, height_shift_range=0.1)`, i.e. each training image shifted by
  # U(-3.2, 3.2) pixels in each direction (0.1 x 32), bilinear (scipy order=1), edges repeated (fill_mode "nearest"),
  # then floored to uint8; no flips (those are `--dal 2`). The test split is not augmented.
  config.augment = dict(flip=False, translate=3.2)
  # CPU only: YNNPACK fuses the coupling networks' matmuls with their neighbours. Interleaved A/B: `:bench` step
  # 4-8% faster, the paper size 2%; glow_mnist 2% slower and NVAE / LMConv 2x slower, so it is not a default.
  config.xla_cpu_options = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}
  config.log_every, config.eval_every, config.ckpt_every = 100, 5_000, 5_000
  config.eval_batch_size, config.eval_examples = 500, 0  # 0: the whole test split
  config.num_samples, config.sample_temperature = 64, 0.7
  config.figures = dict(temperatures=(0.0, 0.25, 0.5, 0.75, 1.0), num=10, pairs=6, interpolation_steps=8)
  if arg == "bench":
    config.batch_size = 16
    # Unrolled: ~1.3x faster on CPU; compiles in ~20 s at this depth.
    config.model.update(depth=8, hidden_channels=256, permutation="conv_lu", remat=False, unroll=8)
  elif arg == "smoke":
    config.batch_size, config.total_steps = 8, 2
    config.model.update(depth=2, hidden_channels=8, remat=False)
    config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
    config.eval_batch_size, config.eval_examples, config.num_samples = 8, 16, 4
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of glow_cifar10; use :smoke or :bench.")
  return config
