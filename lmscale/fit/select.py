"""Choosing the loss law by backtest: leave the largest rung(s) out, predict, compare.

Stage: fit. Consumes a ladder (N, D, loss per run); produces a `Choice`: the candidate law
with the smallest backtest error and every candidate's backtest error.

Candidate laws (issue 13, and issue 14 for the pure power laws):
  "power"         L(N) = (N0 / N)^alpha: 2 parameters, least squares on log L (a line in
                  log-log), no bound to hit.
  "power_compute" L(C) = lambda C^-eta, C = 6 N D, the same way.
  "kaplan"        L(N) = L_inf + (N0 / N)^alpha, L_inf free.
  "kaplan_floor"  the same with L_inf >= floor (default: half the smallest measured
                  loss), fitted by bounded least squares: a ladder too short to show
                  curvature otherwise drives L_inf to 0.
  "compute"       L(C) = E + lambda C^-eta, C = 6 N D.
With `drop_smallest=(0, 1)` each law is also tried without the ladder's smallest size
(named e.g. "power w/o smallest"), where the fits still have enough sizes: the smallest
rung of a short ladder can sit off the trend of the others (the default study's 2-layer
w32, still forming its copying circuit). Off by default (`DROP_SMALLEST`): on a 4-size
ladder that choice rests on one backtest point, and on the default study it chose
wrongly as often as rightly (docs/quickstart.md, "Design probes for the loss goal").
A candidate is scored by the mean relative error of its predictions of each of the
`num_held_out` largest rungs, each fitted on the rungs below it (less the dropped ones).
Scores within `TIE` of the best are ties, broken towards fewer parameters, then fewer
dropped sizes: a floor that sits at its bound (E = 0) draws the same curve as the pure
power law, and the 2-parameter law is the honest report of it.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.optimize

from lmscale.fit import _checks, fitters, laws

CANDIDATES = ("power", "power_compute", "kaplan", "kaplan_floor", "compute")
NUM_PARAMS = dict(power=2, power_compute=2, kaplan=3, kaplan_floor=3, compute=3)
DROP_SMALLEST = (0,)   # (0, 1) also tries each law without the smallest size
TIE = 1e-4    # backtest errors closer than 0.01% are not evidence for either law


@dataclasses.dataclass
class Choice:
    """The chosen law.

    Attributes:
      name: the winning candidate (law, and which sizes it leaves out).
      fit: the winner refitted on every rung it keeps.
      dropped: the sizes N the winner leaves out of its fit (the smallest ones).
      backtest_error: candidate -> mean relative error of its held-out predictions
        (inf where its fits failed; the failure messages are in `failures`).
      failures: candidate -> messages of fits that raised.
    """
    name: str
    fit: fitters.Fit
    backtest_error: dict[str, float]
    failures: dict[str, list[str]]
    dropped: tuple[float, ...] = ()


def fit_power(N, D, loss, variable: str = "N") -> fitters.Fit:
    """A pure power law, least squares on log L: L(N) = (N0 / N)^alpha (variable "N",
    law "power") or L(C) = lambda C^-eta, C = 6 N D (variable "C", law "power_compute").

    Two parameters and no bound: what a ladder on a straight log-log line determines.
    Flagged unreliable when the exponent is <= 0 or there are only 2 sizes.
    """
    N = _checks.as_1d(N, "N", positive=True)
    D = _checks.as_1d(D, "D", positive=True) if D is not None else np.ones_like(N)
    loss = _checks.as_1d(loss, "loss", positive=True)
    _checks.same_length(N=N, D=D, loss=loss)
    if variable not in ("N", "C"):
        raise ValueError(f"fit_power: variable={variable!r}; allowed: ['C', 'N']")
    x = N if variable == "N" else 6.0 * N * D
    if np.unique(x).size < 2:
        raise ValueError(f"fit_power: {np.unique(x).size} distinct {variable}; need 2")
    lx, ly = np.log(x), np.log(loss)
    slope, icpt = np.polyfit(lx - lx.mean(), ly, 1)   # centred: well conditioned
    expo = -float(slope)
    resid = ly - (icpt + slope * (lx - lx.mean()))
    if variable == "N":
        law = "power"
        scale = np.exp(lx.mean() + icpt / expo) if expo != 0 else np.inf
        params = dict(N0=float(scale), alpha=expo)
        predict = lambda p, N, D=None, **_: laws.kaplan(N, 0.0, **p)  # L_inf = 0
    else:
        law = "power_compute"
        params = dict(lam=float(np.exp(icpt - slope * lx.mean())), eta=expo)
        predict = lambda p, N, D, **_: laws.compute_law(  # E = 0
            6.0 * np.asarray(N, float) * np.asarray(D, float), 0.0, **p)
    fit = fitters.Fit(law=law, method="ols_log", params=params,
                      objective=float(np.sum(resid ** 2)), num_points=N.size,
                      data=dict(N=N, D=D, loss=loss), details=dict(variable=variable),
                      _predict=predict,
                      _refit=lambda idx: fit_power(N[idx], D[idx], loss[idx], variable),
                      _refit_values=lambda y: fit_power(N, D, y, variable))
    if expo <= 0:
        fit._flag("a fitted exponent is <= 0: loss does not decrease with scale")
    if np.unique(x).size == 2:
        fit._flag("2 sizes for 2 parameters: no residual degrees of freedom")
    return fit


def fit_kaplan_floor(N, loss, floor: float) -> fitters.Fit:
    """L(N) = L_inf + A N^-alpha with L_inf >= floor, by bounded `least_squares`.

    Returns a `Fit` of law "kaplan" (parameters L_inf, N0, alpha), flagged unreliable when
    L_inf sits at the floor (the data do not determine it).
    """
    N = _checks.as_1d(N, "N", positive=True)
    loss = _checks.as_1d(loss, "loss", positive=True)
    _checks.same_length(N=N, loss=loss)
    _checks.enough_points(N.size, 3, "fit_kaplan_floor")
    x = np.log(N / np.exp(np.mean(np.log(N))))   # centred log N: A is well scaled

    def resid(p):
        return p[0] + np.exp(p[1] - p[2] * x) - loss
    hi0 = float(loss.min())
    start = np.array([max(floor, 0.5 * hi0), np.log(max(loss.max() - 0.5 * hi0, 1e-6)), 0.3])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = scipy.optimize.least_squares(resid, start, bounds=([floor, -np.inf, 1e-4],
                                                                  [hi0, np.inf, 5.0]))
    L_inf, logA, alpha = res.x
    n_mid = np.exp(np.mean(np.log(N)))
    params = dict(L_inf=float(L_inf), N0=float(n_mid * np.exp(logA / alpha)), alpha=float(alpha))
    fit = fitters.Fit(law="kaplan", method="least_squares_bounded", params=params,
                      objective=float(np.sum(res.fun ** 2)), num_points=N.size,
                      data=dict(N=N, D=np.ones_like(N), loss=loss),
                      details=dict(floor=floor, converged=bool(res.success)),
                      _predict=lambda p, N, D=None, **_: laws.kaplan(N, **p),
                      _refit_values=lambda y: fit_kaplan_floor(N, y, floor))
    if L_inf <= floor * (1 + 1e-6):
        fit._flag(f"L_inf = {L_inf:.4g} is at its floor {floor:.4g}")
    if N.size == 3:
        fit._flag("3 points for 3 parameters: no residual degrees of freedom")
    return fit


def _fit(name, N, D, loss, floor):
    if name == "power":
        return fit_power(N, D, loss, "N")
    if name == "power_compute":
        return fit_power(N, D, loss, "C")
    if name == "kaplan":
        return fitters.fit_loss_law(N, None, loss, form="kaplan")
    if name == "kaplan_floor":
        return fit_kaplan_floor(N, loss, floor)
    if name == "compute":
        return fitters.fit_loss_law(N, D, loss, form="compute")
    raise ValueError(f"candidate {name!r} is not a loss law; allowed: {list(CANDIDATES)}")


def candidate_name(law: str, drop: int) -> str:
    """The candidate's name: the law, and how many of the smallest sizes it leaves out."""
    if drop == 0:
        return law
    return f"{law} w/o smallest" if drop == 1 else f"{law} w/o {drop} smallest"


