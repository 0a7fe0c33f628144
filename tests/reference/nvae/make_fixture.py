r"""Fixtures for tests/convert/test_nvae.py, written by the official NVAE code (never run in CI).

Official code: NVlabs/NVAE at commit 9fc1a288fb831c87d93a4e2663bc30ccf9225b29 (git archive of that commit).
Command (from the jaxgen repository root; torch 2.13 CPU, numpy):
  /work/torchenv/bin/python tests/reference/nvae/make_fixture.py --official=/tmp/official-nvae

For each small model below (perturbed random weights, seeded) it writes, in tests/reference/nvae/NAME/:
  NAME.pt          a checkpoint in the published format (train.py's torch.save dict: state_dict, args, ...), for
                   nvae_cifar10 only (the fixtures stay under 1 MB)
  state_dict.npz   the same state dict as float32/int64 numpy, args.json its `args`: what jaxgen.convert.nvae.read
                   returns, so the CI tests (without torch) can check `convert` against the official outputs
  official.npz     inputs, the posterior noise fed in, and the official outputs in eval mode (BatchNorm with its
                   running statistics): encoder output (enc0), decoder output (logits, the top-left 8x8 corner of the
                   unpadded image), log q, log p, KL per group
                   and per channel, reconstruction NLL.

Monkeypatches to run the CUDA-only code on one CPU process (nothing else changes):
  - `tensorboardX` (imported by utils.py for its SummaryWriter, unused here) is a stub module;
  - `torch.Tensor.cuda` returns the tensor (ARConv2d puts its mask on the GPU; neural_ar_operations.py:87);
  - `SyncBatchNormSwish.forward` is its own eval-mode branch, F.batch_norm with the running statistics then Swish
    (the official forward raises for CPU tensors before reaching that branch; inplaced_sync_batchnorm.py:130-165);
  - `distributions.Normal.sample` returns mu + sigma * eps with eps taken from a seeded list, recorded in
    official.npz, so that jaxgen can be fed the same noise.
"""
import argparse
import json
import os
import sys
import types

import numpy as np
import torch
import torch.nn.functional as F

MODELS = {
    # CIFAR-10-style: RGB, 8-bit DMOL (3 components), 2 latent scales of [2, 1] groups, one posterior flow, SE.
    "nvae_cifar10": dict(dataset="cifar10", num_x_bits=8, num_channels_enc=4, num_channels_dec=4,
                         num_preprocess_blocks=1, num_preprocess_cells=1, num_postprocess_blocks=1,
                         num_postprocess_cells=1, num_latent_scales=2, num_groups_per_scale=2,
                         num_latent_per_group=3, ada_groups=True, min_groups_per_scale=1,
                         num_cell_per_cond_enc=1, num_cell_per_cond_dec=1, num_mixture_dec=3, num_nf=1,
                         use_se=True, res_dist=True),
    # MNIST-style: Bernoulli, 28x28 padded to 32, 2 pre-/post-processing blocks of 2 cells, ada groups [2, 1],
    # 2 encoder cells per group.
    "nvae_mnist": dict(dataset="mnist", num_x_bits=8, num_channels_enc=2, num_channels_dec=2,
                       num_preprocess_blocks=2, num_preprocess_cells=2, num_postprocess_blocks=2,
                       num_postprocess_cells=2, num_latent_scales=2, num_groups_per_scale=2,
                       num_latent_per_group=2, ada_groups=True, min_groups_per_scale=1, num_cell_per_cond_enc=2,
                       num_cell_per_cond_dec=1, num_mixture_dec=10, num_nf=0, use_se=True, res_dist=True),
}

# train.py's defaults for everything else `args` records (train.py:333-440).
DEFAULT_ARGS = dict(root="/tmp/nasvae/expr", save="exp", data="/tmp/nasvae/data", batch_size=2, learning_rate=1e-2,
                    learning_rate_min=1e-4, weight_decay=3e-4, weight_decay_norm=1e-2, weight_decay_norm_init=10.0,
                    weight_decay_norm_anneal=False, epochs=400, warmup_epochs=5, fast_adamax=False,
                    arch_instance="res_mbconv", kl_anneal_portion=0.3, kl_const_portion=1e-4,
                    kl_const_coeff=1e-4, cont_training=False, num_proc_node=1, node_rank=0, local_rank=0,
                    global_rank=0, num_process_per_node=1, master_address="127.0.0.1", seed=1)


def patch_official(official):
  sys.path.insert(0, official)
  sys.modules["tensorboardX"] = types.SimpleNamespace(SummaryWriter=None)
  torch.Tensor.cuda = lambda self, *args, **kwargs: self
  from thirdparty import inplaced_sync_batchnorm
  from thirdparty.swish import Swish

  def eval_forward(self, x):
    assert not self.training, "the fixture compares in eval mode"
    return Swish.apply(F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                                    self.eps))
  inplaced_sync_batchnorm.SyncBatchNormSwish.forward = eval_forward


