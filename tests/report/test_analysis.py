"""Study analysis on synthetic result rows with known laws (no training)."""

import dataclasses
import json

import numpy as np
import pytest

from lmscale.report import analysis, figures, markdown
from lmscale.train.record import RunRecord

SIZES = [20_000, 45_000, 80_000, 140_000, 230_000]
L_INF, N0, ALPHA = 0.8, 3.0e4, 0.5  # Kaplan L(N) = L_inf + (N0/N)^alpha
PU_C, PU_ALPHA = 400.0, 0.55  # PU(N) = exp(-c N^-alpha)
ERR_EPS, ERR_K, ERR_GAMMA = 0.75, 3.17, 1.51
STEPS = 100


def record(name, **fields):
    """A `RunRecord` with the fields the analysis reads, the rest filled in."""
    base = dict(run_name=name, model_config={}, num_params=0, num_params_non_embedding=0,
                num_tokens=0, flops=0.0, token_multiplier=None, tokens_per_step=0,
                batch_size=1, seq_len=1, num_steps=0, vocab_spec="spm.model",
                loss_unit="nats/token", corpus="c", seed=0, status="done")
    base.update(fields)
    return RunRecord(**base)


def kaplan(n):
    return L_INF + (N0 / n) ** ALPHA


def true_pu(n, shift=0.0):
    return np.exp(-PU_C * np.exp(shift) * n ** -PU_ALPHA)


def _point(run, n, step):
    return dict(run=run, step=step, tokens=step * 1000, num_params=n + 5000,
                num_params_non_embedding=n, num_tokens=STEPS * 1000, flops=6.0 * n * step * 1000)


