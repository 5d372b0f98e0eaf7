"""Hu et al.'s analyses in the study report (lmscale.report.hu): pass@k measured and
predicted, the two-circuit fit with its interval, the beam-search vs sampling table."""

import json

import numpy as np
import pytest

from lmscale import fit as F
from lmscale.eval import beam as beam_lib
from lmscale.fit import passk, simulate_pu
from lmscale.report import analysis, figures, hu, markdown
from lmscale.train.record import RunRecord

STEPS = 100
R, CAP = 4, 1000


def record(name, n):
    return RunRecord(run_name=name, model_config={}, num_params=n + 5000,
                     num_params_non_embedding=n, num_tokens=STEPS * 1000, flops=0.0,
                     token_multiplier=None, tokens_per_step=1000, batch_size=1, seq_len=1,
                     num_steps=STEPS, vocab_spec="spm.model", loss_unit="nats/token",
                     corpus="c", seed=0, status="done", wall_s=1.0)


def ladder(num_rungs=5, seed=0, **settings):
    """Result rows of a simulated PassUntil ladder (`simulate_pu`: instances on their own
    laws, training noise, PassUntil counts with r = 4 and cap 1000) plus a Kaplan loss."""
    study = simulate_pu.simulate_study(np.random.default_rng(seed), num_rungs=num_rungs,
                                       N_min=2e4, **settings)
    rows, runs = [], {}
    for j, n in enumerate(study["N"].astype(int)):
        run = f"d{n}_s0"
        runs[run] = record(run, int(n))
        point = dict(run=run, step=STEPS, tokens=STEPS * 1000, num_params=int(n) + 5000,
                     num_params_non_embedding=int(n), num_tokens=STEPS * 1000,
                     flops=6.0 * n * STEPS * 1000)
        rows.append(dict(point, task="validation", metric="validation_loss",
                         value=0.8 + (3e4 / n) ** 0.5))
        for i in range(study["pu"].shape[1]):
            K, c = int(study["num_samples"][j, i]), int(study["num_passes"][j, i])
            rows.append(dict(point, task="gen", metric="instance",
                             value=float(study["pu"][j, i]), instance=f"i{i}",
                             detail=dict(estimate=float(study["pu"][j, i]), num_samples=K,
                                         num_passes=c, capped=c < R, k_max=CAP,
                                         answer_loss_sum=float(study["answer_loss"][j, i]))))
    return rows, runs, study


def _analyze(rows, runs, **kw):
    kw.setdefault("num_resamples", 100)
    return analysis.analyze(rows, runs, passuntil_tasks=["gen"], held_out=1, passuntil_r=R,
                            passuntil_k_max=CAP, **kw)


@pytest.fixture(scope="module")
def seven():
    rows, runs, study = ladder(num_rungs=7, seed=4)
    return rows, runs, study, _analyze(rows, runs)


def test_measured_pass_at_k_is_the_estimator_on_each_rungs_samples(seven):
    rows, runs, study, out = seven
    pk = out["tasks"]["gen"]["pass_at_k"]
    assert pk["ks"] == [1, 10, 100]
    for j, row in enumerate(pk["per_rung"]):
        for k in (1, 10, 100):
            direct = F.pass_at_k_task(study["num_samples"][j], study["num_passes"][j], k, r=R,
                                      level=0.9)
            got = row["values"][str(k)]
            assert got["point"] == pytest.approx(direct.point)
            assert got["interval"] == pytest.approx([direct.low, direct.high])
    # pass@1 from the samples is the unbiased PU.
    assert pk["per_rung"][-1]["values"]["1"]["point"] == pytest.approx(study["pu"][-1].mean())
    # k above the cap is left out, not extrapolated.
    out2 = _analyze(rows, runs, pass_at_k=(1, 5000))
    assert set(out2["tasks"]["gen"]["pass_at_k"]["per_rung"][0]["values"]) == {"1"}


def test_predicted_pass_at_k_rows_have_intervals_and_are_backtested(seven):
    rows, runs, study, out = seven
    preds = [p for p in out["predictions"] if p["quantity"] == "pass@k"]
    assert [p["method"] for p in preds] == [f"instance-level pass@{k}" for k in (1, 10, 100)]
    inst = next(p for p in out["predictions"] if p["method"] == "instance-level")
    assert preds[0]["predicted"] == pytest.approx(inst["predicted"])
    for p, k in zip(preds, (1, 10, 100)):
        lo, hi = p["interval"]
        assert 0 <= lo <= p["predicted"] <= hi <= 1 and p["level"] == 0.9
        assert p["measured"] == pytest.approx(passk.pass_at_k_counts(
            study["num_samples"][-1], study["num_passes"][-1], R, k).mean())
        assert p["covered"] == (lo <= p["measured"] <= hi)
    assert preds[0]["predicted"] < preds[1]["predicted"] < preds[2]["predicted"]
    backtested = {p["fitted_on"] for p in out["backtests"]["rows"] if p["quantity"] == "pass@k"}
    assert backtested == {3, 4, 5, 6}
    assert "pass@k" in out["backtests"]["summary"]["per_quantity"]


