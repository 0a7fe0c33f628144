"""StyleGAN2-ADA network pickles (NVlabs/stylegan2-ada-pytorch: cifar10.pkl, ffhq.pkl, afhq*.pkl, metfaces.pkl,
brecahad.pkl and the training snapshots) -> a jaxgen `gan.stylegan2` run.

read(path): the pickle as published, without the official code. Its networks are `torch_utils.persistence`
classes whose module source rides along in the pickle; a `pickle.Unpickler` maps them to a stand-in that keeps
only their recorded state (parameters, buffers, submodules, `init_kwargs`) and never executes the embedded source.
Tensors are rebuilt by torch (the optional extra `convert`); nothing else may be unpickled.

convert(official): config.model from the `init_kwargs` of G_ema and D, and the state fields
  params/generator <- G, ema_params <- G_ema, params/discriminator <- D, w_avg <- G_ema.mapping.w_avg,
  noise_const <- G_ema's `noise_const` buffers (the official G and G_ema share them).
Layout changes: OIHW -> HWIO kernels, [out, in] -> [in, out] dense weights, const CHW -> HWC; the up-sampling
convolutions (conv0) are flipped spatially, because the official up path runs a true convolution
(`flip_weight = (self.up == 1)`) and jaxgen a correlation; D's b4.fc is permuted from NCHW to NHWC flatten order.
Not carried over: the augment pipe (jaxgen has no ADA), the optimiser states (pickles hold none), `num_fp16_res`
(jaxgen runs fp32, so fp16 layers differ by their rounding) and Freeze-D's `freeze_layers` (training only).
The training recipe is not in the pickle: cifar10.pkl gets the official `cifar` config's, other datasets jaxgen's
defaults (the official `stylegan2` config); set others with --config.KEY=VALUE. Other datasets than CIFAR-10 become
`folder:NAME` (NAME from the pickle's training_set_kwargs): pass --config.dataset=folder:DIR of the images prepared by
experiments.prepare_data. Sample metrics use the offline classifier (no download); for the paper's FID pass
--config.sample_metrics.protocol=stylegan2-ada --config.sample_metrics.inception_path=FILE.npz.
"""
import io
import os
import pickle

import numpy as np

from jaxgen.convert import INSTALL_HINT
from jaxgen.convert import ConversionError
from jaxgen.convert import apply_overrides
from jaxgen.convert import check_family
from jaxgen.convert import to_numpy
from jaxgen.convert import torch_load

WHAT = "a StyleGAN2-ADA network pickle"
TORCH_MAGIC = 0x1950a86a20f9469cfc6c  # the first object of a legacy (pre-zip) torch.save file
# What a network pickle may hold besides the persistent networks: torch's tensor rebuilding and plain containers.
# Each entry names exactly what may be called: no `builtins.eval`, `getattr` or `__import__`, and torch's storages
# are read by `_load_storage` (weights_only), not torch.storage._load_from_bytes (which unpickles anything).
_ALLOWED = {
    "builtins": {"set", "frozenset", "dict", "list", "tuple", "slice", "bytearray", "bytes", "complex", "float", "int",
                 "bool", "str", "range"},
    "collections": {"OrderedDict", "defaultdict"},
    "_codecs": {"encode"},
    "numpy": {"dtype", "ndarray"},
    "numpy.core.multiarray": {"scalar", "_reconstruct"},
    "numpy._core.multiarray": {"scalar", "_reconstruct"},
    "torch._utils": {"_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state"},
}


def _load_storage(blob):
  """torch.storage._load_from_bytes, without its full unpickling: a storage is plain tensor data."""
  import torch  # pylint: disable=g-import-not-at-top
  return torch.load(io.BytesIO(blob), weights_only=True)


def _torch_attribute(name):
  """torch.NAME if it is data a pickle may name (a dtype, a storage class, Size, device), else None."""
  import torch  # pylint: disable=g-import-not-at-top
  value = getattr(torch, name, None)
  if isinstance(value, torch.dtype) or name.endswith("Storage") or name in ("Size", "device"):
    return value
  return None


