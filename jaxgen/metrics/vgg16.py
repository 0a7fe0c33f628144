"""VGG16's convolutional trunk (Simonyan & Zisserman 2015, configuration D) and LPIPS v0.1 features (Zhang et al.
2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", Sec. 3.1, Eq. 1): the perceptual
distance of the StyleGAN2 projector (Karras et al. 2020, Sec. 5; stylegan2-ada-pytorch projector.py).

With f_l [H_l, W_l, C_l] VGG16's relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3 of the input scaled as LPIPS does,
(x - shift) / scale on [-1, 1] images, each unit-normalised over channels at every pixel (f / (||f|| + 1e-10), the
lpips package's `normalize_tensor`), and w_l [C_l] >= 0 the 1x1 "lin" weights,

  LPIPS(x0, x1) = sum_l 1 / (H_l W_l) sum_{h, w} sum_c w_{l, c} (f0_{l, hwc} - f1_{l, hwc})^2
               = ||phi(x0) - phi(x1)||^2,   phi(x) = concat_l sqrt(w_l) * f_l / sqrt(H_l W_l) (flattened),

so `lpips_features` returns phi, the flat vector the official projector gets from `vgg16(..., return_lpips=True)`
and compares with a squared euclidean distance. Inputs of any size work down to 16x16 (the fifth block sees
H / 16 after four floor-mode 2x2 max-pools, as torch's); `projector_input` is the projector's front end.

jaxgen ships no weights: the user converts them once (on any machine with torch) with `jaxgen.convert.vgg16`, whose
docstring says where to get torchvision's `vgg16-397923af.pth` and lpips's `weights/v0.1/vgg.pth`:

    python -c "from jaxgen.convert import vgg16; vgg16.write_npz('vgg16-397923af.pth', 'vgg16_lpips.npz', \
        lpips='vgg.pth')"

then `variables = vgg16.load_variables("vgg16_lpips.npz")` and `phi = vgg16.lpips_features(variables, x)`.
A file without lin weights (a plain torchvision VGG16 converted without `lpips=`) gets w_l = 1 for every channel:
the lpips package's `lpips=False` baseline (every layer's squared normalised difference summed over channels,
averaged over pixels, layers summed), not the calibrated LPIPS.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import ops

# torchvision's `vgg16().features`: (index of the conv in the Sequential, width); a 2x2 max-pool before each block
# but the first, a ReLU after each conv. The LPIPS taps are the ReLUs after the last conv of each block.
BLOCKS = (((0, 64), (2, 64)),
          ((5, 128), (7, 128)),
          ((10, 256), (12, 256), (14, 256)),
          ((17, 512), (19, 512), (21, 512)),
          ((24, 512), (26, 512), (28, 512)))
TAPS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
MIN_SIZE = 16  # four 2x2 pools before the fifth block: it needs H, W >= 16
# lpips.pretrained_networks / lpips.lpips (v0.1): ScalingLayer's shift and scale, normalize_tensor's eps.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10
PROJECTOR_SIZE = 256  # projector.py: images larger than this are area-downsampled to 256x256


class Conv3x3(nn.Module):
  """torchvision's Conv2d(k=3, padding=1, bias=True), HWIO kernel, through `jaxgen.ops.conv2d`."""
  features: int
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x):  # [B, H, W, I]
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return ops.conv2d(x, kernel, padding=1, impl=self.conv_impl) + bias  # [B, H, W, O]


class VGG16(nn.Module):
  """x [B, H, W, 3] (already scaled) -> the five tapped ReLU outputs [B, H / 2^l, W / 2^l, C_l] (floor sizes).

  Layer names are torchvision's `features` indices ("features_0" ... "features_28"), so the state dict maps by name.
  """
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x):
    taps = []
    for block, convs in enumerate(BLOCKS):
      if block:
        x = nn.max_pool(x, (2, 2), (2, 2))  # VALID: floor mode, as torch's MaxPool2d(2, 2)
      for index, width in convs:
        x = jax.nn.relu(Conv3x3(width, self.conv_impl, name=f"features_{index}")(x))
      taps.append(x)
    return taps


def unit_normalize(f):
  """f / (||f||_2 over channels + EPS), lpips's `normalize_tensor`, with a finite gradient where f = 0 at a pixel
  (sqrt's derivative at 0 is infinite; such pixels are 0 either way, so the value is unchanged)."""
  sq = jnp.sum(jnp.square(f), axis=-1, keepdims=True)
  safe = jnp.where(sq > 0, sq, 1.0)
  return f / (jnp.where(sq > 0, jnp.sqrt(safe), 0.0) + EPS)


