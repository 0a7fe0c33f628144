r"""LMConv on CIFAR-10: 2.887 bits/dim with the 8 S-curve orders, 2.909 with one, and 2.762 for the top half given the
bottom half with 2 orders (Jain, Abbeel & Pathak 2020, Table 1).

python -m experiments.train --config=experiments/configs/lmconv_cifar10.py --workdir=/tmp/lmconv_cifar10 \
  --config.data_dir=/path/to/tensorflow_datasets      # or ...py:smoke (seconds), ...py:bench (speed)
python -m experiments.evaluate --config=experiments/configs/lmconv_cifar10.py --workdir=/tmp/lmconv_cifar10 \
  --config.data_dir=/path/to/tensorflow_datasets --evals=completion   # + the top-half completion bits/dim

ajayjain/lmconv README: `main.py -d cifar -b 32 -t 10 --ours -c 2e6 -k 3 --normalization pono --order s_curve
--randomize_order -dp 0` (nr_resnet 5, 160 filters, 10 logistics, Adam 2e-4; about 46M parameters; 500 epochs here).
`:bench` is the size the official code was timed at (3.3M parameters, batch 8; BENCHMARKS.md). jaxgen: not trained.
"""
import ml_collections

from jaxgen.autoregressive import orders

# The official loss is the batch's summed nats (main.py, no --minimize_bpd), jaxgen's the mean nats per dimension:
# gradients 1 / (32 x 3072) of the official ones. Scaling the clip threshold (-c 2e6) and Adam's eps (1e-8) by the
# same factor makes the updates the official ones. Remaining differences from ajayjain/lmconv, none measured:
# - NIN layers (gated-resnet skips, output) are plain dense layers; official ones are weight-normalised even with
#   --normalization pono (same function class and initial distribution, other optimisation dynamics).
# - Constant lr; official StepLR(gamma 0.999995) per epoch (x0.9975 after 500 epochs). Length: not published.
#   (No batch statistics on either side: PONO normalises each example, so data parallelism changes nothing.)
# - Evaluation on the whole test split (official drop_last: 9,984 images); DMOL bin masses exact where the official
#   code switches to density x width (bins below 1e-5); samples rounded to the grid, no mixture temperature.


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.compute_dtype, config.matmul_precision = "float32", "default"  # README, "Precision"
  config.dataset = "cifar10"  # TFDS name
  config.data_dir = ml_collections.config_dict.placeholder(str)  # passed to TFDS (None: its default)
  config.batch_size, config.total_steps = 32, 500 * 1563  # -b 32; 500 epochs of 50k images
  config.model_name = "autoregressive.lmconv"
  config.model = dict(image_shape=(32, 32, 3), likelihood="dmol", nr_resnet=5, nr_filters=160, nr_logistic_mix=10,
                      kernel_size=3, max_dilation=2, dropout_rate=0.0, normalization="pono",
                      train_orders=orders.S_CURVES, eval_orders=orders.S_CURVES, remat=False)
  official_scale = 32 * 32 * 32 * 3  # batch x dimensions: official loss / jaxgen loss
  config.optimizer = dict(name="adam", lr=2e-4, b1=0.9, b2=0.999, eps=1e-8 / official_scale, schedule="constant",
                          grad_clip_norm=2e6 / official_scale)  # -c 2e6 on the official summed loss
  config.ema_decay = 0.0  # the paper evaluates the raw parameters (checkpoint averaging is optional)
  config.log_every, config.eval_every, config.ckpt_every = 100, 4 * 1563, 1563  # test every 4 epochs, as the README
  config.eval_batch_size, config.eval_examples = 32, 0  # 0: the whole test split
  config.num_samples, config.sample_temperature = 16, 1.0  # 1024 network passes per grid
  config.evals = dict(completion=dict(missing="top"))  # the paper's conditional figure
  config.figures = dict(temperatures=(1.0,), num=4, missing="bottom", completions=3, complete_images=6)
  if arg == "bench":
    config.batch_size = 8
    config.model.update(nr_resnet=2, nr_filters=64)
  elif arg == "smoke":
    config.batch_size, config.total_steps = 4, 2
    config.model.update(nr_resnet=0, nr_filters=4, nr_logistic_mix=2, train_orders=orders.S_CURVES[:2],
                        eval_orders=orders.S_CURVES[:2])
    config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
    config.eval_batch_size, config.eval_examples, config.num_samples = 4, 8, 2
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of lmconv_cifar10; use :smoke or :bench.")
  return config
