"""Optimisers from config.optimizer (jaxgen/training/optim.py) against their PyTorch definitions."""
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen.training import optim


def test_adamax_matches_torch_adamax_with_l2_and_schedule():
  """The NVAE configs' optimizer: torch.optim.Adamax(lr, weight_decay=3e-4, eps=1e-3), warm-up, cosine to 1e-4."""
  opt = dict(name="adamax", lr=1e-2, eps=1e-3, l2_weight_decay=3e-4, warmup_steps=10, schedule="cosine",
             end_lr_factor=1e-2)
  _, sched = optim.build(opt, total_steps=110)
  # Official train.py: lr * step / warmup_iters during warm-up, then cosine annealing to learning_rate_min.
  np.testing.assert_allclose([sched(0), sched(5), sched(10), sched(60), sched(110)],
                             [0.0, 5e-3, 1e-2, 1e-4 + (1e-2 - 1e-4) * 0.5, 1e-4], rtol=1e-5)

  tx, _ = optim.build(opt | dict(warmup_steps=0, schedule="constant"), total_steps=10)
  p = jnp.array([1.0, -2.0, 0.5])
  grads = [jnp.array([0.1, 0.2, -0.3]), jnp.array([-0.5, 0.0, 0.1])]
  state = tx.init(p)
  ref_p, m, u = np.asarray(p), np.zeros(3), np.zeros(3)
  for t, g in enumerate(grads, 1):
    upd, state = tx.update(g, state, p)
    p = optax.apply_updates(p, upd)
    g = np.asarray(g) + 3e-4 * ref_p  # torch.optim.Adamax: weight decay enters the gradient
    m = 0.9 * m + 0.1 * g
    u = np.maximum(0.999 * u, np.abs(g) + 1e-3)
    ref_p = ref_p - 1e-2 / (1 - 0.9 ** t) * m / u
  np.testing.assert_allclose(p, ref_p, rtol=1e-6)


def test_sqrt_b2_correction_is_openai_glows_adamax():
  """openai/glow optim.py adamax: m_t / (max(b2 u, |g|) + eps) at step size lr sqrt(1 - b2^t) / (1 - b1^t)."""
  b2 = 1 - 1 / 98
  tx, _ = optim.build(dict(name="adamax", lr=1e-3, b2=b2, eps=0.0, sqrt_b2_correction=True), total_steps=10)
  p = jnp.array([1.0, -2.0, 0.5])
  state = tx.init(p)
  ref_p, m, u = np.asarray(p), np.zeros(3), np.zeros(3)
  for t, g in enumerate([jnp.array([0.1, 0.2, -0.3]), jnp.array([-0.5, 0.0, 0.1]), jnp.array([0.2, 0.1, 0.1])], 1):
    upd, state = tx.update(g, state, p)
    p = optax.apply_updates(p, upd)
    m = 0.9 * m + 0.1 * np.asarray(g)
    u = np.maximum(b2 * u, np.abs(g))
    ref_p = ref_p - 1e-3 * np.sqrt(1 - b2 ** t) / (1 - 0.9 ** t) * m / u
  np.testing.assert_allclose(p, ref_p, rtol=1e-5)
