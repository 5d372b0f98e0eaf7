"""Test setup: CPU only, 8 forced host devices, fast compiles.

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

import pytest  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(scope="session")
def shared_data():
    """Path to ../shared/data; tests that need it skip when it is absent."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip("../shared/data is absent (fresh clone)")
    return path
