"""pytorch-fid's Inception-v3 FID weights -> the .npz `jaxgen.metrics.inception.load_variables` reads
(config.sample_metrics.inception_path; research/faithfulness-nvae-stylegan2.md, 2.3).

  python -c "from jaxgen.convert import inception; inception.write_npz('pt_inception-2015-12-05-6726825d.pth', \
      'inception_fid.npz')"

pt_inception-2015-12-05-6726825d.pth (github.com/mseitzer/pytorch-fid/releases, tag fid_weights) is a torch
state dict of the TF FID graph, which is what NVAE's FIDs and the literature's pytorch-fid numbers use.
NVIDIA's TorchScript detector of StyleGAN2-ADA (inception-2015-12-05.pt) is a port of the same TF graph with its own
resize and scaling; it is not read here (a ConversionError says so): its front end is
config.sample_metrics.inception_detector="stylegan2-ada" (`jaxgen.metrics.inception.preprocess`).
"""
import numpy as np

from jaxgen import convert as convert_lib

WHAT = "pytorch-fid's Inception-v3 weights (pt_inception-2015-12-05-*.pth, a state dict with Mixed_7c.* keys)"


def read(path):
  """{"state_dict": {name: numpy}} of pytorch-fid's Inception weights."""
  obj = convert_lib.torch_load(path)  # a TorchScript archive comes back as a ScriptModule (torch.jit.load)
  if "Script" in type(obj).__name__:
    raise convert_lib.ConversionError(
        f"{path} is a TorchScript network (e.g. StyleGAN2-ADA's inception-2015-12-05.pt), not read here; convert "
        f"pytorch-fid's pt_inception-2015-12-05-6726825d.pth (a port of the same TF graph) and set "
        f"config.sample_metrics.inception_detector=stylegan2-ada.")
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
