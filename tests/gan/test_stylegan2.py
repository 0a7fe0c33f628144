"""StyleGAN2 model, losses and step functions on the tiny config."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.gan import layers
from jaxgen.gan import stylegan2 as sg

B = 4


@pytest.fixture(scope="module")
def tiny():
  cfg = sg.tiny()
  state = sg.init_gan_state(jax.random.key(0), cfg, (B, 8, 8, 3))
  images = jax.random.randint(jax.random.key(1), (B, 8, 8, 3), 0, 256).astype(jnp.uint8)
  return cfg, state, {"image": images}


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_cifar_preset_matches_official_sizes():
  """The official `cifar` config: G about 19.9M, D about 20.7M parameters (checked on shapes only)."""
  cfg = sg.cifar()
  official = (2, 32, 0.01, 500, 0.05)
  assert (cfg.mapping_layers, cfg.mbstd_group_size, cfg.r1_gamma, cfg.ema_kimg, cfg.ema_rampup) == official
  assert cfg.pl_weight == 0 and cfg.style_mixing_prob == 0 and cfg.d_architecture == "orig" and cfg.g_lr == 0.0025
  shapes = jax.eval_shape(lambda: sg.init_gan_state(jax.random.key(0), cfg, (8, 32, 32, 3)))
  assert abs(_count(shapes["g_params"]) / 1e6 - 19.9) < 0.1
  assert abs(_count(shapes["d_params"]) / 1e6 - 20.7) < 0.1
  assert cfg.num_ws == 8
  with pytest.raises(ValueError, match="power-of-two"):
    sg.Config(resolution=28)


def test_r1_equals_squared_input_gradient_norm(tiny):
  cfg, state, batch = tiny
  real = sg.to_float(batch["image"])
  d_fn = lambda x: sg.Discriminator(cfg).apply({"params": state["d_params"]}, x)
  got = jax.jit(functools.partial(sg.r1_penalty, d_fn))(real)
  # Direct: the full Jacobian of the logits [B] w.r.t. the batch, summed over logits, squared per example.
  jac = jax.jit(jax.jacrev(d_fn))(real)  # [B, B, H, W, C]
  want = jnp.sum(jnp.square(jac.sum(axis=0)), axis=(1, 2, 3))
  np.testing.assert_allclose(got, want, rtol=1e-4)
  # And on a discriminator with a known gradient: D(x) = sum(a * x^2) -> |2 a x|^2.
  a = jax.random.normal(jax.random.key(5), real.shape[1:])
  quad = sg.r1_penalty(lambda x: jnp.sum(a * x ** 2, axis=(1, 2, 3)), real)
  np.testing.assert_allclose(quad, jnp.sum((2 * a * real) ** 2, axis=(1, 2, 3)), rtol=1e-5)


def test_path_length_matches_jacobian():
  m = jax.random.normal(jax.random.key(0), (3 * 4, 2 * 2 * 1))
  synth = lambda ws: (ws.reshape(ws.shape[0], -1) @ m).reshape(ws.shape[0], 2, 2, 1)  # ws [B, 3, 4]
  ws = jax.random.normal(jax.random.key(1), (2, 3, 4))
  rng = jax.random.key(2)
  got = sg.path_length(synth, ws, rng)
  y = jax.random.normal(rng, (2, 2, 2, 1)) / 2.0  # / sqrt(H W)
  jty = (y.reshape(2, -1) @ m.T).reshape(2, 3, 4)  # J^T y per example
  np.testing.assert_allclose(got, jnp.sqrt(jnp.mean(jnp.sum(jty ** 2, axis=2), axis=1)), rtol=1e-5)


def test_lazy_regularization_correction():
  lr, betas = sg.lazy_regularization(0.0025, (0.0, 0.99), 16)
  c = 16 / 17
  assert lr == pytest.approx(0.0025 * c) and betas[0] == 0.0 and betas[1] == pytest.approx(0.99 ** c)
  assert sg.lazy_regularization(0.002, (0.0, 0.99), None) == (0.002, (0.0, 0.99))
  # The G optimiser (interval 4) is Adam with lr * 4/5, beta2 = 0.99 ** (4/5): compare with Adam written out.
  cfg = sg.Config(g_lr=0.01, pl_interval=4)
  g_tx, _ = sg.make_optimizers(cfg)
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


def test_ema_beta_schedule():
  # Step 0: no images seen, beta = 0 (EMA copies G). Later: half-life ema_kimg, ramped by cur_nimg * ema_rampup.
  assert float(sg.ema_beta(jnp.array(0), 8, 10.0, 0.05)) == 0.0
  np.testing.assert_allclose(sg.ema_beta(jnp.array(100), 8, 10.0, 0.05), 0.5 ** (8 / (800 * 0.05)), rtol=1e-6)
  np.testing.assert_allclose(sg.ema_beta(jnp.array(10 ** 6), 8, 10.0, 0.05), 0.5 ** (8 / 10000), rtol=1e-6)
  np.testing.assert_allclose(sg.ema_beta(jnp.array(3), 8, 10.0, None), 0.5 ** (8 / 10000), rtol=1e-6)


def _max_change(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_train_steps_change_generator_discriminator_and_ema(tiny):
  cfg, state, batch = tiny
  step = jax.jit(functools.partial(sg.gan_train_step, cfg=cfg))
  s, metrics = step(state, batch, jax.random.key(3))
  # Step 0 runs every phase (0 % interval == 0) and the EMA copies G (beta = 0).
  assert float(metrics["ema_beta"]) == 0.0
  assert _max_change(s["g_ema_params"], s["g_params"]) == 0.0
  assert float(s["stats"]["r1_penalty"]) > 0 and float(s["stats"]["pl_penalty"]) > 0 and float(s["pl_mean"]) > 0
  for _ in range(2):
    s, metrics = step(s, batch, jax.random.key(3))
  assert int(s["step"]) == 3
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert _max_change(state["g_params"], s["g_params"]) > 1e-4
  assert _max_change(state["d_params"], s["d_params"]) > 1e-4
  assert _max_change(state["g_ema_params"], s["g_ema_params"]) > 1e-4
  assert 0 < float(metrics["ema_beta"]) < 1
  assert _max_change(s["g_ema_params"], s["g_params"]) > 0  # lagging behind G now
  assert float(jnp.abs(s["w_avg"]).max()) > 0
  # Mapping weights move with lr * 0.01 (equalized lr multiplier) in forward units: far less than synthesis.
  assert _max_change(state["g_params"]["mapping_net"], s["g_params"]["mapping_net"]) < 1.0
  out = jax.jit(functools.partial(sg.sample, num=3, cfg=cfg))(s, jax.random.key(4))
  assert out.shape == (3, 8, 8, 3) and out.dtype == jnp.uint8


def test_truncation_psi0_gives_one_image(tiny):
  cfg, state, _ = tiny
  w_avg = jax.random.normal(jax.random.key(7), (cfg.w_dim,))
  z = jax.random.normal(jax.random.key(8), (3, cfg.z_dim))
  gen = jax.jit(functools.partial(sg.generate, cfg=cfg, noise_mode="const"), static_argnames="truncation_psi")
  img = gen(state["g_params"], w_avg, z, truncation_psi=0.0)
  np.testing.assert_allclose(img[1:], jnp.broadcast_to(img[:1], img[1:].shape), atol=1e-6)
  free = gen(state["g_params"], w_avg, z, truncation_psi=1.0)
  assert float(jnp.abs(free[0] - free[1]).max()) > 1e-3  # without truncation the images differ


def test_style_mixing_grid_and_conditioning():
  cfg = sg.tiny(num_classes=3, style_mixing_prob=0.0, pl_weight=0.0)
  state = sg.init_gan_state(jax.random.key(0), cfg, (2, 8, 8, 3))
  g = state["g_params"]
  zr, zc = jax.random.normal(jax.random.key(1), (2, cfg.z_dim)), jax.random.normal(jax.random.key(2), (3, cfg.z_dim))
  labels = jnp.array([0, 2])
  grid = jax.jit(functools.partial(sg.style_mixing_grid, cfg=cfg, labels_rows=labels[:1].repeat(2),
                                   labels_cols=labels[:1].repeat(3)), static_argnames="col_layers")
  grid_none = grid(g, state["w_avg"], zr, zc, col_layers=())
  grid_all = grid(g, state["w_avg"], zr, zc, col_layers=tuple(range(cfg.num_ws)))
  assert grid_none.shape == (2, 3, 8, 8, 3)
  # No layers from the columns: every column shows its row's image; all layers: every row shows its column's.
  np.testing.assert_allclose(grid_none, jnp.broadcast_to(grid_none[:, :1], grid_none.shape), atol=1e-5)
  np.testing.assert_allclose(grid_all, jnp.broadcast_to(grid_all[:1], grid_all.shape), atol=1e-5)
  # Class conditioning reaches both networks: a label change changes the image and the logit.
  gen = jax.jit(functools.partial(sg.generate, cfg=cfg))
  img_a = gen(g, state["w_avg"], zr, labels)
  img_b = gen(g, state["w_avg"], zr, labels[::-1])
  assert float(jnp.abs(img_a[0] - img_b[0]).max()) > 1e-4
  d = jax.jit(sg.Discriminator(cfg).apply)
  logits = d({"params": state["d_params"]}, img_a, labels)
  assert logits.shape == (2,)
  assert float(jnp.abs(logits - d({"params": state["d_params"]}, img_a, labels[::-1])).max()) > 1e-5


def test_projector_recovers_a_generated_image(tiny):
  cfg, state, _ = tiny
  g = state["g_params"]
  w_true = jax.random.normal(jax.random.key(11), (1, cfg.w_dim)) * 0.5
  synth = jax.jit(lambda p, w: sg.to_uint8(sg.Generator(cfg).apply({"params": p}, sg.broadcast_ws(w, cfg.num_ws),
                                                                     "const", method="synthesis")))
  target = synth(g, w_true)[0]
  proj = jax.jit(functools.partial(sg.project, cfg=cfg))  # steps is traced: one compilation for both calls
  w, dist = proj(g, jnp.zeros((cfg.w_dim,)), target, steps=60)
  _, dist0 = proj(g, jnp.zeros((cfg.w_dim,)), target, steps=0)
  assert w.shape == (cfg.w_dim,)
  assert float(dist) < 0.2 * float(dist0)


def _xla_conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1):
  """The official reference path with XLA's convolution: upfirdn2d(up, pad) -> conv -> upfirdn2d(down)."""
  p0 = p1 = padding
  if up > 1:
    p0, p1 = p0 + 2, p1 + 1  # 4-tap filter: (fw + up - 1) // 2, (fw - up) // 2
    x = layers.upfirdn2d(x, f, up=up, padding=[p0, p1, p0, p1], gain=up * up)
    p0 = p1 = 0
  if down > 1:
    p0, p1 = p0 + 1, p1 + 1  # (fw - down + 1) // 2, (fw - down) // 2
  x = jax.lax.conv_general_dilated(x, w, (1, 1), ((p0, p1), (p0, p1)), dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   feature_group_count=groups)
  return layers.upfirdn2d(x, f, down=down) if down > 1 else x


