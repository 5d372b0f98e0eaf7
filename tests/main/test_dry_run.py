"""`--dry_run` on the ladder and evaluate binaries: the plan printed, nothing trained or
evaluated."""

import os
import subprocess
import sys

import pytest

from lmscale.models import ConfigError
from lmscale.report.plan import adapter, core
from lmscale.testing import tiny_config
from lmscale.train.record import RunRecord
from lmscale.train.spec import RunSpec


def _binary(name, *args):
    env = dict(os.environ, PYTHONPATH=os.getcwd(), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", f"lmscale.main.{name}", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def _runs(workdir, seeds=(0, 1)):
    """Two trained-looking runs of one model (seeds), three saved checkpoints each."""
    model = tiny_config(vocab_size=259, max_seq_len=128)
    for seed in seeds:
        spec = RunSpec(model=model, seq_len=32, batch_size=4, num_tokens=128 * 30, seed=seed,
                       name=f"tiny_s{seed}")
        run_dir = workdir / spec.name
        run_dir.mkdir(parents=True)
        RunRecord.from_spec(spec, status="done", checkpoint_every_steps=10,
                            checkpoints=[10, 20, 30]).save(run_dir)
    return model


def test_ladder_dry_run_prints_the_training_plan(tmp_path):
    proc = _binary("ladder", "--gin_file=experiments/ladder_tiny.gin",
                   f"--workdir={tmp_path / 'w'}", "--dry_run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # three models x two multipliers, each its own rung
    for rung in ("tiny_s_M1", "tiny_s_M2", "tiny_m_M1", "tiny_l_M2"):
        assert rung in out, out
    assert "Training (per rung" in out and "Memory per device" in out
    assert "Evaluation (" not in out and "training: 6ND" in out
    assert not (tmp_path / "w" / "tiny_s_M1_s0").exists()


def test_evaluation_plan_counts_the_saved_checkpoints_of_every_seed(tmp_path):
    model = _runs(tmp_path)
    from lmscale.eval import runner
    validation = runner.ValidationConfig(batch_size=2, max_batches=3)
    plan = adapter.plan_evaluation(adapter.find_records(tmp_path), ["py_copy_line:n3"],
                                   runner.PassUntilConfig(r=2, k_max=10), validation,
                                   use_jax=False)
    (rp,) = plan.rungs
    assert rp.rung.name == model.name and rp.rung.seeds == 2 and rp.rung.checkpoints == 3
    val = next(e for e in rp.evals if e.kind == core.VALIDATION)
    # 2 seeds x 3 checkpoints x (3 batches x 2 rows x 32 tokens)
    assert val.checkpoints == 6 and val.scored_tokens == 6 * 3 * 2 * 32
    gen = next(e for e in rp.evals if e.kind == core.PASSUNTIL)
    assert gen.samples_worst == 6 * 3 * 10  # 6 checkpoints x 3 instances x k_max
    only_last = adapter.plan_evaluation(adapter.find_records(tmp_path), [],
                                        runner.PassUntilConfig(), validation, steps=[30],
                                        use_jax=False)
    assert only_last.rungs[0].rung.checkpoints == 1
    with pytest.raises(ConfigError, match="holds no run.json"):
        adapter.evaluation_dry_run(tmp_path / "empty")


def test_evaluate_dry_run_prints_the_evaluation_plan(tmp_path):
    _runs(tmp_path, seeds=(0,))
    proc = _binary("evaluate", "--gin_file=experiments/runs/evaluate.gin",
                   f"--workdir={tmp_path}", "--gin_bindings=TASKS = ['py_copy_line:n3']",
                   "--dry_run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "Evaluation (" in out and "py_copy_line:n3" in out and "validation" in out
    assert "Training (per rung" not in out
    assert not (tmp_path / "results.jsonl").exists()
