"""NVAE model (jaxgen/vae/nvae.py): the official residual-normal KL, groups and KL balancing, latent structure,
ELBO / importance-weighted bounds, training, sampling, BN re-adjustment.

Compilation dominates on CPU: one tiny model is initialised once (module fixture) and every jitted function is
shared; structural checks use jax.eval_shape (traced, not compiled).
"""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxgen.training import optim
from jaxgen.vae import nvae

# Tests run tiny shapes: XLA's CPU backend optimisations cost more compile time than they save.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0,
                                                    "xla_llvm_disable_expensive_passes": True})


def _key(seed):
  # "rbg" keys compile much faster on CPU than threefry for the many parameter initialisers.
  return jax.random.key(seed, impl="rbg")


def _images(seed, batch, size=8, channels=3):
  """Smooth, structured 8-bit images (learnable within a few steps)."""
  rng = np.random.RandomState(seed)
  yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
  phase = rng.uniform(0, 1, (batch, 1, 1, channels))
  img = 0.5 + 0.4 * np.sin(2 * np.pi * (xx[None, :, :, None] + yy[None, :, :, None] + phase))
  return jnp.asarray(np.round(255 * img), jnp.uint8)  # [B, H, W, C]


CHUNK = 8  # evaluation functions are compiled once, for batches of CHUNK * 4 images


@pytest.fixture(scope="module")
def tiny():
  model = nvae.Tiny()
  x = _images(0, 4)
  variables = _jit(functools.partial(model.init, train=False))({"params": _key(0), "sample": _key(1)}, x)
  log_w = _jit(lambda v, x, r: model.apply(v, x, rngs={"sample": r}, method=nvae.Model.log_importance_weights))
  elbo = _jit(lambda v, x, r: model.apply(v, x, rngs={"sample": r}, method=nvae.Model.log_prob))
  tiled = jnp.tile(x, (CHUNK, 1, 1, 1))  # [CHUNK * B, H, W, C], sample-major
  return model, variables, x, tiled, log_w, elbo


def test_latent_shapes_per_group_and_flows_trace():
  """Groups over 3 scales, shrinking at coarser scales (ada_groups), with posterior flows (traced only)."""
  model = nvae.Tiny(image_shape=(16, 16, 3), num_latent_scales=3, num_groups_per_scale=4, ada_groups=True, num_nf=1,
                    num_latent_per_group=3)
  x = jnp.zeros((2, 16, 16, 3), jnp.uint8)
  rngs = {"params": _key(0), "sample": _key(1)}
  variables = jax.eval_shape(functools.partial(model.init, train=False), rngs, x)
  expected = [(2, 2, 3)] + [(4, 4, 3)] * 2 + [(8, 8, 3)] * 4  # decoder order: coarsest scale first
  assert model.latent_shapes() == expected
  zs = jax.eval_shape(lambda v, x: model.apply(v, x, rngs={"sample": _key(2)},
                                               method=nvae.Model.posterior_latents), variables, x)
  assert [z.shape for z in zs] == [(2,) + s for s in expected]
  out, _ = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, step=3, rngs={"sample": _key(2)},
                                                   mutable=["batch_stats"]), variables, x)
  assert sum(k.startswith("kl_group_") for k in out) == 7
  assert all(v.shape == (2,) for v in out.values())
  assert len(variables["params"]["nf_cells_6"]) == 2  # one PairedCellAR per group: two masked cells


def test_non_square_images_trace():
  """image_shape is (H, W, C): latents and outputs keep the aspect ratio (traced only)."""
  model = nvae.Tiny(image_shape=(8, 16, 1), binarized=True)
  x = jnp.zeros((2, 8, 16, 1), jnp.uint8)
  rngs = {"params": _key(0), "sample": _key(1)}
  variables = jax.eval_shape(functools.partial(model.init, train=False), rngs, x)
  assert model.latent_shapes() == [(4, 8, 2)] * 2
  samples = jax.eval_shape(lambda v: model.apply(v, _key(2), 3, method=nvae.Model.sample), variables)
  assert samples.shape == (3, 8, 16, 1)


