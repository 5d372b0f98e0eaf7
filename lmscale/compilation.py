"""Compile once: JAX's persistent compilation cache, and how much time compiling takes.

`enable_cache(path)` turns on JAX's persistent compilation cache in `path` (the binaries
use `<workdir>/.jax_cache`, or `--compilation_cache_dir`), with both thresholds at zero so
that XLA:CPU's small programs (a tiny model's train step compiles in well under JAX's
default 1 s threshold) are cached too: a rerun, a resumed study or another process with
the same shapes reads the executable back instead of compiling it.

`CompileTimer` sums, through `jax.monitoring`, the time spent tracing, lowering and
compiling (or reading back from the cache) while it is active, and counts persistent
cache hits and misses, so the evaluator can print "compile 12.3 s of 40.1 s":

    with compilation.CompileTimer() as timer:
        ...  # evaluate
    logging.info("evaluate: %s", timer.summary(wall_s))

Imports JAX only inside its functions.
"""

from __future__ import annotations

import os
import time

# jax.monitoring duration events (jax/_src/dispatch.py, compiler.py, jax 0.10).
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
CACHE_MISS_EVENT = "/jax/compilation_cache/cache_misses"
CACHE_DIRNAME = ".jax_cache"


def default_cache_dir(workdir: str) -> str:
    """Where the binaries keep the cache unless told otherwise: `<workdir>/.jax_cache`."""
    return os.path.join(workdir, CACHE_DIRNAME)


def enable_cache(path: str | None) -> str | None:
    """Turns on JAX's persistent compilation cache in `path` ("" or None: leaves it off).

    Call before the first compilation of the process. Returns the directory in use.
    """
    if not path:
        return None
    import jax  # pylint: disable=g-import-not-at-top
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


class CompileTimer:
    """Compile seconds and persistent-cache hits/misses while active (a context manager).

    Attributes:
      compile_s: seconds tracing, lowering and compiling (a cache hit counts its read).
      programs: backend compilations requested (hits included).
      cache_hits, cache_misses: persistent-cache lookups that found / did not find one.
    """

    def __init__(self):
        self.compile_s = 0.0
        self.programs = self.cache_hits = self.cache_misses = 0
        self.start = None
        self.stop = None

    def _on_duration(self, event: str, duration: float, **_) -> None:
        if event in COMPILE_EVENTS:
            self.compile_s += duration
            if event == COMPILE_EVENTS[-1]:
                self.programs += 1

    def _on_event(self, event: str, **_) -> None:
        if event == CACHE_HIT_EVENT:
            self.cache_hits += 1
        elif event == CACHE_MISS_EVENT:
            self.cache_misses += 1

    def __enter__(self) -> "CompileTimer":
        from jax import monitoring  # pylint: disable=g-import-not-at-top
        monitoring.register_event_duration_secs_listener(self._on_duration)
        monitoring.register_event_listener(self._on_event)
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc) -> None:
        from jax import monitoring  # pylint: disable=g-import-not-at-top
        self.stop = time.monotonic()
        monitoring.unregister_event_duration_listener(self._on_duration)
        monitoring.unregister_event_listener(self._on_event)

    def wall_s(self) -> float:
        """Seconds since entering (until exit, once exited)."""
        end = self.stop if self.stop is not None else time.monotonic()
        return 0.0 if self.start is None else end - self.start

    def summary(self, wall_s: float | None = None) -> str:
        """E.g. 'compile 12.3 s of 40.1 s (31%), 24 programs, 20 persistent-cache hits'."""
        wall_s = self.wall_s() if wall_s is None else wall_s
        share = f" ({100 * self.compile_s / wall_s:.0f}%)" if wall_s > 0 else ""
        return (f"compile {self.compile_s:.1f} s of {wall_s:.1f} s{share}, {self.programs} "
                f"programs, {self.cache_hits} persistent-cache hits, {self.cache_misses} "
                f"misses")
