"""StyleGAN2 training: the regularisers, the optimisers from config.optimizer, the EMA, the step on the tiny model,
and the quickstart's :smoke run reproducing, step for step, what the code before the one-layout refactor computed
(and its state layout, so checkpoints written before still restore)."""
import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments.configs import stylegan2_quickstart
from jaxgen.gan import networks
from jaxgen.gan import stylegan2 as sg
from jaxgen.gan import training
from jaxgen.training import trainer

LAYOUT = os.path.join(os.path.dirname(__file__), "stylegan2_quickstart_smoke_state.txt")

# stylegan2_quickstart.py:smoke, 3 trainer steps (the trainer's batches, rng key(seed)), computed with the code
# before the refactor (commit 1a3550b) under JAX_DISABLE_MOST_OPTIMIZATIONS=true, as the suite runs.
EXPECTED_METRICS = {
    "g_loss": (0.8169247508049011, 0.9210643172264099, 0.9463278651237488),
    "d_loss": (1.3899767398834229, 1.3396209478378296, 1.3098748922348022),
    "r1_penalty": (0.00043019469012506306, 0.00043019469012506306, 0.0005579020944423974),
    "pl_penalty": (0.3081236481666565, 0.3081236481666565, 0.24695655703544617),
    "pl_mean": (0.005562546197324991, 0.005562546197324991, 0.010331453755497932),
    "fake_score": (-0.22079521417617798, -0.4036972224712372, -0.43520498275756836),
    "real_score": (-0.16860219836235046, -0.15345853567123413, -0.218556746840477),
    "d_fake_score": (-0.18371662497520447, -0.2848151922225952, -0.4637165665626526),
    "real_sign": (-1.0, -1.0, -1.0),
    "ema_beta": (0.0, 9.5367431640625e-07, 0.0009765625),
}
# (sum, sum of absolute values) of each part of the state after the 3 steps.
EXPECTED_SUMS = {"generator": (-5069.671802432131, 45719.30004085318),
                 "discriminator": (4.762562382791657, 2774.525783962279),
                 "ema_params": (-5069.670771746823, 45719.30012643921),
                 "w_avg": (0.15315309911966324, 0.19138456135988235)}


def _sums(tree):
  leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]
  return sum(x.sum() for x in leaves), sum(np.abs(x).sum() for x in leaves)


