"""Hu et al.'s analyses of a PassUntil task beyond the PU fits: pass@k, two circuits, beams.

Stage: report. Called by `lmscale.report.analysis` for every PassUntil task (and every
backtest), it adds to the task's analysis dict and to the prediction rows:
  - "pass_at_k": per rung (final checkpoints), the measured pass@k for each k of the
    study's set up to the cap, from the PassUntil samples themselves
    (`lmscale.fit.passuntil.pass_at_k_task`: Chen et al.'s estimator made unbiased under
    PassUntil's stopping rule, interval from an instance bootstrap);
  - prediction rows "pass@k" of the targets: from the instance-level PU fit, per instance
    1 - (1 - p_i)^k averaged, its interval from the same predictive bootstrap as the
    instance-level PU (`lmscale.fit.passk.predict_pass_at_k`);
  - "two_circuit": Hu et al.'s soft-min of two circuits (section 6,
    `lmscale.fit.growth.fit_two_circuit`) on the fitted rungs' dataset PU when >= 5 of
    them lie in (0, 1), its parameters, and prediction rows (method "two-circuit") with an
    interval from a bootstrap over instances (each resample: instances drawn with
    replacement, the dataset PU of every fitted rung recomputed, the curve refitted from
    the full-data parameters, the target predicted), and a band for the PU figure;
  - "beam": the beam-search vs random-sampling table (Hu et al. Table 1) where the
    results hold beam rows (`lmscale.eval.beam`, StudyConfig.beam_sizes).
`section(task, info)` renders these for the markdown report.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
import scipy.optimize

from lmscale import fit as F
from lmscale.fit import passk as passk_lib
from lmscale.eval import beam as beam_lib

DEFAULT_KS = (1, 10, 100)


def _safe(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs), None
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
        return None, f"{type(e).__name__}: {e}"


def rung_counts(index, rung, task: str, k_max: int | None = None
                ) -> dict[str, np.ndarray] | None:
    """PassUntil counts of a rung's final checkpoints (seeds' instances pooled):
    {"K", "passes"} [instances] and "cap", the smallest sample cap (the rows' k_max, else
    a capped instance's K, else `k_max`, else unbounded); None without counts."""
    K, c, caps = [], [], []
    for run in rung.runs:
        for d in index.instances.get((run, rung.final_steps[run], task), {}).values():
            if d.get("num_samples") is None or d.get("num_passes") is None:
                return None
            K.append(int(d["num_samples"]))
            c.append(int(d["num_passes"]))
            if d.get("k_max") or d.get("capped"):
                caps.append(int(d.get("k_max") or d["num_samples"]))
    if not K:
        return None
    cap = min(caps) if caps else (k_max or 2 ** 62)
    return dict(K=np.array(K), passes=np.array(c), cap=int(cap))


def _usable_ks(ks: Sequence[int], cap: int) -> list[int]:
    return [int(k) for k in ks if 1 <= int(k) <= cap]


def measured_pass_at_k(index, rungs, task: str, ks, r: int, settings) -> list[dict]:
    """Per rung: N and, per usable k (<= the rung's smallest cap), pass@k and its interval."""
    out = []
    for rung in rungs:
        counts = rung_counts(index, rung, task, settings.k_max)
        row: dict[str, Any] = dict(N=rung.N, values={})
        if counts is None or r is None:
            out.append(row)
            continue
        for k in _usable_ks(ks, counts["cap"]):
            pred, err = _safe(F.pass_at_k_task, counts["K"], counts["passes"], k, r=r,
                              level=settings.level, seed=settings.seed)
            row["values"][str(k)] = (dict(point=pred.point, interval=[pred.low, pred.high])
                                     if pred is not None else dict(error=err))
        out.append(row)
    return out


def _measured_point(index, rung, task, k, r, k_max) -> float | None:
    counts = rung_counts(index, rung, task, k_max)
    if counts is None or r is None or k > counts["cap"]:
        return None
    return float(passk_lib.pass_at_k_counts(counts["K"], counts["passes"], r, k).mean())


def _predict_pass_at_k(ctx, task, inst_fit, targets, predictions, make_row) -> str | None:
    """Predicted pass@k rows of the targets (None, or why none were made)."""
    settings, r = ctx.settings, ctx.r
    if inst_fit is None or r is None or settings.k_max is None:
        return "predicted pass@k needs the instance-level fit, r and the cap"
    ks = _usable_ks(getattr(settings, "pass_at_k", DEFAULT_KS), settings.k_max)
    for rung in targets:
        preds, err = _safe(passk_lib.predict_pass_at_k, inst_fit, float(rung.N), ks,
                           settings.level, num_resamples=settings.num_resamples,
                           seed=settings.seed)
        if preds is None:
            return f"pass@k prediction failed: {err}"
        for k, pred in preds.items():
            predictions.append(make_row(pred, "pass@k", task, rung,
                                        _measured_point(ctx.index, rung, task, k, r,
                                                        settings.k_max)))
    return None


def _refit_two_circuit(x, F_obs, p0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        popt, _ = scipy.optimize.curve_fit(F.laws.two_circuit_F, x, F_obs, p0=p0,
                                           maxfev=5000)
    return popt


def two_circuit_bootstrap(N, pu, N_out, num_resamples: int = 200, seed: int = 0):
    """Two-circuit fit on the dataset PU of [m, I] per-instance PU and bootstrap samples of
    its prediction at N_out: (fit, samples [B, n] with NaN rows for failed refits,
    number failed). Each resample draws instances with replacement and refits from the
    full-data parameters (one `curve_fit`)."""
    N, pu, N_out = (np.asarray(a, float) for a in (N, pu, N_out))
    fit = F.fit_two_circuit(N, pu.mean(axis=1))
    names = ("log_c1", "alpha1", "log_c2", "alpha2")
    p0 = [fit.params[k] for k in names]
    rng = np.random.default_rng(seed)
    x = np.log(N)
    samples = np.full((num_resamples, N_out.size), np.nan)
    for b in range(num_resamples):
        mean = pu[:, rng.integers(0, pu.shape[1], pu.shape[1])].mean(axis=1)
        if np.any((mean <= 0) | (mean >= 1)):
            continue
        try:
            popt = _refit_two_circuit(x, np.log(-np.log(mean)), p0)
        except (RuntimeError, ValueError):
            continue
        with np.errstate(over="ignore"):
            samples[b] = np.exp(-np.exp(F.laws.two_circuit_F(np.log(N_out), *popt)))
    return fit, samples, int(np.isnan(samples[:, 0]).sum())


def _two_circuit_prediction(fit, samples, failed, n, j, level) -> F.Prediction:
    point = float(fit.predict(N=np.array([n]))[0])
    col = samples[:, j][np.isfinite(samples[:, j])]
    reasons = ([fit.reason] if fit.reason else []) + [
        "interval: instances resampled (their PassUntil noise included); training noise "
        "and the target's own measurement left out"]
    if failed:
        reasons.append(f"{failed} of {samples.shape[0]} bootstrap refits failed")
    if col.size < 10:
        return F.Prediction("pu", point, 0.0, 1.0, level, "two-circuit",
                            reasons + ["too few bootstrap refits: the interval is [0, 1]"],
                            (0.0, 1.0))
    lo, hi = np.quantile(col, [(1 - level) / 2, (1 + level) / 2])
    return F.Prediction("pu", point, min(float(lo), point), max(float(hi), point), level,
                        "two-circuit", tuple(reasons), (0.0, 1.0))


def two_circuit(ctx, task, k, N_all, pu, targets, predictions, make_row, measured,
                growth, band_grid=None) -> dict[str, Any]:
    """The two-circuit fit on rungs[:k] (>= 5 with 0 < dataset PU < 1), its prediction
    rows for the targets and, given `band_grid`, its band on that grid."""
    fit_pu = pu[:k]
    usable = (fit_pu.mean(axis=1) > 0) & (fit_pu.mean(axis=1) < 1)
    called = growth.get("cls") == "concave"
    out: dict[str, Any] = dict(called_for=called)
    if usable.sum() < 5:
        out["error"] = (f"{int(usable.sum())} fitted rung(s) with 0 < PU < 1; the four-"
                        "parameter two-circuit fit needs >= 5")
        return out
    N_out = [float(r.N) for r in targets] + list(band_grid if band_grid is not None else [])
    B = min(int(ctx.settings.num_resamples), 200)
    res, err = _safe(two_circuit_bootstrap, N_all[:k][usable], fit_pu[usable], N_out, B,
                     ctx.settings.seed)
    if res is None:
        out["error"] = err
        return out
    fit, samples, failed = res
    out.update(params=fit.params, reliable=fit.reliable, reason=fit.reason,
               num_resamples=B, num_failed=failed)
    preds = [_two_circuit_prediction(fit, samples, failed, n, j, ctx.settings.level)
             for j, n in enumerate(N_out)]
    for pred, rung in zip(preds, targets):
        predictions.append(make_row(pred, "PassUntil PU", task, rung,
                                    measured.get((rung.N, rung.D))))
    if band_grid is not None:
        grid_preds = preds[len(targets):]
        out["band"] = dict(point=[p.point for p in grid_preds], low=[p.low for p in grid_preds],
                           high=[p.high for p in grid_preds])
    return out


def beam_table(index, rungs, task: str, r: int | None, k_max: int | None = None
               ) -> list[dict] | None:
    """Hu et al.'s Table 1 per rung and beam size: instances solved by beam search (top
    beam; any of the W beams), expected instances solved by k random samples (the sum
    of per-instance pass@k from the PassUntil samples), instances PassUntil solved (>= 1
    pass within the cap), the total and PU. None when no beam rows exist."""
    out = []
    for rung in rungs:
        counts = rung_counts(index, rung, task, k_max)
        by_size: dict[int, list[dict]] = {}
        for run in rung.runs:
            for (run_, step, name), details in index.instances.items():
                parsed = beam_lib.parse_beam_task(name)
                if run_ == run and step == rung.final_steps[run] and parsed \
                        and parsed[0] == task:
                    by_size.setdefault(parsed[1], []).extend(details.values())
        for size, details in sorted(by_size.items()):
            row = dict(N=rung.N, beam_size=size, num_instances=len(details),
                       beam_top=int(sum(bool(d["top_passed"]) for d in details)),
                       beam_any=int(sum(bool(d["any_passed"]) for d in details)))
            if counts is not None and r is not None:
                row["passuntil_solved"] = int((counts["passes"] > 0).sum())
                row["pu"] = float(F.pu_from_counts(counts["K"], counts["passes"], r).mean())
                row["random"] = {str(k): float(passk_lib.pass_at_k_counts(
                    counts["K"], counts["passes"], r, k).sum())
                    for k in _usable_ks(DEFAULT_KS, counts["cap"])}
                row["cap"] = counts["cap"]
            out.append(row)
    return out or None


def add_to_task(out: dict, ctx, task: str, k: int, targets, predictions: list,
                make_row: Callable, inst_fit, pu: np.ndarray, N_all: np.ndarray,
                measured: dict, views: bool) -> None:
    """Adds pass@k, the two-circuit fit and the beam table to a PassUntil task's dict and
    their prediction rows to `predictions` (see the module doc)."""
    ks = getattr(ctx.settings, "pass_at_k", DEFAULT_KS)
    if views:
        out["pass_at_k"] = dict(ks=list(ks), level=ctx.settings.level,
                                per_rung=measured_pass_at_k(ctx.index, ctx.rungs, task, ks,
                                                            ctx.r, ctx.settings))
    why = _predict_pass_at_k(ctx, task, inst_fit, targets, predictions, make_row) \
        if ks else None
    if why and views:
        out["pass_at_k"]["prediction_error"] = why
    if getattr(ctx.settings, "two_circuit", True):
        grid = out.get("band", {}).get("N") if views else None
        tc = two_circuit(ctx, task, k, N_all, pu, targets, predictions, make_row, measured,
                         out.get("growth", {}), grid)
        if views:
            if "band" in tc and "band" in out:
                out["band"]["two-circuit"] = tc.pop("band")
            out["two_circuit"] = tc
    if views:
        table = beam_table(ctx.index, ctx.rungs, task, ctx.r, ctx.settings.k_max)
        if table:
            out["beam"] = table


def _fmt(x) -> str:
    if x is None:
        return "–"
    if isinstance(x, int):
        return f"{x:,}"
    return f"{x:.4g}"


def section(task: str, info) -> list[str]:
    """Markdown lines: the pass@k table, the two-circuit fit and the beam table."""
    lines: list[str] = []
    pk = info.get("pass_at_k")
    if pk and any(r["values"] for r in pk["per_rung"]):
        ks = [str(k) for k in pk["ks"]]
        lines += ["", "pass@k from the same PassUntil samples (Chen et al.'s estimator, "
                  "unbiased under PassUntil's stopping rule), "
                  f"{100 * pk.get('level', 0.9):.0f}% interval from an instance bootstrap; "
                  "k above the rung's cap: –:", "",
                  "| N | " + " | ".join(f"pass@{k}" for k in ks) + " |",
                  "|---|" + "---|" * len(ks)]
        for r in pk["per_rung"]:
            cells = []
            for k in ks:
                v = r["values"].get(k)
                cells.append("–" if not v or "point" not in v else
                             f"{_fmt(v['point'])} [{_fmt(v['interval'][0])}, "
                             f"{_fmt(v['interval'][1])}]")
            lines.append(f"| {r['N']:,} | " + " | ".join(cells) + " |")
        if pk.get("prediction_error"):
            lines += ["", f"pass@k not predicted: {pk['prediction_error']}"]
    tc = info.get("two_circuit")
    if tc:
        why = ("the growth class is concave (super-scaling), which it describes" if
               tc.get("called_for") else "a candidate beside the dataset-level fit")
        if tc.get("params"):
            params = ", ".join(f"{k} = {_fmt(v)}" for k, v in tc["params"].items())
            flag = "" if tc.get("reliable", True) else f" (unreliable: {tc.get('reason')})"
            lines += ["", f"- two-circuit fit (Hu et al. section 6; {why}): {params}{flag}; "
                      f"interval from {tc['num_resamples']} instance resamples "
                      f"({tc['num_failed']} failed)."]
        else:
            lines += ["", f"- two-circuit fit ({why}) not made: {tc.get('error')}"]
    beam = info.get("beam")
    if beam:
        ks = sorted({k for r in beam for k in r.get("random", {})}, key=int)
        lines += ["", "Beam search vs random sampling (Hu et al. Table 1; final checkpoints): "
                  "instances solved of all. BS: the top beam passes; BS any: one of the W "
                  "beams does; RS-k: expected instances solved by k random samples (sum of "
                  "per-instance pass@k); PassUntil: instances with >= 1 pass within the cap.",
                  "", "| N | W | BS | BS any | " + " | ".join(f"RS-{k}" for k in ks)
                  + " | PassUntil | PU |", "|---|---|---|---|" + "---|" * len(ks) + "---|---|"]
        for r in beam:
            n = r["num_instances"]
            rs = [f"{r['random'][k]:.1f}/{n}" if k in r.get("random", {}) else "–"
                  for k in ks]
            lines.append(f"| {r['N']:,} | {r['beam_size']} | {r['beam_top']}/{n} | "
                         f"{r['beam_any']}/{n} | " + " | ".join(rs) + " | "
                         f"{_fmt(r.get('passuntil_solved'))}/{n} | {_fmt(r.get('pu'))} |")
    return lines
