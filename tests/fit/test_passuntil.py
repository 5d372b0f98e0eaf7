"""Tests for lmscale.fit.passuntil: estimators by simulation, intervals, PU-law fits."""
import math
import warnings

import numpy as np
import pytest

from lmscale.fit import laws, passuntil

# Hu et al. Table 3 (HumanEval, series 1): instance 20 (hard) and 24 (easy).
HU_N = np.array([0.03e9, 0.1e9, 0.2e9, 0.5e9, 0.9e9, 1.5e9])
HU_PU = np.array([[0, 0.00375], [0, 0.05125], [0, 0.350625], [0.000625, 0.3625],
                  [0.001875, 0.568125], [0.008125, 0.796875]])


def _simulate_passuntil(rng, p, r, k_max, trials):
    """Samples PassUntil runs: K until the r-th pass, or capped at k_max."""
    K = r + rng.negative_binomial(r, p, size=trials)
    capped = K > k_max
    passes = np.where(capped, rng.binomial(k_max, p, size=trials), r)
    # A capped run that still saw r passes would have stopped: condition on passes < r.
    passes = np.where(capped, np.minimum(passes, r - 1), passes)
    return np.where(capped, k_max, K), passes, capped


@pytest.mark.parametrize("p,r", [(0.02, 2), (0.3, 3), (0.001, 4)])
def test_estimate_is_unbiased_by_simulation(p, r):
    rng = np.random.default_rng(0)
    trials = 20000
    K = r + rng.negative_binomial(r, p, size=trials)
    est = np.array([passuntil.estimate(int(k), r, r, capped=False) for k in K])
    naive = np.array([passuntil.naive_estimate(int(k), r) for k in K])
    se = est.std() / math.sqrt(trials)
    assert abs(est.mean() - p) < 4 * se
    # Hu et al.'s r / K is biased upwards: its mean sits well above p.
    assert naive.mean() - p > 4 * naive.std() / math.sqrt(trials)


def test_capped_estimate_is_passes_over_samples():
    assert passuntil.estimate(1000, 1, r=2, capped=True) == pytest.approx(1e-3)
    assert passuntil.estimate(1000, 0, r=2, capped=True) == 0.0


def test_r1_warns_and_returns_one_over_k():
    with pytest.warns(UserWarning, match="bias"):
        assert passuntil.estimate(40, 1, r=1, capped=False) == pytest.approx(1 / 40)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_samples=0, num_passes=0, r=2, capped=True), "num_samples"),
    (dict(num_samples=10, num_passes=11, r=2, capped=True), "num_passes"),
    (dict(num_samples=10, num_passes=1, r=2, capped=False), "must equal r"),
    (dict(num_samples=10, num_passes=2, r=2, capped=True), "reached r"),
])
def test_estimate_rejects_inconsistent_counts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        passuntil.estimate(**kwargs)


@pytest.mark.parametrize("capped", [False, True])
def test_interval_coverage_by_simulation(capped):
    rng = np.random.default_rng(1)
    p, r, trials, k_max = 0.05, 3, 2000, 60
    covered = 0
    for _ in range(trials):
        if capped:
            passes = rng.binomial(k_max, p)
            lo, hi = passuntil.interval(k_max, passes, capped=True)
        else:
            K = r + rng.negative_binomial(r, p)
            lo, hi = passuntil.interval(int(K), r, capped=False)
        covered += lo <= p <= hi
    # Exact intervals are conservative: coverage >= 95% up to binomial noise (4 sd).
    assert covered / trials >= 0.95 - 4 * math.sqrt(0.95 * 0.05 / trials)


def test_interval_edges():
    lo, hi = passuntil.interval(5, 5, capped=False)
    assert hi == 1.0 and 0 < lo < 1
    lo, hi = passuntil.interval(100, 0, capped=True)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 100))


@pytest.mark.parametrize("n,c,k", [(10, 3, 1), (10, 3, 5), (200, 1, 50), (20, 0, 5), (5, 5, 2)])
def test_pass_at_k_matches_binomial_formula(n, c, k):
    exact = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert passuntil.pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12, abs=1e-15)


def test_pass_at_k_is_stable_for_huge_n():
    value = passuntil.pass_at_k(10 ** 6, 1, 10)
    assert value == pytest.approx(1e-5, rel=1e-9)


def test_dataset_pu_and_interval():
    rng = np.random.default_rng(0)
    est = rng.uniform(0, 0.2, size=400)
    assert passuntil.dataset_pu(est) == pytest.approx(est.mean())
    lo, hi = passuntil.dataset_pu_interval(est, num_resamples=500)
    assert lo < est.mean() < hi and hi - lo < 4 * 1.96 * est.std() / 20