def test_two_circuit_fit_predicts_with_an_instance_bootstrap_interval(seven):
    rows, runs, study, out = seven
    tc = out["tasks"]["gen"]["two_circuit"]
    assert set(tc["params"]) == {"log_c1", "alpha1", "log_c2", "alpha2"}
    direct = F.fit_two_circuit(study["N"][:6], study["pu"][:6].mean(axis=1))
    row = next(p for p in out["predictions"] if p["method"] == "two-circuit")
    assert row["predicted"] == pytest.approx(float(direct.predict(N=study["N"][6:])[0]),
                                             rel=1e-6)
    lo, hi = row["interval"]
    assert lo < row["predicted"] < hi  # a real band, not a point
    band = out["tasks"]["gen"]["band"]["two-circuit"]
    assert len(band["point"]) == len(out["tasks"]["gen"]["band"]["N"])
    assert all(lo <= p <= hi for lo, p, hi in zip(band["low"], band["point"], band["high"]))
    # Fewer instances (same laws): a wider band.
    few = [r for r in rows if r.get("instance") in (None, "i0", "i1", "i2", "i3", "i4", "i5")]
    row_few = next(p for p in _analyze(few, runs)["predictions"]
                   if p["method"] == "two-circuit")
    assert row_few["interval"][1] - row_few["interval"][0] > hi - lo


def test_two_circuit_needs_five_fitted_rungs_and_says_so():
    rows, runs, _ = ladder(num_rungs=5, seed=1)
    out = _analyze(rows, runs)
    assert "needs >= 5" in out["tasks"]["gen"]["two_circuit"]["error"]
    assert not [p for p in out["predictions"] if p["method"] == "two-circuit"]
    assert "two-circuit fit" in "\n".join(hu.section("gen", out["tasks"]["gen"]))


def test_report_shows_pass_at_k_two_circuit_and_draws_it(seven, tmp_path):
    rows, runs, study, out = seven
    figs = figures.write_figures(out, tmp_path)
    report, results = markdown.write_report(out, figs, tmp_path, title="t", setup={})
    text = report.read_text()
    assert "| N | pass@1 | pass@10 | pass@100 |" in text
    assert "two-circuit fit (Hu et al. section 6" in text
    assert "| pass@k | gen | instance-level pass@100 |" in text
    saved = json.loads(results.read_text())
    assert saved["tasks"]["gen"]["pass_at_k"]["per_rung"][0]["values"]["10"]["point"] >= 0
    assert any(p["method"] == "two-circuit" for p in saved["predictions"])
    assert (tmp_path / figs["gen/pu_band"]).stat().st_size > 0


def _beam_rows(rows, passed):
    """Beam rows (W = 4) for the final checkpoints: passed[(run, instance)] -> (top, any)."""
    out = []
    for r in rows:
        if r["task"] == "gen" and r["metric"] == "instance":
            top, anyp = passed(r["run"], r["instance"])
            out.append(dict(r, task=beam_lib.beam_task_name("gen", 4), value=float(top),
                            detail=dict(beam_size=4, top_passed=top, any_passed=anyp,
                                        top_text="x", top_score=-1.0)))
    return out


def test_beam_table_counts_match_a_direct_count():
    rows, runs, study = ladder(num_rungs=5, seed=2)
    rng = np.random.default_rng(0)
    table_truth = {}

    def passed(run, inst):
        top = bool(rng.random() < 0.3)
        anyp = top or bool(rng.random() < 0.3)
        table_truth.setdefault(run, []).append((top, anyp))
        return top, anyp

    out = _analyze(rows + _beam_rows(rows, passed), runs)
    table = out["tasks"]["gen"]["beam"]
    assert [t["N"] for t in table] == sorted(int(n) for n in study["N"])
    for j, t in enumerate(table):
        truth = table_truth[f"d{t['N']}_s0"]
        assert t["beam_size"] == 4 and t["num_instances"] == len(truth) == 24
        assert t["beam_top"] == sum(a for a, _ in truth)
        assert t["beam_any"] == sum(b for _, b in truth)
        assert t["passuntil_solved"] == int((study["num_passes"][j] > 0).sum())
        assert t["random"]["10"] == pytest.approx(passk.pass_at_k_counts(
            study["num_samples"][j], study["num_passes"][j], R, 10).sum())
        assert t["pu"] == pytest.approx(study["pu"][j].mean())
    text = "\n".join(hu.section("gen", out["tasks"]["gen"]))
    t0 = table[0]
    assert (f"| {t0['N']:,} | 4 | {t0['beam_top']}/24 | {t0['beam_any']}/24 |") in text
    # No beam rows: no table.
    assert "beam" not in _analyze(rows, runs)["tasks"]["gen"]
