"""StyleGAN2 layers: FIR resampling against direct references, equalized lr, modulation/demodulation."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.gan import layers


def upfirdn2d_reference(x, f, up=1, down=1, padding=(0, 0, 0, 0), flip_filter=False, gain=1.0):
  """The official algorithm spelled out with numpy loops: zero-insert, pad/crop, convolve, decimate. NHWC."""
  x = np.asarray(x, np.float64)
  f = np.asarray(f, np.float64)
  if f.ndim == 1:
    f = np.outer(f, f)
  f = f * gain
  b, h, w, c = x.shape
  z = np.zeros((b, h * up, w * up, c))
  z[:, ::up, ::up] = x
  px0, px1, py0, py1 = padding
  z = np.pad(z, ((0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0)), (0, 0)))
  z = z[:, max(-py0, 0): z.shape[1] - max(-py1, 0), max(-px0, 0): z.shape[2] - max(-px1, 0)]
  fh, fw = f.shape
  ho, wo = z.shape[1] - fh + 1, z.shape[2] - fw + 1
  out = np.zeros((b, ho, wo, c))
  for i in range(ho):
    for j in range(wo):
      for u in range(fh):
        for v in range(fw):
          # true convolution: out[i] = sum_u f[u] z[i + fh - 1 - u]; correlation when flip_filter
          fu, fv = (u, v) if flip_filter else (fh - 1 - u, fw - 1 - v)
          out[:, i, j] += f[fu, fv] * z[:, i + u, j + v]
  return out[:, ::down, ::down]


@pytest.mark.parametrize("up,down,padding,filt,flip,gain", [
    (2, 1, (2, 1, 2, 1), [1, 3, 3, 1], False, 4.0),
    (1, 2, (1, 1, 1, 1), [1, 3, 3, 1], False, 1.0),
    (1, 1, (1, 2, 0, 1), [[1, 2, 0], [0, 1, 3]], False, 1.0),
    (3, 2, (-1, 2, 1, -2), [[1, 2, 0], [0, 1, 3]], True, 2.0),
])
def test_upfirdn2d_matches_direct_reference(up, down, padding, filt, flip, gain):
  x = jax.random.normal(jax.random.key(0), (2, 5, 6, 3))
  f = np.asarray(filt, np.float32)
  f2 = np.outer(f, f) if f.ndim == 1 else f
  got = jax.jit(lambda v: layers.upfirdn2d(v, f2, up=up, down=down, padding=padding, flip_filter=flip, gain=gain))(x)
  want = upfirdn2d_reference(x, f2, up, down, padding, flip, gain)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_upsample_downsample_shapes_and_dc_gain():
  f = layers.setup_filter()
  np.testing.assert_allclose(f, np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0)
  x = jnp.ones((1, 8, 8, 2))
  up = jax.jit(lambda v: layers.upsample2d(v, f))(x)
  down = jax.jit(lambda v: layers.downsample2d(v, f))(x)
  assert up.shape == (1, 16, 16, 2) and down.shape == (1, 4, 4, 2)
  # A constant image stays constant away from the zero-padded border: the filter keeps DC gain 1.
  np.testing.assert_allclose(up[:, 2:-2, 2:-2], 1.0, rtol=1e-6)
  np.testing.assert_allclose(down[:, 1:-1, 1:-1], 1.0, rtol=1e-6)
  xr = jax.random.normal(jax.random.key(1), (1, 6, 6, 1))
  np.testing.assert_allclose(jax.jit(lambda v: layers.upsample2d(v, f))(xr),
                             upfirdn2d_reference(xr, f, up=2, padding=(2, 1, 2, 1), gain=4.0), atol=1e-5)
  np.testing.assert_allclose(jax.jit(lambda v: layers.downsample2d(v, f))(xr),
                             upfirdn2d_reference(xr, f, down=2, padding=(1, 1, 1, 1)), atol=1e-5)


def _conv_reference(x, w, pad):
  return np.asarray(jax.lax.conv_general_dilated(jnp.asarray(x, jnp.float32), w, (1, 1), [(pad, pad), (pad, pad)],
                                                 dimension_numbers=("NHWC", "HWIO", "NHWC")))


@pytest.mark.parametrize("k,up,down", [(3, 2, 1), (3, 1, 2), (1, 1, 2)])
def test_conv2d_resample_matches_official_reference_path(k, up, down):
  """The official reference: upfirdn2d(x, f, up, padding + filter padding, gain=up^2) -> conv -> upfirdn2d(down)."""
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  w = jax.random.normal(jax.random.key(1), (k, k, 3, 5))
  f = layers.setup_filter()
  p = k // 2
  p0 = p + (((4 + up - 1) // 2) if up > 1 else 0) + (((4 - down + 1) // 2) if down > 1 else 0)
  p1 = p + (((4 - up) // 2) if up > 1 else 0) + (((4 - down) // 2) if down > 1 else 0)
  ref = upfirdn2d_reference(x, f if up > 1 else [[1.0]], up=up, padding=(p0, p1, p0, p1), gain=up * up)
  ref = _conv_reference(ref, w, 0)
  if down > 1:
    ref = upfirdn2d_reference(ref, f, down=down)
  got = jax.jit(lambda a, b: layers.conv2d_resample(a, b, f=f, up=up, down=down, padding=p))(x, w)
  assert got.shape == (2, 6 * up // down, 6 * up // down, 5)
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_equalized_lr_dense_and_conv_scale():
  x = jax.random.normal(jax.random.key(0), (64, 32))
  dense = layers.EqualDense(16, lr_multiplier=0.01, bias_init=1.0)
  params = jax.jit(dense.init)(jax.random.key(1), x)["params"]
  # Stored weights are N(0, 1) / lr_mul; the runtime gain is lr_mul / sqrt(fan_in); bias is multiplied by lr_mul.
  assert 80 < float(jnp.std(params["kernel"])) < 120
  y = dense.apply({"params": params}, x)
  np.testing.assert_allclose(y, x @ params["kernel"] * (0.01 / math.sqrt(32)) + params["bias"] * 0.01, rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(params["bias"], 1.0)  # stored as bias_init, scaled by lr_mul at run time (official)
  # Gradient w.r.t. the stored weight is scaled by the gain, so Adam's step in forward units is lr * lr_mul.
  g = jax.grad(lambda p: jnp.sum(dense.apply({"params": p}, x)))(params)["kernel"]
  np.testing.assert_allclose(g, jnp.broadcast_to(x.sum(0)[:, None], g.shape) * (0.01 / math.sqrt(32)), rtol=1e-3)

  xc = jax.random.normal(jax.random.key(2), (2, 6, 6, 8))
  conv = layers.EqualConv(4, 3, activation="lrelu")
  p = jax.jit(conv.init)(jax.random.key(3), xc)["params"]
  want = _conv_reference(xc, p["kernel"] / math.sqrt(8 * 9), 1)
  want = np.where(want >= 0, want, 0.2 * want) * math.sqrt(2)
  np.testing.assert_allclose(conv.apply({"params": p}, xc), want, rtol=1e-4, atol=1e-5)


def test_bias_act_gain_and_clamp():
  x = jnp.array([[-2.0, 0.5, 300.0]])
  y = layers.bias_act(x, jnp.array([1.0, 0.0, 0.0]), act="lrelu", clamp=256.0)
  np.testing.assert_allclose(y, [[-0.2 * math.sqrt(2), 0.5 * math.sqrt(2), 256.0]], rtol=1e-6)


@pytest.fixture(scope="module")
def modconv_setup():
  x = jax.random.normal(jax.random.key(0), (3, 8, 8, 16))
  styles = 1.0 + 0.3 * jax.random.normal(jax.random.key(1), (3, 16))
  return x, styles


@pytest.mark.parametrize("up", [1, 2])
def test_demodulation_is_invariant_to_style_scale(modconv_setup, up):
  x, styles = modconv_setup
  layer = layers.ModulatedConv(12, 3, up=up)
  params = jax.jit(layer.init)(jax.random.key(2), x, styles)
  apply = jax.jit(layer.apply)
  y = apply(params, x, styles)
  np.testing.assert_allclose(apply(params, x, 3.7 * styles), y, rtol=1e-4, atol=1e-5)
  # Without demodulation the output is linear in the styles: the invariance above is not trivial.
  plain = jax.jit(layers.ModulatedConv(12, 3, up=up, demodulate=False).apply)
  np.testing.assert_allclose(plain(params, x, 3.7 * styles), 3.7 * plain(params, x, styles), rtol=1e-4, atol=1e-4)
  assert not np.allclose(plain(params, x, styles), y, atol=1e-2)


@pytest.mark.parametrize("up,demodulate", [(1, True), (2, True), (1, False)])
def test_fused_grouped_conv_equals_modulating_activations(modconv_setup, up, demodulate):
  x, styles = modconv_setup
  weight = jax.random.normal(jax.random.key(3), (3, 3, 16, 12))
  f = layers.setup_filter() if up > 1 else None
  mc = lambda fused: jax.jit(lambda *a: layers.modulated_conv2d(*a, demodulate=demodulate, up=up, padding=1,
                                                                 resample_filter=f, fused=fused))
  a = mc(True)(x, weight, styles)
  b = mc(False)(x, weight, styles)
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_unit_activation_variance_at_init():
  """Demodulation and the equalized-lr gains keep activations at about unit second moment at initialisation."""
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 128))
  w = jax.random.normal(jax.random.key(1), (4, 64))
  layer = layers.SynthesisLayer(128, resolution=16, use_noise=False)
  params = jax.jit(layer.init)(jax.random.key(2), x, w)
  y = jax.jit(layer.apply)(params, x, w)
  # lrelu(z) * sqrt(2) of z ~ N(0, 1) has second moment 1.04.
  assert 0.85 < float(jnp.mean(y ** 2)) < 1.25
  # The demodulated conv itself: unit second moment for unit-variance input, whatever the style magnitudes.
  mod = layers.ModulatedConv(128, 3)
  s = jnp.exp(jax.random.normal(jax.random.key(5), (4, 128)))
  ym = jax.jit(mod.apply)(jax.jit(mod.init)(jax.random.key(3), x, s), x, s)
  assert 0.9 < float(jnp.mean(ym[:, 1:-1, 1:-1] ** 2)) < 1.1
  conv = layers.EqualConv(128, 3, activation="lrelu")
  yc = jax.jit(conv.apply)(jax.jit(conv.init)(jax.random.key(4), x), x)
  assert 0.85 < float(jnp.mean(yc[:, 1:-1, 1:-1] ** 2)) < 1.25


def test_minibatch_stddev_matches_direct_computation():
  x = jax.random.normal(jax.random.key(0), (6, 3, 3, 4))
  y = jax.jit(lambda v: layers.minibatch_stddev(v, group_size=3, num_channels=2))(x)
  assert y.shape == (6, 3, 3, 6)
  xn = np.asarray(x, np.float64)
  for i in range(6):
    members = [j for j in range(6) if j % 2 == i % 2]  # group of i: same index mod B / G
    for f in range(2):
      grp = xn[members][..., 2 * f: 2 * f + 2]
      want = np.mean(np.sqrt(grp.var(axis=0) + 1e-8))
      np.testing.assert_allclose(y[i, :, :, 4 + f], want, rtol=1e-5)