def test_whole_model_gradients_match_xla_convolutions(monkeypatch):
  """G loss, D loss and R1 (a double backward) gradients of the whole model, computed with jaxgen's convolutions
  (im2col, polyphase, and Winograd: batch 32 at 8x8 has 512 tiles), equal those with XLA's convolution."""
  cfg = sg.tiny()
  b = 32
  state = sg.init_gan_state(jax.random.key(0), cfg, (b, 8, 8, 3))
  real = sg.to_float(jax.random.randint(jax.random.key(1), (b, 8, 8, 3), 0, 256).astype(jnp.uint8))
  z = jax.random.normal(jax.random.key(2), (b, cfg.z_dim))

  def losses(g_params, d_params):
    ws, _ = sg._run_mapping(cfg, g_params, z, None, jax.random.key(3), mixing=True)
    fake = sg._synthesis(cfg, g_params, ws, jax.random.key(4))
    d_fn = lambda x: sg._discriminator(cfg, d_params, x, None)
    r1 = sg.r1_penalty(d_fn, real)
    return jnp.mean(jax.nn.softplus(-d_fn(fake))) + jnp.mean(jax.nn.softplus(-d_fn(real))) + jnp.mean(r1)

  winograd_calls = []
  wino = layers.conv3x3_winograd
  monkeypatch.setattr(layers, "conv3x3_winograd", lambda *a, **k: winograd_calls.append(1) or wino(*a, **k))
  got = jax.jit(jax.grad(losses, argnums=(0, 1)))(state["g_params"], state["d_params"])
  assert winograd_calls  # the large-batch path was exercised
  monkeypatch.setattr(layers, "conv2d_resample", _xla_conv2d_resample)
  want = jax.jit(jax.grad(losses, argnums=(0, 1)))(state["g_params"], state["d_params"])
  for a, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, w, rtol=2e-3, atol=2e-3 * float(jnp.max(jnp.abs(w))) + 1e-6)
