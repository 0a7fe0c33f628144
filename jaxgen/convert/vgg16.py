"""torchvision's VGG16 weights (+ the lpips package's v0.1 lin weights) -> the .npz `jaxgen.metrics.vgg16` reads,
for the StyleGAN2 projector's --distance=vgg16 (python -m experiments.project ... --vgg16=NPZ).

  python -c "from jaxgen.convert import vgg16; vgg16.write_npz('vgg16-397923af.pth', 'vgg16_lpips.npz', \
      lpips='vgg.pth')"

vgg16-397923af.pth: torchvision's ImageNet VGG16 state dict (528 MB), download.pytorch.org/models/vgg16-397923af.pth
(what `torchvision.models.vgg16(weights="IMAGENET1K_V1")` fetches, and what lpips builds its trunk from); only
`features.*` is kept (the classifier is dropped), so the npz is 59 MB.
vgg.pth: LPIPS v0.1's calibrated lin weights (7 KB), lpips/weights/v0.1/vgg.pth inside the `lpips` wheel
(pip download lpips==0.1.4 --no-deps; unzip) or in github.com/richzhang/PerceptualSimilarity. Without `lpips=`,
every channel gets weight 1: the lpips package's uncalibrated `lpips=False` baseline, not LPIPS
(`jaxgen.metrics.vgg16`'s docstring). A state dict of a whole `lpips.LPIPS(net='vgg')` module (trunk and lin
together) is read as well. Reading needs torch (the optional extra `convert`); `jaxgen.metrics.vgg16
.convert_torch_state_dict` does the same from numpy arrays.
"""
import numpy as np

from jaxgen import convert as convert_lib

WHAT = "torchvision's VGG16 weights (vgg16-397923af.pth, a state dict with features.0.weight ... features.28.bias)"
LIN_WHAT = "lpips's LPIPS v0.1 lin weights (weights/v0.1/vgg.pth, a state dict with lin0.model.1.weight ...)"


def _state_dict(path, what, key):
  obj = convert_lib.torch_load(path)
  if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict) or not any(str(k).endswith(key) for k in obj):
    guess = convert_lib.looks_like(obj)
    hint = f"it looks like a {guess} checkpoint" if guess else f"found a {type(obj).__name__}"
    raise convert_lib.ConversionError(f"{path} is not {what} ({hint}); pass that file (jaxgen.convert.vgg16's "
                                      f"docstring says where to get it).")
  return convert_lib.to_numpy(dict(obj))


def read(path, lpips=None):
  """{"state_dict": {name: numpy}, "lin": {name: numpy} or None} of the VGG16 file and lpips's lin weights."""
  official = {"state_dict": _state_dict(path, WHAT, "0.weight"), "lin": None}
  if lpips is not None:
    official["lin"] = _state_dict(lpips, LIN_WHAT, "model.1.weight")
  return official


def convert(official, overrides=None):
  """(None, {"params/...": array}): no run config, the flat variables `jaxgen.metrics.vgg16.load_variables` reads."""
  from jaxgen.metrics import vgg16  # here: `read` needs only numpy and torch

  if overrides:
    raise convert_lib.ConversionError(f"VGG16 weights take no --config overrides (got {sorted(overrides)}).")
  try:
    flat = vgg16.convert_torch_state_dict(official["state_dict"], official.get("lin"))
  except ValueError as e:
    raise convert_lib.ConversionError(str(e)) from None
  want = vgg16.expected_shapes()  # checked before anything is written
  missing = sorted(k for k in set(want) - set(flat) if not k.startswith("params/lin"))
  wrong = sorted(k for k in set(want) & set(flat) if tuple(want[k]) != tuple(flat[k].shape))
  extra = sorted(set(flat) - set(want))
  if missing or wrong or extra:
    raise convert_lib.ConversionError(
        f"Not VGG16 weights: {len(missing)} layer(s) missing (e.g. {missing[:2]}), {len(wrong)} with wrong shapes "
        f"(e.g. {wrong[:2]}), {len(extra)} unexpected (e.g. {extra[:2]}); pass torchvision's vgg16 (not vgg16_bn "
        f"or vgg19) state dict.")
  return None, flat


def write_npz(checkpoint, out_path, lpips=None):
  """Converts `checkpoint` (torchvision's vgg16 .pth) and optionally `lpips` (lpips's v0.1 vgg.pth) to `out_path`,
  the .npz for experiments.project --vgg16."""
  _, flat = convert(read(checkpoint, lpips))
  np.savez(out_path, **flat)
  return out_path
