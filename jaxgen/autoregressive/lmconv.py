"""LMConv: a PixelCNN++-style network of locally masked convolutions, for any generation order
(Jain, Abbeel & Pathak, "Locally Masked Convolution for Autoregressive Models", UAI 2020; backbone from
Salimans et al., "PixelCNN++", ICLR 2017).

log p(x | order) = sum_t log p(x_{order[t]} | x_{order[<t]}),

with every conditional computed in one network pass: each convolution at pixel p only sees pixels generated
before p (first layer) or the features at p and earlier pixels (later layers), through the per-location
masks of `masked_conv.kernel_masks`. The network is the official `--ours` model (ajayjain/lmconv,
`OurPixelCNN`): a single stream with no down-sampling, gated resnets with concat_elu, an "up" pass whose
outputs feed the "down" pass through 1x1 skip connections, and dilated locally masked convolutions where
PixelCNN++ down-/up-samples. Colour pixels use the discretized logistic mixture with the RGB coupling;
binarized images use one Bernoulli logit per pixel.

Order-agnostic training (Sec. 3.3): each batch is scored under one order drawn from `train_orders`;
evaluation uses one order or the ensemble over `eval_orders`, log p(x) = log mean_k p(x | order_k).

Completion (Sec. 5.2): for a hidden region M and observed pixels O, an order that generates O first gives
p(x_M | x_O) = prod_{t in M} p(x_t | x_<t) exactly; `complete` samples x_M in such an order and
`conditional_log_prob` scores x_M under the ensemble of the eval orders that already visit O first (for the
hidden top half and the 8 S-curves, the two that start in the bottom row: the paper's top-half completion bpd).

Speed: named orders that are rotations/reflections T of one base order o (the paper's 8 S-curves) run
through o's masks, Net_{T.o}(x; W)(T p) = Net_o(x o T; W o A_T)(p) (inputs, kernel taps and outputs
permuted, see `Model._frame`); o's masks are then constants and the convolutions skip the taps o never
uses. Any other order (random permutations, per-example completion orders) builds its masks in the graph.
"""
import functools
import logging
from typing import Any
from typing import Sequence

from flax import linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import distributions
from jaxgen import ops
from jaxgen.autoregressive import masked_conv
from jaxgen.autoregressive import orders as orders_lib
from jaxgen.metrics import completion
from jaxgen.training import family
from jaxgen.training import figures as figures_lib
from jaxgen.training import steps

logger = logging.getLogger("jaxgen")
_LN2 = float(np.log(2.0))


def concat_elu(x):
  """elu([x, -x]) along channels (PixelCNN++ Sec. 2.6; the official `concat_elu`)."""
  return jax.nn.elu(jnp.concatenate([x, -x], axis=-1))


def pono(x, eps=1e-5):
  """Positional normalisation (Li et al. 2019): standardise the channels at each location, no affine.

  Matches the official `pono` (torch `x.var(dim=1)` is the unbiased variance). It acts per location, so it
  preserves the autoregressive masks.
  """
  x32 = x.astype(jnp.float32)  # statistics in float32 whatever the activations' dtype; the result in x's
  mean = x32.mean(axis=-1, keepdims=True)
  var = x32.var(axis=-1, keepdims=True, ddof=1)
  return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


class Nin(nn.Module):
  """1x1 convolution ("network in network", the official `nin`), PyTorch's default initialisation; in x's dtype."""
  features: int

  @nn.compact
  def __call__(self, x):  # [..., C_in] -> [..., features]
    return nn.Dense(self.features, kernel_init=masked_conv.TORCH_KERNEL_INIT,
                    bias_init=masked_conv.torch_bias_init(x.shape[-1]), dtype=x.dtype)(x)


class StaticMask:
  """A numpy mask as a static (hashable) argument of `nn.remat`: under jax.checkpoint an array argument becomes a
  tracer, and the locally masked convolutions could no longer skip the taps the mask never uses (with remat on,
  an S-curve network then computed 9 taps instead of 6, ~1.9x the step's FLOPs instead of ~1.3x)."""

  def __init__(self, array):
    self.array = array

  def __hash__(self):
    return hash((self.array.shape, self.array.tobytes()))

  def __eq__(self, other):
    return isinstance(other, StaticMask) and np.array_equal(self.array, other.array)


