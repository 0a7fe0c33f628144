"""Shared test setup: the environment every test and subprocess runs in (no optimisation passes, a shared persistent
XLA cache, a private jaxgen cache), an in-memory gs:// filesystem and helpers for perturbing zero-initialised
parameters."""
import atexit
import gc
import os
import shutil
import tempfile

# Tiny shapes: compile time dominates, and XLA's optimisation passes cost more than they save (STYLE.md; set in
# the environment so subprocesses of the CLI tests inherit it).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")
# Offline sample-quality classifiers trained by tests (tiny, on mock data) stay out of the user's ~/.cache/jaxgen.
# Made once, by the process that starts the suite (xdist workers and subprocesses inherit it), and removed at its exit.
if "JAXGEN_CACHE" not in os.environ:
  os.environ["JAXGEN_CACHE"] = tempfile.mkdtemp(prefix="jaxgen-test-cache-")
  atexit.register(shutil.rmtree, os.environ["JAXGEN_CACHE"], ignore_errors=True)

# A persistent XLA compilation cache shared by the xdist workers and every CLI / multi-process subprocess: the suite
# compiles the same programs many times (a resumed run, the four-device reference, a command and its test). In the
# environment (read when jax is imported), so subprocesses use it too; a fixed directory: a second local run starts
# warm.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "jaxgen-test-xla-cache"))
# A size limit turns on JAX's file lock around every cache read and write (jax._src.lru_cache): two processes that
# compile one program (workers, the two-process tests) never read an entry half written.
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(16 * 2**30))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")  # tiny programs: cheaper to compile
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# XLA:CPU's elemental emitters compile the suite's unoptimised programs faster than its default fusion emitters
# (same HLO and math; the GAN's resume test 77 -> 71 s, its bf16 step 74 -> 61 s, ~30% less CPU time).
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_use_fusion_emitters=false".strip()
# The crashes once blamed on this cache (a worker's segfault inside XLA's executable (de)serialisation, 2026-12-01)
# were a worker past vm.max_map_count: see `_release_compiled_programs`.

from etils import epath  # pylint: disable=g-import-not-at-top
import fsspec
from fsspec.implementations import memory
import jax
import numpy as np
import pytest


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops every compiled program after each test module. Each XLA:CPU executable holds a few memory mappings of
  its own (3 for a tiny jit, more for a train step), and an xdist worker that lives through hundreds of modules
  otherwise passes Linux's vm.max_map_count (65,530): its next compile or cache load then dies in a segfault or
  abort inside XLA (seen 2026-12-01 at 34.5k maps half-way through a run, with the crashed worker the other half)."""
  yield
  jax.clear_caches()
  gc.collect()


def perturb(tree, scale=0.02, seed=0):
  """tree + scale * N(0, 1) per leaf (float leaves only): zero-initialised layers stop being the identity."""
  leaves, treedef = jax.tree.flatten(tree)
  rngs = jax.random.split(jax.random.key(seed), len(leaves))
  out = [x + scale * jax.random.normal(r, x.shape, x.dtype) if np.issubdtype(x.dtype, np.floating) else x
         for x, r in zip(leaves, rngs)]
  return jax.tree.unflatten(treedef, out)


class FakeGCS(memory.MemoryFileSystem):
  """gs:// in memory; refuses appends, as object stores do (the `gcs` fixture: tests of run directories and data
  on object stores)."""
  protocol = ("gs", "gcs")
  store, pseudo_dirs = {}, [""]

  def __init__(self, *args, finalize_on_close=None, **kwargs):  # epath passes gcsfs's option
    super().__init__(*args, **kwargs)

  @classmethod
  def _strip_protocol(cls, path):
    for prefix in ("gs://", "gcs://"):
      path = path[len(prefix):] if str(path).startswith(prefix) else path
    return super()._strip_protocol(path)

  def _open(self, path, mode="rb", **kwargs):
    if "a" in mode:
      raise OSError("object stores cannot append")
    return super()._open(path, mode, **kwargs)


@pytest.fixture
def gcs(monkeypatch, tmp_path):
  monkeypatch.setenv("EPATH_USE_TF", "false")  # epath's fsspec backend, not TensorFlow's gfile
  monkeypatch.chdir(tmp_path)  # nothing may land in the working directory (e.g. a local "gs:" folder)
  for protocol in FakeGCS.protocol:
    fsspec.register_implementation(protocol, FakeGCS, clobber=True)
  FakeGCS.store.clear()
  yield epath.Path("gs://bucket/run")
  FakeGCS.store.clear()
  FakeGCS.pseudo_dirs[:] = [""]
  assert os.listdir(tmp_path) == []
