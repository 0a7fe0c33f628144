"""Published checkpoints -> jaxgen run directories (`python -m experiments.convert`).

Each family module `jaxgen.convert.<family>` has
  read(path) -> dict           the published file as published: its state dict as numpy arrays and the settings it
                               records (a file of another family is a ConversionError saying which it looks like);
  convert(official, overrides=None) -> (config, variables)
                               a complete experiment config and the train-state fields to replace
                               ({"params": ..., "model_state": ...}); an architecture jaxgen cannot express is a
                               ConversionError naming the key or setting.
This module holds what they share: reading torch files (torch is the optional extra `convert`, imported only here)
and `write_run`, which checks the converted variables against the state jaxgen initialises and writes
config.json, config.py and an orbax checkpoint, so that `experiments.evaluate`, `sample` and `train` (fine-tuning)
use the directory unchanged.
"""
import ast
import json
import os

import numpy as np

INSTALL_HINT = "pip install -e '.[convert]'"

CONFIG_PY = '''"""The config of a converted checkpoint: config.json beside this file. Use it as
--config={path} with experiments.evaluate, sample and train (--config.KEY=VALUE overrides work as usual)."""
import ast
import json
import os

import ml_collections


def get_config():
  with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if config.get("data_dir") is None:  # keep --config.data_dir=DIR overridable
    config.data_dir = ml_collections.config_dict.placeholder(str)
  return config
'''


class ConversionError(ValueError):
  """A published file that cannot be converted; the one-line message names the fix."""


def torch_load(path):
  """The unpickled object of a torch.save file (tensors on the CPU). Needs torch, the optional extra `convert`."""
  try:
    import torch  # the optional extra: training, evaluation and sampling never import it
  except ImportError:
    raise ConversionError(f"Reading {path} needs PyTorch; install it with {INSTALL_HINT}.") from None
  if not os.path.isfile(path):
    raise ConversionError(f"No file {path}; pass --checkpoint=PATH of a downloaded checkpoint.")
  try:
    # Published files pickle argparse.Namespace and other Python objects next to the tensors.
    return torch.load(path, map_location="cpu", weights_only=False)
  except ModuleNotFoundError as e:
    if e.name and e.name.split(".")[0] in ("torch_utils", "dnnlib"):
      raise ConversionError(f"{path} looks like a stylegan2 pickle (it needs {e.name}); pass --family=stylegan2.") \
          from None
    raise ConversionError(f"{path} pickles classes of module {e.name!r}, which is not installed; it is no published "
                          f"checkpoint of this --family.") from None
  except Exception as e:  # truncated zip, not a pickle, ...: torch raises many types
    raise ConversionError(f"{path} is not a readable torch checkpoint ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''}); download it again.") from None


def looks_like(obj):
  """The family a loaded checkpoint object looks like ("glow", "lmconv", "nvae", "stylegan2"), or None."""
  if not isinstance(obj, dict):
    return "stylegan2" if any(hasattr(obj, k) for k in ("G_ema", "mapping", "synthesis")) else None
  keys = {str(k) for k in obj}
  if {"model_state_dict", "args"} <= keys:
    return "lmconv"
  if {"state_dict", "args"} <= keys:
    return "nvae"
  if {"G_ema", "D"} & keys:
    return "stylegan2"
  if any(k.startswith("flow.layers.") for k in keys):
    return "glow"
  return None


def check_family(obj, family, path, what):
  """ConversionError unless `obj` (a loaded checkpoint) looks like `family`'s published files (`what`)."""
  guess = looks_like(obj)
  if guess == family:
    return
  if guess is not None:
    raise ConversionError(f"{path} looks like a {guess} checkpoint, not {what}; pass --family={guess}.")
  raise ConversionError(f"{path} is not {what} (found a {type(obj).__name__}"
                        f"{' with keys ' + str(sorted(map(str, obj))[:4]) if isinstance(obj, dict) else ''}); "
                        f"pass the published file or the right --family.")


