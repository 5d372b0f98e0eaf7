"""Figures for fits: PNG files written to a given path.

Stage: fit. matplotlib is imported inside each function (with the non-interactive Agg
backend), so `import lmscale.fit` stays numpy + scipy only. Every function returns the
path it wrote.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np


def _pyplot():
    import matplotlib  # local: keeps matplotlib out of `import lmscale.fit`
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    fig.clf()
    _pyplot().close(fig)
    return path


def plot_loss_vs_compute(N, D, loss, path: str | os.PathLike, fit=None, *,
                         held_out=None, title: str = "") -> pathlib.Path:
    """Loss vs compute C = 6ND, one colour per token multiplier M = D/N, with the fit.

    Args:
      N, D, loss: [n] runs.
      path: PNG path to write.
      fit: optional loss-law `Fit`; drawn per M across the plotted compute range.
      held_out: optional [n] bool; those runs are drawn hollow (targets).
    """
    plt = _pyplot()
    N, D, loss = (np.asarray(a, float) for a in (N, D, loss))
    C, M = 6.0 * N * D, D / N
    held = np.zeros(N.size, bool) if held_out is None else np.asarray(held_out, bool)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    Ms = np.unique(np.round(M, 6))
    colors = plt.cm.viridis(np.linspace(0, 1, max(len(Ms), 2)))
    grid = np.geomspace(C.min() / 2, C.max() * 2, 200)
    for m, col in zip(Ms, colors):
        sel = np.isclose(M, m)
        ax.scatter(C[sel & ~held], loss[sel & ~held], color=col, label=f"M={m:g}", s=18)
        ax.scatter(C[sel & held], loss[sel & held], facecolors="none", edgecolors=col, s=40)
        if fit is not None:
            ax.plot(grid, fit.predict(C=grid, M=np.full_like(grid, m)), color=col, lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("compute C = 6ND (FLOPs)")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title or "loss vs compute")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_performance_vs_loss(loss, perf, path: str | os.PathLike, *, random_baseline=None,
                             fit=None, groups=None, title: str = "",
                             ylabel: str = "performance") -> pathlib.Path:
    """Performance vs loss (x decreasing to the right), random baseline dashed.

    Args:
      loss, perf: [n] per model or checkpoint.
      random_baseline: scalar drawn as a black dashed line (Du et al. Figures 1-2).
      fit: optional `Fit` with `.predict(loss=...)` (error law or loss threshold).
      groups: optional [n] labels (e.g. model size) coloured separately.
    """
    plt = _pyplot()
    loss, perf = np.asarray(loss, float), np.asarray(perf, float)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    labels = np.asarray(groups) if groups is not None else np.full(loss.size, "")
    for g in dict.fromkeys(labels.tolist()):
        sel = labels == g
        ax.scatter(loss[sel], perf[sel], s=16, label=str(g) if g != "" else None)
    if fit is not None:
        grid = np.linspace(loss.min(), loss.max(), 200)
        ax.plot(grid, fit.predict(loss=grid), color="C3", lw=1.2, label="fit")
    if random_baseline is not None:
        ax.axhline(random_baseline, color="black", ls="--", lw=1, label="random")
    ax.invert_xaxis()
    ax.set_xlabel("loss (nats/token)")
    ax.set_ylabel(ylabel)
    ax.set_title(title or "performance vs loss")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_pu_scaling(N, pu, path: str | os.PathLike, fits=None, *, held_out=None,
                    title: str = "") -> pathlib.Path:
    """log(-log PU) vs log N with fitted curves and a held-out point (Hu et al. Fig. 3).

    Args:
      N, pu: [m] fitted models' sizes and dataset PU (0 < PU < 1 drawn).
      fits: optional dict label -> object with `.predict(N=...)` returning PU (dataset
        fit, two-circuit fit) or `.predict(N)` (instance-level fit).
      held_out: optional (N, PU) of the held-out model, drawn as a star.
    """
    plt = _pyplot()
    N, pu = np.asarray(N, float), np.asarray(pu, float)
    ok = (pu > 0) & (pu < 1)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(np.log(N[ok]), np.log(-np.log(pu[ok])), color="C0", label="measured")
    lo = N.min() / 1.5
    hi = max(N.max(), held_out[0] if held_out is not None else 0) * 1.5
    grid = np.geomspace(lo, hi, 200)
    for i, (label, fit) in enumerate((fits or {}).items()):
        try:
            y = fit.predict(N=grid)
        except TypeError:
            y = fit.predict(grid)
        with np.errstate(divide="ignore", invalid="ignore"):
            ax.plot(np.log(grid), np.log(-np.log(np.asarray(y, float))), lw=1.2,
                    color=f"C{i + 1}", label=label)
    if held_out is not None:
        ax.scatter([np.log(held_out[0])], [np.log(-np.log(held_out[1]))], marker="*",
                   s=140, color="C3", label="held out", zorder=5)
    ax.set_xlabel("log N")
    ax.set_ylabel("log(-log PU)")
    ax.set_title(title or "PassUntil scaling")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_prediction_vs_truth(pred, true, path: str | os.PathLike, *, labels=None,
                             title: str = "", quantity: str = "value") -> pathlib.Path:
    """Predicted vs measured with the y = x line; points annotated with relative error."""
    plt = _pyplot()
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(true, pred, color="C0")
    lo = min(pred.min(), true.min())
    hi = max(pred.max(), true.max())
    pad = 0.05 * (hi - lo or abs(hi) or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="gray", ls="--", lw=1)
    for i in range(pred.size):
        rel = abs(pred[i] - true[i]) / abs(true[i]) if true[i] else np.nan
        name = f"{labels[i]}: " if labels is not None else ""
        ax.annotate(f"{name}{100 * rel:.2f}%", (true[i], pred[i]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(f"measured {quantity}")
    ax.set_ylabel(f"predicted {quantity}")
    ax.set_title(title or "prediction vs truth")
    return _save(fig, path)
