"""Tests for lmscale.fit.select: loss-law choice by leave-largest-out backtest."""
import numpy as np
import pytest

from lmscale.fit import laws, select


def _ladder(L_inf, seed=0, noise=0.003):
    rng = np.random.default_rng(seed)
    N = np.geomspace(1e7, 1e9, 7)
    loss = laws.kaplan(N, L_inf, 2e6, 0.3) * np.exp(noise * rng.standard_normal(7))
    return N, 20 * N, loss


def test_backtest_reports_every_candidate_and_picks_the_smallest_error():
    N, D, loss = _ladder(2.0)
    choice = select.choose_loss_law(N, D, loss)
    assert set(choice.backtest_error) == set(select.CANDIDATES)
    assert choice.backtest_error[choice.name] == min(choice.backtest_error.values())
    assert choice.backtest_error[choice.name] < 0.02
    pred = choice.fit.predict(N=np.array([1e10]), D=np.array([2e11]))[0]
    assert pred == pytest.approx(laws.kaplan(1e10, 2.0, 2e6, 0.3), rel=0.03)


def test_floor_law_stays_above_its_floor_and_flags_it():
    N = np.geomspace(1e7, 1e9, 6)
    loss = 40.0 * N ** -0.1      # no floor in the data: free Kaplan drives L_inf to 0
    f = select.fit_kaplan_floor(N, loss, floor=1.0)
    assert f.params["L_inf"] >= 1.0 and not f.reliable and "floor" in f.reason
    lo, hi = f.predict_interval(0.9, num_resamples=30, N=np.array([1e10]))
    assert 0 < lo[0] < hi[0]


def test_too_short_ladder_raises():
    with pytest.raises(ValueError, match="distinct sizes"):
        select.choose_loss_law([1e7, 1e8, 1e9, 2e9], [1e8] * 4, [4.0, 3.5, 3.2, 3.1])
