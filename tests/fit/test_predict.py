"""Tests for lmscale.fit.predict: errors, Pareto filter, search-filter-fit, reliability."""
import numpy as np
import pytest

from lmscale.fit import laws, predict


def test_relative_error():
    np.testing.assert_allclose(predict.relative_error([1.1, 0.9], [1.0, 1.0]), [0.1, 0.1])
    with pytest.raises(ValueError, match="true contains 0"):
        predict.relative_error([1.0], [0.0])


def test_pareto_frontier_by_hand():
    C = np.array([1, 2, 2, 3, 4, 5.0])
    loss = np.array([5, 4.5, 4.0, 4.2, 3.5, 3.6])
    np.testing.assert_array_equal(predict.pareto_frontier(C, loss),
                                  [True, False, True, False, True, False])


def test_search_filter_fit_recovers_frontier_law():
    rng = np.random.default_rng(0)
    # A sweep: 5 configurations per compute budget, one of them on the law, the others
    # 2-10% worse (badly tuned); the frontier must be exactly the on-law runs.
    levels = np.geomspace(1e16, 1e19, 12)
    C = np.repeat(levels, 5)
    best = laws.compute_law(C, 2.0, 80.0, 0.1)
    worse = np.tile([0.0, 1.0, 1.0, 1.0, 1.0], 12) * rng.uniform(0.02, 0.1, C.size)
    loss = best * (1 + worse)
    out = predict.search_filter_fit(C, loss, num_resamples=50)
    np.testing.assert_array_equal(out["frontier"], worse == 0)
    pred = out["fit"].predict(C=np.array([1e21]))[0]
    assert pred == pytest.approx(laws.compute_law(1e21, 2.0, 80.0, 0.1), rel=1e-6)
    lo, hi = out["bootstrap"].predict_interval(0.99, C=np.array([1e21]))
    assert lo[0] <= pred <= hi[0]


def test_compute_reliability_error_shrinks_with_compute():
    N = np.repeat(np.geomspace(1e7, 4e8, 5), 2)
    D = N * np.tile([20.0, 320.0], 5)
    truth = dict(E=1.84, a=212.0, b=367.0, eta=0.136)
    rng = np.random.default_rng(1)
    loss = laws.FORMS["overtrain"].predict(truth, N, D) * (1 + 0.004 * rng.standard_normal(10))
    tN, tD = np.array([6.9e9]), np.array([1.38e11])
    tl = laws.FORMS["overtrain"].predict(truth, tN, tD)
    rows = predict.compute_reliability(N, D, loss, tN, tD, tl)
    assert [r["num_runs"] for r in rows] == list(range(5, 11))
    assert all(a["flops"] < b["flops"] for a, b in zip(rows, rows[1:]))
    assert rows[-1]["loss_rel_err"][0] < 0.02


def test_gadre_default_fit_on_all_three_datasets(shared_data):
    path = shared_data / "gadre2024" / "testbed.csv"
    rpj = predict.gadre_default_fit(path, "rpj")
    np.testing.assert_allclose(100 * rpj["loss_rel_err"], [0.7103, 0.7320], atol=0.02)
    np.testing.assert_allclose(100 * rpj["err_rel_err"], [3.6365, 0.0464], atol=0.02)
    for ds in ("c4_original", "rw_original"):
        out = predict.gadre_default_fit(path, ds)
        assert len(out["names"]) == 2 and np.all(out["loss_rel_err"] < 0.05)
    with pytest.raises(ValueError, match="no rows"):
        predict.gadre_default_fit(path, "pile")


def test_gadre_targets_are_covered_by_their_90_percent_intervals(shared_data):
    path = shared_data / "gadre2024"
    covered, total = 0, 0
    for ds in ("rpj", "c4_original", "rw_original"):
        out = predict.gadre_intervals(path / "testbed.csv", path / "tasks.csv", ds)
        for p, true in zip(out["loss_pred_int"] + out["err_pred_int"],
                           np.concatenate([out["loss_true"], out["err_true"]])):
            total += 1
            covered += p.covers(true)
            assert p.level == 0.9 and p.low < p.point < p.high
        # The intervals keep the Table 1 point predictions.
        np.testing.assert_allclose([p.point for p in out["err_pred_int"]], out["err_pred"])
        np.testing.assert_allclose([p.point for p in out["loss_pred_int"]], out["loss_pred"])
        assert all(0 <= p.low and p.high <= 1 for p in out["err_pred_int"])
    assert total == 12 and covered == 12
