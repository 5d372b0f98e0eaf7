"""Multiple-choice accuracy predictions for the report: two candidate methods, one choice.

Stage: report. Consumes a task's checkpoints (per checkpoint: N, tokens seen, validation
loss, the task's answer loss and accuracy) and the accuracy `Prediction`s of Gadre et
al.'s chain (N, D) -> L -> Err(L) (made in `analysis`); produces the task's accuracy
predictions from whichever of that chain and Bhagia et al.'s two-step method
(`lmscale.fit.taskloss`: (N, D) -> the loss on the correct answer -> a sigmoid to
accuracy) predicted the largest fitted size better from the sizes below it, with both
backtest errors. Also the loss threshold of Du et al. with a bootstrap interval.

The task loss is the runner's `answer_loss` metric of the task: the mean over questions
of the correct answer's NLL per token (nats), one value per checkpoint.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from lmscale import fit as F
from lmscale.eval.results import ACCURACY, ANSWER_LOSS
from lmscale.fit import taskloss
from lmscale.fit.bootstrap import summarize_failures

GADRE, TWO_STEP = "gadre", "two_step"


def task_points(checkpoints: Sequence[Mapping[str, Any]], index, task: str,
                fit_sizes) -> dict[str, np.ndarray] | None:
    """[n] arrays N, D, loss, task_loss, acc, final over the checkpoints of `fit_sizes`.

    D is the checkpoint's tokens seen (its rung's D at a final checkpoint when the run
    record lacks tokens per step); checkpoints missing a value are skipped. None when
    fewer than 4 remain (the sigmoid needs 4).
    """
    fit_sizes = set(fit_sizes)
    rows = []
    for c in checkpoints:
        if c["N"] not in fit_sizes:
            continue
        tokens = c.get("tokens") or (c["D"] if c["final"] else 0)
        vals = (c.get("validation_loss"), index.value(c["run"], c["step"], task, ANSWER_LOSS),
                c.get(f"{task}/{ACCURACY}"))
        if tokens <= 0 or any(v is None or not math.isfinite(v) for v in vals):
            continue
        if vals[1] <= 0:
            continue
        rows.append((c["N"], tokens, *vals, bool(c["final"])))
    if len(rows) < 4:
        return None
    cols = list(zip(*rows))
    names = ("N", "D", "loss", "task_loss", "acc")
    out = {k: np.array(v, float) for k, v in zip(names, cols)}
    out["final"] = np.array(cols[5], bool)
    return out


def choose_accuracy(points, targets, gadre: Sequence[F.Prediction] | None, settings,
                    num_questions: float | None = None
                    ) -> tuple[dict[str, Any], list[F.Prediction] | None]:
    """The task's accuracy predictions by the method chosen by backtest.

    Args:
      points: `task_points` of the fitted rungs (None: only Gadre's chain is possible).
      targets: [(N, D)] of the predicted models.
      gadre: the chain's accuracy `Prediction`s (None when it failed).
      settings: `analysis.Settings` (level, num_resamples, seed).
      num_questions: the task's question count (the two-step interval then draws the
        target's measurement as binomial; `TwoStepFit.predictions`).
    Returns:
      (info, predictions): info has "choice", "backtest_error" {method: mean |pred -
      measured| accuracy of the largest fitted size from those below, or None},
      "failures" {method: reason} and "reason" (why the choice was made).
    """
    info: dict[str, Any] = dict(choice=GADRE, backtest_error={GADRE: None, TWO_STEP: None},
                                failures={})
    if points is None or np.unique(points["N"][points["final"]]).size < 4:
        info["reason"] = ("too few fitted sizes with the task's answer loss to backtest "
                          "(the two-step method's loss law needs 3 sizes below the largest)")
        return info, gadre
    out = taskloss.choose_accuracy_method(points["N"], points["D"], points["loss"],
                                          points["task_loss"], points["acc"], points["final"])
    info["backtest_error"] = {k: (float(v) if math.isfinite(v) else None)
                              for k, v in out["backtest_error"].items()}
    info["failures"] = dict(out["failures"])
    choice = out["choice"] if gadre is not None else TWO_STEP
    info["reason"] = ("smaller backtest error" if gadre is not None
                      else "Gadre et al.'s chain could not predict")
    if choice == GADRE:
        return info, gadre
    N = np.array([t[0] for t in targets], float)
    D = np.array([t[1] for t in targets], float)
    try:
        two = taskloss.fit_two_step(points["N"], points["D"], points["task_loss"],
                                    points["acc"], points["final"])
        preds = two.predictions(N, D, settings.level, settings.num_resamples, settings.seed,
                                num_questions=num_questions)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
        info["failures"][TWO_STEP] = f"{type(e).__name__}: {e}"
        info["reason"] = "the two-step fit on every fitted rung failed; Gadre et al.'s chain kept"
        return info, gadre
    bad = [f"{k}={v:g}" for fit in (two.loss_fit, two.acc_fit)
           for k, v in dict(fit.params).items() if not math.isfinite(float(v))]
    if bad and gadre is not None:  # e.g. a task-loss law with N0 = inf: no extrapolation
        info["failures"][TWO_STEP] = ("the two-step fit on every fitted rung has non-finite "
                                      f"parameters ({', '.join(bad)})")
        info["reason"] = ("smaller backtest error, but the two-step fit on every fitted rung "
                          "is degenerate; Gadre et al.'s chain kept")
        return info, gadre
    whole = [p for p in preds if _no_interval(p)]
    if whole and gadre is not None:  # every refit failed: the band is all of [0, 1]
        info["failures"][TWO_STEP] = ("the two-step prediction has no interval: "
                                      + "; ".join(whole[0].reasons))
        info["reason"] = ("smaller backtest error, but the two-step prediction's interval "
                          "is all of [0, 1] (its bootstrap refits failed or it has no "
                          "residual degrees of freedom); Gadre et al.'s chain kept")
        return info, gadre
    info["choice"] = TWO_STEP
    info["params"] = dict(task_loss=two.loss_fit.params, sigmoid=two.acc_fit.params)
    return info, preds


def _no_interval(pred: F.Prediction) -> bool:
    """Whether fewer than 2 bootstrap refits behind `pred` succeeded, or the fit had no
    residual to estimate its noise from: either way its interval is the whole range."""
    d = pred.details or {}
    failed = "num_failed" in d and d["num_resamples"] - d["num_failed"] < 2
    return failed or any("whole range" in r for r in pred.reasons)


def loss_threshold(loss, perf, settings) -> dict[str, Any]:
    """Du et al.'s loss threshold eta with its bootstrap interval (checkpoints resampled).

    Returns a JSON-ready dict: params, reliable, reason, "eta_interval" [low, high] at
    settings.level (None when every refit failed) and "level"; or {"error": ...}.
    """
    try:
        thr = F.fit_loss_threshold(loss, perf)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
        return dict(error=f"{type(e).__name__}: {e}")
    out = dict(params=thr.params, reliable=thr.reliable, reason=thr.reason,
               level=settings.level, eta_interval=None,
               interval_note=("checkpoints resampled as independent points (checkpoints of "
                              "one run are correlated: the interval may be too narrow)"))
    try:
        boot = F.bootstrap_fit(thr, min(settings.num_resamples, 100), settings.seed)
    except ValueError as e:
        out["interval_note"] = f"bootstrap failed: {e}"
        return out
    out["eta_interval"] = list(boot.interval("eta", settings.level))
    if boot.failures:
        out["interval_note"] += "; " + summarize_failures(boot.failures,
                                                          boot.num_resamples)
    return out
