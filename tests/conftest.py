"""Shared test setup: a persistent XLA compilation cache (the suite compiles the same tiny programs many times,
in-process and in subprocesses) and helpers for perturbing zero-initialised parameters."""
import os
import tempfile

# Tiny shapes: compile time dominates, and XLA's optimisation passes cost more than they save (STYLE.md; set in
# the environment so subprocesses of the CLI tests inherit it).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")
# Offline sample-quality classifiers trained by tests (tiny, on mock data) stay out of the user's ~/.cache/jaxgen.
os.environ.setdefault("JAXGEN_CACHE", os.path.join(tempfile.mkdtemp(prefix="jaxgen-test-cache-")))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

CACHE_DIR = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                                  os.path.join(tempfile.gettempdir(), "jaxgen-test-xla-cache"))
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def perturb(tree, scale=0.02, seed=0):
  """tree + scale * N(0, 1) per leaf (float leaves only): zero-initialised layers stop being the identity."""
  leaves, treedef = jax.tree.flatten(tree)
  rngs = jax.random.split(jax.random.key(seed), len(leaves))
  out = [x + scale * jax.random.normal(r, x.shape, x.dtype) if np.issubdtype(x.dtype, np.floating) else x
         for x, r in zip(leaves, rngs)]
  return jax.tree.unflatten(treedef, out)