def _max_change(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _smoke_setup():
  return trainer.setup(stylegan2_quickstart.get_config("smoke"))


def test_state_layout_is_the_checkpointed_one():
  """The trainer's state for the quickstart's :smoke (every path, shape and dtype, the optax.adam states) is the
  one checkpoints were written with before the refactor, so they restore."""
  s = _smoke_setup()
  layout = [f"{jax.tree_util.keystr(p)} {tuple(x.shape)} {x.dtype}"
            for p, x in jax.tree_util.tree_flatten_with_path(s.abstract_state)[0]]
  with open(LAYOUT) as f:
    assert layout == f.read().splitlines()
  for part in ("generator", "discriminator"):
    assert [type(x).__name__ for x in s.abstract_state["opt"][part]] == ["ScaleByAdamState", "EmptyState"]


def test_quickstart_smoke_reproduces_the_steps_before_the_refactor():
  s = _smoke_setup()
  state = s.init()
  batches = s.input.train_batches(0)
  rng = jax.random.key(s.config.seed)
  got = []
  for _ in range(3):
    state, metrics = s.train_step(state, s.batch(next(batches)), rng)
    got.append(jax.device_get(metrics))
  for key, want in EXPECTED_METRICS.items():
    np.testing.assert_allclose([m[key] for m in got], want, rtol=1e-6, err_msg=key)
  # The smoke config keeps the official default lr 0.002 (as before, when it lived in config.model), corrected
  # with c = 2/3 for both intervals of 2.
  np.testing.assert_allclose([m["g_lr"] for m in got] + [m["d_lr"] for m in got], 0.002 * 2 / 3, rtol=1e-6)
  parts = {"generator": state["params"]["generator"], "discriminator": state["params"]["discriminator"],
           "ema_params": state["ema_params"], "w_avg": state["w_avg"]}
  for key, want in EXPECTED_SUMS.items():
    # w_avg, a small running mean, moved 1.2e-6 (relative) with the round-off of the jaxgen.ops kernels: float32 noise.
    np.testing.assert_allclose(_sums(parts[key]), want, rtol=3e-6 if key == "w_avg" else 1e-6, err_msg=key)
  assert int(state["step"]) == 3 and int(state["skipped_updates"]) == 0


def test_r1_equals_squared_input_gradient_norm(tiny):
  model, state, batch = tiny
  real = networks.to_float(batch["image"])
  d_fn = lambda x: networks.Discriminator(model).apply({"params": state["params"]["discriminator"]}, x)
  got = jax.jit(functools.partial(training.r1_penalty, d_fn))(real)
  # Direct: the full Jacobian of the logits [B] w.r.t. the batch, summed over logits, squared per example.
  jac = jax.jit(jax.jacrev(d_fn))(real)  # [B, B, H, W, C]
  want = jnp.sum(jnp.square(jac.sum(axis=0)), axis=(1, 2, 3))
  np.testing.assert_allclose(got, want, rtol=1e-4)
  # And on a discriminator with a known gradient: D(x) = sum(a * x^2) -> |2 a x|^2.
  a = jax.random.normal(jax.random.key(5), real.shape[1:])
  quad = training.r1_penalty(lambda x: jnp.sum(a * x ** 2, axis=(1, 2, 3)), real)
  np.testing.assert_allclose(quad, jnp.sum((2 * a * real) ** 2, axis=(1, 2, 3)), rtol=1e-5)


def test_path_length_matches_jacobian():
  m = jax.random.normal(jax.random.key(0), (3 * 4, 2 * 2 * 1))
  synth = lambda ws: (ws.reshape(ws.shape[0], -1) @ m).reshape(ws.shape[0], 2, 2, 1)  # ws [B, 3, 4]
  ws = jax.random.normal(jax.random.key(1), (2, 3, 4))
  rng = jax.random.key(2)
  got = training.path_length(synth, ws, rng)
  y = jax.random.normal(rng, (2, 2, 2, 1)) / 2.0  # / sqrt(H W)
  jty = (y.reshape(2, -1) @ m.T).reshape(2, 3, 4)  # J^T y per example
  np.testing.assert_allclose(got, jnp.sqrt(jnp.mean(jnp.sum(jty ** 2, axis=2), axis=1)), rtol=1e-5)


def test_lazy_regularization_correction():
  lr, betas = training.lazy_regularization(0.0025, (0.0, 0.99), 16)
  c = 16 / 17
  assert lr == pytest.approx(0.0025 * c) and betas[0] == 0.0 and betas[1] == pytest.approx(0.99 ** c)
  assert training.lazy_regularization(0.002, (0.0, 0.99), None) == (0.002, (0.0, 0.99))
  # The G optimiser (interval 4) is Adam with lr * 4/5, beta2 = 0.99 ** (4/5): compare with Adam written out.
  g_tx = training.make_optimizers(sg.Model(pl_interval=4), dict(generator=dict(lr=0.01)))["generator"]
  p = jnp.zeros(3)
  opt = g_tx.init(p)
  lr, (b1, b2) = 0.01 * 0.8, (0.0, 0.99 ** 0.8)
  m = v = np.zeros(3)
  for t in range(1, 4):
    g = np.array([1.0, -2.0, 0.5]) * t
    upd, opt = g_tx.update(jnp.asarray(g), opt)
    m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    want = -lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + 1e-8)
    np.testing.assert_allclose(upd, want, rtol=1e-5)


