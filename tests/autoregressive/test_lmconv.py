"""LMConv model: autoregressive by gradients for any order, normalised over every tiny image, ensemble,
completion, sampling in the order, and the trainer contract."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen.autoregressive import lmconv
from jaxgen.autoregressive import orders

RNGS = {"params": jax.random.key(0), "sample": jax.random.key(1), "dropout": jax.random.key(2)}


def _init(model):
  """Parameters from one jitted trace of the network (cheaper than tracing `losses` op by op)."""
  h, w, c = model.image_shape
  masks = model.masks_for(orders.build("raster", h, w))
  return jax.jit(lambda: model.init(RNGS, jnp.zeros((1, h, w, c)), masks, method="network"))()


def _perturbed_init(model, images=None):
  variables = _init(model)
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(3), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.2 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


# ---------------------------------------------------------------- autoregressive property (colour, DMOL)

RGB = lmconv.LMConvTiny(image_shape=(5, 4, 3), likelihood="dmol", dropout_rate=0.3)
RGB_VARS = _perturbed_init(RGB)


@jax.jit
def _param_dependence(v, masks, projection):
  """|d <params(p), projection> / d v(q)| summed over channels: [H, W (output p), H, W (input q)]."""
  def f(v):
    params = RGB.apply(RGB_VARS, v, masks, True, method="network", rngs={"dropout": jax.random.key(5)})
    return (params[0] * projection).sum(-1)  # [H, W]
  jac = jax.jacrev(f)(v)  # [H, W, 1, H, W, C]
  return jnp.abs(jac[:, :, 0]).sum(-1)


def test_autoregressive_property_by_gradients_for_random_orders():
  rng = np.random.default_rng(0)
  v = jax.random.uniform(jax.random.key(6), (1, 5, 4, 3), minval=-1, maxval=1)
  projection = jax.random.normal(jax.random.key(7), (RGB._num_outputs(),))
  for order in [orders.build("hilbert_rot90_flip", 5, 4), orders.build("s_curve_rot270", 5, 4),
                orders.random_order(rng, 5, 4), orders.random_order(rng, 5, 4)]:
    dep = np.asarray(_param_dependence(v, RGB.masks_for(order), projection))
    rank = orders.rank_map(order, 5, 4)
    for r, c in itertools.product(range(5), range(4)):
      later = rank >= rank[r, c]  # the pixel itself and every pixel after it in the order
      assert np.all(dep[r, c][later] == 0.0), (order.tolist(), r, c)
    # Not vacuous: pixels do depend on earlier ones.
    assert (dep > 0).sum() > 20


# ---------------------------------------------------------------- named orders run in the base frame

FRAME = lmconv.LMConvTiny(image_shape=(5, 5, 3), likelihood="dmol", nr_resnet=0,
                          train_orders=orders.variants("hilbert"))
FRAME_VARS = _perturbed_init(FRAME)
FRAME_IMAGES = jax.random.randint(jax.random.key(11), (2, 5, 5, 3), 0, 256).astype(jnp.uint8)


@jax.jit
def _generic_log_prob(order):
  return FRAME.apply(FRAME_VARS, FRAME_IMAGES, order, method="log_prob")  # masks built from the array


@functools.partial(jax.jit, static_argnums=0)
def _named_log_prob(name):
  return FRAME.apply(FRAME_VARS, FRAME_IMAGES, name, method="log_prob")  # permuted inputs and kernels


def test_named_orders_in_base_frame_equal_masks_from_the_order():
  # Net_{T.o}(x; W)(T p) = Net_o(x o T; W o A_T)(p): every symmetry of S-curve and Hilbert.
  generic = {name: _generic_log_prob(jnp.asarray(orders.build(name, 5, 5)))
             for name in orders.variants("s_curve") + orders.variants("hilbert")}
  for name in ["s_curve_rot90", "s_curve_rot180_flip", "hilbert_flip", "hilbert_rot270"]:
    np.testing.assert_allclose(_named_log_prob(name), generic[name], rtol=2e-6)
  # Training draws one of train_orders per batch (traced index into the 8 frames): each loss is one of
  # the 8 orders' exact losses, and different draws pick different orders.
  train_loss = jax.jit(lambda rng: FRAME.apply(FRAME_VARS, FRAME_IMAGES, train=True, rngs={"sample": rng})["nats"])
  picked = set()
  for i in range(12):
    nats = train_loss(jax.random.key(i))
    matches = [n for n in orders.variants("hilbert") if np.allclose(nats, -generic[n], rtol=2e-6)]
    assert len(matches) == 1
    picked.add(matches[0])
  assert len(picked) >= 3


# ---------------------------------------------------------------- normalisation over all tiny images

BIN = lmconv.LMConvTiny(nr_resnet=0, nr_filters=2)  # 4x4 binary, Bernoulli; the smallest network
ALL_BINARY = ((np.arange(2 ** 16)[:, None] >> np.arange(16)) & 1).astype(np.uint8).reshape(-1, 4, 4, 1)
BIN_VARS = _perturbed_init(BIN)


@functools.partial(jax.jit, static_argnums=0)
def _total_probability(model, variables, images, masks):
  chunks = images.reshape((16, -1) + images.shape[1:])
  lp = jax.lax.map(lambda x: model.apply(variables, x, masks, method="log_prob_per_pixel_with_masks").sum((1, 2)),
                   chunks)
  return jnp.exp(lp).sum(), lp.reshape(-1)


def test_binary_4x4_probabilities_sum_to_one_under_several_orders():
  rng = np.random.default_rng(1)
  for order in [orders.build("hilbert_rot90", 4, 4), orders.random_order(rng, 4, 4)]:
    total, _ = _total_probability(BIN, BIN_VARS, ALL_BINARY, BIN.masks_for(order))
    np.testing.assert_allclose(total, 1.0, rtol=1e-4)


def test_dmol_model_normalised_on_1bit_rgb_2x2():
  model = lmconv.LMConvTiny(image_shape=(2, 2, 3), likelihood="dmol", num_bits=1, nr_resnet=0)
  levels = ((np.arange(2 ** 12)[:, None] >> np.arange(12)) & 1).astype(np.uint8).reshape(-1, 2, 2, 3)
  images = levels * np.uint8(128)  # the 8-bit images of the 1-bit levels
  variables = _perturbed_init(model)
  for order in [orders.build("hilbert", 2, 2), orders.random_order(np.random.default_rng(2), 2, 2)]:
    total, _ = _total_probability(model, variables, images, model.masks_for(order))
    np.testing.assert_allclose(total, 1.0, rtol=1e-4)


def test_fewer_bits_floor_the_8bit_images_and_samples_come_back_as_8bit():
  # Official `--n_bits 5` (the CelebA-HQ model): floor(x / 8), so 8-bit values in one 5-bit bin are one value.
  model = lmconv.LMConvTiny(image_shape=(2, 2, 3), likelihood="dmol", num_bits=5, nr_resnet=0)
  variables = _perturbed_init(model)
  low = jax.random.randint(jax.random.key(0), (3, 2, 2, 3), 0, 32).astype(jnp.uint8) * 8
  apply = jax.jit(lambda x: model.apply(variables, x, "hilbert", method="log_prob"))
  np.testing.assert_array_equal(apply(low), apply(low + 7))  # e.g. 248 and 255: the same level 31
  assert np.all(np.isfinite(apply(low)))
  samples = model.apply(variables, jax.random.key(1), 8, method="sample")
  assert samples.dtype == jnp.uint8 and np.all(np.asarray(samples) % 8 == 0)
  assert len(np.unique(np.asarray(samples))) > 4  # spread over the 8-bit range, not stuck at levels 0..31


def test_ensemble_is_log_mean_exp_and_log_prob_matches_per_pixel():
  x = ALL_BINARY[::4097][:4]

  @jax.jit
  def evaluate(x):
    lps = [BIN.apply(BIN_VARS, x, name, method="log_prob") for name in BIN.eval_orders]
    ens = BIN.apply(BIN_VARS, x, method="log_prob_ensemble")
    return lps, ens, BIN.apply(BIN_VARS, x, BIN.eval_orders[1], method="log_prob_per_pixel")

  lps, ens, per_pixel = evaluate(x)
  np.testing.assert_allclose(ens, jax.nn.logsumexp(jnp.stack(lps), 0) - np.log(len(lps)), rtol=1e-5)
  assert per_pixel.shape == (4, 4, 4)
  np.testing.assert_allclose(per_pixel.sum((1, 2)), lps[1], rtol=1e-5)


# ---------------------------------------------------------------- completion

@jax.jit
def _bin_log_prob(images, masks):
  return BIN.apply(BIN_VARS, images, masks, method="log_prob_per_pixel_with_masks").sum((1, 2))


def test_completion_keeps_observed_pixels_and_gives_the_exact_conditional():
  # Two images with different observed regions (per-example completion orders), 8 missing pixels each.
  observed = np.zeros((2, 4, 4), bool)
  observed[0, :2] = True  # top half seen
  observed[1].flat[np.random.default_rng(3).permutation(16)[:8]] = True
  x = ALL_BINARY[[12345, 54321]]
  completed, cond = jax.jit(lambda v, r, x, o: BIN.apply(v, r, x, o, method="complete"))(
      BIN_VARS, jax.random.key(8), x, observed)
  assert completed.dtype == jnp.uint8 and completed.shape == x.shape
  np.testing.assert_array_equal(np.asarray(completed)[observed], x[observed])
  assert set(np.unique(np.asarray(completed))) <= {0, 1}
  # log p(x_miss | x_obs) = log p(x) - log sum_{x'_miss} p(x_obs, x'_miss) under the completion order.
  fills = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(np.uint8)  # all 2^8 fillings
  for b in range(2):
    candidates = np.repeat(x[b:b + 1], 256, axis=0)
    candidates[:, ~observed[b], 0] = fills
    order = orders.observed_first(orders.build(BIN.eval_orders[0], 4, 4), observed[b])
    lp = _bin_log_prob(np.concatenate([x[b:b + 1], candidates]), BIN.masks_for(order))
    np.testing.assert_allclose(cond[b], lp[0] - jax.nn.logsumexp(lp[1:]), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- sampling follows the order

SAMPLER = lmconv.LMConvTiny(image_shape=(4, 4, 3), likelihood="dmol", nr_resnet=0)
SAMPLER_VARS = _perturbed_init(SAMPLER)


@jax.jit
def _sample_and_teacher_force(rng, order, other_order):
  """Samples 3 images in `order`; then redraws every pixel from the parameters the network gives on the
  final samples under `order`'s masks (and, as a control, `other_order`'s), with the sampler's step keys."""
  model, v = SAMPLER, SAMPLER_VARS
  samples = model.apply(v, rng, 3, 1.0, order, method="sample")
  both = jnp.concatenate([samples, samples])
  masks = model.masks_for(jnp.stack([order] * 3 + [other_order] * 3))  # per-example masks
  params = model.apply(v, model._to_input(both), masks, method="network")
  redraw = jnp.zeros(both.shape, jnp.int32)
  for t in range(16):
    r, c = order[t]
    redraw = redraw.at[:, r, c].set(model._sample_pixel(jax.random.fold_in(rng, t), params[:, r, c], 1.0))
  return samples, redraw[:3], redraw[3:]


