"""Tests for lmscale.fit.simulate and calibration: intervals cover at their level."""
import functools

import numpy as np
import pytest

from lmscale.fit import calibration, fitters, laws, simulate
from lmscale.fit.prediction import Prediction


def test_loss_intervals_cover_at_their_nominal_level():
    spec = simulate.LadderSpec(num_resamples=50)
    row = calibration.coverage(functools.partial(simulate.loss_trial, spec=spec),
                               num_sims=100, seed=1)
    assert row["num_failed"] == 0, row["failures"][:3]
    assert 0.82 <= row["coverage"][0.9] <= 0.97, row
    assert row["coverage"][0.5] < row["coverage"][0.8] < row["coverage"][0.9] + 1e-9
    assert row["median_width"][0.5] < row["median_width"][0.9]


def test_coverage_counts_misses_and_failures():
    def biased(rng):   # an interval that never contains the truth
        return 1.0, {lv: Prediction("x", 2.0, 1.5, 2.5, lv) for lv in (0.5, 0.9)}
    row = calibration.coverage(biased, 10, levels=(0.5, 0.9))
    assert row["coverage"] == {0.5: 0.0, 0.9: 0.0} and not calibration.within(row)

    calls = iter(range(100))
    def flaky(rng):
        if next(calls) % 2:
            raise RuntimeError("no convergence")
        return 1.0, {0.9: Prediction("x", 1.0, 0.5, 1.5, 0.9)}
    row = calibration.coverage(flaky, 10, levels=(0.9,))
    assert row["num_failed"] == 5 and row["failures"][0].startswith("RuntimeError")
    assert row["coverage"][0.9] == 1.0


def test_simulated_ladder_has_binomial_errors_and_extra_seeds():
    data = simulate.ladder(np.random.default_rng(0), simulate.LadderSpec(num_questions=400))
    assert data["N"].size == 7 + 2 * 2
    assert np.all(np.isclose(data["err"] * 400, np.round(data["err"] * 400)))


def test_error_interval_stays_in_unit_interval_and_has_question_noise():
    loss = np.linspace(2.6, 4.0, 8)
    err = np.clip(laws.error_law(loss, 0.86, 2.2, 0.71), 0, 1)
    ef = fitters.fit_error_law(loss, err, num_questions=1e7)
    (p,) = ef.prediction(0.9, 200, 0, loss=np.array([2.0]), num_questions=200)
    assert 0.0 <= p.low <= p.point <= p.high <= 1.0
    # Exact fit on huge question sets: the width is the target's binomial noise on its
    # own 200 questions (about +-0.06).
    half = 1.645 * np.sqrt(p.point * (1 - p.point) / 200)
    assert p.high - p.low == pytest.approx(2 * half, rel=0.35)
    lo, hi = ef.predict_interval(0.9, loss=np.array([2.0, 9.0]), num_questions=200)
    assert hi[1] <= 1.0 and lo[0] == pytest.approx(p.low, abs=0.02)


def test_loss_law_at_its_bound_is_unreliable_and_failures_are_reported():
    N = np.geomspace(1e7, 1e9, 6)
    loss = 40.0 * N ** -0.1          # a pure power law: no floor, L_inf -> 0
    fit = fitters.fit_loss_law(N, None, loss, form="kaplan")
    assert not fit.reliable and "at its bound 0" in fit.reason
    (p,) = fit.prediction(0.9, 20, 0, N=np.array([1e10]))
    assert not p.reliable and any("at its bound" in r for r in p.reasons)

    good = fitters.fit_loss_law(N, None, laws.kaplan(N, 2.0, 2e6, 0.3) *
                                np.exp(0.01 * np.random.default_rng(0).standard_normal(6)),
                                form="kaplan")
    good._refit_values = lambda y: (_ for _ in ()).throw(RuntimeError("curve_fit failed"))
    (p,) = good.prediction(0.9, 10, 0, N=np.array([1e10]))
    assert p.details["num_failed"] == 10 and (p.low, p.high) == (0.0, np.inf)
    assert any("10 of 10 bootstrap refits failed" in r for r in p.reasons)
    boot = fitters.fit_loss_law(N, None, laws.kaplan(N, 2.0, 2e6, 0.3), form="kaplan")
    boot._refit = lambda idx: (_ for _ in ()).throw(RuntimeError("boom"))
    with pytest.raises(ValueError, match="RuntimeError: boom"):
        boot.bootstrap(5)


def test_excess_scatter_is_added_only_where_residuals_reject_binomial_noise():
    from lmscale.fit import bootstrap
    rng = np.random.default_rng(0)
    binvar = 2.5e-4                              # 10 points, 3 parameters: dof 7

    def resid(var):   # least-squares residuals of 10 points: S ~ var chi2(7)
        return np.concatenate([np.sqrt(var) * rng.standard_normal(7), np.zeros(3)])
    pure = [bootstrap._excess_scale(resid(binvar), 3, 1, binvar)[0] for _ in range(2000)]
    # Without excess, the truncated moment estimate was positive about half the time.
    assert 0.06 <= np.mean(np.array(pure) > 0) <= 0.14
    big = [bootstrap._excess_scale(resid(6 * binvar), 3, 1, binvar)[0] for _ in range(500)]
    assert np.mean(np.array(big) > 0) > 0.9
    assert np.median(np.square(big)) == pytest.approx(5 * binvar * 0.9, rel=0.35)


def test_accuracy_intervals_cover_at_their_nominal_level():
    spec = simulate.LadderSpec(num_resamples=50)
    row = calibration.coverage(functools.partial(simulate.accuracy_trial, spec=spec),
                               num_sims=100, seed=2)
    assert row["num_failed"] == 0, row["failures"][:3]
    assert 0.82 <= row["coverage"][0.9] <= 0.97, row
    assert 0.35 <= row["coverage"][0.5] <= 0.65, row
