"""Growth classes of a task's scaling curve, and the two-circuit fit (Hu et al. 2024).

Stage: fit. Consumes model sizes N [m] and dataset PassUntil scores PU [m]; produces a
class with a p-value, or a fitted two-circuit curve.

Definition 1 of Hu et al.: with F(N) = log(-log PU(N)),
  - F linear in log N: scaling-law growth ("linear");
  - F convex in log N: sub-scaling growth ("convex"; e.g. multi-step reasoning, Thm 2);
  - F concave in log N: super-scaling growth, "emergent" ("concave"; e.g. competing
    circuits, Thm 3).
The class is decided by a test, not by eye: F is regressed on (1, x, x^2) with x the
centred log N, and the curvature coefficient is t-tested against 0 (n - 3 degrees of
freedom, two-sided). Positive significant curvature is convex, negative is concave.
"""
from __future__ import annotations

import dataclasses
import itertools
import warnings

import numpy as np
import scipy.optimize
import scipy.stats

from lmscale.fit import _checks
from lmscale.fit import fitters
from lmscale.fit import laws

CLASS_NAMES = {"linear": "scaling-law growth", "convex": "sub-scaling growth",
               "concave": "super-scaling growth (emergent)"}


@dataclasses.dataclass(frozen=True)
class Growth:
    """Result of `classify_growth`.

    Attributes:
      cls: "linear", "convex" or "concave".
      p_value: two-sided p-value of the curvature t-test (H0: F is linear in log N).
      curvature: fitted coefficient of (log N)^2 in F.
      stderr: its standard error.
      slope: fitted linear coefficient at the centre (-alpha of the task law).
      level: the significance level used.
    """
    cls: str
    p_value: float
    curvature: float
    stderr: float
    slope: float
    level: float

    @property
    def description(self) -> str:
        return CLASS_NAMES[self.cls]


def _F_of(N, pu):
    N = _checks.as_1d(N, "N", positive=True)
    pu = _checks.as_1d(pu, "pu", unit_interval="open")
    _checks.same_length(N=N, pu=pu)
    return np.log(N), np.log(-np.log(pu))


def classify_growth(N, pu, level: float = 0.05, sigma=None) -> Growth:
    """Classifies F = log(-log PU) vs log N as linear, convex or concave by a t-test.

    Args:
      N: [m] model sizes (m >= 4).
      pu: [m] dataset PU per model, each in (0, 1).
      level: significance level of the curvature test.
      sigma: optional [m] standard errors of F (weighted least squares).
    Returns:
      A `Growth`.
    Raises:
      ValueError: fewer than 4 models, PU of 0 or 1, NaN, non-positive N.
    """
    x, F = _F_of(N, pu)
    if x.size < 4:
        raise ValueError(f"classify_growth: {x.size} models; the curvature test needs >= 4")
    if not 0 < level < 1:
        raise ValueError(f"level={level} must lie in (0, 1)")
    w = np.ones_like(x) if sigma is None else 1.0 / _checks.as_1d(sigma, "sigma",
                                                                   positive=True) ** 2
    xc = x - np.average(x, weights=w)
    design = np.stack([np.ones_like(xc), xc, xc ** 2], axis=1)
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(design * sw[:, None], F * sw, rcond=None)
    resid = (F - design @ coef) * sw
    dof = x.size - 3
    s2 = resid @ resid / dof
    if sigma is not None:
        s2 = max(s2, 1.0)  # known errors: do not let a lucky fit shrink them
    cov = s2 * np.linalg.inv((design * w[:, None]).T @ design)
    se = float(np.sqrt(cov[2, 2]))
    if se == 0:
        p = 0.0 if coef[2] != 0 else 1.0
    else:
        p = float(2 * scipy.stats.t.sf(abs(coef[2]) / se, dof))
    cls = "linear" if p >= level else ("convex" if coef[2] > 0 else "concave")
    return Growth(cls=cls, p_value=p, curvature=float(coef[2]), stderr=se,
                  slope=float(coef[1]), level=level)


def fit_two_circuit(N, pu) -> fitters.Fit:
    """Fits Hu et al.'s soft-min of two circuits to F = log(-log PU) (section 6).

    F(N) = -(w_1 g_1 + w_2 g_2), g_i = alpha_i log N - log c_i, w = softmax(g); fitted by
    `curve_fit` from a grid of starts, keeping the smallest SSR in F.

    Args:
      N: [m] model sizes (m >= 5).
      pu: [m] dataset PU per model, in (0, 1).
    Returns:
      A `Fit` (law "two_circuit") with params log_c1, alpha1, log_c2, alpha2;
      `.predict(N=...)` gives PU.
    """
    x, F = _F_of(N, pu)
    _checks.enough_points(x.size, 5, "fit_two_circuit (4 parameters plus one check)")
    lin = scipy.stats.linregress(x, F)
    best = None
    # Starts: one circuit on the plain scaling-law line, the other steeper and later.
    slope = max(-lin.slope, 1e-3)
    for a1, a2, q in itertools.product((0.5, 1.0), (1.5, 3.0, 6.0), (0.3, 0.6, 0.9)):
        # Circuit 1 near the plain line; circuit 2 steeper, crossing it at quantile q.
        x_cross = np.quantile(x, q)
        log_c1 = lin.intercept + (1 - a1) * slope * x_cross
        F_cross = log_c1 - a1 * slope * x_cross
        p0 = (log_c1, a1 * slope, F_cross + a2 * slope * x_cross, a2 * slope)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                popt, _ = scipy.optimize.curve_fit(laws.two_circuit_F, x, F, p0=p0,
                                                   maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        ssr = float(np.sum((laws.two_circuit_F(x, *popt) - F) ** 2))
        if np.isfinite(ssr) and (best is None or ssr < best[1]):
            best = (popt, ssr)
    if best is None:
        raise RuntimeError("fit_two_circuit: curve_fit failed from every start")
    popt, ssr = best
    names = ("log_c1", "alpha1", "log_c2", "alpha2")

    def predict(p, N):
        return np.exp(-np.exp(laws.two_circuit_F(np.log(np.asarray(N, float)),
                                                 *(p[k] for k in names))))
    Nd, pud = np.exp(x), np.exp(-np.exp(F))
    fit = fitters.Fit(law="two_circuit", method="curve_fit",
                      params=dict(zip(names, map(float, popt))), objective=ssr,
                      num_points=x.size, data=dict(N=Nd, pu=pud), _predict=predict,
                      _refit=lambda idx: fit_two_circuit(Nd[idx], pud[idx]))
    if x.size == 5:
        fit._flag("5 points for 4 parameters: one residual degree of freedom")
    return fit
