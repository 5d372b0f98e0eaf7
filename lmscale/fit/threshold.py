"""Loss-threshold emergence (Du et al. 2024, "Understanding Emergent Abilities of
Language Models from the Loss Perspective").

Stage: fit. Consumes pre-training loss L [n] and task performance [n] across model sizes
and checkpoints; produces the threshold eta, the size threshold and correlations.

Definition (Du et al. eq. 3): the normalised performance (random guess = 0) is f(L) for
L < eta and 0 otherwise, with f decreasing. Here f(L) = s (eta - L)^p ("linear": p = 1;
"power": p fitted). With Kaplan's L(N) = L_inf + (N0 / N)^alpha_N (eq. 4) the ability
appears at N >= N0 (eta - L_inf)^(-1 / alpha_N) (eq. 5).
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.optimize
import scipy.stats

from lmscale.fit import _checks
from lmscale.fit import fitters


def normalize_performance(perf, random_baseline, perfect: float = 1.0) -> np.ndarray:
    """(perf - random) / (perfect - random): 0 at random guessing, 1 at perfect.

    For a lower-is-better metric (Brier score) pass perfect=0.0; the sign then works
    out the same way (0 at random, 1 at perfect).
    """
    perf = _checks.as_1d(perf, "perf")
    rb = np.broadcast_to(np.asarray(random_baseline, float), perf.shape)
    if np.any(~np.isfinite(rb)):
        raise ValueError("random_baseline must be finite")
    if np.any(rb == perfect):
        raise ValueError(f"random_baseline equals perfect={perfect}: nothing to normalise")
    return (perf - rb) / (perfect - rb)


def threshold_curve(L, eta, s, p=1.0):
    """Du et al. eq. 3 with f(L) = s (eta - L)^p below eta, 0 above."""
    gap = np.maximum(eta - np.asarray(L, float), 0.0)
    return s * gap ** p


def fit_loss_threshold(loss, perf, f: str = "linear") -> fitters.Fit:
    """Fits the loss threshold eta and the decreasing f(L) below it (Du et al. eq. 3).

    Least squares on normalised performance. eta is profiled over the observed losses
    (for each candidate, s, and p for "power", have a closed form or a small curve_fit),
    then all parameters are polished together.

    Args:
      loss: [n] pre-training loss (nats per token).
      perf: [n] normalised performance (random = 0; see `normalize_performance`).
      f: "linear" (p = 1) or "power" (p fitted, > 0).
    Returns:
      A `Fit` (law "loss_threshold") with params eta, s (and p); `.predict(loss=...)`.
      Flagged unreliable when no point lies above eta (threshold not bracketed) or fewer
      than 2 points lie below it.
    Raises:
      ValueError: bad inputs or fewer than 4 points.
    """
    loss = _checks.as_1d(loss, "loss", positive=True)
    perf = _checks.as_1d(perf, "perf")
    _checks.same_length(loss=loss, perf=perf)
    if f not in ("linear", "power"):
        raise ValueError(f"f={f!r}; allowed: 'linear', 'power'")
    _checks.enough_points(loss.size, 4, "fit_loss_threshold")

    def model(L, eta, s, p=1.0):
        return threshold_curve(L, eta, s, abs(p))

    # Profile: candidate eta between consecutive sorted losses and just beyond the ends.
    srt = np.unique(loss)
    cands = np.concatenate([(srt[:-1] + srt[1:]) / 2, [srt[-1] + 0.5 * np.ptp(srt)]])
    best = None
    for eta in cands:
        g = np.maximum(eta - loss, 0.0)
        if not np.any(g > 0):
            continue
        s = float(g @ perf / (g @ g))
        ssr = float(np.sum((s * g - perf) ** 2))
        if best is None or ssr < best[1]:
            best = ((eta, s) if f == "linear" else (eta, s, 1.0), ssr)
    if best is None:  # every loss equal: no candidate threshold lies above any point
        raise ValueError(f"fit_loss_threshold: the {loss.size} losses span no range "
                         f"({srt[0]:g}); the threshold is not identified")
    p0 = best[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popt, _ = scipy.optimize.curve_fit(model, loss, perf, p0=p0, maxfev=20000)
    except RuntimeError:
        popt = np.asarray(p0)
    ssr = float(np.sum((model(loss, *popt) - perf) ** 2))
    if ssr > best[1]:
        popt, ssr = np.asarray(p0), best[1]
    names = ("eta", "s") if f == "linear" else ("eta", "s", "p")
    params = dict(zip(names, map(float, popt)))
    if "p" in params:
        params["p"] = abs(params["p"])
    fit = fitters.Fit(law="loss_threshold", method="curve_fit", params=params, objective=ssr,
                      num_points=loss.size, data=dict(loss=loss, perf=perf),
                      _predict=lambda p, loss: threshold_curve(loss, p["eta"], p["s"],
                                                               p.get("p", 1.0)),
                      _refit=lambda idx: fit_loss_threshold(loss[idx], perf[idx], f))
    above = int(np.sum(loss > params["eta"]))
    if above == 0:
        fit._flag("no point lies above eta: the threshold is not bracketed by the data")
    if loss.size - above < 2:
        fit._flag("fewer than 2 points lie below eta: f(L) is not determined")
    if params["s"] <= 0:
        fit._flag("performance does not rise as loss falls below eta (s <= 0)")
    return fit


def size_threshold(eta: float, L_inf: float, N0: float, alpha_N: float) -> float:
    """N at which L(N) = L_inf + (N0/N)^alpha_N reaches eta: N0 (eta - L_inf)^(-1/alpha_N).

    Raises:
      ValueError: eta <= L_inf (the loss never reaches eta) or non-positive N0/alpha_N.
    """
    if eta <= L_inf:
        raise ValueError(f"eta={eta} <= L_inf={L_inf}: the loss law never reaches the "
                         "threshold")
    if N0 <= 0 or alpha_N <= 0:
        raise ValueError(f"N0={N0} and alpha_N={alpha_N} must be > 0")
    return float(N0 * (eta - L_inf) ** (-1.0 / alpha_N))


def correlations(loss, perf) -> dict[str, tuple[float, float]]:
    """Spearman and Pearson correlation of loss and performance, each (statistic, p)."""
    loss = _checks.as_1d(loss, "loss")
    perf = _checks.as_1d(perf, "perf")
    _checks.same_length(loss=loss, perf=perf)
    _checks.enough_points(loss.size, 3, "correlations")
    sp = scipy.stats.spearmanr(loss, perf)
    pe = scipy.stats.pearsonr(loss, perf)
    return dict(spearman=(float(sp.statistic), float(sp.pvalue)),
                pearson=(float(pe.statistic), float(pe.pvalue)))
