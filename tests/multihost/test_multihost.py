"""Two processes x 2 CPU devices on localhost against one process with 4 devices (and 1), for every family.

One launch set trains all four :smoke configs (tests/multihost/child.py), so each topology starts Python, JAX and
the compilation once:
  A   2 processes x 2 devices: 3 steps from scratch, checkpoints at 2 and 3
  B   1 process x 4 devices:   the same 3 steps (the reference), then step 3 resumed from A's step-2 checkpoint
  C   1 process x 1 device:    step 3 resumed from A's step-2 checkpoint (concurrently with B)
  D   2 processes x 2 devices: step 3 resumed from B's step-2 checkpoint
C and D run Glow only (RESUMED_ELSEWHERE).

Measured 2026-11-30 (2 x 2 against 1 x 4, max relative difference of every train metric at steps 1-3 / the step-3
evaluation): Glow 1.2e-7 / 0, NVAE 1.7e-7 / 4.1e-7, StyleGAN2 1.8e-7 / 4.1e-6 (FID/KID), LMConv 1.2e-7 / 1.8e-7;
resumed 2 x 2 -> 1 x 4 within 1.8e-7 for all four, Glow 2 x 2 -> 1 x 1 within 1.1e-7.
"""
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHILD = os.path.join(REPO, "tests", "multihost", "child.py")
ALL_FAMILIES = {"glow": "glow_quickstart", "nvae": "nvae_quickstart", "stylegan2": "stylegan2_quickstart",
                "lmconv": "lmconv_quickstart"}
# The suite's time budget (15 min on 2 cores) affords Glow and NVAE (global BatchNorm statistics): about 2.5 CPU
# minutes cold. StyleGAN2 (~5 CPU minutes: its 4-device step is a "very slow compile") and LMConv (~1.5) run with
# JAXGEN_MULTIHOST_FAMILIES=all (or a comma list); all four agreed on 2026-11-30 (figures in the module docstring).
_CHOSEN = os.environ.get("JAXGEN_MULTIHOST_FAMILIES", "glow,nvae")
FAMILIES = {f: c for f, c in ALL_FAMILIES.items() if _CHOSEN == "all" or f in _CHOSEN.split(",")}
# batch 4 = one example per device; 3 steps; checkpoints at 2 and 3; eval and samples at 3.
OVERRIDES = {"batch_size": 4, "total_steps": 3, "log_every": 1, "eval_every": 3, "ckpt_every": 2}
TIMEOUT = 1200  # per launch; a cold compilation cache on a busy 2-core machine needs minutes
# Runs C and D compile every program again (C for 1 device; D's process 1 finds no cache entry): one family keeps
# them cheap. Every family resumes 2x2 -> 1x4 in B, whose programs are compiled already.
RESUMED_ELSEWHERE = ("glow",)


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def child_env(devices):
  # Cache settings for every program where the user set JAX_COMPILATION_CACHE_DIR (tests/conftest.py sets none).
  # (jax_share_binary_between_hosts, process 0 compiling for both, left process 1 waiting until gloo's 30 s
  # deadline passed in orbax's first collective: each process compiles its own programs.)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
  return env


def launch(argv, processes, devices, log):
  """Starts `processes` copies of argv (python arguments) joined through --multihost on localhost; -> [Popen]."""
  flags = []
  if processes > 1:
    flags = ["--multihost", f"--coordinator_address=127.0.0.1:{free_port()}", f"--num_processes={processes}"]
  out = []
  for i in range(processes):
    extra = flags + [f"--process_id={i}"] if flags else []
    out.append(subprocess.Popen([sys.executable] + argv + extra, cwd=REPO, env=child_env(devices),
                                stdout=subprocess.DEVNULL, stderr=open(f"{log}.{i}.log", "w")))
  return out


def wait(procs, log, timeout=TIMEOUT):
  for i, p in enumerate(procs):
    try:
      rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      rc = "timeout"
    if rc != 0:
      with open(f"{log}.{i}.log") as f:
        raise AssertionError(f"process {i} of {log} ended with {rc}:\n{f.read()[-4000:]}")


def start_jobs(root, name, jobs, processes, devices):
  spec = os.path.join(root, f"{name}.json")
  with open(spec, "w") as f:
    json.dump({"jobs": jobs, "record": os.path.join(root, name)}, f)
  return launch([CHILD, spec], processes, devices, os.path.join(root, name))


def records(root, name, processes):
  out = []
  for i in range(processes):
    with open(os.path.join(root, f"{name}.{i}.json")) as f:
      out.append(json.load(f))
  return out


def job(root, run, family):
  return {"config": f"experiments/configs/{FAMILIES[family]}.py:smoke", "workdir": os.path.join(root, run, family),
          "overrides": OVERRIDES}


