"""StyleGAN2 through the shared trainer and the command line: training changes G, D and the EMA; exact resume
(EMA, w_avg, pl_mean, counters) with the lazy regularisers firing; non-finite iterations skipped; CLI train ->
evaluate (FID / KID / precision / recall) -> sample (truncation sweep, style mixing); clear config errors."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import stylegan2_quickstart
from jaxgen.gan import networks
from jaxgen.gan import stylegan2 as sg
from jaxgen.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = "experiments/configs/stylegan2_quickstart.py:smoke"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("jaxgen_cache"))


def smoke_config(cache_dir, **overrides):
  config = stylegan2_quickstart.get_config("smoke")
  config.sample_metrics.cache_dir = cache_dir
  for key, value in overrides.items():
    config[key] = value
  return config


def run_config(cache_dir, steps):
  return smoke_config(cache_dir, total_steps=steps, eval_every=1000, ckpt_every=1000)


@pytest.fixture(scope="module")
def whole_run(cache_dir, tmp_path_factory):
  """5 trainer steps of the smoke config (R1 and path length every 2 steps: they fire at steps 0, 2, 4), shared
  by the tests below (one compilation)."""
  workdir = str(tmp_path_factory.mktemp("whole"))
  return workdir, trainer.train_and_evaluate(run_config(cache_dir, 5), workdir)


@pytest.fixture(scope="module")
def setup(cache_dir):
  s = trainer.setup(smoke_config(cache_dir))
  return s, s.init(), s.batch(s.train_data.get(np.arange(s.config.batch_size)))


def _max_change(a, b):
  return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.slow  # the 5-step whole_run fixture with its FID evaluation
def test_trainer_steps_change_both_networks_and_the_ema(setup, whole_run):
  s, state0, _ = setup
  workdir, state = whole_run
  assert set(state0) >= {"step", "skipped_updates", "consecutive_skips", "params", "ema_params", "w_avg", "pl_mean"}
  assert int(state["step"]) == 5 and int(state["skipped_updates"]) == 0 and int(state["consecutive_skips"]) == 0
  for part in ("generator", "discriminator"):
    assert _max_change(state0["params"][part], state["params"][part]) > 1e-4, part
  assert _max_change(state0["ema_params"], state["ema_params"]) > 1e-4
  assert _max_change(state["ema_params"], state["params"]["generator"]) > 0  # the EMA lags behind G
  assert float(state["pl_mean"]) > 0 and float(jnp.abs(state["w_avg"]).max()) > 0
  rows = read_metrics(workdir)
  train = [r for r in rows if "train/g_loss" in r]
  assert len(train) == 5 and all(np.isfinite(v) for r in train for v in r.values())
  assert train[0]["train/r1_penalty"] > 0 and train[0]["train/pl_penalty"] > 0
  assert {"train/d_loss", "train/skipped_updates", "perf/images_per_sec"} <= set(train[-1])
  evals = [r for r in rows if "eval/fid" in r]
  assert evals and {"eval/fid", "eval/kid", "eval/precision", "eval/recall"} <= set(evals[-1])
  images = s.sample(state, jax.random.key(1), jnp.arange(3))
  assert images.shape == (3, 28, 28, 1) and images.dtype == jnp.uint8  # cropped back to the data's shape
  assert os.listdir(os.path.join(workdir, "samples"))


def test_non_finite_iteration_is_skipped_and_counted(setup):
  s, state0, batch = setup
  state = jax.tree.map(jnp.copy, state0)
  state["params"]["discriminator"] = jax.tree.map(lambda x: x * jnp.nan, state["params"]["discriminator"])
  before = jax.tree.map(np.asarray, state)
  state, metrics = s.train_step(state, batch, jax.random.key(0))
  assert int(metrics["skipped_updates"]) == 1 and int(metrics["consecutive_skips"]) == 1
  assert int(state["step"]) == 1
  before.pop("step"), before.pop("skipped_updates"), before.pop("consecutive_skips")
  after = {k: v for k, v in state.items() if k in before}
  jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, after))  # NaN == NaN here


@pytest.mark.slow
def test_resume_is_identical_to_uninterrupted_training(tmp_path, cache_dir, whole_run):
  """Restart at step 3: the regularisers fire at steps 0, 2 (first part) and 4 (after the restart)."""
  whole, final_whole = whole_run
  split = str(tmp_path / "split")
  trainer.train_and_evaluate(run_config(cache_dir, 3), split)
  final_split = trainer.train_and_evaluate(run_config(cache_dir, 5), split)  # resumes at step 3
  train = lambda d: [{k: v for k, v in r.items() if k.startswith("train/") and k != "train/lr"}
                     for r in read_metrics(d) if "train/g_loss" in r]
  assert train(whole) == train(split)
  assert int(final_split["step"]) == 5
  jax.tree.map(np.testing.assert_array_equal, final_whole, final_split)


def test_bad_configs_fail_with_clear_errors(cache_dir):
  with pytest.raises(ValueError, match="config.optimizer key.*known keys"):
    trainer.setup(smoke_config(cache_dir, optimizer=dict(lr=1e-3)))
  with pytest.raises(ValueError, match="ema_decay"):
    trainer.setup(smoke_config(cache_dir, ema_decay=0.999))
  config = smoke_config(cache_dir)
  config.model["image_shape"] = (32, 32, 1)
  with pytest.raises(ValueError, match="image_shape"):
    trainer.setup(config)
  with pytest.raises(ValueError, match="resolution"):
    sg.Model(image_shape=(28, 28, 1), resolution=64)
  with pytest.raises(ValueError, match="sample_metrics"):
    trainer.setup(smoke_config(cache_dir, sample_metrics=dict(fid_samples=10)))


def test_model_derives_resolution_and_pads_and_crops():
  m = sg.Model(image_shape=(28, 28, 1))
  assert (m.resolution, m.img_channels, m.num_ws) == (32, 1, 8)
  x = jnp.arange(2 * 28 * 28).reshape(2, 28, 28, 1).astype(jnp.uint8)
  padded = networks.pad_images(x, 32)
  assert padded.shape == (2, 32, 32, 1) and int(padded[:, :2].max()) == 0 and int(padded[:, :, -2:].max()) == 0
  np.testing.assert_array_equal(networks.crop_images(padded, m.image_shape), x)
  # The defaults are the official `stylegan2` config's, at 32x32x3 (the default image_shape).
  official = dict(resolution=32, img_channels=3, z_dim=512, w_dim=512, mapping_layers=8, channel_base=32768,
                  channel_max=512, d_architecture="resnet", mbstd_group_size=4, r1_gamma=10.0, r1_interval=16,
                  pl_weight=2.0, pl_interval=4, style_mixing_prob=0.9, ema_kimg=10.0, ema_rampup=None)
  assert {k: getattr(sg.Model(), k) for k in official} == official


def run_cli(*args, cache_dir):
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                        env={**os.environ, "JAXGEN_CACHE": cache_dir})


@pytest.mark.slow
def test_cli_evaluates_and_samples(cache_dir, whole_run):
  workdir, _ = whole_run
  out = run_cli("-m", "experiments.evaluate", f"--config={SMOKE}", f"--workdir={workdir}", cache_dir=cache_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert {"fid", "kid", "precision", "recall"} <= set(result) and result["fid"] > 0 and result["step"] == 5
  assert 0 <= result["precision"] <= 1 and 0 <= result["recall"] <= 1 and result["num_samples"] == 16
  out = run_cli("-m", "experiments.sample", f"--config={SMOKE}", f"--workdir={workdir}", "--config.figures.num=3",
                "--config.figures.mix=2", cache_dir=cache_dir)
  assert out.returncode == 0, out.stderr[-3000:]
  for name in ("truncation.png", "truncation_0.png", "truncation_1.png", "style_mixing_coarse.png",
               "style_mixing_fine.png"):
    assert os.path.exists(os.path.join(workdir, "samples", name)), name
