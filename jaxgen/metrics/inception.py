"""Inception-v3 feature extractor for FID/KID (Szegedy et al. 2016; the FID variant of Heusel et al. 2017).

The 2048-d pool3 features of the TF "2015-12-05" Inception graph that FID is defined with, in Flax, with the block
structure and parameter names of pytorch-fid's `FIDInceptionA/C/E_1/E_2` (average pools that exclude padding,
a max pool in the last block's pool branch). jaxgen ships no weights: the user supplies them as an .npz file.

Converting the standard public weights (do this once, on any machine with torch):

    # pt_inception-2015-12-05-6726825d.pth is pytorch-fid's port of the TF FID graph
    # (github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth)
    import numpy as np, torch
    from jaxgen.metrics import inception
    sd = torch.load("pt_inception-2015-12-05-6726825d.pth", map_location="cpu")
    np.savez("inception_fid.npz", **inception.convert_torch_state_dict({k: v.numpy() for k, v in sd.items()}))

then `variables = inception.load_variables("inception_fid.npz")` and
`feats = inception.pool3_features(variables, images_uint8)` (`inception.logits` for the 1008-class fc).
torchvision's ImageNet `inception_v3` state dict
has the same names (the blocks differ slightly from the FID graph, so its FIDs are not comparable to papers').
Input handling follows pytorch-fid by default: bilinear resize to 299x299 (half-pixel centres), then x / 127.5 - 1;
`resize="stylegan2_ada"` takes the TF graph's own resize and scaling instead, as StyleGAN2-ADA's detector does
(same weights; config.sample_metrics.inception_detector='stylegan2-ada'). `jaxgen.convert.inception` converts
the weights.
"""
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

BN_EPS = 1e-3  # TF Inception's batch-norm epsilon


