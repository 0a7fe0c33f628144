"""NVAE's optimiser: Adamax with L2 weight decay, linear warm-up and per-epoch cosine decay.

Official train.py: `Adamax(params, lr, weight_decay=3e-4, eps=1e-3)` (torch.optim.Adamax semantics, the
`--fast_adamax` variant computes the same thing; weight decay is added to the gradient of every parameter,
biases, BN and weight-norm scales included), lr = 1e-2 linearly warmed up over `warmup_epochs` = 5 epochs
per step (lr * step / warmup_steps), then `CosineAnnealingLR(T_max = epochs - warmup_epochs - 1,
eta_min = learning_rate_min = 1e-4)` stepped once per epoch from epoch `warmup_epochs + 1` on.
"""
import jax.numpy as jnp
import optax


def learning_rate_schedule(learning_rate=1e-2, learning_rate_min=1e-4, warmup_epochs=5, epochs=400,
                           steps_per_epoch=1):
  """Official lr(step): warm-up per step, then cosine per epoch; `steps_per_epoch=1` makes it per step."""
  warmup_steps = warmup_epochs * steps_per_epoch
  t_max = max(epochs - warmup_epochs - 1, 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    epoch = jnp.floor(step / steps_per_epoch)
    t = jnp.clip(epoch - warmup_epochs, 0.0, t_max) / t_max
    cosine = learning_rate_min + (learning_rate - learning_rate_min) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
    if warmup_steps == 0:
      return cosine
    return jnp.where(step < warmup_steps, learning_rate * step / warmup_steps, cosine)

  return schedule


def adamax(learning_rate=1e-2, learning_rate_min=1e-4, weight_decay=3e-4, warmup_epochs=5, epochs=400,
           steps_per_epoch=1, b1=0.9, b2=0.999, eps=1e-3):
  """optax transformation equal to the official optimiser (u_t = max(b2 u_{t-1}, |g_t| + eps), as torch)."""
  return optax.chain(
      optax.add_decayed_weights(weight_decay),  # L2 added to the gradient, before the Adamax moments.
      optax.scale_by_adamax(b1=b1, b2=b2, eps=eps),
      optax.scale_by_learning_rate(
          learning_rate_schedule(learning_rate, learning_rate_min, warmup_epochs, epochs, steps_per_epoch)),
  )
