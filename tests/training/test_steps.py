"""The likelihood families' step functions (jaxgen.training.steps), on a tiny LMConv: dropout from the "dropout"
stream, labels ignored, evaluation sums for one order and the order ensemble, the learning rate reported, and
the skip of non-finite updates."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxgen.autoregressive import lmconv
from jaxgen.training import optim
from jaxgen.training import steps

CONFIG = ml_collections.ConfigDict(dict(ema_decay=0.0, total_steps=100,
                                        optimizer=dict(lr=1e-3, warmup_steps=10, schedule="cosine")))
TX = optim.make_optimizer(CONFIG)
IMAGES = jax.random.randint(jax.random.key(0), (4, 4, 4, 3), 0, 256).astype(jnp.uint8)
BATCH = {"image": IMAGES, "label": jnp.arange(4, dtype=jnp.int32), "mask": jnp.array([1.0, 1.0, 1.0, 0.0])}


MODEL = lmconv.LMConvTiny(image_shape=(4, 4, 3), likelihood="dmol", nr_resnet=1, dropout_rate=0.5,
                          train_orders=("s_curve",), eval_orders=("s_curve", "hilbert_rot90"))
STATE = jax.jit(functools.partial(steps.init_state, model=MODEL, tx=TX, config=CONFIG))(jax.random.key(1), BATCH)


def _train_losses(rngs):
  train_step = jax.jit(functools.partial(steps.train_step, model=MODEL, tx=TX, config=CONFIG))
  return [float(train_step(STATE, BATCH, rng)[1]["loss"]) for rng in rngs]


def test_train_step_draws_dropout_from_the_step_rng():
  # One training order and no dequantisation noise: dropout is the only randomness in the loss.
  losses = _train_losses([jax.random.key(2), jax.random.key(2), jax.random.key(3)])
  assert losses[0] == losses[1]  # a function of (rng, step)
  assert losses[0] != losses[2]  # the dropout mask comes from the rng


def test_eval_step_sums_single_order_and_ensemble_and_ignores_labels():
  model, state = MODEL, STATE
  evaluate = jax.jit(lambda b: steps.eval_step(state, b, jax.random.key(4), model=model, config=CONFIG))
  sums = evaluate(BATCH)
  other_labels = evaluate(BATCH | {"label": jnp.array([9, 9, 9, 9], jnp.int32)})
  assert set(sums) == {"loss", "nats", "bpd", "nats_ensemble", "bpd_ensemble", "count"}
  assert float(sums["count"]) == 3.0
  variables = {"params": state["params"]}
  lp = [model.apply(variables, IMAGES, name, method="log_prob") for name in model.eval_orders]
  np.testing.assert_allclose(sums["nats"], -lp[0][:3].sum(), rtol=1e-5)  # first order, real examples only
  ens = jax.nn.logsumexp(jnp.stack(lp), 0) - np.log(2)
  np.testing.assert_allclose(sums["bpd_ensemble"], -ens[:3].sum() / (48 * np.log(2)), rtol=1e-5)
  for key in sums:
    np.testing.assert_array_equal(sums[key], other_labels[key])  # unconditional: labels are ignored


def test_train_step_reports_the_learning_rate_of_its_step():
  train_step = jax.jit(functools.partial(steps.train_step, model=MODEL, tx=TX, config=CONFIG))
  schedule = optim.learning_rate(CONFIG)
  state = STATE
  for step in range(3):  # warm-up: 0, 1e-4, 2e-4
    state, metrics = train_step(state, BATCH, jax.random.key(2))
    np.testing.assert_allclose(metrics["lr"], schedule(step), rtol=1e-6)
    np.testing.assert_allclose(metrics["lr"], 1e-3 * step / 10, rtol=1e-6, atol=1e-12)


def test_keep_if_finite_keeps_the_old_state_counts_and_advances_the_step():
  old = {"step": jnp.int32(4), "params": {"w": jnp.zeros(3)}, "opt": (jnp.ones(2),), "other": jnp.float32(7.0),
         "skipped_updates": jnp.int32(1), "consecutive_skips": jnp.int32(1)}
  new = {"params": {"w": jnp.full(3, 2.0)}, "opt": (jnp.full(2, 5.0),)}  # what the update changed
  kept = jax.jit(steps.keep_if_finite)(new, old, jnp.bool_(False))
  np.testing.assert_array_equal(kept["params"]["w"], old["params"]["w"])
  np.testing.assert_array_equal(kept["opt"][0], old["opt"][0])
  assert (int(kept["step"]), int(kept["skipped_updates"]), int(kept["consecutive_skips"])) == (5, 2, 2)
  assert set(kept) == set(old) and float(kept["other"]) == 7.0
  applied = jax.jit(steps.keep_if_finite)(new, old, jnp.bool_(True))
  np.testing.assert_array_equal(applied["params"]["w"], new["params"]["w"])
  np.testing.assert_array_equal(applied["opt"][0], new["opt"][0])
  assert (int(applied["step"]), int(applied["skipped_updates"]), int(applied["consecutive_skips"])) == (5, 1, 0)
  assert set(applied) == set(old) and float(applied["other"]) == 7.0


def test_all_finite_looks_at_every_inexact_leaf_only():
  assert bool(steps.all_finite({"a": jnp.ones(2), "b": jnp.int32(3)}))
  assert not bool(steps.all_finite({"a": jnp.ones(2), "b": jnp.array([0.0, jnp.nan])}))
  assert not bool(steps.all_finite([jnp.array(jnp.inf, jnp.bfloat16)]))
