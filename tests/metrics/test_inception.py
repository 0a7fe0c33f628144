"""Inception-v3 for FID (jaxgen.metrics.inception): pool3 shapes and the conversion of pytorch-fid's weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.metrics import inception


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
