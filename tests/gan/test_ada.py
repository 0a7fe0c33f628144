"""ADA (StyleGAN2-ADA): the transforms at p = 0 and p = 1, the blits against exact flips / rotations / shifts,
the 1-channel colour rule, gradients; the p heuristic on an overfitting and an underfitting D; every D call of the
step augmented; exact resume and sharded = one device with p moving."""
import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import stylegan2_quickstart
from jaxgen.gan import augment
from jaxgen.gan import stylegan2 as sg
from jaxgen.gan import training
from jaxgen.training import checkpoints
from jaxgen.training import trainer
from tests.gan.conftest import init

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
B, H = 16, 8
TRANSFORMS = augment.BLIT + augment.GEOM + augment.COLOR
aug = jax.jit(augment.ada_augment, static_argnums=3)
# One compiled program per kind: the transforms differ only in the matrices, drawn eagerly (tiny [B, 3, 3] ops).
geometric, color = jax.jit(augment.apply_geometric), jax.jit(augment.apply_color)


def _one(x, rng, p, names):
  """x through the transforms `names` (all geometric or all colour) at probability p."""
  b, h, w, c = x.shape
  if set(names) <= set(augment.BLIT + augment.GEOM):
    return geometric(x, augment.geometric_matrix(rng, p, names, h, w, b))
  return color(x, augment.color_matrix(rng, p, names, c, b))


def _smooth_images(channels=3):
  """[B, H, H, C] sums of slow cosines: low-pass content that the sym6 resampling passes almost unchanged."""
  i, j = np.meshgrid(np.arange(H), np.arange(H), indexing="ij")
  a = np.random.default_rng(0).normal(size=(B, 4))
  x = [0.5 * np.cos(np.pi * (u[0] * i + u[1] * j) / (2 * H) + u[2]) + 0.3 * np.sin(np.pi * u[3] * (i + j) / (2 * H))
       for u in a]
  return jnp.asarray(np.stack(x)[..., None].repeat(channels, -1), jnp.float32)


def test_each_transform_is_the_identity_at_p0_and_changes_images_at_p1():
  x = jax.random.uniform(jax.random.key(0), (B, H, H, 3), minval=-1, maxval=1)
  for name in TRANSFORMS:
    np.testing.assert_allclose(_one(x, jax.random.key(1), 0.0, (name,)), x, atol=2e-6, err_msg=name)
    change = np.asarray(jnp.max(jnp.abs(_one(x, jax.random.key(1), 1.0, (name,)) - x), axis=(1, 2, 3)))
    assert np.sum(change > 1e-2) >= B // 8, (name, change)  # flips: each example with probability 1/2
  np.testing.assert_allclose(aug(x, jax.random.key(2), 0.0, "bgc"), x, atol=2e-6)


def test_blits_are_flips_rotations_and_integer_shifts():
  """At p = 1 each example is x, or its flip / k * 90 degree rotation / shift by at most 1/8 of the side. Shifts are
  exact; flips and rotations pass through the asymmetric sym6 resampling (as the official code), so they match
  to 0.05 on smooth images."""
  x = _smooth_images()
  cases = {"xflip": ([x, x[:, :, ::-1]], 0.05),
           "rotate90": ([jnp.rot90(x, k, axes=(1, 2)) for k in range(4)], 0.05),
           "xint": ([jnp.roll(x, (dy, dx), axis=(1, 2)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], 1e-5)}
  for name, (candidates, atol) in cases.items():
    y = _one(x, jax.random.key(3), 1.0, (name,))
    inner = (slice(None), slice(1, -1), slice(1, -1))  # a shift reflects the border in: compare inside it
    errors = np.stack([np.max(np.abs(y - c)[inner], axis=(1, 2, 3)) for c in candidates], 1)  # [B, candidates]
    assert errors.min(1).max() < atol, (name, errors.min(1))
    assert len(set(errors.argmin(1))) >= min(len(candidates), 3), name  # several different draws in the batch


def test_geometric_pipeline_keeps_pixel_statistics():
  x = jax.random.uniform(jax.random.key(4), (B, H, H, 3), minval=-1, maxval=1)
  y = np.asarray(_one(x, jax.random.key(5), 1.0, augment.AUGPIPES["bg"]))
  assert np.isfinite(y).all()
  assert abs(y.mean() - float(x.mean())) < 0.05
  assert 0.6 < y.std() / float(x.std()) < 1.05  # bilinear resampling smooths a little, never amplifies
  assert np.abs(y).max() < 1.5


def test_one_channel_colour_is_the_mean_of_the_rgb_rule_on_grey():
  """The official rule for 1 channel (mean of C's RGB rows) equals the RGB pipeline on a grey image averaged over
  channels; hue and saturation leave grey alone."""
  x = _smooth_images(1)
  y1 = aug(x, jax.random.key(6), 1.0, "bgc")
  y3 = aug(jnp.repeat(x, 3, axis=-1), jax.random.key(6), 1.0, "bgc")
  np.testing.assert_allclose(y1[..., 0], jnp.mean(y3, axis=-1), atol=1e-5)
  assert float(jnp.max(jnp.abs(y1 - x))) > 0.1


def test_gradients_flow_to_the_images_and_bad_settings_fail():
  x = jax.random.normal(jax.random.key(7), (4, H, H, 3))
  g = jax.grad(lambda v, p: jnp.sum(augment.ada_augment(v, jax.random.key(8), p) * x))(x, 0.7)
  assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).sum()) > 0
  with pytest.raises(ValueError, match="'bgc' is the official"):
    augment.check_augpipe("bgcfnc")
  with pytest.raises(ValueError, match="diffaugment=''"):
    sg.tiny(augment="ada", diffaugment="cutout")
  with pytest.raises(ValueError, match="'noaug', 'ada' or 'fixed'"):
    sg.tiny(augment="adaptive")
  with pytest.raises(ValueError, match="1- or 3-channel"):
    sg.tiny(augment="ada", image_shape=(8, 8, 2))