def synthetic(num_instances=12, seed=0, acc_noise=0.0):
    """Rows and run records of a ladder that follows the laws above exactly.

    PassUntil instances get exact expected counts: K = r / p (so r/K = p and the
    unbiased estimate differs slightly; the rows carry the true p as the estimate).
    """
    rng = np.random.default_rng(seed)
    shifts = np.linspace(-0.3, 0.3, num_instances)
    rows, runs = [], {}
    for n in SIZES:
        run = f"d{n}_s0"
        runs[run] = record(run, num_params=n + 5000, num_params_non_embedding=n,
                           num_tokens=STEPS * 1000, num_steps=STEPS, tokens_per_step=1000,
                           wall_s=1.0, seed=0)
        for step in (STEPS // 2, STEPS):
            p = _point(run, n, step)
            # Intermediate checkpoints: higher loss (only used by the loss-view plots).
            loss = kaplan(n) * (1.0 if step == STEPS else 1.15)
            rows.append(dict(p, task="validation", metric="validation_loss", value=loss))
            err = ERR_EPS - ERR_K * np.exp(-ERR_GAMMA * loss)  # Gadre et al. Err(L)
            acc = float(1.0 - err + acc_noise * rng.normal())
            rows += [dict(p, task="mc", metric="accuracy", value=acc),
                     dict(p, task="mc", metric="correct_choice_prob", value=acc * 0.9),
                     dict(p, task="mc", metric="brier_score", value=1.0 - acc)]
            pus = true_pu(n, shifts)
            for i, pu in enumerate(pus):
                rows.append(dict(p, task="gen", metric="instance", value=float(pu),
                                 instance=f"i{i}",
                                 detail=dict(estimate=float(pu), num_samples=int(2 / pu),
                                             num_passes=2, capped=False,
                                             answer_loss=float(-np.log(pu) / 3))))
            rows.append(dict(p, task="gen", metric="passuntil", value=float(pus.mean())))
    return rows, runs


def test_predictions_recover_known_laws():
    rows, runs = synthetic()
    out = analysis.analyze(rows, runs, mc_tasks=["mc"], passuntil_tasks=["gen"],
                           random_baselines={"mc": 0.25}, held_out=1, passuntil_r=2)
    preds = {(p["task"], p["method"] if p["task"] == "gen" else p["quantity"]): p
             for p in out["predictions"]}
    loss = preds[("validation", "validation loss (nats/token)")]
    assert loss["measured"] == pytest.approx(kaplan(SIZES[-1]))
    assert loss["rel_error"] < 1e-4
    law = out["loss_law"]["params"]
    assert law["alpha"] == pytest.approx(ALPHA, rel=1e-3)
    # Every instance follows its own exact law: the instance-level fit is exact.
    inst = preds[("gen", "instance-level")]
    assert inst["measured"] == pytest.approx(true_pu(SIZES[-1], np.linspace(-.3, .3, 12)).mean())
    assert inst["rel_error"] < 1e-6
    # The dataset mean of different instances is not exactly a task law: small, nonzero.
    assert 0 < preds[("gen", "dataset-level")]["rel_error"] < 0.05
    assert out["tasks"]["gen"]["growth"]["cls"] in ("linear", "convex", "concave")
    # Error law chained on the predicted loss: accuracy follows Err(L) exactly here.
    acc = preds[("mc", "accuracy")]
    assert acc["method"].endswith("-> Err(L)")
    assert acc["rel_error"] < 0.01
    held = [r for r in out["rungs"] if r["held_out"]]
    assert [r["N"] for r in held] == [SIZES[-1]]


def test_held_out_rung_does_not_influence_the_fits():
    rows, runs = synthetic()
    big = [r for r in rows if r["num_params_non_embedding"] == SIZES[-1]]
    for r in big:
        if r["metric"] == "validation_loss":
            r["value"] *= 1.5
    out = analysis.analyze(rows, runs, passuntil_tasks=["gen"], held_out=1, passuntil_r=2)
    loss = next(p for p in out["predictions"] if p["task"] == "validation")
    assert loss["predicted"] == pytest.approx(kaplan(SIZES[-1]), rel=1e-4)
    assert loss["rel_error"] == pytest.approx(1 / 3, rel=1e-3)


def test_too_few_rungs_and_missing_loss_are_reported():
    rows, runs = synthetic()
    small = {k: v for k, v in runs.items() if v.num_params_non_embedding <= SIZES[2]}
    with pytest.raises(ValueError, match="rung"):
        analysis.analyze(rows, small, held_out=1)
    no_final = [r for r in rows if not (r["metric"] == "validation_loss" and r["step"] == STEPS
                                        and r["num_params_non_embedding"] == SIZES[1])]
    with pytest.raises(ValueError, match="no validation loss"):
        analysis.analyze(no_final, runs, held_out=1)


def test_all_zero_passuntil_is_reported_not_fatal():
    rows, runs = synthetic()
    for r in rows:
        if r["task"] == "gen" and r["metric"] == "instance":
            r["detail"]["estimate"] = 0.0
    out = analysis.analyze(rows, runs, passuntil_tasks=["gen"], held_out=1, passuntil_r=2)
    task = out["tasks"]["gen"]
    assert "error" in task["dataset_fit"]
    assert "error" in task["growth"]
    assert not any(p["task"] == "gen" and p["method"] == "dataset-level"
                   for p in out["predictions"])


@pytest.mark.parametrize("form", ["kaplan", "kaplan_floor", "compute", "unknown"])
def test_loss_figure_draws_whichever_law_was_chosen(form, tmp_path):
    rows, runs = synthetic()
    out = analysis.analyze(rows, runs, held_out=1)
    # the curve each form's fit carries (fit.select: kaplan_floor fits Kaplan's L(N))
    law = dict(out["loss_law"], form=form,
               law={"kaplan_floor": "kaplan"}.get(form, form))
    if form in ("kaplan", "kaplan_floor"):
        law["params"] = dict(L_inf=L_INF, N0=N0, alpha=ALPHA)
    elif form == "compute":  # whatever the analysis chose, a compute-law parameter set
        law["params"] = dict(E=0.5, lam=50.0, eta=0.1)
    path = figures.loss_vs_compute(dict(out, loss_law=law), tmp_path / f"{form}.png")
    assert path.stat().st_size > 5000
    assert (figures.law_curve(law, out["rungs"]) is None) == (form == "unknown")


@pytest.mark.parametrize("form", ["power", "power_compute"])
def test_loss_figure_draws_the_power_laws(form):
    rows, runs = synthetic()
    out = analysis.analyze(rows, runs, held_out=1)
    params = dict(N0=N0, alpha=ALPHA) if form == "power" else dict(lam=50.0, eta=0.1)
    C, loss = figures.law_curve(dict(form=form, law=form, params=params), out["rungs"])
    # on the ladder's D(N) the curve is the pure power law itself
    want = (params["lam"] * C ** -params["eta"] if form == "power_compute" else None)
    if form == "power":  # C = 6 N D(N) is monotone in N: check the law's slope in log-log
        slopes = np.diff(np.log(loss)) / np.diff(np.log(C))
        assert np.ptp(slopes) < 1e-9 and slopes[0] < 0
    else:
        np.testing.assert_allclose(loss, want, rtol=1e-12)


def test_report_files_are_written(tmp_path):
    rows, runs = synthetic(acc_noise=0.01)
    out = analysis.analyze(rows, runs, mc_tasks=["mc"], passuntil_tasks=["gen"],
                           random_baselines={"mc": 0.25}, held_out=1, passuntil_r=2)
    figs = figures.write_figures(out, tmp_path)
    for name in ("loss_vs_compute", "prediction_vs_truth", "gen/pu_scaling", "mc/accuracy"):
        assert name in figs and (tmp_path / figs[name]).stat().st_size > 5000, name
    report, results = markdown.write_report(out, figs, tmp_path, title="synthetic",
                                            setup={"ladder": "5 rungs"})
    text = report.read_text()
    assert "## Prediction vs measurement" in text
    loss_pred = next(p for p in out["predictions"] if p["task"] == "validation")
    assert f"{100 * loss_pred['rel_error']:.2f}%" in text
    data = json.loads(results.read_text())
    assert data["predictions"] == json.loads(json.dumps(out["predictions"]))
    assert "_fits" not in data["tasks"]["gen"]


def test_runs_of_one_size_with_different_token_counts_are_separate_rungs():
    # Issue 13 item 8: _rungs grouped by N alone, averaging different D as if they were seeds.
    info = lambda name, d, seed, n=100: record(  # noqa: E731
        name, num_params=n + 5, num_params_non_embedding=n, num_tokens=d, num_steps=d // 10,
        seed=seed)
    runs = {"a_M2_s0": info("a_M2_s0", 200, 0), "a_M2_s1": info("a_M2_s1", 200, 1),
            "a_M8_s0": info("a_M8_s0", 800, 0), "b_M2_s0": info("b_M2_s0", 400, 0, n=200)}
    rungs = analysis._rungs(runs)
    assert [(r.N, r.D) for r in rungs] == [(100, 200), (100, 800), (200, 400)]
    assert rungs[0].runs == ["a_M2_s0", "a_M2_s1"] and rungs[1].runs == ["a_M8_s0"]
    assert rungs[1].final_steps == {"a_M8_s0": 80}


def test_loss_is_labelled_with_the_records_unit():
    rows, runs = synthetic()
    out = analysis.analyze(rows, runs, held_out=1)
    assert out["predictions"][0]["quantity"] == "validation loss (nats/token)"
    byte_runs = {k: dataclasses.replace(v, loss_unit="nats/byte") for k, v in runs.items()}
    out = analysis.analyze(rows, byte_runs, held_out=1)
    assert out["predictions"][0]["quantity"] == "validation loss (nats/byte)"
    spm = {k: dataclasses.replace(v, vocab_spec="/x/spm.model", loss_unit="")
           for k, v in runs.items()}
    assert analysis.loss_unit(spm) == "nats/token"


def test_every_prediction_has_an_interval_at_the_stated_level():
    rows, runs = synthetic(acc_noise=0.01)
    out = analysis.analyze(rows, runs, mc_tasks=["mc"], passuntil_tasks=["gen"],
                           random_baselines={"mc": 0.25}, held_out=1, passuntil_r=2,
                           level=0.8, num_resamples=50)
    quantities = {p["quantity"] for p in out["predictions"]}
    assert quantities == {"validation loss (nats/token)", "accuracy", "PassUntil PU"}
    for p in out["predictions"]:
        lo, hi = p["interval"]
        assert p["level"] == 0.8 and lo <= p["predicted"] <= hi, p
        assert p["covered"] == (lo <= p["measured"] <= hi), p
        assert isinstance(p["reasons"], list)
    # PU and accuracy intervals stay inside [0, 1].
    assert all(0 <= v <= 1 for p in out["predictions"]
               if "loss" not in p["quantity"] for v in p["interval"])
    # The law was chosen by backtest among the candidates, each one's error reported.
    law = out["loss_law"]
    # (fit.select: every law, also without the smallest size; ties go to fewer parameters)
    assert {"power", "power_compute", "kaplan", "kaplan_floor", "compute"} <= set(
        law["backtest_error"])
    errs = {k: (np.inf if v is None else v) for k, v in law["backtest_error"].items()}
    assert errs[law["form"]] <= min(errs.values()) + 1e-4
    # Without the PassUntil cap the PU intervals fall back to parameter uncertainty only,
    # and the reasons say so (kept, not dropped).
    pu = [p for p in out["predictions"] if p["quantity"] == "PassUntil PU"]
    assert all(any("parameter uncertainty" in r for r in p["reasons"]) for p in pu)


def test_pu_intervals_are_predictive_when_r_and_the_cap_are_known():
    rows, runs = synthetic(acc_noise=0.01)
    out = analysis.analyze(rows, runs, passuntil_tasks=["gen"], held_out=1, passuntil_r=2,
                           passuntil_k_max=20000, num_resamples=50)
    pu = [p for p in out["predictions"] if p["quantity"] == "PassUntil PU"]
    assert {p["method"] for p in pu} == {"dataset-level", "instance-level"}
    for p in pu:
        lo, hi = p["interval"]
        assert 0 <= lo <= hi <= 1 and lo < hi, p
        assert not any("parameter uncertainty" in r for r in p["reasons"]), p


def test_report_rows_show_interval_measurement_and_coverage():
    rows, runs = synthetic(acc_noise=0.01)
    out = analysis.analyze(rows, runs, mc_tasks=["mc"], held_out=1, num_resamples=50)
    text = markdown.render(out, {}, title="t", setup={})
    loss = next(p for p in out["predictions"] if p["task"] == "validation")
    lo, hi = loss["interval"]
    expected = (f"{markdown._fmt(loss['predicted'])} [{markdown._fmt(lo)}, {markdown._fmt(hi)}]"
                f" | 90% | {markdown._fmt(loss['measured'])} | {100 * loss['rel_error']:.2f}% | "
                f"{'yes' if loss['covered'] else 'no'} |")
    assert expected in text
    assert "Chosen by backtest" in text and "kaplan_floor" in text
    for p in out["predictions"]:
        for reason in p["reasons"]:
            assert reason in text


def test_loss_axis_uses_the_records_unit_and_panels_are_drawn(tmp_path, monkeypatch):
    rows, runs = synthetic()
    for info in runs.values():
        info.loss_unit = "nats/byte"
    out = analysis.analyze(rows, runs, passuntil_tasks=["gen"], held_out=1, num_resamples=30)
    labels = []
    import matplotlib.axes
    orig = matplotlib.axes.Axes.set_ylabel
    monkeypatch.setattr(matplotlib.axes.Axes, "set_ylabel",
                        lambda self, text, *a, **k: (labels.append(text), orig(self, text, *a, **k))[1])
    figs = figures.write_figures(out, tmp_path)
    assert "validation loss (nats/byte)" in labels
    assert (tmp_path / figs["prediction_vs_truth"]).stat().st_size > 5000
    assert sum(label.startswith("predicted (90% interval)") for label in labels) == 2


def test_targets_are_predicted_first_and_every_rung_is_backtested():
    rows, runs = synthetic(acc_noise=0.01)
    big = 2 * SIZES[-1]
    out = analysis.analyze(rows, runs, mc_tasks=["mc"], passuntil_tasks=["gen"],
                           held_out=1, passuntil_r=2, num_resamples=50,
                           targets=[("next", big, STEPS * 1000)])
    # The never-trained target: loss, accuracy and two PU predictions, no measurement.
    assert {(p["quantity"], p["method"]) for p in out["targets"]} >= {
        ("validation loss (nats/token)", out["targets"][0]["method"])}
    assert len(out["targets"]) == 4 and all(p["measured"] is None for p in out["targets"])
    loss_t = next(p for p in out["targets"] if p["task"] == "validation")
    assert loss_t["N"] == big and loss_t["target"] == "next"
    assert loss_t["predicted"] == pytest.approx(kaplan(big), rel=1e-3)
    assert loss_t["interval"][0] <= loss_t["predicted"] <= loss_t["interval"][1]
    # Backtests: rung 4 from rungs 1-3, rung 5 (the held-out one) from rungs 1-4.
    bt = out["backtests"]
    assert sorted({(p["N"], p["fitted_on"]) for p in bt["rows"]}) == [(SIZES[3], 3),
                                                                      (SIZES[4], 4)]
    s = bt["summary"]
    assert s["n"] == len(bt["rows"]) and s["covered"] == sum(p["covered"] for p in bt["rows"])
    text = markdown.render(out, {}, title="t", setup={})
    line = markdown.coverage_line(s)
    assert line.startswith(f"backtests: {s['covered']} of {s['n']} 90% intervals covered")
    assert text.index("## Targets (never trained)") < text.index("## Prediction vs measurement")
    assert line in text and "| next |" in text
    summary = markdown.console_summary("w/report.md", out).splitlines()
    assert summary[:2] == ["", "Report: w/report.md"] and summary[-1] == line
    rows = [l for l in summary if l.startswith("| validation loss")]
    assert len(rows) == sum(p["task"] == "validation"
                            for p in out["targets"] + out["predictions"])


def test_pu_figure_has_measured_exact_intervals_and_a_band(tmp_path):
    rows, runs = synthetic()
    out = analysis.analyze(rows, runs, passuntil_tasks=["gen"], held_out=1, passuntil_r=2,
                           num_resamples=40)
    info = out["tasks"]["gen"]
    # Instances pass 2 times in 2/p samples: each exact interval contains its p.
    for r, n in zip(info["per_rung"], SIZES):
        lo, hi = r["interval"]
        assert lo < r["pu"] < hi, r
    band = info["band"]
    assert set(band) == {"N", "dataset-level", "instance-level"}
    assert all(a <= p <= b for a, p, b in zip(band["instance-level"]["low"],
                                            band["instance-level"]["point"],
                                            band["instance-level"]["high"]))
    figs = figures.write_figures(out, tmp_path)
    assert (tmp_path / figs["gen/pu_band"]).stat().st_size > 5000
    assert figs["gen/pu_band"] in markdown.render(out, figs, title="t", setup={})


def test_three_rungs_fall_back_to_kaplan_and_give_the_whole_range_not_zero_width():
    rows, runs = synthetic()
    small = {k: v for k, v in runs.items() if v.num_params_non_embedding <= SIZES[3]}
    out = analysis.analyze(rows, small, held_out=1, num_resamples=30)
    loss = out["predictions"][0]
    assert out["loss_law"]["form"] == "kaplan" and out["loss_law"]["backtest_error"] == {}
    assert loss["predicted"] == pytest.approx(kaplan(SIZES[3]), rel=1e-3)
    # 3 runs for 3 parameters: no residual, so no noise estimate; the interval is the
    # loss's whole range (flagged), never a zero-width [x, x].
    assert loss["interval"][0] == 0.0 and loss["interval"][1] == float("inf")
    assert any("no residual" in r for r in loss["reasons"])
    assert any("too few to choose the loss law" in n for n in out["notes"])


def test_loss_law_falls_back_to_kaplan_when_no_candidate_survives_the_backtest(monkeypatch):
    rows, runs = synthetic(acc_noise=0.01)

    def all_fail(*args, **kwargs):
        raise ValueError("choose_loss_law: every candidate failed")
    monkeypatch.setattr(analysis.F, "choose_loss_law", all_fail)
    out = analysis.analyze(rows, runs, held_out=1, num_resamples=50)
    assert out["loss_law"]["form"] == "kaplan"
    assert any("no candidate law survived the backtest" in n for n in out["notes"])
    loss = [p for p in out["predictions"] if "loss" in p["quantity"]]
    assert loss and all(p["interval"][0] <= p["interval"][1] for p in loss)


def _with_answer_loss(rows):
    """The synthetic rows plus the MC task's answer loss per checkpoint (a loss that the
    task's accuracy follows)."""
    extra = [dict(r, metric="answer_loss", value=0.5 * v) for r in rows
             for v in [r["value"]] if r["task"] == "validation"]
    return rows + [dict(r, task="mc") for r in extra]


def test_accuracy_method_is_chosen_by_backtest_between_gadre_and_two_step(monkeypatch):
    rows, runs = synthetic(acc_noise=0.01)
    out = analysis.analyze(_with_answer_loss(rows), runs, mc_tasks=["mc"], held_out=1,
                           num_resamples=30)
    am = out["tasks"]["mc"]["accuracy_method"]
    assert set(am["backtest_error"]) == {"gadre", "two_step"}
    errs = {k: (np.inf if v is None else v) for k, v in am["backtest_error"].items()}
    assert am["choice"] == min(errs, key=errs.get)
    text = markdown.render(out, {}, title="t", setup={})
    assert "Accuracy method:" in text and "Bhagia" in text

    real = analysis.predict_mc.taskloss.choose_accuracy_method
    def prefer_two_step(*args, **kwargs):
        res = real(*args, **kwargs)
        return dict(res, choice="two_step")
    monkeypatch.setattr(analysis.predict_mc.taskloss, "choose_accuracy_method",
                        prefer_two_step)
    out = analysis.analyze(_with_answer_loss(rows), runs, mc_tasks=["mc"], held_out=1,
                           num_resamples=30)
    (acc,) = [p for p in out["predictions"] if p["quantity"] == "accuracy"]
    assert out["tasks"]["mc"]["accuracy_method"]["choice"] == "two_step"
    assert acc["method"].startswith("two-step") and acc["interval"][0] < acc["interval"][1]


def test_loss_threshold_has_an_interval():
    rows, runs = synthetic(acc_noise=0.01)
    out = analysis.analyze(rows, runs, mc_tasks=["mc"], random_baselines={"mc": 0.25},
                           held_out=1, num_resamples=30)
    thr = out["tasks"]["mc"]["threshold"]
    lo, hi = thr["eta_interval"]
    assert lo <= thr["params"]["eta"] <= hi and lo < hi and thr["level"] == 0.9
    text = markdown.render(out, {}, title="t", setup={})
    assert f"[{markdown._fmt(lo)}, {markdown._fmt(hi)}] (90%" in text


def test_a_row_whose_interval_leaves_its_point_out_is_widened_and_says_so():
    rung = analysis._Rung(10, 12, 100, [], {})
    pred = analysis.F.Prediction("pu", 0.25, 0.27, 0.55, 0.9, "dataset-level",
                                 bounds=(0.0, 1.0))
    row = analysis._row(pred, "PassUntil PU", "gen", rung, 0.3)
    assert row["interval"] == [0.25, 0.55] and row["covered"] is True
    assert any("left the point out" in r for r in row["reasons"])
    inside = analysis._row(analysis.F.Prediction("pu", 0.3, 0.27, 0.55, 0.9), "PU", "gen",
                           rung, 0.3)
    assert inside["interval"] == [0.27, 0.55] and inside["reasons"] == []


def test_report_names_the_sizes_a_loss_law_leaves_out():
    rows, runs = synthetic()
    out = analysis.analyze(rows, runs, held_out=1)
    assert out["loss_law"]["dropped_N"] == []   # the default choice fits every size
    law = dict(out["loss_law"], dropped_N=[23712])
    text = markdown.render(dict(out, loss_law=law), {}, title="t", setup={})
    assert "leaves out of its fit the smallest size(s) N = 23,712." in text
    assert "leaves out" not in markdown.render(out, {}, title="t", setup={})


def test_loss_law_can_leave_the_smallest_rung_out():
    rows, runs = synthetic()
    # The smallest rung 20% above the law: a fit that keeps it is pulled off the law.
    rows = [dict(r, value=r["value"] * 1.2) if r["metric"] == "validation_loss"
            and r["num_params_non_embedding"] == SIZES[0] else r for r in rows]
    kept = analysis.analyze(rows, runs, held_out=1)
    left = analysis.analyze(rows, runs, held_out=1, loss_drop_smallest=(1,))
    assert kept["loss_law"]["dropped_N"] == []
    assert left["loss_law"]["dropped_N"] == [SIZES[0]]
    assert left["loss_law"]["form"].endswith("w/o smallest")
    err = lambda out: abs(out["predictions"][0]["rel_error"])
    assert err(left) < err(kept)


def test_backtest_allowance_extends_the_side_the_method_erred_by_distance():
    """The rung-below backtest of the same method (or the one row of its quantity) moves
    one bound by exp(|e| s); the point, the other bound and rows without a match stay."""
    import math
    import types

    rungs = [types.SimpleNamespace(N=n) for n in (1e4, 2e4, 4e4, 8e4, 1.6e5)]

    def row(q, method, N, pred, lo, hi, measured=None, fitted_on=4, task="t"):
        return dict(quantity=q, task=task, method=method, N=N, predicted=pred,
                    interval=[lo, hi], measured=measured, reasons=[], fitted_on=fitted_on,
                    covered=None if measured is None else lo <= measured <= hi)
    backtests = [  # fitted on rungs[:3], predicting rungs[3] = 8e4
        row("PassUntil PU", "instance-level", 8e4, 0.1, 0.09, 0.12, measured=0.125,
            fitted_on=3),
        row("PassUntil PU", "dataset-level", 8e4, 0.1, 0.08, 0.12, measured=0.1,
            fitted_on=3),
        row("validation loss (nats/byte)", "kaplan law", 8e4, 2.0, 1.9, 2.1, measured=1.8,
            fitted_on=3, task="validation"),
        row("accuracy", "L kaplan -> Err(L)", 8e4, 0.5, 0.4, 0.6, measured=0.6, fitted_on=2)]
    rows = [row("PassUntil PU", "instance-level", 1.6e5, 0.17, 0.16, 0.21, measured=0.23),
            row("PassUntil PU", "instance-level", 3.2e5, 0.3, 0.2, 0.9),
            row("validation loss (nats/byte)", "power law", 1.6e5, 1.7, 1.6, 1.8,
                task="validation"),
            row("accuracy", "L power -> Err(L)", 1.6e5, 0.6, 0.5, 0.7)]
    analysis.backtest_allowance(rows, backtests, rungs, 4)
    e = math.log(0.125 / 0.1)  # 25% low one rung back; the next rung is 1 step on
    assert rows[0]["interval"] == pytest.approx([0.16, 0.21 * math.exp(e)])
    assert rows[0]["covered"] and rows[0]["predicted"] == 0.17  # 0.23 <= 0.2625
    assert "raised from [0.16, 0.21]" in rows[0]["reasons"][0] and "+25.0%" in \
        rows[0]["reasons"][0]
    assert rows[0]["backtest_allowance"]["scale"] == pytest.approx(1.0)
    # Two rungs on: 0.9 * exp(2 e) = 1.41, clipped to a PU's bound 1.
    assert rows[1]["interval"] == [0.2, 1.0] and rows[1]["backtest_allowance"]["scale"] == 2
    # The loss row takes the one loss backtest (another law): 10% high, low bound lowered.
    lo = 1.6 / math.exp(abs(math.log(1.8 / 2.0)))
    assert rows[2]["interval"] == pytest.approx([lo, 1.8])
    # The accuracy backtest was fitted on 2 rungs, not k - 1 = 3: no match, unchanged.
    assert rows[3]["interval"] == [0.5, 0.7] and "backtest_allowance" not in rows[3]
    untouched = [row("PassUntil PU", "instance-level", 1.6e5, 0.17, 0.16, 0.21)]
    analysis.backtest_allowance(untouched, backtests, rungs, 3)  # k < 4: no backtest
    assert untouched[0]["interval"] == [0.16, 0.21]
