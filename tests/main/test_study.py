"""End to end: a micro ladder through train -> evaluate -> fit -> report, then a resume."""

import json

import pytest

from lmscale.eval import runner
from lmscale.models import ConfigError, ModelConfig
from lmscale.report import study
from lmscale.train import loop as train_loop
from lmscale.train import optim
from lmscale.train.ladder import LadderConfig
from lmscale.train.spec import RunSpec


def _ladder(widths=(16, 24, 32, 40)):
    return [ModelConfig(vocab_size=259, d_model=w, n_layers=1, n_heads=w // 8, head_dim=8,
                        d_ff=5 * w // 2, max_seq_len=128, name=f"m{w}") for w in widths]


def _ladder_config(models=None, **overrides):
    template = RunSpec(model=_ladder()[0], seq_len=32, batch_size=8, token_multiplier=0.5)
    base = dict(template=template, models=_ladder() if models is None else models,
                token_multipliers=(0.5,))
    base.update(overrides)
    return LadderConfig(**base)


def _config(models=None, **overrides):
    base = dict(name="micro study", ladder=_ladder_config(models), eval_checkpoints=2,
                held_out=1,
                mc_tasks=("py_next_line_mc:n4",), passuntil_tasks=("py_copy_line:n3",),
                instances=3,
                passuntil=runner.PassUntilConfig(r=2, k_max=6, batch_size=6, num_slots=6),
                intermediate_k_max=3,
                validation=runner.ValidationConfig(batch_size=8, max_batches=2))
    base.update(overrides)
    return study.StudyConfig(**base)


def test_study_config_rejects_bad_ladders():
    with pytest.raises(ConfigError, match="models"):
        _config(_ladder((16, 24, 32)))
    with pytest.raises(ConfigError, match="increasing"):
        _config(_ladder((16, 32, 24, 40)))
    with pytest.raises(ConfigError, match="intermediate_k_max"):
        _config(intermediate_k_max=1)
    with pytest.raises(ConfigError, match=r"StudyConfig.ladder.token_multipliers=\[0.5, 1\]"):
        _config(ladder=_ladder_config(token_multipliers=(0.5, 1)))
    with pytest.raises(ConfigError, match="StudyConfig.ladder=.*expected a LadderConfig"):
        _config(ladder=_ladder())
    with pytest.raises(ConfigError, match="StudyConfig.beam_sizes"):
        _config(beam_sizes=(0,))
    with pytest.raises(ConfigError, match="StudyConfig.pass_at_k"):
        _config(pass_at_k=(1, -10))


@pytest.mark.slow
def test_micro_study_end_to_end_and_resume(tmp_path, monkeypatch):
    # A relative workdir, as users type it (orbax needs absolute paths internally).
    monkeypatch.chdir(tmp_path.parent)
    config = _config(beam_sizes=(2,))  # with Hu et al.'s beam vs sampling table
    loop = train_loop.LoopConfig(log_every_steps=5, eval_batches=2, save_every_steps=5,
                                 async_checkpointing=False, peak_flops_per_device=1e10,
                                 noise_scale=False)
    opt = optim.OptimizerConfig(lr_peak=3e-3, warmup_steps=1)
    analysis = study.run_study(config, tmp_path.name, optimizer=opt, loop=loop)

    # Every rung trained, with intermediate checkpoints, and every checkpoint evaluated.
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == sorted(f"m{w}_M0.5_s0" for w in (16, 24, 32, 40))
    steps_per_run = {}
    for line in (tmp_path / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["task"] == "validation" and row["metric"] == "validation_loss":
            steps_per_run.setdefault(row["run"], set()).add(row["step"])
    assert all(len(s) == 2 for s in steps_per_run.values()), steps_per_run
    # Final checkpoints sample with passuntil's cap, the intermediate ones with the cheaper one.
    finals = {p.name: json.loads((p / "run.json").read_text())["num_steps"]
              for p in (tmp_path / "runs").iterdir()}
    caps = {(row["step"] == finals[row["run"]], row["detail"]["k_max"])
            for row in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())
            if row["task"] == "py_copy_line:n3" and row["metric"] == "instance"}
    assert caps == {(True, 6), (False, 3)}, caps

    # The held-out rung is predicted from the others and compared.
    loss_pred = [p for p in analysis["predictions"] if p["task"] == "validation"]
    assert len(loss_pred) == 1 and loss_pred[0]["N"] == max(r["N"] for r in analysis["rungs"])
    assert loss_pred[0]["measured"] == pytest.approx(
        [r for r in analysis["rungs"] if r["held_out"]][0]["validation_loss"])
    report = (tmp_path / "report.md").read_text()
    assert f"{loss_pred[0]['measured']:.4g}" in report
    assert (tmp_path / "loss_vs_compute.png").stat().st_size > 5000
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["predictions"][0]["predicted"] == pytest.approx(loss_pred[0]["predicted"])
    # The plan saved at the start sits beside the measured times in the report.
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [r["rung"]["name"] for r in plan["rungs"]] == ["m16", "m24", "m32", "m40"]
    stages = json.loads((tmp_path / "stages.json").read_text())["evaluate_s"]
    assert sorted(stages) == runs and all(s > 0 for s in stages.values())
    assert "## Plan vs measured" in report
    # Beam search ran on every final checkpoint's PassUntil instances; pass@k is reported.
    beam_rows = [r for r in map(json.loads, (tmp_path / "results.jsonl").read_text()
                                .splitlines())
                 if r["task"] == "py_copy_line:n3#beam2" and r["metric"] == "instance"]
    assert len(beam_rows) == 4 * 3 and {r["step"] for r in beam_rows} <= set(finals.values())
    assert "Beam search vs random sampling" in report and "| N | pass@1 |" in report
    table = saved["tasks"]["py_copy_line:n3"]["beam"]
    assert [t["beam_top"] for t in table] == [
        sum(r["detail"]["top_passed"] for r in beam_rows if r["num_params_non_embedding"] ==
            t["N"]) for t in table]
    assert "## Loss view (Du et al.)" in report and "loss_view" in saved
    train_rows = [r for r in saved["plan_vs_measured"] if r["stage"] == "train"]
    assert [r["rung"] for r in train_rows] == ["m16", "m24", "m32", "m40", "(all)"]
    record = json.loads((tmp_path / "runs" / "m16_M0.5_s0" / "run.json").read_text())
    assert train_rows[0]["measured_s"] == pytest.approx(record["wall_s"])
    assert train_rows[0]["estimated_s"] is None  # no probe asked for
    fit_row = saved["plan_vs_measured"][-1]  # this analysis's own time, in its report
    assert fit_row["stage"] == "fit/report" and fit_row["measured_s"] > 0
    assert "| fit/report | (all) |" in report
    fit_s = json.loads((tmp_path / "stages.json").read_text())["fit_report_s"]
    assert fit_s >= fit_row["measured_s"]  # the whole stage, report writing included
    rows_before = (tmp_path / "results.jsonl").read_text()

    # A rerun trains and evaluates nothing and reproduces the same analysis: nothing the
    # report is made from changed, so the saved one is kept (not rewritten).
    report_mtime = (tmp_path / "report.md").stat().st_mtime_ns
    again = study.run_study(config, tmp_path.name, optimizer=opt, loop=loop)
    assert (tmp_path / "results.jsonl").read_text() == rows_before
    assert json.dumps(again["predictions"]) == json.dumps(analysis["predictions"])
    assert (tmp_path / "report.md").stat().st_mtime_ns == report_mtime
    # A changed input (here the results file) makes the next run analyse again.
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write(rows_before.splitlines()[0] + "\n")
    study.run_study(config, tmp_path.name, optimizer=opt, loop=loop)
    assert (tmp_path / "report.md").stat().st_mtime_ns != report_mtime


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
    import os
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=os.getcwd(), JAX_PLATFORMS="cpu")
    workdir = tmp_path / "w"
    proc = subprocess.run([sys.executable, "-m", "lmscale.main.study",
                           "--gin_file=experiments/default.gin", f"--workdir={workdir}",
                           "--dry_run"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("w32", "w96", "py_identifier_mc:n200:c96", "Totals"):
        assert name in proc.stdout, name
    assert not (workdir / "runs").exists()


def test_default_study_targets_are_the_familys_next_widths():
    import gin
    try:
        config = study.load_gin(["experiments/default.gin"], search_path=".")["study_config"]
    finally:
        gin.clear_config()
    targets = config.resolved_targets()
    assert [t[0] for t in targets] == ["d_model=128", "d_model=160"]
    largest = config.ladder.models[-1].num_params.non_embedding
    assert largest < targets[0][1] < targets[1][1]
    assert targets[0][2] == round(config.token_multiplier * targets[0][1])
    assert config.level == 0.9 and len(config.specs()) == 5
