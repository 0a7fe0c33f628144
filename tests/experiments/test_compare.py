"""experiments.compare on smoke-sized runs of every family: the table's columns, "none" where a family lacks a
measure, JSON = Markdown, one PNG panel per run, bpd as experiments.evaluate gives it, Glow's exact reconstruction,
and the refusal of runs on different data."""
import importlib
import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from jaxgen.metrics import comparison
from jaxgen.training import checkpoints
from jaxgen.training import trainer

RUNS = ("glow_quickstart", "nvae_quickstart", "lmconv_quickstart", "stylegan2_quickstart", "realnvp_quickstart")
OPTIONS = comparison.Options(
    num_examples=8, num_samples=8, iw_samples=2, iw_chunk_size=1, project_steps=2, num_reconstruct=2, sample_batch=8,
    sample_metrics=dict(batch_size=8, classifier_steps=2, classifier_examples=32, classifier_widths=(4,),
                        classifier_embed_dim=4))
# Measures each family lacks ("none"), by run: the GAN has no likelihood, only NVAE an ELBO, only LMConv an exact
# conditional likelihood; Glow and NVAE cannot complete a region; LMConv and the RealNVP example have no encoder.
NONE = {
    "glow_quickstart": {"elbo_bpd", "completion_bpd", "completion", "completion_rmse"},
    "nvae_quickstart": {"completion_bpd", "completion", "completion_rmse"},
    "lmconv_quickstart": {"elbo_bpd", "latent_access", "recon_rmse"},
    "stylegan2_quickstart": {"bpd", "bpd_kind", "elbo_bpd", "completion_bpd"},
    "realnvp_quickstart": {"elbo_bpd", "latent_access", "recon_rmse", "completion_bpd", "completion",
                           "completion_rmse"},
}


def smoke_config(name):
  config = importlib.import_module(f"experiments.configs.{name}").get_config("smoke")
  config.total_steps = 2
  if name == "nvae_quickstart":  # the quickstart binarizes; the comparison needs the 8-bit digits the others model
    config.binarize, config.model = "", dict(config.model, binarized=False)
  return config


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  workdirs = [str(root / name) for name in RUNS]
  for name, workdir in zip(RUNS, workdirs):
    trainer.train_and_evaluate(smoke_config(name), workdir)
  rows, settings, panels = comparison.measure(workdirs, OPTIONS)
  paths = comparison.write(str(root / "out"), rows, settings, panels)
  return workdirs, rows, settings, panels, paths


def test_every_column_and_none_exactly_where_a_family_lacks_the_measure(compared):
  _, rows, _, _, _ = compared
  assert [row["run"] for row in rows] == list(RUNS)
  for row in rows:
    assert tuple(row) == comparison.COLUMNS
    missing = {k for k, v in row.items() if v is None}
    assert missing == NONE[row["run"]], row["run"]
  kinds = {row["run"]: row["bpd_kind"] for row in rows}
  assert kinds["glow_quickstart"] == kinds["lmconv_quickstart"] == "exact"
  assert kinds["nvae_quickstart"] == "IW bound, K=2"


def test_json_matches_markdown_and_png_has_one_panel_per_run(compared):
  _, rows, _, panels, (md_path, json_path, png_path) = compared
  with open(json_path) as f:
    saved = json.load(f)
  with open(md_path) as f:
    table = [line for line in f.read().splitlines() if line.startswith("|")]
  assert table[0] == "| " + " | ".join(saved["columns"]) + " |"
  cells = [[c.strip() for c in line.strip("|").split("|")] for line in table[2:]]
  assert cells == [[comparison.cell(run[k]) for k in saved["columns"]] for run in saved["runs"]]
  assert "none" in cells[3]  # the GAN's bits/dim
  picture = np.asarray(Image.open(png_path))
  white_columns = np.all(picture == 255, axis=0 if picture.ndim == 2 else (0, 2))
  starts = np.flatnonzero(np.diff(white_columns.astype(int)) == -1)  # white -> drawn: a panel's left edge
  assert len(panels) == len(RUNS)
  assert picture.shape[1] == 2 * (sum(p.shape[1] for p in panels) + 4 * (len(panels) - 1))
  assert len(starts) >= len(RUNS)


def test_bpd_is_what_experiments_evaluate_gives(compared):
  workdirs, rows, _, _, _ = compared
  # The command a user runs (in a subprocess: experiments.evaluate's absl flags are process-wide).
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  for i in (0, 2):  # Glow, LMConv
    out = subprocess.run(
        [sys.executable, "-m", "experiments.evaluate", f"--config=experiments/configs/{RUNS[i]}.py:smoke",
         f"--workdir={workdirs[i]}", "--config.total_steps=2", f"--num_examples={OPTIONS.num_examples}"],
        cwd=repo, capture_output=True, text=True, timeout=600, env=dict(os.environ, JAXGEN_HUGEPAGES="0"))
    assert out.returncode == 0, out.stderr[-2000:]
    expected = json.loads(out.stdout.strip().splitlines()[-1])["bpd"]
    assert rows[i]["bpd"] == pytest.approx(expected, rel=1e-6)
  assert rows[0]["recon_rmse"] < 1e-6  # Glow is exactly invertible
  assert rows[1]["recon_rmse"] > 0.0


def test_runs_on_different_data_are_one_line_error(compared, tmp_path):
  workdirs = compared[0]
  config = smoke_config("nvae_quickstart")
  config.binarize, config.model = "dynamic", dict(config.model, binarized=True)
  checkpoints.check_workdir_config(str(tmp_path / "nvae_binary"), config)  # config.json only: refused before restoring
  with pytest.raises(ValueError, match="same data") as e:
    comparison.measure([workdirs[0], str(tmp_path / "nvae_binary")], OPTIONS)
  assert "\n" not in str(e.value)


def test_a_budget_is_checked_before_training(tmp_path):
  configs = [smoke_config(name) for name in RUNS[:2]]
  with pytest.raises(ValueError, match="steps:N or images:N"):
    comparison.train_for_budget(configs, RUNS[:2], "minutes:5", str(tmp_path))
  assert comparison.budget_steps("images:100", 8) == 13 and comparison.budget_steps("steps:7", 8) == 7
  assert not os.listdir(tmp_path)
