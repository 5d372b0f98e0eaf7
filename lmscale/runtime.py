"""Process-level settings of the host runtime: glibc's allocator for XLA:CPU, and quiet
start-up on a machine without accelerators (`quiet_accelerator_probes`).

XLA:CPU allocates each executable's temporary buffer (162 MB for the d_model 256 benchmark
step of `tools/bench_train.py`) with `malloc` on every call. glibc serves an allocation that
large with a fresh `mmap` and unmaps it on `free`, so every step faults in and zeroes every
page again: 40,500 minor page faults and ~100 ms of kernel time per 270 ms step on this
2-core machine. `tune_host_allocator()` keeps freed memory in the process instead (one
arena, no mmap-backed chunks, no trimming): the same step then takes ~190 ms with ~4,000
faults (docs/performance.md). The cost: the process's resident memory stays at its peak,
and all threads share one malloc arena (no contention was measurable here).

Call it first thing in a process, before JAX starts its CPU client: the allocator's arena
limit is read when threads first allocate. The binaries (`lmscale.main.*`) and the
benchmarks call it; set `LMSCALE_HOST_ALLOCATOR=default` to leave glibc as it is.
Nothing happens on non-glibc systems.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import platform

# mallopt parameters, glibc <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_INT_MAX = 2**31 - 1

_applied = False


def tune_host_allocator() -> bool:
    """Makes glibc keep freed memory for reuse; returns whether the settings are in force.

    Idempotent. Returns False (changing nothing) when disabled by
    `LMSCALE_HOST_ALLOCATOR=default`, off Linux, or when libc has no `mallopt`.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("LMSCALE_HOST_ALLOCATOR", "tuned") == "default":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = (mallopt(_M_ARENA_MAX, 1) == 1 and mallopt(_M_MMAP_MAX, 0) == 1
          and mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1)
    _applied = ok
    return ok


# Device files whose presence means an accelerator JAX could use.
_ACCELERATOR_DEVICES = ("/dev/nvidiactl", "/dev/nvidia[0-9]*", "/dev/kfd", "/dev/accel[0-9]*",
                        "/dev/vfio/[0-9]*")


def has_accelerator() -> bool:
    """Whether this host shows a GPU (NVIDIA, AMD) or TPU device file."""
    return any(glob.glob(pattern) for pattern in _ACCELERATOR_DEVICES)


def quiet_accelerator_probes() -> str:
    """On a host without accelerators, keeps JAX and TensorFlow from probing for them.

    Only when `has_accelerator()` is False, and leaving values already set alone:
    `JAX_PLATFORMS=cpu` (JAX's documented platform choice: no TPU or GPU backend is tried,
    so no "Unable to initialize backend 'tpu'" line), and `TF_CPP_MIN_LOG_LEVEL=3`
    (TensorFlow, which only feeds data here, logs "failed call to cuInit" at error level
    when its CUDA build finds no driver; its Python errors are unaffected). Call it before
    JAX or TensorFlow is imported. Returns the platform setting in force ("" = JAX's
    default search).
    """
    if not has_accelerator():
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return os.environ.get("JAX_PLATFORMS", "")
