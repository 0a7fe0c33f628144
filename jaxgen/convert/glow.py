"""Glow-PyTorch (y0ast/Glow-PyTorch) checkpoints -> `flows.glow.Model` (research/faithfulness-glow-lmconv.md, 2.2).

The published CIFAR-10 model (3.39 bits/dim) is `glow/glow_affine_coupling.pt`, a plain `torch.save(state_dict)`,
with the run's `hparams.json` beside it. The mapping is exact: jaxgen's 3x3 convolutions take one more input
channel (openai's edge-bias channel), which gets zero weights, and that equals Glow-PyTorch's zero padding; jaxgen
stores ActNorm log-scales divided by 3 and stacks the K steps of a level on axis 0.

openai/glow's TF1 checkpoints (`abl-*`, `lsun-rnvp-*`) are not read. Their format would not need TensorFlow (a
tf.train.Saver V2 bundle: the .index file is a LevelDB-style table of BundleEntryProto records, the .data shards raw
tensor bytes), and the variable names map 1:1 (research/faithfulness-glow-lmconv.md, 2.3); but their learned top
prior varies at the image border (a zero-input conv with edge-bias padding), which jaxgen's per-channel `top` cannot
hold, and no TF1 runtime is available here to produce official outputs to test against.
"""
import os
import re

import numpy as np

from jaxgen import convert as convert_lib

WHAT = "a Glow-PyTorch checkpoint (a state dict with flow.layers.* keys)"
# Glow-PyTorch's --dataset -> TFDS name
DATASETS = {"cifar10": "cifar10", "svhn": "svhn_cropped"}


def read(path):
  """{"state_dict": {key: numpy}, "hparams": hparams.json beside the file} of a Glow-PyTorch checkpoint."""
  obj = convert_lib.torch_load(path)
  convert_lib.check_family(obj, "glow", path, WHAT)
  hparams = convert_lib.read_json(os.path.join(os.path.dirname(os.path.abspath(path)), "hparams.json"))
  return {"state_dict": convert_lib.to_numpy(dict(obj)), "hparams": hparams}


def _edge(w):
  """torch conv weight [O, I, 3, 3] -> jaxgen [3, 3, I + 1, O], the edge-bias channel's weights zero."""
  k = w.transpose(2, 3, 1, 0)
  return np.concatenate([k, np.zeros(k.shape[:2] + (1, k.shape[3]), k.dtype)], axis=2)


def _actnorm(sd, prefix):
  return {"bias": sd[prefix + "bias"].reshape(-1), "log_scale": sd[prefix + "logs"].reshape(-1) / 3.0}


def _zero_conv(sd, prefix, conv):  # Conv2dZeros: conv with bias, output times exp(3 logs)
  return {"kernel": _edge(sd[prefix + conv + "weight"]), "bias": sd[prefix + conv + "bias"],
          "logs": sd[prefix + "logs"].reshape(-1)}


def _step(sd, prefix, permutation):
  """(params, constants) of one FlowStep `flow.layers.N.`."""
  net = {"conv_in": {"kernel": _edge(sd[prefix + "block.0.conv.weight"]),
                     "actnorm": _actnorm(sd, prefix + "block.0.actnorm.")},
         "conv_hidden": {"kernel": sd[prefix + "block.2.conv.weight"].transpose(2, 3, 1, 0),
                         "actnorm": _actnorm(sd, prefix + "block.2.actnorm.")},
         "conv_out": _zero_conv(sd, prefix + "block.4.", "conv.")}
  params = {"actnorm": _actnorm(sd, prefix + "actnorm."), "couple": {"net": net}}
  constants = {}
  if permutation == "conv_lu":
    params["permute"] = {k: sd[prefix + "invconv." + k] for k in ("lower", "upper", "log_s")}
    constants = {"permute": {"perm": sd[prefix + "invconv.p"], "sign_s": sd[prefix + "invconv.sign_s"]}}
  elif permutation == "conv":
    params["permute"] = {"kernel": sd[prefix + "invconv.weight"]}  # [out, in] in both: y = W x
  return params, constants


def _stack(trees):
  if isinstance(trees[0], dict):
    return {k: _stack([t[k] for t in trees]) for k in trees[0]}
  return np.stack(trees)


def _get(hparams, key):
  if key not in hparams:
    raise convert_lib.ConversionError(f"hparams.json lacks {key!r}; use the hparams.json published with the "
                                      f"checkpoint.")
  return hparams[key]