def test_pu_from_counts_vectorises_estimate():
    K = np.array([[10, 1000], [57, 3]])
    x = np.array([[2, 1], [2, 2]])
    pu = passuntil.pu_from_counts(K, x, r=2)
    np.testing.assert_allclose(pu, [[1 / 9, 1e-3], [1 / 56, 1 / 2]])


def test_dataset_fit_recovers_synthetic_law():
    N = np.geomspace(3e7, 3e9, 6)
    pu = laws.pu_law(N, 50.0, 0.2)
    fit = passuntil.fit_pu_dataset(N, pu)
    assert fit.params["c"] == pytest.approx(50.0, rel=1e-6)
    assert fit.params["alpha"] == pytest.approx(0.2, rel=1e-6)
    assert fit.predict(N=np.array([1e10]))[0] == pytest.approx(laws.pu_law(1e10, 50.0, 0.2))


def test_dataset_fit_from_counts_with_noise_within_bootstrap_interval():
    rng = np.random.default_rng(3)
    N = np.geomspace(3e7, 3e9, 6)
    p = laws.pu_law(N, 50.0, 0.2)[:, None] * np.ones((1, 300))
    K = 2 + rng.negative_binomial(2, p)
    fit = passuntil.fit_pu_dataset(N, num_samples=K, num_passes=np.full_like(K, 2), r=2)
    boot = fit.bootstrap(num_resamples=200, seed=0)
    lo, hi = boot.interval("alpha", 0.99)
    assert lo <= 0.2 <= hi


def test_dataset_fit_flags_zero_pu_models_and_rejects_too_few():
    N = np.geomspace(3e7, 3e9, 4)
    pu = np.array([0.0, 0.01, 0.05, 0.2])
    fit = passuntil.fit_pu_dataset(N, pu)
    assert not fit.reliable and "[0]" in fit.reason
    with pytest.raises(ValueError, match="need >= 2"):
        passuntil.fit_pu_dataset(N, np.array([0.0, 0.0, 1.0, 0.3]))
    with pytest.raises(ValueError, match=r"pu\[2, 0\] = nan"):
        passuntil.fit_pu_dataset(N, np.array([0.1, 0.2, np.nan, 0.3]))


def test_hu_table3_easy_instance_saturates_hard_keeps_rising():
    fit = passuntil.fit_pu_instances(HU_N, HU_PU)
    assert list(fit.status) == ["fit", "fit"]
    at = fit.predict_instances(np.array([1.5e9, 2.4e9, 10e9]))
    hard, easy = at[:, 0], at[:, 1]
    assert easy[1] > 0.8 and easy[2] > 0.9             # the easy one saturates near 1
    assert easy[1] / easy[0] < 1.2
    assert hard[1] / hard[0] > 1.5 and hard[1] < 0.1   # the hard one keeps rising
    assert hard[2] > 2 * hard[1]
    assert fit.predict(np.array([2.4e9]))[0] == pytest.approx(at[1].mean())


def test_instance_fit_beats_dataset_fit_on_mixed_difficulty():
    N = np.geomspace(3e7, 1.5e9, 6)
    target = 2.4e9
    cs = np.array([2e3, 5e3, 1e4, 3e5, 1e6])
    alphas = np.array([0.45, 0.5, 0.5, 0.6, 0.65])
    pu = laws.pu_law(N[:, None], cs, alphas)
    truth = laws.pu_law(target, cs, alphas).mean()
    inst = passuntil.fit_pu_instances(N, pu).predict(np.array([target]))[0]
    data = passuntil.fit_pu_dataset(N, pu).predict(N=np.array([target]))[0]
    assert abs(inst - truth) < 1e-9
    assert abs(data - truth) > 10 * abs(inst - truth)


def test_loss_assisted_predicts_instances_without_passes():
    N = np.geomspace(3e7, 1.5e9, 6)
    # Answer loss follows a power law in N; PU = exp(-L) maps loss to pass rate.
    A = np.array([50.0, 80.0, 400.0])
    loss = A * N[:, None] ** -0.25
    pu = np.exp(-loss)
    pu[:, 2] = 0.0  # the hardest instance never passed at these sizes
    fit = passuntil.fit_pu_instances(N, pu, answer_loss=loss)
    assert list(fit.status) == ["fit", "fit", "loss_assisted"]
    a, b = fit.loss_map
    assert a == pytest.approx(0.0, abs=1e-8) and b == pytest.approx(-1.0, rel=1e-8)
    pred = fit.predict_instances(np.array([1e11]))[0, 2]
    assert pred == pytest.approx(np.exp(-400.0 * 1e11 ** -0.25), rel=1e-6)
    no_loss = passuntil.fit_pu_instances(N, pu)
    assert not no_loss.reliable and "no answer loss" in no_loss.reason