def test_samples_follow_the_order():
  rng = np.random.default_rng(4)
  for order in [orders.random_order(rng, 4, 4), orders.build("hilbert_rot180", 4, 4)]:
    other = orders.random_order(rng, 4, 4)
    samples, same, control = _sample_and_teacher_force(jax.random.key(9), jnp.asarray(order), jnp.asarray(other))
    assert samples.dtype == jnp.uint8 and samples.shape == (3, 4, 4, 3)
    # Each pixel was drawn from the conditional given exactly the earlier pixels of the final image ...
    np.testing.assert_array_equal(np.asarray(same), np.asarray(samples))
    # ... which a different order's conditionals do not reproduce.
    assert np.any(np.asarray(control) != np.asarray(samples))


# ---------------------------------------------------------------- the incremental sampler equals full passes

DEEP = lmconv.LMConvTiny(image_shape=(4, 4, 3), likelihood="dmol", nr_resnet=1, train_orders=orders.S_CURVES,
                         eval_orders=orders.S_CURVES)  # resnets with skips, dilated convs: every cached layer
DEEP_VARS = _perturbed_init(DEEP)


@jax.jit
def _full_pass_params(canvas, order):
  return DEEP.apply(DEEP_VARS, DEEP._to_input(canvas), order, method="params_for")  # [B, H, W, P]


