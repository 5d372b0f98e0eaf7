"""Test setup: CPU only, 8 forced host devices; fast compiles only where a test opts in.

The environment must be set before JAX is imported anywhere, so it lives at the top
of the root conftest.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from lmscale import runtime  # noqa: E402

runtime.tune_host_allocator()  # as the binaries do, before JAX starts its CPU threads

import pathlib  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_data():
    """Path to ../shared/data; tests that need it skip when it is absent."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is absent (fresh clone)")
    return path


# The one switch for XLA's fast-compile mode (most optimisations off). Tests run under
# XLA's default optimisations, as users and the benchmarks do; a module whose subject is
# not numerics (plumbing, many tiny shapes) opts in with
#   pytestmark = pytest.mark.usefixtures("fast_compiles")
# and a test that starts a binary passes `fast_compile_env` into the child's environment.
# The correctness tests of the model and its hand-written backward passes
# (tests/models/test_decoder.py, tests/models/test_ops.py) never opt in.
FAST_COMPILE_ENV = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}


@pytest.fixture(scope="module")
def fast_compiles():
    """XLA without most optimisations for one module (compiles dominate its time)."""
    old = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture(scope="session")
def fast_compile_env():
    """Environment entries that put a child process (a binary under test) in fast-compile mode."""
    return dict(FAST_COMPILE_ENV)