def test_ada_adjust_is_the_official_heuristic():
  model = sg.tiny(augment="ada", ada_interval=4, ada_kimg=0.5)  # step 4 * 4 / 500 = 0.032
  ada = lambda p, signs: {"p": jnp.float32(p), "signs": jnp.float32(signs), "count": jnp.float32(16)}
  adjust = functools.partial(training.ada_adjust, batch_size=4, model=model)
  up = adjust(ada(0.1, 12), jnp.int32(3))  # r_t = 0.75 > 0.6 at the 4th step
  np.testing.assert_allclose([up["p"], up["signs"], up["count"]], [0.132, 0, 0], atol=1e-7)
  np.testing.assert_allclose(adjust(ada(0.1, 4), jnp.int32(7))["p"], 0.068, atol=1e-7)  # r_t = 0.25 < 0.6
  assert float(adjust(ada(0.01, -16), jnp.int32(7))["p"]) == 0.0  # p >= 0
  assert adjust(ada(0.1, 12), jnp.int32(2)) == ada(0.1, 12)  # not an adjustment step: kept
  fixed = sg.tiny(augment="fixed", augment_p=0.3)
  assert training.ada_adjust(ada(0.3, 16), jnp.int32(3), batch_size=4, model=fixed) == ada(0.3, 16)


@pytest.fixture(scope="module")
def ada_step():
  """(model, initial state, batch, the jitted train_step) for the tiny model with ADA, p adjusted every step."""
  model = sg.tiny(augment="ada", r1_gamma=0.0, pl_weight=0.0, ada_interval=1, ada_kimg=0.04)  # steps of 0.1
  batch = {"image": jax.random.randint(jax.random.key(1), (4, 8, 8, 3), 0, 256).astype(jnp.uint8),
           "label": jnp.zeros((4,), jnp.int32)}
  tx = training.make_optimizers(model)
  step = jax.jit(functools.partial(training.train_step, model=model, tx=tx, config={}))
  return model, init(model, 4), batch, step


def _biased(state, bias, p):
  """state with D's output bias set (D(x) ~ bias for every x) and ADA's p set."""
  d = state["params"]["discriminator"]
  d = dict(d, b4_out=dict(d["b4_out"], bias=jnp.full_like(d["b4_out"]["bias"], bias)))
  return dict(state, params=dict(state["params"], discriminator=d), ada=dict(state["ada"], p=jnp.float32(p)))


def test_p_rises_when_d_overfits_and_falls_when_reals_score_below_target(ada_step):
  """A D that scores every real positive (sign 1 > 0.6) raises p by B * interval / (ada_kimg * 1000) = 0.1 a step;
  one that scores them negative lowers it by as much."""
  _, state0, batch, step = ada_step
  assert float(state0["ada"]["p"]) == 0.0 and set(state0["ada"]) == {"p", "signs", "count"}
  for bias, p0, direction in ((50.0, 0.0, 1), (-50.0, 0.5, -1)):
    state, ps = _biased(state0, bias, p0), []
    for _ in range(3):
      state, metrics = step(state, batch, jax.random.key(0))
      ps.append(float(metrics["augment_p"]))  # the p each step used
    ps.append(float(state["ada"]["p"]))
    np.testing.assert_allclose(ps, p0 + direction * 0.1 * np.arange(4), atol=1e-6, err_msg=str(bias))