class _Network:
  """Stand-in for a persistent official module: its class name and the state it pickled (a module __dict__)."""

  def __init__(self, meta):
    self.class_name = meta.get("class_name")
    self.state = dict(meta.get("state") or {})

  def state_dict(self, prefix=""):
    """{name: tensor} as torch's `state_dict`: parameters, persistent buffers, then submodules, dot-separated."""
    out, state = {}, self.state
    skip = set(state.get("_non_persistent_buffers_set") or ())
    out |= {prefix + k: v for k, v in (state.get("_parameters") or {}).items() if v is not None}
    out |= {prefix + k: v for k, v in (state.get("_buffers") or {}).items() if v is not None and k not in skip}
    for name, sub in (state.get("_modules") or {}).items():
      if isinstance(sub, _Network):
        out |= sub.state_dict(f"{prefix}{name}.")
      elif sub is not None:  # a plain torch module (none in the official networks)
        out |= {f"{prefix}{name}.{k}": v for k, v in sub.state_dict().items()}
    return out


class _Unpickler(pickle.Unpickler):
  def __init__(self, f, path):
    super().__init__(f)
    self.path = path

  def find_class(self, module, name):
    if module == "torch_utils.persistence" and name == "_reconstruct_persistent_obj":
      return _Network
    if module.startswith("dnnlib") and name == "EasyDict":
      return dict
    if module == "dnnlib.tflib.network":
      raise ConversionError(f"{self.path} is a TensorFlow-era pickle; convert it first with the official "
                            f"`python legacy.py --source={self.path} --dest=NEW.pkl` (stylegan2-ada-pytorch).")
    if module == "torch.storage" and name == "_load_from_bytes":
      return _load_storage
    if module == "torch" and _torch_attribute(name) is not None:
      return _torch_attribute(name)
    if name in _ALLOWED.get(module, ()):
      return super().find_class(module, name)
    raise ConversionError(f"{self.path} pickles {module}.{name}, which no StyleGAN2-ADA network pickle holds; "
                          f"pass a published .pkl (or the right --family).")


def _plain(value):
  """init_kwargs as plain dicts and lists (EasyDict is already a dict here; tuples become lists, as in JSON)."""
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  return value


def read(path):
  """-> {"G", "D", "G_ema": {"class_name", "init_kwargs", "state_dict": {name: float32 array}},
  "training_set_kwargs": dict or None}: the networks of a StyleGAN2-ADA pickle, as published."""
  try:
    import torch  # noqa: F401  (the optional extra: tensors in the pickle are rebuilt by torch)
  except ImportError:
    raise ConversionError(f"Reading {path} needs PyTorch; install it with {INSTALL_HINT}.") from None
  if not os.path.isfile(path):
    raise ConversionError(f"No file {path}; pass --checkpoint=PATH of a downloaded network pickle.")
  with open(path, "rb") as f:
    zipped = f.read(4) == b"PK\x03\x04"
  try:
    with open(path, "rb") as f:
      data = None if zipped else _Unpickler(f, path).load()
  except ConversionError:
    raise
  except Exception as e:  # truncated or not a pickle: pickle and torch raise many types
    raise ConversionError(f"{path} is not a readable network pickle ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''}); download it again.") from None
  if zipped or data == TORCH_MAGIC:  # a torch.save checkpoint: another family's
    check_family(torch_load(path), None, path, WHAT)
  if not (isinstance(data, dict) and all(isinstance(data.get(k), _Network) for k in ("G", "D", "G_ema"))):
    raise ConversionError(f"{path} holds no G, D and G_ema networks; it is not {WHAT}.")
  out = {"training_set_kwargs": _plain(data.get("training_set_kwargs"))}
  for key, cls in (("G", "Generator"), ("D", "Discriminator"), ("G_ema", "Generator")):
    net = data[key]
    if net.class_name != cls or net.state.get("_init_args"):
      raise ConversionError(f"{path}: {key} is a {net.class_name} built with positional arguments "
                            f"{net.state.get('_init_args')}; jaxgen converts the official {cls} of "
                            f"training/networks.py only.")
    out[key] = {"class_name": net.class_name, "init_kwargs": _plain(net.state.get("_init_kwargs") or {}),
                "state_dict": to_numpy(net.state_dict())}
  return out