class LPIPS(nn.Module):
  """images [B, H, W, 3] in [-1, 1] -> phi [B, D] with ||phi(x0) - phi(x1)||^2 = LPIPS(x0, x1) (module docstring).

  Params: "vgg16" (the trunk) and "lin0" ... "lin4" [C_l], the non-negative weights of lpips's 1x1 `lin` convs.
  """
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, images):
    x = (images - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)
    out = []
    for layer, f in enumerate(VGG16(self.conv_impl, name="vgg16")(x)):
      w = self.param(f"lin{layer}", nn.initializers.ones, (f.shape[-1],))
      f = unit_normalize(f) * jnp.sqrt(w)  # [B, H_l, W_l, C_l]
      out.append(f.reshape(f.shape[0], -1) / np.sqrt(f.shape[1] * f.shape[2]))
    return jnp.concatenate(out, axis=1)  # [B, D]


def layer_distances(variables, images0, images1, conv_impl="auto"):
  """LPIPS of each layer [B, 5] between images0 and images1 [B, H, W, 3] in [-1, 1] (lpips's `retPerLayer`)."""
  phi = lpips_features(variables, jnp.concatenate([images0, images1]), conv_impl)
  sq = jnp.square(phi[:len(images0)] - phi[len(images0):])
  _, h, w, _ = images0.shape
  sizes = [(h >> i) * (w >> i) * convs[-1][1] for i, convs in enumerate(BLOCKS)]  # floor pools: H_l = H // 2^l
  bounds = np.cumsum([0] + sizes)
  return jnp.stack([jnp.sum(sq[:, a:b], axis=1) for a, b in zip(bounds[:-1], bounds[1:])], axis=1)


def lpips_features(variables, images, conv_impl="auto"):
  """phi [B, D] of float images [B, H, W, 3] in [-1, 1] (H, W >= 16); differentiable in `images`."""
  return LPIPS(conv_impl).apply(variables, images)


# ----------------------------------------------------------------------------------------------------------------
# The projector's front end.

def _area_matrix(n_in, n_out):
  """[n_out, n_in] averaging weights of torch's F.interpolate(mode="area") (adaptive average pooling): output i
  averages inputs floor(i n_in / n_out) .. ceil((i + 1) n_in / n_out) - 1."""
  m = np.zeros([n_out, n_in], np.float32)
  for i in range(n_out):
    lo, hi = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
    m[i, lo:hi] = 1.0 / (hi - lo)
  return m


def area_resize(images, size):
  """images [B, H, W, C] -> [B, size[0], size[1], C] as torch's F.interpolate(mode="area")."""
  mh, mw = _area_matrix(images.shape[1], size[0]), _area_matrix(images.shape[2], size[1])
  return jnp.einsum("ph,qw,bhwc->bpqc", mh, mw, images, precision=jax.lax.Precision.HIGHEST)


