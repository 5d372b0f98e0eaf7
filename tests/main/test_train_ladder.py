"""The tiny ladder (3 sizes x 2 multipliers) trains from experiments/ladder_tiny.gin."""
from tests.conftest import FAST_COMPILE_ENV
import os
import pathlib
import subprocess
import sys

import pytest

from lmscale.train import checkpoints, metrics
from lmscale.train.record import RunRecord

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_ladder_leaves_checkpoints_and_metrics_and_skips_done_runs(tmp_path):
    cmd = [sys.executable, "-m", "lmscale.main.ladder", "--gin_file=experiments/ladder_tiny.gin",
           f"--workdir={tmp_path}",
           # Same ladder, smaller budgets, so the test takes ~1-3 minutes on 2 cores.
           "--gin_bindings=ladder.LadderConfig.token_multipliers = [0.05, 0.1]",
           "--gin_bindings=train_loop.LoopConfig.eval_batches = 1",
           "--gin_bindings=train_loop.LoopConfig.checkpoint_every_tokens = 4096",
           "--gin_bindings=train_loop.LoopConfig.peak_flops_per_device = 1e10"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", **FAST_COMPILE_ENV,
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Run directories (the workdir also holds logs/ and the compilation cache .jax_cache/).
    names = sorted(p.name for p in tmp_path.iterdir() if RunRecord.exists(p))
    assert (tmp_path / "logs").is_dir() and (tmp_path / ".jax_cache").is_dir()
    assert names == sorted(f"{m}_M{x}_s0" for m in ("tiny_s", "tiny_m", "tiny_l")
                           for x in ("0.05", "0.1"))
    sizes = {}
    for name in names:
        run_dir = tmp_path / name
        info = RunRecord.load(run_dir).to_dict()
        assert info["status"] == "done" and info["loss_unit"] == "nats/byte"
        evals = checkpoints.list_eval_checkpoints(run_dir)
        assert evals[-1] == info["num_steps"]
        assert all(s % info["checkpoint_every_steps"] == 0 for s in evals[:-1])
        rows = metrics.read_metrics(run_dir)
        assert any(metrics.valid_loss_name("validation") in r for r in rows)
        assert max(r["step"] for r in rows) == info["num_steps"]
        sizes[info["model_config"]["name"]] = info["num_params_non_embedding"]
    assert sizes["tiny_s"] < sizes["tiny_m"] < sizes["tiny_l"]
    # A second launch finds every run done and trains nothing.
    # --console=info: the per-run lines go to the console too (by default only the log file).
    again = subprocess.run(cmd + ["--console=info"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("already done, skipping") == 6
