"""Pure step functions for likelihood models (Glow, NVAE, LMConv): init, train, eval, sample.

`jaxgen.training.family.LIKELIHOOD` bundles them; a family that trains differently (a GAN: two optimisers) writes
its own, and shares `keep_if_finite` and `eval_variables`.

The train state is a dict pytree:
  step               int32 []            number of updates applied or skipped
  params             the model's "params" collection
  model_state        every other collection ("constants", "batch_stats", ...), {} if none
  opt                optax state
  ema_params         exponential moving average of params (only if config.ema_decay > 0)
  skipped_updates    int32 []            updates skipped for a non-finite loss or gradient (or a gradient norm
                                         above config.skip_grad_norm, where set), in total
  consecutive_skips  int32 []            ... since the last applied update
"""
import jax
import jax.numpy as jnp
import optax

from jaxgen.training import optim


def _rngs(rng, step):
  rng = jax.random.fold_in(rng, step)
  rng_dropout, rng_sample = jax.random.split(rng)
  return {"dropout": rng_dropout, "sample": rng_sample}


def all_finite(tree):
  """bool []: every inexact leaf of `tree` is finite."""
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in leaves]))


def keep_if_finite(new_state, state, finite):
  """`state` with the entries of `new_state` taken where `finite` (bool []) and kept where not, leaf by leaf; "step"
  advanced either way and the skip counters updated: "skipped_updates" (total) and "consecutive_skips" (since the
  last applied update).

  `state` is a train state dict (with those three keys); `new_state` holds the entries an update changed. The one
  predicate goes through `lax.cond` first: XLA's fusion otherwise copies the predicate's per-leaf `and` chain into
  every per-leaf select (NVAE :bench, 336 leaves: 887k lines of HLO and a 450-620 s compile; 140 s with this).
  """
  finite = jax.lax.cond(finite, lambda: jnp.bool_(True), lambda: jnp.bool_(False))
  kept = {k: jax.tree.map(lambda a, b: jnp.where(finite, a, b), v, state[k]) for k, v in new_state.items()
          if k not in ("step", "skipped_updates", "consecutive_skips")}
  return dict(state) | kept | {"step": state["step"] + 1,
                               "skipped_updates": state["skipped_updates"] + (~finite).astype(jnp.int32),
                               "consecutive_skips": jnp.where(finite, 0, state["consecutive_skips"] + 1)}


