"""lmscale.runtime: with the tuned allocator, freed large buffers are reused, not re-faulted."""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")

# Allocates and frees a 200 MB buffer four times (as XLA:CPU does with an executable's
# temporary buffer each call), from a worker thread as XLA's are, and prints the minor
# page faults of the last three rounds.
_SCRIPT = textwrap.dedent("""
    import ctypes, resource, sys, threading
    from lmscale import runtime
    applied = runtime.tune_host_allocator()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    size = 200 << 20
    faults = []

    def rounds():
        for i in range(4):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            p = libc.malloc(size)
            ctypes.memset(p, 1, size)
            libc.free(p)
            if i:
                faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    t = threading.Thread(target=rounds)
    t.start()
    t.join()
    print(applied, sum(faults))
""")


def _run(env_value):
    env = dict(os.environ, LMSCALE_HOST_ALLOCATOR=env_value)
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_tuned_allocator_reuses_freed_memory():
    pages = 3 * (200 << 20) // 4096
    applied, faults = _run("tuned")
    assert applied
    assert faults < 0.05 * pages, faults
    applied, faults = _run("default")
    assert not applied
    assert faults > 0.5 * pages, faults  # the default glibc behaviour it fixes


def test_quiet_accelerator_probes_only_without_accelerators(monkeypatch):
    from lmscale import runtime
    for var in ("JAX_PLATFORMS", "TF_CPP_MIN_LOG_LEVEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(runtime, "has_accelerator", lambda: True)
    assert runtime.quiet_accelerator_probes() == ""
    assert "JAX_PLATFORMS" not in os.environ and "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    monkeypatch.setattr(runtime, "has_accelerator", lambda: False)
    assert runtime.quiet_accelerator_probes() == "cpu"
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")  # the user's choice stands
    assert runtime.quiet_accelerator_probes() == "cuda"
