"""Over-training study: config, Gadre's fit set, the L(C, M) -> Err(L) analysis on
synthetic rows with a known law, the report, the study hook and experiments/overtrain.gin."""

import json
import pathlib

import numpy as np
import pytest

from lmscale.models import ConfigError, ModelConfig
from lmscale.report import overtrain as O
from lmscale.report import overtrain_report as R
from tests.report import synthetic_ot as S

ROOT = pathlib.Path(__file__).resolve().parents[2]
TASKS = ["mc_a", "mc_b"]
CUTOFF = 6.0 * 40_000 ** 2 * 40 * 1.01  # the two smallest sizes at every M, 80k at M 5, 10
GRID = [(n, m) for n in (20_000, 40_000, 80_000, 160_000) for m in (5, 10, 20, 40)]
FITTED = {(n, m) for n, m in GRID if 6.0 * n * n * m <= CUTOFF}


def _model(name, width):
    return ModelConfig(name=name, vocab_size=259, d_model=width, n_layers=2,
                       n_heads=width // 16, head_dim=16, d_ff=int(2.5 * width),
                       max_seq_len=128)


MODELS = (_model("w32", 32), _model("w48", 48), _model("w64", 64))


def test_pairs_specs_and_counting():
    cfg = O.OvertrainConfig(models=MODELS, runs=("w48:20", "w32:40", "w32:5"),
                            mc_tasks=("t",), batch_sizes=(8, 12, 16))
    assert [(m.name, x) for m, x in cfg.pairs()] == [("w32", 5.0), ("w32", 40.0),
                                                     ("w48", 20.0)]
    specs = cfg.specs()
    total = MODELS[0].num_params.total
    assert specs[0].num_tokens == 5 * total and specs[0].name == "w32_M5_s0"
    assert specs[2].batch_size == 12
    non = O.OvertrainConfig(models=MODELS, runs=("w32:5",), mc_tasks=("t",),
                            counting="non_embedding")
    assert non.specs()[0].num_tokens == 5 * MODELS[0].num_params.non_embedding
    assert non.specs()[0].num_tokens < specs[0].num_tokens
    grid = O.OvertrainConfig(models=MODELS[:2], mc_tasks=("t",), token_multipliers=(5, 10))
    assert len(grid.specs()) == 4


@pytest.mark.parametrize("kwargs, match", [
    (dict(runs=("w99:20",)), "no model named 'w99'"),
    (dict(runs=("w32:x",)), "'w32:x'"),
    (dict(runs=("w32:20", "w32:20")), "repeated"),
    (dict(counting="embedding"), "counting"),
    (dict(predict=("N=5",)), "predict entry"),
    (dict(mc_tasks=()), "mc_tasks"),
])
def test_config_errors_name_the_field(kwargs, match):
    base = dict(models=MODELS, mc_tasks=("t",))
    with pytest.raises(ConfigError, match=match):
        O.OvertrainConfig(**{**base, **kwargs})


def test_gadre_fit_set_is_table1():
    pts = [dict(N=n, M=m) for n in (1, 2, 3, 4) for m in (5, 10, 20, 40)]
    chosen = {(p["N"], p["M"]) for p, f in zip(pts, O.gadre_fit_set(pts)) if f}
    assert chosen == {(1, 20), (2, 20), (3, 20), (1, 40)}


def test_average_questions_matches_binomial_variance():
    # Two tasks of 100 questions at the same error: the average behaves like 200 questions.
    assert O.average_questions({"a": 0.3, "b": 0.3}, {"a": 100, "b": 100},
                               ["a", "b"]) == pytest.approx(200)


@pytest.fixture(scope="module")
def synthetic():
    runs = S.grid(sizes=(20_000, 40_000, 80_000, 160_000), mults=(5, 10, 20, 40))
    return runs, S.rows(runs, TASKS, questions=40, instances=False)


@pytest.fixture(scope="module")
def analysis(synthetic):
    runs, rows = synthetic
    return O.analyze_overtrain(rows, runs, mc_tasks=TASKS, fit_max_flops=CUTOFF,
                               predict=["N=320000,M=20,name=big"], num_resamples=20)


def test_loss_law_recovered_and_held_out_predicted(analysis):
    law = analysis["loss_law"]
    assert len(FITTED) == 10
    assert law["reliable"] and law["num_points"] == len(FITTED)
    assert law["params"]["eta"] == pytest.approx(S.ETA_LAW, rel=0.25)
    fitted = {(p["N"], round(p["M"])) for p in analysis["points"] if p["fitted"]}
    assert fitted == FITTED
    loss = [p for p in analysis["predictions"] if p["quantity"] == "loss"]
    assert len(loss) == len(GRID) - len(FITTED)  # every held-out run
    for p in loss:
        truth = S.law(p["C"], p["M"])
        assert p["measured"] == pytest.approx(truth, rel=0.02)
        assert p["rel_error"] < 0.05, p
        assert p["interval"][0] < p["predicted"] < p["interval"][1]


