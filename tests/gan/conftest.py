"""What the StyleGAN2 tests share: the train state of a model, and the `tiny` model with a state and a batch."""
import jax
import jax.numpy as jnp
import pytest

from jaxgen.gan import stylegan2 as sg
from jaxgen.gan import training

B = 4  # the `tiny` fixture's batch size


def init(model, b, rng=jax.random.key(0), optimizer=None):
  """The train state of `model` for batches of b images (config.optimizer `optimizer`, default the official one)."""
  batch = {"image": jnp.zeros((b,) + model.image_shape, jnp.uint8), "label": jnp.zeros((b,), jnp.int32)}
  return training.init_state(rng, batch, model=model, tx=training.make_optimizers(model, optimizer), config={})


@pytest.fixture(scope="module")
def tiny():
  """(sg.tiny(), its state, a batch of B random 8x8x3 images)."""
  model = sg.tiny()
  images = jax.random.randint(jax.random.key(1), (B, 8, 8, 3), 0, 256).astype(jnp.uint8)
  return model, init(model, B), {"image": images, "label": jnp.zeros((B,), jnp.int32)}
