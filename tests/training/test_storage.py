"""Run directories on object stores: config.json, metrics.jsonl, TensorBoard events and sample PNGs go through
etils.epath, tested on an in-memory `gs://` filesystem (the `gcs` fixture of tests/conftest.py) that, like GCS,
cannot append. Orbax writes arrays through tensorstore, which has no such fake: checkpoints are tested through epath
on local paths only."""
import io
import json

from etils import epath
import ml_collections
import numpy as np
from PIL import Image
import pytest

from jaxgen.training import checkpoints
from jaxgen.training import writers


def _config(width):
  config = ml_collections.ConfigDict()
  config.model_name, config.model = "flows.glow", dict(hidden_channels=width)
  return config


def test_config_json_on_gcs_is_written_once_and_guards_the_model(gcs):
  checkpoints.check_workdir_config(str(gcs), _config(8))
  assert json.loads((gcs / "config.json").read_text())["model"] == {"hidden_channels": 8}
  assert not (gcs / "config.json.tmp").exists()
  checkpoints.check_workdir_config(str(gcs), _config(8))  # same model: resumes
  with pytest.raises(checkpoints.CheckpointError, match="different model"):
    checkpoints.check_workdir_config(str(gcs), _config(16))


def test_conv_impl_is_not_part_of_the_models_identity(tmp_path):
  """A run trained without naming conv_impl (a notebook, an older jaxgen) resumes under the command line's
  conv_impl=auto or a forced native / matmul; a different width is still refused."""
  checkpoints.check_workdir_config(str(tmp_path), _config(8))
  for impl in ("auto", "native", "matmul"):
    config = _config(8)
    config.model.conv_impl = impl
    checkpoints.check_workdir_config(str(tmp_path), config)
  config = _config(16)
  config.model.conv_impl = "auto"
  with pytest.raises(checkpoints.CheckpointError, match="different model"):
    checkpoints.check_workdir_config(str(tmp_path), config)


def test_metrics_tensorboard_and_samples_on_gcs(gcs):
  writer = writers.MetricWriter(str(gcs))
  writer.write(1, {"train/loss": 2.5})
  writer.write(2, {"train/loss": 2.0, "eval/bpd": np.float32(3.0)})
  writer.close()
  writer = writers.MetricWriter(str(gcs))  # a resumed run keeps the rows before it
  writer.write(3, {"train/loss": 1.5})
  writer.close()
  rows = [json.loads(line) for line in (gcs / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3] and rows[1]["eval/bpd"] == 3.0
  events = list((gcs / "tensorboard").iterdir())
  assert events and all(b"train/loss" in e.read_bytes() for e in events)  # one file per second and host

  picture = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
  writers.save_png(str(gcs / "samples" / "step_1.png"), picture, scale=2)
  png = Image.open(io.BytesIO((gcs / "samples" / "step_1.png").read_bytes()))
  np.testing.assert_array_equal(np.asarray(png), picture.repeat(2, 0).repeat(2, 1))


def test_local_metrics_are_appended_not_rewritten(tmp_path):
  writer = writers.MetricWriter(tmp_path)
  writer.write(1, {"train/loss": 1.0})
  (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n' + (tmp_path / "metrics.jsonl").read_text())
  writer.write(2, {"train/loss": 0.5})  # appends after what is on disk now
  writer.close()
  assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]


def test_checkpointer_takes_relative_and_epath_workdirs(tmp_path, monkeypatch):
  import jax.numpy as jnp
  monkeypatch.chdir(tmp_path)
  checkpointer = checkpoints.Checkpointer(epath.Path("run"), keep=1)
  assert checkpointer.directory == epath.Path(tmp_path) / "run" / "checkpoints"  # absolute, as orbax needs
  state = {"step": jnp.asarray(3), "w": jnp.ones((2,))}
  assert checkpointer.save(state)
  checkpointer.close()
  restored = checkpoints.Checkpointer("run").restore(state)
  assert int(restored["step"]) == 3 and np.all(restored["w"] == 1)
