"""Train tests: fast compiles for every module here (their subject is the loop's plumbing;
the numerics of the model and its backward passes are tested under XLA's default
optimisations in tests/models). Set through the one switch in tests/conftest.py."""
import pytest


@pytest.fixture(autouse=True, scope="module")
def _fast_compile(fast_compiles):
    yield