def test_every_discriminator_call_of_the_step_is_augmented_at_the_state_p(monkeypatch):
  model = sg.tiny(augment="ada")
  state = jax.eval_shape(lambda: init(model, 4))
  calls = []
  real = augment.ada_augment
  monkeypatch.setattr(augment, "ada_augment", lambda x, rng, p, pipe: calls.append((pipe, p)) or real(x, rng, p, pipe))
  batch = {"image": jax.ShapeDtypeStruct((4, 8, 8, 3), jnp.uint8), "label": jax.ShapeDtypeStruct((4,), jnp.int32)}
  tx = training.make_optimizers(model)
  jax.eval_shape(lambda s, b: training.train_step(s, b, jax.random.key(1), model=model, tx=tx, config={}), state,
                 batch)
  assert [pipe for pipe, _ in calls] == ["bgc"] * 4  # G main, D main fakes and reals, R1
  assert all(p.shape == () and p.dtype == jnp.float32 for _, p in calls)


def _ada_smoke_config(cache_dir, steps):
  config = stylegan2_quickstart.get_config("ada,smoke")
  # p moves by 4 * 2 / 20 = 0.4 per adjustment, upward always: r_t >= -1 > ada_target, whatever the signs of a
  # smoke-sized D (with the default 0.6 a D that scores the reals negative keeps p at 0, and resume tests nothing).
  # No R1 or path length: their second-order programs are most of this test's compile time, and the state they add
  # (the path-length mean) is resumed exactly in tests/gan/test_trainer_gan.py.
  config.model = dict(config.model, ada_interval=2, ada_kimg=0.02, ada_target=-2.0, r1_gamma=0.0, pl_weight=0.0)
  config.sample_metrics.cache_dir = cache_dir
  config.total_steps, config.eval_every, config.ckpt_every = steps, 1000, 1000
  return config


@pytest.mark.slow
def test_resume_with_ada_is_exact(tmp_path):
  """Checkpoint at step 3, mid-interval (ADA adjusts after steps 2 and 4): the restored run continues with the same
  p and the same partial sign statistics, and ends where the uninterrupted one does."""
  cache = str(tmp_path / "cache")
  whole = trainer.train_and_evaluate(_ada_smoke_config(cache, 5), str(tmp_path / "whole"))
  trainer.train_and_evaluate(_ada_smoke_config(cache, 3), str(tmp_path / "split"))
  restored = checkpoints.Checkpointer(str(tmp_path / "split"))
  s = trainer.setup(_ada_smoke_config(cache, 5))
  at3 = restored.restore(s.abstract_state)
  restored.close()
  assert float(at3["ada"]["count"]) > 0  # a partial interval was checkpointed
  split = trainer.train_and_evaluate(_ada_smoke_config(cache, 5), str(tmp_path / "split"))
  np.testing.assert_allclose(float(whole["ada"]["p"]), 0.8, rtol=1e-6)  # two adjustments (after steps 2 and 4)
  jax.tree.map(np.testing.assert_array_equal, whole, split)


SHARDED_SCRIPT = r"""
import functools, json
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from jaxgen.gan import stylegan2 as sg, training
from tests.gan.conftest import init
model = sg.tiny(augment="ada", r1_gamma=0.0, pl_weight=0.0, ada_interval=1, ada_kimg=0.04)
batch = {"image": jax.random.randint(jax.random.key(1), (4, 8, 8, 3), 0, 256).astype(jnp.uint8),
         "label": jnp.zeros((4,), jnp.int32)}
state = init(model, 4)
state["ada"]["p"] = jnp.float32(0.5)  # every transform active in half the examples: the draws must agree too
step = functools.partial(training.train_step, model=model, tx=training.make_optimizers(model), config={})
one = jax.jit(step)(state, batch, jax.random.key(0))
mesh = jax.make_mesh((4,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))  # as trainer.make_mesh
rep, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
many = jax.jit(step, in_shardings=(rep, split, rep), out_shardings=(rep, rep))(
    jax.device_put(state, rep), jax.device_put(batch, split), jax.random.key(0))
diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(jax.tree.leaves(one),
                                                                                   jax.tree.leaves(many)))
print(json.dumps({"devices": jax.device_count(), "diff": diff, "p": float(one[0]["ada"]["p"]),
                  "sign": float(one[1]["real_sign"])}))
"""


@pytest.mark.slow
def test_four_devices_move_p_as_one_device():
  """The sign statistics are sums over the global batch: a step sharded over 4 devices gives the same p, state and
  metrics as on one device."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=1200,
                       env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["devices"] == 4 and result["diff"] < 1e-5, result
  assert result["p"] == pytest.approx(0.6 if result["sign"] > 0.6 else 0.4)
