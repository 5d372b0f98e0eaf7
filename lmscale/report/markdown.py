"""The study report: `report.md` and `results.json` from an analysis and its figures.

Stage: report. Every number written here comes from the analysis dict, which comes from
measured result rows; nothing is typed in by hand.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Mapping, Sequence

from lmscale.eval import sandbox
from lmscale.report import greedy as greedy_report
from lmscale.report import hu, lossview
from lmscale.report.analysis import strip_private


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e6):
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}"
    return str(x)


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |"
            for row in rows]
    return out


def _yes_no(x) -> str:
    return "–" if x is None else ("yes" if x else "no")


def prediction_table(predictions: Sequence[Mapping[str, Any]]) -> list[str]:
    """Rows read `predicted [low, high] | measured | relative error | covered`; each row's
    reasons (a parameter at its bound, failed bootstrap refits) follow the table."""
    lines = _table(["quantity", "task", "method", "N", "predicted [low, high]", "level",
                    "measured", "rel. error", "covered"],
                   [[p["quantity"], p["task"], p["method"], p["N"],
                     f"{_fmt(p['predicted'])} [{_fmt(p['interval'][0])}, "
                     f"{_fmt(p['interval'][1])}]", f"{100 * p['level']:.0f}%",
                     p["measured"], _pct(p["rel_error"]), _yes_no(p.get("covered"))]
                    for p in predictions])
    reasons = [f"- {p['quantity']} / {p['task']} / {p['method']} (N={p['N']:,}): {r}"
               for p in predictions for r in p.get("reasons", [])]
    return lines + (["", "Caveats:", ""] + reasons if reasons else [])


def coverage_line(summary: Mapping[str, Any]) -> str:
    """"backtests: k of n 90% intervals covered; median |rel. error| x%", then per quantity."""
    def one(d):
        return (f"{d['covered']} of {d['n']} {100 * summary['level']:.0f}% intervals covered; "
                f"median |rel. error| {_pct(d['median_rel_error'])}")
    if not summary.get("n"):
        return "backtests: none (a backtest needs >= 3 rungs below the predicted one)"
    per = "; ".join(f"{q}: {one(d)}" for q, d in summary.get("per_quantity", {}).items())
    return f"backtests: {one(summary)}" + (f" ({per})" if per else "")



def console_summary(report_path: str, analysis: Mapping[str, Any]) -> str:
    """What a study binary prints at the end: the report's path, the prediction table
    (targets first) and the backtest coverage line."""
    lines = ["", f"Report: {report_path}"]
    lines += prediction_table(list(analysis["targets"]) + list(analysis["predictions"]))
    lines.append(coverage_line(analysis["backtests"]["summary"]))
    return "\n".join(lines)

def targets_table(analysis) -> list[str]:
    targets = analysis.get("targets") or []
    if not targets:
        return []
    lines = ["## Targets (never trained)", ""]
    lines += _table(["target", "quantity", "task", "method", "N", "D",
                     "predicted [low, high]", "level"],
                    [[p.get("target") or "–", p["quantity"], p["task"], p["method"], p["N"],
                      p["D"], f"{_fmt(p['predicted'])} [{_fmt(p['interval'][0])}, "
                      f"{_fmt(p['interval'][1])}]", f"{100 * p['level']:.0f}%"]
                     for p in targets])
    reasons = [f"- {p.get('target')} / {p['quantity']} / {p['method']}: {r}"
               for p in targets for r in p.get("reasons", [])]
    return lines + (["", "Caveats:", ""] + reasons if reasons else []) + [""]


def _backtests_section(analysis) -> list[str]:
    bt = analysis.get("backtests")
    if not bt:
        return []
    lines = ["", "## Backtests (each rung predicted from the rungs below it)", "",
             coverage_line(bt["summary"]), ""]
    if any("backtest_allowance" in p for p in bt["rows"]):
        lines += ["Intervals of predictions made from 4 or more rungs (the held-out rungs' "
                  "and the targets') are extended by the error their method made one rung "
                  "back: the bound on the side the backtest erred moves by the factor "
                  "exp(|log(measured / predicted)| x distance in backtest steps), the point "
                  "stays (`lmscale.report.analysis.backtest_allowance`); the first backtest "
                  "rung has no rung below to take it from.", ""]
    lines += _table(["quantity", "task", "method", "N", "fitted on", "predicted [low, high]",
                     "measured", "rel. error", "covered"],
                    [[p["quantity"], p["task"], p["method"], p["N"],
                      f"{p.get('fitted_on')} rungs", f"{_fmt(p['predicted'])} "
                      f"[{_fmt(p['interval'][0])}, {_fmt(p['interval'][1])}]", p["measured"],
                      _pct(p["rel_error"]), _yes_no(p.get("covered"))] for p in bt["rows"]])
    return lines


def _runs_section(analysis) -> list[str]:
    lines = ["", "## Runs", ""]
    return lines + _table(["N (non-emb.)", "N (total)", "D (tokens)", "C (FLOPs)", "seeds",
                           "final val. loss", "std over seeds", "train wall (s)", "role"],
                          [[r["N"], r["N_total"], r["D"], r["C"], r["num_seeds"],
                            r["validation_loss"], r["validation_loss_std"], r["wall_s"],
                            "held out" if r["held_out"] else "fit"]
                           for r in analysis["rungs"]])


def _loss_law_section(law, figures) -> list[str]:
    lines = ["", f"## Loss law ({law.get('form')})", ""]
    if not law.get("params"):
        return lines + [f"Not fitted: {law.get('error')}"]
    if law.get("backtest_error"):
        errs = ", ".join(f"{k} {_pct(v)}" for k, v in law["backtest_error"].items())
        lines += [f"Chosen by backtest (mean |rel. error| predicting the largest fitted "
                  f"rungs from those below): {errs}; chosen: **{law['form']}**."]
        lines += [f"- {k} failed: {'; '.join(v)}" for k, v in law.get("failures", {}).items()]
        if law.get("dropped_N"):
            lines += ["The chosen law leaves out of its fit the smallest size(s) N = "
                      + ", ".join(f"{n:,}" for n in law["dropped_N"]) + "."]
    params = ", ".join(f"{k} = {_fmt(v)}" for k, v in law["params"].items())
    lines += [f"Fitted by {law.get('method')} on {law.get('num_points')} runs: {params}."]
    if not law.get("reliable", True):
        lines += [f"Flagged unreliable: {law.get('reason')}."]
    if "loss_vs_compute" in figures:
        lines += ["", f"![loss vs compute]({figures['loss_vs_compute']})"]
    return lines


def _figures(task, figures, keys) -> list[str]:
    return [line for key in keys if f"{task}/{key}" in figures
            for line in ("", f"![{task} {key}]({figures[f'{task}/{key}']})")]


def _mc_section(task, info, figures) -> list[str]:
    lines = [f"Random-guess accuracy: {_fmt(info.get('random_baseline'))}.", ""]
    lines += _table(["N", "accuracy", "CorrectChoiceProb", "Brier"],
                    [[r["N"], r["accuracy"], r["correct_choice_prob"], r["brier_score"]]
                     for r in info["per_rung"]])
    corr = info.get("correlations", {}).get("accuracy")
    if corr:
        lines += ["", "Across all checkpoints, loss vs accuracy: Spearman "
                  f"{_fmt(corr['spearman'][0])} (p {_fmt(corr['spearman'][1])}), "
                  f"Pearson {_fmt(corr['pearson'][0])} (p {_fmt(corr['pearson'][1])})."]
    thr = info.get("threshold")
    if thr and thr.get("params"):
        iv = thr.get("eta_interval")
        band = (f" [{_fmt(iv[0])}, {_fmt(iv[1])}] ({100 * thr['level']:.0f}%; "
                f"{thr.get('interval_note')})" if iv else
                f" (no interval: {thr.get('interval_note')})")
        lines += [f"Loss threshold (Du et al.): eta = {_fmt(thr['params']['eta'])}{band} nats"
                  + ("" if thr.get("reliable") else f" (unreliable: {thr.get('reason')})") + "."]
    lines += _accuracy_method_lines(info.get("accuracy_method"))
    if info.get("error_law", {}).get("error"):
        lines += [f"Err(L) not fitted: {info['error_law']['error']}"]
    return lines + _figures(task, figures, ("accuracy", "correct_choice_prob"))


def _accuracy_method_lines(am) -> list[str]:
    """The accuracy method chosen by backtest (Gadre et al.'s chain or Bhagia et al.'s
    two-step) with both backtest errors."""
    if not am:
        return []
    names = {"gadre": "Gadre et al. (N, D) -> L -> Err(L)",
             "two_step": "Bhagia et al. two-step (N, D) -> answer loss -> sigmoid"}
    errs = ", ".join(f"{names[k]}: {_fmt(v)}" for k, v in am["backtest_error"].items())
    lines = ["", f"Accuracy method: **{names[am['choice']]}** ({am.get('reason')}). "
             f"Backtest |error| in accuracy, largest fitted size from those below: {errs}."]
    return lines + [f"- {names.get(k, k)} failed: {v}" for k, v in am.get("failures", {}).items()]


def _pu_section(task, info, figures) -> list[str]:
    if info.get("error"):
        return [f"No PassUntil data: {info['error']}"]
    lines = [f"{info['num_instances']} instances, r = {info.get('r')}.", ""]
    lines += _table(["N", "dataset PU", "exact interval (instance mean)", "capped fraction"],
                    [[r["N"], r["pu"], "–" if not r.get("interval") else
                      f"[{_fmt(r['interval'][0])}, {_fmt(r['interval'][1])}]",
                      r["capped_fraction"]] for r in info["per_rung"]])
    g = info.get("growth", {})
    if g.get("cls"):
        lines += ["", f"Growth class ({g['on']}): **{g['cls']}** ({g['description']}), "
                  f"curvature {_fmt(g['curvature'])}, p = {_fmt(g['p_value'])}."]
    elif g.get("error"):
        lines += ["", f"Growth class not decided: {g['error']}"]
    for label, key in (("dataset-level", "dataset_fit"), ("instance-level", "instance_fit")):
        d = info.get(key, {})
        if d.get("error"):
            lines += [f"- {label} fit failed: {d['error']}"]
        elif d:
            extra = (", ".join(f"{k} = {_fmt(v)}" for k, v in d.get("params", {}).items())
                     or ", ".join(f"{k}: {v}" for k, v in d.get("status_counts", {}).items()))
            flag = "" if d.get("reliable", True) else f" (unreliable: {d.get('reason')})"
            lines += [f"- {label} fit: {extra}{flag}"]
    lines += hu.section(task, info)  # pass@k, two-circuit fit, beam vs sampling
    return lines + _figures(task, figures, ("pu_band", "pu_scaling", "pu_vs_loss"))


def isolation_levels(rows) -> dict[str, list[str]]:
    """Per code-execution task, the sandbox isolation levels its result rows record.

    Args:
      rows: result rows (dicts or `ResultRow`s); per-instance rows of a "code" task carry
        ``detail["isolation"]`` (set by the evaluation runner).

    Returns:
      {task: sorted distinct levels}; tasks whose rows name no level are absent.
    """
    levels: dict[str, set[str]] = {}
    for row in rows:
        get = row.get if isinstance(row, Mapping) else lambda k, r=row: getattr(r, k, None)
        level = (get("detail") or {}).get("isolation")
        if level is not None:
            levels.setdefault(str(get("task")), set()).add(str(level))
    return {task: sorted(found) for task, found in sorted(levels.items())}


def isolation_section(levels: Mapping[str, Sequence[str]]) -> list[str]:
    """The report lines naming the sandbox isolation each code-execution task ran under."""
    if not levels:
        return []
    lines = ["", "## Code execution isolation", "",
             "Sandbox level of every executed sample (lmscale.eval.sandbox; what each level "
             "contains: docs/reliability.md, threat model).", ""]
    order = sandbox.ISOLATION_LEVELS
    for task, found in levels.items():
        weak = [lv for lv in found if lv not in order
                or order.index(lv) > order.index(sandbox.MIN_ISOLATION)]
        note = (f" ({', '.join(weak)} is below the default minimum "
                f"{sandbox.MIN_ISOLATION!r}: explicitly opted in, weaker containment)"
                if weak else "")
        mixed = " (mixed: rows ran under different levels)" if len(found) > 1 else ""
        lines.append(f"- {task}: {', '.join(found)}{mixed}{note}")
    return lines


def plan_section(rows: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The plan saved at the study's start (plan.json) beside what was measured: per stage
    and rung, FLOPs, estimated and measured wall time and their ratio
    (`lmscale.report.plan.render.plan_vs_measured` rows); nothing without rows."""
    if not rows:
        return []
    secs = lambda s: "-" if s is None else f"{s:.0f}"  # noqa: E731
    table = [(r["stage"], r["rung"], f"{r['flops']:.3g}" if r["flops"] else "-",
              secs(r["estimated_s"]),
              secs(r["measured_s"]), "-" if r["ratio"] is None else f"{r['ratio']:.2f}")
             for r in rows]
    return (["", "## Plan vs measured", "",
             "The plan written to plan.json when the study started (training: model FLOPs; "
             "evaluation: expected FLOPs under the prior PU, worst case without one; "
             "estimated wall time from the probe when it ran) beside the measured wall "
             "time (training: the run records' wall_s; evaluation: the study's timing of "
             "each run's evaluation, stages.json; fit/report: this analysis up to writing the "
             "report).", ""]
            + _table(["stage", "rung", "FLOPs", "est. s", "measured s", "measured / est."],
                     table))


