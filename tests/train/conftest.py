"""Train tests: fast compiles (flax examples/lm1b/train_test.py does the same)."""
import jax
import pytest


@pytest.fixture(autouse=True, scope="session")
def _fast_compile():
    jax.config.update("jax_disable_most_optimizations", True)
