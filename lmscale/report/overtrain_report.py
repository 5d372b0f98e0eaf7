"""The over-training study's report: report.md, results.json and PNG figures.

Stage: report. Consumes the dict of `lmscale.report.overtrain.analyze_overtrain` (with the
`loss_view` of `lmscale.report.lossview.analyze_lossview` under "loss_view"); writes:

- report.md: coverage of the held-out runs, the prediction table (predicted [interval],
  measured, relative error, covered) for the over-trained and larger runs, never-trained
  targets, the N x M grid of runs and of L(C, M)'s relative error (Gadre et al. Fig. 5),
  the fitted laws, the loss view, the setup;
- overtrain_loss_vs_compute.png (Fig. 2: loss vs C per M with the fitted law),
  overtrain_error_vs_loss.png (Fig. 3: average error vs loss with Err(L)),
  lossview_<task>.png per task.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np

from lmscale import fit as F
from lmscale.report import lossview

_f, _iv = lossview._f, lossview._iv  # pylint: disable=protected-access


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def prediction_rows(preds: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown table: quantity, task, N, M, C, predicted [low, high], measured, error."""
    rows = [[p["quantity"], p["task"], p.get("target") or "–", _f(p["N"]), f"{p['M']:.3g}",
             f"{p['C']:.3g}", f"{_f(p['predicted'])} {_iv(p['interval'])}",
             f"{100 * p['level']:.0f}%", _f(p.get("measured")), _pct(p.get("rel_error")),
             "–" if p.get("covered") is None else ("yes" if p["covered"] else "no")]
            for p in preds]
    lines = _table(["quantity", "task", "target", "N", "M", "C", "predicted [low, high]",
                    "level", "measured", "rel. error", "covered"], rows)
    reasons = sorted({f"- {p['quantity']} / {p['task']}: {r}" for p in preds
                      for r in p.get("reasons", [])})
    return lines + (["", "Caveats:", ""] + reasons if reasons else [])


def coverage_line(summary: Mapping[str, Any]) -> str:
    if not summary.get("n"):
        return "held-out runs: none measured"
    per = "; ".join(f"{q}: {d['covered']} of {d['n']} covered, median |rel. error| "
                    f"{_pct(d['median_rel_error'])}"
                    for q, d in summary.get("per_quantity", {}).items())
    return (f"held-out runs: {summary['covered']} of {summary['n']} "
            f"{100 * summary['level']:.0f}% intervals covered; median |rel. error| "
            f"{_pct(summary['median_rel_error'])} ({per})")


def nominal(m: float) -> float:
    """M to 2 significant digits (trained D is rounded up to whole steps: 5.02 -> 5)."""
    return float(f"{m:.2g}")


def _grid(points, value) -> list[str]:
    sizes = sorted({p["N"] for p in points})
    mults = sorted({nominal(p["M"]) for p in points})
    cell = {(p["N"], nominal(p["M"])): p for p in points}
    rows = [[_f(n)] + [value(cell[(n, m)]) if (n, m) in cell else "" for m in mults]
            for n in sizes]
    return _table(["N \\ M"] + [f"{m:g}" for m in mults], rows)


def _laws(analysis) -> list[str]:
    law = analysis.get("loss_law", {})
    lines = ["## Laws", ""]
    if law.get("params"):
        p = law["params"]
        lines.append(f"- L(C, M) = E + (a M^eta + b M^-eta) C^-eta on "
                     f"{law['num_points']} runs: " + ", ".join(f"{k}={_f(v)}"
                                                              for k, v in p.items())
                     + ("" if law["reliable"] else f" (unreliable: {law['reason']})"))
    else:
        lines.append(f"- L(C, M): not fitted ({law.get('error')})")
    for task, e in analysis.get("error_laws", {}).items():
        if e.get("params"):
            lines.append(f"- Err(L) {task}: " + ", ".join(f"{k}={_f(v)}"
                                                          for k, v in e["params"].items())
                         + ("" if e["reliable"] else f" (unreliable: {e['reason']})"))
        else:
            lines.append(f"- Err(L) {task}: not fitted ({e.get('error')})")
    return lines + [""]


def render(analysis: Mapping[str, Any], figures: Mapping[str, str], *, title: str,
           setup: Mapping[str, Any]) -> str:
    """The markdown text of the over-training report."""
    pts = analysis["points"]
    lines = [f"# {title}", "",
             "Gadre et al.'s scheme: L(C, M) and Err(L) are fitted on the cheap runs "
             + (f"(C <= {analysis['fit_max_flops']:.3g} FLOPs)"
                if analysis.get("fit_max_flops") is not None else "(their Table 1 set)")
             + "; every other trained run is held out and predicted through the chain "
             f"(C, M) -> L -> Err. N counted {analysis['counting']}.", "",
             coverage_line(analysis["backtests"]["summary"]), "",
             "## Held-out runs (over-trained and larger): prediction vs measurement", ""]
    lines += prediction_rows(analysis["predictions"]) or ["none"]
    if analysis.get("targets"):
        lines += ["", "## Never-trained targets", ""] + prediction_rows(analysis["targets"])
    lines += ["", "## Runs", "", "Final validation loss (* = fitted):", ""]
    lines += _grid(pts, lambda p: f"{_f(p['loss'])}{'*' if p['fitted'] else ''}")
    lines += ["", f"Average top-1 error over {analysis.get('average_tasks')}:", ""]
    lines += _grid(pts, lambda p: _f(p["err"]["average"]))
    if pts and "loss_rel_error" in pts[0]:
        lines += ["", "Relative error of L(C, M) on every run (Gadre et al. Fig. 5):", ""]
        lines += _grid(pts, lambda p: _pct(p["loss_rel_error"]))
    lines += [""] + _laws(analysis)
    for key, caption in (("loss_vs_compute", "loss vs compute per M"),
                         ("error_vs_loss", "average error vs loss")):
        if key in figures:
            lines += [f"![{caption}]({figures[key]})", ""]
    if analysis.get("loss_view"):
        lines += lossview.section(analysis["loss_view"], figures)
    lines += ["## Setup", ""] + [f"- {k}: {v}" for k, v in setup.items()]
    if analysis.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in analysis["notes"]]
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib  # pylint: disable=g-import-not-at-top

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

    return plt