def test_optimizer_settings_from_config():
  """config.optimizer: the official defaults where a key is missing, unknown keys a one-line error naming the
  known ones; the trainer builds the pair once from the config."""
  model = sg.Model(pl_interval=4, r1_interval=16)
  settings = training.adam_settings(model)
  assert settings["generator"] == training.lazy_regularization(0.002, (0.0, 0.99), 4) + (1e-8,)
  assert settings["discriminator"] == training.lazy_regularization(0.002, (0.0, 0.99), 16) + (1e-8,)
  settings = training.adam_settings(model, dict(discriminator=dict(lr=0.01), betas=(0.5, 0.9), eps=1e-6))
  assert settings["generator"][0] == pytest.approx(0.002 * 0.8)
  assert settings["discriminator"] == (0.01 * 16 / 17, (0.5 ** (16 / 17), 0.9 ** (16 / 17)), 1e-6)
  with pytest.raises(ValueError, match=r"\['lr'\].*known keys: generator.lr, discriminator.lr, betas, eps"):
    training.adam_settings(model, dict(lr=0.1))
  with pytest.raises(ValueError, match=r"generator.b1"):
    training.adam_settings(model, dict(generator=dict(lr=0.1, b1=0.5)))
  config = ml_collections.ConfigDict(dict(optimizer=dict(generator=dict(lr=0.003), discriminator=dict(lr=0.004))))
  tx = training.make_optimizer(config, model=networks.Model(image_shape=(8, 8, 3), pl_interval=None, r1_interval=16))
  assert set(tx) == {"generator", "discriminator"}
  # pl_interval None: G's Adam is uncorrected (lr 0.003 exactly: one update of a unit gradient moves by -lr).
  updates, _ = tx["generator"].update(jnp.ones(2), tx["generator"].init(jnp.zeros(2)))
  np.testing.assert_allclose(updates, -0.003, rtol=1e-5)


def test_ema_beta_schedule():
  # Step 0: no images seen, beta = 0 (EMA copies G). Later: half-life ema_kimg, ramped by cur_nimg * ema_rampup.
  assert float(training.ema_beta(jnp.array(0), 8, 10.0, 0.05)) == 0.0
  np.testing.assert_allclose(training.ema_beta(jnp.array(100), 8, 10.0, 0.05), 0.5 ** (8 / (800 * 0.05)), rtol=1e-6)
  np.testing.assert_allclose(training.ema_beta(jnp.array(10 ** 6), 8, 10.0, 0.05), 0.5 ** (8 / 10000), rtol=1e-6)
  np.testing.assert_allclose(training.ema_beta(jnp.array(3), 8, 10.0, None), 0.5 ** (8 / 10000), rtol=1e-6)


def test_train_steps_change_generator_discriminator_and_ema(tiny):
  model, state, batch = tiny
  config = {"optimizer": dict(generator=dict(lr=0.003), discriminator=dict(lr=0.0025))}
  tx = training.make_optimizers(model, config["optimizer"])
  step = jax.jit(functools.partial(training.train_step, model=model, tx=tx, config=config))
  s, metrics = step(state, batch, jax.random.key(3))
  # Step 0 runs every phase (0 % interval == 0) and the EMA copies G (beta = 0).
  assert float(metrics["ema_beta"]) == 0.0
  assert _max_change(s["ema_params"], s["params"]["generator"]) == 0.0
  assert float(s["stats"]["r1_penalty"]) > 0 and float(s["stats"]["pl_penalty"]) > 0 and float(s["pl_mean"]) > 0
  # The step reports the learning rates it used: lazily corrected with tiny's intervals (pl 4, r1 16).
  np.testing.assert_allclose(metrics["g_lr"], 0.003 * 4 / 5, rtol=1e-6)
  np.testing.assert_allclose(metrics["d_lr"], 0.0025 * 16 / 17, rtol=1e-6)
  for _ in range(2):
    s, metrics = step(s, batch, jax.random.key(3))
  assert int(s["step"]) == 3
  assert int(metrics["skipped_updates"]) == 0 and int(metrics["consecutive_skips"]) == 0
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert _max_change(state["params"]["generator"], s["params"]["generator"]) > 1e-4
  assert _max_change(state["params"]["discriminator"], s["params"]["discriminator"]) > 1e-4
  assert _max_change(state["ema_params"], s["ema_params"]) > 1e-4
  assert 0 < float(metrics["ema_beta"]) < 1
  assert _max_change(s["ema_params"], s["params"]["generator"]) > 0  # lagging behind G now
  assert float(jnp.abs(s["w_avg"]).max()) > 0
  # Mapping weights move with lr * 0.01 (equalized lr multiplier) in forward units: far less than synthesis.
  assert _max_change(state["params"]["generator"]["mapping_net"], s["params"]["generator"]["mapping_net"]) < 1.0
  out = jax.jit(functools.partial(sg.sample, num=3, model=model))(s, jax.random.key(4))
  assert out.shape == (3, 8, 8, 3) and out.dtype == jnp.uint8
