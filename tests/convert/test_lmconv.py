"""ajayjain/lmconv checkpoints -> jaxgen: per-pixel log-likelihoods under every order of the checkpoint and the
8-order ensemble equal the official code's, for the RGB, grayscale and binarized heads."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import convert
from jaxgen.autoregressive import lmconv
from jaxgen.autoregressive import orders
from jaxgen.convert import lmconv as convert_lmconv
from jaxgen.training import steps
from tests.convert import conftest

HEADS = ("rgb", "grayscale", "binarized")


def official(head):
  return {"state_dict": conftest.load_npz(conftest.reference("lmconv", f"{head}/state_dict.npz")),
          "args": conftest.load_json(conftest.reference("lmconv", f"{head}/args.json"))}


@functools.partial(jax.jit, static_argnums=0)
def per_pixel_all_orders(model, variables, images):
  """log p(x_p | x_<p) [K, B, H, W] under each of model.eval_orders, in one network pass (masks per example)."""
  h, w, _ = model.image_shape
  k, b = len(model.eval_orders), images.shape[0]
  per_order = [model.masks_for(orders.build(n, h, w)) for n in model.eval_orders]  # numpy: built once, here
  masks = tuple(jnp.asarray(np.repeat(np.stack(m), b, axis=0)) for m in zip(*per_order))  # 3 x [K * B, H, W, k, k]
  tiled = jnp.tile(images, (k, 1, 1, 1))
  return model.apply(variables, tiled, masks, method="log_prob_per_pixel_with_masks").reshape(k, b, h, w)


def assert_matches_official(model, variables, ref):
  h, w, _ = model.image_shape
  # The converted order names are the official orders, in the official sequence.
  np.testing.assert_array_equal(np.stack([orders.build(n, h, w) for n in model.eval_orders]), ref["orders"])
  per_pixel = np.asarray(per_pixel_all_orders(model, variables, jnp.asarray(ref["images"])))
  # Measured max abs diff (nats per pixel): RGB 9.7e-4 (of up to 23), grayscale 1.3e-4, binarized 1.2e-4;
  # float32 round-off through the 4-channel PONO layers of this tiny network.
  np.testing.assert_allclose(per_pixel, ref["per_pixel"], rtol=1e-4, atol=2e-4)
  ensemble = jax.nn.logsumexp(per_pixel.sum(axis=(2, 3)), axis=0) - np.log(len(model.eval_orders))
  np.testing.assert_allclose(ensemble, ref["ensemble"], rtol=1e-6)  # measured: 0 (RGB) to 4.9e-4 of 5e3 nats


@pytest.fixture(scope="module")
def restored_rgb(tmp_path_factory):
  config, variables = convert_lmconv.convert(official("rgb"))
  return conftest.write_and_restore(config, variables, tmp_path_factory.mktemp("lmconv") / "run")


def test_rgb_converts_through_a_run_directory_to_the_official_likelihoods(restored_rgb):
  s, state = restored_rgb
  assert s.config.dataset == "cifar10" and sorted(s.config.model.eval_orders) == sorted(orders.S_CURVES)
  assert s.config.model.eval_orders[0] == "s_curve"  # the single-order figure's order, as main.py's first
  ref = conftest.load_npz(conftest.reference("lmconv", "rgb/official.npz"))
  assert_matches_official(s.model, steps.eval_variables(state), ref)


@pytest.mark.parametrize("head", HEADS[1:])
def test_grayscale_and_binarized_heads_match_the_official_likelihoods(head):
  config, variables = convert_lmconv.convert(official(head))
  model = lmconv.Model(**config.model)
  assert model.likelihood == ("bernoulli" if head == "binarized" else "dmol")
  assert config.binarize == ("dynamic" if head == "binarized" else "")
  ref = conftest.load_npz(conftest.reference("lmconv", f"{head}/official.npz"))
  assert_matches_official(model, variables, ref)


def test_gilbert2d_orders_are_jaxgens_transposed_hilbert_and_mask_subsets_pick_orders():
  args = official("grayscale")["args"]
  train, test = convert_lmconv.order_names(args | {"train_masks": [0, 4], "test_masks": [1, 3]}, 28, 28)
  assert train == ("hilbert_rot90_flip", "hilbert") and test[0] == "hilbert_rot270"
  single, _ = convert_lmconv.order_names(args | {"randomize_order": False, "base_order_reflect_rows": True}, 28, 28)
  assert single == ("hilbert_rot270",)


@pytest.mark.parametrize("change, message", [
    ({"ours": False}, "PixelCNN\\+\\+ baseline"),
    ({"learn_weight_for_masks": True}, "learn_weight_for_masks"),
    ({"normalization": "order_rescale"}, "normalization='order_rescale'"),
    ({"order": ["s_curve_center_quarter_last"]}, "s_curve_center_quarter_last"),
    ({"dataset": "mnist"}, "1 channel\\(s\\) but the state dict's first layer takes 3"),
])
def test_settings_jaxgen_cannot_express_are_named(change, message):
  bad = official("rgb")
  bad["args"] |= change
  with pytest.raises(convert.ConversionError, match=message):
    convert_lmconv.convert(bad)


def test_read_returns_the_state_dict_and_args_the_fixture_saved():
  pytest.importorskip("torch")
  for head, name in zip(HEADS, ("cifar_s8.pth", "grayscale_mnist_ep299_hilbert8.pth", "binary_mnist_ep159_s8.pth")):
    got = convert_lmconv.read(conftest.reference("lmconv", f"{head}/{name}"))
    want = official(head)
    assert got["args"] == want["args"] and sorted(got["state_dict"]) == sorted(want["state_dict"])
    for k, v in want["state_dict"].items():
      np.testing.assert_array_equal(got["state_dict"][k], v)
  with pytest.raises(convert.ConversionError, match="looks like a glow checkpoint"):
    convert_lmconv.read(conftest.reference("glow", "glow_lu_affine/glow_affine_coupling.pt"))
