"""Orbax checkpoints of the train state: atomic, keep-N, resumed automatically, never from a non-finite state.

Beside `checkpoints/` the workdir holds `config.json`, the config that first trained there; resuming with a config
whose model differs is refused before any checkpoint is read. Paths go through `etils.epath` (local or gs://, ...);
orbax writes the arrays itself (tensorstore), so remote checkpoints need orbax's own credentials for that store.
"""
import json
import logging

from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from jaxgen.training import writers

logger = logging.getLogger("jaxgen")

_IDENTITY_KEYS = ("model_name", "model")  # what a checkpoint must agree with to be restored
# config.model keys that say how the model runs, not what it is: the same parameters restore under any value.
_EXECUTION_KEYS = ("conv_impl",)


class CheckpointError(RuntimeError):
  """A checkpoint exists but cannot be restored into the requested state."""


def _model_identity(values):
  """{model_name, model} of a config dict or a saved config.json, as JSON values, without `_EXECUTION_KEYS`."""
  identity = {key: json.loads(json.dumps(values.get(key), default=list)) for key in _IDENTITY_KEYS}
  if isinstance(identity["model"], dict):
    identity["model"] = {k: v for k, v in identity["model"].items() if k not in _EXECUTION_KEYS}
  return identity


def read_config(workdir):
  """The config that trained `workdir` (its config.json, written by experiments.train), as a ConfigDict."""
  path = epath.Path(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} does not exist; pass a run directory written by python -m experiments.train "
                            f"(or experiments.convert), or its --config.")
  return ml_collections.ConfigDict(json.loads(path.read_text()))


def check_workdir_config(workdir, config, write=True):
  """Writes DIR/config.json on first use (if `write`); raises if an existing one names a different model."""
  path = epath.Path(workdir) / "config.json"
  current = _model_identity(config.to_dict())
  if path.exists():
    saved = json.loads(path.read_text())
    saved_identity = _model_identity(saved)
    if saved_identity != current:
      diff = {k: (saved_identity[k], current[k]) for k in _IDENTITY_KEYS if saved_identity[k] != current[k]}
      renamed = ""
      if saved_identity["model_name"] == current["model_name"] and isinstance(saved_identity["model"], dict):
        gone = sorted(set(saved_identity["model"]) - set(current["model"]))
        if gone:  # e.g. a run from before StyleGAN2's g_lr/d_lr/betas/eps moved to config.optimizer
          renamed = (f" If it is the same model written by an older jaxgen (its config.model keys {gone} have since "
                     f"moved or been renamed), put the requested `model` (and `optimizer`) into {path}: the "
                     f"checkpoint's arrays are unchanged.")
      raise CheckpointError(
          f"{workdir} holds a run of a different model (saved vs requested: {diff}); use a new --workdir, "
          f"or the config that trained there.{renamed}")
  elif write and jax.process_index() == 0:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(json.loads(config.to_json_best_effort()), indent=2))
    tmp.replace(path)  # a reader never sees half a file (object stores: a copy, then a delete)


def all_finite(state):
  return bool(jax.device_get(jnp.all(jnp.asarray(
      [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]))))


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` with jaxgen's guarantees and errors."""

  def __init__(self, workdir, keep=3):
    self.directory = epath.Path(workdir) / "checkpoints"
    if not writers.is_remote(self.directory):
      self.directory = self.directory.resolve()  # orbax wants absolute paths
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, state, force=False):
    """Saves at state["step"] unless the state holds a NaN or inf (then logs and refuses)."""
    step = int(jax.device_get(state["step"]))
    if step in self.manager.all_steps():
      return False
    if not all_finite(state):
      logger.error("Not saving step %d: the train state holds non-finite values.", step)
      return False
    saved = self.manager.save(step, args=ocp.args.StandardSave(state), force=force)
    return saved

  def restore(self, abstract_state, step=None):
    """Restores the latest (or given) step into the structure, dtypes and shardings of `abstract_state`."""
    step = self.latest_step() if step is None else step
    try:
      return self.manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(
          f"Checkpoint {self.directory}/{step} does not match this model/config ({str(e).splitlines()[0][:300]}); "
          f"use a new --workdir, or the config that wrote it.") from e
    except Exception as e:  # unreadable or truncated files: never silently start over
      raise CheckpointError(
          f"Checkpoint {self.directory}/{step} could not be read ({type(e).__name__}: {str(e).splitlines()[0][:300]}). "
          f"Delete that step's folder to resume from an earlier one, or use a new --workdir.") from e

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()