def to_numpy(tree):
  """torch tensors (and anything array-like) in nested dicts/lists -> numpy: floats as float32, ints as int64."""
  if isinstance(tree, dict):
    return {k: to_numpy(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return type(tree)(to_numpy(v) for v in tree)
  if hasattr(tree, "detach"):  # a torch.Tensor, without importing torch
    tree = tree.detach().cpu()
    if tree.is_floating_point():
      tree = tree.float()
    tree = tree.numpy()
  if isinstance(tree, np.ndarray):
    if np.issubdtype(tree.dtype, np.floating):
      return tree.astype(np.float32)
    if np.issubdtype(tree.dtype, np.integer):
      return tree.astype(np.int64)
  return tree


def _leaves(tree):
  """{"a/b/c": leaf} of a nested dict; {"": tree} for a field that is one array (the GAN's w_avg)."""
  if not (isinstance(tree, dict) or hasattr(tree, "items")):
    return {"": tree}
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict) or hasattr(value, "items"):
      out |= {f"{key}/{k}": v for k, v in _leaves(dict(value)).items()}
    else:
      out[str(key)] = value
  return out


def _unflatten(flat):
  if list(flat) == [""]:  # one array
    return flat[""]
  tree = {}
  for path, value in flat.items():
    *parents, last = path.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[last] = value
  return tree


def check_variables(expected, given, field):
  """Raises ConversionError naming the first missing, unexpected or mis-shaped leaf of `given` (a nested dict of
  arrays) against `expected` (the initialised state field)."""
  want, have = _leaves(expected), _leaves(given)
  missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
  if missing:
    raise ConversionError(f"The converted {field} lack {len(missing)} leaf/leaves jaxgen's model has, e.g. "
                          f"{field}/{missing[0]}; the converter does not match this model config.")
  if extra:
    raise ConversionError(f"The converted {field} hold {len(extra)} leaf/leaves jaxgen's model lacks, e.g. "
                          f"{field}/{extra[0]}; the converter does not match this model config.")
  for path in sorted(want):
    if tuple(np.shape(have[path])) != tuple(want[path].shape):
      raise ConversionError(f"{field}/{path} has shape {tuple(np.shape(have[path]))} but jaxgen's model needs "
                            f"{tuple(want[path].shape)}; the converter does not match this model config.")
    if not np.all(np.isfinite(np.asarray(have[path], np.float64))):
      raise ConversionError(f"{field}/{path} holds NaN or inf values; the checkpoint is corrupt: download it again.")


def check_workdir(workdir):
  """ConversionError if `workdir` already holds a run (config.json or checkpoints): conversion never overwrites."""
  ckpt = os.path.join(workdir, "checkpoints")
  if os.path.exists(os.path.join(workdir, "config.json")) or (os.path.isdir(ckpt) and bool(os.listdir(ckpt))):
    raise ConversionError(f"{workdir} already holds a run (config.json or checkpoints/); pass a new --workdir.")


def write_run(config, variables, workdir):
  """Writes `workdir` as a jaxgen run at step 0 whose state holds the converted `variables`.

  variables: {state field name ("params", "model_state", ...): nested dict of numpy arrays}. The state is the
  family's own `init_state` (so optimiser slots and counters are fresh) with those fields replaced, after every
  leaf's path and shape is checked against it; a kept EMA starts at the converted params. Nothing is written unless
  every check passes. Returns the path of the config file to pass as --config to evaluate, sample and train.
  """
  import jax  # here, so that `read` and torch_load work in an environment with torch and numpy only

  from jaxgen import data
  from jaxgen.training import checkpoints
  from jaxgen.training import trainer

  check_workdir(workdir)
  config = trainer.with_defaults(config)
  _, model = trainer.build_model(config)
  # Init sees one image per device: the state's shapes do not depend on the batch, and the values are replaced.
  init_config = config.copy_and_resolve_references()
  with init_config.unlocked():
    init_config.batch_size = init_config.eval_batch_size = jax.device_count()
  # Synthetic labels as many as the model's classes (the trainer checks them against a conditional model's).
  num_classes = getattr(model, "num_classes", 0) or 10
  s = trainer.setup(init_config, train_data=data.synthetic(tuple(model.image_shape), num_classes=num_classes))
  unknown = sorted(set(variables) - set(s.abstract_state))
  if unknown:
    raise ConversionError(f"The converted variables name state field(s) {unknown} that {config.model_name}'s train "
                          f"state lacks (it has {sorted(s.abstract_state)}).")
  for field, tree in variables.items():  # against the shapes (jax.eval_shape): no compute before the checks pass
    check_variables(s.abstract_state[field], tree, field)
  state = jax.device_get(s.init())
  for field, tree in variables.items():
    want = _leaves(state[field])
    state[field] = _unflatten({p: np.asarray(v, dtype=want[p].dtype) for p, v in _leaves(tree).items()})
  if "ema_params" in state and "ema_params" not in variables and "params" in variables:
    state["ema_params"] = state["params"]
  state = jax.device_put(state, s.state_sharding)
  os.makedirs(workdir, exist_ok=True)
  checkpoints.check_workdir_config(workdir, config)
  config_py = os.path.join(workdir, "config.py")
  with open(config_py, "w") as f:
    f.write(CONFIG_PY.format(path=config_py))
  checkpointer = checkpoints.Checkpointer(workdir, keep=config.keep_checkpoints)
  checkpointer.save(state, force=True)
  checkpointer.close()
  return config_py


def read_json(path):
  """A JSON file as a dict; ConversionError naming the file when it is missing or not JSON."""
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise ConversionError(f"No {path}; it belongs beside the checkpoint (as published).") from None
  except json.JSONDecodeError as e:
    raise ConversionError(f"{path} is not valid JSON ({e}); download it again.") from None


def _parse(value, like):
  """A --config.KEY=VALUE string as the type of the value it replaces (`like`)."""
  if not isinstance(value, str) or isinstance(like, str):
    return value
  if isinstance(like, bool):
    if value.lower() not in ("true", "false", "1", "0"):
      raise ConversionError(f"{value!r} is not a bool; use true or false.")
    return value.lower() in ("true", "1")
  try:
    parsed = ast.literal_eval(value)
  except (ValueError, SyntaxError):
    if like is None:
      return value
    raise ConversionError(f"{value!r} cannot replace the config value {like!r}; give a "
                          f"{type(like).__name__}.") from None
  return tuple(parsed) if isinstance(like, (tuple, list)) and isinstance(parsed, (tuple, list)) else parsed


def apply_overrides(config, overrides):
  """config with {"a.b": value} set (string values from the command line parsed as the value they replace); an
  unknown key is a ConversionError naming it."""
  config = config.copy_and_resolve_references()
  for key, value in (overrides or {}).items():
    *parents, last = key.split(".")
    node = config
    for p in parents:
      if p not in node:
        raise ConversionError(f"--config.{key}: the converted config has no key {p!r}; known: {sorted(node)}.")
      node = node[p]
    if last not in node:
      raise ConversionError(f"--config.{key}: the converted config has no key {last!r}; known: {sorted(node)}.")
    try:
      with config.unlocked():
        node[last] = _parse(value, node[last])
    except TypeError as e:
      raise ConversionError(f"--config.{key}={value!r} does not fit the config ({e}).") from None
  return config