class BasicConv2d(nn.Module):
  """conv (no bias) -> batch norm (inference statistics) -> ReLU."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: object = "VALID"

  @nn.compact
  def __call__(self, x):
    pad = self.padding
    if isinstance(pad, (tuple, list)):
      pad = [(pad[0], pad[0]), (pad[1], pad[1])]
    x = nn.Conv(self.features, tuple(self.kernel_size), tuple(self.strides), padding=pad, use_bias=False,
                name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPS, name="bn")(x)
    return jax.nn.relu(x)


def _avg_pool(x):
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, (1, 1), name="branch1x1")(x)
    b5 = BasicConv2d(48, (1, 1), name="branch5x5_1")(x)
    b5 = BasicConv2d(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
    b3 = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
    b3 = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
    bp = BasicConv2d(self.pool_features, (1, 1), name="branch_pool")(_avg_pool(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, (3, 3), strides=(2, 2), name="branch3x3")(x)
    bd = BasicConv2d(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv2d(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = BasicConv2d(96, (3, 3), strides=(2, 2), name="branch3x3dbl_3")(bd)
    bp = nn.max_pool(x, (3, 3), (2, 2))
    return jnp.concatenate([b3, bd, bp], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = BasicConv2d(192, (1, 1), name="branch1x1")(x)
    b7 = BasicConv2d(c7, (1, 1), name="branch7x7_1")(x)
    b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = BasicConv2d(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = BasicConv2d(192, (1, 1), name="branch_pool")(_avg_pool(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, (1, 1), name="branch3x3_1")(x)
    b3 = BasicConv2d(320, (3, 3), strides=(2, 2), name="branch3x3_2")(b3)
    b7 = BasicConv2d(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = BasicConv2d(192, (3, 3), strides=(2, 2), name="branch7x7x3_4")(b7)
    bp = nn.max_pool(x, (3, 3), (2, 2))
    return jnp.concatenate([b3, b7, bp], axis=-1)


class InceptionE(nn.Module):
  """`pool`: 'avg' (FIDInceptionE_1, Mixed_7b) or 'max' (FIDInceptionE_2, Mixed_7c: the TF graph's max pool)."""
  pool: str = "avg"

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(320, (1, 1), name="branch1x1")(x)
    b3 = BasicConv2d(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
    bd = BasicConv2d(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv2d(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([BasicConv2d(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          BasicConv2d(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
    if self.pool == "avg":
      bp = _avg_pool(x)
    else:
      bp = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
    bp = BasicConv2d(192, (1, 1), name="branch_pool")(bp)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """x [B, H, W, 3] float in [-1, 1] (H, W >= 75; 299 for FID) -> pool3 features [B, 2048]."""

  @nn.compact
  def __call__(self, x):
    x = BasicConv2d(32, (3, 3), strides=(2, 2), name="Conv2d_1a_3x3")(x)
    x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = nn.max_pool(x, (3, 3), (2, 2))
    x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = nn.max_pool(x, (3, 3), (2, 2))
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    x = InceptionC(128, name="Mixed_6b")(x)
    x = InceptionC(160, name="Mixed_6c")(x)
    x = InceptionC(160, name="Mixed_6d")(x)
    x = InceptionC(192, name="Mixed_6e")(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE("avg", name="Mixed_7b")(x)
    x = InceptionE("max", name="Mixed_7c")(x)
    return jnp.mean(x, axis=(1, 2))  # [B, 2048]


RESIZES = ("pytorch_fid", "stylegan2_ada")


def _tf_resize_matrix(n_in, n_out):
  """[n_out, n_in] bilinear weights sampling input position i * n_in / n_out, clamped to the last pixel: TF's legacy
  (align_corners=False, no half-pixel) resize, which StyleGAN2-ADA's detector reproduces with affine_grid
  (theta offset 1/W - 1/299) and grid_sample(bilinear, padding_mode="border")."""
  pos = np.minimum(np.arange(n_out) * n_in / n_out, n_in - 1)
  lo = np.floor(pos).astype(int)
  hi = np.minimum(lo + 1, n_in - 1)
  m = np.zeros([n_out, n_in], np.float32)
  m[np.arange(n_out), lo] += (1.0 - (pos - lo)).astype(np.float32)
  m[np.arange(n_out), hi] += (pos - lo).astype(np.float32)
  return m


def preprocess(images, size=299, resize="pytorch_fid"):
  """uint8 [B, H, W, C] (C = 1 or 3) -> float [B, size, size, 3] (gray -> RGB).

  resize "pytorch_fid": bilinear with half-pixel centres, then x / 127.5 - 1 (pytorch-fid, NVAE's FIDs);
  "stylegan2_ada": TF's legacy bilinear resize (`_tf_resize_matrix`), then (x - 128) / 128 (StyleGAN2-ADA's
  TorchScript detector, metrics/frechet_inception_distance.py).
  """
  if resize not in RESIZES:
    raise ValueError(f"resize={resize!r}: use one of {RESIZES}.")
  x = images.astype(jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  if resize == "stylegan2_ada":
    mh, mw = _tf_resize_matrix(x.shape[1], size), _tf_resize_matrix(x.shape[2], size)
    return (jnp.einsum("ph,qw,bhwc->bpqc", mh, mw, x) - 128.0) / 128.0
  if x.shape[1:3] != (size, size):
    x = jax.image.resize(x, (x.shape[0], size, size, 3), method="bilinear", antialias=False)
  return x / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------------------------
# Weights.

_BN_NAMES = {"weight": ("params", "scale"), "bias": ("params", "bias"), "running_mean": ("batch_stats", "mean"),
             "running_var": ("batch_stats", "var")}


def convert_torch_state_dict(state_dict):
  """pytorch-fid / torchvision Inception3 state dict (numpy arrays) -> flat {"collection/path/leaf": array}.

  "Mixed_5b.branch1x1.conv.weight" [O, I, kh, kw] -> "params/Mixed_5b/branch1x1/conv/kernel" [kh, kw, I, O];
  "...bn.weight/bias/running_mean/running_var" -> params scale / bias, batch_stats mean / var; the 1008-class
  classifier "fc.weight" [1008, 2048] -> "params/fc/kernel" [2048, 1008] and "fc.bias" (for `logits`).
  "AuxLogits.*" and "num_batches_tracked" are dropped.
  """
  out = {}
  for name, value in state_dict.items():
    value = np.asarray(value)
    parts = name.split(".")
    if parts[0] == "AuxLogits" or parts[-1] == "num_batches_tracked":
      continue
    if name == "fc.weight":
      out["params/fc/kernel"] = value.T.astype(np.float32)
      continue
    if name == "fc.bias":
      out["params/fc/bias"] = value.astype(np.float32)
      continue
    *path, layer, leaf = parts
    if layer == "conv" and leaf == "weight":
      out["/".join(["params", *path, "conv", "kernel"])] = np.transpose(value, (2, 3, 1, 0)).astype(np.float32)
    elif layer == "bn" and leaf in _BN_NAMES:
      collection, new_leaf = _BN_NAMES[leaf]
      out["/".join([collection, *path, "bn", new_leaf])] = value.astype(np.float32)
    else:
      raise ValueError(f"convert_torch_state_dict: unexpected entry {name!r}; is this an Inception-v3 state dict?")
  return out


@functools.lru_cache(maxsize=1)
def _expected_shapes():
  expected = jax.eval_shape(InceptionV3().init, jax.random.key(0), jnp.zeros((1, 299, 299, 3)))
  return {"/".join(str(k.key) for k in kp): v.shape for kp, v in jax.tree_util.tree_leaves_with_path(expected)}


def load_variables(path):
  """Flax variables {"params", "batch_stats"} of `InceptionV3` from an .npz written as in the module docstring.

  The tree is checked against the architecture, so a wrong or truncated file fails here with the missing keys.
  """
  flat = dict(np.load(path))
  variables = {}
  for key, value in flat.items():
    node = variables
    *parents, leaf = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = jnp.asarray(value)
  want = _expected_shapes()
  have = {"/".join(str(k.key) for k in kp): v.shape for kp, v in jax.tree_util.tree_leaves_with_path(variables)}
  missing = sorted(set(want) - set(have))
  wrong = sorted(k for k in set(want) & set(have) if tuple(want[k]) != tuple(have[k]))
  if missing or wrong:
    raise ValueError(f"{path}: not Inception-v3 FID weights ({len(missing)} missing, e.g. {missing[:3]}; "
                     f"{len(wrong)} with wrong shapes, e.g. {wrong[:3]}). Convert them as the "
                     f"jaxgen.metrics.inception docstring shows.")
  return variables


def _backbone(variables):
  return {**variables, "params": {k: v for k, v in variables["params"].items() if k != "fc"}}


def pool3_features(variables, images, batch_size=200, resize="pytorch_fid"):
  """pool3 features [N, 2048] (numpy float64) of uint8 images [N, H, W, C], in batches (`preprocess`'s resize)."""
  model = InceptionV3()
  fn = jax.jit(lambda v, x: model.apply(v, preprocess(x, resize=resize)))
  variables = _backbone(variables)
  feats = [np.asarray(fn(variables, images[i: i + batch_size]), np.float64)
           for i in range(0, len(images), batch_size)]
  return np.concatenate(feats, axis=0)


def logits(variables, images, batch_size=200, resize="pytorch_fid"):
  """1008-class logits [N, 1008] (numpy float64): pool3 -> fc, as torchvision's Inception3 forward (eval)."""
  fc = variables["params"].get("fc")
  if fc is None or "kernel" not in fc or "bias" not in fc:
    raise ValueError("these Inception variables have no fc layer (an npz from before logits were kept); "
                     "reconvert the .pth with jaxgen.convert.inception.write_npz.")
  pool3 = pool3_features(variables, images, batch_size=batch_size, resize=resize)
  return pool3 @ np.asarray(fc["kernel"], np.float64) + np.asarray(fc["bias"], np.float64)