def _full_pass_sampler(rng, canvas, order, observed, start):
  """The sampler's definition: step t draws pixel order[t] from a whole network pass on the canvas, key
  fold_in(rng, t), keeping observed pixels."""
  for t in range(start, 16):
    r, c = order[t]
    new = DEEP._sample_pixel(jax.random.fold_in(rng, t), _full_pass_params(canvas, order)[:, r, c], 1.0)
    canvas = canvas.at[:, r, c].set(jnp.where(observed[r, c], canvas[:, r, c], new))
  return DEEP._to_8bit(canvas)


def test_incremental_sampler_equals_full_network_passes():
  rng = jax.random.key(12)
  order = orders.build("s_curve_rot90", 4, 4)
  samples = jax.jit(lambda v, r: DEEP.apply(v, r, 3, 1.0, "s_curve_rot90", method="sample"))(DEEP_VARS, rng)
  expected = _full_pass_sampler(rng, jnp.zeros((3, 4, 4, 3), jnp.int32), order, np.zeros((4, 4), bool), 0)
  np.testing.assert_array_equal(samples, expected)
  # Completion starts after the observed pixels: its caches come from one full pass on them.
  observed = np.zeros((4, 4), bool)
  observed[2:] = True
  images = jax.random.randint(jax.random.key(13), (3, 4, 4, 3), 0, 256)
  completed, _ = jax.jit(lambda v, r, x: DEEP.apply(v, r, x, observed, method="complete"))(DEEP_VARS, rng, images)
  seq = orders.observed_first(DEEP.order_array(DEEP.completion_orders(observed)[0]), observed)
  np.testing.assert_array_equal(completed, _full_pass_sampler(rng, images, seq, observed, 8))
  assert np.any(np.asarray(completed)[:, :2] != np.asarray(images)[:, :2])  # the hidden rows were sampled