def render(analysis: Mapping[str, Any], figures: Mapping[str, str], *, title: str,
           setup: Mapping[str, Any]) -> str:
    """The markdown text of the report."""
    level = analysis.get("level", 0.9)
    lines = [f"# {title}", ""]
    lines += ["Predict-before-you-train on a ladder of small decoders: every law below is "
              f"fitted on all but the {analysis['held_out']} largest rung(s); the held-out "
              f"rung is then compared with its prediction and its {100 * level:.0f}% "
              "interval.", ""]
    if analysis.get("backtests"):
        lines += [coverage_line(analysis["backtests"]["summary"]), ""]
    lines += targets_table(analysis)
    lines += ["## Prediction vs measurement (held-out rung)", ""]
    lines += prediction_table(analysis["predictions"])
    if "prediction_vs_truth" in figures:
        lines += ["", f"![prediction vs truth]({figures['prediction_vs_truth']})"]
    lines += _backtests_section(analysis)
    lines += ["", "## Setup", ""] + [f"- {k}: {v}" for k, v in setup.items()]
    lines += plan_section(analysis.get("plan_vs_measured"))
    lines += _runs_section(analysis)
    lines += isolation_section(analysis.get("isolation") or {})
    lines += _loss_law_section(analysis["loss_law"], figures)
    lines += ["", "## Tasks", ""]
    for task, info in analysis["tasks"].items():
        lines += [f"### {task} ({info['kind']})", ""]
        section = _mc_section if info["kind"] == "multiple_choice" else _pu_section
        lines += section(task, info, figures) + [""]
    lines += greedy_report.section(analysis.get("greedy"))
    if analysis.get("loss_view"):
        lines += lossview.section(analysis["loss_view"], figures) + [""]
    if analysis.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in analysis["notes"]]
    return "\n".join(lines) + "\n"


def write_report(analysis: Mapping[str, Any], figures: Mapping[str, str],
                 outdir: str | pathlib.Path, *, title: str,
                 setup: Mapping[str, Any]) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes `report.md` and `results.json` into outdir; returns their paths."""
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    report = outdir / "report.md"
    report.write_text(render(analysis, figures, title=title, setup=setup), encoding="utf-8")
    results = outdir / "results.json"
    payload = dict(strip_private(analysis), figures=dict(figures), setup=dict(setup))
    results.write_text(json.dumps(payload, indent=1, default=_json_default), encoding="utf-8")
    return report, results


def _json_default(x):
    try:
        import numpy as np

        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, np.ndarray):
            return x.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(x)
