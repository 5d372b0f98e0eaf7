"""Study analysis: result rows of a ladder -> fits, held-out predictions and their errors.

Stage: report. Consumes the rows of an evaluation results file (`lmscale.eval.results`,
as dicts or `ResultRow`s) and the ladder's run records (`run.json` dicts); produces one
JSON-ready dict that the markdown report, the figures and `results.json` are all written
from. Only numpy and `lmscale.fit` are used, so a notebook can re-run the analysis on a
copied results file.

Protocol (Hu et al. section 5, Gadre et al. section 3): rungs are grouped by
non-embedding size N (seeds averaged); the `held_out` largest rungs are excluded from
every fit; each law is fitted on the remaining rungs' final checkpoints and evaluated at
the held-out N; the relative error |pred - measured| / measured is reported. Intermediate
checkpoints feed only the loss-vs-performance views (Du et al.), never a prediction.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lmscale import fit as F
from lmscale.train import record as record_lib
from lmscale.eval.results import (ACCURACY, ANSWER_LOSS, ANSWER_LOSS_SUM, BRIER_SCORE,
                                  CORRECT_CHOICE_PROB, INSTANCE, PASSUNTIL, VALIDATION_LOSS,
                                  VALIDATION_TASK)

MC_METRICS = (ACCURACY, CORRECT_CHOICE_PROB, BRIER_SCORE)


def _as_dict(row) -> dict:
    if isinstance(row, Mapping):
        return dict(row)
    return dataclasses.asdict(row)


@dataclasses.dataclass
class _Rung:
    """One (N, D) point of the ladder: its runs (seeds) and their final steps."""

    N: int
    N_total: int
    D: int
    runs: list[str]
    final_steps: dict[str, int]


def _rungs(runs: Mapping[str, Mapping[str, Any]]) -> list[_Rung]:
    """Runs grouped by (N, D), sorted by N then D: only seeds of one (N, D) are averaged."""
    by_point: dict[tuple[int, int], _Rung] = {}
    for name, info in runs.items():
        n, d = int(info["num_params_non_embedding"]), int(info["num_tokens"])
        rung = by_point.setdefault((n, d), _Rung(n, int(info["num_params"]), d, [], {}))
        rung.runs.append(name)
        rung.final_steps[name] = int(info["num_steps"])
    return [by_point[key] for key in sorted(by_point)]


def loss_unit(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """The runs' loss unit from their records ("nats/byte" under the byte vocabulary,
    "nats/token" otherwise; `lmscale.train.record.loss_unit`); raises ValueError when the
    runs disagree."""
    units = {info.get("loss_unit") or record_lib.loss_unit(info.get("vocab_spec") or "")
             for info in runs.values()}
    if len(units) > 1:
        raise ValueError(f"analyze: runs mix loss units {sorted(units)}")
    return units.pop() if units else "nats/token"


def _safe(fn, *args, **kwargs):
    """(result, None) or (None, message): a failed fit is reported, never fatal."""
    try:
        return fn(*args, **kwargs), None
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
        return None, f"{type(e).__name__}: {e}"


def _rel(pred: float, true: float) -> float | None:
    if pred is None or true is None or not np.isfinite(pred) or not true:
        return None
    return float(abs(pred - true) / abs(true))


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class _Index:
    """Rows indexed by (run, step, task, metric) and per-instance details."""

    def __init__(self, rows: Iterable):
        self.values: dict[tuple, float] = {}
        self.instances: dict[tuple, dict[str, dict]] = collections.defaultdict(dict)
        for row in map(_as_dict, rows):
            key = (row["run"], int(row["step"]), row["task"])
            if row["metric"] == INSTANCE:
                self.instances[key][str(row["instance"])] = dict(row.get("detail") or {},
                                                                 value=row["value"])
            else:
                self.values[key + (row["metric"],)] = float(row["value"])

    def value(self, run, step, task, metric):
        return self.values.get((run, step, task, metric))

    def steps(self, run: str) -> list[int]:
        return sorted({k[1] for k in self.values if k[0] == run})


def _mean(xs: Sequence[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def analyze(rows: Iterable, runs: Mapping[str, Mapping[str, Any]], *,
            mc_tasks: Sequence[str] = (), passuntil_tasks: Sequence[str] = (),
            random_baselines: Mapping[str, float] | None = None, held_out: int = 1,
            passuntil_r: int | None = None, loss_form: str = "kaplan",
            loss_method: str = "huber") -> dict[str, Any]:
    """Fits the ladder's laws on all but the largest rung(s) and scores the predictions.

    Args:
      rows: result rows (dicts or `ResultRow`s) of every evaluated checkpoint.
      runs: run name -> run.json dict (needs num_params, num_params_non_embedding,
        num_tokens, num_steps; optional wall_s, seed).
      mc_tasks: multiple-choice task names (likelihood-scored).
      passuntil_tasks: generative task names evaluated by PassUntil.
      random_baselines: task -> random-guess accuracy (MC) for normalised performance.
      held_out: number of largest rungs excluded from every fit and predicted.
      passuntil_r: the r used (reported).
      loss_form: the loss law fitted to the final validation losses ("kaplan": L(N) at the
        ladder's fixed M).
      loss_method: "huber" (log-space, log-sum-exp parameters: the irreducible loss stays
        positive, Hoffmann et al.) or "lm" (unconstrained least squares, which on a short
        ladder can put the irreducible loss below zero).

    Returns:
      A JSON-ready dict: "rungs", "checkpoints", "loss_law", "tasks", "predictions",
      "notes".

    Raises:
      ValueError: fewer than held_out + 3 rungs, or no validation loss for a final
        checkpoint.
    """
    random_baselines = dict(random_baselines or {})
    index = _Index(rows)
    rungs = _rungs(runs)
    unit = loss_unit(runs)
    if len(rungs) < held_out + 3:
        raise ValueError(f"analyze: {len(rungs)} rung(s) (distinct (N, D)) for held_out={held_out}; "
                         f"the loss law needs >= 3 fitted rungs")
    notes: list[str] = []

    # Per checkpoint: scaling coordinates and every aggregate metric (Du et al. views).
    checkpoints = []
    for rung in rungs:
        for run in rung.runs:
            info = runs[run]
            tokens_per_step = int(info.get("tokens_per_step") or 0)
            for step in index.steps(run):
                point = dict(run=run, step=step, N=rung.N, D=rung.D,
                             tokens=step * tokens_per_step,
                             flops=6.0 * rung.N * step * tokens_per_step,
                             final=step == rung.final_steps[run],
                             validation_loss=index.value(run, step, VALIDATION_TASK,
                                                         VALIDATION_LOSS))
                for task in mc_tasks:
                    for metric in MC_METRICS:
                        point[f"{task}/{metric}"] = index.value(run, step, task, metric)
                for task in passuntil_tasks:
                    point[f"{task}/passuntil"] = index.value(run, step, task, PASSUNTIL)
                    point[f"{task}/answer_loss"] = index.value(run, step, task, ANSWER_LOSS)
                checkpoints.append(point)

    def final_mean(rung: _Rung, task: str, metric: str) -> float | None:
        return _mean([index.value(r, rung.final_steps[r], task, metric) for r in rung.runs])

    rung_rows = []
    for rung in rungs:
        losses = [index.value(r, rung.final_steps[r], VALIDATION_TASK, VALIDATION_LOSS)
                  for r in rung.runs]
        if any(v is None for v in losses):
            missing = [r for r, v in zip(rung.runs, losses) if v is None]
            raise ValueError(f"analyze: no validation loss for the final checkpoint of {missing}")
        rung_rows.append(dict(
            N=rung.N, N_total=rung.N_total, D=rung.D, C=6.0 * rung.N * rung.D,
            runs=rung.runs, num_seeds=len(rung.runs),
            validation_loss=float(np.mean(losses)),
            validation_loss_std=float(np.std(losses)) if len(losses) > 1 else None,
            wall_s=_mean([_num(runs[r].get("wall_s")) for r in rung.runs]),
            held_out=False))
    for row in rung_rows[-held_out:]:
        row["held_out"] = True
    fit_rungs, target_rungs = rungs[:-held_out], rungs[-held_out:]
    N_fit = np.array([r.N for r in fit_rungs], float)
    D_fit = np.array([r.D for r in fit_rungs], float)
    L_fit = np.array([row["validation_loss"] for row in rung_rows[:-held_out]])
    predictions = []

    # Loss law on the fitted rungs' final losses.
    loss_fit, err = _safe(F.fit_loss_law, N_fit, D_fit, L_fit, form=loss_form,
                          method=loss_method)
    loss_law: dict[str, Any] = dict(form=loss_form, error=err)
    predicted_loss = {}
    if loss_fit is not None:
        loss_law.update(params=loss_fit.params, method=loss_fit.method,
                        reliable=loss_fit.reliable, reason=loss_fit.reason,
                        num_points=loss_fit.num_points)
        for rung, row in zip(target_rungs, rung_rows[-held_out:]):
            pred = float(np.asarray(loss_fit.predict(N=np.array([rung.N], float),
                                                     D=np.array([rung.D], float)))[0])
            predicted_loss[rung.N] = pred
            predictions.append(dict(quantity=f"validation loss ({unit})", task=VALIDATION_TASK,
                                    method=f"{loss_form} law L(N)", N=rung.N, predicted=pred,
                                    measured=row["validation_loss"],
                                    rel_error=_rel(pred, row["validation_loss"])))
        boot, berr = _safe(loss_fit.bootstrap, num_resamples=200, seed=0)
        if boot is not None and predicted_loss and len(boot.fits) >= 20:
            n_t = np.array([r.N for r in target_rungs], float)
            d_t = np.array([r.D for r in target_rungs], float)
            band, berr = _safe(boot.predict_interval, 0.95, N=n_t, D=d_t)
            if band is not None:
                loss_law["prediction_interval"] = [[float(a), float(b)]
                                                   for a, b in zip(*band)]
                loss_law["bootstrap_failed"] = int(boot.num_failed)
        if berr:
            notes.append(f"loss-law bootstrap failed: {berr}")
    else:
        notes.append(f"loss law ({loss_form}) could not be fitted: {err}")

    tasks: dict[str, Any] = {}
    for task in mc_tasks:
        tasks[task] = _mc_task(task, rungs, fit_rungs, target_rungs, rung_rows, checkpoints,
                               final_mean, random_baselines.get(task), loss_fit, L_fit,
                               predicted_loss, predictions)
    for task in passuntil_tasks:
        tasks[task] = _passuntil_task(task, index, rungs, fit_rungs, target_rungs, checkpoints,
                                      predictions, passuntil_r)
    return dict(rungs=rung_rows, checkpoints=checkpoints, loss_law=loss_law, tasks=tasks,
                predictions=predictions, held_out=held_out, notes=notes)


def _mc_task(task, rungs, fit_rungs, target_rungs, rung_rows, checkpoints, final_mean,
             baseline, loss_fit, L_fit, predicted_loss, predictions) -> dict[str, Any]:
    """Du et al.'s loss view and Gadre et al.'s chained error prediction for one MC task."""
    out: dict[str, Any] = dict(kind="multiple_choice", random_baseline=baseline)
    out["per_rung"] = [dict(N=r.N, **{m: final_mean(r, task, m) for m in MC_METRICS})
                       for r in rungs]
    pts = [c for c in checkpoints if c["validation_loss"] is not None
           and c.get(f"{task}/accuracy") is not None]
    if len(pts) >= 4:
        loss = np.array([c["validation_loss"] for c in pts])
        acc = np.array([c[f"{task}/accuracy"] for c in pts])
        out["correlations"] = {
            metric: {k: [float(v[0]), float(v[1])] for k, v in F.correlations(
                loss, np.array([c[f"{task}/{metric}"] for c in pts])).items()}
            for metric in MC_METRICS}
        if baseline is not None:
            norm = F.normalize_performance(acc, baseline)
            thr, err = _safe(F.fit_loss_threshold, loss, norm)
            out["threshold"] = (dict(params=thr.params, reliable=thr.reliable,
                                     reason=thr.reason) if thr is not None else dict(error=err))
    # Gadre et al.: Err(L) on the fitted rungs' final checkpoints, fed the predicted loss.
    err_fit_rungs = [final_mean(r, task, ACCURACY) for r in fit_rungs]
    if all(v is not None for v in err_fit_rungs) and predicted_loss:
        err_fit, e = _safe(F.fit_error_law, L_fit, 1.0 - np.array(err_fit_rungs))
        if err_fit is None:
            out["error_law"] = dict(error=e)
        else:
            out["error_law"] = dict(params=err_fit.params, reliable=err_fit.reliable,
                                    reason=err_fit.reason)
            for rung in target_rungs:
                measured = final_mean(rung, task, ACCURACY)
                pred = 1.0 - float(np.asarray(err_fit.predict(
                    loss=np.array([predicted_loss[rung.N]])))[0])
                predictions.append(dict(
                    quantity="accuracy", task=task, method="Err(L) chained on predicted L",
                    N=rung.N, predicted=pred, measured=measured, rel_error=_rel(pred, measured)))
    return out


def _instance_matrix(index: _Index, rungs, task: str, key: str) -> tuple[list[str], np.ndarray]:
    """[rungs, instances] of a per-instance detail field at final steps (seed mean)."""
    ids: list[str] = []
    for rung in rungs:
        for run in rung.runs:
            for i in index.instances.get((run, rung.final_steps[run], task), {}):
                if i not in ids:
                    ids.append(i)
    mat = np.full((len(rungs), len(ids)), np.nan)
    for a, rung in enumerate(rungs):
        for b, i in enumerate(ids):
            vals = [index.instances.get((run, rung.final_steps[run], task), {}).get(i, {}).get(key)
                    for run in rung.runs]
            vals = [float(v) for v in vals if v is not None]
            if vals:
                mat[a, b] = np.mean(vals)
    return ids, mat


def _passuntil_task(task, index, rungs, fit_rungs, target_rungs, checkpoints, predictions,
                    r) -> dict[str, Any]:
    """Hu et al.'s dataset- and instance-level PU fits, growth class, held-out prediction."""
    out: dict[str, Any] = dict(kind="passuntil", r=r)
    ids, pu = _instance_matrix(index, rungs, task, "estimate")
    _, loss = _instance_matrix(index, rungs, task, ANSWER_LOSS_SUM)
    _, capped = _instance_matrix(index, rungs, task, "capped")
    if not ids:
        out["error"] = "no per-instance PassUntil rows"
        return out
    complete = ~np.isnan(pu).any(axis=0)
    if not complete.all():
        out["note"] = f"{int((~complete).sum())} instance(s) missing on some rung were dropped"
        pu, loss, capped = pu[:, complete], loss[:, complete], capped[:, complete]
        ids = [i for i, c in zip(ids, complete) if c]
    N_all = np.array([r_.N for r_ in rungs], float)
    k = len(fit_rungs)
    dataset = pu.mean(axis=1)
    out["num_instances"] = len(ids)
    out["per_rung"] = [dict(N=int(n), pu=float(p), capped_fraction=float(c))
                       for n, p, c in zip(N_all, dataset, np.nanmean(capped, axis=1))]
    # Growth class on the rungs where log(-log PU) exists (0 < PU < 1), all rungs included:
    # it describes the measured curve, it predicts nothing.
    usable = (dataset > 0) & (dataset < 1)
    growth, gerr = _safe(F.classify_growth, N_all[usable], dataset[usable])
    on = ("all rungs" if usable.all() else
          f"the {int(usable.sum())} rungs with 0 < PU < 1 (N = "
          f"{', '.join(f'{int(n):,}' for n in N_all[usable])})")
    out["growth"] = (dict(cls=growth.cls, description=growth.description,
                          p_value=growth.p_value, curvature=growth.curvature,
                          on=on) if growth is not None else dict(error=gerr))
    ds_fit, derr = _safe(F.fit_pu_dataset, N_all[:k], dataset[:k])
    inst_fit, ierr = _safe(F.fit_pu_instances, N_all[:k], pu[:k],
                           answer_loss=None if np.isnan(loss[:k]).any() else loss[:k])
    out["dataset_fit"] = (dict(params=ds_fit.params, reliable=ds_fit.reliable,
                               reason=ds_fit.reason) if ds_fit is not None else dict(error=derr))
    if inst_fit is not None:
        statuses = collections.Counter(inst_fit.status.tolist())
        out["instance_fit"] = dict(reliable=inst_fit.reliable, reason=inst_fit.reason,
                                   status_counts=dict(statuses))
    else:
        out["instance_fit"] = dict(error=ierr)
    for j, rung in enumerate(target_rungs):
        measured = float(dataset[k + j])
        for label, fitted in (("dataset-level", ds_fit), ("instance-level", inst_fit)):
            if fitted is None:
                continue
            if label == "dataset-level":
                pred = float(np.asarray(fitted.predict(N=np.array([rung.N], float)))[0])
            else:
                pred = float(np.asarray(fitted.predict(np.array([rung.N], float)))[0])
            predictions.append(dict(quantity="PassUntil PU", task=task, method=label,
                                    N=rung.N, predicted=pred, measured=measured,
                                    rel_error=_rel(pred, measured)))
    out["_fits"] = dict(dataset=ds_fit, instance=inst_fit)
    return out


def strip_private(analysis: Mapping[str, Any]) -> dict[str, Any]:
    """The analysis without non-JSON objects (fit handles kept for plotting)."""
    out = dict(analysis)
    out["tasks"] = {t: {k: v for k, v in d.items() if not k.startswith("_")}
                    for t, d in analysis.get("tasks", {}).items()}
    return out