def test_error_chain_per_task_and_average(analysis):
    errs = [p for p in analysis["predictions"] if p["quantity"] == "error"]
    assert sorted({p["task"] for p in errs}) == ["average", "mc_a", "mc_b"]
    assert len(errs) == 3 * (len(GRID) - len(FITTED))
    for p in errs:
        assert 0 <= p["interval"][0] <= p["interval"][1] <= 1
        assert p["measured"] is not None and p["covered"] in (True, False)
    assert set(analysis["error_laws"]) == {"mc_a", "mc_b", "average"}
    # The never-trained target: predicted, nothing measured.
    big = [p for p in analysis["targets"] if p["target"] == "big"]
    assert {p["quantity"] for p in big} == {"loss", "error"} and len(big) == 4
    assert all(p["measured"] is None for p in big)
    loss_big = next(p for p in big if p["quantity"] == "loss")
    held = [p["predicted"] for p in analysis["predictions"] if p["quantity"] == "loss"]
    assert loss_big["predicted"] < min(held)  # a larger model at more compute
    summary = analysis["backtests"]["summary"]
    assert summary["n"] == 4 * 6 and 0 <= summary["covered"] <= 4 * 6


def test_counting_non_embedding_changes_N(synthetic):
    runs, rows = synthetic
    out = O.analyze_overtrain(rows, runs, mc_tasks=TASKS, counting="non_embedding",
                              fit_max_flops=1e30, num_resamples=5)
    ns = sorted({p["N"] for p in out["points"]})
    assert ns == [int(n * (1 - S.EMB_FRACTION)) for n in (20_000, 40_000, 80_000, 160_000)]
    assert out["predictions"] == [] and all(p["fitted"] for p in out["points"])


def test_error_fit_also_joins_err_fit_only(synthetic):
    runs, rows = synthetic
    out = O.analyze_overtrain(rows, runs, mc_tasks=TASKS, fit_max_flops=CUTOFF,
                              error_fit_also=[(160_000, 20.0)], num_resamples=5)
    assert out["loss_law"]["num_points"] == len(FITTED)
    assert out["error_laws"]["average"]["num_points"] == len(FITTED) + 1
    at = [p for p in out["predictions"] if p["N"] == 160_000 and round(p["M"]) == 20]
    assert [p["quantity"] for p in at] == ["loss"]
    with pytest.raises(ConfigError, match="error_fit_also entry 'w48:40'"):
        O.OvertrainConfig(models=MODELS, runs=("w32:5", "w48:20"), mc_tasks=("t",),
                          error_fit_also=("w48:40",))


def test_run_records_read_as_training_returns_them(synthetic, analysis):
    # train_runs and predict_workdir pass RunRecords, not run.json dicts.
    from lmscale.train.record import RunRecord

    runs, rows = synthetic
    records = {name: RunRecord(run_name=name, model_config={}, flops=0.0,
                               token_multiplier=None, batch_size=1, seq_len=1,
                               vocab_spec="byte", loss_unit="nats/byte", corpus="c", seed=0,
                               status="done", **info) for name, info in runs.items()}
    out = O.analyze_overtrain(rows, records, mc_tasks=TASKS, fit_max_flops=CUTOFF,
                              predict=["N=320000,M=20,name=big"], num_resamples=20)
    assert [(p["N"], p["D"], p["loss"]) for p in out["points"]] == [
        (p["N"], p["D"], p["loss"]) for p in analysis["points"]]
    assert out["loss_law"]["params"] == analysis["loss_law"]["params"]


def test_missing_final_loss_is_named(synthetic):
    runs, rows = synthetic
    rows = [r for r in rows if not (r["run"] == "n20000_M5_s0" and r["step"] == 3
                                    and r["metric"] == "validation_loss")]
    with pytest.raises(ValueError, match="n20000_M5_s0"):
        O.analyze_overtrain(rows, runs, mc_tasks=TASKS)


def test_report_and_results_written(analysis, tmp_path):
    report, results = R.write(analysis, tmp_path, title="synthetic over-training",
                              setup={"device": "none"})
    text = report.read_text()
    assert "## Held-out runs (over-trained and larger)" in text
    n_rows = sum(1 for line in text.splitlines() if line.startswith("| error |")
                 or line.startswith("| loss |"))
    assert n_rows == len(analysis["predictions"]) + len(analysis["targets"])
    assert "Gadre et al. Fig. 5" in text and "L(C, M) = E +" in text
    for name in ("overtrain_loss_vs_compute.png", "overtrain_error_vs_loss.png"):
        assert (tmp_path / name).stat().st_size > 1000
    payload = json.loads(results.read_text())
    assert payload["study"] == "overtrain" and payload["loss_law"]["reliable"]


