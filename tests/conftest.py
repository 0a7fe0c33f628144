"""Shared test setup: the environment every test and subprocess runs in (no optimisation passes, a private jaxgen
cache), an in-memory gs:// filesystem and helpers for perturbing zero-initialised parameters."""
import os
import tempfile

# Tiny shapes: compile time dominates, and XLA's optimisation passes cost more than they save (STYLE.md; set in
# the environment so subprocesses of the CLI tests inherit it).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")
# Offline sample-quality classifiers trained by tests (tiny, on mock data) stay out of the user's ~/.cache/jaxgen.
os.environ.setdefault("JAXGEN_CACHE", os.path.join(tempfile.mkdtemp(prefix="jaxgen-test-cache-")))

from etils import epath  # pylint: disable=g-import-not-at-top
import fsspec
from fsspec.implementations import memory
import jax
import numpy as np
import pytest

# No persistent XLA compilation cache: with one shared by the workers and subprocesses, three suite runs in a row
# (2026-12-01, jax 0.10.2) lost a worker to a crash inside XLA while it serialised or deserialised a cached
# executable (segfault / abort in compilation_cache.put_executable_and_time / get_executable_and_time), with the
# cache's file lock on, and xdist then hung. A user may still set JAX_COMPILATION_CACHE_DIR for a local warm loop.


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