class GatedResnet(nn.Module):
  """Gated residual block (PixelCNN++ Sec. 2.6; official `layers.gated_resnet` with locally masked convs).

  c1 = LMConv(concat_elu(u)) [+ NIN(concat_elu(a))];  c2 = LMConv(dropout(concat_elu(norm(c1))))
  = [g_a, g_b];  out = u + norm(g_a) * sigmoid(g_b).
  """
  filters: int
  kernel_size: int = 3
  dropout_rate: float = 0.0
  normalization: str = "pono"
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, u, mask, a=None, train=False, tap_perm=None):  # u [B, H, W, F]
    norm = pono if self.normalization == "pono" else (lambda t: t)
    mask = mask.array if isinstance(mask, StaticMask) else mask
    conv = functools.partial(masked_conv.LocallyMaskedConv, kernel_size=self.kernel_size, conv_impl=self.conv_impl)
    x = conv(self.filters, name="conv_in")(concat_elu(u), mask, tap_perm)
    x = norm(x)
    if a is not None:
      x = x + Nin(self.filters, name="nin_skip")(concat_elu(a))
    x = concat_elu(x)
    if self.dropout_rate > 0:
      # Dropout2d: whole channels, the same at every location (keeps the masks intact).
      x = nn.Dropout(self.dropout_rate, broadcast_dims=(1, 2))(x, deterministic=not train)
    x = conv(2 * self.filters, name="conv_out")(x, mask, tap_perm)
    g_a, g_b = jnp.split(x, 2, axis=-1)
    return u + norm(g_a) * jax.nn.sigmoid(g_b)  # [B, H, W, F]


