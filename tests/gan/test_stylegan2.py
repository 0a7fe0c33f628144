"""StyleGAN2 networks, sampling, figures helpers and the projector on the tiny model; the official sizes."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import stylegan2_cifar10
from jaxgen.gan import layers
from jaxgen.gan import networks
from jaxgen.gan import stylegan2 as sg
from jaxgen.gan import training
from jaxgen.ops import matmul
from tests.gan.conftest import init


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_cifar10_config_matches_official_sizes():
  """stylegan2_cifar10.py is the official `cifar` config: G about 19.9M, D about 20.7M parameters (shapes only)."""
  config = stylegan2_cifar10.get_config()
  model = sg.Model(**config.model)
  official = (2, 32, 0.01, 500, 0.05)
  assert (model.mapping_layers, model.mbstd_group_size, model.r1_gamma, model.ema_kimg, model.ema_rampup) == official
  assert model.pl_weight == 0 and model.style_mixing_prob == 0 and model.d_architecture == "orig"
  assert config.optimizer.generator.lr == config.optimizer.discriminator.lr == 0.0025
  assert (model.resolution, model.img_channels, model.channel_base, model.channel_max) == (32, 3, 32768, 512)
  shapes = jax.eval_shape(lambda: init(model, 8))
  assert abs(_count(shapes["params"]["generator"]) / 1e6 - 19.9) < 0.1
  assert abs(_count(shapes["params"]["discriminator"]) / 1e6 - 20.7) < 0.1
  assert model.num_ws == 8
  with pytest.raises(ValueError, match="power-of-two"):
    sg.Model(resolution=28)


def test_truncation_psi0_gives_one_image(tiny):
  model, state, _ = tiny
  w_avg = jax.random.normal(jax.random.key(7), (model.w_dim,))
  z = jax.random.normal(jax.random.key(8), (3, model.z_dim))
  gen = jax.jit(functools.partial(networks.generate, model=model, noise_mode="const"), static_argnames="truncation_psi")
  img = gen(state["params"]["generator"], w_avg, z, truncation_psi=0.0)
  np.testing.assert_allclose(img[1:], jnp.broadcast_to(img[:1], img[1:].shape), atol=1e-6)
  free = gen(state["params"]["generator"], w_avg, z, truncation_psi=1.0)
  assert float(jnp.abs(free[0] - free[1]).max()) > 1e-3  # without truncation the images differ


def test_style_mixing_grid_and_conditioning():
  model = sg.tiny(num_classes=3, style_mixing_prob=0.0, pl_weight=0.0)
  state = init(model, 2)
  g = state["params"]["generator"]
  zr = jax.random.normal(jax.random.key(1), (2, model.z_dim))
  zc = jax.random.normal(jax.random.key(2), (3, model.z_dim))
  labels = jnp.array([0, 2])
  grid = jax.jit(functools.partial(networks.style_mixing_grid, model=model, labels_rows=labels[:1].repeat(2),
                                   labels_cols=labels[:1].repeat(3)), static_argnames="col_layers")
  grid_none = grid(g, state["w_avg"], zr, zc, col_layers=())
  grid_all = grid(g, state["w_avg"], zr, zc, col_layers=tuple(range(model.num_ws)))
  assert grid_none.shape == (2, 3, 8, 8, 3)
  # No layers from the columns: every column shows its row's image; all layers: every row shows its column's.
  np.testing.assert_allclose(grid_none, jnp.broadcast_to(grid_none[:, :1], grid_none.shape), atol=1e-5)
  np.testing.assert_allclose(grid_all, jnp.broadcast_to(grid_all[:1], grid_all.shape), atol=1e-5)
  # Class conditioning reaches both networks: a label change changes the image and the logit.
  gen = jax.jit(functools.partial(networks.generate, model=model))
  img_a = gen(g, state["w_avg"], zr, labels)
  img_b = gen(g, state["w_avg"], zr, labels[::-1])
  assert float(jnp.abs(img_a[0] - img_b[0]).max()) > 1e-4
  d = jax.jit(networks.Discriminator(model).apply)
  logits = d({"params": state["params"]["discriminator"]}, img_a, labels)
  assert logits.shape == (2,)
  assert float(jnp.abs(logits - d({"params": state["params"]["discriminator"]}, img_a, labels[::-1])).max()) > 1e-5


def test_projector_recovers_a_generated_image_in_w_and_w_plus(tiny):
  """The official schedule (noise maps optimised, from fresh noise) finds a generated image of a generator with
  noise inputs on: far closer than another image of the model, with w much nearer the true w than the start w_avg;
  W mode keeps every layer's w equal, W+ fits closer with layers apart."""
  model, state, _ = tiny
  g = jax.tree_util.tree_map_with_path(  # noise on: init's zero strengths would make the maps irrelevant
      lambda path, x: jnp.full_like(x, 0.1) if "noise_strength" in jax.tree_util.keystr(path) else x,
      state["params"]["generator"])
  z = jax.random.normal(jax.random.key(5), (2, model.z_dim))
  ws_true = networks.broadcast_ws(networks.Generator(model).apply({"params": g}, z, None, method="mapping"),
                                  model.num_ws)
  images = networks.to_uint8(sg.synthesize(g, ws_true, state["noise_const"], model=model))  # [2, 8, 8, 3]
  w_avg, w_std = jax.jit(functools.partial(sg.w_stats, model=model))(g)
  proj = jax.jit(functools.partial(sg.project, model=model, steps=150))  # w_plus traced: one compilation
  synth = jax.jit(lambda ws, noise: networks.to_uint8(sg.synthesize(g, ws[None], noise, model=model))[0])
  rmse = lambda a, b: float(np.sqrt(np.mean(np.square(np.asarray(a, float) - np.asarray(b, float)))))
  other = rmse(images[1], images[0])
  w_mode = proj(g, images[0], w_avg, w_std, state["noise_const"], w_plus=False)
  w_plus = proj(g, images[0], w_avg, w_std, state["noise_const"], w_plus=True)
  assert rmse(synth(w_mode.ws, w_mode.noise), images[0]) < 0.25 * other
  start = float(jnp.linalg.norm(w_avg - ws_true[0, 0]))
  assert float(jnp.linalg.norm(w_mode.ws[0] - ws_true[0, 0])) < 0.5 * start
  np.testing.assert_allclose(w_mode.ws, jnp.broadcast_to(w_mode.ws[:1], w_mode.ws.shape), atol=1e-5)
  assert float(jnp.abs(w_plus.ws - w_plus.ws[:1]).max()) > 0.1
  assert float(w_plus.distance) < float(w_mode.distance)
  for n in jax.tree.leaves(w_mode.noise):  # renormalised after every step
    np.testing.assert_allclose([jnp.mean(n), jnp.mean(jnp.square(n))], [0.0, 1.0], atol=1e-4)


