"""Shared fixtures of the eval tests."""

import jax
import pytest


@pytest.fixture(scope="module")
def fast_compiles():
    """XLA without most optimisations for one module (compiles dominate these tests)."""
    old = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)
