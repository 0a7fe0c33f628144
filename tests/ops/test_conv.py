"""jaxgen.ops: every matmul formulation equals lax.conv_general_dilated in values, gradients and the second-order
gradients R1 and path length take, the public kernels agree across impls, and the per-shape dispatch."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import ops
from jaxgen.ops import matmul


def _first_and_second_order_match(ref, ours, x, w, rtol=1e-4, second_order=True):
  """Values, gradients, and the R1-style gradient of a squared input-gradient norm, of `ours` against `ref`."""
  np.testing.assert_allclose(jax.jit(ours)(x, w), ref(x, w), rtol=rtol, atol=rtol * float(jnp.abs(ref(x, w)).max()))
  loss = lambda fn: (lambda x, w: jnp.sum(jnp.sin(fn(x, w))))
  r1 = lambda fn: (lambda x, w: jnp.sum(jax.grad(loss(fn))(x, w) ** 2))
  for f in (loss, r1) if second_order else (loss,):
    want = jax.grad(f(ref), argnums=(0, 1))(x, w)
    got = jax.jit(jax.grad(f(ours), argnums=(0, 1)))(x, w)
    for a, b in zip(got, want):
      np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(jnp.abs(b).max()))


def _lax(padding, groups=1, stride=1, up=1):
  return lambda x, w: jax.lax.conv_general_dilated(x, w, (stride, stride), padding, lhs_dilation=(up, up),
                                                   feature_group_count=groups,
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _normal(shape, seed):
  return jax.random.normal(jax.random.key(seed), shape)


# Each case reaches one matmul form through the dispatcher: form, x shape, w shape, padding, stride, groups.
DISPATCH_CASES = [
    ("channel_matmul", (2, 6, 5, 4), (1, 1, 4, 6), ((0, 0), (0, 0)), 2, 1),
    ("conv_shift_add", (2, 6, 5, 8), (3, 3, 8, 3), ((1, 1), (0, 2)), 1, 1),
    ("conv_im2col", (2, 6, 5, 4), (3, 3, 4, 6), ((2, 2), (1, 1)), 1, 1),
    ("conv_im2col", (2, 9, 8, 4), (4, 4, 4, 6), ((1, 1), (1, 1)), 3, 1),
    ("lax_conv", (2, 6, 5, 16), (3, 3, 16, 8), ((1, 1), (1, 1)), 2, 1),
    ("grouped_conv2d", (2, 6, 5, 4), (3, 3, 2, 6), ((1, 1), (1, 1)), 1, 2),
    ("conv_strided_polyphase", (2, 9, 8, 4), (3, 3, 2, 6), ((0, 0), (0, 0)), 2, 2),
]


@pytest.mark.parametrize("form,x_shape,w_shape,padding,stride,groups", DISPATCH_CASES)
def test_conv2d_matmul_forms_equal_lax_first_and_second_order(form, x_shape, w_shape, padding, stride, groups,
                                                              monkeypatch):
  x, w = _normal(x_shape, 0), _normal(w_shape, 1)
  calls, real = [], getattr(matmul, form)
  monkeypatch.setattr(matmul, form, lambda *a, **k: calls.append(1) or real(*a, **k))
  ours = lambda x, w: ops.conv2d(x, w, padding, stride, groups, impl="matmul")
  _first_and_second_order_match(_lax(padding, groups, stride), ours, x, w)
  assert calls  # the dispatcher took the form under test


def test_conv2d_dispatches_to_winograd_on_large_batches(monkeypatch):
  """Winograd for 3x3 kernels with enough output tiles and channel pairs (and it gives the same result)."""
  x, w = _normal((2, 8, 8, 3), 0), _normal((3, 3, 3, 4), 1)
  calls = []
  monkeypatch.setattr(matmul, "conv3x3_winograd",
                      lambda x, w, padding, precision: calls.append(1) or matmul.conv_im2col(x, w, padding))
  monkeypatch.setattr(matmul, "WINOGRAD_MIN_CHANNEL_PAIRS", 12)
  monkeypatch.setattr(matmul, "WINOGRAD_MIN_TILES", 32)  # 2 * 4 * 4 tiles
  ops.conv2d(x, w, 1, impl="matmul")
  assert calls == [1]
  monkeypatch.setattr(matmul, "WINOGRAD_MIN_TILES", 33)
  ops.conv2d(x, w, 1, impl="matmul")
  assert calls == [1]


def test_conv2d_prefers_shift_add_to_winograd_for_few_outputs(monkeypatch):
  """At most half as many outputs as inputs (Glow's zero-initialised output convolutions): shift-add, even where
  Winograd's tile and channel thresholds are met."""
  calls = []
  for form in ("conv3x3_winograd", "conv_shift_add"):
    monkeypatch.setattr(matmul, form, lambda *a, form=form, **k: calls.append(form))
  monkeypatch.setattr(matmul, "WINOGRAD_MIN_CHANNEL_PAIRS", 1)
  monkeypatch.setattr(matmul, "WINOGRAD_MIN_TILES", 1)
  ops.conv2d(_normal((2, 8, 8, 8), 0), _normal((3, 3, 8, 4), 1), 1, impl="matmul")
  ops.conv2d(_normal((2, 8, 8, 8), 0), _normal((3, 3, 8, 5), 1), 1, impl="matmul")
  assert calls == ["conv_shift_add", "conv3x3_winograd"]


@pytest.mark.parametrize("padding", [((1, 1), (1, 1)), ((0, 0), (2, 0)), ((2, 0), (0, 2))])
def test_winograd_conv_matches_xla_first_and_second_order(padding):
  """F(2x2, 3x3) Winograd equals the direct convolution to float round-off, with its gradients and R1's."""
  x, w = _normal((2, 6, 8, 5), 0), _normal((3, 3, 5, 7), 1)
  _first_and_second_order_match(_lax(padding), lambda x, w: matmul.conv3x3_winograd(x, w, padding), x, w)


@pytest.mark.parametrize("k,up,pad,groups",
                         [(3, 2, (3, 3), 1), (3, 2, (0, 1), 2), (1, 2, (1, 2), 1), (4, 3, (2, 5), 1)])
def test_upsample_conv2d_matches_dilated_conv_across_impls(k, up, pad, groups):
  """Polyphase ("matmul") and lax ("native") transposed convolutions; second order for path length's sake."""
  x, w = _normal((2, 5, 4, 4), 0), _normal((k, k, 4 // groups, 6), 1)
  for impl in ("matmul", "native"):
    _first_and_second_order_match(_lax((pad, pad), groups, up=up),
                                  lambda x, w: ops.upsample_conv2d(x, w, up, (pad, pad), groups, impl=impl), x, w)


def _keep(taps, k):
  """[k, k, 1, 1] indicator of the live taps: the kernel masks of autoregressive layers (all ones for None)."""
  keep = np.zeros((k, k, 1, 1), np.float32)
  for i, j in taps or [(i, j) for i in range(k) for j in range(k)]:
    keep[i, j] = 1.0
  return keep


@pytest.mark.parametrize("taps", [None, ((0, 1), (1, 0), (1, 1), (2, 2))])
def test_depthwise_shifted_conv_equals_grouped_conv(taps):
  """The shifted sum (custom VJP), with the kernel masked as NVAE's layers mask it: before the convolution."""
  x, w = _normal((2, 5, 6, 4), 0), _normal((5, 5, 1, 4), 1)
  keep, padding = _keep(taps, 5), ((2, 1), (2, 2))
  ours = lambda x, w: ops.conv2d(x, w * keep, padding, groups=4, taps=taps, impl="matmul")
  ref = lambda x, w: _lax(padding, 4)(x, w * keep)
  _first_and_second_order_match(ref, ours, x, w, second_order=False)


def test_masked_taps_conv_equals_lax_on_its_live_taps():
  taps = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 1))  # raster order: rows above and pixels to the left
  x, w, keep = _normal((2, 5, 6, 4), 0), _normal((3, 3, 4, 6), 1), _keep(taps, 3)
  ours = lambda x, w: ops.conv2d(x, w * keep, 1, taps=taps, impl="matmul")
  _first_and_second_order_match(lambda x, w: _lax(((1, 1), (1, 1)))(x, w * keep), ours, x, w)


def test_kernels_compute_in_the_input_dtype():
  x, w = _normal((2, 8, 8, 4), 0).astype(jnp.bfloat16), _normal((3, 3, 4, 4), 1).astype(jnp.bfloat16)
  for impl in ("native", "matmul"):
    assert ops.conv2d(x, w, 1, impl=impl).dtype == jnp.bfloat16
    assert ops.upsample_conv2d(x, w, 2, 1, impl=impl).dtype == jnp.bfloat16


def test_auto_resolves_by_backend_and_bad_impl_is_refused():
  assert ops.resolve("auto") == ("matmul" if jax.default_backend() == "cpu" else "native")
  with pytest.raises(ValueError, match="config.model.conv_impl"):
    ops.conv2d(jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1)), impl="lax")


def test_conv2d_avoids_xla_convolution_when_differentiated_twice(monkeypatch):
  """XLA's convolution for 16-64 input channels (first order), never with second_order (R1 / path length): there
  the matmul forms, in plain, strided and transposed convolutions alike, with the same values."""
  calls, real = [], matmul.lax_conv
  monkeypatch.setattr(matmul, "lax_conv", lambda *a, **k: calls.append(1) or real(*a, **k))
  x, w = _normal((2, 8, 8, 16), 0), _normal((3, 3, 16, 16), 1)
  ops.conv2d(x, w, 1, impl="matmul")
  assert calls == [1]
  pad = ((1, 1), (1, 1))
  cases = [(ops.conv2d(x, w, 1, impl="matmul", second_order=True), real(x, w, pad)),
           (ops.conv2d(x, w, 1, stride=2, impl="matmul", second_order=True), real(x, w, pad, stride=2)),
           (ops.upsample_conv2d(x, w, 2, 1, impl="matmul", second_order=True), real(x, w, pad, lhs_dilation=2))]
  assert calls == [1]  # the references call XLA directly, not through the patched name
  for ours, want in cases:
    np.testing.assert_allclose(ours, want, rtol=1e-5, atol=1e-5)
