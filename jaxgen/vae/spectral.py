"""Spectral and BatchNorm-scale regularisation of NVAE (Vahdat & Kautz 2020, Sec. 3.2 "Spectral regularization").

L_SR = lambda * sum_i s(W_i), with s(W) the largest singular value of every convolution's kernel reshaped to a
[C_out, k*k*C_in/groups] matrix, estimated by power iteration (Yoshida & Miyato 2017) whose vectors u, v persist
across steps (official model.py `spectral_norm_parallel`): 4 iterations per training step, 10x as many when the
vectors are created; kernels of the same matrix shape are stacked and iterated as one batch.
L_BN = lambda * sum_l max_c |gamma_lc| over every BatchNorm layer (official `batchnorm_loss`).

lambda (official train.py L181-186) is `weight_decay_norm`, or with `weight_decay_norm_anneal` the log-linear
interpolation exp((1 - beta) log(lambda_init) + beta log(lambda)) driven by the KL warm-up coefficient beta.

Storage: the u, v vectors are state, not parameters. `SpectralRegularizer` keeps them in the "batch_stats"
collection (one entry `{"u": [N, R], "v": [N, C]}` per matrix shape RxC), so the trainer, which already marks
"batch_stats" mutable in training and checkpoints it, carries them without knowing about them.
"""
import collections

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

NUM_POWER_ITERATIONS = 4
FIRST_CALL_MULTIPLIER = 10


def _normalize(x, eps=1e-3):
  """x / max(||x||, eps) along the last axis (torch.nn.functional.normalize with the official eps=1e-3)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def power_iteration(w, u, v, num_iterations):
  """Batched power iteration for the top singular vectors.  w [N, R, C], u [N, R], v [N, C] -> (u, v).

  v <- normalize(W^T u);  u <- normalize(W v), `num_iterations` times (official order: v first).
  `w`, `u`, `v` may also be equally long lists (one entry per matrix shape), iterated in one loop.
  """
  def step(w, u, v):
    v = _normalize(jnp.einsum("nr,nrc->nc", u, w))
    u = _normalize(jnp.einsum("nrc,nc->nr", w, v))
    return u, v

  if isinstance(w, (list, tuple)):
    def body(_, uv):
      new = [step(*args) for args in zip(w, *uv)]
      return [n[0] for n in new], [n[1] for n in new]
    return jax.lax.fori_loop(0, num_iterations, body, (list(u), list(v)))
  return jax.lax.fori_loop(0, num_iterations, lambda _, uv: step(w, *uv), (u, v))


def singular_value(w, u, v):
  """sigma = u^T W v per matrix.  [N, R, C], [N, R], [N, C] -> [N] (differentiable in W)."""
  return jnp.einsum("nr,nrc,nc->n", u, w, v)


def kernel_to_matrix(kernel):
  """HWIO kernel [kh, kw, C_in/groups, C_out] -> [C_out, kh*kw*C_in/groups] (column order does not change sigma)."""
  return kernel.reshape(-1, kernel.shape[-1]).T


def random_unit_vectors(shape, seed=0):
  """Fixed-seed random unit vectors [N, D] (the official code draws them once, the first time a shape is seen).

  Drawn with numpy as a constant: a jax.random draw per matrix shape costs seconds of XLA compilation on CPU.
  """
  x = np.random.RandomState(seed + 7919 * shape[1]).standard_normal(shape).astype(np.float32)
  return jnp.asarray(x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-3))


class SpectralRegularizer(nn.Module):
  """sum_i sigma_max(W_i) over the given kernels, with persistent power-iteration state in "batch_stats".

  Call with the list of effective kernels (HWIO) of every convolution. When the state is created (at init)
  u, v start random and get FIRST_CALL_MULTIPLIER * `num_iterations` iterations; `update=True` (training)
  runs `num_iterations` more and stores u, v; otherwise the stored vectors are used as they are.
  All matrix shapes are iterated in one loop (one compiled while loop, not one per shape).
  """
  num_iterations: int = NUM_POWER_ITERATIONS

  @nn.compact
  def __call__(self, kernels, update: bool):
    groups = collections.OrderedDict()
    for kernel in kernels:
      m = kernel_to_matrix(kernel).astype(jnp.float32)
      groups.setdefault(m.shape, []).append(m)
    names = [f"power_iteration_{r}x{c}" for r, c in groups]
    ws = [jnp.stack(mats) for mats in groups.values()]  # each [N, R, C]
    ws_const = [jax.lax.stop_gradient(w) for w in ws]
    init = None
    if not all(self.has_variable("batch_stats", name) for name in names):
      u0 = [random_unit_vectors(w.shape[:2]) for w in ws]
      v0 = [random_unit_vectors((w.shape[0], w.shape[2]), seed=1) for w in ws]
      init = power_iteration(ws_const, u0, v0, FIRST_CALL_MULTIPLIER * self.num_iterations)
    states = [self.variable("batch_stats", name, lambda i=i: {"u": init[0][i], "v": init[1][i]})
              for i, name in enumerate(names)]
    us = [st.value["u"] for st in states]
    vs = [st.value["v"] for st in states]
    if update and ws:
      us, vs = power_iteration(ws_const, us, vs, self.num_iterations)
      if not self.is_initializing():
        for st, u, v in zip(states, us, vs):
          st.value = {"u": u, "v": v}
    total = jnp.zeros((), jnp.float32)
    for w, u, v in zip(ws, us, vs):
      total = total + jnp.sum(singular_value(w, jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)))
    return total


def batchnorm_scale_loss(params):
  """sum over BatchNorm layers of max_c |gamma_c| (official `batchnorm_loss`).  Every "scale" leaf is a BN gamma."""
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  terms = [jnp.max(jnp.abs(leaf)) for path, leaf in leaves
           if getattr(path[-1], "key", None) == "scale"]
  return sum(terms, jnp.zeros((), jnp.float32))


def regularization_coefficient(kl_coeff, weight_decay_norm, weight_decay_norm_init=10.0, anneal=False):
  """lambda of official train.py L181-186: constant, or log-linear from `init` to final as beta goes 0 -> 1."""
  if not anneal:
    return jnp.asarray(weight_decay_norm, jnp.float32)
  if weight_decay_norm <= 0 or weight_decay_norm_init <= 0:
    raise ValueError("weight_decay_norm_anneal needs positive weight_decay_norm and weight_decay_norm_init")
  log_coeff = (1.0 - kl_coeff) * np.log(weight_decay_norm_init) + kl_coeff * np.log(weight_decay_norm)
  return jnp.exp(log_coeff)
