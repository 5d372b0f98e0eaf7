"""Bootstrap intervals for fitted parameters and predictions.

Stage: fit. Consumes a `Fit` (anything with `.data`, `.refit(indices)`, `.params`,
`.predict(...)`); produces `Bootstrap`: the refitted parameter samples and percentile
intervals for parameters and for predictions at new inputs.

Points are resampled with replacement (the nonparametric bootstrap that Epoch AI use for
the Chinchilla fit, 4,000 resamples there). A resample whose refit raises or comes back
unreliable is counted in `num_failed`, its reason kept in `failures`, never silently
replaced.

`predictive` (behind every `Fit.prediction` / `Fit.predict_interval`) is the predictive
interval of issue 13: a parametric bootstrap of the noisy units, refitted, plus the noise
of measuring the target (below).
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Sequence

import logging

import numpy as np
import scipy.stats


@dataclasses.dataclass
class Bootstrap:
    """Refits on resampled points.

    Attributes:
      params: name -> [B] parameter samples from the B successful refits.
      fits: the B successful refitted objects (their `.predict` gives prediction bands).
      num_failed: resamples whose refit raised or was flagged unreliable.
      num_resamples: resamples drawn.
      failures: one reason per failed resample (the exception or the flag), in order.
    """
    params: dict[str, np.ndarray]
    fits: list[Any] = dataclasses.field(repr=False)
    num_failed: int
    num_resamples: int
    failures: list[str] = dataclasses.field(default_factory=list)

    def interval(self, name: str, level: float = 0.95) -> tuple[float, float]:
        """Percentile interval of parameter `name` at confidence `level`."""
        if name not in self.params:
            raise ValueError(f"no parameter {name!r}; have {sorted(self.params)}")
        return percentile_interval(self.params[name], level)

    def predict(self, **inputs) -> np.ndarray:
        """[B, n] predictions of every refit at `inputs` (same keywords as `.predict`)."""
        return np.stack([np.asarray(f.predict(**inputs), float).reshape(-1) for f in self.fits])

    def predict_interval(self, level: float = 0.95, **inputs) -> tuple[np.ndarray, np.ndarray]:
        """Percentile band ([n] lower, [n] upper) of predictions at `inputs`."""
        return percentile_interval(self.predict(**inputs), level, axis=0)


def percentile_interval(samples, level: float = 0.95, axis: int | None = None):
    """Central percentile interval of `samples` at confidence `level` in (0, 1)."""
    if not 0 < level < 1:
        raise ValueError(f"level={level} must lie in (0, 1)")
    samples = np.asarray(samples, float)
    if samples.size == 0:
        raise ValueError("no bootstrap samples (every resample failed)")
    q = 100 * np.array([(1 - level) / 2, (1 + level) / 2])
    lo, hi = np.percentile(samples, q, axis=axis)
    return (float(lo), float(hi)) if np.ndim(lo) == 0 else (lo, hi)


def resample_indices(n: int, num_resamples: int, seed: int) -> np.ndarray:
    """[num_resamples, n] indices drawn with replacement from range(n)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(num_resamples, n))


def bootstrap_fit(fit, num_resamples: int = 200, seed: int = 0,
                  refit: Callable[[np.ndarray], Any] | None = None) -> Bootstrap:
    """Bootstraps a fit: resample its points with replacement, refit, collect parameters.

    Args:
      fit: a fitted object with `.data` (name -> [n] arrays), `.params` and `.refit`.
      num_resamples: B, number of resamples.
      seed: numpy Generator seed (results are deterministic given it).
      refit: optional replacement for `fit.refit`, called with [n] indices.
    Returns:
      A `Bootstrap`.
    Raises:
      ValueError: num_resamples < 1, or every resample failed.
    """
    if num_resamples < 1:
        raise ValueError(f"num_resamples={num_resamples} must be >= 1")
    n = len(next(iter(fit.data.values())))
    refit = refit or fit.refit
    fits, failures = [], []
    for idx in resample_indices(n, num_resamples, seed):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f = refit(idx)
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
            failures.append(f"{type(e).__name__}: {e}")
            continue
        if not getattr(f, "reliable", True):
            failures.append(f"unreliable refit: {getattr(f, 'reason', '')}")
            continue
        fits.append(f)
    if not fits:
        raise ValueError(f"bootstrap: all {num_resamples} refits failed; the fit has too "
                         f"few distinct points to resample (first: {failures[0]})")
    if failures:
        logging.info("bootstrap: %d of %d refits failed; most common: %s", len(failures),
                     num_resamples, summarize_failures(failures, num_resamples))
    params = {k: np.array([f.params[k] for f in fits], float) for k in fits[0].params}
    return Bootstrap(params=params, fits=fits, num_failed=len(failures),
                     num_resamples=num_resamples, failures=failures)


