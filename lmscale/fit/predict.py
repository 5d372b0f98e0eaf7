"""Predictions, their errors, and Gadre et al.'s search-filter-fit and reliability studies.

Stage: fit. Consumes fitted laws and sweep results; produces predictions, relative
errors, Pareto masks and compute-vs-error tables.

  relative error  |pred - true| / true (Gadre et al. section 3).
  search-filter-fit  keep the runs on the loss-vs-compute Pareto frontier of a sweep
    and fit L(C) = E + lambda C^-eta to them (Gadre et al. section 3.3, Figure 4).
  compute-reliability  fit on the k cheapest fitting runs for growing k and record the
    prediction error against the FLOPs spent on them (Gadre et al. appendix E,
    Figures 15-16).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from lmscale.fit import _checks
from lmscale.fit import fitters
from lmscale.fit import io


def relative_error(pred, true) -> np.ndarray:
    """|pred - true| / |true|, elementwise; raises ValueError where true is 0."""
    pred = np.asarray(pred, float)
    true = np.asarray(true, float)
    if np.any(true == 0):
        raise ValueError("true contains 0: relative error is undefined")
    return np.abs(pred - true) / np.abs(true)


def pareto_frontier(C, loss) -> np.ndarray:
    """[n] bool: runs no other run beats on both compute and loss.

    A run is on the frontier when every run with compute <= its compute has a loss
    >= its loss (ties in compute keep the lowest loss only).
    """
    C = _checks.as_1d(C, "C", positive=True)
    loss = _checks.as_1d(loss, "loss")
    _checks.same_length(C=C, loss=loss)
    order = np.lexsort((loss, C))
    mask = np.zeros(C.size, bool)
    best = np.inf
    for i in order:
        if loss[i] < best:
            mask[i] = True
            best = loss[i]
    return mask


def fit_compute_law(C, loss, method: str = "lm", **kwargs) -> fitters.Fit:
    """L(C) = E + lambda C^-eta fitted to compute C [n] (FLOPs) and loss [n].

    A thin wrapper on `fitters.fit_loss_law(form="compute")`; `.predict(C=...)` works.
    """
    C = _checks.as_1d(C, "C", positive=True)
    return fitters.fit_loss_law(np.ones_like(C), C / 6.0, loss, form="compute",
                                method=method, **kwargs)


def search_filter_fit(C, loss, *, num_resamples: int = 200, seed: int = 0,
                      method: str = "lm") -> dict[str, Any]:
    """Gadre et al.'s recipe: from a sweep, keep the Pareto runs and fit L(C) to them.

    Args:
      C: [n] training compute per run (FLOPs).
      loss: [n] validation loss per run.
      num_resamples: bootstrap resamples of the frontier fit (0 to skip).
    Returns:
      dict with "frontier" ([n] bool), "fit" (`Fit`) and "bootstrap" (`Bootstrap` or None).
    """
    mask = pareto_frontier(C, loss)
    C = np.asarray(C, float)
    loss = np.asarray(loss, float)
    fit = fit_compute_law(C[mask], loss[mask], method=method)
    boot = fit.bootstrap(num_resamples=num_resamples, seed=seed) if num_resamples else None
    return dict(frontier=mask, fit=fit, bootstrap=boot)


def compute_reliability(N, D, loss, target_N, target_D, target_loss, *,
                        form: str = "overtrain", method: str | None = None,
                        err=None, target_err=None, min_runs: int | None = None):
    """Prediction error as a function of the compute spent on the fitting runs.

    Runs are sorted by C = 6ND; for k = min_runs..n the law is fitted on the k cheapest
    and the targets are predicted. With `err` and `target_err` the error law is fitted
    on the same k runs' measured loss and the chained prediction is scored too.

    Args:
      N, D, loss: [n] fitting runs.
      target_N, target_D, target_loss: [t] held-out runs.
      form, method: as `fitters.fit_loss_law`.
      err, target_err: optional [n] and [t] average top-1 errors.
      min_runs: smallest k (default: the law's parameter count + 1).
    Returns:
      list of dicts, one per k: "num_runs", "flops" (sum of C over the runs used),
      "loss_rel_err" [t], and "err_rel_err" [t] when errors are given. Entries whose fit
      raised carry "error" (the message) instead.
    """
    from lmscale.fit import laws  # local: only for the parameter count
    N = _checks.as_1d(N, "N", positive=True)
    D = _checks.as_1d(D, "D", positive=True)
    loss = _checks.as_1d(loss, "loss", positive=True)
    order = np.argsort(6.0 * N * D)
    k0 = min_runs or len(laws.get_form(form).param_names) + 1
    out = []
    for k in range(k0, N.size + 1):
        idx = order[:k]
        row = dict(num_runs=k, flops=float(np.sum(6.0 * N[idx] * D[idx])))
        try:
            lf = fitters.fit_loss_law(N[idx], D[idx], loss[idx], form=form, method=method)
            pred = lf.predict(N=np.asarray(target_N, float), D=np.asarray(target_D, float))
            row["loss_rel_err"] = relative_error(pred, target_loss)
            if err is not None:
                ef = fitters.fit_error_law(loss[idx], np.asarray(err, float)[idx])
                row["err_rel_err"] = relative_error(ef.predict(loss=pred), target_err)
        except (ValueError, RuntimeError) as e:
            row["error"] = str(e)
        out.append(row)
    return out


def gadre_default_fit(table, dataset: str, loss_column: str = "loss_c4_val",
                      err_column: str = "err_avg17") -> dict[str, Any]:
    """Gadre et al.'s Table 1 configuration on one training set of their testbed.

    Follows ../shared/data/gadre2024/README.md: loss law on the rows marked
    `fit_loss_and_error` (LM from the 128-start grid), error law on those plus
    `fit_error_only` against their measured loss, then the *predicted* loss of each
    `target` row (nominal M) fed into the error law.

    Args:
      table: testbed.csv as a path, `Table` or DataFrame.
      dataset: "rpj", "c4_original" or "rw_original".
    Returns:
      dict with "loss_fit", "err_fit", "names" [t], "loss_pred", "loss_true",
      "loss_rel_err", "err_pred", "err_true", "err_rel_err" ([t] each; errors as
      fractions, not percent).
    """
    table = io.as_table(table)
    rows = io.select(table, io.column(table, "dataset") == dataset)
    if not len(rows["dataset"]):
        raise ValueError(f"dataset={dataset!r} has no rows; datasets are "
                         f"{sorted(set(table['dataset']))}")
    role = io.column(rows, "table1_role")
    fit_loss = role == "fit_loss_and_error"
    fit_err = fit_loss | (role == "fit_error_only")
    target = role == "target"
    L, err = io.column(rows, loss_column), io.column(rows, err_column)
    loss_fit = fitters.fit_loss_law(rows["N"][fit_loss], rows["D"][fit_loss], L[fit_loss],
                                    form="overtrain", method="lm")
    err_fit = fitters.fit_error_law(L[fit_err], err[fit_err])
    loss_pred, err_pred = fitters.predict_chain(loss_fit, err_fit, N=rows["N"][target],
                                                M=rows["M"][target])
    return dict(loss_fit=loss_fit, err_fit=err_fit, names=rows["name"][target],
                loss_pred=loss_pred, loss_true=L[target],
                loss_rel_err=relative_error(loss_pred, L[target]),
                err_pred=err_pred, err_true=err[target],
                err_rel_err=relative_error(err_pred, err[target]))


def gadre_effective_questions(rows, tasks, split: str = "in_17_task_split"):
    """[n] effective question count of each row's average error over a task split.

    The average of the split's task errors has variance sum_t a_t (1 - a_t) / n_t / T^2
    (binomial per task, n_t questions from tasks.csv `num_datapoints`); the effective
    count is the Q at which one binomial mean over Q questions has that variance.
    """
    tasks = io.as_table(tasks)
    names = [str(t) for t, f in zip(tasks["task"], io.column(tasks, split, "tasks"))
             if int(f) == 1]
    sizes = dict(zip((str(t) for t in tasks["task"]), io.column(tasks, "num_datapoints",
                                                                 "tasks")))
    acc = np.stack([io.column(rows, "acc_" + t) for t in names], axis=1)
    n = np.array([sizes[t] for t in names], float)
    var = np.sum(acc * (1 - acc) / n, axis=1) / len(names) ** 2
    err = 1 - acc.mean(axis=1)
    return err * (1 - err) / var


def gadre_intervals(table, tasks, dataset: str, level: float = 0.9,
                    num_resamples: int = 200, seed: int = 0,
                    loss_column: str = "loss_c4_val", err_column: str = "err_avg17"):
    """`gadre_default_fit` with predictive intervals on the chained loss and error.

    The loss law's run-to-run noise comes from its residuals (5 runs, 4 parameters: one
    degree of freedom, so the interval is wide); the error law's question noise from each
    task's question count (tasks.csv), plus any scatter beyond it that its residuals show.
    Returns:
      the `gadre_default_fit` dict plus "loss_pred_int" and "err_pred_int" (lists of
      `Prediction`, one per target).
    """
    out = gadre_default_fit(table, dataset, loss_column, err_column)
    table = io.as_table(table)
    rows = io.select(table, io.column(table, "dataset") == dataset)
    role = io.column(rows, "table1_role")
    fit_err = (role == "fit_loss_and_error") | (role == "fit_error_only")
    target = role == "target"
    q = gadre_effective_questions(rows, tasks)
    err_fit = fitters.fit_error_law(io.column(rows, loss_column)[fit_err],
                                    io.column(rows, err_column)[fit_err],
                                    num_questions=q[fit_err])
    from lmscale.fit import bootstrap  # local: bootstrap imports fitters
    out["loss_pred_int"], out["err_pred_int"] = bootstrap.predictive_chain(
        out["loss_fit"], err_fit, level, num_resamples, seed, num_questions=q[target],
        N=rows["N"][target], M=rows["M"][target])
    return out
