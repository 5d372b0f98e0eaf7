"""Synthetic PassUntil ladders with known truth, for calibrating PU intervals.

Stage: fit (numpy only). `pu_dataset_trial` and `pu_instance_trial` each simulate one
study and return `(truth, {level: Prediction})`, the shape that
`lmscale.fit.calibration.coverage(trial, num_sims, levels, seed)` consumes.

A study (defaults: the default study's shape):
  - rungs N_j = N_min * ratio^j, j < num_rungs; the last `held_out` rung is the target.
  - instances with their own law PU_i(N) = exp(-c_i N^-alpha_i): PU_i at the largest
    fitted rung log-uniform in [pu_low, pu_high]; alpha_i ~ U(alpha_low, alpha_high), and
    a fraction `falling` of instances with alpha_i ~ U(-0.3, -0.05) (PU falls with N).
  - `curvature` > 0: instance i's F also falls by kappa_i log(N / N_0)^2, kappa_i ~
    U(0, curvature) (growth that accelerates: its answer loss plunges).
  - one seed per rung: rung j's checkpoint shifts every instance's F = log(-log PU) by
    a common z_j ~ N(0, seed_sd^2) (training noise), the target rung included.
  - PassUntil per (rung, instance) with r and cap k_max (`passuntil.sample_passuntil`,
    negative-binomial draws, vectorised).
  - answer loss (sum over the answer's tokens, nats) = -log PU_ij * loss_scale +
    d_i + N(0, loss_noise^2), floored at 0.01: correlated with PU, for loss assistance;
    d_i ~ N(0, loss_instance_sd^2) is an instance's own lasting offset (answer loss
    does not fix PU: instances of one loss scatter in PU).
truth: the target rung's MEASURED dataset PU (mean of the instances' unbiased PassUntil
estimates with the same r and cap), so coverage is of the measurement the study makes.
"""
from __future__ import annotations

import warnings

import numpy as np

from lmscale.fit import passuntil

LEVELS = (0.5, 0.8, 0.9)
DEFAULTS = dict(num_rungs=5, held_out=1, num_instances=24, r=4, k_max=1000, N_min=2e7,
                ratio=2.0, pu_low=1e-3, pu_high=0.5, alpha_low=0.2, alpha_high=0.8,
                falling=0.1, seed_sd=0.05, loss_scale=1.0, loss_noise=0.3,
                loss_instance_sd=0.0, curvature=0.0, use_loss=True)


def simulate_study(rng: np.random.Generator, **settings) -> dict:
    """One synthetic ladder; settings override `DEFAULTS`.

    Returns:
      dict with N [m], true_pu [m, I] (after training noise), num_samples, num_passes,
      pu (unbiased estimates) and answer_loss, all [m, I], plus the settings used.
    """
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"simulate_study: unknown settings {sorted(unknown)}; "
                         f"allowed: {sorted(DEFAULTS)}")
    s = {**DEFAULTS, **settings}
    m, I = s["num_rungs"], s["num_instances"]
    N = s["N_min"] * s["ratio"] ** np.arange(m)
    ref = N[m - 1 - s["held_out"]]
    pu_ref = np.exp(rng.uniform(np.log(s["pu_low"]), np.log(s["pu_high"]), I))
    alpha = rng.uniform(s["alpha_low"], s["alpha_high"], I)
    fall = rng.random(I) < s["falling"]
    alpha[fall] = rng.uniform(-0.3, -0.05, fall.sum())
    # F_i(N) = log c_i - alpha_i log N, anchored at PU_i(ref) = pu_ref.
    F = (np.log(-np.log(pu_ref))[None] - alpha[None] * np.log(N / ref)[:, None]
         + s["seed_sd"] * rng.standard_normal((m, 1)))
    if s["curvature"]:
        # Accelerating instances: F_i falls by kappa_i (log N / ref)^2 more (a plunge in
        # their answer loss; a log-log line extrapolates them too low).
        kappa = rng.uniform(0.0, s["curvature"], I)
        F = F - kappa[None] * np.log(N / N[0])[:, None] ** 2
    true_pu = np.exp(-np.exp(F))
    K, x = passuntil.sample_passuntil(rng, true_pu, s["r"], s["k_max"])
    offset = s["loss_instance_sd"] * rng.standard_normal(I) if s["loss_instance_sd"] else 0.0
    loss = np.maximum(-np.log(true_pu) * s["loss_scale"] + offset
                      + s["loss_noise"] * rng.standard_normal((m, I)), 0.01)
    return dict(N=N, true_pu=true_pu, num_samples=K, num_passes=x,
                pu=passuntil.pu_from_counts(K, x, s["r"]), answer_loss=loss, settings=s)


def _trial(rng, which, levels, num_resamples, settings):
    study = simulate_study(rng, **settings)
    s = study["settings"]
    k = s["num_rungs"] - s["held_out"]
    N, target = study["N"][:k], float(study["N"][-1])
    truth = float(study["pu"][-1].mean())
    loss = study["answer_loss"][:k] if s["use_loss"] else None
    kwargs = dict(num_samples=study["num_samples"][:k], num_passes=study["num_passes"][:k],
                  r=s["r"], k_max=s["k_max"], answer_loss=loss)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = (passuntil.fit_pu_dataset(N, **kwargs) if which == "dataset" else
               passuntil.fit_pu_instances(N, **kwargs))
        preds = fit.predictions(target, levels, num_resamples=num_resamples,
                                seed=int(rng.integers(2 ** 31)))
    return truth, preds


def pu_dataset_trial(rng: np.random.Generator, levels=LEVELS, num_resamples: int = 400,
                     **settings):
    """(measured target dataset PU, {level: Prediction}) of the dataset-level fit.

    A study whose fitted rungs leave fewer than 2 models with 0 < dataset PU < 1 (the
    fit raises) is redrawn.
    """
    for _ in range(20):
        try:
            return _trial(rng, "dataset", levels, num_resamples, settings)
        except ValueError as e:
            if "need >= 2" not in str(e):
                raise
    raise RuntimeError("pu_dataset_trial: 20 studies in a row could not be fitted")


def pu_instance_trial(rng: np.random.Generator, levels=LEVELS, num_resamples: int = 400,
                      **settings):
    """(measured target dataset PU, {level: Prediction}) of the instance-level fit."""
    for _ in range(20):
        try:
            return _trial(rng, "instance", levels, num_resamples, settings)
        except ValueError as e:
            if "need >= 2" not in str(e):
                raise
    raise RuntimeError("pu_instance_trial: 20 studies in a row could not be fitted")


def coverage(trial, num_sims: int, levels=LEVELS, seed: int = 0, **settings) -> dict:
    """{level: (coverage, median relative width)} of `trial` over num_sims studies."""
    rng = np.random.default_rng(seed)
    hits = {lv: [] for lv in levels}
    widths = {lv: [] for lv in levels}
    for _ in range(num_sims):
        truth, preds = trial(rng, levels=levels, **settings)
        for lv in levels:
            hits[lv].append(preds[lv].covers(truth))
            widths[lv].append((preds[lv].high - preds[lv].low) / max(truth, 1e-12))
    return {lv: (float(np.mean(hits[lv])), float(np.median(widths[lv]))) for lv in levels}
