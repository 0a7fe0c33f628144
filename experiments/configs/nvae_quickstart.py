r"""NVAE on the bundled MNIST digits, dynamically binarized: the no-download quickstart, minutes on 2 CPU cores.

python -m experiments.train --config=experiments/configs/nvae_quickstart.py --workdir=/tmp/nvae   # or ...py:smoke
python -m experiments.evaluate --config=experiments/configs/nvae_quickstart.py --workdir=/tmp/nvae \
  --config.iw_samples=100        # negative ELBO and importance-weighted NLL (nats and bits/dim) on the 2k test digits
python -m experiments.sample --config=experiments/configs/nvae_quickstart.py --workdir=/tmp/nvae

No paper number (10k digits; nvae_mnist.py has the paper's 78.01 nats). Variants: `:smoke`, a seconds-long check;
`:8bit`, the 8-bit digits with a logistic-mixture decoder (the data the other families model, for experiments.compare).
jaxgen: 94.51 nats negative ELBO, 89.81 nats IW NLL with the evaluate command above (README.md's results table).
"""
import ml_collections


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.compute_dtype, config.matmul_precision = "float32", "default"  # README, "Precision"
  config.dataset = "digits"  # 10k train / 2k test real MNIST digits shipped with jaxgen
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.binarize = "dynamic"  # official datasets.py `Binarize`: Bernoulli(x / 255) at every read
  config.batch_size, config.total_steps = 64, 1000
  config.model_name = "vae.nvae"
  # A small NVAE in the paper's recipe: 2 latent scales of 3 + 1 groups of 8 latents, 16 channels, Bernoulli decoder.
  config.model = dict(
      image_shape=(28, 28, 1), binarized=True, pad=2, num_channels_enc=16, num_channels_dec=16,
      num_preprocess_blocks=2, num_preprocess_cells=1, num_postprocess_blocks=2, num_postprocess_cells=1,
      num_latent_scales=2, num_groups_per_scale=3, ada_groups=True, num_latent_per_group=8,
      num_cell_per_cond_enc=1, num_cell_per_cond_dec=1, num_nf=0, use_se=True, res_dist=True,
      weight_decay_norm=1e-2,
      kl_anneal_steps=300, kl_const_steps=0)  # official portions of total steps: 0.3 and 1e-4
  # Official optimiser: torch Adamax(lr 1e-2, weight_decay 3e-4, eps 1e-3), warm-up, cosine to 1e-4.
  config.optimizer = dict(name="adamax", lr=1e-2, eps=1e-3, l2_weight_decay=3e-4, warmup_steps=50,
                          schedule="cosine", end_lr_factor=1e-2)
  config.skip_grad_norm = 1e5  # skip (and count) updates with a larger gradient norm (typical: 1e2 to 1e4)
  config.log_every, config.eval_every, config.ckpt_every = 50, 500, 500
  config.eval_batch_size, config.eval_examples = 500, 0  # 0: the whole test split
  config.iw_samples, config.iw_chunk_size = 10, 1  # importance-weighted NLL at every evaluation (K=10)
  config.num_samples, config.sample_temperature = 64, 1.0
  config.readjust_bn_iterations = 50  # BN re-adjustment passes before each sample grid (paper: 500)
  config.figures = dict(temperatures=(0.0, 0.25, 0.5, 0.75, 1.0), num=10, readjust_bn_iterations=500)  # paper: 500
  if arg == "smoke":
    config.batch_size, config.total_steps = 8, 3
    config.model = dict(config.model, num_channels_enc=4, num_channels_dec=4, num_preprocess_blocks=1,
                        num_postprocess_blocks=1, num_latent_scales=1, num_groups_per_scale=2, num_latent_per_group=2,
                        num_mixture_dec=1, kl_anneal_steps=1)
    config.optimizer = dict(config.optimizer, warmup_steps=1)
    config.log_every, config.eval_every, config.ckpt_every = 1, 3, 3
    config.eval_batch_size, config.eval_examples, config.num_samples = 8, 16, 4
    config.iw_samples, config.iw_chunk_size, config.readjust_bn_iterations = 3, 1, 2
    config.figures = dict(config.figures, num=2, readjust_bn_iterations=2)
  elif arg == "8bit":
    config.binarize, config.model = "", dict(config.model, binarized=False)
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of nvae_quickstart; use :smoke or :8bit.")
  return config
