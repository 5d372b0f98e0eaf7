"""Tests for lmscale.fit.threshold (Du et al. loss threshold)."""
import numpy as np
import pytest

from lmscale.fit import threshold


def test_normalize_performance_random_is_zero_perfect_is_one():
    out = threshold.normalize_performance([0.25, 0.625, 1.0], 0.25)
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])
    brier = threshold.normalize_performance([0.75, 0.0], 0.75, perfect=0.0)
    np.testing.assert_allclose(brier, [0.0, 1.0])


@pytest.mark.parametrize("f,truth", [("linear", dict(eta=2.2, s=0.8)),
                                     ("power", dict(eta=2.2, s=0.8, p=1.5))])
def test_fit_loss_threshold_recovers_eta(f, truth):
    rng = np.random.default_rng(0)
    loss = rng.uniform(1.7, 3.0, 60)
    perf = threshold.threshold_curve(loss, truth["eta"], truth["s"], truth.get("p", 1.0))
    perf = perf + 0.01 * rng.standard_normal(loss.size)
    fit = threshold.fit_loss_threshold(loss, perf, f=f)
    boot = fit.bootstrap(num_resamples=100, seed=0)
    for name, value in truth.items():
        lo, hi = boot.interval(name, 0.99)
        assert lo <= value <= hi, (name, lo, value, hi)
    assert fit.params["eta"] == pytest.approx(2.2, abs=0.03 if f == "linear" else 0.1)
    assert fit.reliable


def test_threshold_not_bracketed_is_flagged():
    loss = np.linspace(1.7, 2.1, 10)
    fit = threshold.fit_loss_threshold(loss, 0.5 * (2.3 - loss))
    assert not fit.reliable and "not bracketed" in fit.reason


def test_size_threshold_matches_loss_law():
    L_inf, N0, alpha = 1.7, 8.8e13, 0.076
    n_star = threshold.size_threshold(2.2, L_inf, N0, alpha)
    assert L_inf + (N0 / n_star) ** alpha == pytest.approx(2.2, rel=1e-12)
    with pytest.raises(ValueError, match="never reaches"):
        threshold.size_threshold(1.6, L_inf, N0, alpha)


def test_correlations_of_monotone_data():
    loss = np.linspace(3.0, 2.0, 20)
    perf = np.exp(-loss)
    c = threshold.correlations(loss, perf)
    assert c["spearman"][0] == pytest.approx(-1.0)
    assert -1.0 < c["pearson"][0] < -0.99


def test_threshold_fit_has_a_predict_interval_that_says_what_it_carries():
    rng = np.random.default_rng(1)
    loss = rng.uniform(1.7, 3.0, 40)
    perf = threshold.threshold_curve(loss, 2.2, 0.8) + 0.01 * rng.standard_normal(40)
    fit = threshold.fit_loss_threshold(loss, perf)
    lo, hi = fit.predict_interval(0.9, num_resamples=40, loss=np.array([1.8, 2.5]))
    point = fit.predict(loss=np.array([1.8, 2.5]))
    assert np.all(lo <= point + 1e-9) and np.all(point <= hi + 1e-9) and hi[0] > lo[0]
    (p, _) = fit.prediction(0.9, 40, 0, loss=np.array([1.8, 2.5]))
    assert any("parameter uncertainty only" in r for r in p.reasons)


def test_fit_loss_threshold_refuses_losses_without_a_range():
    with pytest.raises(ValueError, match="span no range"):
        threshold.fit_loss_threshold(np.full(5, 2.0), np.linspace(0.1, 0.5, 5))
