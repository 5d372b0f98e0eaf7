"""Study figures (PNG) from an `analysis.analyze` result.

Stage: report. Uses `lmscale.fit.plots` where a plot of the papers' kind exists there and
matplotlib (Agg) for the ladder-specific loss-vs-compute view. Returns the written paths.
"""

from __future__ import annotations

import pathlib
from typing import Any, Mapping

import numpy as np

from lmscale import fit as F


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_vs_compute(analysis: Mapping[str, Any], path: pathlib.Path) -> pathlib.Path:
    """Validation loss of every checkpoint vs compute, one curve per run, with the law.

    The fitted law is drawn along the ladder's D(N) (C = 6 N D; D = M N at fixed M);
    the held-out rung is a hollow star.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    rungs = analysis["rungs"]
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(rungs)))
    for rung, col in zip(rungs, colors):
        for run in rung["runs"]:
            pts = sorted((c["flops"], c["validation_loss"]) for c in analysis["checkpoints"]
                         if c["run"] == run and c["validation_loss"] is not None
                         and c["flops"] > 0)
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, color=col, lw=0.8, alpha=0.6)
        style = dict(facecolors="none", edgecolors=col, marker="*", s=160) if rung["held_out"] \
            else dict(color=col, s=30)
        ax.scatter([rung["C"]], [rung["validation_loss"]], zorder=5,
                   label=f"N={rung['N']:,}" + (" (held out)" if rung["held_out"] else ""),
                   **style)
    curve = law_curve(analysis["loss_law"], rungs)
    if curve is not None:
        ax.plot(*curve, color="C3", lw=1.4, ls="--",
                label=f"{analysis['loss_law']['form']} fit (held-out rung excluded)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training compute C = 6 N D (FLOPs)")
    ax.set_ylabel(f"validation loss ({analysis.get('loss_unit', 'nats/token')})")
    ax.set_title("Loss vs compute (training curves; finals marked)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def law_curve(law: dict, rungs) -> tuple[np.ndarray, np.ndarray] | None:
    """The chosen loss law along the ladder's D(N), as (C, loss) on a grid of N a little
    past the rungs; None when the law has no parameters or no known form. The chosen
    form's name can differ from its curve's: "kaplan_floor" is Kaplan's L(N) with a
    bounded L_inf, and the 2-parameter power laws (fit.select) are Kaplan's law and the
    compute law at floor 0."""
    form = law.get("law") or law.get("form")
    params = law.get("params")
    if params and form in _POWER_FORMS:
        form, params = _POWER_FORMS[form], {_POWER_FLOOR[_POWER_FORMS[form]]: 0.0, **params}
    if not params or form not in F.laws.FORMS:
        return None
    N = np.array([r["N"] for r in rungs], float)
    D = np.array([r["D"] for r in rungs], float)
    # The ladder's D(N) (a power law for fixed M or fixed D), to place the law in C.
    slope, intercept = np.polyfit(np.log(N), np.log(D), 1)
    grid = np.geomspace(N.min() / 1.3, N.max() * 1.5, 100)
    d_grid = np.exp(intercept) * grid ** slope
    return 6 * grid * d_grid, F.laws.FORMS[form].predict(params, N=grid, D=d_grid)


_POWER_FORMS = {"power": "kaplan", "power_compute": "compute"}
_POWER_FLOOR = {"kaplan": "L_inf", "compute": "E"}


def _plain_ticks(ax, axis) -> None:
    """Plain numbers on a log axis (no 10^k mathtext)."""
    import matplotlib.ticker as mticker

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(mticker.NullFormatter())


def prediction_panels(analysis: Mapping[str, Any], path: pathlib.Path) -> pathlib.Path | None:
    """Prediction vs truth: one small panel per quantity, each prediction with its
    interval as an error bar (held-out rung filled, earlier backtests hollow), y = x
    dashed; log axes where the quantity spans a decade."""
    held = [dict(p, backtest=False) for p in analysis["predictions"]
            if p["measured"] is not None]
    k_main = max((p.get("fitted_on") or 0 for p in held), default=0)
    preds = held + [dict(p, backtest=True)
                    for p in (analysis.get("backtests") or {}).get("rows", [])
                    if p["measured"] is not None and (p.get("fitted_on") or 0) < k_main]
    quantities = list(dict.fromkeys(p["quantity"] for p in preds))
    if not quantities:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(quantities), figsize=(3.4 * len(quantities), 3.4),
                             squeeze=False)
    for ax, q in zip(axes[0], quantities):
        rows = [p for p in preds if p["quantity"] == q]
        x = np.array([p["measured"] for p in rows], float)
        y = np.array([p["predicted"] for p in rows], float)
        lo = np.array([p["interval"][0] for p in rows], float)
        hi = np.array([p["interval"][1] for p in rows], float)
        hollow = np.array([p["backtest"] for p in rows], bool)
        hi = np.where(np.isfinite(hi), hi, np.nan)
        for sel, label, mfc in ((~hollow, "held-out rung", "C0"),
                                (hollow, "earlier backtests", "white")):
            if sel.any():
                ax.errorbar(x[sel], y[sel], yerr=[np.maximum(y - lo, 0)[sel],
                                                  np.maximum(hi - y, 0)[sel]],
                            fmt="o", ms=4, capsize=3, color="C0", mfc=mfc, label=label)
        for p, xi, yi, h in zip(rows, x, y, hollow):
            if not h:
                ax.annotate(f"{p['task']} {p['method']}", (xi, yi), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
        if hollow.any():
            ax.legend(fontsize=6)
        hi = np.where(np.isfinite(hi), hi, y)
        vals = np.concatenate([x, lo, hi])
        vals = vals[vals > 0]
        span = vals.size and vals.max() / vals.min() > 10
        ends = [min(x.min(), lo.min()), max(x.max(), hi.max())]
        ax.plot(ends, ends, color="gray", ls="--", lw=1)
        if span:
            ax.set_xscale("log")
            ax.set_yscale("log")
            _plain_ticks(ax, "x")
            _plain_ticks(ax, "y")
        ax.set_xlabel(f"measured {q}", fontsize=8)
        ax.set_ylabel(f"predicted ({100 * analysis.get('level', 0.9):.0f}% interval)", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Predicted vs measured (held-out rung and backtests)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pu_band(info: Mapping[str, Any], level: float, path: pathlib.Path, title: str
            ) -> pathlib.Path:
    """Dataset PU vs N on log axes: measured points with their exact intervals as error
    bars (fitted rungs filled, held-out hollow), each fit's predicted band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    band = info["band"]
    for (label, b), col in zip(((k, v) for k, v in band.items() if k != "N"),
                               ("C1", "C2", "C3")):  # dataset, instance, two-circuit
        ax.plot(band["N"], b["point"], color=col, lw=1.2, label=f"{label} fit")
        ax.fill_between(band["N"], np.maximum(b["low"], 1e-12), b["high"], color=col,
                        alpha=0.2, label=f"{label} {100 * level:.0f}% interval")
    for i, r in enumerate(info["per_rung"]):
        iv = r.get("interval")
        if r["pu"] <= 0 or iv is None:
            continue
        fitted = i < info.get("fitted_rungs", len(info["per_rung"]))
        ax.errorbar([r["N"]], [r["pu"]], yerr=[[r["pu"] - max(iv[0], 1e-12)],
                                                [iv[1] - r["pu"]]],
                    fmt="o", color="C0", mfc="C0" if fitted else "white", capsize=3,
                    label=("measured (exact intervals)" if i == 0 else None))
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_ticks(ax, "x")
    _plain_ticks(ax, "y")
    ax.set_xlabel("non-embedding parameters N")
    ax.set_ylabel("dataset PU")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_figures(analysis: Mapping[str, Any], outdir: str | pathlib.Path) -> dict[str, str]:
    """Writes every figure of the report; returns name -> file name (relative to outdir)."""
    outdir = pathlib.Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}

    def keep(name: str, path: pathlib.Path) -> None:
        written[name] = path.name

    keep("loss_vs_compute", loss_vs_compute(analysis, outdir / "loss_vs_compute.png"))
    checkpoints = analysis["checkpoints"]
    for task, info in analysis["tasks"].items():
        safe = task.replace("/", "_").replace(":", "_")
        if info["kind"] == "multiple_choice":
            pts = [c for c in checkpoints if c["validation_loss"] is not None
                   and c.get(f"{task}/accuracy") is not None]
            if len(pts) < 2:
                continue
            loss = [c["validation_loss"] for c in pts]
            groups = [f"N={c['N']:,}" for c in pts]
            for metric, label in (("accuracy", "accuracy"),
                                  ("correct_choice_prob", "CorrectChoiceProb")):
                keep(f"{task}/{metric}", F.plot_performance_vs_loss(
                    loss, [c[f"{task}/{metric}"] for c in pts],
                    outdir / f"perf_vs_loss_{safe}_{metric}.png",
                    random_baseline=info.get("random_baseline"), groups=groups,
                    title=f"{task}: {label} vs validation loss", ylabel=label))
        elif info["kind"] == "passuntil" and info.get("per_rung"):
            per_rung = info["per_rung"]
            held = analysis["held_out"]
            N = np.array([r["N"] for r in per_rung], float)
            pu = np.array([r["pu"] for r in per_rung], float)
            fits = {}
            for label, key in (("dataset-level fit", "dataset"),
                               ("instance-level fit", "instance")):
                f = info.get("_fits", {}).get(key)
                if f is not None:
                    fits[label] = f
            target = (N[-1], pu[-1]) if 0 < pu[-1] < 1 else None
            keep(f"{task}/pu_scaling", F.plot_pu_scaling(
                N[:-held], pu[:-held], outdir / f"pu_scaling_{safe}.png", fits=fits,
                held_out=target, title=f"{task}: log(-log PU) vs log N"))
            if info.get("band"):
                keep(f"{task}/pu_band", pu_band(info, analysis.get("level", 0.9),
                                                 outdir / f"pu_band_{safe}.png",
                                                 f"{task}: PU vs N, predicted band"))
            pts = [c for c in checkpoints if c["validation_loss"] is not None
                   and c.get(f"{task}/passuntil") is not None]
            if len(pts) >= 2:
                keep(f"{task}/pu_vs_loss", F.plot_performance_vs_loss(
                    [c["validation_loss"] for c in pts], [c[f"{task}/passuntil"] for c in pts],
                    outdir / f"perf_vs_loss_{safe}_passuntil.png",
                    groups=[f"N={c['N']:,}" for c in pts], random_baseline=0.0,
                    title=f"{task}: PassUntil PU vs validation loss", ylabel="PU"))
    panels = prediction_panels(analysis, outdir / "prediction_vs_truth.png")
    if panels is not None:
        keep("prediction_vs_truth", panels)
    return written
