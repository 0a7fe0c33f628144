r"""LMConv on dynamically binarized MNIST: 77.56 nats with 8 S-curve orders (Jain, Abbeel & Pathak 2020, Table 2).

python -m experiments.train --config=experiments/configs/lmconv_mnist_binarized.py --workdir=/tmp/lmconv_bmnist \
  --config.data_dir=/path/to/tensorflow_datasets      # or ...py:smoke for a seconds-long check

ajayjain/lmconv README: `main.py -d mnist -b 32 --ours -k 3 --normalization pono --order s_curve --randomize_order
-dp 0 --binarize` (160 epochs); `--binarize` redraws Bernoulli(x) at every read, train and test alike, so
config.binarize = "dynamic"; training flags of its CIFAR-10 command. Results in nats per image (eval/nats, one order;
eval/nats_ensemble, 8 orders). jaxgen, at quickstart size on a CPU: 89.86 nats (README, Results).
"""
import ml_collections

from jaxgen.autoregressive import orders

# Adam's eps and the clip threshold are the official ones (1e-8, -c 2e6 of the CIFAR-10 command) scaled to jaxgen's
# loss, mean nats per dimension instead of the batch's summed nats: 1 / (32 x 784). The remaining differences from
# ajayjain/lmconv are lmconv_cifar10.py's (weight-normalised NINs, lr decay, drop_last); the output is one Bernoulli
# logit instead of a 2-way softmax (the same distributions).


def get_config(arg=None):
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.compute_dtype, config.matmul_precision = "float32", "default"  # README, "Precision"
  config.dataset = "mnist"  # TFDS name
  config.data_dir = ml_collections.config_dict.placeholder(str)  # passed to TFDS (None: its default)
  config.binarize = "dynamic"  # Bernoulli(x / 255), redrawn at every read (official --binarize)
  config.batch_size, config.total_steps = 32, 160 * 1875  # -b 32; 160 epochs of 60k images
  config.model_name = "autoregressive.lmconv"
  config.model = dict(image_shape=(28, 28, 1), likelihood="bernoulli", nr_resnet=5, nr_filters=160,
                      kernel_size=3, max_dilation=2, dropout_rate=0.0, normalization="pono",
                      train_orders=orders.S_CURVES, eval_orders=orders.S_CURVES, remat=False)
  official_scale = 32 * 28 * 28  # batch x dimensions: official loss / jaxgen loss
  config.optimizer = dict(name="adam", lr=2e-4, b1=0.9, b2=0.999, eps=1e-8 / official_scale, schedule="constant",
                          grad_clip_norm=2e6 / official_scale)  # -c 2e6 on the official summed loss
  config.ema_decay = 0.0
  config.log_every, config.eval_every, config.ckpt_every = 100, 4 * 1875, 1875
  config.eval_batch_size, config.eval_examples = 32, 0  # 0: the whole test split
  config.num_samples, config.sample_temperature = 16, 1.0
  config.evals = dict(completion=dict(missing="top"))
  config.figures = dict(temperatures=(1.0,), num=4, missing="bottom", completions=3, complete_images=6)
  if arg == "smoke":
    config.batch_size, config.total_steps = 4, 2
    config.model.update(nr_resnet=0, nr_filters=4, train_orders=orders.S_CURVES[:2], eval_orders=orders.S_CURVES[:2])
    config.log_every, config.eval_every, config.ckpt_every = 1, 2, 2
    config.eval_batch_size, config.eval_examples, config.num_samples = 4, 8, 2
  elif arg:
    raise ValueError(f"Unknown variant {arg!r} of lmconv_mnist_binarized; use :smoke.")
  return config