def projector_input(images):
  """float [B, H, W, C] in [-1, 1] (C = 1 or 3) -> what the VGG16 LPIPS network sees in the official projector.

  Grayscale is repeated to 3 channels. Images taller than 256 are area-downsampled to 256x256 (projector.py: the
  height is tested, the size is set). The official code then scales to [0, 255] for its TorchScript detector, which
  maps them back to LPIPS's [-1, 1]; both linear steps are left out here. Smaller images keep their size, as in the
  official code (which never upsamples), except below 16x16, where the fifth block would see no pixel: those are
  upsampled by the smallest integer factor that reaches 16 (pixel repetition, no new detail), e.g. 8x8 -> 16x16;
  28x28 digits stay 28x28 (relu5_3 is then 1x1).
  """
  if images.shape[-1] == 1:
    images = jnp.repeat(images, 3, axis=-1)
  if images.shape[1] > PROJECTOR_SIZE:
    images = area_resize(images, (PROJECTOR_SIZE, PROJECTOR_SIZE))
  factor = -(-MIN_SIZE // min(images.shape[1:3]))
  if factor > 1:
    images = jnp.repeat(jnp.repeat(images, factor, axis=1), factor, axis=2)
  return images


# ----------------------------------------------------------------------------------------------------------------
# Weights.

HOW_TO_CONVERT = ("convert torchvision's vgg16-397923af.pth (and lpips's weights/v0.1/vgg.pth) with "
                  "jaxgen.convert.vgg16.write_npz, as its docstring shows")


def convert_torch_state_dict(state_dict, lin_state_dict=None):
  """torchvision VGG16 state dict (numpy arrays) [+ lpips lin weights] -> flat {"params/...": array} for the npz.

  "features.{i}.weight" [O, I, 3, 3] -> "params/vgg16/features_{i}/kernel" [3, 3, I, O], "features.{i}.bias" ->
  ".../bias"; the classifier ("classifier.*") is dropped. An lpips LPIPS module's own state dict ("net.slice{k}.{i}.*",
  "lin{l}.model.{j}.weight", "scaling_layer.*") is read too. lin_state_dict: lpips's vgg.pth, "lin{l}.model.1.weight"
  [1, C_l, 1, 1] -> "params/lin{l}" [C_l]; without it (and none in state_dict) the npz has no lin entries and
  `load_variables` gives every channel weight 1.
  """
  out = {}
  for name, value in {**dict(state_dict), **dict(lin_state_dict or {})}.items():
    value = np.asarray(value)
    parts = name.split(".")
    if parts[0] == "classifier" or parts[0] == "scaling_layer" or parts[0] == "lins":  # lins: a copy of lin{l}
      continue
    if parts[0] == "net" and len(parts) == 4 and parts[1].startswith("slice"):  # an LPIPS module's trunk
      parts = ["features"] + parts[2:]
    if parts[0] == "features" and len(parts) == 3 and parts[2] in ("weight", "bias"):
      key = f"params/vgg16/features_{parts[1]}/" + ("kernel" if parts[2] == "weight" else "bias")
      out[key] = (np.transpose(value, (2, 3, 1, 0)) if value.ndim == 4 else value).astype(np.float32)
    elif parts[0].startswith("lin") and parts[0][3:].isdigit() and parts[-1] == "weight":
      out[f"params/{parts[0]}"] = value.reshape(-1).astype(np.float32)
    else:
      raise ValueError(f"convert_torch_state_dict: unexpected entry {name!r}; is this torchvision's vgg16 (not "
                       f"vgg16_bn) or lpips's vgg.pth?")
  return out


@functools.lru_cache(maxsize=1)
def expected_shapes():
  """{"params/...": shape} of every leaf of `LPIPS` (what the npz holds)."""
  expected = jax.eval_shape(LPIPS().init, jax.random.key(0), jnp.zeros((1, MIN_SIZE, MIN_SIZE, 3)))
  return {"/".join(str(k.key) for k in kp): v.shape for kp, v in jax.tree_util.tree_leaves_with_path(expected)}


def load_variables(path):
  """Flax variables {"params": ...} of `LPIPS` from an .npz written by `jaxgen.convert.vgg16.write_npz`.

  Checked against the architecture (a wrong or truncated file fails here, in one line naming the fix); lin weights
  missing from the file are 1 (equal weights, the module docstring); negative lin weights are refused.
  """
  try:
    with open(path, "rb") as f:
      flat = dict(np.load(f))
  except FileNotFoundError:
    raise FileNotFoundError(f"No VGG16 weights file {path}; {HOW_TO_CONVERT}.") from None
  except (OSError, ValueError) as e:  # not an npz (np.load raises ValueError / BadZipFile, an OSError subclass)
    raise ValueError(f"{path} is not an .npz of VGG16 weights ({type(e).__name__}); {HOW_TO_CONVERT}.") from None
  want = expected_shapes()
  for key in want:
    if key.startswith("params/lin") and key not in flat:
      flat[key] = np.ones(want[key], np.float32)
  missing = sorted(set(want) - set(flat))
  wrong = sorted(k for k in set(want) & set(flat) if tuple(want[k]) != tuple(flat[k].shape))
  extra = sorted(set(flat) - set(want))
  if missing or wrong or extra:
    raise ValueError(f"{path}: not VGG16 LPIPS weights ({len(missing)} missing, e.g. {missing[:2]}; {len(wrong)} "
                     f"with wrong shapes, e.g. {wrong[:2]}; {len(extra)} unexpected, e.g. {extra[:2]}); "
                     f"{HOW_TO_CONVERT}.")
  negative = [k for k in want if k.startswith("params/lin") and (flat[k] < 0).any()]
  if negative:
    raise ValueError(f"{path}: LPIPS lin weights must be >= 0 (lpips clamps them), {negative[0]} is not; "
                     f"{HOW_TO_CONVERT}.")
  variables = {}
  for key, value in flat.items():
    node = variables
    *parents, leaf = key.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = jnp.asarray(value, jnp.float32)
  return variables
