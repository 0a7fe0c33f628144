"""The trainer end to end on the shipped digits with a tiny Glow: learning, exact resume, sharding, CLI, errors."""
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from experiments.configs import glow_quickstart
from jaxgen.training import checkpoints
from jaxgen.training import steps
from jaxgen.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = "experiments/configs/glow_quickstart.py:smoke"


def tiny_config(**overrides):
  config = glow_quickstart.get_config("smoke")
  config.optimizer = dict(name="adam", lr=3e-3, warmup_steps=0)
  config.eval_every = config.ckpt_every = 1000
  config.log_every = 1
  for key, value in overrides.items():
    config[key] = value
  return config


def read_metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def tensorboard_images(workdir):
  """{(tag, step): (height, width)} of the image summaries in workdir's TensorBoard event files (TFRecord framing:
  length uint64, its crc, the Event proto, its crc)."""
  from tensorboardX.proto import event_pb2
  found = {}
  for name in os.listdir(os.path.join(workdir, "tensorboard")):
    with open(os.path.join(workdir, "tensorboard", name), "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      for value in event.summary.value:
        if value.HasField("image"):
          found[(value.tag, event.step)] = (value.image.height, value.image.width)
  return found


def train_losses(workdir):
  return {r["step"]: r["train/loss"] for r in read_metrics(workdir) if "train/loss" in r}


def run_cli(*args, env=None, timeout=300):
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, **(env or {})})