def summarize_failures(failures: Sequence[str], num_resamples: int) -> str:
    """One line: how many of `num_resamples` refits failed, and the most common reason."""
    if not failures:
        return ""
    reasons, counts = np.unique([f[:160] for f in failures], return_counts=True)
    return (f"{len(failures)} of {num_resamples} bootstrap refits failed "
            f"(most common, {counts.max()}x: {reasons[np.argmax(counts)]})")



# --- Predictive intervals ---------------------------------------------------------------
#
# The loss law: each run's loss deviates from the law by a multiplicative noise (seed to
# seed, data order), sigma estimated from the law's log residuals with n - p degrees of
# freedom (extra seeds of a rung enter as extra points). Resample b takes sigma_b =
# s sqrt(dof / (dof - 2)) (the posterior-mean variance, which widens the interval for
# few rungs; with dof <= 2 a draw s sqrt(dof / chi2_dof)), new losses Lhat_i
# exp(sigma_b z_i), refits, predicts, and adds the target run's own deviation sigma_b z.
#
# The error law: each measured error is a mean over a finite question set. Resample b draws
# every error as Binomial(Q_i, Errhat_i) / Q_i (questions resampled) plus the model-to-model
# scatter about the law that the residuals show beyond the binomial part, refits, and the
# target's error is measured again on its own Q questions.


def _noise_scale(resid: np.ndarray, num_params: int, num_resamples: int, rng,
                 floor_var: float = 0.0):
    """[B] residual sd per resample; 0 where no dof is left.

    With dof > 2: the posterior-mean variance s^2 dof / (dof - 2) (Jeffreys prior),
    the same in every resample. Drawing sigma from its chi-square posterior instead (a
    scale mixture, kept for dof <= 2 where that mean is infinite) made the loss
    predictive too peaked: on simulated ladders (7 sizes, dof 7) its 50% intervals
    covered 0.445-0.467 while its 90% ones covered 0.91, because the refits' own
    extrapolation spread already gives the tails; with the posterior mean, 0.517 /
    0.837 / 0.923 (docs/fit.md section 7).
    """
    dof = resid.size - num_params
    if dof <= 0:
        return np.zeros(num_resamples), dof
    var = max(float(np.sum(resid ** 2)) / dof - floor_var, 0.0)
    if dof > 2:
        return np.full(num_resamples, np.sqrt(var * dof / (dof - 2))), dof
    return np.sqrt(var * dof / rng.chisquare(dof, num_resamples)), dof


# Significance of the chi-square test below which the error law's residuals are taken as
# binomial question noise alone (no excess scatter).
EXCESS_TEST_LEVEL = 0.1


def _excess_scale(resid: np.ndarray, num_params: int, num_resamples: int,
                  floor_var: float) -> np.ndarray:
    """[B] sd of the scatter beyond the binomial `floor_var`: a point estimate, or 0.

    The excess S / dof - floor_var is a difference of two variances. Truncated at 0 (the
    earlier estimate) it is positive half the time when there is no excess, and adds
    0.24 binomial variances on average (simulated ladders, dof 7): accuracy intervals
    over-covered, 0.55 / 0.85 at 50 / 80%. The excess is now kept only where the
    residuals reject pure binomial noise, S / floor_var > the chi-square(dof) quantile
    at 1 - EXCESS_TEST_LEVEL, and is then its moment estimate. (Drawing it from a
    chi-square posterior, as `_noise_scale` does for a directly measured variance,
    would scale the truncated value by dof / chi2 and inflate it further.)
    """
    dof = resid.size - num_params
    if dof <= 0:
        return np.zeros(num_resamples)
    S = float(np.sum(resid ** 2))
    if floor_var > 0 and S / floor_var <= scipy.stats.chi2.ppf(1 - EXCESS_TEST_LEVEL, dof):
        return np.zeros(num_resamples)
    var = max(S / dof - floor_var, 0.0)
    return np.full(num_resamples, np.sqrt(var))


