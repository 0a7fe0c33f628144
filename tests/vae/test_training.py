"""NVAE through the shared trainer: the smoke config learns and stays finite at the paper's learning rate and logs
its learning rate, the family's evaluation (negative ELBO, importance-weighted NLL, active units), BatchNorm
statistics global over devices. The tests share one 200-step run (a module fixture) and are marked slow.
"""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.configs import nvae_quickstart
from jaxgen.training import checkpoints
from jaxgen.training import optim
from jaxgen.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 200


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The quickstart's :smoke NVAE (binarized digits) trained 200 steps at the paper's lr 1e-2 (Adamax)."""
  workdir = str(tmp_path_factory.mktemp("nvae"))
  config = nvae_quickstart.get_config("smoke")
  config.total_steps, config.log_every, config.eval_every, config.ckpt_every = STEPS, 1, STEPS, STEPS
  state = trainer.train_and_evaluate(config, workdir)
  return config, workdir, state


@pytest.mark.slow
def test_200_steps_at_the_paper_lr_stay_finite_and_the_negative_elbo_falls(trained):
  config, workdir, state = trained
  assert config.optimizer["lr"] == 1e-2 and config.optimizer["name"] == "adamax"
  rows = [r for r in read_metrics(workdir) if "train/nelbo" in r]
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
  nelbo = np.array([r["train/nelbo"] for r in rows])
  assert np.all(np.isfinite(nelbo)) and np.all(np.isfinite([r["train/loss"] for r in rows]))
  assert int(state["skipped_updates"]) == 0 and rows[-1]["train/skipped_updates"] == 0
  assert nelbo[-20:].mean() < 0.8 * nelbo[:5].mean(), (nelbo[:5], nelbo[-20:])
  # KL warm-up ran (beta from kl_const_coeff to 1) and the regularisers were active.
  assert rows[0]["train/kl_coeff"] < 0.01 and rows[-1]["train/kl_coeff"] == 1.0
  assert rows[-1]["train/spectral_loss"] > 0 and rows[-1]["train/reg_coeff"] == pytest.approx(1e-2)


@pytest.mark.slow
def test_train_step_reports_the_schedules_learning_rate(trained):
  """NVAE's own train_step reports "lr" (the trainer logs it as train/lr): the optimiser's schedule at each step."""
  config, workdir, _ = trained
  rows = [r for r in read_metrics(workdir) if "train/nelbo" in r]
  lr = np.array([r["train/lr"] for r in rows])  # row of step k: the update from state step k - 1
  schedule = optim.learning_rate(config)
  # rtol: float32 cosine near the end of the decay, inside the compiled step and here.
  np.testing.assert_allclose(lr, [float(schedule(r["step"] - 1)) for r in rows], rtol=1e-5, atol=1e-12)
  # One warm-up step from 0, then cosine decay to 1% of the peak.
  assert lr[0] == 0.0 and lr.max() == pytest.approx(config.optimizer["lr"]) and lr[-1] < 0.02 * lr.max()


@pytest.mark.slow
def test_batch_stats_and_power_iteration_vectors_are_state_and_checkpointed(trained):
  _, workdir, state = trained
  stats = state["model_state"]["batch_stats"]
  power = stats["spectral_regularizer"]
  assert power and all(set(v) == {"u", "v"} for v in power.values())
  names = {path[-1].key for path, _ in jax.tree_util.tree_leaves_with_path(stats)}
  assert {"mean", "var", "u", "v"} <= names  # BN running averages and power-iteration vectors
  checkpointer = checkpoints.Checkpointer(workdir)
  assert checkpointer.latest_step() == STEPS
  restored = checkpointer.restore(jax.eval_shape(lambda: state))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored["model_state"]),
               jax.device_get(state["model_state"]))


@pytest.mark.slow
def test_evaluation_reports_elbo_iw_nll_and_active_units(trained):
  config, workdir, state = trained
  final = [r for r in read_metrics(workdir) if "eval/nelbo_bpd" in r][-1]
  for key in ("nelbo_bpd", "nelbo_nats", "iw_nll_bpd", "iw_nll_nats", "kl_group_00", "kl_group_01",
              "active_units", "latent_units"):
    assert np.isfinite(final[f"eval/{key}"]), key
  np.testing.assert_allclose(final["eval/nelbo_bpd"], final["eval/nelbo_nats"] / (28 * 28 * np.log(2.0)), rtol=1e-5)
  assert final["eval/latent_units"] == 2 * 2  # 2 groups x 2 latents
  # Active units from data-level statistics: per-unit KL summed over every example, averaged, then thresholded.
  s = trainer.setup(config)
  config = s.config  # with the trainer's defaults
  results = trainer.evaluate_state(s, state, num_examples=config.eval_examples)
  assert results["nelbo_nats"] == pytest.approx(final["eval/nelbo_nats"], rel=1e-5)  # same data and noise
  rng = jax.random.key(config.seed + 1)
  batches = s.input.eval_batches(config.eval_split, config.eval_examples)
  sums = [jax.device_get(s.eval_step(state, s.batch(b), jax.random.fold_in(rng, i))) for i, b in enumerate(batches)]
  count = sum(x["count"] for x in sums)
  unit_kl = sum(x["kl_units"] for x in sums) / count  # [U]
  assert results["active_units"] == int(np.sum(unit_kl > 0.1))
  np.testing.assert_allclose(unit_kl.sum(), results["kl"], rtol=1e-4)  # units partition the KL


SHARDED_SCRIPT = r"""
import functools, json
import jax, numpy as np
from experiments.configs import nvae_quickstart
from jaxgen.training import trainer
s = trainer.setup(nvae_quickstart.get_config("smoke"))
state = s.init()
host_batch = s.input.init_batch()
one_device = jax.devices()[0]
step = jax.jit(functools.partial(s.family.train_step, model=s.model, tx=s.tx, config=s.config))
new_1, metrics_1 = step(jax.device_put(jax.device_get(state), one_device), jax.device_put(host_batch, one_device),
                        jax.random.key(0))
batch = s.batch(host_batch)
new_4, metrics_4 = s.train_step(state, batch, jax.random.key(0))
stats_1, stats_4 = (jax.device_get(n["model_state"]["batch_stats"]) for n in (new_1, new_4))
diff = max(float(np.max(np.abs(a - b) / (1e-3 + np.abs(a))))
           for a, b in zip(jax.tree.leaves(stats_1), jax.tree.leaves(stats_4)))
print(json.dumps({"devices": len(batch["image"].sharding.device_set), "loss_1": float(metrics_1["loss"]),
                  "loss_4": float(metrics_4["loss"]), "stats_rel_diff": diff}))
"""


@pytest.mark.slow
def test_four_device_step_has_global_batchnorm_statistics():
  """One step with the batch split over 4 devices equals the 1-device step: BN statistics are global."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], cwd=REPO, capture_output=True, text=True,
                       timeout=1800, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["devices"] == 4
  np.testing.assert_allclose(result["loss_4"], result["loss_1"], rtol=1e-5)
  assert result["stats_rel_diff"] < 1e-4, result
