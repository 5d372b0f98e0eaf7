"""Du et al.'s loss view: task performance against pre-training loss, beside compute.

Stage: report. Consumes the rows of a results file (`lmscale.eval.results`, dicts or
`ResultRow`s) over every size and every kept checkpoint; produces, per multiple-choice
task and per metric (accuracy and the continuous CorrectChoiceProb and Brier score):

- Spearman and Pearson correlations of the metric with the loss, and with log compute;
- the loss threshold eta of Du et al. eq. 3 (normalised performance 0 above eta, rising
  below it; `lmscale.fit.fit_loss_threshold`), with two percentile intervals: questions
  resampled (every checkpoint's metric recomputed from the per-question rows on the same
  resampled question set) and checkpoints resampled;
- the size threshold N0 (eta - L_inf)^(-1/alpha_N) of eq. 5, from Kaplan's L(N) fitted on
  the final checkpoints of one token multiplier (the one most sizes share), with the
  interval of the question-bootstrap eta draws carried through.

Normalisation (random guess = 0, perfect = 1): accuracy against the task's random
baseline 1/C; CorrectChoiceProb against 1/C (a uniform softmax); Brier score (summed over
choices) against 1 - 1/C (uniform), perfect 0.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import pathlib
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lmscale import fit as F
from lmscale.eval.results import (ACCURACY, BRIER_SCORE, CORRECT_CHOICE_PROB, INSTANCE,
                                  VALIDATION_LOSS, VALIDATION_TASK)

METRICS = (ACCURACY, CORRECT_CHOICE_PROB, BRIER_SCORE)


def _as_dict(row) -> dict:
    return dict(row) if isinstance(row, Mapping) else dataclasses.asdict(row)


class Index:
    """Rows by (run, step, task, metric), per-instance details by (run, step, task), and
    each (run, step)'s scaling coordinates (N total, N non-embedding, tokens)."""

    def __init__(self, rows: Iterable):
        self.values: dict[tuple, float] = {}
        self.instances: dict[tuple, dict[str, dict]] = collections.defaultdict(dict)
        self.points: dict[tuple[str, int], dict[str, float]] = {}
        for row in map(_as_dict, rows):
            key = (row["run"], int(row["step"]), row["task"])
            self.points.setdefault(key[:2], dict(
                N_total=row["num_params"], N_nonemb=row["num_params_non_embedding"],
                tokens=row["tokens"], D=row["num_tokens"]))
            if row["metric"] == INSTANCE:
                self.instances[key][str(row["instance"])] = dict(row.get("detail") or {})
            else:
                self.values[key + (row["metric"],)] = float(row["value"])

    def value(self, run, step, task, metric):
        return self.values.get((run, int(step), task, metric))


def baseline_of(metric: str, random_baseline: float) -> tuple[float, float]:
    """(random, perfect) values of `metric` for a task whose random accuracy is 1/C."""
    if metric == BRIER_SCORE:
        return 1.0 - random_baseline, 0.0
    return random_baseline, 1.0


def checkpoints(rows_or_index, mc_tasks: Sequence[str], counting: str = "total"
                ) -> list[dict[str, Any]]:
    """One dict per (run, step) with a validation loss: N, tokens, C = 6 N tokens, loss and
    every task metric (None where missing)."""
    index = rows_or_index if isinstance(rows_or_index, Index) else Index(rows_or_index)
    last: dict[str, int] = {}
    for run, step in index.points:
        last[run] = max(step, last.get(run, step))
    out = []
    for (run, step), pt in sorted(index.points.items()):
        loss = index.value(run, step, VALIDATION_TASK, VALIDATION_LOSS)
        if loss is None:
            continue
        n = pt["N_total"] if counting == "total" else pt["N_nonemb"]
        c = dict(run=run, step=step, N=int(n), D=int(pt["D"]), tokens=int(pt["tokens"]),
                 C=6.0 * n * pt["tokens"], loss=loss, final=step == last[run])
        for task in mc_tasks:
            for metric in METRICS:
                c[f"{task}/{metric}"] = index.value(run, step, task, metric)
        out.append(c)
    return out