def micro_batches(batch, n):
  """`batch` (leaves [B, ...]) as n micro-batches (leaves [n, B/n, ...]); micro-batch i holds rows i, i + n, ...

  Strided, not contiguous: each device's rows of the global batch hold B / (n * devices) rows of every micro-batch,
  so the split moves no data between devices, and groups formed with a stride over the batch (StyleGAN2's
  minibatch-stddev groups, rows j and j + B / G) are the whole batch's groups.
  """
  return jax.tree.map(lambda x: jnp.swapaxes(x.reshape((x.shape[0] // n, n) + x.shape[1:]), 0, 1), batch)


def accumulate(fn, batch, rng, n):
  """The mean over n micro-batches (`micro_batches`) of fn(micro_batch, rng_i), a pytree of float arrays
  (gradients, per-batch means, batch-level state), with rng_i = fold_in(rng, i); one `lax.scan`, so only one
  micro-batch's activations are live at a time. n == 1 is fn(batch, rng) itself, the step without accumulation.

  Means over equal micro-batches are means over the batch: gradients and metrics of a per-example mean loss are
  those of the whole batch, up to the random draws (each micro-batch draws its own) and whatever the loss computes
  from the batch as a whole (BatchNorm statistics: per micro-batch).
  """
  if n == 1:
    return fn(batch, rng)
  micro = micro_batches(batch, n)
  first = jax.tree.map(lambda x: x[0], micro)
  zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(fn, first, rng))

  def body(total, xs):
    i, batch_i = xs
    return jax.tree.map(jnp.add, total, fn(batch_i, jax.random.fold_in(rng, i))), None

  total, _ = jax.lax.scan(body, zeros, (jnp.arange(n), micro))
  return jax.tree.map(lambda t: t / n, total)


def check_grad_accum(config, num_devices):
  """config.grad_accum_steps (default 1) must be a positive divisor of each device's share of config.batch_size."""
  n = config.get("grad_accum_steps", 1)
  if not isinstance(n, int) or n < 1 or config.batch_size % (n * num_devices):
    raise ValueError(f"config.grad_accum_steps={n} must be a positive integer that divides the batch per device "
                     f"(config.batch_size={config.batch_size} over {num_devices} device(s)); set it to a divisor of "
                     f"{config.batch_size // num_devices}.")
  return n


def init_state(rng, batch, *, model, tx, config):
  """Initialises from a data batch (data-dependent init, e.g. ActNorm, sees this batch)."""
  rng_params, rng_sample, rng_dropout = jax.random.split(rng, 3)
  variables = model.init({"params": rng_params, "sample": rng_sample, "dropout": rng_dropout},
                         batch["image"], batch["label"])
  variables = dict(variables)
  params = variables.pop("params")
  state = {"step": jnp.zeros((), jnp.int32), "params": params, "model_state": variables, "opt": tx.init(params),
           "skipped_updates": jnp.zeros((), jnp.int32), "consecutive_skips": jnp.zeros((), jnp.int32)}
  if config.ema_decay:
    state["ema_params"] = params
  return state


def train_step(state, batch, rng, *, model, tx, config):
  """One optimiser update on the mean of the model's per-example "loss"; skipped if anything is non-finite.

  With config.grad_accum_steps = n > 1 the gradients are the mean over n micro-batches of B / n (`accumulate`):
  one update, as for the whole batch. Each micro-batch normalises BatchNorm with its own statistics (as PyTorch
  does when a batch is split: official NVAE has no accumulation; its SyncBatchNorm would see one micro-batch of
  every GPU), and the new "batch_stats" are the micro-batches' mean: BN running means and NVAE's power-iteration
  vectors (which do not depend on the data) move exactly as for the whole batch, once per step.
  """
  mutable = [name for name in state["model_state"] if name == "batch_stats"]

  def grads_fn(micro_batch, rng_micro):
    def loss_fn(params):
      out = model.apply({"params": params, **state["model_state"]}, micro_batch["image"], micro_batch["label"],
                        train=True, step=state["step"], rngs=_rngs(rng_micro, state["step"]), method="losses",
                        mutable=mutable or False)
      terms, new_model_state = out if mutable else (out, {})
      return jnp.mean(terms["loss"]), (jax.tree.map(jnp.mean, terms), new_model_state)

    (loss, (metrics, new_model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    return loss, metrics, new_model_state, grads

  loss, metrics, new_model_state, grads = accumulate(grads_fn, batch, rng, config.get("grad_accum_steps", 1))
  updates, opt = tx.update(grads, state["opt"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  # Skip the update (keep params, optimiser and BatchNorm state) if the loss or any gradient is not finite, or
  # the gradient norm exceeds config.skip_grad_norm (> 0; VDVAE's "skip_threshold", for NVAE-like models).
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & all_finite(grads)
  if config.get("skip_grad_norm", 0.0):
    finite &= grad_norm < config.skip_grad_norm
  new_state = keep_if_finite(
      {"params": params, "model_state": {**state["model_state"], **new_model_state}, "opt": opt}, state, finite)
  if "ema_params" in state:
    decay = jnp.where(new_state["consecutive_skips"] == 0, config.ema_decay, 1.0)
    new_state["ema_params"] = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p,
                                           state["ema_params"], new_state["params"])
  metrics |= {"grad_norm": grad_norm, "lr": optim.learning_rate(config)(state["step"]),
              "skipped_updates": new_state["skipped_updates"], "consecutive_skips": new_state["consecutive_skips"]}
  return new_state, metrics


def eval_params(state):
  """The parameters to evaluate and sample with: the EMA when the config keeps one."""
  return state.get("ema_params", state["params"])


def eval_variables(state):
  """The variables to evaluate and sample with: `eval_params` and the other collections (BatchNorm, ...)."""
  return {"params": eval_params(state), **state["model_state"]}


def eval_step(state, batch, rng, *, model, config):
  """Per-batch sums of the model's per-example terms over real (mask == 1) examples, and their count."""
  del config
  terms = model.apply(eval_variables(state), batch["image"], batch["label"],
                      train=False, step=state["step"], rngs=_rngs(rng, 0), method="losses")
  mask = batch["mask"]
  return {name: jnp.sum(value * mask) for name, value in terms.items()} | {"count": jnp.sum(mask)}


def sample_images(state, rng, labels, *, model, config):
  """uint8 [num, H, W, C] samples at config.sample_temperature; `labels` [num] go to class-conditional models."""
  conditional = {"labels": labels} if getattr(model, "num_classes", 0) else {}
  return model.apply(eval_variables(state), rng, labels.shape[0],
                     config.sample_temperature, method="sample", **conditional)