def model_config(official):
  """flows.glow.Model keyword arguments for a Glow-PyTorch checkpoint; ConversionError for what jaxgen lacks."""
  sd, hp = official["state_dict"], official["hparams"]
  if _get(hp, "y_condition"):
    raise convert_lib.ConversionError(
        "hparams.json has y_condition=true: class-conditional Glow-PyTorch models are not converted yet (jaxgen's "
        "class-conditional Glow needs the classifier fixes of the `faithful` branch); use an unconditional model.")
  permutation = _get(hp, "flow_permutation")
  if permutation == "shuffle":
    raise convert_lib.ConversionError(
        "hparams.json has flow_permutation=shuffle: Glow-PyTorch keeps the shuffle's indices outside the state dict, "
        "so the checkpoint does not hold its permutation; only invconv and reverse models convert.")
  permutation = {"invconv": "conv_lu" if _get(hp, "LU_decomposed") else "conv", "reverse": "reverse"}.get(permutation)
  if permutation is None:
    raise convert_lib.ConversionError(f"hparams.json has flow_permutation={hp['flow_permutation']!r}; expected "
                                      f"invconv, shuffle or reverse.")
  levels, depth = int(_get(hp, "L")), int(_get(hp, "K"))
  steps = {int(m.group(1)) for k in sd for m in [re.match(r"flow\.layers\.(\d+)\.actnorm\.bias$", k)] if m}
  if len(steps) != levels * depth or "prior_h" not in sd:
    raise convert_lib.ConversionError(
        f"The state dict holds {len(steps)} flow steps (hparams.json: L={levels} x K={depth}) or lacks prior_h; the "
        f"file and hparams.json do not belong together.")
  _, c2, h, w = sd["prior_h"].shape  # [1, 2 C_top, H / 2^L, W / 2^L]
  image_shape = (h * 2**levels, w * 2**levels, c2 // 2 // 2 ** (levels + 1))
  return dict(image_shape=image_shape, levels=levels, depth=depth, hidden_channels=int(_get(hp, "hidden_channels")),
              coupling=_get(hp, "flow_coupling"), permutation=permutation, learn_top=bool(_get(hp, "learn_top")),
              num_bits=8)


def convert(official, overrides=None):
  """(config, {"params", "model_state"}) of a Glow-PyTorch checkpoint (`read`'s dict)."""
  from experiments.configs import glow_cifar10  # here: `read` needs only numpy and torch

  sd, hp = official["state_dict"], official["hparams"]
  model = model_config(official)
  levels, depth = model["levels"], model["depth"]
  if np.any(sd["prior_h"]):
    raise convert_lib.ConversionError("prior_h is not all zeros, unlike every Glow-PyTorch model; the file is corrupt.")
  params, constants = {}, {}
  for i in range(levels):
    # Layer i * (K + 2) is a squeeze, then K steps, then (below the top) the split.
    first = i * (depth + 2) + 1
    step_params, step_constants = zip(*[_step(sd, f"flow.layers.{first + j}.", model["permutation"])
                                        for j in range(depth)])
    params[f"steps_{i}"] = {"step": _stack(step_params)}
    if step_constants[0]:
      constants[f"steps_{i}"] = {"step": _stack(step_constants)}
    if i < levels - 1:
      params[f"splits_{i}"] = {"prior": _zero_conv(sd, f"flow.layers.{first + depth}.conv.", "conv.")}
  if model["learn_top"]:
    # Conv2dZeros on the all-zero prior_h: only bias * exp(3 logs) reaches the prior (the weights see zeros).
    params["top"] = sd["learn_top_fn.conv.bias"] * np.exp(3.0 * sd["learn_top_fn.logs"].reshape(-1))
  config = glow_cifar10.get_config()
  config.dataset = DATASETS.get(hp.get("dataset"), "cifar10")
  config.model.update(model)  # the file's architecture; remat and unroll stay glow_cifar10's
  # Glow-PyTorch's optimiser (train.py): Adamax with L2 5e-5, batch 64; its test numbers use the raw weights.
  config.batch_size = int(hp.get("batch_size", 64))
  config.optimizer = dict(name="adamax", lr=float(hp.get("lr", 5e-4)), l2_weight_decay=5e-5, warmup_steps=0)
  config.ema_decay = 0.0
  config = convert_lib.apply_overrides(config, overrides)
  return config, {"params": params, "model_state": {"constants": constants} if constants else {}}