def question_matrix(index: Index, cks: Sequence[Mapping[str, Any]], task: str):
    """{metric: [checkpoints, questions]} per-question values recomputed from the scorer
    detail of the instance rows (None when a checkpoint lacks them)."""
    from lmscale.eval import scorer  # pylint: disable=g-import-not-at-top

    per = [index.instances.get((c["run"], c["step"], task)) for c in cks]
    if not per or any(not p for p in per):
        return None
    ids = sorted(set.intersection(*(set(p) for p in per)))
    if len(ids) < 2:
        return None
    mats = {m: np.empty((len(cks), len(ids))) for m in METRICS}
    for i, p in enumerate(per):
        for j, q in enumerate(ids):
            vals = scorer.QuestionScore.from_detail(q, p[q]).metrics()
            for m in METRICS:
                mats[m][i, j] = vals[m]
    return mats


def _interval(draws, level) -> list[float] | None:
    draws = np.asarray([d for d in draws if d is not None and math.isfinite(d)], float)
    if draws.size < 2:
        return None
    return [float(v) for v in F.percentile_interval(draws, level)]


def _threshold(loss, norm):
    try:
        return F.fit_loss_threshold(loss, norm), None
    except (ValueError, RuntimeError) as e:
        return None, f"{type(e).__name__}: {e}"


def _n0(eta: float | None, kaplan) -> float | None:
    if eta is None or kaplan is None:
        return None
    p = kaplan.params
    try:
        return F.size_threshold(eta, p["L_inf"], p["N0"], p["alpha"])
    except ValueError:
        return None


def _question_draws(mat, loss, base, perfect, num_resamples, seed):
    """eta of each question resample (None where the refit failed or is unreliable, as
    `lmscale.fit.bootstrap_fit` counts them)."""
    rng = np.random.default_rng(seed)
    q = mat.shape[1]
    draws = []
    for _ in range(num_resamples):
        perf = mat[:, rng.integers(0, q, q)].mean(axis=1)
        fit, _ = _threshold(loss, F.normalize_performance(perf, base, perfect))
        draws.append(None if fit is None or not fit.reliable else fit.params["eta"])
    return draws


def _metric_view(metric, pts, task, base, perfect, mats, kaplan, level, num_resamples,
                 seed) -> dict[str, Any]:
    loss = np.array([c["loss"] for c in pts])
    logc = np.log(np.array([c["C"] for c in pts]))
    perf = np.array([c[f"{task}/{metric}"] for c in pts])
    out: dict[str, Any] = dict(random=base, perfect=perfect, num_points=len(pts))
    if len(pts) >= 3:
        out["vs_loss"] = {k: list(v) for k, v in F.correlations(loss, perf).items()}
        out["vs_compute"] = {k: list(v) for k, v in F.correlations(logc, perf).items()}
    fit, err = _threshold(loss, F.normalize_performance(perf, base, perfect))
    if fit is None:
        out["threshold"] = dict(error=err)
        return out
    eta = fit.params["eta"]
    # N0 only from a threshold the data bracket (an unreliable eta gives a meaningless N0).
    thr = dict(params=fit.params, reliable=fit.reliable, reason=fit.reason, eta=eta,
               N0=_n0(eta, kaplan) if fit.reliable else None)
    try:
        boot = F.bootstrap_fit(fit, num_resamples, seed)
        thr["eta_interval_checkpoints"] = _interval(boot.params["eta"], level)
    except ValueError as e:
        thr["eta_interval_checkpoints"], thr["checkpoint_bootstrap_error"] = None, str(e)
    if mats is not None:
        draws = _question_draws(mats[metric], loss, base, perfect, num_resamples, seed)
        thr["eta_interval_questions"] = _interval(draws, level)
        thr["question_resamples_failed"] = int(sum(d is None for d in draws))
        if kaplan is not None:
            n0 = [_n0(d, kaplan) for d in draws if d is not None]
            thr["N0_interval_questions"] = _interval(n0, level)
            thr["N0_never_reached"] = int(sum(v is None for v in n0))
    out["threshold"] = thr
    return out


