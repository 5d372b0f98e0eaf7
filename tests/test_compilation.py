"""The persistent compilation cache serves a second process; compile time is measured."""
import json
import os
import pathlib
import subprocess
import sys

from lmscale import compilation

ROOT = pathlib.Path(__file__).resolve().parents[1]

_CHILD = """
import json, sys
from lmscale import compilation
cache = compilation.enable_cache(sys.argv[1])
import jax, jax.numpy as jnp
with compilation.CompileTimer() as timer:
    jax.jit(lambda x: jnp.tanh(x @ x.T).sum() * 3.0)(jnp.ones((16, 16))).block_until_ready()
print(json.dumps(dict(cache=cache, hits=timer.cache_hits, misses=timer.cache_misses,
                      programs=timer.programs, compile_s=timer.compile_s,
                      summary=timer.summary())))
"""


def _child(cache_dir):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(cache_dir)], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_reads_the_executable_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    cold = _child(cache)
    assert cold["cache"] == str(cache) and cold["programs"] >= 1
    assert cold["misses"] >= 1 and cold["hits"] == 0 and cold["compile_s"] > 0
    entries = sorted(p.name for p in cache.iterdir())
    assert any(name.startswith("jit__lambda") for name in entries), entries
    warm = _child(cache)
    assert warm["hits"] == cold["misses"] and warm["misses"] == 0, (cold, warm)
    assert sorted(p.name for p in cache.iterdir()) == entries  # nothing new compiled
    assert warm["summary"].startswith("compile ") and " persistent-cache hits" in \
        warm["summary"]


def test_cache_off_and_default_place():
    assert compilation.enable_cache("") is None and compilation.enable_cache(None) is None
    assert compilation.default_cache_dir("/w") == "/w/.jax_cache"
    timer = compilation.CompileTimer()
    timer.compile_s, timer.programs = 3.0, 2
    assert timer.summary(12.0).startswith("compile 3.0 s of 12.0 s (25%), 2 programs")
