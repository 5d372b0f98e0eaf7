"""Tests for lmscale.fit.simulate_pu and the calibration of PU predictive intervals."""
import numpy as np
import pytest

from lmscale.fit import passuntil, simulate_pu


def test_simulated_study_follows_its_settings():
    study = simulate_pu.simulate_study(np.random.default_rng(0), num_instances=50,
                                       num_rungs=4, r=3, k_max=500, falling=0.0,
                                       seed_sd=0.0)
    assert study["N"].shape == (4,) and study["pu"].shape == (4, 50)
    K, x = study["num_samples"], study["num_passes"]
    capped = x < 3
    assert np.all(K[capped] == 500) and np.all(K[~capped] <= 500)
    # Without falling instances or seed noise every instance's PU rises with N.
    assert np.all(np.diff(study["true_pu"], axis=0) > 0)
    # Answer loss tracks -log PU (correlated, for loss assistance).
    corr = np.corrcoef(study["answer_loss"].ravel(), -np.log(study["true_pu"]).ravel())[0, 1]
    assert corr > 0.9
    with pytest.raises(ValueError, match="unknown settings"):
        simulate_pu.simulate_study(np.random.default_rng(0), rungs=3)


def test_trials_return_predictions_at_each_level():
    truth, preds = simulate_pu.pu_instance_trial(np.random.default_rng(3), num_resamples=100)
    assert 0 <= truth <= 1 and sorted(preds) == [0.5, 0.8, 0.9]
    p50, p90 = preds[0.5], preds[0.9]
    assert 0 <= p90.low <= p50.low <= p50.high <= p90.high <= 1
    assert p90.quantity == "pu" and p90.details["seed_sd_source"] in ("residuals", "given")


@pytest.mark.parametrize("trial", [simulate_pu.pu_dataset_trial,
                                   simulate_pu.pu_instance_trial])
def test_ninety_percent_coverage_over_100_studies(trial):
    # The default study's shape: 5 rungs (4 fitted), 24 instances, r = 4, cap 1,000, one
    # seed per rung with training noise, some instances falling with N.
    cov = simulate_pu.coverage(trial, 100, levels=(0.5, 0.9), seed=7, num_resamples=150)
    assert 0.82 <= cov[0.9][0] <= 0.97, cov
    assert 0.35 <= cov[0.5][0] <= 0.65, cov


def test_intervals_without_training_noise_term_undercover():
    # The same studies with the target's training noise and the seed term left out of
    # the interval (seed_sd = 0 given) cover less: the term is needed.
    rng = np.random.default_rng(11)
    hits_with, hits_without = [], []
    for _ in range(60):
        study = simulate_pu.simulate_study(rng, seed_sd=0.15, num_instances=40)
        N, target = study["N"][:4], study["N"][4]
        fit = passuntil.fit_pu_instances(N, num_samples=study["num_samples"][:4],
                                         num_passes=study["num_passes"][:4], r=4, k_max=1000)
        truth = study["pu"][4].mean()
        with_ = fit.prediction(target, 0.9, num_resamples=150)
        without = fit.prediction(target, 0.9, num_resamples=150, seed_sd=0.0)
        hits_with.append(with_.covers(truth))
        hits_without.append(without.covers(truth))
    assert np.mean(hits_with) >= np.mean(hits_without) + 0.1
