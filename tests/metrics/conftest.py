"""Compile with most XLA optimisations off while these tests run (STYLE.md: JAX_DISABLE_MOST_OPTIMIZATIONS):
the StyleGAN2 step functions compile 3-4x faster and the tiny shapes run fast either way. Restored afterwards."""
import jax
import pytest


@pytest.fixture(autouse=True, scope="package")
def _fast_compile():
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)
