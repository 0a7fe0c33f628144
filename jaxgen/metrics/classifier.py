"""An offline feature extractor for FID / KID / precision-recall: a small CNN classifier that jaxgen trains on the
dataset itself (e.g. MNIST digits), whose penultimate features replace Inception's pool3 where no Inception
weights can be downloaded.

The numbers it gives are comparable between models evaluated with the same trained classifier, not with FIDs
published with Inception-v3 (the same caveat as any FID with a domain-specific extractor; cf. the "FID with a
LeNet" numbers reported for MNIST in the GAN literature).
"""
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


class Classifier(nn.Module):
  """uint8 images [B, H, W, C] -> logits [B, num_classes], or features [B, embed_dim] with `features=True`.

  conv3x3 -> ReLU -> avg-pool x2 per width in `widths`, then a dense layer to `embed_dim` (the features) and a
  linear read-out. Global average pooling keeps it independent of the image size (28x28 or 32x32).
  """
  num_classes: int = 10
  widths: Sequence[int] = (32, 64, 128)
  embed_dim: int = 128

  @nn.compact
  def __call__(self, images, features=False):
    x = images.astype(jnp.float32) / 127.5 - 1.0
    for i, width in enumerate(self.widths):
      x = jax.nn.relu(nn.Conv(width, (3, 3), name=f"conv{i}")(x))
      if i < len(self.widths) - 1:
        x = nn.avg_pool(x, (2, 2), (2, 2))
    x = jnp.mean(x, axis=(1, 2))  # [B, widths[-1]]
    h = jax.nn.relu(nn.Dense(self.embed_dim, name="embed")(x))  # [B, embed_dim]
    if features:
      return h
    return nn.Dense(self.num_classes, name="head")(h)  # [B, num_classes]


def train(rng, images, labels, *, model, steps=2000, batch_size=128, lr=1e-3):
  """Train `model` with Adam on cross-entropy over random minibatches of (images [N, H, W, C] uint8, labels [N]).

  Pure: the whole loop is one `lax.fori_loop` on device (data included; 60k MNIST digits are 47 MB), and
  minibatch i is drawn with `fold_in(rng, i)`. Returns (params, final minibatch loss).
  """
  images, labels = jnp.asarray(images), jnp.asarray(labels).astype(jnp.int32)
  rng_init, rng_data = jax.random.split(rng)
  params = jax.jit(model.init)(rng_init, images[:1])["params"]  # jit: eager init compiles op by op, slowly
  tx = optax.adam(lr)

  def loss_fn(p, x, y):
    logits = model.apply({"params": p}, x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

  def body(i, carry):
    p, opt, _ = carry
    idx = jax.random.randint(jax.random.fold_in(rng_data, i), (batch_size,), 0, images.shape[0])
    loss, grads = jax.value_and_grad(loss_fn)(p, images[idx], labels[idx])
    updates, opt = tx.update(grads, opt, p)
    return optax.apply_updates(p, updates), opt, loss

  @jax.jit
  def run(p):
    return jax.lax.fori_loop(0, steps, body, (p, tx.init(p), jnp.zeros(())))

  params, _, loss = run(params)
  return params, loss


@functools.partial(jax.jit, static_argnames=("model", "features"))
def _apply(params, images, *, model, features):
  return model.apply({"params": params}, images, features=features)


def embed(params, images, *, model, batch_size=500):
  """Features [N, embed_dim] (numpy float64) of uint8 images [N, H, W, C], in batches."""
  out = [np.asarray(_apply(params, jnp.asarray(images[i: i + batch_size]), model=model, features=True), np.float64)
         for i in range(0, len(images), batch_size)]
  return np.concatenate(out, axis=0)


def perceptual_features(params, images, *, model, eps=1e-10):
  """LPIPS-style features [B, D] of float images [B, H, W, C] on the 8-bit scale [0, 255]: every conv layer's ReLU
  activations, unit-normalised over channels at each pixel (Zhang et al. 2018, Eq. 1) and divided by
  sqrt(H_l W_l), concatenated. The squared distance of two images' features is LPIPS with unit layer weights:
  sum over layers of the spatial mean of the squared normalised difference. Differentiable in `images`."""
  is_conv = lambda mdl, _: (mdl.name or "").startswith("conv")
  _, state = model.apply({"params": params}, images, capture_intermediates=is_conv)
  out = []
  for i in range(len(model.widths)):
    act = jax.nn.relu(state["intermediates"][f"conv{i}"]["__call__"][0])  # [B, H_l, W_l, C_l]
    act = act * jax.lax.rsqrt(jnp.sum(jnp.square(act), axis=-1, keepdims=True) + eps)
    out.append(act.reshape(act.shape[0], -1) / np.sqrt(act.shape[1] * act.shape[2]))
  return jnp.concatenate(out, axis=1)


def accuracy(params, images, labels, *, model, batch_size=500):
  """Top-1 accuracy of the classifier on (images, labels)."""
  preds = [np.asarray(jnp.argmax(_apply(params, jnp.asarray(images[i: i + batch_size]), model=model,
                                        features=False), -1)) for i in range(0, len(images), batch_size)]
  return float(np.mean(np.concatenate(preds) == np.asarray(labels)))