def test_study_hook_and_gin_plan():
    import gin

    from lmscale.report import study

    gin.add_config_file_search_path(str(ROOT))
    try:
        gin.parse_config_files_and_bindings([str(ROOT / "experiments/overtrain.gin")], [],
                                            finalize_config=False)
        cfg = gin.get_configurable(O.OvertrainConfig)()
    finally:
        gin.clear_config()
    assert cfg.counting == "total" and len(cfg.specs()) == 9
    assert cfg.mc_tasks == ("py_next_line_mc:n200", "py_identifier_mc:n200")
    text = study.run_study(None, "/nonexistent", overtrain=cfg, mode="plan")["plan"]
    runs = [line.split() for line in text.splitlines() if line.startswith("  w")
            and line.split()[-1] in ("fit", "out")]
    held = sorted(r[0] for r in runs if r[-1] == "out")
    assert len(runs) == 9 and held == ["w48_M40_s0", "w64_M20_s0"]  # over-trained, larger
    assert "N counted total" in text
    # The cost plan (lmscale.report.plan): one rung per run, validation + both MC tasks.
    assert "Training (per rung" in text and "Evaluation (all evaluated" in text
    assert "w64_M20 " in text and "py_identifier_mc:n200" in text


def test_cost_plan_has_one_rung_per_run_and_every_task():
    cfg = O.OvertrainConfig(models=MODELS, runs=("w32:5", "w32:20", "w48:20"),
                            mc_tasks=("py_next_line_mc:n20",), batch_sizes=(8, 12, 16),
                            eval_checkpoints=2)
    plan = O.cost_plan(cfg, use_jax=False)
    assert [r.rung.name for r in plan.rungs] == ["w32_M5", "w32_M20", "w48_M20"]
    assert [r.rung.num_steps for r in plan.rungs] == [s.num_steps for s in cfg.specs()]
    assert plan.rungs[1].rung.token_multiplier == pytest.approx(20, rel=0.01)
    assert all(r.rung.checkpoints == 2 for r in plan.rungs)
    assert [e.task for e in plan.rungs[0].evals] == ["validation", "py_next_line_mc:n20"]
    # The 6ND of a rung counts the non-embedding N over its trained tokens.
    r = plan.rungs[2]
    assert r.flops_6nd == pytest.approx(6 * r.n_non_embedding * r.rung.tokens)


def test_tpu_variant_is_gadre_table1():
    import gin

    gin.add_config_file_search_path(str(ROOT))
    try:
        gin.parse_config_files_and_bindings(
            [str(ROOT / "experiments/overtrain_tpu.gin")],
            ["TOKENIZER = 'tokenizers:/data/gpt-neox-20b/tokenizer.json'"],
            finalize_config=False)
        cfg = gin.get_configurable(O.OvertrainConfig)()
    finally:
        gin.clear_config()
    text = O.plan(cfg)
    fitted = sorted(line.split()[0] for line in text.splitlines() if line.endswith(" fit"))
    assert fitted == sorted([f"gadre2024-{s}_M20_s0" for s in
                             ("0.011B", "0.079B", "0.154B", "0.411B")]
                            + ["gadre2024-0.011B_M320_s0"])
    assert text.count("held out") == 2
    assert cfg.error_fit_points() == [(cfg.models[-1].num_params.total, 20.0)]


def test_average_covers_tasks_above_chance(synthetic):
    runs, rows = synthetic
    # mc_b is 0.05 nats harder than mc_a: with a high bar only mc_a qualifies.
    accs = {t: max(1 - p["err"][t] for p in O._points(rows, runs, TASKS, "total"))
            for t in TASKS}
    bar = (accs["mc_a"] + accs["mc_b"]) / 2 - 0.25
    assert accs["mc_b"] - 0.25 < bar <= accs["mc_a"] - 0.25
    out = O.analyze_overtrain(rows, runs, mc_tasks=TASKS, fit_max_flops=1e30,
                              random_baselines={"mc_a": 0.25, "mc_b": 0.25},
                              min_above_chance=bar, num_resamples=5)
    assert out["average_tasks"] == ["mc_a"]
    assert all(p["err"]["average"] == p["err"]["mc_a"] for p in out["points"])
    assert any("left out: ['mc_b']" in n for n in out["notes"])
    none = O.analyze_overtrain(rows, runs, mc_tasks=TASKS, fit_max_flops=1e30,
                               random_baselines={"mc_a": 0.25, "mc_b": 0.25},
                               min_above_chance=0.9, num_resamples=5)
    assert none["average_tasks"] == TASKS and any("every task" in n for n in none["notes"])


def test_parse_target_keeps_spaces_in_names():
    assert O.parse_target("N=1000, M=20, name=w96 M=20") == ("w96 M=20", 1000.0, 20.0)
