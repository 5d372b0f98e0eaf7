"""Tests for lmscale.fit.growth: curvature test on synthetic curves, two-circuit fit."""
import numpy as np
import pytest

from lmscale.fit import growth, laws

N = np.geomspace(3e7, 3e9, 8)
X = np.log(N)


def _pu(F):
    return np.exp(-np.exp(F))


def _curves(rng, noise=0.02):
    lin = 6.0 - 0.35 * X
    # Multi-step reasoning: log(sum_i c_i N^-alpha_i) is convex (Hu et al. Theorem 2).
    convex = np.log(np.exp(11.75 - 0.6 * X) + np.exp(2.0 - 0.1 * X))
    # Competing circuits: min of two lines is concave (Theorem 3).
    concave = laws.two_circuit_F(X, 3.0, 0.1, 26.4, 1.3)
    return {name: F + noise * rng.standard_normal(X.size)
            for name, F in dict(linear=lin, convex=convex, concave=concave).items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classify_growth_labels_synthetic_curves(seed):
    curves = _curves(np.random.default_rng(seed))
    for expected, F in curves.items():
        result = growth.classify_growth(N, _pu(F))
        assert result.cls == expected, (expected, result)
        if expected == "linear":
            assert result.p_value > 0.05
        else:
            assert result.p_value < 0.01


def test_classify_growth_false_positive_rate_is_near_level():
    rng = np.random.default_rng(5)
    calls = [growth.classify_growth(N, _pu(6.0 - 0.35 * X + 0.05 * rng.standard_normal(8))).cls
             for _ in range(400)]
    rate = np.mean([c != "linear" for c in calls])
    # 5% level; 400 draws: binomial sd ~ 1.1%.
    assert 0.05 - 0.035 < rate < 0.05 + 0.035


def test_classify_growth_rejects_degenerate_input():
    with pytest.raises(ValueError, match="needs >= 4"):
        growth.classify_growth(N[:3], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"pu\[1\] = 1.0"):
        growth.classify_growth(N[:4], [0.1, 1.0, 0.3, 0.5])
    with pytest.raises(ValueError, match=r"pu\[0\] = 0.0"):
        growth.classify_growth(N[:4], [0.0, 0.2, 0.3, 0.5])


def test_two_circuit_fit_follows_concave_curve_better_than_a_line():
    F = laws.two_circuit_F(X, 3.0, 0.1, 26.4, 1.3)
    fit = growth.fit_two_circuit(N, _pu(F))
    pred = np.log(-np.log(fit.predict(N=N)))
    line = np.polyval(np.polyfit(X, F, 1), X)
    assert np.max(np.abs(pred - F)) < 1e-4
    assert np.max(np.abs(line - F)) > 0.1
