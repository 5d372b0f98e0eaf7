"""Tests for lmscale.eval.passuntil: the PassUntil sampling driver."""

import numpy as np
import pytest

from lmscale.eval import passuntil
from lmscale.fit import passuntil as pu_stats


class SequenceDraw:
    """draw(n) that replays fixed outcomes in order and records the sizes asked for."""

    def __init__(self, outcomes):
        self.outcomes = [bool(o) for o in outcomes]
        self.position = 0
        self.calls = []

    def __call__(self, n):
        self.calls.append(n)
        out = self.outcomes[self.position:self.position + n]
        self.position += n
        assert len(out) == n, "test sequence too short"
        return out


F, T = False, True


def test_k_is_the_position_of_the_rth_pass_inside_a_batch():
    draw = SequenceDraw([F, F, T, F, T, T, F, F] + [F] * 8)
    result = passuntil.run(draw, r=2, k_max=100, batch_size=4)
    assert draw.calls == [4, 4]
    assert (result.num_samples, result.num_passes, result.capped) == (5, 2, False)
    assert result.naive_estimate == pytest.approx(2 / 5)


def test_cap_truncates_the_last_batch():
    draw = SequenceDraw([F, T, F, F, F, F, F, F, F, F, T, T])
    result = passuntil.run(draw, r=3, k_max=10, batch_size=4)
    assert draw.calls == [4, 4, 2]
    assert (result.num_samples, result.num_passes, result.capped) == (10, 1, True)
    assert (result.r, result.k_max) == (3, 10)


def test_rth_pass_on_the_last_allowed_sample_is_not_capped():
    draw = SequenceDraw([F, T, F, F, F, T])
    result = passuntil.run(draw, r=2, k_max=6, batch_size=5)
    assert draw.calls == [5, 1]
    assert (result.num_samples, result.num_passes, result.capped) == (6, 2, False)


def test_statistics_come_from_fit_passuntil():
    for outcomes, r, k_max in (([F, F, T, F, T, F], 2, 50), ([F] * 7, 2, 7)):
        result = passuntil.run(SequenceDraw(outcomes), r=r, k_max=k_max, batch_size=3)
        k, passes, capped = result.num_samples, result.num_passes, result.capped
        assert result.estimate == pytest.approx(float(pu_stats.estimate(k, passes, r, capped)))
        assert result.naive_estimate == pytest.approx(
            float(pu_stats.naive_estimate(k, passes)))
        lo, hi = pu_stats.interval(k, passes, capped)
        assert result.interval == pytest.approx((float(lo), float(hi)))
        assert 0.0 <= result.interval[0] <= result.interval[1] <= 1.0


def test_r_equal_one_warns():
    with pytest.warns(UserWarning, match="r=1"):
        result = passuntil.run(SequenceDraw([F, F, T, F]), r=1, k_max=10, batch_size=4)
    assert result.num_samples == 3


@pytest.mark.parametrize("kwargs, name", [
    ({"r": 0, "k_max": 10, "batch_size": 2}, "r"),
    ({"r": 2.0, "k_max": 10, "batch_size": 2}, "r"),
    ({"r": 5, "k_max": 4, "batch_size": 2}, "k_max"),
    ({"r": 2, "k_max": 10, "batch_size": 0}, "batch_size"),
    ({"r": 2, "k_max": 10, "batch_size": True}, "batch_size"),
    ({"r": 2, "k_max": 10, "batch_size": 2, "confidence": 1.0}, "confidence"),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=rf"\b{name}="):
        passuntil.run(SequenceDraw([F] * 20), **kwargs)


@pytest.mark.parametrize("bad", [lambda n: [True] * (n + 1), lambda n: [0.5] * n,
                                 lambda n: [2] * n])
def test_bad_draw_output_raises(bad):
    with pytest.raises(ValueError, match=r"draw\("):
        passuntil.run(bad, r=2, k_max=10, batch_size=4)


def test_integer_outcomes_are_accepted():
    # Each call returns [0, 1, 0]: passes at positions 2 and 5.
    result = passuntil.run(lambda n: np.array([0, 1] * n)[:n], r=2, k_max=10, batch_size=3)
    assert (result.num_samples, result.num_passes) == (5, 2)


def test_bernoulli_simulation_recovers_p():
    rng = np.random.default_rng(0)
    p, r, k_max, instances = 0.05, 4, 100_000, 1_500

    def draw(n):
        return rng.random(n) < p

    results = [passuntil.run(draw, r=r, k_max=k_max, batch_size=16)
               for _ in range(instances)]
    assert not any(res.capped for res in results)
    estimates = np.array([res.estimate for res in results])
    # Unbiased per instance: the mean lies within 4 standard errors of p.
    assert abs(estimates.mean() - p) < 4 * estimates.std(ddof=1) / np.sqrt(instances)
    # Pooled over all samples drawn, passes / samples is within a binomial bound of p.
    total_samples = sum(res.num_samples for res in results)
    pooled = r * instances / total_samples
    assert abs(pooled - p) < 4 * np.sqrt(p * (1 - p) / total_samples)
    # The 95% intervals cover p for most instances.
    covered = np.mean([res.interval[0] <= p <= res.interval[1] for res in results])
    assert covered >= 0.9


def test_driver_makes_no_device_transfers():
    jax = pytest.importorskip("jax")
    rng = np.random.default_rng(1)
    with jax.transfer_guard("disallow"):
        guarded = passuntil.run(lambda n: rng.random(n) < 0.3, r=2, k_max=50, batch_size=8)
    rng = np.random.default_rng(1)
    free = passuntil.run(lambda n: rng.random(n) < 0.3, r=2, k_max=50, batch_size=8)
    assert guarded == free and guarded.num_passes == 2
