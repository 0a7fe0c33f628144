"""DiffAugment: each transform against a direct numpy reference of the official index semantics; gradients flow."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.gan import augment
from jaxgen.gan import stylegan2 as sg
from jaxgen.gan import training

B, H, W = 64, 8, 12


def _shifted(x, ty, tx):
  """out[i, j] = x[i + ty, j + tx], 0 outside (the official pad-by-1-and-clamp gather), numpy, one image."""
  out = np.zeros_like(x)
  for i in range(x.shape[0]):
    for j in range(x.shape[1]):
      if 0 <= i + ty < x.shape[0] and 0 <= j + tx < x.shape[1]:
        out[i, j] = x[i + ty, j + tx]
  return out


def test_translation_is_an_integer_shift_within_an_eighth():
  x = np.asarray(jax.random.normal(jax.random.key(0), (B, H, W, 2)))
  y = np.asarray(augment.diff_augment(jnp.asarray(x), jax.random.key(1), "translation"))
  sy, sx = int(H * 0.125 + 0.5), int(W * 0.125 + 0.5)
  seen = set()
  for b in range(B):
    matches = [(ty, tx) for ty in range(-sy, sy + 1) for tx in range(-sx, sx + 1)
               if np.allclose(y[b], _shifted(x[b], ty, tx), atol=1e-6)]
    assert len(matches) == 1, f"example {b}: {matches}"
    seen.add(matches[0])
  assert len(seen) >= 6  # many different shifts over the batch, not one shared shift


def test_cutout_zeroes_one_half_size_square():
  x = jnp.ones((B, H, H, 1))
  y = np.asarray(augment.diff_augment(x, jax.random.key(2), "cutout"))[..., 0]
  side = int(H * 0.5 + 0.5)
  centres = set()
  for b in range(B):
    rows, cols = np.nonzero(y[b] == 0)
    assert rows.size, "nothing cut out"
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    assert rows.size == (r1 - r0) * (c1 - c0)  # a rectangle
    assert r1 - r0 <= side and c1 - c0 <= side
    # The square is only clipped by the image border.
    assert (r1 - r0 == side or r0 == 0 or r1 == H) and (c1 - c0 == side or c0 == 0 or c1 == H)
    assert set(np.unique(y[b])) <= {0.0, 1.0}
    centres.add((r0, c0))
  assert len(centres) >= 10


def test_color_is_a_per_example_affine_map_in_the_paper_ranges():
  x = jax.random.normal(jax.random.key(3), (B, H, W, 3))
  y = augment.diff_augment(x, jax.random.key(4), "color")
  # Reproduce with the same draws: brightness b - 1/2, saturation 2s, contrast c + 1/2.
  rng_b, rng_s, rng_c = jax.random.split(jax.random.split(jax.random.key(4), 1)[0], 3)
  u = lambda r: np.asarray(jax.random.uniform(r, (B, 1, 1, 1)))
  x = np.asarray(x, np.float64)
  z = x + u(rng_b) - 0.5
  m = z.mean(axis=3, keepdims=True)
  z = (z - m) * 2 * u(rng_s) + m
  m = z.mean(axis=(1, 2, 3), keepdims=True)
  z = (z - m) * (u(rng_c) + 0.5) + m
  np.testing.assert_allclose(y, z, rtol=1e-5, atol=1e-5)


def test_gradients_flow_through_every_policy_and_bad_policy_fails():
  x = jax.random.normal(jax.random.key(5), (4, H, H, 3))
  g = jax.grad(lambda v: jnp.sum(augment.diff_augment(v, jax.random.key(6), "color,translation,cutout") * x))(x)
  assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).sum()) > 0
  # The shift and the cutout are linear and exact: the gradient of <aug(x), 1> is the count of uses of each pixel.
  g1 = jax.grad(lambda v: jnp.sum(augment.diff_augment(v, jax.random.key(7), "translation,cutout")))(x)
  assert set(np.unique(np.asarray(g1))) <= {0.0, 1.0}
  with pytest.raises(ValueError, match="translation,cutout"):
    augment.check_policy("translate")
  with pytest.raises(ValueError, match="DiffAugment"):
    sg.tiny(diffaugment="color,flip")


def _init(model, b=4):
  batch = {"image": jnp.zeros((b,) + model.image_shape, jnp.uint8), "label": jnp.zeros((b,), jnp.int32)}
  return training.init_state(jax.random.key(0), batch, model=model, tx=training.make_optimizers(model), config={})


def test_discriminator_sees_augmented_images_only_with_a_policy():
  model = sg.tiny(diffaugment="translation,cutout")
  state = _init(model)
  img = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
  d = lambda m, r: training._discriminator(m, state["params"]["discriminator"], img, None, r)
  plain = d(sg.tiny(), jax.random.key(2))
  assert np.allclose(d(model, None), plain)  # no rng: no augmentation
  assert not np.allclose(d(model, jax.random.key(2)), plain)
  want = training._discriminator(sg.tiny(), state["params"]["discriminator"],
                                 augment.diff_augment(img, jax.random.key(2), "translation,cutout"), None)
  np.testing.assert_allclose(d(model, jax.random.key(2)), want, rtol=1e-5)


def test_every_discriminator_call_of_the_training_step_is_augmented(monkeypatch):
  """Traced (not compiled): G main, D main on fakes and on reals, and R1 each pass D an augmented batch."""
  model = sg.tiny(diffaugment="cutout")
  state = jax.eval_shape(lambda: _init(model))
  calls = []
  real_augment = augment.diff_augment
  monkeypatch.setattr(augment, "diff_augment", lambda x, rng, policy: calls.append(policy) or real_augment(
      x, rng, policy))
  batch = {"image": jax.ShapeDtypeStruct((4, 8, 8, 3), jnp.uint8), "label": jax.ShapeDtypeStruct((4,), jnp.int32)}
  tx = training.make_optimizers(model)
  jax.eval_shape(lambda s, b: training.train_step(s, b, jax.random.key(1), model=model, tx=tx, config={}), state,
                 batch)
  assert calls == ["cutout"] * 4