def copy_at_step_2(src, dst):
  """A copy of run `src` as it was after step 2: checkpoint 2, nothing logged (so dst's log is its own)."""
  shutil.copytree(src, dst, ignore=shutil.ignore_patterns("metrics.jsonl", "tensorboard", "samples"))
  shutil.rmtree(os.path.join(dst, "checkpoints", "3"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Runs A, B, C, D for every family; -> (root, {run: [record of each process]})."""
  root = str(tmp_path_factory.mktemp("multihost"))
  start, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
  wait(start_jobs(root, "A", [job(root, "A", f) for f in FAMILIES], 2, 2), os.path.join(root, "A"))
  for family in FAMILIES:
    copy_at_step_2(os.path.join(root, "A", family), os.path.join(root, "B_from_A", family))
    if family in RESUMED_ELSEWHERE:
      copy_at_step_2(os.path.join(root, "A", family), os.path.join(root, "C", family))
  b = start_jobs(root, "B", [job(root, "B", f) for f in FAMILIES] + [job(root, "B_from_A", f) for f in FAMILIES],
                 1, 4)
  c = start_jobs(root, "C", [job(root, "C", f) for f in RESUMED_ELSEWHERE], 1, 1)
  wait(b, os.path.join(root, "B"))
  wait(c, os.path.join(root, "C"))
  for family in RESUMED_ELSEWHERE:
    copy_at_step_2(os.path.join(root, "B", family), os.path.join(root, "D", family))
  wait(start_jobs(root, "D", [job(root, "D", f) for f in RESUMED_ELSEWHERE], 2, 2), os.path.join(root, "D"))
  used = resource.getrusage(resource.RUSAGE_CHILDREN)
  print(f"runs A-D: {time.perf_counter() - start:.0f} s wall, "
        f"{used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime:.0f} s CPU in the child processes")
  return root, {"A": records(root, "A", 2), "B": records(root, "B", 1), "C": records(root, "C", 1),
                "D": records(root, "D", 2)}


def metrics(root, run, family, prefix="train/"):
  """{step: {key: value}} of the run's metrics.jsonl rows, keys starting with `prefix`."""
  out = {}
  with open(os.path.join(root, run, family, "metrics.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      values = {k: v for k, v in row.items() if k.startswith(prefix)}
      if values:
        assert row["step"] not in out, f"step {row['step']} of {run}/{family} logged twice"
        out[row["step"]] = values
  return out


def assert_close(got, want, rtol, what):
  assert set(got) == set(want), (what, sorted(got), sorted(want))
  for key in want:
    np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=1e-6, err_msg=f"{what}: {key}")


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_two_processes_train_as_one_process(runs, family):
  """Every train metric of steps 1-3 and the evaluation at step 3: 2 processes x 2 devices == 1 process x 4."""
  root, _ = runs
  two, one = metrics(root, "A", family), metrics(root, "B", family)
  assert sorted(two) == sorted(one) == [1, 2, 3]
  for step in (1, 2, 3):
    assert_close(two[step], one[step], 1e-5, f"{family} step {step}")
  assert_close(metrics(root, "A", family, "eval/")[3], metrics(root, "B", family, "eval/")[3], 1e-5, f"{family} eval")


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoints_resume_across_topologies(runs, family):
  """Step 3 resumed from a 2x2 checkpoint under 1x4 (and, for RESUMED_ELSEWHERE, under 1x1, and from a 1x4
  checkpoint under 2x2) equals the uninterrupted 1x4 run (1 device sums in another order: a looser tolerance)."""
  root, _ = runs
  want = metrics(root, "B", family)[3]
  elsewhere = (("D", 1e-5), ("C", 1e-4)) if family in RESUMED_ELSEWHERE else ()
  for run, rtol in (("B_from_A", 1e-5),) + elsewhere:
    got = metrics(root, run, family)
    assert sorted(got) == [3], (run, sorted(got))
    assert_close(got[3], want, rtol, f"{family} step 3 resumed in {run}")


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_each_process_reads_only_its_rows(runs, family):
  """Every train batch (and every eval batch of the likelihood families) a process reads is its half of the batch
  the 1-process run reads: the two halves have the same size and together make that batch."""
  root, recs = runs
  workdir = os.path.join(root, "A", family)
  p0, p1 = (r[workdir] for r in recs["A"])
  ref = recs["B"][0][os.path.join(root, "B", family)]
  splits = ("train",) if family == "stylegan2" else ("train", "eval")  # the GAN's FID reads the whole split
  for split in splits:
    assert len(p0[split]) == len(p1[split]) == len(ref[split]) > 0, split
    for rows0, rows1, rows in zip(p0[split], p1[split], ref[split]):  # each sorted by child.py
      assert len(rows0) == len(rows1) == len(rows) // 2 and sorted(rows0 + rows1) == rows, (split, rows0, rows1, rows)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_only_process_0_writes(runs, family):
  """metrics.jsonl has each step once, TensorBoard one event file, and only process 0 saved PNGs."""
  root, recs = runs
  workdir = os.path.join(root, "A", family)
  p0, p1 = (r[workdir] for r in recs["A"])
  metrics(root, "A", family)  # raises on a step logged twice
  assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 1
  assert p0["png"] and not p1["png"], (p0["png"], p1["png"])
