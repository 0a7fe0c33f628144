r"""LMConv on CIFAR-10, the ajayjain/lmconv setup that gave 2.89 bits/dim with 8 S-curve orders (Jain, Abbeel &
Pathak 2020, Table 1: 2.887 with the 8-order ensemble, 2.909 with one order; 2.762 bits/dim for the top half given
the bottom half with 2 orders).

python -m experiments.train --config=experiments/configs/lmconv_cifar10.py --workdir=/tmp/lmconv_cifar10 \
  --config.data_dir=/path/to/tensorflow_datasets      # or ...py:smoke (seconds), ...py:bench (speed)
python -m experiments.evaluate --config=experiments/configs/lmconv_cifar10.py --workdir=/tmp/lmconv_cifar10 \
  --config.data_dir=/path/to/tensorflow_datasets --missing=top   # + the paper's top-half completion bits/dim

ajayjain/lmconv README: `main.py -d cifar -b 32 -t 10 --ours -c 2e6 -k 3 --normalization pono --order s_curve
--randomize_order -dp 0`, with main.py's defaults nr_resnet 5, nr_filters 160, nr_logistic_mix 10, max_dilation 2,
Adam lr 2e-4 (betas 0.9, 0.999), and `StepLR(gamma=0.999995)` stepped once per epoch (lr x 0.995 after 1000
epochs: constant here). The README does not give the training length (its binarized-MNIST checkpoint is from
epoch 160); 500 epochs here. About 46M parameters: a GPU/TPU run. `:bench` is the size the official code was
timed at in issue 3 (2 resnets per block, 64 filters, batch 8, about 3.3M parameters; BENCHMARKS.md).
"""
import ml_collections

from jaxgen.autoregressive import orders

S_CURVES = list(orders.variants("s_curve"))  # the 8 rotations/reflections of the S-curve


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.dataset = "cifar10"  # TFDS name
  config.data_dir = ml_collections.config_dict.placeholder(str)  # passed to TFDS (None: its default)
  config.batch_size, config.total_steps = 32, 500 * 1563  # -b 32; 500 epochs of 50k images
  config.model_name = "autoregressive.lmconv"
  config.model = dict(image_shape=(32, 32, 3), likelihood="dmol", nr_resnet=5, nr_filters=160, nr_logistic_mix=10,
                      kernel_size=3, max_dilation=2, dropout_rate=0.0, normalization="pono",
                      train_orders=S_CURVES, eval_orders=S_CURVES, remat=False)
  config.optimizer = dict(name="adam", lr=2e-4, b1=0.9, b2=0.999, schedule="constant", grad_clip_norm=2e6)
  config.ema_decay = 0.0  # the paper evaluates the raw parameters (checkpoint averaging is optional)
  config.log_every, config.eval_every, config.ckpt_every = 100, 4 * 1563, 1563  # test every 4 epochs, as the README
  config.eval_batch_size, config.eval_examples = 32, 0  # 0: the whole test split
  config.num_samples, config.sample_temperature = 16, 1.0  # 1024 network passes per grid
  if arg == "bench":
    config.batch_size = 8
    config.model = dict(image_shape=(32, 32, 3), likelihood="dmol", nr_resnet=2, nr_filters=64, nr_logistic_mix=10,
                        kernel_size=3, max_dilation=2, dropout_rate=0.0, normalization="pono",
                        train_orders=S_CURVES, eval_orders=S_CURVES, remat=False)
  elif arg == "smoke":
    config.batch_size, config.total_steps = 4, 2
    config.model = dict(image_shape=(32, 32, 3), likelihood="dmol", nr_resnet=0, nr_filters=4, nr_logistic_mix=2,
                        train_orders=S_CURVES[:2], eval_orders=S_CURVES[:2])
    config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
    config.eval_batch_size, config.eval_examples, config.num_samples = 4, 8, 2
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of lmconv_cifar10; use :smoke or :bench.")
  return config