def test_training_lowers_the_loss_and_writes_everything(tmp_path):
  config = tiny_config(total_steps=30)
  config.eval_every = config.ckpt_every = 30
  trainer.train_and_evaluate(config, str(tmp_path))
  losses = train_losses(tmp_path)
  assert np.mean([losses[s] for s in range(26, 31)]) < np.mean([losses[s] for s in range(1, 6)]) - 0.5
  rows = read_metrics(tmp_path)
  assert {"train/bpd", "train/grad_norm", "train/lr", "train/skipped_updates", "perf/images_per_sec"} <= set(rows[-2])
  assert any("eval/bpd" in r for r in rows)
  assert os.listdir(tmp_path / "samples") and os.listdir(tmp_path / "tensorboard")
  grid = np.asarray(Image.open(tmp_path / "samples" / "step_00000030.png"))
  assert tensorboard_images(tmp_path) == {("samples", 30): (grid.shape[0] // 2, grid.shape[1] // 2)}  # PNG: 2x
  assert checkpoints.Checkpointer(str(tmp_path)).latest_step() == 30


def test_resume_is_identical_to_uninterrupted_training(tmp_path):
  whole, split = str(tmp_path / "whole"), str(tmp_path / "split")
  final_whole = trainer.train_and_evaluate(tiny_config(total_steps=6), whole)
  trainer.train_and_evaluate(tiny_config(total_steps=3), split)
  final_split = trainer.train_and_evaluate(tiny_config(total_steps=6), split)  # resumes at step 3
  assert train_losses(whole) == train_losses(split)
  jax.tree.map(np.testing.assert_array_equal, final_whole, final_split)


SHARDED_SCRIPT = """
import json, sys
from experiments.configs import glow_quickstart
from jaxgen.training import trainer
import jax
config = glow_quickstart.get_config("smoke")
config.optimizer = dict(name="adam", lr=3e-3, warmup_steps=0)
config.total_steps, config.log_every, config.eval_every, config.ckpt_every = 3, 1, 3, 1000
state = trainer.train_and_evaluate(config, sys.argv[1])
norm = float(sum((x ** 2).sum() for x in jax.tree.leaves(state["params"])))
print(json.dumps({"devices": jax.device_count(), "norm": norm}))
"""


def test_four_device_run_matches_one_device(tmp_path):
  config = tiny_config(total_steps=3)
  config.eval_every = 3
  state = trainer.train_and_evaluate(config, str(tmp_path / "one"))
  out = run_cli("-c", SHARDED_SCRIPT, str(tmp_path / "four"),
                env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"})
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["devices"] == 4
  one, four = train_losses(tmp_path / "one"), train_losses(tmp_path / "four")
  np.testing.assert_allclose([four[s] for s in (1, 2, 3)], [one[s] for s in (1, 2, 3)], rtol=1e-5)
  eval_one = [r["eval/bpd"] for r in read_metrics(tmp_path / "one") if "eval/bpd" in r]
  eval_four = [r["eval/bpd"] for r in read_metrics(tmp_path / "four") if "eval/bpd" in r]
  np.testing.assert_allclose(eval_four, eval_one, rtol=1e-5)
  norm = float(sum((x ** 2).sum() for x in jax.tree.leaves(state["params"])))
  np.testing.assert_allclose(result["norm"], norm, rtol=1e-5)


def test_cli_trains_evaluates_and_samples(tmp_path):
  workdir = str(tmp_path / "run")
  out = run_cli("-m", "experiments.train", f"--config={SMOKE}", f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "ETA" in out.stderr  # progress on the console
  rows = read_metrics(workdir)
  assert rows[0]["step"] == 1 and "train/loss" in rows[0] and any("eval/bpd" in r for r in rows)
  assert any(f.endswith(".png") for f in os.listdir(os.path.join(workdir, "samples")))
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "3"))
  out = run_cli("-m", "experiments.evaluate", f"--config={SMOKE}", f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["num_examples"] == 2000 and 0 < result["bpd"] < 10  # the whole bundled test split
  out = run_cli("-m", "experiments.sample", f"--config={SMOKE}", f"--workdir={workdir}", "--config.figures.num=3",
                "--config.figures.pairs=2")
  assert out.returncode == 0, out.stderr[-3000:]
  for name in ("temperatures.png", "temperature_0.png", "temperature_1.png", "interpolations.png"):
    assert os.path.exists(os.path.join(workdir, "samples", name)), name


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path):
  config = tiny_config(total_steps=100_000)
  workdir = str(tmp_path)

  def send_sigterm_once_training():
    while not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
      time.sleep(0.05)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=send_sigterm_once_training, daemon=True).start()
  state = trainer.train_and_evaluate(config, workdir)
  step = int(state["step"])
  assert 0 < step < 100_000
  assert checkpoints.Checkpointer(workdir).latest_step() == step


# --- bad input: one clear error that names the fix, before any compute -------------------------------------------

@pytest.mark.parametrize("overrides, error, message", [
    ({"dataset": "no_such_dataset"}, ValueError, "Unknown dataset"),
    ({"dataset": "mnist", "data_dir": "{tmp}"}, FileNotFoundError, "data_dir"),
    ({"model": dict(image_shape=(28, 28, 1), levels=3, depth=1, hidden_channels=4)}, ValueError,
     "divisible by 2\\*\\*levels"),
    ({"model": dict(image_shape=(32, 32, 1), levels=2, depth=1, hidden_channels=4)}, ValueError,
     "set --config.model.image_shape"),
    ({"model": dict(image_shape=(28, 28, 1), levels=2, depth=1, hidden_chanels=4)}, ValueError,
     "Unknown config.model key"),
    ({"model_name": "flows.nope"}, ValueError, "names no module"),
    ({"optimizer": dict(name="adam", learning_rate=1e-3)}, ValueError, "Unknown config.optimizer key"),
    ({"batch_size": 0}, ValueError, "must be positive"),
    ({"xla_cpu_options": {"xla_cpu_experimental_ynn_fusion_type": "DOT"}}, ValueError, "xla_cpu_options"),
])
def test_bad_config_fails_fast_with_a_clear_error(tmp_path, overrides, error, message):
  overrides = {k: (v.format(tmp=tmp_path) if isinstance(v, str) else v) for k, v in overrides.items()}
  config = tiny_config(**overrides)
  start = time.perf_counter()
  with pytest.raises(error, match=message):
    trainer.setup(config)
  assert time.perf_counter() - start < 10  # no compilation happened


def test_cli_reports_unknown_config_key_in_one_line(tmp_path):
  out = run_cli("-m", "experiments.train", f"--config={SMOKE}", f"--workdir={tmp_path}", "--config.no_such_key=1")
  assert out.returncode != 0
  assert "no_such_key" in out.stderr and "Traceback" not in out.stderr


def test_cli_reports_bad_config_in_one_line(tmp_path):
  out = run_cli("-m", "experiments.train", f"--config={SMOKE}", f"--workdir={tmp_path}", "--config.dataset=nope")
  assert out.returncode != 0
  assert out.stderr.strip().splitlines()[-1].startswith("error: Unknown dataset 'nope'")
  # data_dir can be overridden from the command line, and missing TFDS data says where it looked and what to pass.
  out = run_cli("-m", "experiments.train", f"--config={SMOKE}", f"--workdir={tmp_path}", "--config.dataset=mnist",
                f"--config.data_dir={tmp_path / 'empty'}")
  assert out.returncode != 0
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("error: TFDS dataset 'mnist' is not prepared") and "--config.data_dir" in last


def test_checkpoint_of_another_model_is_refused(tmp_path):
  trainer.train_and_evaluate(tiny_config(total_steps=1), str(tmp_path))
  other = tiny_config(total_steps=2, model=dict(image_shape=(28, 28, 1), levels=2, depth=2, hidden_channels=16))
  with pytest.raises(checkpoints.CheckpointError, match="different model"):
    trainer.train_and_evaluate(other, str(tmp_path))


def test_corrupt_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
  trainer.train_and_evaluate(tiny_config(total_steps=1), str(tmp_path))
  for root, _, files in os.walk(tmp_path / "checkpoints" / "1"):
    for name in files:
      if name.startswith("ocdbt") or root.endswith("d"):
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"garbage")
  with pytest.raises(checkpoints.CheckpointError, match="could not be read|does not match"):
    trainer.train_and_evaluate(tiny_config(total_steps=2), str(tmp_path))


