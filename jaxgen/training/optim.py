"""Optimisers from `config.optimizer`: Adam/AdamW/Adamax with linear warmup, a schedule and gradient clipping.

Weight decay: `weight_decay` is AdamW's decoupled decay (name="adamw" only); `l2_weight_decay` is the coupled L2
penalty of torch.optim's `weight_decay` argument (Adam/Adamax): l2_weight_decay * params is added to the gradient
before the moments are updated (NVAE trains with torch.optim.Adamax(lr, weight_decay=3e-4, eps=1e-3)).

`sqrt_b2_correction` multiplies every update by sqrt(1 - b2^t) at update t = 1, 2, ...: openai/glow's Adam and
Adamax (optim.py) both scale their step size by it (Adam's second-moment bias correction, which openai applies to
Adamax's max-norm too).
"""
import jax.numpy as jnp
import optax

_OPTIMIZERS = {"adam": optax.adam, "adamw": optax.adamw, "adamax": optax.adamax}
_DEFAULTS = dict(name="adam", lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, warmup_steps=0,
                 schedule="constant", end_lr_factor=0.0, grad_clip_norm=0.0, l2_weight_decay=0.0,
                 sqrt_b2_correction=False)


def learning_rate_schedule(opt, total_steps):
  """Linear warmup from 0 to opt.lr over opt.warmup_steps, then constant or cosine decay to lr * end_lr_factor."""
  if opt["schedule"] == "constant":
    after = optax.constant_schedule(opt["lr"])
  elif opt["schedule"] == "cosine":
    after = optax.cosine_decay_schedule(opt["lr"], max(total_steps - opt["warmup_steps"], 1), opt["end_lr_factor"])
  else:
    raise ValueError(f"Unknown config.optimizer.schedule {opt['schedule']!r}; use 'constant' or 'cosine'.")
  if not opt["warmup_steps"]:
    return after
  warmup = optax.linear_schedule(0.0, opt["lr"], opt["warmup_steps"])
  return optax.join_schedules([warmup, after], [opt["warmup_steps"]])


def settings(optimizer_config):
  """config.optimizer merged over the defaults; unknown keys and names are a ValueError naming the known ones."""
  opt = dict(optimizer_config)
  unknown = set(opt) - set(_DEFAULTS)
  if unknown:
    raise ValueError(f"Unknown config.optimizer key(s) {sorted(unknown)}; known keys: {sorted(_DEFAULTS)}.")
  opt = _DEFAULTS | opt
  if opt["name"] not in _OPTIMIZERS:
    raise ValueError(f"Unknown config.optimizer.name {opt['name']!r}; choose one of {sorted(_OPTIMIZERS)}.")
  if opt["name"] != "adamw" and opt["weight_decay"]:
    raise ValueError(f"config.optimizer.weight_decay needs name='adamw', not {opt['name']!r}.")
  return opt


def learning_rate(config):
  """The schedule step -> learning rate of config.optimizer over config.total_steps (what the step reports)."""
  return learning_rate_schedule(settings(config.optimizer), config.total_steps)


def build(optimizer_config, total_steps):
  """-> (optax.GradientTransformation, schedule) for a config.optimizer dict."""
  opt = settings(optimizer_config)
  schedule = learning_rate_schedule(opt, total_steps)
  kwargs = dict(b1=opt["b1"], b2=opt["b2"], eps=opt["eps"])
  if opt["name"] == "adamw":
    kwargs["weight_decay"] = opt["weight_decay"]
  tx = _OPTIMIZERS[opt["name"]](schedule, **kwargs)
  if opt["sqrt_b2_correction"]:  # openai/glow: alpha_t = alpha sqrt(1 - beta2^t) / (1 - beta1^t)
    b2 = opt["b2"]
    tx = optax.chain(tx, optax.scale_by_schedule(lambda count: jnp.sqrt(1.0 - b2 ** (count + 1.0))))
  if opt["l2_weight_decay"]:
    tx = optax.chain(optax.add_decayed_weights(opt["l2_weight_decay"]), tx)  # L2 in the gradient, as torch
  if opt["grad_clip_norm"]:
    tx = optax.chain(optax.clip_by_global_norm(opt["grad_clip_norm"]), tx)
  return tx, schedule


def make_optimizer(config, *, model=None):
  """The likelihood families' `Family.make_optimizer`: one optax transform from config.optimizer (any model)."""
  del model
  return build(config.optimizer, config.total_steps)[0]
