"""`lmscale.main.predict` and `run_study(mode="predict")`: refit a finished micro study
for never-trained targets, training and evaluating nothing."""

import json
import os
import subprocess
import sys

import pytest

from lmscale.report import study
from lmscale.train import loop as train_loop
from lmscale.train import optim
from tests.main.test_study import _config, _ladder


def _gin(path, config):
    ladder = config.ladder
    models = ", ".join(f"@{m.name}/model_config.ModelConfig()" for m in ladder.models)
    lines = ["from __gin__ import dynamic_registration",
             "import lmscale.report.study as study",
             "import lmscale.models.config as model_config",
             "import lmscale.train.ladder as ladder",
             "import lmscale.train.spec as run_spec",
             "study.run_study.config = @study.StudyConfig()",
             f"study.StudyConfig.name = {config.name!r}",
             "study.StudyConfig.ladder = @ladder.LadderConfig()",
             "ladder.LadderConfig.template = @run_spec.RunSpec()",
             f"ladder.LadderConfig.models = [{models}]",
             f"ladder.LadderConfig.token_multipliers = {list(ladder.token_multipliers)!r}",
             f"run_spec.RunSpec.model = @{ladder.models[0].name}/model_config.ModelConfig()"]
    for key in ("token_multiplier", "seq_len", "batch_size"):
        lines.append(f"run_spec.RunSpec.{key} = {getattr(ladder.template, key)!r}")
    for key in ("eval_checkpoints", "held_out", "instances"):
        lines.append(f"study.StudyConfig.{key} = {getattr(config, key)!r}")
    for key in ("mc_tasks", "passuntil_tasks"):
        lines.append(f"study.StudyConfig.{key} = {list(getattr(config, key))!r}")
    for m in ladder.models:
        for key in ("vocab_size", "d_model", "n_layers", "n_heads", "head_dim", "d_ff",
                    "max_seq_len", "name"):
            lines.append(f"{m.name}/model_config.ModelConfig.{key} = {getattr(m, key)!r}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_predict_refits_a_finished_workdir_for_new_targets(tmp_path):
    config = _config()
    loop = train_loop.LoopConfig(log_every_steps=5, eval_batches=2, save_every_steps=5,
                                 async_checkpointing=False, peak_flops_per_device=1e10,
                                 noise_scale=False)
    opt = optim.OptimizerConfig(lr_peak=3e-3, warmup_steps=1)
    workdir = tmp_path / "w"
    study.run_study(config, str(workdir), optimizer=opt, loop=loop)
    rows_before = (workdir / "results.jsonl").read_text()
    runs_before = sorted(p.name for p in (workdir / "runs").iterdir())

    # Library: targets named by width (the family's next widths) and by N with M.
    out = study.run_study(config, str(workdir), mode="predict",
                          targets=["d_model=48", "d_model=64", "N=200000,M=20,name=big"])
    names = {p["target"] for p in out["targets"]}
    assert names == {"d_model=48", "d_model=64", "big"}
    big = [p for p in out["targets"] if p["target"] == "big" and p["task"] == "validation"]
    assert big[0]["N"] == 200_000 and big[0]["D"] == 4_000_000
    w48 = next(p for p in out["targets"] if p["target"] == "d_model=48")
    assert w48["N"] == _ladder((48,))[0].num_params.non_embedding
    assert all(p["interval"][0] <= p["interval"][1] and p["level"] == 0.9
               for p in out["targets"])
    assert (workdir / "results.jsonl").read_text() == rows_before
    assert sorted(p.name for p in (workdir / "runs").iterdir()) == runs_before
    saved = json.loads((workdir / "results.json").read_text())
    assert [p["target"] for p in saved["targets"]] == [p["target"] for p in out["targets"]]
    report = (workdir / "report.md").read_text()
    assert report.index("## Targets (never trained)") < report.index("## Prediction vs")

    # Binary: same refit from the study's gin file, targets from the flag.
    env = dict(os.environ, PYTHONPATH=os.getcwd(), JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-m", "lmscale.main.predict", f"--workdir={workdir}",
         f"--gin_file={_gin(tmp_path / 'micro.gin', config)}", "--targets=d_model=56"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| d_model=56 | validation loss" in proc.stdout
    assert "predicted [low, high]" in proc.stdout and "backtests:" in proc.stdout
    saved = json.loads((workdir / "results.json").read_text())
    assert {p["target"] for p in saved["targets"]} == {"d_model=56"}
    assert (workdir / "results.jsonl").read_text() == rows_before


def test_bad_targets_are_named():
    from lmscale.models import ConfigError
    with pytest.raises(ConfigError, match="StudyConfig.targets entry 'N=5'"):
        _config(targets=("N=5",)).resolved_targets()
    with pytest.raises(ConfigError, match="unknown or missing keys"):
        _config(targets=("width=64",)).resolved_targets()
    with pytest.raises(ConfigError, match="head_dim"):
        _config(targets=("d_model=50",)).resolved_targets()
    name, n, d = _config(targets=("N=1e6,D=3e7",)).resolved_targets()[0]
    assert (name, n, d) == ("N=1,000,000", 1_000_000, 30_000_000)