def size_law(cks: Sequence[Mapping[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """Kaplan's L(N) (Du et al. eq. 4) on the final checkpoints of the token multiplier
    most sizes share (ties: the one nearest 20); (fit or None, description)."""
    finals = [c for c in cks if c["final"]]
    by_m = collections.defaultdict(dict)
    for c in finals:
        # Nominal M (2 significant digits: trained D is rounded up to whole steps).
        by_m[float(f"{c['D'] / c['N']:.2g}")].setdefault(c["N"], []).append(c["loss"])
    if not by_m:
        return None, dict(error="no final checkpoints")
    m = max(by_m, key=lambda k: (len(by_m[k]), -abs(math.log(k / 20.0))))
    sizes = sorted(by_m[m])
    info: dict[str, Any] = dict(M=m, N=sizes)
    if len(sizes) < 3:
        info["error"] = (f"{len(sizes)} size(s) share a token multiplier (M={m:g}): L(N) "
                         "needs >= 3, so N0 is not reported")
        return None, info
    L = [float(np.mean(by_m[m][n])) for n in sizes]
    try:
        fit = F.fit_loss_law(np.array(sizes, float), None, np.array(L), form="kaplan",
                             method="huber")
    except (ValueError, RuntimeError) as e:
        info["error"] = f"L(N) fit failed: {e}"
        return None, info
    info.update(params=fit.params, reliable=fit.reliable, reason=fit.reason, loss=L)
    return fit, info


def analyze_lossview(rows, infos: Mapping[str, Any] | None = None, *,
                     mc_tasks: Sequence[str], random_baselines: Mapping[str, float],
                     counting: str = "total", level: float = 0.9, num_resamples: int = 100,
                     seed: int = 0) -> dict[str, Any]:
    """The loss view of every checkpoint (JSON-ready): checkpoints, the L(N) used for N0,
    and tasks -> metric -> correlations (vs loss, vs log compute) and threshold.

    `infos` (run records) is accepted for symmetry with the other analyses and unused:
    every coordinate comes from the rows.
    """
    del infos
    index = Index(rows)
    cks = checkpoints(index, mc_tasks, counting)
    kaplan, law = size_law(cks)
    out: dict[str, Any] = dict(counting=counting, level=level, checkpoints=cks,
                               size_law=law, tasks={})
    for task in mc_tasks:
        base = random_baselines.get(task)
        pts = [c for c in cks if all(c[f"{task}/{m}"] is not None for m in METRICS)]
        view: dict[str, Any] = dict(random_baseline=base, num_checkpoints=len(pts))
        if len(pts) < 4 or base is None:
            view["error"] = (f"{len(pts)} checkpoint(s) with every metric (need >= 4)"
                             if base is not None else "no random baseline")
            out["tasks"][task] = view
            continue
        mats = question_matrix(index, pts, task)
        view["question_bootstrap"] = mats is not None
        for metric in METRICS:
            b, perfect = baseline_of(metric, base)
            view[metric] = _metric_view(metric, pts, task, b, perfect, mats, kaplan, level,
                                        num_resamples, seed)
        out["tasks"][task] = view
    return out


# --- Report -----------------------------------------------------------------------------


def _f(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return f"{int(x):,}"
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    return f"{x:.{digits - 1}e}" if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e6) \
        else f"{x:.{digits}g}"


def _iv(iv) -> str:
    return "–" if not iv else f"[{_f(iv[0])}, {_f(iv[1])}]"


def _corr(d, key) -> str:
    if not d or key not in d:
        return "–"
    return f"{d[key][0]:+.3f} (p={d[key][1]:.2g})"


def section(view: Mapping[str, Any], figures: Mapping[str, str]) -> list[str]:
    """Markdown lines of the loss-view section."""
    level = view.get("level", 0.9)
    law = view.get("size_law") or {}
    lines = ["## Loss view (Du et al.)", "",
             f"{len(view['checkpoints'])} checkpoints (every size, every kept step). "
             "eta: the loss below which normalised performance (random = 0, perfect = 1) "
             "rises from 0 (Du et al. eq. 3); N0: the size at which Kaplan's L(N) reaches "
             f"eta (eq. 5); intervals: {100 * level:.0f}% percentile, questions resampled "
             "(q) or checkpoints resampled (c). Correlations are with the loss and with "
             "log compute (C = 6 N tokens, N counted "
             f"{view.get('counting', 'total')}).", ""]
    if law.get("params"):
        p = law["params"]
        lines += [f"L(N) for N0: Kaplan, final checkpoints at M={law['M']:g} "
                  f"(N = {', '.join(f'{n:,}' for n in law['N'])}): L_inf={_f(p['L_inf'])}, "
                  f"N0={_f(p['N0'])}, alpha={_f(p['alpha'])}"
                  + (f" (unreliable: {law['reason']})" if law.get("reason") else ""), ""]
    elif law.get("error"):
        lines += [f"L(N) for N0: not fitted ({law['error']})", ""]
    for task, tv in view["tasks"].items():
        lines += [f"### {task}", ""]
        if tv.get("error"):
            lines += [f"Not analysed: {tv['error']}", ""]
            continue
        header = ["metric", "Spearman vs loss", "Pearson vs loss", "Spearman vs log C",
                  "Pearson vs log C", "eta", "eta (q)", "eta (c)", "N0", "N0 (q)", "caveat"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for metric in METRICS:
            mv = tv[metric]
            thr = mv.get("threshold", {})
            caveat = thr.get("error") or thr.get("reason") or ""
            if thr.get("question_resamples_failed"):
                caveat += (f"; {thr['question_resamples_failed']} question resample(s) "
                           "gave no reliable fit")
            if thr.get("N0_never_reached"):
                caveat += f"; {thr['N0_never_reached']} resample(s): L(N) never reaches eta"
            lines.append("| " + " | ".join([
                metric, _corr(mv.get("vs_loss"), "spearman"), _corr(mv.get("vs_loss"),
                                                                    "pearson"),
                _corr(mv.get("vs_compute"), "spearman"), _corr(mv.get("vs_compute"),
                                                               "pearson"),
                _f(thr.get("eta")), _iv(thr.get("eta_interval_questions")),
                _iv(thr.get("eta_interval_checkpoints")), _f(thr.get("N0")),
                _iv(thr.get("N0_interval_questions")), caveat.strip("; ") or "–"]) + " |")
        key = f"lossview/{task}"
        if key in figures:
            lines += ["", f"![{task}: performance vs loss and vs compute]({figures[key]})"]
        lines.append("")
    return lines


def figure(view: Mapping[str, Any], task: str, path) -> Any:
    """Rows: accuracy, CorrectChoiceProb, Brier; columns: vs loss (with the fitted
    threshold curve), vs compute. One colour per size."""
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    cks = [c for c in view["checkpoints"] if c.get(f"{task}/{ACCURACY}") is not None]
    sizes = sorted({c["N"] for c in cks})
    colors = dict(zip(sizes, plt.cm.viridis(np.linspace(0, 0.9, max(len(sizes), 1)))))
    fig, axes = plt.subplots(len(METRICS), 2, figsize=(9, 9), squeeze=False)
    tv = view["tasks"][task]
    for row, metric in enumerate(METRICS):
        for col, x in enumerate(("loss", "C")):
            ax = axes[row, col]
            for n in sizes:
                pts = sorted((c[x], c[f"{task}/{metric}"]) for c in cks if c["N"] == n)
                ax.plot(*zip(*pts), "o-", color=colors[n], ms=4, lw=0.8, label=f"N={n:,}")
            mv = tv.get(metric, {})
            if mv.get("random") is not None:
                ax.axhline(mv["random"], color="gray", ls=":", lw=1)
            thr = mv.get("threshold", {})
            if col == 0 and thr.get("params"):
                grid = np.linspace(min(c["loss"] for c in cks), max(c["loss"] for c in cks),
                                   100)
                p = thr["params"]
                norm = F.threshold_curve(grid, p["eta"], p["s"], p.get("p", 1.0))
                ax.plot(grid, mv["random"] + norm * (mv["perfect"] - mv["random"]), "C3--",
                        lw=1.2, label=f"threshold fit (eta={p['eta']:.3g})")
                ax.axvline(p["eta"], color="C3", lw=0.6)
            if col == 0:
                ax.invert_xaxis()
            else:
                ax.set_xscale("log")
            ax.set_xlabel("validation loss" if col == 0 else "compute C (FLOPs)")
            ax.set_ylabel(metric)
            if row == 0:
                ax.legend(fontsize=6)
    fig.suptitle(f"{task}: performance vs loss (left) and vs compute (right)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_figures(view: Mapping[str, Any] | None, outdir) -> dict[str, str]:
    """`figure` of every task of the view that has one; {"lossview/<task>": file name}."""
    import re  # pylint: disable=g-import-not-at-top

    out = {}
    outdir = pathlib.Path(outdir)
    for task, tv in (view or {}).get("tasks", {}).items():
        if not tv.get("error"):
            name = "lossview_" + re.sub(r"[^A-Za-z0-9_.-]", "_", task) + ".png"
            out[f"lossview/{task}"] = pathlib.Path(figure(view, task, outdir / name)).name
    return out
