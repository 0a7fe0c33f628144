"""Bijective layers of Glow (Kingma & Dhariwal 2018) and RealNVP (Dinh et al. 2016).

Every layer maps `[B, H, W, C]` to `[B, H', W', C']` and exposes
  forward_and_log_det(x) -> (y, log_det)      log_det: [B], log|det dy/dx| in nats
  inverse_and_log_det(y) -> (x, log_det)      log_det: [B], log|det dx/dy| = -forward's
Initialise a layer with `forward_and_log_det` on a data batch: ActNorm sets its parameters from that batch
(data-dependent init). Parameters that are fixed at init but not trained (the LU permutation, sign(s), the shuffle
indices) live in the `"constants"` collection, which the trainer carries beside `"params"`.
Precision: the couplings' networks compute in their `dtype` (bfloat16 under config.compute_dtype="bfloat16") and
hand shift and log-scale back in float32; the flow's variables, every log-determinant, ActNorm (and its init
statistics), the 1x1 convolutions and the split priors stay float32, so a flow is as invertible, and its log_det
as exact, in either dtype.
Defaults follow openai/glow (`model.py`, `tfops.py`).
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import distributions
from jaxgen import ops

# openai/glow multiplies learned log-scales by 3: Adam then moves them 3x faster than the other parameters.
LOG_SCALE_FACTOR = 3.0


def _pixels(x):
  return x.shape[1] * x.shape[2]


def _broadcast_by_matmul(v, shape):
  """broadcast_to(v, shape) as the outer product ones[N] v[M]: autodiff transposes it into the matvec ones @ ct."""
  trailing = v.shape[next((i for i, d in enumerate(v.shape) if d != 1), v.ndim):]
  lead = int(np.prod(shape[:len(shape) - len(trailing)]))
  return jnp.einsum("n,m->nm", jnp.ones((lead,), v.dtype), v.reshape(-1)).reshape(shape)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def expand(v, shape):
  """jnp.broadcast_to(v, shape), differentiated so that its gradient is a matvec against ones.

  v's shape, after dropping leading 1s, must be a suffix of `shape` (a per-channel [C] or a per-position
  [1, H, W, C] term added to [B, H, W, C]). The reductions autodiff emits for such terms (reduce(dy * x) over
  batch and space) run some 40x slower on XLA:CPU than the equivalent ones @ (dy * x). The tangent rule is
  a matmul, so forward mode (jacfwd) works and reverse mode transposes it into that matvec.
  """
  return jnp.broadcast_to(v, shape)


@expand.defjvp
def _expand_jvp(shape, primals, tangents):
  (v,), (t,) = primals, tangents
  return jnp.broadcast_to(v, shape), _broadcast_by_matmul(t, shape)


class ActNorm(nn.Module):
  """Activation normalisation (Glow, Sec. 3.1).

  y = (x + bias) * exp(log_scale),  per channel;  log|det J| = H * W * sum(log_scale).
  Data-dependent init: bias = -mean(x), log_scale = log(scale / (std(x) + 1e-6)) over the init batch, so y has
  zero mean and `scale` standard deviation per channel there. Stored log-scales are multiplied by 3 as in openai/glow.
  """
  scale: float = 1.0

  @nn.compact
  def _bias_and_log_scale(self, x):
    # The initialisers read the batch this layer first sees, so `init` on a data batch is the DDI (works under jit).
    x32 = x.astype(jnp.float32)  # the statistics in float32 whatever the activations' dtype

    def init_bias(rng, shape):
      return -jnp.mean(x32, axis=(0, 1, 2))

    def init_log_scale(rng, shape):
      centred = x32 - jnp.mean(x32, axis=(0, 1, 2))
      std = jnp.sqrt(jnp.mean(jnp.square(centred), axis=(0, 1, 2)))
      return jnp.log(self.scale / (std + 1e-6)) / LOG_SCALE_FACTOR

    channels = x.shape[-1]
    bias = self.param("bias", init_bias, (channels,))
    log_scale = self.param("log_scale", init_log_scale, (channels,)) * LOG_SCALE_FACTOR
    return bias, log_scale

  def __call__(self, x):  # plain normalisation, used inside coupling networks; keeps x's dtype
    bias, log_scale = self._bias_and_log_scale(x)
    return (x + expand(bias.astype(x.dtype), x.shape)) * expand(jnp.exp(log_scale).astype(x.dtype), x.shape)

  def forward_and_log_det(self, x):
    y = self(x)
    _, log_scale = self._bias_and_log_scale(x)
    return y, jnp.full(x.shape[:1], _pixels(x) * jnp.sum(log_scale))

  def inverse_and_log_det(self, y):
    bias, log_scale = self._bias_and_log_scale(y)
    x = y * jnp.exp(-log_scale) - bias
    return x, jnp.full(y.shape[:1], -_pixels(y) * jnp.sum(log_scale))


def _random_rotation(rng, channels):
  # A random orthogonal matrix, as openai/glow initialises the 1x1 convolution.
  q, _ = jnp.linalg.qr(jax.random.normal(rng, (channels, channels)))
  return q


class InvertibleConv1x1(nn.Module):
  """Invertible 1x1 convolution (Glow, Sec. 3.2), a learned channel mixing.

  y[h, w] = W x[h, w];  log|det J| = H * W * log|det W|.
  lu=False: W is a free matrix (openai/glow's default) and log|det W| comes from slogdet.
  lu=True:  W = P L (U + diag(sign(s) * exp(log_s))) with P and sign(s) fixed at init (in "constants"), L unit lower
            triangular, U strictly upper triangular; log|det W| = sum(log_s), O(C) instead of O(C^3).
  Both start at a random rotation.
  """
  lu: bool = False

  @nn.compact
  def _kernel_and_log_det(self, channels):  # -> W [C, C], log|det W| scalar
    if not self.lu:
      kernel = self.param("kernel", lambda rng: _random_rotation(rng, channels))
      return kernel, jnp.linalg.slogdet(kernel)[1]

    # One decomposition feeds five initialisers, so they are `variable`s (called only when missing), not `param`s
    # (whose initialisers flax re-traces on every call to check shapes).
    p = l_init = u = None
    if self.is_initializing():
      p, l_init, u = jax.scipy.linalg.lu(_random_rotation(self.make_rng("params"), channels))
    perm = self.variable("constants", "perm", lambda: p).value
    sign_s = self.variable("constants", "sign_s", lambda: jnp.sign(jnp.diag(u))).value
    lower = self.variable("params", "lower", lambda: jnp.tril(l_init, -1)).value
    upper = self.variable("params", "upper", lambda: jnp.triu(u, 1)).value
    log_s = self.variable("params", "log_s", lambda: jnp.log(jnp.abs(jnp.diag(u)))).value
    eye = jnp.eye(channels)
    l_mat = jnp.tril(lower, -1) + eye
    u_mat = jnp.triu(upper, 1) + jnp.diag(sign_s * jnp.exp(log_s))
    return perm @ l_mat @ u_mat, jnp.sum(log_s)

  def forward_and_log_det(self, x):
    kernel, log_det = self._kernel_and_log_det(x.shape[-1])
    y = jnp.einsum("bhwc,dc->bhwd", x, kernel)
    return y, jnp.full(x.shape[:1], _pixels(x) * log_det)

  def inverse_and_log_det(self, y):
    kernel, log_det = self._kernel_and_log_det(y.shape[-1])
    x = jnp.einsum("bhwc,dc->bhwd", y, jnp.linalg.inv(kernel))
    return x, jnp.full(y.shape[:1], -_pixels(y) * log_det)


class Reverse(nn.Module):
  """Reverses the channel order (RealNVP's alternating masks; Glow's ablation, `--flow_permutation 0`)."""

  def forward_and_log_det(self, x):
    return x[..., ::-1], jnp.zeros(x.shape[:1])

  def inverse_and_log_det(self, y):
    return y[..., ::-1], jnp.zeros(y.shape[:1])


class Shuffle(nn.Module):
  """A fixed random channel permutation drawn at init (Glow's ablation, `--flow_permutation 1`)."""

  @nn.compact
  def _perm(self, channels):
    return self.variable(
        "constants", "perm", lambda: jax.random.permutation(self.make_rng("params"), channels)).value

  def forward_and_log_det(self, x):
    return x[..., self._perm(x.shape[-1])], jnp.zeros(x.shape[:1])

  def inverse_and_log_det(self, y):
    return y[..., jnp.argsort(self._perm(y.shape[-1]))], jnp.zeros(y.shape[:1])


def _border(height, width, kernel_size):
  """[1, H+k-1, W+k-1, 1]: 1 on the 'SAME' padding border, 0 inside (openai/glow `add_edge_padding`)."""
  a = (kernel_size - 1) // 2
  border = np.ones((1, height + 2 * a, width + 2 * a, 1), np.float32)
  border[:, a:a + height, a:a + width] = 0.0
  return border


def edge_conv(x, kernel, conv_impl="auto"):
  """openai/glow's edge-biased 'SAME' convolution: zero padding plus one input channel that is 1 on the border.

  kernel: [k, k, C_in + 1, C_out], its last input channel for the border. The border channel does not depend on
  the data, so its contribution is a fixed [H, W, C_out] map, added instead of concatenating a channel to x.
  """
  y = ops.conv2d(x, kernel[:, :, :-1], kernel.shape[0] // 2, impl=conv_impl)
  return y + expand(_border_map(x.shape[1], x.shape[2], kernel[:, :, -1:]), y.shape)


def _border_map(height, width, kernel):
  """Contribution of the border channel: 'VALID' conv of the [H+k-1, W+k-1] border indicator.  -> [1, H, W, C_out].

  Written as one small matmul of fixed tap indicators [H*W, k*k] with the kernel's border taps, so XLA computes
  the map once instead of fusing its recomputation into every element of the batch.
  """
  k = kernel.shape[0]
  border = _border(height, width, k)[0, :, :, 0]  # numpy [H+k-1, W+k-1]
  taps = np.stack([border[i:i + height, j:j + width].reshape(-1) for i in range(k) for j in range(k)], -1)
  return jnp.dot(jnp.asarray(taps, kernel.dtype), kernel.reshape(k * k, -1)).reshape(1, height, width, -1)


class Conv(nn.Module):
  """Glow's hidden convolution (`tfops.conv2d`): edge-biased 'SAME', N(0, 0.05) weights, no bias, then ActNorm.

  Computes in `dtype` (float32 parameters cast to it); returns `dtype`.
  """
  features: int
  kernel_size: int = 3
  conv_impl: str = "auto"  # jaxgen.ops
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.normal(0.05), (k, k, x.shape[-1] + (k > 1), self.features))
    x = x.astype(self.dtype)
    conv = lambda w: (ops.conv2d(x, w.astype(self.dtype), impl=self.conv_impl) if k == 1
                      else edge_conv(x, w.astype(self.dtype), self.conv_impl))
    actnorm = ActNorm(name="actnorm")
    if self.is_initializing():  # data-dependent init needs the convolution's output
      return actnorm(conv(kernel))
    # ActNorm folded into the convolution: (conv(x, W) + b) * s = conv(x, W * s) + b * s, which saves a pass over
    # the activations forward and backward. The zeros only give the parameter shapes (initialisers don't run here).
    bias, log_scale = actnorm._bias_and_log_scale(jnp.zeros((1, 1, 1, self.features), x.dtype))
    scale = jnp.exp(log_scale)
    y = conv(kernel * scale)  # folded in float32, then cast
    return y + expand((bias * scale).astype(y.dtype), y.shape)


class ZeroConv(nn.Module):
  """Zero-initialised edge-biased convolution with a learned per-channel output scale (`tfops.conv2d_zeros`).

  y = (conv(x) + b) * exp(3 * logs);  everything starts at zero, so the layer's output starts at zero.
  The convolution computes in `dtype`; bias and scale apply in float32, and the output is float32.
  """
  features: int
  kernel_size: int = 3
  conv_impl: str = "auto"  # jaxgen.ops
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.zeros, (k, k, x.shape[-1] + (k > 1), self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    logs = self.param("logs", nn.initializers.zeros, (self.features,))
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    y = ops.conv2d(x, kernel, impl=self.conv_impl) if k == 1 else edge_conv(x, kernel, self.conv_impl)
    y = y.astype(jnp.float32)
    return (y + expand(bias, y.shape)) * expand(jnp.exp(logs * LOG_SCALE_FACTOR), y.shape)


class CouplingNet(nn.Module):
  """openai/glow's `f`: conv3x3 -> ReLU -> conv1x1 -> ReLU -> zero-init conv3x3 (hidden convs with ActNorm).

  Activations in `dtype`; the output in float32.
  """
  hidden_channels: int
  out_channels: int
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, H, W, C_in] -> float32 [B, H, W, out_channels]
    h = nn.relu(Conv(self.hidden_channels, 3, self.conv_impl, self.dtype, name="conv_in")(x))
    h = nn.relu(Conv(self.hidden_channels, 1, self.conv_impl, self.dtype, name="conv_hidden")(h))
    # Zero-init last layer: the coupling starts as the identity (additive) or a fixed 0.88 scale (affine).
    return ZeroConv(self.out_channels, 3, self.conv_impl, self.dtype, name="conv_out")(h)


class AffineCoupling(nn.Module):
  """Affine coupling (Glow, Sec. 3.3; RealNVP).

  x = [x_a, x_b];  h = NN(x_a);  shift = h[..., 0::2];  scale = sigmoid(h[..., 1::2] + 2)
  y_a = x_a;  y_b = (x_b + shift) * scale;  log|det J| = sum(log scale).
  The sigmoid keeps scale in (0, 1), which openai/glow uses instead of exp for stability. NN computes in `dtype`;
  shift, scale and the log-det are float32.
  """
  hidden_channels: int = 512
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def _shift_and_log_scale(self, x_a):
    h = CouplingNet(self.hidden_channels, 2 * x_a.shape[-1], self.conv_impl, self.dtype, name="net")(x_a)
    return h[..., 0::2], jax.nn.log_sigmoid(h[..., 1::2] + 2.0)

  def forward_and_log_det(self, x):
    x_a, x_b = jnp.split(x, 2, axis=-1)
    shift, log_scale = self._shift_and_log_scale(x_a)
    y_b = (x_b + shift) * jnp.exp(log_scale)
    return jnp.concatenate([x_a, y_b], -1), log_scale.sum(axis=(1, 2, 3))

  def inverse_and_log_det(self, y):
    y_a, y_b = jnp.split(y, 2, axis=-1)
    shift, log_scale = self._shift_and_log_scale(y_a)
    x_b = y_b * jnp.exp(-log_scale) - shift
    return jnp.concatenate([y_a, x_b], -1), -log_scale.sum(axis=(1, 2, 3))


class AdditiveCoupling(nn.Module):
  """Additive coupling (NICE; Glow `--flow_coupling 0`).  y_b = x_b + NN(x_a);  log|det J| = 0.  NN in `dtype`."""
  hidden_channels: int = 512
  conv_impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def _shift(self, x_a):
    return CouplingNet(self.hidden_channels, x_a.shape[-1], self.conv_impl, self.dtype, name="net")(x_a)

  def forward_and_log_det(self, x):
    x_a, x_b = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([x_a, x_b + self._shift(x_a)], -1), jnp.zeros(x.shape[:1])

  def inverse_and_log_det(self, y):
    y_a, y_b = jnp.split(y, 2, axis=-1)
    return jnp.concatenate([y_a, y_b - self._shift(y_a)], -1), jnp.zeros(y.shape[:1])


def squeeze(x):
  """[B, H, W, C] -> [B, H/2, W/2, 4C], each 2x2 patch into channels (openai/glow `squeeze2d` channel order)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
  return x.reshape(b, h // 2, w // 2, 4 * c)


def unsqueeze(x):
  """Inverse of `squeeze`: [B, H, W, 4C] -> [B, 2H, 2W, C]."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, c // 4, 2, 2).transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(b, 2 * h, 2 * w, c // 4)


class Squeeze(nn.Module):
  """Space-to-depth as a bijector (Glow, Sec. 3; RealNVP Sec. 3.6); log|det J| = 0."""

  def forward_and_log_det(self, x):
    if x.shape[1] % 2 or x.shape[2] % 2:
      raise ValueError(f"Squeeze needs even height and width, got {x.shape[1:3]}.")
    return squeeze(x), jnp.zeros(x.shape[:1])

  def inverse_and_log_det(self, y):
    return unsqueeze(y), jnp.zeros(y.shape[:1])


class SplitPrior(nn.Module):
  """Multi-scale split with a learned conditional prior (Glow `split2d`; RealNVP Sec. 3.6), as a bijection.

  x = [x_1, x_2];  (mean, log_std) = ZeroConv(x_1);  eps = (x_2 - mean) * exp(-log_std).
  forward: x -> (x_1, eps) with log|det J| = -sum(log_std); then log p(x_2 | x_1) = log N(eps; 0, I) + log|det J|,
  so a flow ending in standard-normal `eps` has the exact likelihood of openai/glow's conditional prior.
  """
  conv_impl: str = "auto"

  @nn.compact
  def _mean_and_log_std(self, x_1):
    h = ZeroConv(2 * x_1.shape[-1], 3, self.conv_impl, name="prior")(x_1)
    return h[..., 0::2], h[..., 1::2]

  def forward_and_log_det(self, x):  # -> ((x_1 [B, H, W, C/2], eps [B, H, W, C/2]), [B])
    x_1, x_2 = jnp.split(x, 2, axis=-1)
    mean, log_std = self._mean_and_log_std(x_1)
    return (x_1, (x_2 - mean) * jnp.exp(-log_std)), -log_std.sum(axis=(1, 2, 3))

  def inverse_and_log_det(self, y):
    x_1, eps = y
    mean, log_std = self._mean_and_log_std(x_1)
    return jnp.concatenate([x_1, mean + eps * jnp.exp(log_std)], -1), log_std.sum(axis=(1, 2, 3))


def flow_log_prob(eps, log_det):
  """log p(x) for a flow x -> eps with a standard-normal base: sum over the eps pytree plus log_det.  -> [B]."""
  return sum(distributions.standard_normal_log_prob(e) for e in jax.tree.leaves(eps)) + log_det


PERMUTATIONS = {
    "conv": functools.partial(InvertibleConv1x1, lu=False),
    "conv_lu": functools.partial(InvertibleConv1x1, lu=True),
    "reverse": Reverse,
    "shuffle": Shuffle,
}
COUPLINGS = {"affine": AffineCoupling, "additive": AdditiveCoupling}
