"""ajayjain/lmconv fixtures for tests/convert/test_lmconv.py, written by the official code.

Official repository: ajayjain/lmconv, commit e00576de5118702c90493e88c6e459b0e45d1290 (model.py, layers.py,
locally_masked_convolution.py, masking.py, utils.py, gilbert2d.py imported unchanged; `.cuda()` made a no-op, and
masking.py's plotting/hilbertcurve imports stubbed, since only CPU tensors and S-curve/gilbert2d orders are used).
Command (CPU torch 2.13, numpy; no jax needed):

  git --git-dir=<mirror of ajayjain/lmconv> archive e00576d | tar -x -C /tmp/official-lmconv
  /work/torchenv/bin/python tests/reference/lmconv/make_fixture.py --official=/tmp/official-lmconv

Each variant is one of the README's checkpoints at a small size (-q 1 -n 4, 2 logistics): its training command's
`args` come from main.py's own parser. The script builds `OurPixelCNN` as main.py does, moves every parameter off its
init by N(0, 0.05) (seeded), and saves in <variant>/
  <published name>.pth  {"model_state_dict", "args", "epoch", "global_step"} as main.py saves (the optimizer state
                        is left out to keep the fixture small)
  state_dict.npz, args.json   the same state dict as float32 numpy and the args (what `jaxgen.convert.lmconv.read`
                        returns), so the equivalence test runs without torch
  official.npz          images (uint8 NHWC; 0/1 for --binarize), the 8 generation orders of `augment_orders`
                        (orders [8, H*W, 2]), per-pixel log-likelihoods under each (per_pixel [8, B, H, W], nats) and
                        the 8-order ensemble log-likelihood per image from main.py's averaged loss (ensemble [B]).
"""
import argparse
import json
import os
import sys
import types

import numpy as np
import torch

VARIANTS = {
    "rgb": ("cifar_s8.pth", (32, 32, 3),
            "-d cifar -b 32 -t 10 --ours -c 2e6 -k 3 --normalization pono --order s_curve --randomize_order -dp 0"),
    "binarized": ("binary_mnist_ep159_s8.pth", (28, 28, 1),
                  "-d mnist -b 32 --ours -k 3 --normalization pono --order s_curve --randomize_order -dp 0 --binarize"),
    "grayscale": ("grayscale_mnist_ep299_hilbert8.pth", (28, 28, 1),
                  "-d mnist --ours -k 3 --normalization pono --order gilbert2d --randomize_order -dp 0"),
}
SMALL = " -q 1 -n 4 -m 2"  # nr_resnet, nr_filters, nr_logistic_mix


def _stub_imports():
  """masking.py imports plotting and hilbertcurve at module level; neither is used for these orders."""
  matplotlib = types.ModuleType("matplotlib")
  matplotlib.use = lambda *a, **k: None
  matplotlib.pyplot = types.ModuleType("matplotlib.pyplot")
  hilbert = types.ModuleType("hilbertcurve")
  hilbert.hilbertcurve = types.ModuleType("hilbertcurve.hilbertcurve")
  hilbert.hilbertcurve.HilbertCurve = None
  sys.modules.update({"matplotlib": matplotlib, "matplotlib.pyplot": matplotlib.pyplot, "hilbertcurve": hilbert,
                      "hilbertcurve.hilbertcurve": hilbert.hilbertcurve})
  torch.Tensor.cuda = lambda self, *args, **kwargs: self  # utils.py allocates with .cuda(): stay on the CPU