class Model(nn.Module):
  """LMConv PixelCNN++ (official `OurPixelCNN`, `main.py --ours`).

  Attributes:
    image_shape: (H, W, C) of the images.
    likelihood: "dmol" (discretized logistic mixture, 8-bit or `num_bits`) or "bernoulli" (binary images).
    nr_resnet: gated resnets per block (up pass: 3 blocks of nr_resnet; down pass: nr, nr+1, nr+1).
    nr_filters: channels of the stream.
    nr_logistic_mix: mixture components of the DMOL output.
    kernel_size: odd kernel size of every locally masked convolution.
    max_dilation: dilation of the four convolutions between blocks (official `--max_dilation`).
    dropout_rate: channel dropout in the resnets (official `-dp`).
    normalization: "pono" (official `--normalization pono`) or "none".
    train_orders: names (see `orders.build`) from which one is drawn per training batch.
    eval_orders: names for evaluation; the first is the single order, all of them the ensemble.
    num_bits: bits per sub-pixel for "dmol" (5 for the official CelebA-HQ model). Images stay 8-bit in and out:
      they are floored to num_bits levels inside, and samples are returned as 8-bit values of their levels.
    remat: recompute each gated resnet in the backward pass instead of storing its activations (the
      official `--rematerialize`); saves memory, costs about one more forward pass.
    conv_impl: how the locally masked convolutions run, "auto" (per backend), "native" or "matmul" (`jaxgen.ops`).
    dtype: compute dtype of the network (config.compute_dtype); its output, the logistic mixture (or Bernoulli)
      likelihood and the order ensembles' log-sum-exp are float32, as are PONO's statistics.
  """
  image_shape: Sequence[int] = (32, 32, 3)
  likelihood: str = "dmol"
  nr_resnet: int = 5
  nr_filters: int = 160
  nr_logistic_mix: int = 10
  kernel_size: int = 3
  max_dilation: int = 2
  dropout_rate: float = 0.0
  normalization: str = "pono"
  train_orders: Sequence[str] = orders_lib.variants("s_curve")
  eval_orders: Sequence[str] = orders_lib.variants("s_curve")
  num_bits: int = 8
  remat: bool = False
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  def __post_init__(self):
    # Configs hand lists; tuples keep the module hashable (usable as a static jit argument).
    for field in ("image_shape", "train_orders", "eval_orders"):
      object.__setattr__(self, field, tuple(getattr(self, field)))
    ops.check_impl(self.conv_impl)
    super().__post_init__()

  # ------------------------------------------------------------------------------------------ network

  @property
  def _hwc(self):
    h, w, c = (int(s) for s in self.image_shape)
    return h, w, c

  def _num_outputs(self):
    c = self._hwc[2]
    if self.likelihood == "dmol":
      if not 1 <= self.num_bits <= 8:
        raise ValueError(f"num_bits={self.num_bits}: images are 8-bit, so use 1..8 bits per sub-pixel.")
      return distributions.dmol_num_params(c, self.nr_logistic_mix)
    if self.likelihood == "bernoulli":
      return c
    raise ValueError(f"unknown likelihood {self.likelihood!r}; expected 'dmol' or 'bernoulli'.")

  @nn.compact
  def network(self, v, masks, train=False, tap_perm=None):
    """Distribution parameters at every pixel.  v: [B, H, W, C] in [-1, 1]; masks: (first, later, dilated)
    each [(B,) H, W, k, k]; tap_perm: optional [k*k] permutation of every kernel's taps.
    Returns float32 [B, H, W, P], P = DMOL parameters or Bernoulli logits; computed in `dtype`."""
    v = v.astype(self.dtype)
    mask_first, mask_later, mask_dilated = masks
    f, k = self.nr_filters, self.kernel_size
    norm = pono if self.normalization == "pono" else (lambda t: t)
    resnet_cls = GatedResnet
    if self.remat:  # static: `train` (4; 0 is the module) and a numpy mask (2), kept a constant inside the checkpoint
      static_mask = isinstance(mask_later, np.ndarray)
      mask_later = StaticMask(mask_later) if static_mask else mask_later
      resnet_cls = nn.remat(GatedResnet, static_argnums=(2, 4) if static_mask else (4,))
    resnet = functools.partial(resnet_cls, f, k, self.dropout_rate, self.normalization, self.conv_impl)
    conv = functools.partial(masked_conv.LocallyMaskedConv, kernel_size=k, conv_impl=self.conv_impl)
    # A constant channel of ones, masked like the pixels: tells the first layer which neighbours exist.
    x = jnp.concatenate([v, jnp.ones(v.shape[:-1] + (1,), v.dtype)], axis=-1)  # [B, H, W, C + 1]
    u = norm(conv(f, name="conv_init")(x, mask_first, tap_perm))
    skips = [u]
    # Up pass: 3 blocks of resnets, with a dilated LMConv between blocks (no down-sampling).
    # (Explicit names keep checkpoints interchangeable with and without remat.)
    for block in range(3):
      for i in range(self.nr_resnet):
        u = resnet(name=f"up_{block}_resnet_{i}")(u, mask_later, None, train, tap_perm)
        skips.append(u)
      if block < 2:
        u = norm(conv(f, dilation=self.max_dilation, name=f"up_{block}_dilated")(u, mask_dilated, tap_perm))
        skips.append(u)
    # Down pass: blocks of nr, nr+1, nr+1 resnets, each fed the up-pass outputs in reverse.
    u = skips.pop()
    for block, n in enumerate((self.nr_resnet, self.nr_resnet + 1, self.nr_resnet + 1)):
      for i in range(n):
        u = resnet(name=f"down_{block}_resnet_{i}")(u, mask_later, skips.pop(), train, tap_perm)
      if block < 2:
        u = norm(conv(f, dilation=self.max_dilation, name=f"down_{block}_dilated")(u, mask_dilated, tap_perm))
    assert not skips
    return Nin(self._num_outputs(), name="nin_out")(jax.nn.elu(u)).astype(jnp.float32)  # [B, H, W, P]

  def __call__(self, images, labels=None, *, train=False, step=None):
    """Same as `losses` (so `Model.init(rngs, images, train=False)` creates every parameter)."""
    return self.losses(images, labels, train=train, step=step)

  # ------------------------------------------------------------------------------------ orders, masks

  def order_array(self, order=None):
    """None (first eval order), a name, or an int array [H*W, 2] / [B, H*W, 2] -> int array."""
    h, w, _ = self._hwc
    if order is None:
      order = self.eval_orders[0]
    if isinstance(order, str):
      return orders_lib.build(order, h, w)
    if isinstance(order, (list, tuple)):
      order = np.asarray(order)
    if isinstance(order, np.ndarray) and order.ndim == 2:
      return orders_lib.validate_order(order, h, w)
    return order  # a jax array (possibly traced) [H*W, 2] or per-example [B, H*W, 2]: used as given

  def masks_for(self, order):
    """(first, later, dilated) masks for an order array [H*W, 2] (-> [H, W, k, k]) or [B, H*W, 2].

    A numpy order gives numpy masks (compile-time constants: unused taps are skipped); a jax array gives
    masks computed in the graph (the order may be traced)."""
    h, w, _ = self._hwc
    fn = functools.partial(masked_conv.order_masks, height=h, width=w, kernel_size=self.kernel_size,
                           max_dilation=self.max_dilation)
    if isinstance(order, np.ndarray) and order.ndim == 2:
      return fn(order, xp=np)
    order = jnp.asarray(order)
    if order.ndim == 3:
      return jax.vmap(lambda o: fn(o, xp=jnp))(order)
    return fn(order, xp=jnp)

  def _stacked_masks(self, names):
    h, w, _ = self._hwc
    per_order = [masked_conv.order_masks(orders_lib.build(n, h, w), h, w, self.kernel_size, self.max_dilation)
                 for n in names]
    return tuple(jnp.asarray(np.stack(ms)) for ms in zip(*per_order))  # 3 x [n, H, W, k, k]

  def _frame(self, names):
    """A static plan to run the named orders through their common base order's masks, or None.

    For a square image and names that are symmetries T of one base order o (e.g. `variants("s_curve")`),
    Net_{T.o}(x; W)(T p) = Net_o(x o T; W o A_T)(p): permute the input pixels, permute every kernel's taps,
    run the network with o's masks, permute the outputs back. The masks are then compile-time constants,
    so the locally masked convolutions skip the taps o never uses (3 of 9 for an S-curve), and one
    compiled network serves all 8 orders of order-agnostic training.
    Returns (numpy masks of o, positions [n, H*W], inverse positions [n, H*W], taps [n, k*k]).
    """
    h, w, _ = self._hwc
    parsed = [orders_lib.parse(n) for n in names]
    if h != w or len({base for base, _, _ in parsed}) != 1:
      return None
    base = parsed[0][0]
    masks = masked_conv.order_masks(orders_lib.build(base, h, w), h, w, self.kernel_size, self.max_dilation)
    maps = [orders_lib.symmetry_maps(n, h, self.kernel_size) for n in names]
    positions = np.stack([m[0] for m in maps])
    taps = np.stack([m[1] for m in maps])
    return masks, positions, np.argsort(positions, axis=1), taps

  def _params_in_frame(self, v, frame, pick, train=False):
    """Network parameters for order `pick` (a Python int, or a traced index) of a `_frame` plan."""
    masks, positions, inverse, taps = frame
    b, h, w, c = v.shape
    if isinstance(pick, (int, np.integer)):
      if np.array_equal(positions[pick], np.arange(h * w)):  # the base order itself
        return self.network(v, masks, train)
      pos, inv, tap_perm = positions[pick], inverse[pick], taps[pick]
    else:
      pos, inv, tap_perm = (jnp.asarray(a)[pick] for a in (positions, inverse, taps))
    v_t = jnp.take(v.reshape(b, h * w, c), pos, axis=1).reshape(v.shape)  # x'(p) = x(T p)
    params = self.network(v_t, masks, train, tap_perm)
    return jnp.take(params.reshape(b, h * w, -1), inv, axis=1).reshape(b, h, w, -1)  # params(T p) = params'(p)

  def params_for(self, v, order=None, train=False):
    """Distribution parameters [B, H, W, P] of input v [B, H, W, C] in [-1, 1] under `order` (a name: run in
    its base order's frame when possible; an array [H*W, 2] or [B, H*W, 2]: masks built from it)."""
    order = self.eval_orders[0] if order is None else order
    if isinstance(order, str):
      frame = self._frame((order,))
      if frame is not None:
        return self._params_in_frame(v, frame, 0, train)
    return self.network(v, self.masks_for(self.order_array(order)), train)

  # ------------------------------------------------------------------------------------ likelihoods

  def _levels(self, images):
    """8-bit images (the pipeline's uint8) -> int32 levels 0..2^num_bits - 1: floor(x / 2^(8 - num_bits)), as the
    official `--n_bits` (and Glow, NVAE). Bernoulli images (0/1) pass unchanged."""
    x = jnp.asarray(images)
    if self.likelihood == "bernoulli" or self.num_bits == 8:
      return x
    return jnp.floor_divide(x.astype(jnp.int32), 2 ** (8 - self.num_bits))

  def _to_8bit(self, levels):
    """int levels 0..2^num_bits - 1 -> uint8 8-bit values (the bin's lowest, as Glow's postprocess)."""
    if self.likelihood == "bernoulli":
      return levels.astype(jnp.uint8)
    return (levels * 2 ** (8 - self.num_bits)).astype(jnp.uint8)

  def _to_input(self, images):
    """int levels (`_levels`) -> network input in [-1, 1]."""
    x = jnp.asarray(images)
    if self.likelihood == "bernoulli":
      return 2.0 * x.astype(jnp.float32) - 1.0
    return x.astype(jnp.float32) * (2.0 / (2 ** self.num_bits - 1)) - 1.0

  def _per_pixel_from_params(self, images, params):
    if self.likelihood == "bernoulli":
      return distributions.bernoulli_log_prob_elementwise(images, params).sum(-1)  # [B, H, W]
    x = jnp.asarray(images)
    if not jnp.issubdtype(x.dtype, jnp.integer):
      x = jnp.round(x).astype(jnp.int32)
    return distributions.discretized_logistic_mixture_log_prob_per_pixel(x, params, self.num_bits)

  def _check_images(self, images):
    if tuple(images.shape[1:]) != self._hwc:
      raise ValueError(f"images have shape {tuple(images.shape)}; the model expects [B, H, W, C] with (H, W, C) = "
                       f"image_shape = {tuple(self._hwc)}. Set the model's image_shape to the data's.")

  def log_prob_per_pixel_with_masks(self, images, masks, train=False):
    """log p(x_p | x_<p) at every pixel, joint over its channels, in nats.  -> [B, H, W]."""
    self._check_images(images)
    levels = self._levels(images)
    return self._per_pixel_from_params(levels, self.network(self._to_input(levels), masks, train))

  def log_prob_per_pixel(self, images, order=None):
    """Per-pixel conditional log-likelihoods under `order` (name, array, or None = eval_orders[0]).  [B, H, W]."""
    self._check_images(images)
    levels = self._levels(images)
    return self._per_pixel_from_params(levels, self.params_for(self._to_input(levels), order))

  def log_prob(self, images, order=None):
    """log p(x | order) in nats per image.  images: integer [B, H, W, C] (0/1 for bernoulli).  -> [B]."""
    return self.log_prob_per_pixel(images, order).sum(axis=(1, 2))

  def log_prob_ensemble(self, images, orders=None):
    """log mean_k p(x | order_k) over `orders` (default eval_orders), the paper's order ensemble.  [B]."""
    names = tuple(orders if orders is not None else self.eval_orders)
    lps = jnp.stack([self.log_prob(images, o) for o in names], axis=0)  # [K, B]
    return jax.nn.logsumexp(lps, axis=0) - np.log(len(names))

  def losses(self, images, labels=None, *, train, step=None):
    """Trainer contract: per-example {"loss", "nats", "bpd"} (+ "*_ensemble" in evaluation with several
    eval_orders). loss = nats per dimension; in training the order is drawn from train_orders."""
    del labels, step
    h, w, c = self._hwc
    dims = h * w * c
    if train:
      self._check_images(images)
      images = self._levels(images)
      names = tuple(self.train_orders)
      pick = jax.random.randint(self.make_rng("sample"), (), 0, len(names)) if len(names) > 1 else 0
      frame = self._frame(names)
      if frame is not None:  # one base order, its symmetries: static masks, permuted inputs and kernels
        params = self._params_in_frame(self._to_input(images), frame, pick, train=True)
      else:  # any set of orders: masks selected at run time
        params = self.network(self._to_input(images), tuple(m[pick] for m in self._stacked_masks(names)), True)
      lp = self._per_pixel_from_params(images, params).sum(axis=(1, 2))
      return self._metrics(lp, dims)
    # Initialisation needs one network trace, not one per eval order (the trainer's init and eval_shape).
    names = self.eval_orders[:1] if self.is_initializing() else self.eval_orders
    lps = jnp.stack([self.log_prob(images, name) for name in names], axis=0)  # [K, B]
    out = self._metrics(lps[0], dims)  # the first eval order alone
    if len(self.eval_orders) > 1:
      nats_ens = -(jax.nn.logsumexp(lps, axis=0) - np.log(len(names)))
      out.update(nats_ensemble=nats_ens, bpd_ensemble=nats_ens / (dims * _LN2))
    return out

  @staticmethod
  def _metrics(lp, dims):
    nats = -lp  # [B]
    return {"loss": nats / dims, "nats": nats, "bpd": nats / (dims * _LN2)}

  # ------------------------------------------------------------------------------------ sampling

  def _sample_pixel(self, rng, params, temperature):
    """params [N, P] -> int32 [N, C]."""
    c = self._hwc[2]
    if self.likelihood == "bernoulli":
      return distributions.bernoulli_sample(rng, params, temperature)
    return distributions.discretized_logistic_mixture_sample(rng, params, c, self.num_bits, temperature)

  def _sample_loop(self, rng, canvas, order, observed, start, temperature, masks=None):
    """Fills canvas pixels in `order` (per example [N, H*W, 2]) from step `start` on, keeping observed ones.

    Step t draws the pixel p = order[:, t] from the network's parameters there, with key fold_in(rng, t), as a
    full network pass on the canvas would give them (the official sampler), but computes only pixel p of every
    layer: a layer's features at p depend on the previous layer's at p and at pixels earlier in the order, whose
    features are final once those pixels are generated. Every convolution's input is kept in a cache
    (`_pixel_convs`), filled by one full pass on the canvas when pixels are already there (start > 0); each step
    then costs about 1/(H*W) of a pass. A jit-compiled lax.fori_loop over the steps.
    `masks`: the order's masks when the caller has them (numpy masks stay constants), else built from `order`.
    """
    module, variables = self.unbind()
    module = module.clone(remat=False)  # caches are written from inside the network: no jax.checkpoint around it
    masks = self.masks_for(order) if masks is None else masks
    n = canvas.shape[0]
    batch = jnp.arange(n)
    pad = (self.kernel_size // 2) * self.max_dilation
    prime = functools.partial(module.apply, variables, method=Model.network)

    def full_pass(canvas):  # every convolution's input over the whole canvas, padded: the caches
      caches = {}
      with nn.intercept_methods(functools.partial(_record_convs, caches=caches, pad=pad)):
        prime(module._to_input(canvas), masks)
      return caches

    if isinstance(start, int) and start == 0:  # nothing generated yet: every cache entry a step reads is masked
      caches = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(full_pass, canvas))
    else:
      caches = full_pass(canvas)

    def step(t, carry):
      canvas, caches = carry
      rows, cols = order[:, t, 0], order[:, t, 1]  # [N]
      at_p = tuple(jnp.asarray(m)[rows, cols] if m.ndim == 4 else m[batch, rows, cols] for m in masks)  # 3 x [N, k, k]
      written = {}
      with nn.intercept_methods(functools.partial(_pixel_convs, caches=caches, written=written, at=(batch, rows, cols),
                                                  pad=pad)):
        params = prime(module._to_input(canvas[batch, rows, cols]), at_p)  # [N, P]
      new = module._sample_pixel(jax.random.fold_in(rng, t), params, temperature)
      keep = observed[batch, rows, cols]  # [N]
      value = jnp.where(keep[:, None], canvas[batch, rows, cols], new.astype(canvas.dtype))  # [N, C]
      # The first layer's input at p is the pixel itself (masked out while p was drawn): now it is known.
      first = jnp.concatenate([module._to_input(value), jnp.ones((n, 1))], axis=-1)
      written["conv_init"] = written["conv_init"].at[batch, rows + pad, cols + pad].set(first)
      return canvas.at[batch, rows, cols].set(value), written

    return jax.lax.fori_loop(start, order.shape[1], step, (canvas, caches))[0]

  def sample(self, rng, num, temperature=1.0, order=None):
    """Samples `num` images pixel by pixel in `order` (default eval_orders[0]).  -> uint8 [num, H, W, C]."""
    h, w, c = self._hwc
    order = self.order_array(order)  # numpy for a name: constant masks
    masks = self.masks_for(order)
    order = jnp.broadcast_to(jnp.asarray(order), (num, h * w, 2))
    canvas = jnp.zeros((num, h, w, c), jnp.int32)  # levels
    observed = jnp.zeros((num, h, w), bool)
    return self._to_8bit(self._sample_loop(rng, canvas, order, observed, 0, temperature, masks))

  def _named(self, order):
    """The name among eval_orders / train_orders of a numpy order [H*W, 2], or None."""
    h, w, _ = self._hwc
    for name in dict.fromkeys(self.eval_orders + self.train_orders):
      if np.array_equal(orders_lib.build(name, h, w), order):
        return name
    return None

  def complete(self, rng, images, observed, temperature=1.0, order=None):
    """Image completion (LMConv Sec. 5.2): sample the unobserved pixels given the observed ones.

    The generation order visits the observed pixels first (in `order`'s sequence), then the rest, so the
    network's conditionals for the missing pixels are exactly p(x_missing | x_observed). Default order: the
    first of `completion_orders(observed)` (an eval order that already visits the observed pixels first, e.g.
    the S-curve itself when the top rows are observed) for one region, eval_orders[0] for per-example regions.

    Args:
      images: integer [B, H, W, C]; observed: bool [H, W] (numpy: one order for the batch, built once, with
        constant masks) or [B, H, W] (an order per example, built in the graph).
    Returns:
      (completed uint8 [B, H, W, C] equal to `images` on observed pixels (their num_bits levels, as 8-bit values),
       log p(x_missing | x_observed) of the given images in nats [B], summed over the missing pixels).
    """
    self._check_images(images)
    b = images.shape[0]
    h, w, _ = self._hwc
    canvas = self._levels(images).astype(jnp.int32)
    if isinstance(observed, np.ndarray) and observed.ndim == 2 and not isinstance(order, jax.Array):
      observed = observed.astype(bool)
      order = self.completion_orders(observed)[0] if order is None else order
      seq = orders_lib.observed_first(self.order_array(order), observed)  # numpy [H*W, 2]
      name = self._named(seq)  # e.g. the S-curve itself when the top rows are observed
      per_pixel = self.log_prob_per_pixel(images, seq if name is None else name)  # [B, H, W]
      cond_log_prob = jnp.where(observed, 0.0, per_pixel).sum(axis=(1, 2))
      completed = self._sample_loop(rng, canvas, jnp.broadcast_to(jnp.asarray(seq), (b, h * w, 2)),
                                    jnp.broadcast_to(jnp.asarray(observed), (b, h, w)), int(observed.sum()),
                                    temperature, self.masks_for(seq))
      return self._to_8bit(completed), cond_log_prob
    observed = jnp.broadcast_to(jnp.asarray(observed, bool), (b, h, w))
    base = jnp.asarray(self.order_array(order))
    orders = jax.vmap(lambda obs: orders_lib.observed_first(base, obs, xp=jnp))(observed)  # [B, H*W, 2]
    per_pixel = self.log_prob_per_pixel_with_masks(images, self.masks_for(orders))  # [B, H, W]
    cond_log_prob = jnp.where(observed, 0.0, per_pixel).sum(axis=(1, 2))
    start = observed.sum(axis=(1, 2)).min()
    completed = self._sample_loop(rng, canvas, orders, observed, start, temperature)
    return self._to_8bit(completed), cond_log_prob

  def completion_orders(self, observed):
    """The eval_orders that already visit every observed pixel first (for observed = the bottom half and the
    8 S-curves: the two that start in the bottom row, as the paper's top-half completion), or, if none does,
    all eval_orders; `conditional_log_prob` rearranges each to observed-first."""
    h, w, _ = self._hwc
    observed = np.asarray(observed, bool)
    built = {n: orders_lib.build(n, h, w) for n in self.eval_orders}
    first = [n for n, o in built.items() if np.array_equal(orders_lib.observed_first(o, observed), o)]
    return tuple(first) or tuple(self.eval_orders)

  def conditional_log_prob(self, images, observed, orders=None):
    """log p(x_missing | x_observed) in nats [B]: the likelihood of the unobserved pixels given the observed
    ones (LMConv Sec. 5.2, the paper's top-half completion bpd), as the ensemble
    log mean_k p(x_missing | x_observed, order_k) over orders that generate the observed pixels first.

    Args:
      images: integer [B, H, W, C]; observed: numpy bool [H, W] (the same region for the whole batch).
      orders: names or arrays; each is rearranged to visit observed pixels first (a no-op for the default,
        `completion_orders(observed)`).
    """
    observed = np.asarray(observed, bool)
    lps = []
    for order in (orders if orders is not None else self.completion_orders(observed)):
      seq = orders_lib.observed_first(self.order_array(order), observed)
      name = order if isinstance(order, str) and np.array_equal(seq, self.order_array(order)) else None
      per_pixel = self.log_prob_per_pixel(images, seq if name is None else name)  # [B, H, W]
      lps.append(jnp.where(observed, 0.0, per_pixel).sum(axis=(1, 2)))
    return jax.nn.logsumexp(jnp.stack(lps), axis=0) - np.log(len(lps))