# ----------------------------------------------------------------------------------------------------------------
# init_kwargs -> config.model.

# Settings jaxgen has no choice of, with the official value it implements.
_FIXED = {"activation": "lrelu", "resample_filter": [1, 3, 3, 1], "use_noise": True, "kernel_size": 3}
# Settings that change precision, memory layout or training only (module docstring).
_IGNORED = ("num_fp16_res", "fp16_channels_last", "channels_last", "freeze_layers")


def _take(kwargs, where, known, fixed=()):
  """{key: value} of `known` keys present in `kwargs`; a key jaxgen cannot follow is a ConversionError."""
  out = {}
  for key, value in kwargs.items():
    if key in fixed:
      if value is not None and _plain(value) != fixed[key]:
        raise ConversionError(f"{where}.{key}={value!r}: jaxgen implements only {fixed[key]!r}.")
    elif key in known:
      out[key] = value
    elif key not in _IGNORED:
      raise ConversionError(f"{where}.{key}={value!r} has no counterpart in jaxgen's StyleGAN2.")
  return out


def _mapping(kwargs, where, width):
  """(num_layers, lr_multiplier, w_avg_beta or None) of MappingNetwork kwargs; hidden widths must be `width`."""
  m = _take(kwargs, where, ("num_layers", "lr_multiplier", "w_avg_beta", "embed_features", "layer_features"),
            _FIXED)
  for key in ("embed_features", "layer_features"):
    if m.get(key) not in (None, width):
      raise ConversionError(f"{where}.{key}={m[key]}: jaxgen's mapping layers are all {width} wide.")
  return m.get("num_layers", 8), m.get("lr_multiplier", 0.01), m.get("w_avg_beta", 0.995)