def test_bad_image_shape_is_rejected_with_a_fix():
  model = nvae.Tiny(image_shape=(12, 12, 3), num_latent_scales=3)  # 12 is not a multiple of 2^3
  with pytest.raises(ValueError, match="divisible"):
    jax.eval_shape(functools.partial(model.init, train=False), {"params": _key(0), "sample": _key(1)},
                   jnp.zeros((1, 12, 12, 3), jnp.uint8))


def test_preprocessing_5bit_and_binarized():
  vals = (np.arange(192) * 255 // 191).astype(np.uint8).reshape(1, 8, 8, 3)
  x, target = nvae.preprocess_images(jnp.asarray(vals), num_bits=5)
  np.testing.assert_array_equal(target, vals // 8)  # official pre_process: floor(x * 255 / 2^(8 - 5))
  np.testing.assert_allclose(x, (vals // 8) / 31.0, rtol=1e-6)
  im = jnp.ones((2, 4, 4, 1), jnp.uint8)
  x, target = nvae.preprocess_images(im, binarized=True, pad=2)
  assert x.shape == (2, 8, 8, 1) and float(x.sum()) == 32.0 and target.shape == (2, 4, 4, 1)
  assert float(x[:, :2].sum()) == 0.0  # zero padding, as the official MNIST loader


# --- pieces of the official utils.py / distributions.py ---------------------------------------------


def _residual_normal(seed, shape, scale=1.0):
  """Prior params and residual posterior params (mu_p + dmu, log_sig_p + dlog_sig), as in nvae.Model."""
  mu_p, log_sig_p, dmu, dlog = scale * np.random.RandomState(seed).standard_normal((4,) + shape).astype(np.float32)
  q = nvae.normal_params(mu_p + dmu, log_sig_p + dlog)
  p = nvae.normal_params(mu_p, log_sig_p)
  return q, p


def test_residual_normal_kl_equals_monte_carlo():
  q, p = _residual_normal(0, (6,), scale=0.7)
  kl = nvae.normal_kl_elementwise(*q, *p)  # [6]
  eps = np.random.RandomState(1).standard_normal((400_000, 6)).astype(np.float32)
  z = q[0] + q[1] * eps
  log_ratio = nvae.normal_log_prob_elementwise(z, *q) - nvae.normal_log_prob_elementwise(z, *p)
  mc, se = log_ratio.mean(0), log_ratio.std(0) / np.sqrt(z.shape[0])
  assert np.all(np.abs(mc - kl) < 5 * se + 1e-4), (mc, kl, se)
  # Log-densities are proper: a standard normal at 0 has log N = -0.5 log(2 pi).
  np.testing.assert_allclose(nvae.normal_log_prob_elementwise(0.0, 0.0, 1.0), -0.5 * np.log(2 * np.pi), rtol=1e-6)


def test_kl_nonnegative_and_zero_for_zero_residual():
  q, p = _residual_normal(2, (10_000,), scale=4.0)  # many values beyond the soft clamp
  kl = nvae.normal_kl_elementwise(*q, *p)
  assert np.all(np.isfinite(kl)) and np.all(kl >= -1e-6)
  mu_p, log_sig_p = np.random.RandomState(3).standard_normal((2, 100)).astype(np.float32)
  same = nvae.normal_params(mu_p, log_sig_p)
  np.testing.assert_allclose(nvae.normal_kl_elementwise(*same, *same), 0.0, atol=1e-6)
  # soft clamp: 5 tanh(x / 5) stays inside (-5, 5) and is close to identity near 0.
  x = jnp.array([-100.0, -0.01, 0.0, 0.01, 100.0])
  c = nvae.soft_clamp5(x)
  assert np.all(np.abs(c) <= 5.0) and np.allclose(c[1:4], x[1:4], atol=1e-6)


def test_groups_per_scale_and_kl_balancer_coeff_match_official():
  assert nvae.groups_per_scale(2, 10, ada_groups=True) == [10, 5]
  assert nvae.groups_per_scale(5, 16, ada_groups=True, min_groups_per_scale=4) == [16, 8, 4, 4, 4]
  assert nvae.groups_per_scale(3, 7, ada_groups=False) == [7, 7, 7]
  # Decoder order: the coarse scale (5 groups) gets 1/5, the fine one (10 groups) 4/10; normalised by the min.
  np.testing.assert_allclose(nvae.kl_balancer_coeff([10, 5]), [1.0] * 5 + [2.0] * 10)
  # KL warm-up: constant min coefficient, then linear, then 1.
  coeff = functools.partial(nvae.kl_coeff, anneal_steps=100, const_steps=10, min_coeff=1e-4)
  np.testing.assert_allclose([coeff(0), coeff(60), coeff(110), coeff(1000)], [1e-4, 0.5, 1.0, 1.0], rtol=1e-6)


def test_kl_balance_reweights_only_during_warmup():
  kl_all = jnp.array([[1.0, 10.0], [3.0, 30.0]])  # [B=2, G=2]
  alpha = jnp.array([1.0, 1.0])
  out = nvae.kl_balance(kl_all, 0.5, alpha)
  # gamma proportional to mean |KL| + 0.01: (2.01, 20.01), normalised to mean 1.
  gamma = np.array([2.01, 20.01]) / np.mean([2.01, 20.01])
  np.testing.assert_allclose(out, 0.5 * (np.asarray(kl_all) * gamma).sum(1), rtol=1e-5)
  np.testing.assert_allclose(nvae.kl_balance(kl_all, 1.0, alpha), kl_all.sum(1), rtol=1e-6)
  # The coefficients are constants: d/dKL of the balanced term is beta * gamma.
  grad = jax.grad(lambda k: nvae.kl_balance(k, 0.5, alpha).sum())(kl_all)
  np.testing.assert_allclose(grad, 0.5 * np.broadcast_to(gamma, (2, 2)), rtol=1e-5)


# --- the model ---------------------------------------------------------------------------------------


def test_losses_report_nelbo_in_bits_per_dim(tiny):
  model, variables, _, tiled, _, elbo = tiny
  out = _jit(lambda v, x, r: model.apply(v, x, train=False, rngs={"sample": r}))(variables, tiled, _key(3))
  np.testing.assert_allclose(out["nelbo"], out["recon"] + out["kl"], rtol=1e-6)
  np.testing.assert_allclose(out["nelbo_bpd"], out["nelbo"] / (8 * 8 * 3 * np.log(2.0)), rtol=1e-6)
  np.testing.assert_allclose(out["loss"], out["nelbo"], rtol=1e-6)  # evaluation: the plain negative ELBO
  np.testing.assert_allclose(out["kl_group_00"] + out["kl_group_01"], out["kl"], rtol=1e-5)
  assert np.all(out["kl"] >= 0) and np.all(np.isfinite(out["nelbo"]))
  np.testing.assert_allclose(elbo(variables, tiled, _key(3)), -out["nelbo"], rtol=1e-5)


def test_importance_weighted_bound(tiny):
  model, variables, x, tiled, log_w, elbo = tiny
  # K=1: E_q[log w] = ELBO (analytic KL), averaged over the batch and many draws.
  lw = np.concatenate([np.asarray(log_w(variables, tiled, _key(100 + i))) for i in range(6)])
  el = np.concatenate([np.asarray(elbo(variables, tiled, _key(200 + i))) for i in range(6)])
  diff = lw.mean() - el.mean()
  se = np.sqrt(lw.var() / lw.size + el.var() / el.size)
  assert abs(diff) < 4 * se + 1e-3, (diff, se)
  # K=24 in chunks of 8 equals the direct log-mean-exp over the same draws, and is above the ELBO.
  rng = _key(7)
  iw = _jit(functools.partial(nvae.importance_weighted_log_prob, model, num_samples=24, chunk_size=CHUNK))
  got = iw(variables, x, rng=rng)
  draws = np.concatenate([np.asarray(log_w(variables, tiled, jax.random.fold_in(rng, i))).reshape(CHUNK, -1)
                          for i in range(3)])  # [24, B]
  np.testing.assert_allclose(got, jax.nn.logsumexp(draws, axis=0) - np.log(24), rtol=1e-5)
  assert got.shape == (x.shape[0],)
  assert got.mean() > el.mean()


def test_negative_elbo_falls_with_adamax(tiny):
  model, variables, _, _, _, _ = tiny
  x = _images(1, 8)
  tx, _ = optim.build(dict(name="adamax", lr=1e-2, eps=1e-3, l2_weight_decay=3e-4), total_steps=100)

  @_jit
  def train_step(state, x, rng):
    def loss_fn(params):
      out, upd = model.apply({"params": params, "batch_stats": state["batch_stats"]}, x, train=True,
                             step=state["step"], rngs={"sample": rng}, mutable=["batch_stats"])
      return out["loss"].mean(), (out, upd["batch_stats"])
    grads, (out, batch_stats) = jax.grad(loss_fn, has_aux=True)(state["params"])
    updates, opt = tx.update(grads, state["opt"], state["params"])
    return dict(params=optax.apply_updates(state["params"], updates), batch_stats=batch_stats, opt=opt,
                step=state["step"] + 1), out

  state = dict(params=variables["params"], batch_stats=variables["batch_stats"],
               opt=tx.init(variables["params"]), step=jnp.zeros((), jnp.int32))
  nelbo = []
  for i in range(12):
    state, out = train_step(state, x, _key(1000))  # same posterior noise: the change comes from the weights
    nelbo.append(float(out["nelbo"].mean()))
  assert np.all(np.isfinite(nelbo))
  assert np.mean(nelbo[-3:]) < nelbo[0] - 0.1 * abs(nelbo[0]), nelbo
  assert float(out["kl_coeff"][0]) == pytest.approx(1.0)  # warm-up over kl_anneal_steps=10 is done
  # Power-iteration state moved with the weights; BN running statistics were updated.
  before, after = variables["batch_stats"], state["batch_stats"]
  assert not np.allclose(jax.tree.leaves(before["spectral_regularizer"])[0],
                         jax.tree.leaves(after["spectral_regularizer"])[0])
  assert float(out["spectral_loss"][0]) > 0 and float(out["bn_loss"][0]) > 0


def test_sample_and_batchnorm_readjustment(tiny):
  model, variables, _, _, _, _ = tiny
  sample = _jit(lambda v, r: model.apply(v, r, 6, 0.7, method=nvae.Model.sample))
  images = sample(variables, _key(5))
  assert images.shape == (6, 8, 8, 3) and images.dtype == jnp.uint8
  readjust = _jit(functools.partial(nvae.readjust_batch_stats, model, num_samples=6, num_iterations=20))
  stats = readjust(variables, _key(6), 0.7)
  old = variables["batch_stats"]
  assert jax.tree.structure(stats) == jax.tree.structure(old)
  # Decoder BNs now hold statistics of samples at t=0.7; encoder BNs and power-iteration state are untouched.
  flat_new, flat_old = dict(jax.tree_util.tree_leaves_with_path(stats)), dict(
      jax.tree_util.tree_leaves_with_path(old))
  changed = {k[0].key for k in flat_new if not np.allclose(flat_new[k], flat_old[k])}
  assert changed and all(k.startswith(("dec_tower", "post_process")) for k in changed), changed
  # The generator in inference mode with the re-adjusted statistics normalises its activations close to
  # what training-mode BN does at that temperature: sampling uses them and gives different images.
  images_readjusted = sample({"params": variables["params"], "batch_stats": stats}, _key(5))
  assert not np.array_equal(images, images_readjusted)
  # TemperatureSampler: the same statistics, computed once per temperature and then reused.
  sampler = nvae.TemperatureSampler(model, variables, _key(6), num_samples=6, num_iterations=20)
  calls = []
  readjust_once = sampler._readjust  # pylint: disable=protected-access
  sampler._readjust = lambda *a: calls.append(a[-1]) or readjust_once(*a)  # pylint: disable=protected-access
  first = sampler.sample(_key(5), 6, 0.7)
  np.testing.assert_array_equal(first, sampler.sample(_key(5), 6, 0.7))
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5), sampler.batch_stats(0.7), stats)
  sampler.sample(_key(5), 6, 1.0)
  assert len(calls) == 2 and sorted(sampler.cache) == [0.7, 1.0]
  # Re-adjusting at another temperature gives other statistics.
  assert not np.allclose(jax.tree.leaves(sampler.cache[1.0]["post_process_0"])[0],
                         jax.tree.leaves(stats["post_process_0"])[0])


def test_sample_images_of_binarized_data_are_0_1_draws_and_decoder_means_are_8bit():
  # The trainer's grids and the default sample metrics take 0/1 images for binarized data; the NVAE FID protocol
  # (config.decoder_means) takes round(p(x = 1 | z) * 255).
  model = nvae.Tiny(image_shape=(8, 8, 1), binarized=True, num_postprocess_cells=1)
  x = jnp.asarray(np.random.RandomState(0).randint(0, 2, (4, 8, 8, 1)), jnp.uint8)
  variables = _jit(functools.partial(model.init, train=False))({"params": _key(0), "sample": _key(1)}, x)
  state = {"params": variables["params"], "model_state": {"batch_stats": variables["batch_stats"]}}
  labels = jnp.zeros(16, jnp.int32)
  config = ml_collections.ConfigDict(dict(sample_temperature=1.0, readjust_bn_iterations=0))
  draws = np.asarray(_jit(functools.partial(nvae.sample_images, model=model, config=config))(state, _key(2), labels))
  assert set(np.unique(draws)) == {0, 1}
  config.update(decoder_means=True)
  means = np.asarray(_jit(functools.partial(nvae.sample_images, model=model, config=config))(state, _key(2), labels))
  assert means.dtype == np.uint8 and len(np.unique(means)) > 10  # grey levels, not thresholded


def test_remat_gives_the_same_loss_gradients_and_batch_stats(tiny):
  """Rematerialised residual cells compute the same training loss, gradients (spectral regularisation included: its
  kernels come from a second pass) and BatchNorm / power-iteration state; parameters are shared unchanged."""
  model, variables, x, _, _, _ = tiny

  def loss_fn(params, m):
    terms, state = m.apply({**variables, "params": params}, x, train=True, step=0, rngs={"sample": _key(2)},
                           method=nvae.Model.losses, mutable=["batch_stats"])
    return jnp.mean(terms["loss"]), (terms["spectral_loss"], state)

  outs = [_jit(jax.value_and_grad(functools.partial(loss_fn, m=m), has_aux=True))(variables["params"])
          for m in (model, model.clone(remat=True))]
  (loss, (spectral_loss, state)), grads = outs[0]
  (remat_loss, (remat_spectral, remat_state)), remat_grads = outs[1]
  assert float(jnp.mean(spectral_loss)) > 0
  np.testing.assert_allclose(remat_spectral, spectral_loss, rtol=1e-6)
  np.testing.assert_allclose(remat_loss, loss, rtol=1e-6)
  for a, b in zip(jax.tree.leaves((remat_grads, remat_state)), jax.tree.leaves((grads, state))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