class FedNoise:
  """Normal.sample with eps drawn from a seeded generator and recorded in call order."""

  def __init__(self, seed):
    self.gen, self.eps = torch.Generator().manual_seed(seed), []

  def __call__(self, dist):
    eps = torch.randn(dist.mu.shape, generator=self.gen)
    self.eps.append(eps)
    return eps * dist.sigma + dist.mu, eps


def perturb(model, seed):
  """Every float tensor of the state dict moved off its initialisation (seeded), BN statistics made non-trivial."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, t in model.state_dict().items():
      if not t.is_floating_point():
        continue
      noise = torch.randn(t.shape, generator=gen)
      if name.endswith("running_var"):
        t.copy_(0.5 + torch.rand(t.shape, generator=gen))
      elif name.endswith("running_mean") or name.endswith(".bias"):
        t.add_(0.1 * noise)
      elif name.endswith("log_weight_norm"):
        t.add_(0.2 * noise)
      elif t.dim() == 1:  # BN gamma
        t.add_(0.2 * noise)
      else:
        t.add_(0.2 * noise * (t.std() if t.numel() > 1 else 1.0))


def images_for(name, gen):
  if name == "nvae_mnist":
    return (torch.rand(2, 1, 28, 28, generator=gen) < 0.3).to(torch.uint8)
  # No level 254: at 8 bits the official DMOL gives it the top bin's mass (samples > 0.99, distributions.py:170),
  # jaxgen its own bin (research/faithfulness-nvae-stylegan2.md, 1 row 7); 0, 1, 253 and 255 are included.
  images = torch.randint(0, 254, (2, 3, 32, 32), generator=gen)
  images[0, 0, 0, :4] = torch.tensor([0, 255, 253, 1])
  return images.to(torch.uint8)


def main(official, out_dir):
  patch_official(official)
  import distributions
  import model as model_lib
  import utils

  for i, (name, settings) in enumerate(MODELS.items()):
    args = argparse.Namespace(**(DEFAULT_ARGS | settings))
    torch.manual_seed(100 + i)
    model = model_lib.AutoEncoder(args, None, utils.get_arch_cells(args.arch_instance))
    perturb(model, seed=200 + i)
    model.eval()
    images = images_for(name, torch.Generator().manual_seed(300 + i))  # uint8 [B, C, H, W]
    x = images.float() if name == "nvae_mnist" else images.float() / 255.0
    if name == "nvae_mnist":
      x = F.pad(x, (2, 2, 2, 2))  # official datasets.py Pad(2)
    x = utils.pre_process(x, args.num_x_bits)

    noise = FedNoise(seed=400 + i)
    distributions.Normal.sample = lambda self, noise=noise: noise(self)
    captured = {}
    model.enc0.register_forward_hook(lambda m, inp, out: captured.__setitem__("enc0", out))
    with torch.no_grad():
      logits, log_q, log_p, kl_all, kl_diag = model(x)
      output = model.decoder_output(logits)
      recon = utils.reconstruction_loss(output, x, crop=model.crop_output)
    if model.crop_output:  # as reconstruction_loss: the likelihood and jaxgen's decoder output skip the padding
      logits = logits[:, :, 2:30, 2:30]
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}

    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    checkpoint = {"epoch": 0, "state_dict": model.state_dict(), "optimizer": {}, "global_step": 0,
                  "args": args, "arch_instance": utils.get_arch_cells(args.arch_instance), "scheduler": {},
                  "grad_scalar": {}}
    if name == "nvae_cifar10":  # one published-format file is enough to test `read`; the tests use the npz
      torch.save(checkpoint, os.path.join(d, f"{name}.pt"))
    np.savez_compressed(os.path.join(d, "state_dict.npz"),
                        **{k: v.astype(np.float32) if v.dtype.kind == "f" else v.astype(np.int64)
                           for k, v in state.items()})
    with open(os.path.join(d, "args.json"), "w") as f:
      json.dump(vars(args), f, indent=1, sort_keys=True)
    nhwc = lambda t: t.detach().numpy().transpose(0, 2, 3, 1).astype(np.float32)
    np.savez_compressed(
        os.path.join(d, "official.npz"), images=images.numpy().transpose(0, 2, 3, 1),
        enc0=nhwc(captured["enc0"]), logits=nhwc(logits)[:, :8, :8],  # a corner: size
 log_q=log_q.numpy(), log_p=log_p.numpy(),
        kl_all=torch.stack(kl_all, 1).numpy(), kl_diag=torch.cat(kl_diag).numpy(), recon=recon.numpy(),
        **{f"eps_{j}": nhwc(e) for j, e in enumerate(noise.eps)})
    print(name, "params", sum(v.size for k, v in state.items() if v.dtype.kind == "f"), "recon", recon.numpy(),
          "kl", torch.stack(kl_all, 1).sum(1).numpy())


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--official", required=True, help="a checkout of NVlabs/NVAE at the commit above")
  parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
  flags = parser.parse_args()
  main(flags.official, flags.out)
