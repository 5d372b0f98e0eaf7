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
    names = {select.candidate_name(c, d) for c in select.CANDIDATES
             for d in select.DROP_SMALLEST}
    assert set(choice.backtest_error) == names
    assert choice.name.split()[0] in ("kaplan", "kaplan_floor", "compute")  # it has a floor
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


def test_straight_line_picks_the_two_parameter_law_and_recovers_it():
    N = np.geomspace(2e4, 2e5, 5)
    loss = (1e6 / N) ** 0.27
    choice = select.choose_loss_law(N, 9 * N, loss, num_held_out=1)
    # the floor laws (L_inf, E at 0) draw the same curve; the tie goes to 2 parameters
    assert choice.backtest_error["kaplan"] < 1e-4
    assert choice.name in ("power", "power_compute") and choice.fit.reliable
    assert choice.dropped == ()
    slope = choice.fit.params.get("alpha", 2 * choice.fit.params.get("eta", 0.0))
    assert slope == pytest.approx(0.27, abs=0.02)
    lo, hi = choice.fit.predict_interval(0.9, num_resamples=50, N=np.array([3e5]),
                                         D=np.array([2.7e6]))
    assert lo[0] < (1e6 / 3e5) ** 0.27 < hi[0]


def test_an_off_trend_smallest_rung_is_left_out_when_the_backtest_says_so():
    N = np.geomspace(2e4, 2e5, 5)
    loss = (1e6 / N) ** 0.27
    loss[0] *= 0.93                     # the smallest rung below the others' line
    choice = select.choose_loss_law(N, 9 * N, loss, num_held_out=1, drop_smallest=(0, 1))
    assert choice.name.endswith("w/o smallest") and choice.dropped == (N[0],)
    assert choice.fit.num_points == 4 and N[0] not in choice.fit.data["N"]
    pred = choice.fit.predict(N=np.array([3e5]), D=np.array([2.7e6]))[0]
    assert pred == pytest.approx((1e6 / 3e5) ** 0.27, rel=1e-6)
    # on the same rungs without the kink, nothing is dropped
    straight = select.choose_loss_law(N, 9 * N, (1e6 / N) ** 0.27, num_held_out=1,
                                      drop_smallest=(0, 1))
    assert straight.dropped == ()
    # by default no size is left out, kink or not
    assert select.choose_loss_law(N, 9 * N, loss, num_held_out=1).dropped == ()


def test_fit_power_in_compute_and_its_flags():
    N = np.array([1e4, 1e5])
    f = select.fit_power(N, 20 * N, 50.0 * (120 * N ** 2) ** -0.1, "C")
    assert f.law == "power_compute" and f.params["eta"] == pytest.approx(0.1)
    assert f.params["lam"] == pytest.approx(50.0) and "no residual" in f.reason
    rising = select.fit_power([1e4, 1e5, 1e6], None, [2.0, 2.1, 2.3])
    assert not rising.reliable and "exponent" in rising.reason
    with pytest.raises(ValueError, match="variable"):
        select.fit_power(N, None, [2.0, 1.9], "D")