def test_noise_regularization_is_small_for_white_noise_and_large_for_smooth_maps():
  white = {"a": jax.random.normal(jax.random.key(0), (32, 32)), "b": jax.random.normal(jax.random.key(1), (8, 8))}
  smooth = jax.tree.map(lambda n: jnp.repeat(jnp.repeat(n[::2, ::2], 2, 0), 2, 1), white)  # 2x2 blocks
  assert float(sg.noise_regularization(white)) < 0.05
  # A 2x2-block map correlates 0.5 with its shift: 0.5^2 per axis at full size (its pooled levels are white).
  assert float(sg.noise_regularization(smooth)) > 0.8


def _xla_conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, impl=None):
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
  """G loss, D loss and R1 (a double backward) gradients of the whole model, computed with the matmul convolutions
  (im2col, polyphase, and Winograd: batch 32 at 8x8 has 512 tiles), equal those with XLA's convolution."""
  model = dataclasses.replace(sg.tiny(), conv_impl="matmul")
  # The tiny model's 16 channels would take XLA's own convolution and skip Winograd: use the matmul forms.
  monkeypatch.setattr(matmul, "XLA_CONV_CHANNELS", (0, 0))
  monkeypatch.setattr(matmul, "WINOGRAD_MIN_CHANNEL_PAIRS", 0)
  b = 32
  state = init(model, b)
  real = networks.to_float(jax.random.randint(jax.random.key(1), (b, 8, 8, 3), 0, 256).astype(jnp.uint8))
  z = jax.random.normal(jax.random.key(2), (b, model.z_dim))

  def losses(g_params, d_params):
    ws, _ = training._run_mapping(model, g_params, z, None, jax.random.key(3), mixing=True)
    fake = training._synthesis(model, g_params, ws, jax.random.key(4))
    d_fn = lambda x: training._discriminator(model, d_params, x, None)
    r1 = training.r1_penalty(d_fn, real)
    return jnp.mean(jax.nn.softplus(-d_fn(fake))) + jnp.mean(jax.nn.softplus(-d_fn(real))) + jnp.mean(r1)

  winograd_calls = []
  wino = matmul.conv3x3_winograd
  monkeypatch.setattr(matmul, "conv3x3_winograd", lambda *a, **k: winograd_calls.append(1) or wino(*a, **k))
  got = jax.jit(jax.grad(losses, argnums=(0, 1)))(state["params"]["generator"], state["params"]["discriminator"])
  assert winograd_calls  # the large-batch path was exercised
  monkeypatch.setattr(layers, "conv2d_resample", _xla_conv2d_resample)
  want = jax.jit(jax.grad(losses, argnums=(0, 1)))(state["params"]["generator"], state["params"]["discriminator"])
  for a, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, w, rtol=2e-3, atol=2e-3 * float(jnp.max(jnp.abs(w))) + 1e-6)


def test_remat_blocks_give_the_same_gradients_with_both_regularisers(tiny):
  """Rematerialised synthesis and discriminator blocks: the same G and D gradients of D(G(z)) plus R1 and path
  length (double backwards through the checkpointed blocks), with the same parameters."""
  model, state, batch = tiny
  real = networks.to_float(batch["image"])
  z = jax.random.normal(jax.random.key(2), (real.shape[0], model.z_dim))

  def losses(g_params, d_params, m):
    ws, _ = training._run_mapping(m, g_params, z, None, jax.random.key(3), mixing=True)
    synth = lambda v: training._synthesis(m, g_params, v, jax.random.key(4))
    d_fn = lambda x: training._discriminator(m, d_params, x, None)
    pl = training.path_length(synth, ws, jax.random.key(5))
    return jnp.mean(jax.nn.softplus(-d_fn(synth(ws)))) + jnp.mean(training.r1_penalty(d_fn, real)) + jnp.mean(pl)

  params = (state["params"]["generator"], state["params"]["discriminator"])
  want = jax.jit(jax.grad(functools.partial(losses, m=model), argnums=(0, 1)))(*params)
  remat = dataclasses.replace(model, remat=True)
  got = jax.jit(jax.grad(functools.partial(losses, m=remat), argnums=(0, 1)))(*params)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
