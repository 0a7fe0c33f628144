"""config.compute_dtype and config.matmul_precision through the trainer: each family's bfloat16 train step against
float32 on the same batch and parameters, float32 evaluation sums, the precision in effect at trace time."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.training import trainer
from tests.conftest import perturb

# Quickstart :smoke config -> largest |bf16 - fp32| / max(1, |fp32|) allowed on a loss of the same batch and
# parameters. bfloat16 keeps 8 bits of mantissa (rounding 2^-9 = 0.002 per operation); likelihood terms are float32.
LIKELIHOOD_TOLERANCE = {"glow_quickstart": 0.01, "nvae_quickstart": 0.03, "lmconv_quickstart": 0.02}
GAN_TOLERANCE = 0.05  # on g_loss and d_loss


def _config(name, **overrides):
  config = importlib.import_module(f"experiments.configs.{name}").get_config("smoke")
  for key, value in overrides.items():
    config[key] = value
  return config


def _copy(tree):
  return jax.tree.map(jnp.copy, tree)  # the train step donates its state


def _setups_state_and_batch(name):
  # NVAE's importance-weighted NLL would compile its forward pass twice more per dtype; its sum is float32 by
  # construction (float32 terms), and the ELBO terms checked here go through the same code.
  overrides = {"iw_samples": 0} if name.startswith("nvae") else {}
  fp32 = trainer.setup(_config(name, **overrides))
  bf16 = trainer.setup(_config(name, compute_dtype="bfloat16", **overrides))
  state = fp32.init()
  state["params"] = perturb(state["params"], 0.05)  # zero-initialised output layers would hide the networks
  return fp32, bf16, state, fp32.batch(fp32.train_data.get(np.arange(fp32.config.batch_size)))


def _check_close(a, b, tolerance, what):
  a, b = float(a), float(b)
  assert a != b, f"{what}: bfloat16 gave the float32 value exactly; is config.compute_dtype reaching the model?"
  assert abs(a - b) <= tolerance * max(1.0, abs(b)), (what, a, b)


def _check_train_step(bf16, state, batch):
  """The bfloat16 train step runs, its loss is finite, and parameters and optimiser state stay float32."""
  new_state, metrics = bf16.train_step(_copy(state), batch, jax.random.key(0))
  assert all(np.isfinite(float(v)) for k, v in metrics.items() if k.endswith("loss"))
  floats = {x.dtype for x in jax.tree.leaves((new_state["params"], new_state["opt"])) if x.dtype.kind == "f"}
  assert floats == {np.dtype(np.float32)}
  return metrics


@pytest.mark.parametrize("name", sorted(LIKELIHOOD_TOLERANCE))
def test_likelihood_bfloat16_step_runs_and_its_evaluation_is_float32_and_close(name):
  fp32, bf16, state, batch = _setups_state_and_batch(name)
  _check_train_step(bf16, state, batch)
  batch["mask"] = jnp.ones(batch["image"].shape[:1], jnp.float32)
  sums16 = bf16.eval_step(state, batch, jax.random.key(1))
  sums32 = fp32.eval_step(state, batch, jax.random.key(1))
  assert {k: v.dtype for k, v in sums16.items() if k != "count" and v.dtype != jnp.float32} == {}
  _check_close(sums16["loss"], sums32["loss"], LIKELIHOOD_TOLERANCE[name], f"{name} evaluation loss")


def test_stylegan2_bfloat16_step_runs_and_its_losses_are_close():
  fp32, bf16, state, batch = _setups_state_and_batch("stylegan2_quickstart")
  m16 = _check_train_step(bf16, state, batch)
  _, m32 = fp32.train_step(_copy(state), batch, jax.random.key(0))
  for key in ("g_loss", "d_loss"):
    _check_close(m16[key], m32[key], GAN_TOLERANCE, key)


@pytest.mark.parametrize("precision, expected", [("highest", "HIGHEST"), ("default", None)])
def test_matmul_precision_is_in_effect_when_the_steps_are_traced(precision, expected):
  s = trainer.setup(_config("realnvp_quickstart", matmul_precision=precision))
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct((s.config.batch_size,) + x.shape[1:], x.dtype,
                                                      sharding=s.batch_sharding), s.input.init_batch())
  mask = {"mask": jax.ShapeDtypeStruct((s.config.batch_size,), jnp.float32, sharding=s.batch_sharding)}
  for step, step_batch in ((s.train_step, batch), (s.eval_step, batch | mask)):
    text = step.lower(s.abstract_state, step_batch, jax.random.key(0)).as_text()
    assert "dot_general" in text
    found = {p for p in ("HIGHEST", "HIGH,") if f"precision = [{p}" in text}
    assert found == ({expected} if expected else set()), (precision, found)


@pytest.mark.parametrize("overrides, message", [
    ({"compute_dtype": "float16"}, "config.compute_dtype='float16' is not supported"),
    ({"matmul_precision": "fastest"}, "config.matmul_precision='fastest' is not supported"),
    ({"model": dict(image_shape=(28, 28, 1), dtype="bfloat16")}, "set --config.compute_dtype instead"),
])
def test_bad_precision_settings_fail_fast_with_a_clear_error(overrides, message):
  with pytest.raises(ValueError, match=message):
    trainer.setup(_config("realnvp_quickstart", **overrides))
