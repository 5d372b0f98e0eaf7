"""Predictive intervals for PassUntil predictions (dataset- and instance-level PU).

Stage: fit (numpy/scipy). `passuntil.DatasetPUFit` and `passuntil.InstancePUFit` call
`predictive_errors` from their `predict_interval` / `prediction` methods.

What the interval covers: the PU that the target model will MEASURE on this task's
instances (the same instances the fit saw) with a PassUntil run of the study's r and
cap, including the target checkpoint's own training (seed) noise.

How (a parametric bootstrap of the prediction error, with instances resampled):
  1. Base truth: each instance's fitted curve PU_i(N) from the instance-level fit
     (measured PU where an instance has no curve of its own; loss-assisted instances
     through their answer loss). The smooth curve, not the measured PU, is the base:
     redrawing measurements around measured values would count each instance's sampling
     noise twice (once in the measured value, once in the redraw).
     Each fitted slope is shrunk toward the instances' mean (empirical Bayes,
     `_shrink_slopes`): the raw fitted slopes add sampling noise to the instances' true
     spread, and a too-heterogeneous base widened the dataset band.
  2. Per resample b (the study's own instances; `resample_instances=True` draws them
     with replacement instead, which adds the between-set variance that the target,
     measured on these instances, does not have): shift every instance's
     F = log(-log PU) on each rung (fitted rungs and target) by a common seed term
     z ~ N(0, seed_sd^2); simulate the PassUntil measurement of every (rung, instance)
     (`passuntil.sample_passuntil`, study r and cap); refit the whole chain (instance
     lines, loss map, dataset line) on the simulated measurements and predict the target;
     simulate the target's measurement on the same (resampled) instances (target cap).
  3. The error e_b = log(pred_b / target_b) is the pivot; the interval at level q is
     [point / exp(e_(1+q)/2), point / exp(e_(1-q)/2)], inside [0, 1]. Because the refit
     sees the same selection effects as the real fit (capped instances, PU of 0 or 1
     dropped), a bias of the method shows up in e and shifts the interval.
Training noise (`seed_sd`, the sd of a rung's common shift in F): given (e.g. the sd of
F across extra seeds of a cheap rung), or estimated from the instance fits' residuals:
the precision-weighted mean residual per rung over instances fitted on every rung
(weights 1 / the instance's F measurement variance, from the null redraws), S = sum_j m_j^2 /
(m - 2), minus the S that measurement noise alone produces (the same statistic over
resamples with seed_sd = 0); the excess is seed_sd^2 (0 when negative). With fewer
than 3 rungs it cannot be estimated and is left out (the result says so).
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from lmscale.fit import pu_counts as pu_lib

_TINY = 1e-300


@dataclasses.dataclass
class Errors:
    """Bootstrap error samples of one target set.

    Attributes:
      log_ratio: [B, n] log(pred_b / target_b) (NaN where either is 0).
      seed_sd: the training-noise sd used; seed_sd_source: "given", "residuals" or
        "unavailable".
      num_failed: resamples whose refit could not predict (left out, counted).
    """
    log_ratio: np.ndarray
    seed_sd: float
    seed_sd_source: str
    num_failed: int


def _F(p):
    p = np.clip(p, _TINY, 1 - 1e-16)
    return np.log(-np.log(p))


def _ols(x, y, w):
    """Weighted closed-form lines over the last-but-one axis: y [..., m, k], w same."""
    sw = w.sum(-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        xm = (w * x[:, None]).sum(-2) / sw
        ym = (w * y).sum(-2) / sw
        dx = x[:, None] - xm[..., None, :]
        sxx = (w * dx ** 2).sum(-2)
        slope = (w * dx * (y - ym[..., None, :])).sum(-2) / sxx
    return ym - slope * xm, slope, sxx


def instance_predictions(N, pu, N_out, answer_loss=None, loss_assisted="missing",
                         stat_weights=None):
    """Vectorised `fit_pu_instances(...).predict_instances`, over a batch of data sets.

    Args:
      N: [m] sizes; pu: [B, m, I] per-instance PU; N_out: [n] sizes to predict.
      answer_loss: optional [m, I] or [B, m, I] answer loss, for loss assistance.
    Returns:
      (pred [B, n, I], seed_stat [B]): the instance predictions, and the residual
      statistic sum_j m_j^2 / (m - 2) of the module doc (NaN where undefined).
    """
    x, xo = np.log(N), np.log(N_out)
    valid = (pu > 0) & (pu < 1)
    y = np.where(valid, _F(pu), 0.0)
    a, b, sxx = _ols(x, y, valid.astype(float))
    own = (valid.sum(-2) >= 2) & (sxx > 1e-12) & (loss_assisted != "all")
    sat = ~own & (pu[:, int(np.argmax(N)), :] == 1.0) & (loss_assisted != "all")
    with np.errstate(over="ignore", invalid="ignore"):
        pred = np.exp(-np.exp(a[:, None, :] + b[:, None, :] * xo[None, :, None]))
    pred = np.where(own[:, None], pred, np.where(sat[:, None], 1.0, 0.0))
    rest = ~own & ~sat
    if answer_loss is not None and rest.any():
        loss = np.broadcast_to(np.asarray(answer_loss, float), pu.shape)
        u, v, _ = _ols(x, np.log(loss), np.ones(pu.shape))
        L_out = np.exp(u[:, None] + v[:, None] * xo[None, :, None])           # [B, n, I]
        # The loss map log PU = a + b L over every (model, instance) with 0 < PU < 1.
        w, L = valid.reshape(pu.shape[0], -1), loss.reshape(pu.shape[0], -1)
        lp = np.log(np.clip(pu, _TINY, 1)).reshape(pu.shape[0], -1)
        sw = w.sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            Lm, lpm = (w * L).sum(-1) / sw, (w * lp).sum(-1) / sw
            lxx = (w * (L - Lm[:, None]) ** 2).sum(-1)
            mb = (w * (L - Lm[:, None]) * (lp - lpm[:, None])).sum(-1) / lxx
            ma = lpm - mb * Lm
            la = np.clip(np.exp(ma[:, None, None] + mb[:, None, None] * L_out), 0.0, 1.0)
        ok = (sw >= 2) & (lxx > 1e-12)
        pred = np.where(rest[:, None] & ok[:, None, None], la, pred)
    full = own & valid.all(-2)
    if x.size >= 3:
        resid = np.where(full[:, None], y - (a[:, None] + b[:, None] * x[None, :, None]), 0.0)
        sw = full * (1.0 if stat_weights is None else stat_weights)
        cnt = sw.sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rung_mean = (sw[:, None] * resid).sum(-1) / cnt[:, None]
            stat = np.where(cnt > 0, (rung_mean ** 2).sum(-1) / (x.size - 2), np.nan)
    else:
        stat = np.full(pu.shape[0], np.nan)
    return pred, stat


def dataset_predictions(N, pu, N_out):
    """Vectorised `fit_pu_dataset(N, pu).predict`: pu [B, m, I] -> [B, n] (NaN if no fit)."""
    mean = pu.mean(-1)
    valid = (mean > 0) & (mean < 1)
    a, b, sxx = _ols(np.log(N), np.where(valid, _F(mean), 0.0)[..., None],
                     valid[..., None].astype(float))
    ok = (valid.sum(-1) >= 2) & (sxx[:, 0] > 1e-12)
    with np.errstate(over="ignore", invalid="ignore"):
        pred = np.exp(-np.exp(a + b * np.log(N_out)[None]))
    return np.where(ok[:, None], pred, np.nan)


def _shift(p, z):
    """PU after a shift z of F (0 and 1 stay put)."""
    inner = (p > 0) & (p < 1)
    with np.errstate(over="ignore"):
        return np.where(inner, np.exp(-np.exp(_F(p) + z)), p)


def _simulate(rng, base_fit, base_target, seed_sd, r, k_max, target_k_max, num, resample):
    """Simulated (measured fit-rung PU [B, m, I], measured target PU [B, n, I])."""
    m, I = base_fit.shape
    idx = (rng.integers(0, I, size=(num, I)) if resample else
           np.broadcast_to(np.arange(I), (num, I)))
    p_fit = _shift(base_fit[:, idx].transpose(1, 0, 2),
                   seed_sd * rng.standard_normal((num, m, 1)))
    p_tgt = _shift(base_target[:, idx].transpose(1, 0, 2),
                   seed_sd * rng.standard_normal((num, base_target.shape[0], 1)))
    K, x = pu_lib.sample_passuntil(rng, p_fit, r, k_max)
    Kt, xt = pu_lib.sample_passuntil(rng, p_tgt, r, target_k_max)
    return pu_lib.pu_from_counts(K, x, r), pu_lib.pu_from_counts(Kt, xt, r), idx


def _shrink_slopes(rng, inst_fit, base_fit, base_target, N_out, r, k_max, num=200):
    """Base curves with each instance's slope shrunk toward the instances' mean.

    Fitted slopes b_i = true slope + sampling error (var se_i^2), so their spread
    overstates the instances' heterogeneity, and a bootstrap from the raw fitted curves
    extrapolates a too-heterogeneous truth (too wide a band). se_i^2 is the slope's
    variance over PassUntil redraws from the fitted curves (refit as the fit does);
    tau^2 = var(b) - mean(se^2) (>= 0) the heterogeneity; b_i' = mean + tau^2 /
    (tau^2 + se_i^2) (b_i - mean) (empirical Bayes), each line pivoting about the centre
    of its fitted log N so that its level where measured is kept.
    """
    own = inst_fit.status == "fit"
    if own.sum() < 3:
        return base_fit, base_target
    x = np.log(inst_fit.N)
    K, xs = pu_lib.sample_passuntil(rng, np.broadcast_to(base_fit, (num,) + base_fit.shape),
                                    r, k_max)
    sim = pu_lib.pu_from_counts(K, xs, r)
    valid = (sim > 0) & (sim < 1)
    _, b_sim, sxx = _ols(x, np.where(valid, _F(sim), 0.0), valid.astype(float))
    b_sim = np.where((valid.sum(-2) >= 2) & (sxx > 1e-12), b_sim, np.nan)
    with np.errstate(invalid="ignore"):
        se2 = np.nanvar(b_sim[:, own], axis=0)
    b = inst_fit.slope[own]
    ok = np.isfinite(se2) & np.isfinite(b)
    if ok.sum() < 3:
        return base_fit, base_target
    se2 = np.where(ok, se2, np.nanmax(se2[ok]))
    tau2 = max(0.0, float(np.var(b[ok], ddof=1) - np.mean(se2[ok])))
    w = 1.0 / (tau2 + se2)
    mean = float(np.sum(w[ok] * b[ok]) / np.sum(w[ok]))
    b_new = mean + tau2 / (tau2 + se2) * (b - mean)
    b_new = np.where(ok, b_new, b)
    v = (inst_fit.pu[:, own] > 0) & (inst_fit.pu[:, own] < 1)
    xc = (v * x[:, None]).sum(0) / np.maximum(v.sum(0), 1)
    a_new = inst_fit.intercept[own] + (b - b_new) * xc
    base_fit, base_target = base_fit.copy(), base_target.copy()
    base_fit[:, own] = np.exp(-np.exp(a_new + b_new * x[:, None]))
    base_target[:, own] = np.exp(-np.exp(a_new + b_new * np.log(N_out)[:, None]))
    return base_fit, base_target


def predictive_errors(inst_fit, N_out, *, which: str, r: int, k_max: int,
                      target_k_max: int | None = None, answer_loss=None,
                      seed_sd: float | None = None, num_resamples: int = 1000,
                      resample_instances: bool = False, seed: int = 0) -> Errors:
    """Bootstrap error samples of the dataset ("dataset") or instance ("instance") fit.

    Args:
      inst_fit: the full-data `InstancePUFit` (its curves are the base truth).
      N_out: [n] target sizes.
      which: "dataset" or "instance": the fit whose prediction is bootstrapped.
      r, k_max: the study's PassUntil pass target and cap on the fitted rungs;
        target_k_max: the cap the target is measured with (default k_max).
      answer_loss: [m, I] answer loss (summed over the answer's tokens) or None.
      seed_sd: training-noise sd in F; None estimates it from residuals.
    """
    if which not in ("dataset", "instance"):
        raise ValueError(f"which={which!r}; allowed: 'dataset', 'instance'")
    if r is None or k_max is None:
        raise ValueError("predict_interval needs the PassUntil r and k_max (cap): give them "
                         "to the fit (r=, k_max=) or to predict_interval")
    N, N_out = inst_fit.N, np.atleast_1d(np.asarray(N_out, float))
    target_k_max = k_max if target_k_max is None else target_k_max
    rng = np.random.default_rng(seed)
    base_fit = inst_fit.predict_instances(N)
    not_own = inst_fit.status != "fit"
    base_fit[:, not_own] = inst_fit.pu[:, not_own]
    base_target = inst_fit.predict_instances(N_out)
    base_fit, base_target = _shrink_slopes(rng, inst_fit, base_fit, base_target, N_out,
                                           r, k_max)
    mode = "all" if getattr(inst_fit, "loss_mode", "missing") == "all" else "missing"
    source = "given"
    if seed_sd is None:
        sim, _, _ = _simulate(rng, base_fit, base_target, 0.0, r, k_max, target_k_max,
                              max(200, num_resamples // 4), False)
        # Precision weights: an instance's F is measured with a variance that varies
        # ~50-fold with its PU; the unweighted mean residual is dominated by the noisiest
        # instances, and its noise, truncated at 0 below, biased seed_sd^2 upwards.
        ok = (sim > 0) & (sim < 1)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            var_f = np.nanmean(np.nanvar(np.where(ok, _F(sim), np.nan), axis=0), axis=0)
        w = np.where(np.isfinite(var_f) & (var_f > 0), 1.0 / var_f, 0.0)
        _, obs = instance_predictions(N, inst_fit.pu[None], N_out, answer_loss, mode, w)
        if np.isnan(obs[0]):
            seed_sd, source = 0.0, "unavailable"
        else:
            _, null = instance_predictions(N, sim, N_out, answer_loss, mode, w)
            seed_sd = float(np.sqrt(max(0.0, obs[0] - np.nanmean(null))))
            source = "residuals"
    sim, tgt, idx = _simulate(rng, base_fit, base_target, seed_sd, r, k_max, target_k_max,
                              num_resamples, resample_instances)
    loss = None if answer_loss is None else np.asarray(answer_loss, float)[:, idx].transpose(
        1, 0, 2)
    if which == "instance":
        pred = instance_predictions(N, sim, N_out, loss, mode)[0].mean(-1)
    else:
        pred = dataset_predictions(N, sim, N_out)
    target = tgt.mean(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.where((pred > 0) & (target > 0), np.log(pred / target), np.nan)
    failed = int(np.isnan(pred).any(-1).sum())
    return Errors(log_ratio=err, seed_sd=seed_sd, seed_sd_source=source, num_failed=failed)


def interval_from_errors(point, errors: Errors, level: float, hold_point: bool = True):
    """([n] low, [n] high) from the log-ratio pivot at `level`, inside [0, 1].

    The pivot corrects the fit's bias against the base truth (the instance curves): where
    the bootstrap finds the fit biased by more than the interval's half-width, the pivot
    interval leaves the point out. With `hold_point` it is widened to hold the point (a
    prediction whose point lies outside its own interval reads as a contradiction; the
    caller says so in the reasons).
    """
    if not 0 < level < 1:
        raise ValueError(f"level={level} must lie in (0, 1)")
    point = np.atleast_1d(np.asarray(point, float))
    e = errors.log_ratio
    lo, hi = np.full(point.shape, 0.0), np.full(point.shape, 1.0)
    for j in range(point.size):
        col = e[:, j][np.isfinite(e[:, j])]
        if col.size < 10 or point[j] <= 0:
            continue
        q_lo, q_hi = np.quantile(col, [(1 - level) / 2, (1 + level) / 2])
        # Resamples whose prediction or target is 0 sit at the interval's ends.
        lo[j] = min(1.0, point[j] / np.exp(q_hi))
        hi[j] = min(1.0, point[j] / np.exp(q_lo))
        if hold_point:
            lo[j], hi[j] = min(lo[j], point[j]), max(hi[j], point[j])
    return lo, hi