def test_instance_bootstrap_band_covers_truth():
    rng = np.random.default_rng(0)
    N = np.geomspace(3e7, 1.5e9, 6)
    cs = rng.uniform(100.0, 2000.0, 50)
    alphas = rng.uniform(0.3, 0.4, 50)
    true = laws.pu_law(N[:, None], cs, alphas)
    pu = rng.binomial(4000, true) / 4000  # fixed-budget estimates, 4,000 samples each
    fit = passuntil.fit_pu_instances(N, pu)
    samples, lo, hi = fit.bootstrap(np.array([2.4e9]), num_resamples=300, seed=1,
                                    confidence=0.99)
    assert samples.shape == (300, 1)
    assert lo[0] <= laws.pu_law(2.4e9, cs, alphas).mean() <= hi[0]


# --- predictive intervals (pu_predictive), PassUntil simulation, pass@k ---------------

from lmscale.fit import pu_predictive, simulate_pu  # noqa: E402


@pytest.mark.parametrize("p", [5e-4, 3e-3, 0.05])
def test_sample_passuntil_matches_the_procedure(p):
    rng = np.random.default_rng(0)
    K, x = passuntil.sample_passuntil(rng, np.full(100000, p), 4, 1000)
    capped = x < 4
    assert np.all(K[capped] == 1000) and np.all(K[~capped] <= 1000) and np.all(K >= 4)
    # Capped exactly when the first 1,000 samples hold < 4 passes.
    expected = sum(math.comb(1000, k) * p ** k * (1 - p) ** (1000 - k) for k in range(4))
    assert capped.mean() == pytest.approx(expected, abs=4 * math.sqrt(expected / 1e5) + 1e-4)
    est = passuntil.pu_from_counts(K, x, 4)
    assert abs(est.mean() - p) < 4 * est.std() / math.sqrt(1e5)


def test_vectorised_refits_match_the_fits():
    study = simulate_pu.simulate_study(np.random.default_rng(2), num_instances=40,
                                       pu_low=1e-4)
    N, pu, loss = study["N"][:4], study["pu"][:4], study["answer_loss"][:4]
    target = np.array([study["N"][4], 3 * study["N"][4]])
    fit = passuntil.fit_pu_instances(N, pu, answer_loss=loss)
    assert "loss_assisted" in set(fit.status) and "fit" in set(fit.status)
    vec, _ = pu_predictive.instance_predictions(N, pu[None], target, loss)
    np.testing.assert_allclose(vec[0], fit.predict_instances(target), rtol=1e-9, atol=1e-12)
    ds = passuntil.fit_pu_dataset(N, pu)
    np.testing.assert_allclose(pu_predictive.dataset_predictions(N, pu[None], target)[0],
                               ds.predict(N=target), rtol=1e-9)


def _study_fit(seed, **settings):
    study = simulate_pu.simulate_study(np.random.default_rng(seed), **settings)
    kw = dict(num_samples=study["num_samples"][:4], num_passes=study["num_passes"][:4], r=4,
              k_max=study["settings"]["k_max"])
    return study, kw


def test_predict_interval_api_and_bounds():
    study, kw = _study_fit(5)
    target = study["N"][4]
    for fit in (passuntil.fit_pu_dataset(study["N"][:4], **kw),
                passuntil.fit_pu_instances(study["N"][:4], **kw)):
        lo, hi = fit.predict_interval(0.9, N=[target], num_resamples=300)
        lo50, hi50 = fit.predict_interval(0.5, N=[target], num_resamples=300)
        assert 0 <= lo[0] <= lo50[0] <= hi50[0] <= hi[0] <= 1
        pred = fit.prediction(target, 0.9, num_resamples=300)
        assert (pred.low, pred.high) == pytest.approx((lo[0], hi[0]))
        assert pred.bounds == (0.0, 1.0) and pred.to_json()["interval"] == [pred.low, pred.high]
        point = fit.predict(N=np.array([target])) if hasattr(fit, "law") else \
            fit.predict(np.array([target]))
        assert pred.point == pytest.approx(float(point[0]))


def test_predict_interval_needs_instances_and_cap():
    study, kw = _study_fit(6)
    N = study["N"][:4]
    dataset_only = passuntil.fit_pu_dataset(N, study["pu"][:4].mean(axis=1))
    with pytest.raises(ValueError, match="per-instance PU"):
        dataset_only.predict_interval(0.9, N=[study["N"][4]])
    no_cap = passuntil.fit_pu_instances(N, study["pu"][:4])
    with pytest.raises(ValueError, match="r and k_max"):
        no_cap.predict_interval(0.9, N=[study["N"][4]])
    lo, hi = no_cap.predict_interval(0.9, N=[study["N"][4]], r=4, k_max=1000,
                                     num_resamples=100)
    assert lo[0] < hi[0]


