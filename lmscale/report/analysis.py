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
from lmscale.fit.bootstrap import summarize_failures
from lmscale.fit.select import DROP_SMALLEST
from lmscale.report import hu, predict_mc
from lmscale.train import record as record_lib
from lmscale.train.record import RunRecord
from lmscale.eval.results import (ACCURACY, ANSWER_LOSS, ANSWER_LOSS_SUM, BRIER_SCORE,
                                  CORRECT_CHOICE_PROB, INSTANCE, NUM_INSTANCES, PASSUNTIL,
                                  VALIDATION_LOSS,
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
    name: str = ""


def _rungs(runs: Mapping[str, RunRecord]) -> list[_Rung]:
    """Runs grouped by (N, D), sorted by N then D: only seeds of one (N, D) are averaged."""
    by_point: dict[tuple[int, int], _Rung] = {}
    for name, info in runs.items():
        n, d = int(info.num_params_non_embedding), int(info.num_tokens)
        rung = by_point.setdefault((n, d), _Rung(n, int(info.num_params), d, [], {}))
        rung.runs.append(name)
        rung.final_steps[name] = int(info.num_steps)
    return [by_point[key] for key in sorted(by_point)]


def loss_unit(runs: Mapping[str, RunRecord]) -> str:
    """The runs' loss unit from their records ("nats/byte" under the byte vocabulary,
    "nats/token" otherwise; `lmscale.train.record.loss_unit`); raises ValueError when the
    runs disagree."""
    units = {info.loss_unit or record_lib.loss_unit(info.vocab_spec) for info in runs.values()}
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


@dataclasses.dataclass(frozen=True)
class Settings:
    """How predictions are made: interval level and bootstrap size/seed."""

    level: float = 0.9
    num_resamples: int = 200
    seed: int = 0
    k_max: int | None = None  # the PassUntil cap of final checkpoints (predictive PU bands)
    pass_at_k: tuple[int, ...] = hu.DEFAULT_KS  # k's of measured and predicted pass@k
    two_circuit: bool = True  # Hu et al.'s two-circuit fit beside the PU fits (report/hu.py)
    # how many of the smallest fitted sizes each loss law is tried without
    # (`lmscale.fit.select.choose_loss_law`'s drop_smallest)
    loss_drop_smallest: tuple[int, ...] = DROP_SMALLEST


def _row(pred: F.Prediction, label: str, task: str, rung: "_Rung",
         measured: float | None) -> dict[str, Any]:
    """One JSON-ready prediction row: point, interval, level, reasons, the measurement,
    its relative error and whether the interval covered it."""
    measured = _num(measured)
    if not pred.low <= pred.point <= pred.high:  # a skewed band: the row must hold its point
        pred = dataclasses.replace(pred, low=min(pred.low, pred.point), high=max(
            pred.high, pred.point), reasons=pred.reasons + (
            f"the interval [{pred.low:.4g}, {pred.high:.4g}] left the point out; widened to "
            "hold it",))
    if pred.low == pred.high and not math.isinf(pred.low):
        pred = dataclasses.replace(pred, reasons=pred.reasons + (
            "the interval has zero width: the fit leaves no residual to estimate noise from",))
    return dict(pred.to_json(), quantity=label, task=task, N=rung.N, D=rung.D,
                target=rung.name or None,
                measured=measured, rel_error=_rel(pred.point, measured),
                covered=None if measured is None else bool(pred.covers(measured)))


@dataclasses.dataclass
class _Ctx:
    """What every fit-and-predict pass reads: the measurements and the settings."""

    index: _Index
    rungs: list[_Rung]
    checkpoints: list[dict]
    unit: str
    settings: Settings
    mc_tasks: Sequence[str]
    passuntil_tasks: Sequence[str]
    baselines: Mapping[str, float]
    r: int | None
    notes: list[str]


def _targets(targets) -> list[_Rung]:
    """Never-trained targets as rungs without runs: (name, N, D) triples or dicts."""
    out = []
    for t in targets or ():
        name, n, d = (t["name"], t["N"], t["D"]) if isinstance(t, Mapping) else t
        out.append(_Rung(int(n), int(n), int(d), [], {}, name=str(name)))
    return out


def analyze(rows: Iterable, runs: Mapping[str, RunRecord], *,
            mc_tasks: Sequence[str] = (), passuntil_tasks: Sequence[str] = (),
            random_baselines: Mapping[str, float] | None = None, held_out: int = 1,
            passuntil_r: int | None = None, targets: Sequence = (), level: float = 0.9,
            num_resamples: int = 200, seed: int = 0,
            passuntil_k_max: int | None = None, pass_at_k: Sequence[int] = hu.DEFAULT_KS,
            two_circuit: bool = True,
            loss_drop_smallest: Sequence[int] = DROP_SMALLEST) -> dict[str, Any]:
    """Fits the ladder's laws on all but the largest rung(s); predicts the targets and
    the held-out rung(s); backtests every rung from the fourth up from the rungs below.

    Args:
      rows: result rows (dicts or `ResultRow`s) of every evaluated checkpoint.
      runs: run name -> `RunRecord` (`RunRecord.load` of each run directory).
      mc_tasks: multiple-choice task names (likelihood-scored).
      passuntil_tasks: generative task names evaluated by PassUntil.
      random_baselines: task -> random-guess accuracy (MC) for normalised performance.
      held_out: number of largest rungs excluded from every fit and predicted.
      passuntil_r: the r used (reported; with passuntil_k_max it gives PU predictive bands).
      passuntil_k_max: the PassUntil cap of the final checkpoints.
      targets: never-trained models to predict: (name, N, D) triples or dicts with
        name, N, D (non-embedding N, training tokens D).
      level: nominal coverage of every prediction interval.
      num_resamples, seed: bootstrap size and seed of the intervals.
      pass_at_k, two_circuit: pass@k's k's and the two-circuit fit (`lmscale.report.hu`).
      loss_drop_smallest: numbers of the smallest fitted sizes the loss-law choice tries
        each law without (`lmscale.fit.select.choose_loss_law`'s drop_smallest); (1,)
        never fits the loss law on the smallest rung.

    Returns:
      A JSON-ready dict: "rungs", "checkpoints", "loss_law", "tasks", "targets" (their
      prediction rows), "predictions" (the held-out rungs'), "backtests" (rows and a
      summary), "level", "notes". Each prediction row has "predicted", "interval",
      "level", "reasons", "measured", "rel_error", "covered".

    Raises:
      ValueError: fewer than held_out + 3 rungs, or no validation loss for a final
        checkpoint.
    """
    index = _Index(rows)
    rungs = _rungs(runs)
    if len(rungs) < held_out + 3:
        raise ValueError(f"analyze: {len(rungs)} rung(s) (distinct (N, D)) for held_out={held_out}; "
                         f"the loss law needs >= 3 fitted rungs")
    ctx = _Ctx(index, rungs, _checkpoints(rungs, runs, index, mc_tasks, passuntil_tasks),
               loss_unit(runs), Settings(level, num_resamples, seed, passuntil_k_max,
                                         tuple(pass_at_k), two_circuit,
                                         tuple(loss_drop_smallest)), mc_tasks,
               passuntil_tasks, dict(random_baselines or {}), passuntil_r, [])
    rung_rows = _rung_rows(rungs, runs, index)
    for row in rung_rows[-held_out:]:
        row["held_out"] = True
    k = len(rungs) - held_out
    target_rungs = _targets(targets)
    loss_law, tasks, rows_ = _fit_and_predict(ctx, k, rungs[k:] + target_rungs, views=True)
    backtests = []
    for i in range(3, k):
        rows_i = _fit_and_predict(ctx, i, [rungs[i]])[2]
        backtest_allowance(rows_i, backtests, rungs, i)
        backtests += rows_i
    backtest_allowance(rows_, backtests, rungs, k)
    predictions = [p for p in rows_ if p["measured"] is not None]
    backtests += predictions
    return dict(rungs=rung_rows, checkpoints=ctx.checkpoints, loss_law=loss_law, tasks=tasks,
                targets=[p for p in rows_ if p["measured"] is None], predictions=predictions,
                backtests=dict(rows=backtests, summary=backtest_summary(backtests, level)),
                held_out=held_out, level=level, loss_unit=ctx.unit, notes=ctx.notes)


def _fit_and_predict(ctx: _Ctx, k: int, targets: list[_Rung], views: bool = False):
    """Fits every law on rungs[:k] and predicts `targets`: (loss_law, tasks, rows)."""
    notes = ctx.notes if views else []
    loss_law, loss_fit, rows = _loss_law(ctx.index, ctx.rungs[:k], targets, ctx.unit,
                                         ctx.settings, notes)
    tasks: dict[str, Any] = {}
    for task in ctx.mc_tasks:
        tasks[task] = _mc_task(task, ctx, k, targets, loss_fit, rows, views)
    for task in ctx.passuntil_tasks:
        tasks[task] = _passuntil_task(task, ctx, k, targets, rows, views)
    for row in rows:
        row["fitted_on"] = k
    return loss_law, tasks, rows


# Quantities whose predictions cannot exceed 1 (the allowance below stays inside).
_AT_MOST_ONE = ("accuracy", "PassUntil PU", "pass@k")


def backtest_allowance(rows: list[dict[str, Any]], backtests: Sequence[Mapping[str, Any]],
                       rungs: Sequence["_Rung"], k: int) -> None:
    """Extends each prediction's interval (made from rungs[:k]) by the error its method
    made one rung back, in place.

    The bootstrap intervals carry noise, not a law's misfit: on the default study's CPU
    ladder the instance-level PU and pass@k came out 9-26% low at both the held-out rung
    and the backtest one rung below it, on every seed, with intervals that missed. The
    backtest that predicted rungs[k - 1] from rungs[:k - 1] measures that misfit on data
    the prediction was fitted on (never on the rung predicted): with e = log(measured /
    predicted) there and s = log(N / N_{k-1}) / log(N_{k-1} / N_{k-2}) the distance of
    this target in backtest steps, the bound on the side of e moves by the factor
    exp(|e| s) (the point stays: the interval is the union of the bootstrap's and its
    copy shifted by the backtest's bias; a caveat names it beyond 5%). A row matches the backtest rows of its quantity,
    task and method, or the one row of its quantity and task (the loss law and the
    accuracy chain are chosen afresh on each set of rungs). Rows without a match, or when
    k < 4, are left as they are."""
    if k < 4:
        return
    last = [b for b in backtests if b.get("fitted_on") == k - 1 and b.get("measured")
            and b.get("predicted") and b["measured"] > 0 and b["predicted"] > 0]
    step = math.log(rungs[k - 1].N / rungs[k - 2].N)
    if not last or step <= 0:
        return
    for row in rows:
        same = [b for b in last if (b["quantity"], b["task"]) == (row["quantity"], row["task"])]
        exact = [b for b in same if b["method"] == row["method"]]
        match = exact[0] if exact else same[0] if len(same) == 1 else None
        if match is None or not row["N"] > 0:
            continue
        e = math.log(match["measured"] / match["predicted"])
        scale = max(0.0, math.log(row["N"] / rungs[k - 1].N) / step)
        factor = math.exp(abs(e) * scale)
        low, high = row["interval"]
        if e > 0:
            high = high * factor
            if row["quantity"] in _AT_MOST_ONE:
                high = min(high, 1.0)
        else:
            low = low / factor
        row["backtest_allowance"] = dict(log_error=e, scale=scale, from_N=match["N"],
                                         interval=list(row["interval"]))
        if abs(e) > math.log(1.05) and [low, high] != list(row["interval"]):
            row["reasons"] = list(row["reasons"]) + [
                f"interval {'raised' if e > 0 else 'lowered'} from [{row['interval'][0]:.4g}, "
                f"{row['interval'][1]:.4g}] by this method's backtest one rung back "
                f"({100 * (math.exp(e) - 1):+.1f}% at N={int(match['N']):,}, x{scale:.2f} "
                f"to this distance)"]
        row["interval"] = [low, high]
        if row.get("measured") is not None:
            row["covered"] = bool(low <= row["measured"] <= high)


def backtest_summary(rows: Sequence[Mapping[str, Any]], level: float) -> dict[str, Any]:
    """Coverage and median |relative error| of backtest rows, in all and per quantity."""
    def summary(sub):
        scored = [p for p in sub if p.get("covered") is not None]
        errs = [p["rel_error"] for p in sub if p.get("rel_error") is not None]
        return dict(covered=sum(p["covered"] for p in scored), n=len(scored),
                    median_rel_error=float(np.median(errs)) if errs else None)
    out = summary(rows)
    out["level"] = level
    out["per_quantity"] = {q: summary([p for p in rows if p["quantity"] == q])
                           for q in dict.fromkeys(p["quantity"] for p in rows)}
    return out


def _checkpoints(rungs, runs, index, mc_tasks, passuntil_tasks) -> list[dict[str, Any]]:
    """Per checkpoint: scaling coordinates and every aggregate metric (Du et al. views)."""
    checkpoints = []
    for rung in rungs:
        for run in rung.runs:
            tokens_per_step = int(runs[run].tokens_per_step or 0)
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
    return checkpoints


def _final_values(index, rung: _Rung, task: str, metric: str) -> list[float | None]:
    return [index.value(r, rung.final_steps[r], task, metric) for r in rung.runs]


def _final_mean(index, rung: _Rung, task: str, metric: str) -> float | None:
    return _mean(_final_values(index, rung, task, metric))


def _rung_rows(rungs, runs, index) -> list[dict[str, Any]]:
    out = []
    for rung in rungs:
        losses = _final_values(index, rung, VALIDATION_TASK, VALIDATION_LOSS)
        if any(v is None for v in losses):
            missing = [r for r, v in zip(rung.runs, losses) if v is None]
            raise ValueError(f"analyze: no validation loss for the final checkpoint of {missing}")
        out.append(dict(
            N=rung.N, N_total=rung.N_total, D=rung.D, C=6.0 * rung.N * rung.D,
            runs=rung.runs, num_seeds=len(rung.runs),
            validation_loss=float(np.mean(losses)),
            validation_loss_std=float(np.std(losses)) if len(losses) > 1 else None,
            wall_s=_mean([_num(runs[r].wall_s) for r in rung.runs]),
            held_out=False))
    return out


def _fit_loss(N, D, L, notes, drop_smallest=DROP_SMALLEST):
    """The loss law chosen by backtest (`choose_loss_law`) when the rungs allow one
    (>= 4 sizes); otherwise Kaplan L(N). Returns (fit, law dict)."""
    sizes = np.unique(N).size
    why = f"{sizes} fitted sizes: too few to choose the loss law by backtest"
    if sizes >= 4:
        try:
            choice = F.choose_loss_law(N, D, L, num_held_out=min(2, sizes - 3),
                                       drop_smallest=drop_smallest)
        except ValueError as e:  # every candidate failed its backtest
            why = f"no candidate law survived the backtest ({e})"
        else:
            backtest = {k: _num(v) for k, v in choice.backtest_error.items()}
            return choice.fit, dict(form=choice.name, backtest_error=backtest,
                                    failures={k: v for k, v in choice.failures.items() if v},
                                    dropped_N=[int(n) for n in choice.dropped])
    notes.append(f"{why}; Kaplan L(N) used (Huber fit: L_inf kept positive)")
    return (F.fit_loss_law(N, None, L, form="kaplan", method="huber"),
            dict(form="kaplan", backtest_error={}))


def _loss_law(index, fit_rungs, target_rungs, unit, settings, notes):
    """(loss_law dict, loss fit or None, loss prediction rows) on the fitted rungs' runs."""
    N, D, L = (np.array(v, float) for v in zip(*[
        (r.N, r.D, v) for r in fit_rungs
        for v in _final_values(index, r, VALIDATION_TASK, VALIDATION_LOSS)]))
    chosen, err = _safe(_fit_loss, N, D, L, notes, settings.loss_drop_smallest)
    if chosen is None:
        notes.append(f"loss law could not be fitted: {err}")
        return dict(form=None, error=err), None, []
    loss_fit, law = chosen
    # law: the curve the parameters belong to (a "kaplan_floor" form fits Kaplan's L(N))
    law.update(law=loss_fit.law, params=loss_fit.params, method=loss_fit.method,
               reliable=loss_fit.reliable,
               reason=loss_fit.reason, num_points=loss_fit.num_points)
    preds, perr = _safe(F.predictive, loss_fit, settings.level, settings.num_resamples,
                        settings.seed, N=np.array([r.N for r in target_rungs], float),
                        D=np.array([r.D for r in target_rungs], float))
    if preds is None:
        notes.append(f"loss prediction failed: {perr}")
        return law, loss_fit, []
    rows = [_row(p, f"validation loss ({unit})", VALIDATION_TASK, r,
                 _final_mean(index, r, VALIDATION_TASK, VALIDATION_LOSS))
            for p, r in zip(preds, target_rungs)]
    for row in rows:
        row["method"] = f"{law['form']} law"
    return law, loss_fit, rows


def _accuracy(err: F.Prediction) -> F.Prediction:
    """The accuracy prediction 1 - Err from an error prediction (interval mirrored)."""
    return F.Prediction("accuracy", 1.0 - err.point, 1.0 - err.high, 1.0 - err.low,
                        err.level, err.method, err.reasons, (0.0, 1.0), details=err.details)


def _mc_views(task, checkpoints, baseline, settings) -> dict[str, Any]:
    """Du et al.'s loss-vs-performance view of one MC task over every checkpoint."""
    out: dict[str, Any] = {}
    pts = [c for c in checkpoints if c["validation_loss"] is not None
           and c.get(f"{task}/accuracy") is not None]
    if len(pts) < 4:
        return out
    loss = np.array([c["validation_loss"] for c in pts])
    acc = np.array([c[f"{task}/accuracy"] for c in pts])
    out["correlations"] = {
        metric: {k: [float(v[0]), float(v[1])] for k, v in F.correlations(
            loss, np.array([c[f"{task}/{metric}"] for c in pts])).items()}
        for metric in MC_METRICS}
    if baseline is not None:
        out["threshold"] = predict_mc.loss_threshold(
            loss, F.normalize_performance(acc, baseline), settings)
    return out


def _mc_task(task, ctx: _Ctx, k, targets, loss_fit, predictions, views) -> dict[str, Any]:
    """Du et al.'s loss view and Gadre et al.'s chained error prediction for one MC task."""
    index, baseline = ctx.index, ctx.baselines.get(task)
    out: dict[str, Any] = dict(kind="multiple_choice", random_baseline=baseline)
    if views:
        out["per_rung"] = [dict(N=r.N, **{m: _final_mean(index, r, task, m)
                                          for m in MC_METRICS}) for r in ctx.rungs]
        out.update(_mc_views(task, ctx.checkpoints, baseline, ctx.settings))
    fit_rungs = ctx.rungs[:k]
    acc = [_final_mean(index, r, task, ACCURACY) for r in fit_rungs]
    if loss_fit is None or any(v is None for v in acc):
        return out
    loss = [_final_mean(index, r, VALIDATION_TASK, VALIDATION_LOSS) for r in fit_rungs]
    q = [_final_mean(index, r, task, NUM_INSTANCES) for r in fit_rungs]
    q_fit = None if any(v is None for v in q) else np.array(q)
    err_fit, e = _safe(F.fit_error_law, loss, 1.0 - np.array(acc), num_questions=q_fit)
    if err_fit is None:
        out["error_law"] = dict(error=e)
        return out
    out["error_law"] = dict(params=err_fit.params, reliable=err_fit.reliable,
                            reason=err_fit.reason)
    # A target is measured on the task's own question set: the fitted rungs' count.
    q_t = None if q_fit is None else np.full(len(targets), float(np.median(q_fit)))
    chain, e = _safe(F.predictive_chain, loss_fit, err_fit, ctx.settings.level,
                     ctx.settings.num_resamples, ctx.settings.seed, num_questions=q_t,
                     N=np.array([r.N for r in targets], float),
                     D=np.array([r.D for r in targets], float))
    if chain is None:
        out["error_law"]["prediction_error"] = e
    points = predict_mc.task_points(ctx.checkpoints, index, task, {r.N for r in fit_rungs})
    out["accuracy_method"], preds = predict_mc.choose_accuracy(
        points, [(r.N, r.D) for r in targets],
        None if chain is None else [_accuracy(p) for p in chain[1]], ctx.settings,
        num_questions=None if q_t is None else float(q_t[0]) if len(q_t) else None)
    for pred, rung in zip(preds or [], targets):
        predictions.append(_row(pred, "accuracy", task, rung,
                                _final_mean(index, rung, task, ACCURACY)))
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


def pu_predictions(ds_fit, inst_fit, N, settings: Settings) -> dict[str, list]:
    """Dataset- and instance-level PU `Prediction`s at sizes N, with predictive intervals.

    The one place the report turns PU fits into `Prediction`s: each fit's
    `prediction(N, level)` (lmscale.fit.passuntil: a parametric bootstrap of the
    prediction error that refits the chain and simulates the target's own PassUntil
    measurement with the study's r and cap). Where that is impossible (no r or cap known,
    no per-instance data) the legacy parameter-only band is used and the reasons say so.
    Returns {"dataset-level": [...], "instance-level": [...]} for the fits given.
    """
    N = np.atleast_1d(np.asarray(N, float))
    out: dict[str, list] = {}
    for label, fit in (("dataset-level", ds_fit), ("instance-level", inst_fit)):
        if fit is None:
            continue
        preds = []
        for n in N:
            pred, err = _safe(fit.prediction, float(n), settings.level,
                              num_resamples=settings.num_resamples, seed=settings.seed)
            preds.append(pred if pred is not None else _legacy_pu_prediction(
                label, fit, float(n), settings, err))
        out[label] = [dataclasses.replace(p, method=label) for p in preds]
    return out


def _legacy_pu_prediction(label, fit, n, settings: Settings, why) -> F.Prediction:
    """The parameter-only band (models resampled), for fits without the counts that the
    predictive interval needs."""
    N = np.array([n])
    point = float(np.asarray(fit.predict(N=N) if label == "dataset-level"
                             else fit.predict(N), float).reshape(-1)[0])
    reasons = ([fit.reason] if fit.reason else []) + [
        f"interval: parameter uncertainty only (predictive interval unavailable: {why})"]
    if label == "dataset-level":
        boot, e = _safe(F.bootstrap_fit, fit, settings.num_resamples, settings.seed)
        if boot is None:
            return F.Prediction("pu", point, 0.0, 1.0, settings.level, label,
                                reasons + [f"bootstrap failed ({e}): the interval is [0, 1]"],
                                (0.0, 1.0))
        lo, hi = F.percentile_interval(boot.predict(N=N), settings.level, axis=0)
        if boot.failures:
            reasons.append(summarize_failures(boot.failures, settings.num_resamples))
    else:
        _, lo, hi = fit.bootstrap(N, settings.num_resamples, settings.seed,
                                  confidence=settings.level)
    return F.Prediction("pu", point, float(np.atleast_1d(lo)[0]), float(np.atleast_1d(hi)[0]),
                        settings.level, label, reasons, (0.0, 1.0))


def _pu_data(index, rungs, task):
    """(ids, pu, answer loss, capped) [rungs, instances], complete instances only."""
    ids, pu = _instance_matrix(index, rungs, task, "estimate")
    _, loss = _instance_matrix(index, rungs, task, ANSWER_LOSS_SUM)
    _, capped = _instance_matrix(index, rungs, task, "capped")
    complete = ~np.isnan(pu).any(axis=0) if ids else np.zeros(0, bool)
    ids = [i for i, c in zip(ids, complete) if c]
    return ids, pu[:, complete], loss[:, complete], capped[:, complete], int((~complete).sum())


def _growth(N_all, dataset) -> dict[str, Any]:
    """Growth class on the rungs where log(-log PU) exists (0 < PU < 1), all rungs
    included: it describes the measured curve, it predicts nothing."""
    usable = (dataset > 0) & (dataset < 1)
    growth, gerr = _safe(F.classify_growth, N_all[usable], dataset[usable])
    on = ("all rungs" if usable.all() else
          f"the {int(usable.sum())} rungs with 0 < PU < 1 (N = "
          f"{', '.join(f'{int(n):,}' for n in N_all[usable])})")
    return (dict(cls=growth.cls, description=growth.description, p_value=growth.p_value,
                 curvature=growth.curvature, on=on) if growth is not None else dict(error=gerr))


def _measured_pu_intervals(index, rungs, task, level) -> list[list[float] | None]:
    """Per rung: the mean over instances of each instance's exact interval at `level`
    (`lmscale.fit.passuntil.interval`; a bound on the dataset PU that holds whenever every
    instance's does), or None when a rung lacks the counts."""
    out = []
    for rung in rungs:
        bounds = []
        for run in rung.runs:
            for d in index.instances.get((run, rung.final_steps[run], task), {}).values():
                iv, _ = _safe(F.interval, int(d.get("num_samples") or 0),
                              int(d.get("num_passes") or 0), bool(d.get("capped")), level)
                bounds.append(iv)
        ok = bounds and all(b is not None for b in bounds)
        out.append([float(np.mean([b[0] for b in bounds])),
                    float(np.mean([b[1] for b in bounds]))] if ok else None)
    return out


def _pu_band(ds_fit, inst_fit, N_all, settings) -> dict[str, Any]:
    """Predicted PU and its interval along a log grid of N (the PU figure's band)."""
    grid = np.geomspace(N_all.min(), N_all.max() * 2.0, 24)
    preds = pu_predictions(ds_fit, inst_fit, grid, settings)
    return dict(N=grid.tolist(), **{label: dict(point=[p.point for p in ps],
                                                low=[p.low for p in ps],
                                                high=[p.high for p in ps])
                                    for label, ps in preds.items()})


def _passuntil_task(task, ctx: _Ctx, k, targets, predictions, views) -> dict[str, Any]:
    """Hu et al.'s dataset- and instance-level PU fits on rungs[:k], growth class (of
    every rung), predictions of the targets."""
    out: dict[str, Any] = dict(kind="passuntil", r=ctx.r)
    ids, pu, loss, capped, dropped = _pu_data(ctx.index, ctx.rungs, task)
    if not ids:
        out["error"] = "no per-instance PassUntil rows"
        return out
    if dropped:
        out["note"] = f"{dropped} instance(s) missing on some rung were dropped"
    N_all = np.array([r_.N for r_ in ctx.rungs], float)
    dataset = pu.mean(axis=1)
    out["num_instances"] = len(ids)
    out["per_rung"] = [dict(N=int(n), pu=float(p), capped_fraction=float(c))
                       for n, p, c in zip(N_all, dataset, np.nanmean(capped, axis=1))]
    out["growth"] = _growth(N_all, dataset)
    for row, iv in zip(out["per_rung"], _measured_pu_intervals(ctx.index, ctx.rungs, task,
                                                               ctx.settings.level)):
        row["interval"] = iv
    assist = None if np.isnan(loss[:k]).any() else loss[:k]
    ds_fit, derr = _safe(F.fit_pu_dataset, N_all[:k], pu[:k], r=ctx.r,
                         k_max=ctx.settings.k_max, answer_loss=assist)
    inst_fit, ierr = _safe(F.fit_pu_instances, N_all[:k], pu[:k], r=ctx.r,
                           k_max=ctx.settings.k_max, answer_loss=assist)
    out["dataset_fit"] = (dict(params=ds_fit.params, reliable=ds_fit.reliable,
                               reason=ds_fit.reason) if ds_fit is not None else dict(error=derr))
    out["instance_fit"] = (dict(reliable=inst_fit.reliable, reason=inst_fit.reason,
                                status_counts=dict(collections.Counter(inst_fit.status.tolist())))
                           if inst_fit is not None else dict(error=ierr))
    measured = {(r_.N, r_.D): float(v) for r_, v in zip(ctx.rungs, dataset)}
    preds = pu_predictions(ds_fit, inst_fit, [r_.N for r_ in targets], ctx.settings)
    for label in ("dataset-level", "instance-level"):
        for p, rung in zip(preds.get(label, []), targets):
            predictions.append(_row(p, "PassUntil PU", task, rung,
                                    measured.get((rung.N, rung.D))))
    if views and (ds_fit is not None or inst_fit is not None):
        out["band"] = _pu_band(ds_fit, inst_fit, N_all, ctx.settings)
        out["fitted_rungs"] = k
    hu.add_to_task(out, ctx, task, k, targets, predictions, _row, inst_fit, pu, N_all,
                   measured, views)
    out["_fits"] = dict(dataset=ds_fit, instance=inst_fit)
    return out


def strip_private(analysis: Mapping[str, Any]) -> dict[str, Any]:
    """The analysis without non-JSON objects (fit handles kept for plotting)."""
    out = dict(analysis)
    out["tasks"] = {t: {k: v for k, v in d.items() if not k.startswith("_")}
                    for t, d in analysis.get("tasks", {}).items()}
    return out
