"""Du et al.'s loss view on synthetic rows whose accuracy has a known loss threshold."""

import numpy as np
import pytest

from lmscale import fit as F
from lmscale.report import lossview as LV
from tests.report import synthetic_ot as S

TASKS = ["mc_a"]


@pytest.fixture(scope="module")
def data():
    # Every size at M=20 (the L(N) for N0) and two more sizes' over-trained runs.
    runs = S.grid(sizes=(10_000, 20_000, 40_000, 80_000, 160_000), mults=(20,))
    runs.update(S.grid(sizes=(20_000, 40_000), mults=(80,)))
    return runs, S.rows(runs, TASKS, questions=80, seed=1)


@pytest.fixture(scope="module")
def view(data):
    runs, rows = data
    return LV.analyze_lossview(rows, runs, mc_tasks=TASKS, random_baselines={"mc_a": 0.25},
                               num_resamples=30)


def test_baselines():
    assert LV.baseline_of("accuracy", 0.25) == (0.25, 1.0)
    assert LV.baseline_of("correct_choice_prob", 0.25) == (0.25, 1.0)
    assert LV.baseline_of("brier_score", 0.25) == (0.75, 0.0)


def test_checkpoints_cover_every_step_with_compute(data, view):
    runs, _ = data
    cks = view["checkpoints"]
    assert len(cks) == sum(r["num_steps"] for r in runs.values())
    assert sum(c["final"] for c in cks) == len(runs)
    c = cks[0]
    assert c["C"] == pytest.approx(6.0 * c["N"] * c["tokens"])
    non = LV.checkpoints(S.rows(runs, TASKS, questions=4, instances=False), TASKS,
                         counting="non_embedding")
    assert {c["N"] for c in non} == {r["num_params_non_embedding"] for r in runs.values()}


def test_accuracy_threshold_recovered_with_intervals(view):
    thr = view["tasks"]["mc_a"]["accuracy"]["threshold"]
    assert thr["reliable"], thr
    assert thr["eta"] == pytest.approx(S.THRESH_ETA, abs=0.2)
    for key in ("eta_interval_questions", "eta_interval_checkpoints"):
        lo, hi = thr[key]
        assert lo <= hi and lo < S.THRESH_ETA + 0.3 and hi > S.THRESH_ETA - 0.3, (key, thr)


def test_continuous_metrics_fitted_and_correlated(view):
    tv = view["tasks"]["mc_a"]
    assert tv["question_bootstrap"]
    for metric in ("correct_choice_prob", "brier_score"):
        thr = tv[metric]["threshold"]
        assert "params" in thr and thr["eta_interval_questions"] is not None, (metric, thr)
    # Performance rises as loss falls: accuracy and CCP fall with loss, Brier rises.
    assert tv["accuracy"]["vs_loss"]["spearman"][0] < -0.5
    assert tv["correct_choice_prob"]["vs_loss"]["spearman"][0] < -0.5
    assert tv["brier_score"]["vs_loss"]["spearman"][0] > 0.5
    # Compute is beside it: more compute, higher accuracy.
    assert tv["accuracy"]["vs_compute"]["spearman"][0] > 0


def test_size_threshold_from_the_shared_multiplier(view):
    law = view["size_law"]
    assert law["M"] == 20 and law["N"] == [10_000, 20_000, 40_000, 80_000, 160_000]
    thr = view["tasks"]["mc_a"]["accuracy"]["threshold"]
    p = law["params"]
    if thr["eta"] > p["L_inf"]:
        assert thr["N0"] == pytest.approx(F.size_threshold(thr["eta"], p["L_inf"], p["N0"],
                                                           p["alpha"]))
        # Loss at the threshold size is eta (L(N) reaches it there).
        assert F.laws.kaplan(thr["N0"], p["L_inf"], p["N0"], p["alpha"]) == \
            pytest.approx(thr["eta"], rel=1e-6)
    else:
        assert thr["N0"] is None


def test_no_question_rows_means_no_question_interval(data):
    runs, _ = data
    rows = S.rows(runs, TASKS, questions=20, instances=False)
    out = LV.analyze_lossview(rows, runs, mc_tasks=TASKS, random_baselines={"mc_a": 0.25},
                              num_resamples=10)
    tv = out["tasks"]["mc_a"]
    assert not tv["question_bootstrap"]
    assert "eta_interval_questions" not in tv["accuracy"]["threshold"]


def test_too_few_sizes_for_N0_is_said(data):
    runs, _ = data
    few = {k: v for k, v in runs.items() if v["num_params"] in (10_000, 20_000)}
    fit, law = LV.size_law(LV.checkpoints(S.rows(few, TASKS, questions=4,
                                                 instances=False), TASKS))
    assert fit is None and "needs >= 3" in law["error"]


def test_section_and_figure(view, tmp_path):
    path = LV.figure(view, "mc_a", tmp_path / "lv.png")
    assert path.stat().st_size > 1000
    text = "\n".join(LV.section(view, {"lossview/mc_a": "lv.png"}))
    for needle in ("## Loss view (Du et al.)", "| accuracy |", "| correct_choice_prob |",
                   "| brier_score |", "L(N) for N0: Kaplan", "![mc_a"):
        assert needle in text
