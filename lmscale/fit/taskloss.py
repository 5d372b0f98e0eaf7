"""Bhagia et al. 2024's two-step task prediction (OLMo model ladders, arXiv 2412.04403).

Stage: fit. Consumes, per ladder model or checkpoint, (N, D, task loss, accuracy), where
the task loss is the loss on the correct answer (per token or per byte); produces a
`TwoStepFit` that predicts accuracy at new (N, D), and `choose_accuracy_method`, which
compares it with Gadre et al.'s Err(L) chain by leave-largest-out backtest.

  Step 1  L_task(N, D) = E + A N^-alpha + B D^-beta    (fitted on final checkpoints)
  Step 2  Acc(L) = a / (1 + exp(-k (L - L0))) + b       (a sigmoid; k < 0 so accuracy
                                                         rises as the loss falls; fitted
                                                         on every checkpoint)
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.optimize

from lmscale.fit import _checks, fitters


def sigmoid(L, a, k, L0, b):
    """Acc(L) = a / (1 + exp(-k (L - L0))) + b (Bhagia et al. step 2)."""
    return a / (1.0 + np.exp(-k * (np.asarray(L, float) - L0))) + b


def fit_sigmoid(task_loss, acc, p0=None) -> fitters.Fit:
    """Fits step 2 by `curve_fit` from a few starts (or from `p0`, the (a, k, L0, b) of
    an earlier fit: the bootstrap's refits); accuracy in [0, 1]."""
    x = _checks.as_1d(task_loss, "task_loss", positive=True)
    y = _checks.as_1d(acc, "acc", unit_interval="closed")
    _checks.same_length(task_loss=x, acc=y)
    _checks.enough_points(x.size, 4, "fit_sigmoid")
    best = None
    starts = [(max(y.max() - y.min(), 0.05), k0, float(np.median(x)), float(y.min()))
              for k0 in (-1.0, -3.0, -10.0)] if p0 is None else [tuple(p0)]
    for p0 in starts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                popt, _ = scipy.optimize.curve_fit(sigmoid, x, y, p0=p0, maxfev=10000)
        except RuntimeError:
            continue
        ssr = float(np.sum((sigmoid(x, *popt) - y) ** 2))
        if best is None or ssr < best[1]:
            best = (popt, ssr)
    if best is None:
        raise RuntimeError("fit_sigmoid: curve_fit did not converge from any start")
    popt, ssr = best
    fit = fitters.Fit(law="sigmoid", method="curve_fit",
                      params=dict(zip(("a", "k", "L0", "b"), map(float, popt))),
                      objective=ssr, num_points=x.size, data=dict(loss=x, acc=y),
                      _predict=lambda p, loss: sigmoid(loss, **p))
    if popt[1] >= 0:
        fit._flag("accuracy does not rise as the task loss falls (k >= 0)")
    return fit


@dataclasses.dataclass
class TwoStepFit:
    """(N, D) -> task loss -> accuracy.

    Attributes:
      loss_fit: step 1 (Chinchilla form; Kaplan when D is constant).
      acc_fit: step 2 (sigmoid).
    """
    loss_fit: fitters.Fit
    acc_fit: fitters.Fit

    @property
    def reliable(self) -> bool:
        return self.loss_fit.reliable and self.acc_fit.reliable

    def predict(self, N, D) -> np.ndarray:
        """[n] predicted accuracies at (N, D)."""
        loss = self.loss_fit.predict(N=np.asarray(N, float), D=np.asarray(D, float))
        return np.clip(self.acc_fit.predict(loss=loss), 0.0, 1.0)

    def predictions(self, N, D, level=0.9, num_resamples: int = 200, seed: int = 0,
                    num_questions: float | None = None):
        """Predictive accuracy `Prediction`s at (N, D) [t], one per target.

        Each resample draws the target's task loss from step 1's predictive distribution
        (`bootstrap`'s loss-law draws: run-noise refits plus the target run's own
        deviation), refits step 2 on its fitted values plus resampled residuals
        (a residual bootstrap: the residuals, scaled by sqrt(n / (n - 4)) for the four
        fitted parameters, hold the checkpoints' binomial question noise and their
        scatter about the sigmoid), maps the loss through it and adds one
        resampled residual, the target's own measurement on the task's questions. With
        `num_questions` (the task's question count) that measurement is drawn as what it
        is, Binomial(num_questions, p) / num_questions at the mapped accuracy p moved by
        the residuals' scatter beyond binomial noise (variance var(residuals) - mean
        acc (1 - acc) / num_questions, 0 when negative): a 4-parameter sigmoid through
        12 correlated checkpoints left residuals smaller than the binomial noise of 200
        questions (sd 0.035 at 0.5), and seed 2 of the default study's held-out accuracy
        (0.52) fell outside an interval reaching 0.512.
        `level` may be a sequence: then {level: list}, from the same draws.
        """
        from lmscale.fit import bootstrap  # local: bootstrap is heavier than this module
        N, D = np.atleast_1d(np.asarray(N, float)), np.atleast_1d(np.asarray(D, float))
        rng = np.random.default_rng(seed)
        inputs = dict(N=N) if self.loss_fit.law == "kaplan" else dict(N=N, D=D)
        law, scale, failures = bootstrap._loss_draws(self.loss_fit, num_resamples, rng,
                                                     inputs)
        loss_bt = law * np.exp(scale[:, None] * rng.standard_normal(law.shape))
        x, y = self.acc_fit.data["loss"], self.acc_fit.data["acc"]
        base = self.acc_fit.predict(loss=x)
        # Residuals of a 4-parameter fit understate the noise by (n - 4) / n in variance;
        # rescaled (the usual leverage-free correction of a residual bootstrap).
        resid = (y - base) * np.sqrt(x.size / max(x.size - 4, 1))
        p0 = [self.acc_fit.params[k] for k in ("a", "k", "L0", "b")]
        if num_questions is not None:
            n_q = max(1, int(round(float(num_questions))))
            binomial = float(np.mean(np.clip(y, 0, 1) * (1 - np.clip(y, 0, 1)))) / n_q
            scatter = float(np.sqrt(max(0.0, float(np.var(resid)) - binomial)))
        draws = np.full(loss_bt.shape, np.nan)
        for b in range(num_resamples):
            if not np.all(np.isfinite(loss_bt[b])):
                continue
            ystar = np.clip(base + rng.choice(resid, x.size), 0.0, 1.0)
            try:
                refit = fit_sigmoid(x, ystar, p0=p0)
            except (ValueError, RuntimeError) as e:
                failures.append(f"sigmoid refit: {type(e).__name__}: {e}")
                continue
            if num_questions is None:
                draws[b] = refit.predict(loss=loss_bt[b]) + rng.choice(resid, N.size)
            else:
                p = np.clip(refit.predict(loss=loss_bt[b])
                            + scatter * rng.standard_normal(N.size), 0.0, 1.0)
                draws[b] = rng.binomial(n_q, p) / n_q
        reasons = [r for r in (self.loss_fit.reason, self.acc_fit.reason) if r]
        reasons += bootstrap._no_dof(self.loss_fit)
        return bootstrap._to_predictions(
            "accuracy", self.predict(N, D), bootstrap._unless_no_dof(self.loss_fit, draws),
            level, "two-step (Bhagia et al.)", failures, num_resamples, (0.0, 1.0), reasons)


def fit_two_step(N, D, task_loss, acc, final=None) -> TwoStepFit:
    """Fits both steps.

    Args:
      N, D: [n] size and tokens seen of each model or checkpoint.
      task_loss: [n] loss on the correct answers.
      acc: [n] accuracy in [0, 1].
      final: [n] bool, the final checkpoints that step 1 uses (default: all rows).
    """
    N = _checks.as_1d(N, "N", positive=True)
    D = _checks.as_1d(D, "D", positive=True)
    task_loss = _checks.as_1d(task_loss, "task_loss", positive=True)
    final = np.ones(N.size, bool) if final is None else np.asarray(final, bool)
    form = "chinchilla" if np.unique(D[final] / N[final]).size > 1 and final.sum() >= 6 \
        else "kaplan"
    loss_fit = fitters.fit_loss_law(N[final], D[final] if form == "chinchilla" else None,
                                    task_loss[final], form=form)
    return TwoStepFit(loss_fit=loss_fit, acc_fit=fit_sigmoid(task_loss, acc))


def choose_accuracy_method(N, D, loss, task_loss, acc, final=None) -> dict:
    """Per task: Bhagia's two-step vs Gadre's Err(L) chain, by predicting the largest size.

    Both are fitted on the sizes below the largest; Gadre's chain uses the (validation)
    `loss` through a Kaplan law and Err(L) = 1 - Acc; Bhagia's the task loss.
    Returns:
      dict: "choice" ("two_step" or "gadre"), "backtest_error" {method: |pred - acc| of
      the largest size's final checkpoint(s), mean}, "failures" {method: message}.
    """
    N = _checks.as_1d(N, "N", positive=True)
    acc = _checks.as_1d(acc, "acc", unit_interval="closed")
    final = np.ones(N.size, bool) if final is None else np.asarray(final, bool)
    D, loss = np.asarray(D, float), np.asarray(loss, float)
    task_loss = np.asarray(task_loss, float)
    below, at = N < N.max(), (N == N.max()) & final
    errors, failures = {}, {}
    try:
        two = fit_two_step(N[below], D[below], task_loss[below], acc[below], final[below])
        errors["two_step"] = float(np.mean(np.abs(two.predict(N[at], D[at]) - acc[at])))
    except (ValueError, RuntimeError) as e:
        errors["two_step"], failures["two_step"] = np.inf, f"{type(e).__name__}: {e}"
    try:
        fb = below & final
        lf = fitters.fit_loss_law(N[fb], None, loss[fb], form="kaplan")
        ef = fitters.fit_error_law(loss[below], 1 - acc[below])
        pred = 1 - ef.predict(loss=lf.predict(N=N[at]))
        errors["gadre"] = float(np.mean(np.abs(np.clip(pred, 0, 1) - acc[at])))
    except (ValueError, RuntimeError) as e:
        errors["gadre"], failures["gadre"] = np.inf, f"{type(e).__name__}: {e}"
    return dict(choice=min(errors, key=errors.get), backtest_error=errors,
                failures=failures)
