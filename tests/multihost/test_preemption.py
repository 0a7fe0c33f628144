"""Two processes launched with the README's command: SIGTERM to one of them, then the death of one of them.

1. `experiments.train --multihost` on 2 processes x 2 CPU devices; SIGTERM to process 1 only once training runs:
   both processes stop after the same step S, exit 0, and save one checkpoint at S.
2. The same command again resumes from S (step S+1 equals an uninterrupted run's); then process 1 is killed
   (SIGKILL): process 0 exits with JAX's "stopped sending heartbeats" error within the --heartbeat_timeout bound,
   and the latest checkpoint still restores.
"""
import json
import os
import re
import signal
import time

import numpy as np
import pytest

from experiments.configs import glow_quickstart
from jaxgen.training import trainer
from tests.multihost import test_multihost as mh

CONFIG = os.path.join(mh.REPO, "experiments", "configs", "glow_quickstart.py")
HEARTBEAT_S = 20  # short, but long enough for a starved process on a busy 2-core machine
# A constant learning rate: the step program does not depend on total_steps, so a shorter reference run matches.
OVERRIDES = dict(batch_size=4, total_steps=1000, log_every=1, eval_every=1000, ckpt_every=2)
OVERRIDES_OPT = dict(schedule="constant", warmup_steps=10)


def train_argv(workdir):
  return (["-m", "experiments.train", f"--config={CONFIG}:smoke", f"--workdir={workdir}",
           f"--heartbeat_timeout={HEARTBEAT_S}"] + [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
          + [f"--config.optimizer.{k}={v}" for k, v in OVERRIDES_OPT.items()])


def logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    rows = [json.loads(line) for line in f if line.endswith("\n")]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def wait_for_step(procs, workdir, step, timeout=mh.TIMEOUT):
  start = time.time()
  while max(logged_steps(workdir), default=0) < step:
    assert all(p.poll() is None for p in procs), "a process ended before training started"
    assert time.time() - start < timeout, f"no step {step} logged in {timeout} s"
    time.sleep(0.2)


def stopped_at(log):
  with open(log) as f:
    found = re.findall(r"SIGTERM.* received: saving step (\d+) and stopping", f.read())
  return [int(s) for s in found]


@pytest.mark.slow
def test_sigterm_to_one_process_then_a_dead_process(tmp_path):
  workdir, log = str(tmp_path / "run"), str(tmp_path / "train")
  procs = mh.launch(train_argv(workdir), 2, 2, log)
  wait_for_step(procs, workdir, 2)
  procs[1].send_signal(signal.SIGTERM)
  mh.wait(procs, log)
  stops = [stopped_at(f"{log}.{i}.log") for i in range(2)]
  assert len(stops[0]) == len(stops[1]) == 1 and stops[0] == stops[1], stops
  stop = stops[0][0]
  assert max(logged_steps(workdir)) == stop
  saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert saved[-1] == stop, saved

  # The same command resumes at stop + 1; then process 1 dies.
  log = str(tmp_path / "resume")
  procs = mh.launch(train_argv(workdir), 2, 2, log)
  wait_for_step(procs, workdir, stop + 2)
  procs[1].kill()
  killed = time.time()
  try:
    rc = procs[0].wait(HEARTBEAT_S + 40)
  finally:
    procs[0].kill()
  waited = time.time() - killed
  with open(f"{log}.0.log") as f:
    err = f.read()
  assert rc != 0 and "stopped sending heartbeats" in err, (rc, err[-2000:])
  print(f"process 0 stopped {waited:.1f} s after process 1 was killed (heartbeat timeout {HEARTBEAT_S} s)")

  # Step stop+1 of the resumed 2-process run equals this process's uninterrupted run (1 device here).
  config = glow_quickstart.get_config("smoke")
  config.update(OVERRIDES)
  config.optimizer.update(OVERRIDES_OPT)
  config.total_steps, config.ckpt_every = stop + 1, 1000
  trainer.train_and_evaluate(config, str(tmp_path / "reference"))
  want, got = logged_steps(str(tmp_path / "reference")), logged_steps(workdir)
  np.testing.assert_allclose([got[s] for s in range(1, stop + 2)], [want[s] for s in range(1, stop + 2)],
                             rtol=1e-4)

  # The last complete checkpoint restores (a save cut short by the death is never the latest).
  config.total_steps = 1000
  _, state = trainer.restore_for_eval(config, workdir)
  assert stop <= int(state["step"]) <= max(logged_steps(workdir)) and trainer.checkpoints.all_finite(state)
