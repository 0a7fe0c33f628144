"""LMConv through the shared trainer and the command line: the quickstart-shaped :smoke model learns, the sample
script writes the completion grid, the evaluate script reports the conditional likelihood of a hidden region."""
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from experiments.configs import lmconv_quickstart
from jaxgen.training import trainer

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
CONFIG = os.path.join(REPO, "experiments", "configs", "lmconv_quickstart.py")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A :smoke LMConv trained 40 steps on the bundled digits (every step logged)."""
  path = tmp_path_factory.mktemp("lmconv_qs")
  config = lmconv_quickstart.get_config("smoke")
  config.total_steps, config.log_every, config.eval_every, config.ckpt_every = 40, 1, 40, 40
  config.optimizer.warmup_steps = 5
  state = trainer.train_and_evaluate(config, str(path))
  assert int(state["step"]) == 40 and int(state["skipped_updates"]) == 0
  return path


def _rows(path):
  with open(path / "metrics.jsonl") as f:
    return [json.loads(line) for line in f]


def test_quickstart_smoke_loss_falls_through_the_trainer(workdir):
  rows = _rows(workdir)
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert len(losses) == 40
  assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2, losses
  # Evaluation: one order and the ensemble over eval_orders, in bits/dim.
  final = [r for r in rows if "eval/bpd" in r][-1]
  assert {"eval/bpd", "eval/bpd_ensemble", "eval/nats", "eval/nats_ensemble"} <= set(final)
  # log mean_k p_k >= log p_0 - log 2 for every image: the 2-order ensemble is at most 1 bit per image worse.
  assert final["eval/bpd_ensemble"] <= final["eval/bpd"] + 1.0 / 784 + 1e-6
  assert os.path.exists(workdir / "samples" / "step_00000040.png")


def _run(module, workdir, *flags):
  out = subprocess.run([sys.executable, "-m", module, f"--config={CONFIG}:smoke", f"--workdir={workdir}", *flags],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


@pytest.mark.slow
def test_cli_sample_writes_completion_grid(workdir):
  stdout = _run("experiments.sample", workdir, "--config.figures.temperatures=1", "--config.figures.num=1",
                "--config.figures.complete_images=2", "--config.figures.completions=2",
                "--config.figures.missing=bottom")
  assert "completions.png" in stdout
  grid = np.asarray(Image.open(workdir / "samples" / "completions.png"))
  # 2 rows x (observed, 2 completions, original) of 28x28 digits, 1-pixel borders, upscaled x2.
  assert grid.shape == (2 * (2 * 29 + 1), 2 * (4 * 29 + 1))
  cell = lambda r, c: grid[2 * (1 + 29 * r):2 * (1 + 29 * r + 28):2, 2 * (1 + 29 * c):2 * (1 + 29 * c + 28):2]
  for r in range(2):
    original = cell(r, 3)
    np.testing.assert_array_equal(cell(r, 0)[:14], original[:14])  # observed top half shown as is
    assert np.all(cell(r, 0)[14:] == 128)  # hidden bottom half shown grey
    for c in (1, 2):
      np.testing.assert_array_equal(cell(r, c)[:14], original[:14])  # completion keeps the observed pixels


@pytest.mark.slow
def test_cli_evaluate_reports_completion_likelihood(workdir):
  results = json.loads(_run("experiments.evaluate", workdir, "--evals=completion", "--config.eval_batch_size=500")
                       .strip().splitlines()[-1])
  assert results["completion_region"] == "top" and results["num_examples"] > 0
  # The smoke model's 2 eval orders (s_curve, s_curve_rot90) do not start at the bottom: both rearranged.
  assert results["completion_orders"] == ["s_curve", "s_curve_rot90"]
  assert np.isfinite(results["completion_bpd"]) and results["completion_bpd"] > 0
  np.testing.assert_allclose(results["completion_nats"], results["completion_bpd"] * 392 * np.log(2), rtol=1e-6)
