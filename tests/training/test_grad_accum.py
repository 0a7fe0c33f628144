"""config.grad_accum_steps: n micro-batches give the update of one batch n times larger, in every family.

The step draws its noise per micro-batch (dequantisation, posterior samples, latents), so the two updates agree
exactly only when the draws cannot tell a micro-batch from the batch: these tests step with a key of `CONSTANT`,
a PRNG whose every draw is the same number. Whatever the step computes from the batch as a whole must then be the
same in both: NVAE's BatchNorm statistics and KL balancing are per micro-batch, so NVAE is stepped on a batch whose
micro-batches are equal (each image repeated); StyleGAN2's minibatch-stddev groups are the batch's by the strided
split, and both lazy regularisers run (step 0).
"""
import importlib

import jax
from jax.extend import random as jax_random
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import data
from jaxgen.training import steps
from jaxgen.training import trainer

N = 2  # micro-batches


def _bits(key, bit_width, shape):
  del key
  return jnp.full(shape, 1 << (bit_width - 1), jnp.dtype(f"uint{bit_width}"))


# Every draw is the middle of its range (uniform 0.5, normal 0): the same for any key, shape or split.
CONSTANT = jax_random.define_prng_impl(
    key_shape=(1,), seed=lambda seed: jnp.zeros((1,), jnp.uint32),
    split=lambda key, shape: jnp.zeros(shape + (1,), jnp.uint32), random_bits=_bits,
    fold_in=lambda key, data: key, name="constant")


def _step(name, model, n, images):
  """(state, metrics) after one step of NAME.py:smoke, its config.model updated by `model`, with
  grad_accum_steps=n on `images`, from the seed's init."""
  config = importlib.import_module(f"experiments.configs.{name}").get_config("smoke")
  config.batch_size, config.grad_accum_steps = images.shape[0], n
  config.model.update(model)
  s = trainer.setup(config, train_data=data.synthetic(images.shape[1:], num_examples=images.shape[0]))
  batch = s.batch({"image": images, "label": np.zeros(images.shape[0], np.int32)})
  return jax.device_get(s.train_step(s.init(), batch, jax.random.key(0, impl=CONSTANT)))


def _images(shape, b, binary=False, repeat=1):
  images = np.random.default_rng(0).integers(0, 2 if binary else 256, (b // repeat,) + shape, dtype=np.uint8)
  return np.repeat(images, repeat, axis=0)  # rows i, i + n, ...: micro-batch i is the whole base set


def _assert_same_update(one, accumulated):
  (state1, metrics1), (state_n, metrics_n) = one, accumulated
  assert metrics1.keys() == metrics_n.keys()
  for key in metrics1:
    np.testing.assert_allclose(metrics_n[key], metrics1[key], rtol=2e-5, atol=1e-6, err_msg=key)
  # The state within float32 round-off of sums taken in another order (Adam moments of tiny gradients: 4th digit).
  jax.tree_util.tree_map_with_path(
      lambda path, a, b: np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path)),
      state1, state_n)


SHAPE = (8, 8, 1)  # the smallest images every family builds: compile time is what these tests spend


@pytest.mark.parametrize("name, model, binary, repeat", [
    ("glow_quickstart", dict(depth=1, hidden_channels=4), False, 1),
    ("lmconv_quickstart", dict(nr_filters=4), False, 1),
    ("nvae_quickstart", dict(pad=0), True, N),
    ("stylegan2_quickstart", dict(mapping_layers=1, diffaugment=""), False, 1),  # both lazy regularisers at step 0
])
def test_micro_batches_give_the_update_of_the_whole_batch(name, model, binary, repeat):
  images = _images(SHAPE, 2 * N, binary, repeat)
  model = dict(model, image_shape=SHAPE)
  one, accumulated = _step(name, model, 1, images), _step(name, model, N, images)
  _assert_same_update(one, accumulated)
  assert int(accumulated[0]["skipped_updates"]) == 0


def test_micro_batches_are_strided_and_the_accumulated_mean_is_the_batch_mean():
  batch = {"x": jnp.arange(8.0)}
  np.testing.assert_array_equal(steps.micro_batches(batch, 2)["x"], [[0, 2, 4, 6], [1, 3, 5, 7]])
  mean = steps.accumulate(lambda b, rng: {"m": jnp.mean(b["x"]), "k": jax.random.uniform(rng)}, batch,
                          jax.random.key(0), 2)
  assert float(mean["m"]) == 3.5
  draws = [float(jax.random.uniform(jax.random.fold_in(jax.random.key(0), i))) for i in range(2)]
  np.testing.assert_allclose(mean["k"], np.mean(draws), rtol=1e-6)  # micro-batch i draws with fold_in(rng, i)


def test_grad_accum_steps_must_divide_the_batch_per_device():
  config = importlib.import_module("experiments.configs.glow_quickstart").get_config("smoke")
  config.grad_accum_steps = 3
  with pytest.raises(ValueError, match="grad_accum_steps=3 must be a positive integer that divides"):
    trainer.setup(config)
