r"""Fixture for tests/convert/test_inception.py, written by pytorch-fid's FID Inception (never run in CI).

Official code: mseitzer/pytorch-fid at commit b9c18118d082cbd263c1b8963fc4221dc1cbb659 (src/pytorch_fid).
Command (from the jaxgen repository root; torch 2.13 CPU, torchvision 0.28, numpy):
  /work/torchenv/bin/python tests/reference/inception/make_fixture.py --official=/tmp/official-fid

The real weights (pt_inception-2015-12-05-6726825d.pth, 91 MB) are not committed and cannot be downloaded here.
Instead `random_state_dict` makes a state dict in their format from a seed, a pure function of (name, shape, seed)
in numpy, so the CI test rebuilds the same weights without torch and without a 91 MB file. pytorch-fid's
`fid_inception_v3` loads them in place of the download (`load_state_dict_from_url` patched to return them), and
`InceptionV3([3])` (its FID default: bilinear resize to 299, inputs scaled to [-1, 1]) computes the pool3 features
of two 32x32 images. official.npz: images (uint8 [2, 32, 32, 3]), pool3 (float32 [2, 2048]) and pool3_ada, the
same network behind StyleGAN2-ADA's front end (affine_grid with theta offset 1/W - 1/299, grid_sample bilinear with
border padding, (x - 128) / 128; reproduced from research/faithfulness-nvae-stylegan2.md row 6, since NVIDIA's
TorchScript file cannot be downloaded here), and logits / logits_ada (float32 [2, 1008]): the same network's fc
applied to pool3 / pool3_ada, as torchvision's Inception3 forward does (eval dropout = identity, flatten, fc).

Monkeypatches: `torch.library.register_fake` is a no-op while torchvision is imported (its PyPI wheel is built
against CUDA torch and registers fake kernels for C++ ops the CPU torch lacks; only Python modules are used).
"""
import argparse
import os
import sys
import zlib

import numpy as np


def random_weight(name, shape, seed=0):
  """A float32 value for state-dict entry `name`: He-normal convolutions (activations keep their scale through
  the 94 layers), BN scale 1 + 0.1 N, BN/linear biases and running means 0.1 N, running variances U(0.5, 1.5)."""
  rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
  if name.endswith("running_var"):
    return rng.uniform(0.5, 1.5, shape).astype(np.float32)
  if name.endswith(("running_mean", ".bias")):
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)
  if len(shape) == 1:  # BN weight
    return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
  fan_in = int(np.prod(shape[1:]))
  return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def random_state_dict(shapes, seed=0):
  """{name: float32 array} for {name: shape} (num_batches_tracked entries: int64 zeros, as torch saves them)."""
  return {name: np.zeros(shape, np.int64) if name.endswith("num_batches_tracked") else random_weight(name, shape, seed)
          for name, shape in shapes.items()}


def main(official, out_dir):
  import torch
  import torch.library

  register_fake = torch.library.register_fake
  torch.library.register_fake = lambda *args, **kwargs: (lambda f: f)
  sys.path.insert(0, os.path.join(official, "src"))
  from pytorch_fid import inception as fid_inception
  torch.library.register_fake = register_fake

  shapes = {k: tuple(v.shape) for k, v in fid_inception._inception_v3(num_classes=1008, aux_logits=False,
                                                                      weights=None).state_dict().items()}
  state_dict = {k: torch.from_numpy(v) for k, v in random_state_dict(shapes).items()}
  fid_inception.load_state_dict_from_url = lambda *args, **kwargs: state_dict
  model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
  images = np.random.RandomState(0).randint(0, 256, (2, 32, 32, 3)).astype(np.uint8)
  with torch.no_grad():
    pool3 = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0)[0]  # [B, 2048, 1, 1]
  pool3 = pool3[:, :, 0, 0].numpy().astype(np.float32)
  # StyleGAN2-ADA's detector front end (its TorchScript file is not at hand: the documented operations,
  # research/faithfulness-nvae-stylegan2.md row 6) into the same network with pytorch-fid's own resize/scaling off.
  x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
  theta = torch.eye(2, 3)
  theta[0, 2] += theta[0, 0] / x.shape[3] - theta[0, 0] / 299
  theta[1, 2] += theta[1, 1] / x.shape[2] - theta[1, 1] / 299
  grid = torch.nn.functional.affine_grid(theta.unsqueeze(0).repeat(x.shape[0], 1, 1), [x.shape[0], 3, 299, 299],
                                         align_corners=False)
  x = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
  model_ada = fid_inception.InceptionV3([3], resize_input=False, normalize_input=False).eval()
  with torch.no_grad():
    pool3_ada = model_ada((x - 128.0) / 128.0)[0][:, :, 0, 0].numpy().astype(np.float32)
  # Logits: torchvision's Inception3 forward after pool3 (dropout is the identity in eval, flatten, fc).
  fc = fid_inception.fid_inception_v3().fc.eval()
  with torch.no_grad():
    logits = fc(torch.from_numpy(pool3)).numpy().astype(np.float32)
    logits_ada = fc(torch.from_numpy(pool3_ada)).numpy().astype(np.float32)
  os.makedirs(out_dir, exist_ok=True)
  np.savez_compressed(os.path.join(out_dir, "official.npz"), images=images, pool3=pool3, pool3_ada=pool3_ada,
                      logits=logits, logits_ada=logits_ada)
  print("pool3", pool3.shape, "mean", pool3.mean(), "max", pool3.max())


if __name__ == "__main__":
  parser = argparse.ArgumentParser()
  parser.add_argument("--official", required=True, help="a checkout of mseitzer/pytorch-fid at the commit above")
  parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
  flags = parser.parse_args()
  main(flags.official, flags.out)
