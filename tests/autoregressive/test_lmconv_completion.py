"""LMConv completion with one observed region for the batch: the orders it picks, the exact conditional likelihood
of the hidden region (the paper's top-half completion figure), and completions that keep the observed pixels."""
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.autoregressive import lmconv
from jaxgen.autoregressive import orders
from jaxgen.metrics import completion

# 4x4 binary images, the 8 S-curves (the paper's CIFAR-10 setup, shrunk): small enough to enumerate every filling.
MODEL = lmconv.LMConvTiny(nr_resnet=0, nr_filters=2, train_orders=orders.variants("s_curve"),
                          eval_orders=orders.variants("s_curve"))
HIDDEN_TOP = completion.missing_region("top", 4, 4)  # rows 0-1 hidden, rows 2-3 observed
IMAGES = ((np.array([123, 40000, 999])[:, None] >> np.arange(16)) & 1).astype(np.uint8).reshape(-1, 4, 4, 1)


def _perturbed_variables():
  variables = jax.jit(lambda: MODEL.init({"params": jax.random.key(0)}, jnp.zeros((1, 4, 4, 1)),
                                         MODEL.masks_for(orders.build("raster", 4, 4)), method="network"))()
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


VARIABLES = _perturbed_variables()


def test_completion_orders_are_the_paper_ones():
  # Top half hidden: the two S-curves that start in the bottom row (the official `--test_masks` pair).
  assert MODEL.completion_orders(~HIDDEN_TOP) == ("s_curve_rot180", "s_curve_rot180_flip")
  assert MODEL.completion_orders(~completion.missing_region("bottom", 4, 4)) == ("s_curve", "s_curve_flip")
  # No S-curve visits the centre ring last: every order is used, rearranged to observed-first.
  assert MODEL.completion_orders(~completion.missing_region("center", 4, 4)) == orders.variants("s_curve")


@jax.jit
def _log_probs(images, masks):
  return MODEL.apply(VARIABLES, images, masks, method="log_prob_per_pixel_with_masks").sum((1, 2))


def test_conditional_log_prob_is_the_exact_ensemble_of_conditionals():
  cond = jax.jit(lambda v, x: MODEL.apply(v, x, ~HIDDEN_TOP, method="conditional_log_prob"))(VARIABLES, IMAGES)
  fills = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(np.uint8)  # every filling of the 8 hidden pixels
  for b in range(len(IMAGES)):
    candidates = np.repeat(IMAGES[b:b + 1], 256, axis=0)
    candidates[:, HIDDEN_TOP, 0] = fills
    per_order = []
    for name in ("s_curve_rot180", "s_curve_rot180_flip"):
      lp = _log_probs(np.concatenate([IMAGES[b:b + 1], candidates]), MODEL.masks_for(orders.build(name, 4, 4)))
      per_order.append(lp[0] - jax.nn.logsumexp(lp[1:]))  # log p(x_top | x_bottom) by enumeration
    np.testing.assert_allclose(cond[b], jax.nn.logsumexp(jnp.stack(per_order)) - np.log(2), rtol=1e-4, atol=1e-4)


def test_completion_with_one_region_keeps_observed_pixels_and_matches_per_example_path():
  observed = ~HIDDEN_TOP
  one_region = jax.jit(lambda v, r, x: MODEL.apply(v, r, x, observed, 1.0, "s_curve_rot90", method="complete"))
  per_example = jax.jit(lambda v, r, x, o: MODEL.apply(v, r, x, o, 1.0, "s_curve_rot90", method="complete"))
  completed, cond = one_region(VARIABLES, jax.random.key(2), IMAGES)
  completed_b, cond_b = per_example(VARIABLES, jax.random.key(2), IMAGES, jnp.broadcast_to(observed, (3, 4, 4)))
  np.testing.assert_array_equal(np.asarray(completed)[:, observed], IMAGES[:, observed])
  # Static masks (numpy order) and per-example masks built in the graph: the same order, the same draws.
  np.testing.assert_array_equal(completed, completed_b)
  np.testing.assert_allclose(cond, cond_b, rtol=1e-5)
  # Different keys fill the hidden rows differently (the hidden pixels are sampled, not copied).
  others = [np.asarray(one_region(VARIABLES, jax.random.key(k), IMAGES)[0]) for k in range(3, 6)]
  assert any(np.any(o[:, HIDDEN_TOP] != np.asarray(completed)[:, HIDDEN_TOP]) for o in others)