# ---------------------------------------------------------------- trainer contract

def test_losses_contract_and_loss_falls():
  model = lmconv.LMConvTiny(image_shape=(4, 4, 3), likelihood="dmol", dropout_rate=0.1, nr_resnet=0)
  images = jax.random.randint(jax.random.key(10), (4, 4, 4, 3), 0, 64).astype(jnp.uint8)
  variables = _init(model)
  out, log_prob = jax.jit(lambda v, x: (model.apply(v, x, train=False), model.apply(v, x, method="log_prob")))(
      variables, images)
  assert set(out) == {"loss", "nats", "bpd", "nats_ensemble", "bpd_ensemble"}
  assert all(v.shape == (4,) for v in out.values())
  np.testing.assert_allclose(out["nats"], -log_prob, rtol=1e-5)
  np.testing.assert_allclose(out["bpd"], out["nats"] / (48 * np.log(2)), rtol=1e-5)
  np.testing.assert_allclose(out["loss"], out["nats"] / 48, rtol=1e-5)

  tx = optax.adam(3e-3)

  def loss_fn(p, rng, model=model):
    rngs = {"sample": jax.random.fold_in(rng, 0), "dropout": jax.random.fold_in(rng, 1)}
    return model.apply({"params": p}, images, train=True, rngs=rngs)["loss"].mean()

  @jax.jit
  def step(params, opt, rng):
    loss, grads = jax.value_and_grad(loss_fn)(params, rng)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss, grads

  params, opt = variables["params"], tx.init(variables["params"])
  # Gradients at initialisation are finite and of moderate size (a pixel with an empty first-layer mask
  # must not make positional normalisation blow them up), and remat gives the same loss and gradients.
  _, _, loss0, grads0 = step(params, opt, jax.random.key(0))
  assert all(np.all(np.isfinite(g)) and np.abs(g).max() < 1e3 for g in jax.tree.leaves(grads0))
  remat_loss, remat_grads = jax.jit(jax.value_and_grad(functools.partial(loss_fn, model=model.clone(remat=True))))(
      params, jax.random.key(0))
  # Trained under the 8 S-curve symmetries (static masks: the row below is never seen, 6 of 9 taps computed), remat
  # recomputes the resnets' forward pass at the same 6 taps; when jax.checkpoint turned the masks into tracers
  # every tap was computed.
  s_curves = model.clone(train_orders=orders.variants("s_curve"))
  flops = {remat: jax.jit(jax.grad(functools.partial(loss_fn, model=s_curves.clone(remat=remat)))).lower(
      params, jax.random.key(0)).compile().cost_analysis()["flops"] for remat in (False, True)}
  assert flops[True] < 1.4 * flops[False], flops  # 1.2 (1.7 with traced masks)
  np.testing.assert_allclose(remat_loss, loss0, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(remat_grads), jax.tree.leaves(grads0)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  losses = []
  for i in range(20):
    params, opt, loss, _ = step(params, opt, jax.random.key(i))
    losses.append(float(loss))
  assert np.mean(losses[-5:]) < losses[0] - 0.3, losses
