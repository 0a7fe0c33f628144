"""Glow-PyTorch fixtures for tests/convert/test_glow.py, written by the official code.

Official repository: y0ast/Glow-PyTorch, commit 13c7b013dde32600e732416f2ed15438d686636f (model.py, modules.py,
utils.py imported unchanged). Command (CPU torch 2.13, numpy; no jax needed):

  git --git-dir=<mirror of y0ast/Glow-PyTorch> archive 13c7b01 | tar -x -C /tmp/official-glow
  /work/torchenv/bin/python tests/reference/glow/make_fixture.py --official=/tmp/official-glow

For each variant it builds a small `Glow` (32x32x3, L=2, K=2, 8 hidden channels), runs ActNorm's data-dependent
init on a batch, moves every parameter off its init by N(0, 0.05) (seeded), and saves in <variant>/
  glow_affine_coupling.pt  the state dict as published in glow.zip (plain torch.save(state_dict))
  hparams.json             as train.py writes it, beside the checkpoint (as in glow.zip)
  state_dict.npz           the same state dict as float32 numpy (what `jaxgen.convert.glow.read` returns), so the
                           equivalence test runs without torch
  official.npz             inputs (uint8 images NHWC, dequantisation noise in [0, 1), float16) and the official outputs
                           at that noise, in jaxgen's conventions: eps_<i> (NHWC latents of each split and the top,
                           standardised by their priors), log_det (flow log-det minus the priors' log-stds, nats), bpd.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

VARIANTS = {
    # the published CIFAR-10 model's settings (train.py defaults)
    "glow_lu_affine": dict(flow_permutation="invconv", LU_decomposed=True, flow_coupling="affine", learn_top=True),
    "glow_conv_additive": dict(flow_permutation="invconv", LU_decomposed=False, flow_coupling="additive",
                               learn_top=False),
}
HPARAMS = dict(augment=True, batch_size=64, cuda=True, dataroot="./", dataset="cifar10", download=False, epochs=250,
               eval_batch_size=512, hidden_channels=8, K=2, L=2, actnorm_scale=1.0, lr=5e-4, max_grad_clip=0,
               max_grad_norm=0, n_init_batches=8, n_workers=6, output_dir="output/", saved_model="",
               saved_optimizer="", seed=0, warmup=5, y_condition=False, y_weight=0.01)


def nhwc(t):
  return t.detach().permute(0, 2, 3, 1).numpy().astype(np.float32)


def official_outputs(glow, model_lib, modules, images, noise):
  """Latents, log-det and bpd of the official model at fixed dequantisation noise."""
  x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 256.0 - 0.5
  fixed = torch.from_numpy(noise).permute(0, 3, 1, 2).float() / 256.0

  def binning(x, n_bits=8):  # utils.uniform_binning_correction with our noise instead of a fresh draw
    b, c, h, w = x.size()
    return x + fixed, -math.log(2**n_bits) * c * h * w * torch.ones(b)

  original, model_lib.uniform_binning_correction = model_lib.uniform_binning_correction, binning
  with torch.no_grad():
    _, bpd, _ = glow(x.clone())
  model_lib.uniform_binning_correction = original
  with torch.no_grad():
    # The same pass layer by layer, for the latents and the log-det of the bijection alone.
    z, log_det, eps = x + fixed, torch.zeros(x.shape[0]), []
    for layer in glow.flow.layers:
      if isinstance(layer, modules.Split2d):
        z1, z2 = z[:, :z.shape[1] // 2], z[:, z.shape[1] // 2:]
        mean, logs = layer.split2d_prior(z1)
        eps.append(nhwc((z2 - mean) * torch.exp(-logs)))
        log_det = log_det - logs.sum(dim=[1, 2, 3])
        z = z1
      else:
        z, log_det = layer(z, log_det, reverse=False)
    mean, logs = glow.prior(z)
    eps.append(nhwc((z - mean) * torch.exp(-logs)))
    log_det = log_det - logs.sum(dim=[1, 2, 3])
  return eps, log_det.numpy().astype(np.float32), bpd.numpy().astype(np.float32)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--official", required=True, help="a checkout of y0ast/Glow-PyTorch")
  parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
  args = parser.parse_args()
  sys.path.insert(0, args.official)
  import model as model_lib
  import modules

  for seed, (name, settings) in enumerate(VARIANTS.items()):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    hparams = dict(HPARAMS, **settings)
    glow = model_lib.Glow((32, 32, 3), hparams["hidden_channels"], hparams["K"], hparams["L"],
                          hparams["actnorm_scale"], hparams["flow_permutation"], hparams["flow_coupling"],
                          hparams["LU_decomposed"], 10, hparams["learn_top"], hparams["y_condition"])
    init_images = torch.from_numpy(rng.integers(0, 256, (16, 3, 32, 32))).float() / 256.0 - 0.5
    glow.train()
    with torch.no_grad():
      glow(init_images)  # ActNorm data-dependent init
      for p in glow.parameters():
        p.add_(0.05 * torch.randn_like(p))
    glow.set_actnorm_init()
    glow.eval()
    state_dict = glow.state_dict()
    out = os.path.join(args.out, name)
    os.makedirs(out, exist_ok=True)
    torch.save(state_dict, os.path.join(out, "glow_affine_coupling.pt"))
    with open(os.path.join(out, "hparams.json"), "w") as f:
      json.dump(hparams, f, sort_keys=True, indent=4)
    np.savez_compressed(os.path.join(out, "state_dict.npz"),
                        **{k: v.numpy().astype(np.float32) for k, v in state_dict.items()})
    images = rng.integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    noise = rng.uniform(size=images.shape).astype(np.float16)  # float16: exact in float32, half the bytes
    eps, log_det, bpd = official_outputs(glow, model_lib, modules, images, noise)
    np.savez_compressed(os.path.join(out, "official.npz"), images=images, noise=noise,
                        log_det=log_det, bpd=bpd, **{f"eps_{i}": e for i, e in enumerate(eps)})
    print(name, "bpd", bpd)


if __name__ == "__main__":
  main()
