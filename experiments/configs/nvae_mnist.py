r"""NVAE on dynamically binarized MNIST. Paper: 78.01 nats (Vahdat & Kautz 2020, Table 1; NLL by importance
weighting with 1000 samples), after 400 epochs on 2 GPUs (about 21 hours on V100s).

python -m experiments.train --config=experiments/configs/nvae_mnist.py --workdir=/tmp/nvae_mnist \
  --config.data_dir=/path/to/tensorflow_datasets          # or ...py:smoke for a seconds-long check
python -m experiments.evaluate --config=experiments/configs/nvae_mnist.py --workdir=/tmp/nvae_mnist \
  --config.data_dir=/path/to/tensorflow_datasets --config.iw_samples=1000   # the paper's figure: eval/iw_nll_nats

The official README's MNIST command: 2 latent scales of 10 groups (ada_groups: 10 and 5) of 20 latents, 32
channels, 2 pre/post-processing blocks of 3 cells, 2 cells per conditional, SE, residual normal posteriors, no
flows, lambda = 1e-2; 28x28 images zero-padded to 32x32 and binarized as Bernoulli(x / 255) at every read (train
and test, official datasets.py `Binarize`); batch 2 x 200 = 400 (150 steps per epoch, 60k steps); Adamax 1e-2,
weight decay 3e-4, eps 1e-3, 5 warm-up epochs, cosine to 1e-4; KL warm-up over 30% of training (kl_anneal_portion
0.3, kl_const_portion 1e-4, kl_const_coeff 1e-4).

`:small` is the quickstart's model (16 channels, 2 scales of 3 + 1 groups of 8 latents, 1.3M parameters) trained
for 3,000 steps of 64 on real MNIST: negative ELBO 88.35 nats, IW NLL 85.72 nats (K=10) on the 10k test images
(2 CPU cores, ~1h50 on a shared machine).
"""
import ml_collections

from experiments.configs import nvae_quickstart

STEPS_PER_EPOCH = 150  # 60k images / (2 GPUs x 200)


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = "mnist"  # TFDS name
  config.data_dir = ml_collections.config_dict.placeholder(str)  # passed to TFDS (None: its default)
  config.binarize = "dynamic"
  config.batch_size, config.total_steps = 400, 400 * STEPS_PER_EPOCH
  config.model_name = "vae.nvae"
  config.model = dict(
      image_size=28, image_channels=1, binarized=True, pad=2, num_channels_enc=32, num_channels_dec=32,
      num_preprocess_blocks=2, num_preprocess_cells=3, num_postprocess_blocks=2, num_postprocess_cells=3,
      num_latent_scales=2, num_groups_per_scale=10, ada_groups=True, num_latent_per_group=20,
      num_cell_per_cond_enc=2, num_cell_per_cond_dec=2, num_nf=0, use_se=True, res_dist=True,
      weight_decay_norm=1e-2,
      kl_anneal_steps=int(0.3 * config.total_steps), kl_const_steps=int(1e-4 * config.total_steps))
  config.optimizer = dict(name="adamax", lr=1e-2, eps=1e-3, l2_weight_decay=3e-4, warmup_steps=5 * STEPS_PER_EPOCH,
                          schedule="cosine", end_lr_factor=1e-2)
  config.skip_grad_norm = 1e5  # skip (and count) updates with a larger gradient norm (typical: 1e2 to 1e4)
  config.log_every, config.eval_every, config.ckpt_every = 100, 3_000, 3_000
  config.eval_batch_size, config.eval_examples = 500, 0  # 0: the whole test split
  config.iw_samples, config.iw_chunk_size = 10, 1  # training-time evaluations (official: 10); the paper: 1000
  config.num_samples, config.sample_temperature = 64, 1.0
  config.readjust_bn_iterations = 50
  if arg == "smoke":
    config.batch_size, config.total_steps = 8, 2
    config.model = dict(
        image_size=28, image_channels=1, binarized=True, pad=2, num_channels_enc=4, num_channels_dec=4,
        num_preprocess_blocks=2, num_preprocess_cells=1, num_postprocess_blocks=2, num_postprocess_cells=1,
        num_latent_scales=1, num_groups_per_scale=2, num_latent_per_group=2,
        num_cell_per_cond_enc=1, num_cell_per_cond_dec=1, kl_anneal_steps=1)
    config.optimizer = dict(config.optimizer, warmup_steps=1)
    config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
    config.eval_batch_size, config.eval_examples, config.num_samples = 8, 16, 4
    config.iw_samples, config.readjust_bn_iterations = 2, 2
  elif arg == "small":  # the quickstart's 1.3M-parameter model on real MNIST, for CPU budgets
    config.batch_size, config.total_steps = 64, 3000
    config.model = dict(nvae_quickstart.get_config().model, kl_anneal_steps=900)  # 30% of the steps, as above
    config.optimizer = dict(config.optimizer, warmup_steps=150)
    config.log_every, config.eval_every, config.ckpt_every = 100, 1000, 500
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of nvae_mnist; use :smoke or :small.")
  return config