# --- non-finite updates -------------------------------------------------------------------------------------------

def test_non_finite_updates_are_skipped_counted_and_stop_the_run(tmp_path):
  s = trainer.setup(tiny_config())
  state = s.init()
  poisoned = jax.tree_util.tree_map_with_path(
      lambda path, x: x.at[0].set(jnp.inf) if "top" in jax.tree_util.keystr(path) else x, state["params"])
  state = {**state, "params": poisoned}
  batch = s.batch(s.train_data.get(np.arange(s.config.batch_size)))
  new_state, metrics = jax.jit(lambda st, b: steps.train_step(st, b, jax.random.key(0), model=s.model, tx=s.tx,
                                                               config=s.config))(state, batch)
  assert int(new_state["skipped_updates"]) == 1 and int(metrics["consecutive_skips"]) == 1
  jax.tree.map(np.testing.assert_array_equal, new_state["params"], state["params"])  # unchanged
  assert int(new_state["step"]) == 1
  with pytest.raises(FloatingPointError, match="in a row"):
    trainer._checked({"consecutive_skips": s.config.max_consecutive_skips}, s.config)
  checkpointer = checkpoints.Checkpointer(str(tmp_path))
  assert not checkpointer.save(new_state)  # a non-finite state is never written
  assert checkpointer.latest_step() is None
  checkpointer.close()


def test_updates_with_a_gradient_norm_above_skip_grad_norm_are_skipped():
  s = trainer.setup(tiny_config(skip_grad_norm=1e-6))
  state = s.init()
  batch = s.batch(s.train_data.get(np.arange(s.config.batch_size)))
  def step(st, b, cfg):
    return jax.jit(lambda st, b: steps.train_step(st, b, jax.random.key(0), model=s.model, tx=s.tx, config=cfg))(st, b)

  skipped, metrics = step(state, batch, s.config)
  assert float(metrics["grad_norm"]) > 1e-6 and int(skipped["skipped_updates"]) == 1
  jax.tree.map(np.testing.assert_array_equal, skipped["params"], state["params"])
  applied, _ = step(state, batch, trainer.with_defaults(tiny_config(skip_grad_norm=1e9)))
  assert int(applied["skipped_updates"]) == 0
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), applied["params"], state["params"])
  assert any(jax.tree.leaves(changed))


def test_xla_cpu_options_reach_the_compiled_train_step():
  s = trainer.setup(tiny_config(xla_cpu_options={"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}))
  state = s.init()
  batch = s.batch(s.train_data.get(np.arange(s.config.batch_size)))
  with s.config.unlocked():  # swapped after the check in setup: the step must pass it to XLA, which refuses it
    s.config.xla_cpu_options = {"xla_cpu_experimental_ynn_fusion_type": "NOT_AN_ENUM_VALUE"}
  with pytest.raises(Exception, match="NOT_AN_ENUM_VALUE"):
    s.train_step.lower(state, batch, jax.random.key(0)).compile()