def model_config(g, d):
  """config.model (architecture keys) from the init_kwargs of G (or G_ema) and D."""
  g_top = _take(g, "G", ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs",
                         "synthesis_kwargs"))
  syn = _take(g_top.get("synthesis_kwargs") or {}, "G.synthesis_kwargs", ("channel_base", "channel_max",
                                                                          "conv_clamp"),
              dict(_FIXED, architecture="skip"))
  d_top = _take(d, "D", ("c_dim", "img_resolution", "img_channels", "architecture", "channel_base", "channel_max",
                         "conv_clamp", "cmap_dim", "block_kwargs", "mapping_kwargs", "epilogue_kwargs"))
  _take(d_top.get("block_kwargs") or {}, "D.block_kwargs", (), _FIXED)
  epi = _take(d_top.get("epilogue_kwargs") or {}, "D.epilogue_kwargs", ("mbstd_group_size", "mbstd_num_channels"),
              _FIXED)
  w_dim = g_top["w_dim"]
  res, channels, c_dim = g_top["img_resolution"], g_top["img_channels"], g_top.get("c_dim", 0)
  channel_base, channel_max = syn.get("channel_base", 32768), syn.get("channel_max", 512)
  conv_clamp = syn.get("conv_clamp")
  # jaxgen's networks share these; no published pickle has G and D differ in them.
  for key, g_value, d_default in (("img_resolution", res, None), ("img_channels", channels, None),
                                  ("c_dim", c_dim, 0), ("channel_base", channel_base, 32768),
                                  ("channel_max", channel_max, 512), ("conv_clamp", conv_clamp, None)):
    if d_top.get(key, d_default) != g_value:
      raise ConversionError(f"G has {key}={g_value} but D {key}={d_top.get(key, d_default)}; jaxgen's StyleGAN2 "
                            f"uses one {key} for both networks.")
  architecture = d_top.get("architecture", "resnet")
  if architecture not in ("resnet", "orig"):
    raise ConversionError(f"D.architecture={architecture!r}: jaxgen's discriminator is 'resnet' or 'orig'.")
  c4 = min(channel_base // 4, channel_max)
  cmap_dim = d_top.get("cmap_dim")
  g_layers, g_lr, w_avg_beta = _mapping(g_top.get("mapping_kwargs") or {}, "G.mapping_kwargs", w_dim)
  d_layers, d_lr, _ = _mapping(d_top.get("mapping_kwargs") or {}, "D.mapping_kwargs", cmap_dim or c4)
  return dict(image_shape=(res, res, channels), num_classes=c_dim, z_dim=g_top["z_dim"], w_dim=w_dim,
              mapping_layers=g_layers, mapping_lr_multiplier=g_lr, w_avg_beta=1.0 if w_avg_beta is None else w_avg_beta,
              channel_base=channel_base, channel_max=channel_max, conv_clamp=conv_clamp, d_architecture=architecture,
              mbstd_group_size=epi.get("mbstd_group_size", 4), mbstd_num_channels=epi.get("mbstd_num_channels", 1),
              d_mapping_layers=d_layers, d_mapping_lr_multiplier=d_lr, cmap_dim=cmap_dim)


def _dataset(training_set_kwargs):
  """The TFDS name of the training set (cifar10), else a `folder:` note naming the official dataset."""
  path = str((training_set_kwargs or {}).get("path") or "")
  stem = os.path.splitext(os.path.basename(path.rstrip("/")))[0]
  if stem.lower().startswith("cifar10"):
    return "cifar10"
  return f"folder:{stem or 'IMAGES'}"  # placeholder: --config.dataset=folder:DIR of the prepared images


def make_config(model, dataset):
  """The experiment config: experiments/configs/stylegan2_cifar10.py with the pickle's architecture; its training
  recipe for CIFAR-10 (the official `cifar` config), jaxgen's defaults (official `stylegan2`) otherwise."""
  from experiments.configs import stylegan2_cifar10  # here: `read` needs only numpy and torch

  config = stylegan2_cifar10.get_config()
  recipe = {k: v for k, v in config.model.items() if k not in model and k != "image_shape"}
  with config.unlocked():
    config.dataset = dataset
    config.model = dict(model, **(recipe if dataset == "cifar10" else {}))
    if dataset != "cifar10":
      config.optimizer = {}
    # The offline classifier, so that the run evaluates without downloads; the paper's FID: protocol=stylegan2-ada
    # with sample_metrics.inception_path (experiments/configs/stylegan2_cifar10.py).
    config.sample_metrics = dict(protocol="")
  return config


# ----------------------------------------------------------------------------------------------------------------
# State dicts -> jaxgen variables.


def _kernel(w, flip=False):
  """OIHW -> HWIO (flipped spatially for the official up-sampling convolutions, which are true convolutions)."""
  w = np.transpose(w, (2, 3, 1, 0))
  return np.ascontiguousarray(w[::-1, ::-1] if flip else w)


def _set(tree, path, value):
  *parents, last = path.split("/")
  for p in parents:
    tree = tree.setdefault(p, {})
  tree[last] = np.asarray(value, np.float32)


def _dense(tree, path, sd, name):
  _set(tree, f"{path}/kernel", sd.pop(f"{name}.weight").T)
  if f"{name}.bias" in sd:
    _set(tree, f"{path}/bias", sd.pop(f"{name}.bias"))


def _conv(tree, path, sd, name, flip=False):
  _set(tree, f"{path}/kernel", _kernel(sd.pop(f"{name}.weight"), flip))
  if f"{name}.bias" in sd:
    _set(tree, f"{path}/bias", sd.pop(f"{name}.bias"))


def _mapping_params(tree, path, sd, prefix):
  if f"{prefix}embed.weight" in sd:
    _dense(tree, f"{path}/embed", sd, f"{prefix}embed")
  i = 0
  while f"{prefix}fc{i}.weight" in sd:
    _dense(tree, f"{path}/fc{i}", sd, f"{prefix}fc{i}")
    i += 1


def _drop_filters(sd, where):
  """Removes the resample_filter buffers after checking they hold jaxgen's [1, 3, 3, 1] filter."""
  f = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
  for name in [k for k in sd if k.endswith("resample_filter")]:
    value = sd.pop(name)
    if value.shape != f.shape or not np.allclose(value, f):
      raise ConversionError(f"{where}.{name} is not the [1, 3, 3, 1] filter jaxgen implements.")


def _leftover(sd, where):
  if sd:
    raise ConversionError(f"{where} has {len(sd)} entries jaxgen's StyleGAN2 has no place for, e.g. "
                          f"{sorted(sd)[0]}.")


def generator_variables(state_dict, where="G"):
  """(params, noise_const, w_avg) of a Generator's state dict."""
  sd = dict(state_dict)
  _drop_filters(sd, where)
  params, noise = {}, {}
  _mapping_params(params, "mapping_net", sd, "mapping.")
  w_avg = sd.pop("mapping.w_avg")
  const = sd.pop("synthesis.b4.const")  # [C, 4, 4]
  _set(params, "synthesis_net/b4/const", np.transpose(const, (1, 2, 0)))
  blocks = sorted({int(k.split(".")[1][1:]) for k in sd if k.startswith("synthesis.b")})
  for res in blocks:
    for layer in ("conv0", "conv1"):
      name, path = f"synthesis.b{res}.{layer}", f"synthesis_net/b{res}/{layer}"
      if f"{name}.weight" not in sd:
        continue
      _set(params, f"{path}/conv/kernel", _kernel(sd.pop(f"{name}.weight"), flip=layer == "conv0"))
      _dense(params, f"{path}/affine", sd, f"{name}.affine")
      _set(params, f"{path}/bias", sd.pop(f"{name}.bias"))
      _set(params, f"{path}/noise_strength", sd.pop(f"{name}.noise_strength"))
      _set(noise, f"{path}/noise", sd.pop(f"{name}.noise_const"))
    name, path = f"synthesis.b{res}.torgb", f"synthesis_net/b{res}/torgb"
    _set(params, f"{path}/conv/kernel", _kernel(sd.pop(f"{name}.weight")))
    _dense(params, f"{path}/affine", sd, f"{name}.affine")
    _set(params, f"{path}/bias", sd.pop(f"{name}.bias"))
  _leftover(sd, where)
  return params, noise, np.asarray(w_avg, np.float32)


def discriminator_params(state_dict, where="D"):
  """params of a Discriminator's state dict ('resnet' or 'orig')."""
  sd = dict(state_dict)
  _drop_filters(sd, where)
  params = {}
  blocks = sorted({int(k.split(".")[0][1:]) for k in sd if k[0] == "b" and not k.startswith("b4.")})
  for res in blocks:
    for layer in ("fromrgb", "conv0", "conv1", "skip"):
      if f"b{res}.{layer}.weight" in sd:
        _conv(params, f"b{res}/{layer}", sd, f"b{res}.{layer}")
  _mapping_params(params, "mapping", sd, "mapping.")
  _conv(params, "b4_conv", sd, "b4.conv")
  fc = sd.pop("b4.fc.weight")  # [C, C * 4 * 4], input flattened as NCHW
  c = fc.shape[0] if fc.shape[1] % 16 == 0 else None
  if c is None:
    raise ConversionError(f"{where}.b4.fc.weight has shape {fc.shape}; expected [C, C * 16].")
  in_channels = fc.shape[1] // 16
  _set(params, "b4_fc/kernel", fc.reshape(c, in_channels, 4, 4).transpose(2, 3, 1, 0).reshape(-1, c))
  _set(params, "b4_fc/bias", sd.pop("b4.fc.bias"))
  _dense(params, "b4_out", sd, "b4.out")
  _leftover(sd, where)
  return params


def convert(official, overrides=None):
  """(config, variables) of `read`'s result: the train-state fields params, ema_params, w_avg and noise_const."""
  g, d, g_ema = official["G"], official["D"], official["G_ema"]
  if g["init_kwargs"] != g_ema["init_kwargs"]:
    raise ConversionError("G and G_ema were built with different init_kwargs; a pickle written by the official "
                          "training loop has the same for both.")
  model = model_config(g_ema["init_kwargs"], d["init_kwargs"])
  config = apply_overrides(make_config(model, _dataset(official.get("training_set_kwargs"))), overrides)
  g_params, _, _ = generator_variables(g["state_dict"], "G")
  ema_params, noise_const, w_avg = generator_variables(g_ema["state_dict"], "G_ema")
  variables = {"params": {"generator": g_params, "discriminator": discriminator_params(d["state_dict"])},
               "ema_params": ema_params, "w_avg": w_avg, "noise_const": noise_const}
  return config, variables
