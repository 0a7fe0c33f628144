"""Inception-v3 (random weights: shapes, weight conversion) and the offline classifier."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.metrics import classifier, inception


def test_inception_pool3_shapes_and_weight_conversion(tmp_path):
  model = inception.InceptionV3()
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 299, 299, 3)))
  assert jax.eval_shape(model.apply, shapes, jnp.zeros((2, 299, 299, 3))).shape == (2, 2048)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
  assert abs(n_params / 1e6 - 21.8) < 0.1  # Inception-v3 without the classifier: 21.8M
  # A torch-layout state dict with pytorch-fid's names (built from our tree) converts back to the same tree.
  rng = np.random.default_rng(0)
  state_dict = {"fc.weight": np.zeros((1008, 2048)), "Conv2d_1a_3x3.bn.num_batches_tracked": np.zeros(())}
  for path, leaf in jax.tree_util.tree_leaves_with_path(shapes):
    keys = [str(k.key) for k in path]
    prefix = ".".join(keys[1:-1])
    if keys[-1] == "kernel":
      kh, kw, i, o = leaf.shape
      state_dict[prefix + ".weight"] = rng.normal(size=(o, i, kh, kw)).astype(np.float32)
    else:
      torch_leaf = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}[keys[-1]]
      state_dict[prefix + "." + torch_leaf] = rng.uniform(0.5, 1.5, size=leaf.shape).astype(np.float32)
  path = tmp_path / "inception.npz"
  np.savez(path, **inception.convert_torch_state_dict(state_dict))
  variables = inception.load_variables(path)
  w = state_dict["Mixed_6b.branch7x7_2.conv.weight"]  # a (1, 7) kernel: [O, I, 1, 7] -> [1, 7, I, O]
  np.testing.assert_array_equal(variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"],
                                np.transpose(w, (2, 3, 1, 0)))
  np.testing.assert_array_equal(variables["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]["var"],
                                state_dict["Mixed_7c.branch_pool.bn.running_var"])
  bad = tmp_path / "bad.npz"
  np.savez(bad, **{"params/Conv2d_1a_3x3/conv/kernel": np.zeros((3, 3, 3, 32))})
  with pytest.raises(ValueError, match="missing"):
    inception.load_variables(bad)


def test_offline_classifier_trains_and_embeds():
  # Two classes a small CNN separates only by spatial structure: horizontal vs vertical bars.
  rng = np.random.default_rng(0)
  n = 256
  labels = rng.integers(0, 2, size=n)
  images = rng.integers(0, 60, size=(n, 10, 10, 1))
  for i in range(n):
    pos = rng.integers(2, 8)
    if labels[i]:
      images[i, :, pos] = 255
    else:
      images[i, pos, :] = 255
  images = images.astype(np.uint8)
  model = classifier.Classifier(num_classes=2, widths=(8, 16), embed_dim=16)
  params, loss = classifier.train(jax.random.key(0), images, labels, model=model, steps=60, batch_size=16, lr=1e-2)
  assert classifier.accuracy(params, images, labels, model=model) > 0.95
  feats = classifier.embed(params, images[:10], model=model, batch_size=4)
  assert feats.shape == (10, 16) and np.all(np.isfinite(feats))