def _fitted_and_held(ax, pts, x, y, color, label: str = "") -> None:
    """Fitted points filled and held-out points hollow, in `color`."""
    for fitted in (True, False):
        s = [p for p in pts if p["fitted"] == fitted]
        if s:
            style = dict(color=color) if fitted else dict(facecolors="none",
                                                          edgecolors=color, s=90)
            ax.scatter([x(p) for p in s], [y(p) for p in s], zorder=4,
                       label=(label + " " if label else "")
                       + ("fitted" if fitted else "held out"), **style)


def _predicted(ax, preds, x) -> None:
    """Each prediction as a black x at (x(p), predicted) with its interval; `x` returns
    None to skip one."""
    for p in preds:
        at = x(p)
        if at is not None:
            lo, hi = p["interval"]
            ax.errorbar([at], [p["predicted"]], yerr=[[p["predicted"] - lo],
                                                      [hi - p["predicted"]]],
                        fmt="x", color="k", capsize=3, zorder=5)


def _finish(plt, fig, ax, path, xlabel: str, ylabel: str, title: str) -> pathlib.Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return pathlib.Path(path)


def loss_vs_compute(analysis, path) -> pathlib.Path:
    """Final loss vs C, one colour per M, the fitted L(C, M) per M; held out hollow,
    predictions with their intervals."""
    plt = _pyplot()
    pts = analysis["points"]
    preds = analysis["predictions"] + analysis.get("targets", [])
    mults = sorted({nominal(p["M"]) for p in pts})
    colors = dict(zip(mults, plt.cm.plasma(np.linspace(0, 0.85, len(mults)))))
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    law = analysis.get("loss_law", {})
    cs = [p["C"] for p in pts] + [p["C"] for p in analysis.get("targets", [])]
    grid = np.geomspace(min(cs) / 1.5, max(cs) * 1.5, 100)
    for m in mults:
        _fitted_and_held(ax, [p for p in pts if nominal(p["M"]) == m], lambda p: p["C"],
                         lambda p: p["loss"], colors[m], f"M={m:g}")
        if law.get("params"):
            ax.plot(grid, F.laws.overtrain(grid, m, **law["params"]), color=colors[m],
                    lw=0.9, ls="--")
    _predicted(ax, preds, lambda p: p["C"] if p["quantity"] == "loss" else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    return _finish(plt, fig, ax, path, f"C = 6 N D (FLOPs, N counted {analysis['counting']})",
                   "final validation loss",
                   "L(C, M): fitted on cheap runs (filled); x = predicted, with interval")


def error_vs_loss(analysis, path) -> pathlib.Path | None:
    """Average top-1 error vs final loss with the fitted Err(L) and the predictions (each
    at its chained loss prediction)."""
    plt = _pyplot()
    pts = analysis["points"]
    preds = analysis["predictions"] + analysis.get("targets", [])
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    _fitted_and_held(ax, pts, lambda p: p["loss"], lambda p: p["err"]["average"], "C0")
    e = analysis.get("error_laws", {}).get("average", {})
    ls = [p["loss"] for p in pts]
    if e.get("params"):
        grid = np.linspace(min(ls) * 0.97, max(ls) * 1.03, 100)
        ax.plot(grid, F.laws.error_law(grid, **e["params"]), "C3--", label="Err(L) fit")
    loss_of = {(q["N"], q["D"]): q["predicted"] for q in preds if q["quantity"] == "loss"}
    _predicted(ax, preds, lambda p: loss_of.get((p["N"], p["D"])) if (
        p["quantity"] == "error" and p["task"] == "average") else None)
    ax.invert_xaxis()
    return _finish(plt, fig, ax, path, "final validation loss", "average top-1 error",
                   "Err(L) on the task average; x = chained prediction")


def write_figures(analysis, outdir) -> dict[str, str]:
    """Writes every figure into outdir; returns key -> file name (relative)."""
    outdir = pathlib.Path(outdir)
    out = {}
    if analysis.get("points"):
        out["loss_vs_compute"] = loss_vs_compute(analysis, outdir /
                                                 "overtrain_loss_vs_compute.png").name
        out["error_vs_loss"] = error_vs_loss(analysis, outdir /
                                             "overtrain_error_vs_loss.png").name
    out.update(lossview.write_figures(analysis.get("loss_view"), outdir))
    return out


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)


def write(analysis: Mapping[str, Any], outdir, *, title: str,
          setup: Mapping[str, Any]) -> tuple[pathlib.Path, pathlib.Path]:
    """Figures, report.md and results.json into outdir; returns (report, results)."""
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    figures = write_figures(analysis, outdir)
    report = outdir / "report.md"
    report.write_text(render(analysis, figures, title=title, setup=setup), encoding="utf-8")
    results = outdir / "results.json"
    payload = dict(analysis, figures=figures, setup=dict(setup), study="overtrain")
    results.write_text(json.dumps(payload, indent=1, default=_json_default),
                       encoding="utf-8")
    return report, results