def _loss_draws(fit, num_resamples: int, rng, inputs):
    """([B, t] law predictions, [B] noise sd, failures) for a loss-law `fit`."""
    N, D, loss = fit.data["N"], fit.data["D"], fit.data["loss"]
    base = np.asarray(fit.predict(N=N, D=D), float)
    resid = np.log(loss) - np.log(np.maximum(base, 1e-300))
    scale, _ = _noise_scale(resid, len(fit.params), num_resamples, rng)
    t = np.asarray(fit.predict(**inputs), float).reshape(-1).size
    out, failures = np.full((num_resamples, t), np.nan), []
    for b in range(num_resamples):
        y = base * np.exp(scale[b] * rng.standard_normal(N.size))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pred = np.asarray(fit.refit_values(y).predict(**inputs), float).reshape(-1)
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
            failures.append(f"{type(e).__name__}: {e}")
            continue
        if not np.all(np.isfinite(pred) & (pred > 0)):
            failures.append("refit predicts a non-finite or non-positive loss")
            continue
        out[b] = pred
    return out, scale, failures


def _binomial_noise(p, q, rng):
    """A mean over q questions at accuracy/error p: Binomial(q, p) / q, q rounded."""
    q = np.maximum(np.rint(q), 1).astype(np.int64)
    return rng.binomial(q, np.clip(p, 0.0, 1.0)) / q


def _err_draws(fit, loss_bt: np.ndarray, rng, target_questions=None):
    """([B, t] measured-error draws, failures) of an error-law `fit` at losses [B, t]."""
    x, y = fit.data["loss"], fit.data["err"]
    q = fit.data.get("num_questions")
    base = np.clip(np.asarray(fit.predict(loss=x), float), 0.0, 1.0)
    binvar = 0.0 if q is None else float(np.mean(base * (1 - base) / q))
    B, t = loss_bt.shape
    scale = _excess_scale(y - base, 3, B, binvar)
    q_t = None
    if q is not None:
        q_t = np.broadcast_to(np.median(q) if target_questions is None
                              else np.asarray(target_questions, float), (t,))
    out, failures = np.full((B, t), np.nan), []
    for b in range(B):
        if not np.all(np.isfinite(loss_bt[b])):
            continue      # the loss refit failed; counted there
        ystar = base if q is None else _binomial_noise(base, q, rng)
        ystar = ystar + scale[b] * rng.standard_normal(x.size)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pred = np.asarray(fit.refit_values(ystar).predict(loss=loss_bt[b]), float)
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
            failures.append(f"{type(e).__name__}: {e}")
            continue
        pred = np.clip(pred + scale[b] * rng.standard_normal(t), 0.0, 1.0)
        out[b] = pred if q_t is None else _binomial_noise(pred, q_t, rng)
    return out, failures


def _to_predictions(quantity, point, draws, level, method, failures, num_resamples,
                    bounds, extra_reasons=()):
    if not np.isscalar(level):   # several levels from the same draws
        return {lv: _to_predictions(quantity, point, draws, lv, method, failures,
                                    num_resamples, bounds, extra_reasons) for lv in level}
    from lmscale.fit.prediction import Prediction  # local: keeps this module light
    ok = np.all(np.isfinite(draws), axis=1)
    reasons = list(extra_reasons)
    if failures:
        reasons.append(summarize_failures(failures, num_resamples))
    details = dict(num_resamples=num_resamples, num_failed=len(failures),
                   failures=list(failures))
    if ok.sum() < 2:
        if not any("whole range" in r for r in reasons):
            reasons.append("fewer than 2 bootstrap refits succeeded: the interval is the "
                           "quantity's whole range")
        return [Prediction(quantity, p, bounds[0], bounds[1], level, method, reasons, bounds,
                           details=details) for p in point]
    lo, hi = percentile_interval(draws[ok], level, axis=0)
    return [Prediction(quantity, p, l_, h_, level, method, reasons, bounds, details=details)
            for p, l_, h_ in zip(point, np.atleast_1d(lo), np.atleast_1d(hi))]


