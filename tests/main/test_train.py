"""The train binary: a SIGKILLed run resumes to bit-identical parameters; bad flags fail early."""
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
ARGS = ["--gin_file=experiments/runs/train.gin", "--gin_file=experiments/models/tiny.gin",
        "--gin_bindings=MODEL = @tiny_s/model_config.ModelConfig()",
        "--gin_bindings=TOKEN_MULTIPLIER = 0.2", "--gin_bindings=BATCH_SIZE = 8",
        "--gin_bindings=SEQ_LEN = 32",
        "--gin_bindings=train_loop.LoopConfig.log_every_steps = 1",
        "--gin_bindings=train_loop.LoopConfig.save_every_steps = 2",
        "--gin_bindings=train_loop.LoopConfig.eval_batches = 1",
        "--gin_bindings=train_loop.LoopConfig.peak_flops_per_device = 1e10"]


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu", **FAST_COMPILE_ENV,
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    return env


def _start(workdir, extra=()):
    return subprocess.Popen(
        [sys.executable, "-m", "lmscale.main.train", f"--workdir={workdir}", *ARGS,
         "--console=info", *extra],  # the INFO lines on the console, as asserted below
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _last_step(run_dir):
    steps = [r["step"] for r in metrics.read_metrics(run_dir) if metrics.TRAIN_LOSS in r]
    return max(steps, default=0)


@pytest.mark.slow
def test_sigkill_and_restart_reproduces_the_uninterrupted_params(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    reference = _start(whole)
    victim = _start(killed)
    kill_after = 7
    deadline = time.time() + 400
    while _last_step(killed / RUN) < kill_after:
        assert victim.poll() is None, victim.communicate()[0][-3000:]
        assert time.time() < deadline, "victim never reached the kill step"
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)  # a real kill: no cleanup, no final save
    victim.wait()
    assert checkpoints.run_info(killed / RUN)["status"] == "running"
    resumed = _start(killed)
    out, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out[-3000:]
    assert "resumed from step" in out
    ref_out, _ = reference.communicate(timeout=400)
    assert reference.returncode == 0, ref_out[-3000:]

    info = checkpoints.run_info(killed / RUN)
    assert info["status"] == "done" and info["num_steps"] == 17
    a = checkpoints.restore_params(whole / RUN, 17)
    b = checkpoints.restore_params(killed / RUN, 17)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert (killed / RUN / "config.gin").read_text().count("tiny_s") >= 1


@pytest.mark.parametrize("binding, match", [
    ("train_state.MeshConfig.data = 3", "data=3"),
    ("optim.OptimizerConfig.warmup_steps = 40", "OptimizerConfig.warmup_steps=40"),
    ("run_spec.RunSpec.bogus_field = 1", "bogus_field"),
    ("model_config.ModelConfig.vocab_size = 256", "ModelConfig.vocab_size=256 is smaller"),
])
def test_bad_config_fails_before_compiling(tmp_path, binding, match):
    proc = subprocess.run(
        [sys.executable, "-m", "lmscale.main.train", f"--workdir={tmp_path}", *ARGS,
         f"--gin_bindings={binding}"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert match in proc.stderr
    assert "Compiling" not in proc.stderr and not list(tmp_path.glob("*/checkpoints"))