def _record_convs(next_fun, args, kwargs, context, *, caches, pad):
  """Flax method interceptor: stores the input of every `LocallyMaskedConv` call, zero-padded by `pad` pixels on
  each side, in caches[its path] ([B, H + 2 pad, W + 2 pad, C_in]), then runs the call."""
  if isinstance(context.module, masked_conv.LocallyMaskedConv) and context.method_name == "__call__":
    caches["/".join(context.module.path)] = jnp.pad(args[0], ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  return next_fun(*args, **kwargs)


def _pixel_convs(next_fun, args, kwargs, context, *, caches, written, at, pad):
  """Flax method interceptor that runs the network at one pixel per example, at = (batch, rows, cols) [N] each:
  every `LocallyMaskedConv` gets its input at that pixel (x [N, C_in]) and the mask there ([N, k, k]), writes the
  input into its cache (`_record_convs`'s layout; the result goes to written[path]) and returns its output at the
  pixel, sum_o M_p[o] * x[p + d*o] @ W[o] + bias ([N, C_out]), reading the neighbours from the cache. Every other
  layer of the network acts per pixel and runs unchanged."""
  module = context.module
  if not (isinstance(module, masked_conv.LocallyMaskedConv) and context.method_name == "__call__"):
    return next_fun(*args, **kwargs)
  x, mask = args[:2]
  batch, rows, cols = at
  path = "/".join(module.path)
  cache = caches[path].at[batch, rows + pad, cols + pad].set(x.astype(caches[path].dtype))
  written[path] = cache
  offsets = module.dilation * (np.arange(module.kernel_size) - module.kernel_size // 2)  # [k]
  window = cache[batch[:, None, None], (rows + pad)[:, None, None] + offsets[:, None],
                 (cols + pad)[:, None, None] + offsets[None, :]]  # [N, k, k, C_in]
  params = module.variables["params"]
  y = jnp.einsum("nijc,nij,ijco->no", window, mask.astype(x.dtype), params["kernel"].astype(x.dtype))
  if module.mask_weight:
    y = y + jnp.einsum("nij,ijo->no", mask.astype(x.dtype), params["mask_kernel"].astype(x.dtype))
  if module.use_bias:
    y = y + params["bias"].astype(x.dtype)
  return y  # [N, C_out]


def completion_figure(s, state, *, missing, num_images, per_image, seed):
  """Completions of the first `num_images` test images: (uint8 [num_images * (per_image + 2), H, W, C]: per image
  the observed part with the `missing` region grey, `per_image` samples of that region given the rest at
  config.sample_temperature, the original (binary images shown as 0/255); log p(x_missing | x_observed) of the
  originals in nats [num_images])."""
  images = s.input.examples(s.config.eval_split, num_images)
  hidden = completion.missing_region(missing, *images.shape[1:3])  # [H, W], True where sampled
  fill = jax.jit(lambda v, rng, x: s.model.apply(v, rng, x, ~hidden, s.config.sample_temperature, method="complete"))
  completed, cond_log_prob = fill(steps.eval_variables(state), jax.random.key(seed),
                                  jnp.asarray(np.repeat(images, per_image, axis=0)))
  scale = 255 if s.config.binarize else 1
  completed = np.asarray(completed).reshape((num_images, per_image) + images.shape[1:]) * scale
  observed = np.where(hidden[None, :, :, None], 128, images * scale)
  rows = np.concatenate([observed[:, None], completed, images[:, None] * scale], axis=1)
  return rows.reshape((-1,) + images.shape[1:]).astype(np.uint8), np.asarray(cond_log_prob)[::per_image]


def figures(s, state, *, seed, temperatures, num, missing, completions, complete_images):
  """The temperature sweep (`figures.temperature_figures`; one step per pixel: keep `num` small on a CPU)
  and completions.png: one row per test image, its observed part (the `missing` region grey), `completions`
  samples of the region given the rest, and the original. Logs the originals' -log p(x_missing | x_observed)."""
  out = figures_lib.temperature_figures(s, state, seed=seed, temperatures=temperatures, num=num)
  grid, cond_log_prob = completion_figure(s, state, missing=missing, num_images=complete_images,
                                          per_image=completions, seed=seed)
  logger.info("completions.png: %s hidden; -log p(x_missing | x_observed) of the originals: %.1f nats", missing,
              -cond_log_prob.mean())
  return out | {"completions.png": figures_lib.grid(grid, columns=completions + 2)}


def complete(s, state, rng, images, observed):
  """`Family.complete`: `Model.complete`, exact samples of the hidden pixels given the observed ones (an order that
  generates the observed pixels first) at config.sample_temperature."""
  fill = jax.jit(lambda v, r, x: s.model.apply(v, r, x, observed, s.config.sample_temperature, method="complete")[0])
  order = s.model.completion_orders(observed)[0]
  return np.asarray(fill(steps.eval_variables(state), rng, jnp.asarray(images))), f"exact conditional ({order} order)"


FAMILY = family.LIKELIHOOD._replace(
    figures=figures,
    figure_options=figures_lib.TEMPERATURE_OPTIONS | dict(missing="bottom", completions=3, complete_images=6),
    complete=complete)


# A tiny model for tests (sizes of real runs live in experiments/configs).
LMConvTiny = functools.partial(Model, image_shape=(4, 4, 1), likelihood="bernoulli", nr_resnet=1, nr_filters=8,
                               nr_logistic_mix=2, train_orders=("s_curve", "hilbert_rot90"),
                               eval_orders=("s_curve", "hilbert_rot90"))