def parse_args(official, command):
  """main.py's argparse Namespace for `command`, from main.py's own parser definition."""
  with open(os.path.join(official, "main.py")) as f:
    source = f.read()
  start = source.index("parser = argparse.ArgumentParser()")
  end = source.index("args = parser.parse_args()")
  scope = {"argparse": argparse}
  exec(source[start:end], scope)  # only the add_argument calls
  return scope["parser"].parse_args(command.split())


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--official", required=True, help="a checkout of ajayjain/lmconv")
  parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
  cli = parser.parse_args()
  _stub_imports()
  sys.path.insert(0, cli.official)
  import layers
  import masking
  import model as model_lib
  import utils

  for seed, (name, (filename, (h, w, c), command)) in enumerate(VARIANTS.items()):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    args = parse_args(cli.official, command + SMALL)
    net = model_lib.OurPixelCNN(
        nr_resnet=args.nr_resnet, nr_filters=args.nr_filters, input_channels=c, nr_logistic_mix=args.nr_logistic_mix,
        kernel_size=(args.kernel_size, args.kernel_size), max_dilation=args.max_dilation,
        weight_norm=(args.normalization == "weight_norm"),
        feature_norm_op=(lambda num_channels: layers.PONO()) if args.normalization == "pono" else None,
        dropout_prob=args.dropout_prob, conv_bias=not args.no_bias, conv_mask_weight=args.learn_weight_for_masks,
        rematerialize=args.rematerialize, binarize=args.binarize)
    with torch.no_grad():
      for p in net.parameters():
        p.add_(0.05 * torch.randn_like(p))
    net.eval()
    state_dict = net.state_dict()
    out = os.path.join(cli.out, name)
    os.makedirs(out, exist_ok=True)
    torch.save({"model_state_dict": state_dict, "args": vars(args), "epoch": 0, "global_step": 0},
               os.path.join(out, filename))
    np.savez_compressed(os.path.join(out, "state_dict.npz"),
                        **{k: v.numpy().astype(np.float32) for k, v in state_dict.items()})
    with open(os.path.join(out, "args.json"), "w") as f:
      json.dump(vars(args), f, indent=1, sort_keys=True)

    # Inputs as main.py rescales them: [-1, 1]; binarized images are 0/1.
    if args.binarize:
      images = (rng.uniform(size=(2, h, w, c)) < 0.3).astype(np.uint8)
      x = torch.from_numpy(images).permute(0, 3, 1, 2).float() * 2.0 - 1.0
    else:
      images = rng.integers(0, 256, (2, h, w, c)).astype(np.uint8)
      x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 - 0.5) * 2.0
    obs = (c, h, w)
    base = masking.get_generation_order_idx(args.order[0], h, w)
    orders = masking.augment_orders(base, obs)
    outputs, per_pixel = [], []
    with torch.no_grad():
      for order in orders:
        masks = [masking.get_unfolded_masks(order, h, w, k=args.kernel_size, dilation=d, mask_type=t)
                 for d, t in ((1, "A"), (1, "B"), (args.max_dilation, "B"))]
        params = net(x, mask_init=masks[0], mask_undilated=masks[1], mask_dilated=masks[2])
        outputs.append(params)
        if args.binarize:
          lp = utils._binarized_log_probs(x, params)[..., 0]
        elif c == 1:
          lp = utils.log_sum_exp(utils.discretized_mix_logistic_log_probs_1d(x, params))
        else:
          lp = utils.log_sum_exp(utils.discretized_mix_logistic_log_probs(x, params))
        per_pixel.append(lp.numpy())
      averaged = (utils.binarized_loss_averaged if args.binarize else
                  utils.discretized_mix_logistic_loss_1d_averaged if c == 1 else
                  utils.discretized_mix_logistic_loss_averaged)
      ensemble = [-averaged(x[i:i + 1], [p[i:i + 1] for p in outputs]).item() for i in range(len(x))]
    np.savez_compressed(os.path.join(out, "official.npz"), images=images,
                        orders=np.asarray(orders, np.int16), per_pixel=np.asarray(per_pixel, np.float32),
                        ensemble=np.asarray(ensemble, np.float32))
    print(name, "nats/image", -np.asarray(per_pixel).sum(axis=(2, 3))[:, 0], "ensemble", ensemble)


if __name__ == "__main__":
  main()