def predictive(fit, level: float = 0.9, num_resamples: int = 200, seed: int = 0,
               **inputs):
    """Predictive `Prediction`s (one per target) of a loss-law or error-law `fit`.

    `level` may be a sequence: then {level: list of Predictions}, from the same draws.

    Loss law: inputs as `fit.predict` (N=, D=, ...): the interval of one new run's loss.
    Error law: loss= the target's loss [t], taken as known; num_questions= optional
    question count of the target's measurement (default: the fitted points' median).
    """
    rng = np.random.default_rng(seed)
    reasons = [fit.reason] if getattr(fit, "reason", "") else []
    if fit.law == "error":
        target_q = inputs.pop("num_questions", None)
        loss = np.atleast_1d(np.asarray(inputs["loss"], float))
        draws, failures = _err_draws(fit, np.tile(loss, (num_resamples, 1)), rng, target_q)
        point = np.asarray(fit.predict(loss=loss), float)
        return _to_predictions("error", point, draws, level, "Err(L)", failures,
                               num_resamples, (0.0, 1.0), reasons)
    point = np.asarray(fit.predict(**inputs), float).reshape(-1)
    if "N" not in fit.data or fit._refit_values is None:
        # Another law (loss threshold, ...): resample its points, refit, and report that
        # the band is the parameters' uncertainty only.
        boot = bootstrap_fit(fit, num_resamples, seed)
        draws = boot.predict(**inputs)
        return _to_predictions(fit.law, point, draws, level, fit.law, boot.failures,
                               num_resamples, (-np.inf, np.inf), reasons + [
                                   "interval: parameter uncertainty only (no model of "
                                   "the target's measurement noise for this law)"])
    law, scale, failures = _loss_draws(fit, num_resamples, rng, inputs)
    draws = law * np.exp(scale[:, None] * rng.standard_normal(law.shape))
    return _to_predictions("loss", point, _unless_no_dof(fit, draws), level, f"L {fit.law}",
                           failures, num_resamples, (0.0, np.inf), reasons + _no_dof(fit))


def _no_dof(fit) -> list[str]:
    """The reason a loss law's noise cannot be estimated (as many runs as parameters)."""
    if fit.data["loss"].size > len(fit.params):
        return []
    return [f"{fit.data['loss'].size} runs for {len(fit.params)} parameters: no residual "
            "to estimate the run-to-run noise from, so the interval is the quantity's "
            "whole range"]


def _unless_no_dof(fit, draws):
    """All-NaN draws (the interval becomes the whole range) when `_no_dof` applies: a
    zero-width [x, x] would claim a certainty that the fit cannot have."""
    return np.full_like(draws, np.nan) if _no_dof(fit) else draws


def predictive_chain(loss_fit, err_fit, level: float = 0.9, num_resamples: int = 200,
                     seed: int = 0, num_questions=None, **inputs):
    """(N, D) -> L -> Err with predictive intervals, refitting both laws per resample.

    Each resample refits the loss law (run noise), predicts the target's loss law value,
    adds the target model's own deviation from the law (a model that lands below the law
    is a better model, so its error follows), refits the error law on resampled questions
    and measures the target's error on its own finite question set.

    Args:
      loss_fit: from `fit_loss_law`; err_fit: from `fit_error_law` (with num_questions
        for binomial noise).
      level: nominal coverage; num_resamples, seed: bootstrap size and seed.
      num_questions: the target's question count (default: err_fit's median).
      **inputs: the targets, as `loss_fit.predict` (N=, D= or N=, M=).
    Returns:
      (list of loss `Prediction`s, list of error `Prediction`s), one per target; with a
      sequence of levels each is {level: list}, all from the same draws.
    """
    rng = np.random.default_rng(seed)
    law, scale, lfail = _loss_draws(loss_fit, num_resamples, rng, inputs)
    loss_bt = law * np.exp(scale[:, None] * rng.standard_normal(law.shape))
    draws, efail = _err_draws(err_fit, loss_bt, rng, num_questions)
    lpoint, epoint = predict_chain_point(loss_fit, err_fit, inputs)
    r_l = [loss_fit.reason] if loss_fit.reason else []
    r_e = r_l + ([err_fit.reason] if err_fit.reason else [])
    method = f"L {loss_fit.law} -> Err(L)"
    r_l, r_e = r_l + _no_dof(loss_fit), r_e + _no_dof(loss_fit)
    return (_to_predictions("loss", lpoint, _unless_no_dof(loss_fit, loss_bt), level,
                            f"L {loss_fit.law}", lfail, num_resamples, (0.0, np.inf), r_l),
            _to_predictions("error", epoint, _unless_no_dof(loss_fit, draws), level, method,
                            lfail + efail, num_resamples, (0.0, 1.0), r_e))


def predict_chain_point(loss_fit, err_fit, inputs):
    loss = np.asarray(loss_fit.predict(**inputs), float).reshape(-1)
    return loss, np.asarray(err_fit.predict(loss=loss), float)