def test_seed_noise_is_estimated_from_residuals():
    var = []
    for seed in range(20):
        study, kw = _study_fit(seed, seed_sd=0.3, num_instances=100, k_max=20000)
        fit = passuntil.fit_pu_instances(study["N"][:4], **kw)
        var.append(fit.prediction(study["N"][4], num_resamples=50).details["seed_sd"] ** 2)
    quiet = _study_fit(0, seed_sd=0.0, num_instances=100, k_max=20000)
    fit = passuntil.fit_pu_instances(quiet[0]["N"][:4], **quiet[1])
    quiet_sd = fit.prediction(quiet[0]["N"][4], num_resamples=50).details["seed_sd"]
    # 2 residual degrees of freedom per study, so one estimate of seed_sd^2 = 0.09 is
    # noisy (chi^2_2 / 2); their mean over 20 studies has a relative sd of ~0.22.
    assert 0.045 < np.mean(var) < 0.16 and quiet_sd < 0.1


def test_pass_at_k_task_is_unbiased_under_the_stopping_rule():
    rng = np.random.default_rng(9)
    p = np.full(40000, 0.05)
    K, x = passuntil.sample_passuntil(rng, p, 4, 200)
    pred = passuntil.pass_at_k_task(K, x, 10, r=4, num_resamples=200)
    naive = np.mean([passuntil.pass_at_k(int(k), int(c), 10) if k >= 10 else 1.0
                     for k, c in zip(K, x)])
    truth = 1 - 0.95 ** 10
    assert abs(pred.point - truth) < 0.005 and naive - truth > 0.02


def test_pass_at_k_task_point_and_coverage():
    # The interval is for the task: instances drawn from it, here p ~ U(0.001, 0.2).
    rng = np.random.default_rng(4)
    grid = np.linspace(0.001, 0.2, 200001)
    truth = np.mean(1 - (1 - grid) ** 10)
    hits = 0
    for _ in range(100):
        p = rng.uniform(0.001, 0.2, 60)
        K, x = passuntil.sample_passuntil(rng, p, 4, 1000)
        pred = passuntil.pass_at_k_task(K, x, 10, r=4, level=0.9, num_resamples=500)
        hits += pred.covers(truth)
    assert pred.quantity == "pass@k" and 0 <= pred.low <= pred.high <= 1
    # Capped: Chen et al.'s estimator; stopped at the 4th pass on sample K:
    # 1 - C(K - 11, 3) / C(K - 1, 3).
    expect = np.mean([passuntil.pass_at_k(int(k), int(c), 10) if c < 4 else
                      1 - math.comb(int(k) - 11, 3) / math.comb(int(k) - 1, 3)
                      if k - 11 >= 3 else 1.0 for k, c in zip(K, x)])
    assert pred.point == pytest.approx(expect)
    assert 0.8 <= hits / 100 <= 0.99
    with pytest.raises(ValueError, match="k=0"):
        passuntil.pass_at_k_task(K, x, 0, r=4)


def test_point_outside_the_bias_corrected_interval_is_held_and_said():
    from lmscale.fit import pu_predictive
    # Every resample finds the fit 30% low against its target: the pivot interval lies
    # wholly above the point; held, it reaches down to the point.
    errs = pu_predictive.Errors(log_ratio=np.log(0.7) + 0.01 * np.random.default_rng(0)
                                .standard_normal((400, 1)), seed_sd=0.0,
                                seed_sd_source="given", num_failed=0)
    lo, hi = pu_predictive.interval_from_errors([0.2], errs, 0.9, hold_point=False)
    assert lo[0] > 0.2
    lo_h, hi_h = pu_predictive.interval_from_errors([0.2], errs, 0.9)
    assert lo_h[0] == 0.2 and hi_h[0] == pytest.approx(hi[0])
    for seed in range(6):
        study, kw = _study_fit(seed)
        fit = passuntil.fit_pu_dataset(study["N"][:4], **kw)
        pred = fit.prediction(study["N"][4], 0.5, num_resamples=300)
        assert pred.low <= pred.point <= pred.high
        widened = any("widened to hold it" in r for r in pred.reasons)
        raw = pu_predictive.interval_from_errors(
            [pred.point], fit._errors[next(iter(fit._errors))], 0.5, hold_point=False)
        assert widened == (not raw[0][0] <= pred.point <= raw[1][0])
