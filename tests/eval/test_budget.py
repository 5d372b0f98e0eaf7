"""PassUntil budget policy: caps within the budget, spent where they measure."""
import math

import numpy as np
import pytest

from lmscale.eval import budget
from lmscale.fit import pu_counts


def test_samples_needed_reaches_r_passes_with_the_stated_probability():
    rng = np.random.default_rng(0)
    for p in (0.5, 0.05, 0.002):
        need = budget.samples_needed(p, r=4, coverage=0.9)
        K = 4 + rng.negative_binomial(4, p, size=20000)
        # The quantile of a discrete law: at least the coverage, close to it when p is small.
        assert 0.89 <= np.mean(K <= need) <= (0.95 if p == 0.5 else 0.915)
    out = budget.samples_needed([1.0, 0.0, np.nan, 0.1], r=4, margin=1.5)
    assert out[0] == 6 and np.isinf(out[1]) and np.isinf(out[2])
    assert out[3] > budget.samples_needed(0.1, r=4)
    with pytest.raises(ValueError, match="pu must lie"):
        budget.samples_needed(1.5, r=4)


def test_plan_funds_cheapest_first_and_flags_what_the_budget_cannot_measure():
    pu = {"easy": 0.5, "mid": 0.01, "hard": 1e-3, "hopeless": 1e-6}
    plan = budget.plan_caps(pu, r=4, budget=3000, k_floor=20, k_ceiling=5000, margin=1.0)
    assert plan.spent == sum(plan.caps.values()) <= 3000
    need = budget.samples_needed([0.5, 0.01, 1e-3], r=4)
    assert plan.caps["easy"] >= need[0] and plan.caps["mid"] >= need[1]
    # "hard" needs ~8,000 > what is left; "hopeless" more than the ceiling.
    assert plan.loss_assisted == ("hard", "hopeless")
    # What the funded two leave is shared by the flagged two, up to the budget.
    assert plan.caps["hard"] == plan.caps["hopeless"] > 20
    assert plan.caps["hard"] + plan.caps["hopeless"] > 3000 - 2 * 20 - need[0] - need[1] - 2
    assert plan.measured_fraction == 0.5
    # With nothing flagged, leftover budget raises the funded caps by one common factor.
    easy = budget.plan_caps({"a": 0.5, "b": 0.01}, r=4, budget=3000, k_floor=20,
                            k_ceiling=5000, margin=1.0)
    assert easy.loss_assisted == () and easy.caps["b"] > need[1] and easy.spent <= 3000
    with pytest.raises(ValueError, match="budget=50 < 4 instances x k_floor=20"):
        budget.plan_caps(pu, r=4, budget=50, k_floor=20, k_ceiling=100)


def test_unknown_instances_share_the_rest_equally():
    plan = budget.plan_caps({"a": None, "b": float("nan"), "c": 0.5}, r=4, budget=1000,
                            k_floor=10, k_ceiling=400)
    assert plan.caps["a"] == plan.caps["b"] <= 400 and plan.spent <= 1000
    assert plan.loss_assisted == ()


def _capped_fraction(p, caps, rng):
    capped = 0
    for pi, k in zip(p, caps):
        K, x = pu_counts.sample_passuntil(rng, np.array([pi]), 4, int(k))
        capped += int(x[0] < 4)
    return capped / len(p)


def test_planned_caps_measure_more_instances_than_one_cap_for_all():
    rng = np.random.default_rng(1)
    p = np.exp(rng.uniform(np.log(1e-5), np.log(0.5), size=120))
    total = 120 * 1000
    ids = [str(i) for i in range(p.size)]
    plan = budget.plan_caps(dict(zip(ids, p)), r=4, budget=total, k_floor=20,
                            k_ceiling=20000)
    caps = np.array([plan.caps[i] for i in ids])
    assert caps.sum() <= total
    funded = np.array([i not in plan.loss_assisted for i in ids])
    # Funded instances reach r passes (>= 90% each, with margin): few end capped.
    assert _capped_fraction(p[funded], caps[funded], rng) < 0.08
    planned_measured = funded.mean() * (1 - _capped_fraction(p[funded], caps[funded], rng))
    flat_measured = 1 - _capped_fraction(p, np.full(p.size, 1000), rng)
    assert planned_measured > flat_measured + 0.05


def test_predict_next_pu_follows_each_instances_law():
    rng = np.random.default_rng(2)
    N = np.array([2e4, 5e4, 1e5, 1.5e5])
    log_c = rng.uniform(1.5, 3.0, size=30)
    alpha = rng.uniform(0.2, 0.6, size=30)
    true = np.exp(-np.exp(log_c[None] - alpha[None] * np.log(N)[:, None]
                          + np.log(1e4) * alpha[None]))
    K, x = pu_counts.sample_passuntil(rng, true, 20, 10 ** 7)
    N_next = 2.1e5
    want = np.exp(-np.exp(log_c - alpha * np.log(N_next) + np.log(1e4) * alpha))
    got = budget.predict_next_pu(N, K, x, r=20, N_next=N_next)
    ratio = np.array([got[str(i)] for i in range(30)]) / want
    assert np.median(np.abs(np.log(ratio))) < np.log(1.3)


def test_predict_next_pu_with_one_rung_is_the_measurement_or_unknown():
    got = budget.predict_next_pu([1e4], [[9, 100]], [[4, 0]], r=4, N_next=2e4,
                                 ids=["x", "y"])
    assert got["x"] == pytest.approx(3 / 8) and math.isnan(got["y"])
    with pytest.raises(ValueError, match="disagree"):
        budget.predict_next_pu([1e4, 2e4], [[9, 100]], [[4, 0]], r=4, N_next=3e4)
