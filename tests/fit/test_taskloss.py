"""Tests for lmscale.fit.taskloss: Bhagia et al.'s two-step accuracy prediction."""
import numpy as np
import pytest

from lmscale.fit import laws, taskloss


def _ladder(seed=0):
    # 6 sizes, 5 checkpoints each (D grows), task loss by a Chinchilla law, accuracy a
    # sigmoid of it, measured on 2,000 questions.
    rng = np.random.default_rng(seed)
    N = np.repeat(np.geomspace(2e7, 1e9, 6), 5)
    D = N * np.tile([4.0, 8.0, 12.0, 16.0, 20.0], 6)
    tl = laws.chinchilla(N, D, 0.6, 300.0, 900.0, 0.32, 0.3) * np.exp(
        0.005 * rng.standard_normal(N.size))
    p = taskloss.sigmoid(tl, 0.7, -2.0, 3.0, 0.25)
    acc = rng.binomial(2000, p) / 2000
    final = np.tile([False] * 4 + [True], 6)
    return N, D, tl, acc, final, p


def test_two_step_predicts_held_out_accuracy():
    N, D, tl, acc, final, p = _ladder()
    below = N < N.max()
    two = taskloss.fit_two_step(N[below], D[below], tl[below], acc[below], final[below])
    assert two.acc_fit.params["k"] < 0 and two.reliable
    pred = two.predict(N[~below & final], D[~below & final])[0]
    assert pred == pytest.approx(p[~below & final][0], abs=0.03)


def test_choice_reports_both_methods():
    N, D, tl, acc, final, _ = _ladder(1)
    out = taskloss.choose_accuracy_method(N, D, tl, tl, acc, final)
    assert set(out["backtest_error"]) == {"two_step", "gadre"}
    assert out["backtest_error"][out["choice"]] == min(out["backtest_error"].values())


def test_sigmoid_needs_four_points():
    with pytest.raises(ValueError, match="fit_sigmoid"):
        taskloss.fit_sigmoid([1.0, 2.0, 3.0], [0.5, 0.4, 0.3])


def test_two_step_predictive_interval_covers_and_widens_with_level():
    hits = 0
    for seed in range(10):
        N, D, tl, acc, final, p = _ladder(seed)
        below = N < N.max()
        two = taskloss.fit_two_step(N[below], D[below], tl[below], acc[below], final[below])
        at = ~below & final
        preds = two.predictions(N[at], D[at], (0.5, 0.9), 100, seed)
        p50, p90 = preds[0.5][0], preds[0.9][0]
        assert 0 <= p90.low <= p50.low <= p50.high <= p90.high <= 1
        assert p90.method.startswith("two-step") and p90.quantity == "accuracy"
        hits += p90.covers(acc[at][0])
    assert hits >= 7   # P(Binomial(10, 0.9) < 7) ~ 1.3%


def test_two_step_interval_is_the_whole_range_without_residual_dof():
    N, D, tl, acc, final, _ = _ladder()
    keep = np.isin(N, np.unique(N)[:3])    # 3 sizes: step 1's Kaplan has 3 parameters
    two = taskloss.fit_two_step(N[keep], D[keep], tl[keep], acc[keep], final[keep])
    (p,) = two.predictions([1e9], [2e10], 0.9, 20, 0)
    assert (p.low, p.high) == (0.0, 1.0) and any("no residual" in r for r in p.reasons)


def test_two_step_with_the_question_count_draws_the_targets_binomial_measurement():
    """A smooth ladder measured on 2,000 questions, predicted for a target measured on 200:
    with num_questions the 90% band holds the target's binomial noise (sd ~0.035 at 0.5,
    so at least ~0.1 wide); from the ladder's residuals alone it is far narrower."""
    N, D, tl, _, final, p = _ladder(0)
    acc = p  # noiseless: the residuals hold nothing of 200 questions' noise
    below = N < N.max()
    two = taskloss.fit_two_step(N[below], D[below], tl[below], acc[below], final[below])
    at = ~below & final
    plain = two.predictions(N[at], D[at], 0.9, 200, 0)[0]
    binom = two.predictions(N[at], D[at], 0.9, 200, 0, num_questions=200)[0]
    sd = np.sqrt(binom.point * (1 - binom.point) / 200)
    assert binom.high - binom.low > 2 * 1.5 * sd > 3 * (plain.high - plain.low)
    assert binom.point == plain.point  # the point is the fit's, not a draw's
    # Coverage of a 200-question measurement of the true accuracy, over 200 draws.
    rng = np.random.default_rng(1)
    measured = rng.binomial(200, p[at][0], 200) / 200
    assert 0.82 <= np.mean((binom.low <= measured) & (measured <= binom.high)) <= 0.98
