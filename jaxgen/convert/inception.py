"""pytorch-fid's Inception-v3 FID weights -> the .npz `jaxgen.metrics.inception.load_variables` reads
(config.sample_metrics.inception_path; research/faithfulness-nvae-stylegan2.md, 2.3).

  python -c "from jaxgen.convert import inception; inception.write_npz('pt_inception-2015-12-05-6726825d.pth', \
      'inception_fid.npz')"

pt_inception-2015-12-05-6726825d.pth (github.com/mseitzer/pytorch-fid/releases, tag fid_weights) is a torch
state dict of the TF FID graph, which is what NVAE's FIDs and the literature's pytorch-fid numbers use.
NVIDIA's TorchScript detector of StyleGAN2-ADA (inception-2015-12-05.pt) holds the same graph as TorchScript code
with its own resize; it is not read here (a ConversionError says so).
"""
import numpy as np

from jaxgen import convert as convert_lib

WHAT = "pytorch-fid's Inception-v3 weights (pt_inception-2015-12-05-*.pth, a state dict with Mixed_7c.* keys)"


def read(path):
  """{"state_dict": {name: numpy}} of pytorch-fid's Inception weights."""
  try:
    obj = convert_lib.torch_load(path)
  except convert_lib.ConversionError as e:
    if "constants.pkl" in str(e) or "TorchScript" in str(e):
      raise convert_lib.ConversionError(f"{path} is a TorchScript detector (StyleGAN2-ADA's inception-2015-12-05.pt); "
                                        f"jaxgen reads pytorch-fid's pt_inception-2015-12-05-6726825d.pth.") from None
    raise
  if not isinstance(obj, dict) or "Mixed_7c.branch_pool.conv.weight" not in obj:
    guess = convert_lib.looks_like(obj)
    hint = f"it looks like a {guess} checkpoint" if guess else f"found a {type(obj).__name__}"
    raise convert_lib.ConversionError(f"{path} is not {WHAT} ({hint}); pass pytorch-fid's FID weights.")
  return {"state_dict": convert_lib.to_numpy(dict(obj))}


def convert(official, overrides=None):
  """(None, {"collection/path/leaf": array}): no run config, the flat variables `load_variables` reads."""
  from jaxgen.metrics import inception  # here: `read` needs only numpy and torch

  if overrides:
    raise convert_lib.ConversionError(f"Inception weights take no --config overrides (got {sorted(overrides)}).")
  try:
    return None, inception.convert_torch_state_dict(official["state_dict"])
  except ValueError as e:
    raise convert_lib.ConversionError(str(e)) from None


def write_npz(checkpoint, out_path):
  """Converts `checkpoint` (the .pth) to `out_path` (.npz for config.sample_metrics.inception_path)."""
  _, flat = convert(read(checkpoint))
  np.savez(out_path, **flat)
  return out_path
