"""Choosing the loss law by backtest: leave the largest rung(s) out, predict, compare.

Stage: fit. Consumes a ladder (N, D, loss per run); produces a `Choice`: the candidate law
with the smallest backtest error and every candidate's backtest error.

Candidates (issue 13):
  "kaplan"        L(N) = L_inf + (N0 / N)^alpha, L_inf free.
  "kaplan_floor"  the same with L_inf >= floor (default: half the smallest measured
                  loss), fitted by bounded least squares: a ladder too short to show
                  curvature otherwise drives L_inf to 0.
  "compute"       L(C) = E + lambda C^-eta, C = 6 N D.
A candidate is scored by the mean relative error of its predictions of each of the
`num_held_out` largest rungs, each fitted on the rungs below it.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import scipy.optimize

from lmscale.fit import _checks, fitters, laws

CANDIDATES = ("kaplan", "kaplan_floor", "compute")


@dataclasses.dataclass
class Choice:
    """The chosen law.

    Attributes:
      name: the winning candidate.
      fit: the winner refitted on every rung.
      backtest_error: candidate -> mean relative error of its held-out predictions
        (inf where its fits failed; the failure messages are in `failures`).
      failures: candidate -> messages of fits that raised.
    """
    name: str
    fit: fitters.Fit
    backtest_error: dict[str, float]
    failures: dict[str, list[str]]


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
    if name == "kaplan":
        return fitters.fit_loss_law(N, None, loss, form="kaplan")
    if name == "kaplan_floor":
        return fit_kaplan_floor(N, loss, floor)
    if name == "compute":
        return fitters.fit_loss_law(N, D, loss, form="compute")
    raise ValueError(f"candidate {name!r} is not a loss law; allowed: {list(CANDIDATES)}")


def choose_loss_law(N, D, loss, candidates=CANDIDATES, num_held_out: int = 2,
                    floor: float | None = None) -> Choice:
    """Chooses the loss law by leave-largest-out backtest.

    Args:
      N, D, loss: [n] runs (several runs of one N are seeds).
      candidates: names from `CANDIDATES`.
      num_held_out: how many of the largest distinct sizes are each predicted from the
        sizes below them.
      floor: L_inf floor of "kaplan_floor"; default half the smallest measured loss.
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
    errors, failures = {}, {}
    for name in candidates:
        errs, failures[name] = [], []
        for size in sizes[-num_held_out:]:
            below, at = N < size, N == size
            try:
                f = _fit(name, N[below], D[below], loss[below], floor)
                pred = f.predict(N=N[at], D=D[at])
                err = float(np.mean(np.abs(pred - loss[at]) / loss[at]))
                if not np.isfinite(err):
                    raise ValueError(f"non-finite prediction at N={size:g} from "
                                     f"{int(np.unique(N[below]).size)} sizes")
                errs.append(err)
            except (ValueError, RuntimeError) as e:
                failures[name].append(f"{type(e).__name__}: {e}")
        errors[name] = float(np.mean(errs)) if len(errs) == num_held_out else np.inf
    best = min(errors, key=errors.get)
    if not np.isfinite(errors[best]):
        raise ValueError(f"choose_loss_law: every candidate failed: {failures}")
    return Choice(name=best, fit=_fit(best, N, D, loss, floor), backtest_error=errors,
                  failures=failures)
