"""Two processes x 4 CPU devices (gloo) reach the same losses as one process x 8 devices."""
from tests.conftest import FAST_COMPILE_ENV
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from lmscale.train import metrics

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUN = "tiny_s_M0.1"  # 9 steps of 8 x 32 tokens
ARGS = ["--gin_file=experiments/runs/train.gin", "--gin_file=experiments/models/tiny.gin",
        "--gin_bindings=MODEL = @tiny_s/model_config.ModelConfig()",
        "--gin_bindings=TOKEN_MULTIPLIER = 0.1", "--gin_bindings=BATCH_SIZE = 8",
        "--gin_bindings=SEQ_LEN = 32",
        "--gin_bindings=train_state.MeshConfig.data = 2",
        "--gin_bindings=train_state.MeshConfig.fsdp = 2",
        "--gin_bindings=train_state.MeshConfig.tensor = 2",
        # Both set-ups build the global batch from the same 2 stream shards.
        "--gin_bindings=train_loop.LoopConfig.data_shards = 2",
        "--gin_bindings=train_loop.LoopConfig.log_every_steps = 1",
        "--gin_bindings=train_loop.LoopConfig.eval_batches = 2",
        "--gin_bindings=train_loop.LoopConfig.peak_flops_per_device = 1e10"]


def _env(devices):
    return dict(os.environ, JAX_PLATFORMS="cpu", **FAST_COMPILE_ENV,
                XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _losses(run_dir):
    rows = metrics.read_metrics(run_dir)
    train = {r["step"]: r[metrics.TRAIN_LOSS] for r in rows if metrics.TRAIN_LOSS in r}
    valid = [r[metrics.valid_loss_name("validation")] for r in rows
             if metrics.valid_loss_name("validation") in r]
    return np.array([train[s] for s in sorted(train)]), np.array(valid)


@pytest.mark.slow
@pytest.mark.multihost
def test_two_processes_match_one_process(tmp_path):
    port = _free_port()
    multi = [subprocess.Popen(
        [sys.executable, "-m", "lmscale.main.train", f"--workdir={tmp_path / 'multi'}", *ARGS,
         f"--coordinator_address=localhost:{port}", "--num_processes=2", f"--process_id={i}",
         "--console=info"],
        cwd=ROOT, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    single = subprocess.run(
        [sys.executable, "-m", "lmscale.main.train", f"--workdir={tmp_path / 'single'}", *ARGS],
        cwd=ROOT, env=_env(8), capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    outs = [p.communicate(timeout=600)[0] for p in multi]
    for p, out in zip(multi, outs):
        assert p.returncode == 0, out[-3000:]
    assert "process 1 of 2, 4 local / 8 global devices" in outs[1]

    multi_train, multi_valid = _losses(tmp_path / "multi" / RUN)
    single_train, single_valid = _losses(tmp_path / "single" / RUN)
    assert len(single_train) == 9 and len(multi_train) == 9
    np.testing.assert_allclose(multi_train, single_train, rtol=1e-5)
    np.testing.assert_allclose(multi_valid, single_valid, rtol=1e-5)
    assert (tmp_path / "multi" / RUN / "checkpoints" / "9").is_dir()