def choose_loss_law(N, D, loss, candidates=CANDIDATES, num_held_out: int = 2,
                    floor: float | None = None, drop_smallest=DROP_SMALLEST) -> Choice:
    """Chooses the loss law (and its first fitted size) by leave-largest-out backtest.

    Args:
      N, D, loss: [n] runs (several runs of one N are seeds).
      candidates: law names from `CANDIDATES`.
      num_held_out: how many of the largest distinct sizes are each predicted from the
        sizes below them.
      floor: L_inf floor of "kaplan_floor"; default half the smallest measured loss.
      drop_smallest: numbers of smallest sizes each law is also tried without; a law
        leaving d sizes out is a candidate only where each backtest fit keeps at least as
        many sizes as the law has parameters and its final fit keeps one more (so its
        noise, hence its interval, can be estimated).
    Returns:
      A `Choice`.
    Raises:
      ValueError: fewer than num_held_out + 3 distinct sizes.
    """
    N = _checks.as_1d(N, "N", positive=True)
    D = _checks.as_1d(D, "D", positive=True)
    loss = _checks.as_1d(loss, "loss", positive=True)
    _checks.same_length(N=N, D=D, loss=loss)
    sizes = np.unique(N)
    if sizes.size < num_held_out + 3:
        raise ValueError(f"choose_loss_law: {sizes.size} distinct sizes cannot backtest "
                         f"{num_held_out} held-out rungs; need {num_held_out + 3}")
    floor = 0.5 * float(loss.min()) if floor is None else float(floor)
    errors, failures, rank = {}, {}, {}
    for drop in drop_smallest:
        first = sizes[drop] if drop < sizes.size else np.inf
        for law in candidates:
            p = NUM_PARAMS.get(law, 0)
            if drop and (sizes.size - num_held_out - drop < p
                         or sizes.size - drop < p + 1):
                continue
            name = candidate_name(law, drop)
            rank[name] = (p, drop, law, first)
            errs, failures[name] = [], []
            for size in sizes[-num_held_out:]:
                below, at = (N < size) & (N >= first), N == size
                try:
                    f = _fit(law, N[below], D[below], loss[below], floor)
                    pred = f.predict(N=N[at], D=D[at])
                    err = float(np.mean(np.abs(pred - loss[at]) / loss[at]))
                    if not np.isfinite(err):
                        raise ValueError(f"non-finite prediction at N={size:g} from "
                                         f"{int(np.unique(N[below]).size)} sizes")
                    errs.append(err)
                except (ValueError, RuntimeError) as e:
                    failures[name].append(f"{type(e).__name__}: {e}")
            errors[name] = float(np.mean(errs)) if len(errs) == num_held_out else np.inf
    if not errors:
        raise ValueError(f"choose_loss_law: no candidate among {list(candidates)}")
    low = min(errors.values())
    if not np.isfinite(low):
        raise ValueError(f"choose_loss_law: every candidate failed: {failures}")
    best = min((k for k, v in errors.items() if v <= low + TIE), key=lambda k: rank[k][:2])
    _, drop, law, first = rank[best]
    keep = N >= first
    return Choice(name=best, fit=_fit(law, N[keep], D[keep], loss[keep], floor),
                  backtest_error=errors, failures=failures,
                  dropped=tuple(float(v) for v in sizes[:drop]))
