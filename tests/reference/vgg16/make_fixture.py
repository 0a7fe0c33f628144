r"""Fixture for tests/gan/test_vgg16.py, written by the lpips package's LPIPS(net='vgg') (never run in CI).

Official code: the `lpips` 0.1.4 wheel (richzhang/PerceptualSimilarity; lpips/lpips.py, pretrained_networks.py and
normalize_tensor as at commit 082bb24f84c091ea94de2867d34c4544f68e0963), on torchvision 0.28.0's `vgg16` (its
`features` Sequential is the trunk; the PyPI wheel, 0.28.0+cu130, of which only Python model code runs), torch
2.13.0+cpu and numpy 2.4.6. Command (from the jaxgen repository root):
  /work/torchenv/bin/python tests/reference/vgg16/make_fixture.py
  (venv: python3 -m venv /work/torchenv && /work/torchenv/bin/pip install torch==2.13.0 numpy torchvision==0.28.0
   lpips==0.1.4; on this project's machines pip takes the local torch-2.13.0+cpu wheel: no nvidia-* or triton)

Neither torchvision's 528 MB vgg16-397923af.pth nor lpips's vgg.pth is used: `random_state_dict` makes VGG16
`features.*` weights (He-normal, so activations keep their scale through 13 ReLU layers; biases 0.01 N) and
non-negative lin weights (U(0, 1)) from a seed, a pure function of (name, shape, seed) in numpy, and `images` two
32x32 RGB images in [-1, 1]; the test rebuilds both without torch. `lpips.LPIPS(net='vgg', pretrained=False,
pnet_rand=True)` gets them through load_state_dict (strict), in float64, and writes official.npz (16 KB):
  distance [2]     LPIPS(images[0], images[1]) and LPIPS(images[1], images[0]) (lpips=True, the v0.1 forward)
  per_layer [5]    its `retPerLayer` terms (relu1_2 .. relu5_3)
  distance_equal   the same with lpips=False (no lin layers: every channel weighted 1), the converted file's meaning
                   when no lin weights are given
  tap_means/NAME   [2, C_l]: the spatial mean of each tapped ReLU of the trunk (after the ScalingLayer)
  area             F.interpolate(mode='area') of `area_input` ([2, 3, 19, 23] -> [2, 3, 7, 9]), the projector's
                   downsampling to 256x256 on a small non-divisible case
  versions         torch / torchvision / lpips versions

Monkeypatch: `torch.library.register_fake` is a no-op while torchvision is imported (its PyPI wheel is built against
CUDA torch and registers fake kernels for C++ ops the CPU torch lacks; only its Python model code is used).
"""
import os
import zlib

import numpy as np

# torchvision's vgg16 configuration "D": widths, "M" a 2x2 max-pool; each width is a Conv2d(3x3) + ReLU.
CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
LIN_WIDTHS = (64, 128, 256, 512, 512)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "official.npz")


def vgg16_shapes():
  """{torchvision state-dict name: shape} of `vgg16().features` (the classifier is no part of LPIPS)."""
  shapes, index, width = {}, 0, 3
  for v in CFG:
    if v == "M":
      index += 1
      continue
    shapes[f"features.{index}.weight"], shapes[f"features.{index}.bias"] = (v, width, 3, 3), (v,)
    index, width = index + 2, v  # Conv2d, ReLU
  return shapes


def lin_shapes():
  """{lpips vgg.pth name: shape}: lin{l}.model.1 is the 1x1 conv after the Dropout (use_dropout=True)."""
  return {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate(LIN_WIDTHS)}


def random_weight(name, shape, seed=0):
  rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
  if name.startswith("lin"):
    return rng.uniform(0.0, 1.0, shape).astype(np.float32)
  if name.endswith(".bias"):
    return (0.01 * rng.standard_normal(shape)).astype(np.float32)
  return (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)


def random_state_dict(shapes, seed=0):
  return {name: random_weight(name, shape, seed) for name, shape in shapes.items()}


def images(seed=1):
  """float32 [2, 32, 32, 3] in [-1, 1]: a smooth pattern plus noise, the second a perturbed first (LPIPS ~ 0.1-1)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.meshgrid(np.linspace(-1, 1, 32), np.linspace(-1, 1, 32), indexing="ij")
  base = np.stack([np.sin(3 * xx), np.cos(2 * yy), xx * yy], axis=-1)
  a = np.clip(0.7 * base + 0.2 * rng.standard_normal(base.shape), -1, 1)
  b = np.clip(a + 0.3 * rng.standard_normal(base.shape), -1, 1)
  return np.stack([a, b]).astype(np.float32)


def area_input(seed=2):
  return np.random.default_rng(seed).standard_normal((2, 3, 19, 23)).astype(np.float32)


def main():
  import torch
  import torch.library
  import torch.nn.functional as F

  register_fake = torch.library.register_fake
  torch.library.register_fake = lambda *args, **kwargs: (lambda f: f)
  import lpips
  import torchvision
  torch.library.register_fake = register_fake

  tv_shapes = {k: tuple(v.shape) for k, v in torchvision.models.vgg16(weights=None).features.state_dict().items()}
  assert {f"features.{k}": s for k, s in tv_shapes.items()} == vgg16_shapes(), "CFG is not torchvision's vgg16"
  weights = random_state_dict(vgg16_shapes()) | random_state_dict(lin_shapes())

  def lpips_model(with_lin):
    model = lpips.LPIPS(net="vgg", lpips=with_lin, pretrained=False, pnet_rand=True, verbose=False)
    state = {}
    for key in model.state_dict():
      parts = key.split(".")
      if parts[0] == "net":  # net.slice{k}.{i}.weight -> torchvision's features.{i}.weight
        state[key] = torch.from_numpy(weights[f"features.{parts[2]}.{parts[3]}"])
      elif parts[0] == "lins":  # the ModuleList holds the same modules as lin0 .. lin4
        state[key] = torch.from_numpy(weights[f"lin{parts[1]}.model.1.weight"])
      elif parts[0].startswith("lin"):
        state[key] = torch.from_numpy(weights[key])
      else:
        state[key] = model.state_dict()[key]  # scaling_layer's buffers, as lpips sets them
    model.load_state_dict(state, strict=True)
    return model.double().eval()

  x = torch.from_numpy(images()).permute(0, 3, 1, 2).double()  # NCHW
  out = {}
  with torch.no_grad():
    model = lpips_model(True)
    dist, per_layer = model(x[:1], x[1:], retPerLayer=True)
    out["distance"] = np.array([dist.item(), model(x[1:], x[:1]).item()])
    out["per_layer"] = np.array([r.item() for r in per_layer])
    out["distance_equal"] = np.array(lpips_model(False)(x[:1], x[1:]).item())
    taps = model.net(model.scaling_layer(x))
    for name, t in zip(taps._fields, taps):
      out[f"tap_means/{name}"] = t.mean(dim=(2, 3)).numpy().astype(np.float32)
    out["area"] = F.interpolate(torch.from_numpy(area_input()), size=(7, 9), mode="area").numpy()
  out["versions"] = np.array(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
                             f"lpips {getattr(lpips, '__version__', '0.1.4')}")
  np.savez(OUT, **out)
  print({k: np.round(v, 6) if k != "versions" and v.size < 8 else (v if k == "versions" else v.shape)
         for k, v in out.items()})


if __name__ == "__main__":
  main()
