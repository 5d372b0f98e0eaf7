"""kill -9 of the train binary, repeatedly, including inside a checkpoint write.

The victim is the real `lmscale.main.train` process. It is killed once deterministically
while orbax is writing step 4 (`tests.train.kill_during_save`), then at random moments
(fixed seed) after each restart has made progress, and finally left to finish. Between
kills the test checks what a restart would see on disk.
"""
from tests.conftest import FAST_COMPILE_ENV
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lmscale.train import checkpoints, metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUN = "tiny_s_M0.2"  # tiny_s, 17 steps of 8 x 32 tokens
NUM_STEPS = 17
ARGS = ["--gin_file=experiments/runs/train.gin", "--gin_file=experiments/models/tiny.gin",
        "--gin_bindings=MODEL = @tiny_s/model_config.ModelConfig()",
        "--gin_bindings=TOKEN_MULTIPLIER = 0.2", "--gin_bindings=BATCH_SIZE = 8",
        "--gin_bindings=SEQ_LEN = 32",
        "--gin_bindings=train_loop.LoopConfig.log_every_steps = 1",
        # A save after every step (async): most moments of the run are inside a write.
        "--gin_bindings=train_loop.LoopConfig.save_every_steps = 1",
        "--gin_bindings=train_loop.LoopConfig.checkpoint_every_tokens = 1024",  # 4 steps
        "--gin_bindings=train_loop.LoopConfig.eval_batches = 1",
        "--gin_bindings=train_loop.LoopConfig.peak_flops_per_device = 1e10"]


def _start(workdir, kill_during_save=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **FAST_COMPILE_ENV,
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    binary = ["lmscale.main.train"] if kill_during_save is None else [
        "tests.train.kill_during_save", str(kill_during_save)]
    return subprocess.Popen(
        [sys.executable, "-m", *binary, f"--workdir={workdir}", *ARGS,
         "--console=info"],  # the INFO lines on the console, as asserted below
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _last_step(run_dir):
    steps = [r["step"] for r in metrics.read_metrics(run_dir) if metrics.TRAIN_LOSS in r]
    return max(steps, default=0)


def _committed(run_dir):
    root = run_dir / "checkpoints"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() \
        else []


def _check_disk(run_dir, kept_before):
    """What a restart sees: every committed step verifies; kept eval steps never vanish."""
    steps = _committed(run_dir)
    for step in steps:
        params = checkpoints.restore_params(run_dir, step)  # raises if half-written/garbled
        assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(params))
    kept = set(checkpoints.list_eval_checkpoints(run_dir))
    assert kept_before <= kept, f"evaluation checkpoints lost: {kept_before - kept}"
    return kept


@pytest.mark.slow  # ~3 min on 2 shared cores: 5 process starts plus a reference run
def test_repeated_sigkill_including_mid_save_reproduces_the_uninterrupted_params(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_dir = killed / RUN
    reference = _start(whole)

    # 1. Killed inside orbax's save of step 4: a temporary directory, never a step.
    victim = _start(killed, kill_during_save=4)
    out, _ = victim.communicate(timeout=400)
    assert victim.returncode == -signal.SIGKILL, out[-3000:]
    root = run_dir / "checkpoints"
    assert list(root.glob("4.orbax-checkpoint-tmp*")) and 4 not in _committed(run_dir)
    assert max(_committed(run_dir)) == 3
    kept = _check_disk(run_dir, set())

    # 2. Random kills (fixed seed) once each restart has trained past the last kill.
    rng = np.random.default_rng(0)
    kills, mid_write = 0, 0
    while True:
        progress = _last_step(run_dir)
        victim = _start(killed)
        deadline = time.time() + 400
        while victim.poll() is None and _last_step(run_dir) <= progress:
            assert time.time() < deadline, "restart made no progress"
            time.sleep(0.05)
        if kills < 3 and victim.poll() is None:
            time.sleep(rng.uniform(0.0, 0.3))
        if kills >= 3 or victim.poll() is not None:
            out, _ = victim.communicate(timeout=400)
            assert victim.returncode == 0, out[-3000:]
            break
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        kills += 1
        mid_write += bool(list(root.glob("*orbax-checkpoint-tmp*")))
        assert checkpoints.run_info(run_dir)["status"] == "running"
        kept = _check_disk(run_dir, kept)
    assert "resumed from step" in out
    assert kills == 3, "the run finished before three random kills; lower the delays"

    ref_out, _ = reference.communicate(timeout=400)
    assert reference.returncode == 0, ref_out[-3000:]
    info = checkpoints.run_info(run_dir)
    assert info["status"] == "done" and info["num_steps"] == NUM_STEPS
    assert checkpoints.list_eval_checkpoints(run_dir) == [4, 8, 12, 16, 17]
    assert checkpoints.list_eval_checkpoints(whole / RUN) == [4, 8, 12, 16, 17]
    assert not list(root.glob("*orbax-checkpoint-tmp*"))
    for step in (4, 8, 12, 16, 17):
        a = checkpoints.restore_params(whole / RUN, step)
        b = checkpoints.restore_params(run_dir, step)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    print(f"random kills: {kills}, of which left a checkpoint write unfinished: {mid_write}")
