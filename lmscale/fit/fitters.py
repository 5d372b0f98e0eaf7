"""Fitting loss and error laws: Levenberg-Marquardt and Huber/L-BFGS from grids of starts.

Stage: fit. Consumes (N, D, loss) or (loss, error) arrays; produces `Fit` objects with
`.params`, `.predict(...)`, `.reliable` and `.bootstrap(...)`.

Methods:
  "lm"     least squares on the raw loss with `scipy.optimize.curve_fit` (no bounds, so
           Levenberg-Marquardt), one run per start of a grid, keeping the start with the
           smallest sqrt(SSR / (n - 2)): Gadre et al. 2024's procedure (their repository's
           `curve_fit` loop; grid in ../shared/data/gadre2024/README.md).
  "huber"  sum over points of Huber_delta(log Lhat - log L), delta = 1e-3, with
           log Lhat = LSE_j(X_j theta) (Hoffmann et al. 2022 Appendix D.2; Epoch AI's
           replication, Besiroglu et al. 2024). Minimised from a grid of starts with an
           analytic gradient: a batched first pass (Gauss-Newton on the IRLS weights of
           the Huber loss, with Levenberg damping, all starts at once), then
           `scipy.optimize.minimize(method="L-BFGS-B")` polishing the best starts.

Defaults follow the paper behind each form: "overtrain" uses "lm" with Gadre et al.'s
4*4*2*4 grid, "chinchilla" uses "huber" with Epoch's 4,500-start grid.
"""
from __future__ import annotations

import dataclasses
import itertools
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import scipy.optimize
import scipy.special

from lmscale.fit import _checks
from lmscale.fit import laws

HUBER_DELTA = 1e-3

# Gadre et al.'s grid of starts, in their repository's parameterisation
# L = A_N N^b + B 6^(b/2) (M N)^b + E (../shared/data/gadre2024/README.md, step 3).
GADRE_GRID = dict(A_N=(1e2, 3e2, 1e3, 3e3), B=(1e2, 3e2, 1e3, 3e3), b=(-0.1, -0.3),
                  E=(0.0, 1.0, 2.0, 10.0))

# Epoch AI's grid for the Chinchilla Huber fit, over theta = (a, b, e, alpha, beta).
EPOCH_GRID = dict(a=tuple(range(0, 30, 5)), b=tuple(range(0, 30, 5)),
                  e=(-1.0, -0.5, 0.0, 0.5, 1.0), alpha=(0.0, 0.5, 1.0, 1.5, 2.0),
                  beta=(0.0, 0.5, 1.0, 1.5, 2.0))

# Huber grids for the other forms, over each form's theta (laws.FORMS[...].theta_names).
HUBER_GRIDS = {
    "chinchilla": EPOCH_GRID,
    "overtrain": dict(log_a=(0.0, 5.0, 10.0, 15.0), log_b=(0.0, 5.0, 10.0, 15.0),
                      log_E=(-1.0, 0.0, 1.0), eta=(0.05, 0.1, 0.2, 0.5)),
    "kaplan": dict(alpha_log_N0=(0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
                   log_L_inf=(-1.0, -0.5, 0.0, 0.5, 1.0), alpha=(0.05, 0.1, 0.3, 0.5, 1.0)),
    "compute": dict(log_lam=(0.0, 5.0, 10.0, 15.0, 20.0), log_E=(-1.0, -0.5, 0.0, 0.5, 1.0),
                    eta=(0.02, 0.05, 0.1, 0.2, 0.5)),
}


# Least-squares parameterisations (raw loss), one per form: (function of x = (N, D),
# names of its parameters, default grid, converter to the form's user parameters).
def _lm_overtrain(x, A_N, B, b, E):
    N, D = x
    M = D / N
    return A_N * N ** b + B * 6.0 ** (b / 2.0) * (M * N) ** b + E


def _lm_chinchilla(x, E, A, B, alpha, beta):
    N, D = x
    return E + A * N ** -alpha + B * D ** -beta


def _lm_kaplan(x, L_inf, A, alpha):
    N, _ = x
    return L_inf + A * N ** -alpha


def _lm_compute(x, E, lam, eta):
    N, D = x
    return E + lam * (6.0 * N * D) ** -eta


LM_MODELS: dict[str, tuple[Callable, dict, Callable[[Sequence[float]], dict]]] = {
    "overtrain": (_lm_overtrain, GADRE_GRID,
                  lambda p: dict(E=p[3], a=p[0] * 6.0 ** (-p[2] / 2.0), b=p[1], eta=-p[2] / 2.0)),
    "chinchilla": (_lm_chinchilla,
                   dict(E=(0.0, 1.0, 2.0), A=(1e2, 1e3, 1e4), B=(1e2, 1e3, 1e4),
                        alpha=(0.2, 0.5), beta=(0.2, 0.5)),
                   lambda p: dict(E=p[0], A=p[1], B=p[2], alpha=p[3], beta=p[4])),
    "kaplan": (_lm_kaplan,
               dict(L_inf=(0.0, 1.0, 2.0, 4.0), A=(1e1, 1e2, 1e3, 1e4),
                    alpha=(0.05, 0.1, 0.3, 0.5)),
               lambda p: dict(L_inf=p[0], N0=p[1] ** (1.0 / p[2]) if p[1] > 0 else np.nan,
                              alpha=p[2])),
    "compute": (_lm_compute,
                dict(E=(0.0, 1.0, 2.0, 4.0), lam=(1e1, 1e2, 1e3, 1e4),
                     eta=(0.02, 0.05, 0.1, 0.3)),
                lambda p: dict(E=p[0], lam=p[1], eta=p[2])),
}

_DEFAULT_METHOD = {"overtrain": "lm", "kaplan": "lm", "compute": "lm", "chinchilla": "huber"}


@dataclasses.dataclass
class Fit:
    """A fitted law.

    Attributes:
      law: the law's name ("chinchilla", "overtrain", "kaplan", "compute", "error", ...).
      method: "lm", "huber", "ols" or "curve_fit".
      params: user-facing parameters by name (e.g. Chinchilla E, A, B, alpha, beta).
      objective: the minimised objective at `params` (SSR for "lm", Huber sum for
        "huber").
      num_points: number of points fitted.
      reliable: False when the fit should not be trusted; `reason` says why.
      reason: empty when reliable.
      data: the fitted arrays by name (used by `bootstrap`).
      details: method-specific extras (best start, number of converged starts, ...).
    """
    law: str
    method: str
    params: dict[str, float]
    objective: float
    num_points: int
    reliable: bool = True
    reason: str = ""
    data: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)
    details: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    _predict: Callable[..., np.ndarray] | None = dataclasses.field(default=None, repr=False)
    _refit: Callable[[np.ndarray], "Fit"] | None = dataclasses.field(default=None, repr=False)
    _refit_values: Callable[[np.ndarray], "Fit"] | None = dataclasses.field(default=None,
                                                                            repr=False)

    def predict(self, **inputs) -> np.ndarray:
        """Evaluates the fitted law; inputs by name (N=, D=, C=, M=, loss=, ...)."""
        return self._predict(self.params, **inputs)

    def refit(self, indices: np.ndarray) -> "Fit":
        """Refits the same law and method on the points `indices` (bootstrap)."""
        return self._refit(np.asarray(indices))

    def refit_values(self, values: np.ndarray) -> "Fit":
        """Refits the same law at the same inputs to new observed `values` [n]."""
        return self._refit_values(np.asarray(values, float))

    def bootstrap(self, num_resamples: int = 200, seed: int = 0):
        """Resamples the fitted points with replacement and refits; see `bootstrap.py`."""
        from lmscale.fit import bootstrap  # local: bootstrap imports this module
        return bootstrap.bootstrap_fit(self, num_resamples=num_resamples, seed=seed)

    def prediction(self, level: float = 0.9, num_resamples: int = 200, seed: int = 0,
                   **inputs) -> list:
        """Predictive `Prediction`s (one per target) at `inputs`; see `bootstrap.predictive`.

        The interval carries the fitted parameters' uncertainty (a parametric bootstrap of
        the noisy units, refitted) and the noise of measuring the target itself.
        """
        from lmscale.fit import bootstrap  # local: bootstrap imports this module
        return bootstrap.predictive(self, level, num_resamples, seed, **inputs)

    def predict_interval(self, level: float = 0.9, num_resamples: int = 200, seed: int = 0,
                         **inputs) -> tuple[np.ndarray, np.ndarray]:
        """Central predictive interval ([n] low, [n] high) at `level`; see `prediction`."""
        preds = self.prediction(level, num_resamples, seed, **inputs)
        return (np.array([p.low for p in preds]), np.array([p.high for p in preds]))

    def _flag(self, reason: str) -> None:
        self.reliable = False
        self.reason = "; ".join(r for r in (self.reason, reason) if r)


def _grid(grid: Mapping[str, Sequence[float]], names: Sequence[str]) -> np.ndarray:
    missing = [n for n in names if n not in grid]
    if missing:
        raise ValueError(f"starts is missing parameters {missing}; it needs {list(names)}")
    return np.array(list(itertools.product(*(grid[n] for n in names))), dtype=float)


def _loss_inputs(form: laws.LossForm, N, D, loss):
    N = _checks.as_1d(N, "N", positive=True)
    loss = _checks.as_1d(loss, "loss", positive=True)
    if D is None:
        if form.needs_D:
            raise ValueError(f"form={form.name!r} needs D (training tokens)")
        D = np.ones_like(N)
    D = _checks.as_1d(D, "D", positive=True)
    _checks.same_length(N=N, D=D, loss=loss)
    return N, D, loss


def _resolve_ND(form: laws.LossForm, N=None, D=None, C=None, M=None):
    """Turns any sufficient pair of (N, D, C, M) into (N, D) arrays."""
    arr = {k: (None if v is None else np.asarray(v, float))
           for k, v in dict(N=N, D=D, C=C, M=M).items()}
    N, D, C, M = arr["N"], arr["D"], arr["C"], arr["M"]
    if N is None and C is not None and M is not None:
        N = np.sqrt(C / (6.0 * M))
    if D is None:
        if M is not None and N is not None:
            D = M * N
        elif C is not None and N is not None:
            D = C / (6.0 * N)
    if N is not None and D is None and not form.needs_D:
        D = np.ones_like(N)
    if form.name == "compute" and N is None and C is not None:
        N, D = np.ones_like(C), C / 6.0
    if N is None or D is None:
        raise ValueError(f"form={form.name!r}: give N and D, N and M, C and M, or C and N")
    return np.broadcast_arrays(N, D)


def fit_loss_law(N, D, loss, form: str = "chinchilla", method: str | None = None, *,
                 starts: Mapping[str, Sequence[float]] | None = None,
                 delta: float = HUBER_DELTA, maxfev: int = 10000,
                 num_polish: int = 8) -> Fit:
    """Fits a loss law to (N, D, loss) points.

    Args:
      N: [n] parameters per model (> 0).
      D: [n] training tokens per model (> 0); may be None for form="kaplan".
      loss: [n] loss in nats per token.
      form: "kaplan" L(N), "chinchilla" L(N, D), "overtrain" L(C, M) with C = 6ND,
        M = D/N, or "compute" L(C) (see `laws.py`).
      method: "lm" or "huber"; None picks the paper's method for the form ("huber" for
        "chinchilla", "lm" otherwise).
      starts: grid of starting values by parameter name. For "lm" the names are those
        of the least-squares parameterisation (`LM_MODELS[form][1]`; for "overtrain"
        Gadre et al.'s A_N, B, b, E); for "huber" the form's theta names
        (`laws.FORMS[form].theta_names`). Default: `LM_MODELS` / `HUBER_GRIDS`.
      delta: Huber threshold on log residuals ("huber" only).
      maxfev: `curve_fit` evaluation limit per start ("lm" only).
      num_polish: how many of the best batched starts L-BFGS-B polishes ("huber").

    Returns:
      A `Fit`; `.predict(N=..., D=...)` (or C and M, or N and M) returns [n] losses.

    Raises:
      ValueError: bad form/method, non-finite or non-positive inputs, length mismatch,
        or fewer points than parameters.
    """
    spec = laws.get_form(form)
    method = method or _DEFAULT_METHOD[form]
    if method not in ("lm", "huber"):
        raise ValueError(f"method={method!r} is not a fitting method; allowed: ['huber', 'lm']")
    N, D, loss = _loss_inputs(spec, N, D, loss)
    _checks.enough_points(len(N), len(spec.param_names), f"fit_loss_law(form={form!r})")
    kwargs = dict(starts=starts, delta=delta, maxfev=maxfev, num_polish=num_polish)
    if method == "lm":
        fit = _fit_lm(spec, N, D, loss, starts, maxfev)
    else:
        fit = _fit_huber(spec, N, D, loss, starts, delta, num_polish)
    fit.data = dict(N=N, D=D, loss=loss)
    fit._predict = lambda p, **inp: spec.predict(p, *_resolve_ND(spec, **inp))

    def refit(idx):
        # Bootstrap refits start from this fit's optimum only, as Epoch AI's bootstrap
        # does; a full grid per resample would multiply the cost by the grid size.
        if method == "lm":
            p = fit.details["lm_params"]
            start = {k: (v,) for k, v in p.items()}
        else:
            start = {k: (v,) for k, v in zip(spec.theta_names, fit.details["theta"])}
        return fit_loss_law(N[idx], D[idx], loss[idx], form, method,
                            **{**kwargs, "starts": start})
    fit._refit = refit
    fit._refit_values = lambda y: fit_loss_law(N, D, y, form, method,
                                               **{**kwargs, "starts": _own_start(fit, spec)})
    _sanity_flags(fit, spec)
    return fit


def _own_start(fit: Fit, spec: laws.LossForm) -> dict:
    if fit.method == "lm":
        return {k: (v,) for k, v in fit.details["lm_params"].items()}
    return {k: (v,) for k, v in zip(spec.theta_names, fit.details["theta"])}


def _sanity_flags(fit: Fit, spec: laws.LossForm) -> None:
    n, p = fit.num_points, len(spec.param_names)
    if n == p:
        fit._flag(f"{n} points for {p} parameters: no residual degrees of freedom")
    if len(np.unique(np.stack([fit.data["N"], fit.data["D"]]), axis=1).T) < p:
        fit._flag(f"fewer distinct (N, D) points than the {p} parameters")
    for name, value in fit.params.items():
        if not np.isfinite(value):
            fit._flag(f"parameter {name} = {value} is not finite")
    exps = [fit.params[k] for k in ("alpha", "beta", "eta") if k in fit.params]
    if any(e <= 0 for e in exps):
        fit._flag("a fitted exponent is <= 0: loss does not decrease with scale")
    floor = fit.params.get("L_inf", fit.params.get("E"))
    if floor is not None and floor < 1e-3 * float(np.min(fit.data["loss"])):
        neg = fit.details.get("unbounded_floor")
        why = "" if neg is None else f" (unbounded, the fit went to {neg:.3g})"
        fit._flag(f"irreducible loss {floor:.3g} is at its bound 0{why}: the law has no "
                  "floor and its extrapolation is not trustworthy")


# The irreducible-loss parameter of each least-squares parameterisation: bounded >= 0.
_LM_FLOOR = {"overtrain": "E", "chinchilla": "E", "kaplan": "L_inf", "compute": "E"}


def _fit_lm(spec, N, D, loss, starts, maxfev) -> Fit:
    """Gadre et al.'s unbounded Levenberg-Marquardt grid; where its best fit has a
    negative irreducible loss (a log-law: E = -1414, lambda = 1423, eta = 1.8e-4 on the
    default study's four rungs), the grid is refitted with that parameter bounded >= 0
    (`curve_fit`'s trust-region method) and the bounded optimum is kept."""
    _, default_grid, _ = LM_MODELS[spec.name]
    names = list(default_grid)
    grid = _grid(starts if starts is not None else default_grid, names)
    fit = _lm_grid(spec, N, D, loss, grid, names, maxfev, bounded=False)
    floor = _LM_FLOOR[spec.name]
    if fit.details["lm_params"][floor] < 0:
        unbounded = fit.details["lm_params"][floor]
        fit = _lm_grid(spec, N, D, loss, grid, names, maxfev, bounded=True)
        fit.details["unbounded_floor"] = unbounded
    return fit


def _lm_grid(spec, N, D, loss, grid, names, maxfev, bounded) -> Fit:
    func, _, convert = LM_MODELS[spec.name]
    lower = np.full(len(names), -np.inf)
    lower[names.index(_LM_FLOOR[spec.name])] = 0.0
    n = len(loss)
    best, best_score, failures = None, np.inf, 0
    for p0 in grid:
        try:
            with warnings.catch_warnings():
                # Poorly conditioned starts overflow and warn; they lose the selection.
                warnings.simplefilter("ignore")
                if bounded:
                    p0 = np.maximum(p0, lower + 1e-12 * np.isfinite(lower))
                    popt, pcov = scipy.optimize.curve_fit(func, (N, D), loss, p0=p0,
                                                          bounds=(lower, np.inf),
                                                          max_nfev=maxfev)
                else:
                    popt, pcov = scipy.optimize.curve_fit(func, (N, D), loss, p0=p0,
                                                          maxfev=maxfev)
        except (RuntimeError, ValueError, FloatingPointError):
            failures += 1
            continue
        resid = func((N, D), *popt) - loss
        ssr = float(np.sum(resid ** 2))
        # Gadre et al. select by sqrt(SSR / (n - 2)); with n fixed it ranks like SSR.
        score = np.sqrt(ssr / max(n - 2, 1))
        if np.isfinite(score) and score < best_score:
            best, best_score, best_p0 = (popt, pcov, ssr), score, p0
    if best is None:
        raise RuntimeError(f"fit_loss_law(form={spec.name!r}, method='lm'): curve_fit failed "
                           f"from all {len(grid)} starts")
    popt, pcov, ssr = best
    return Fit(law=spec.name, method="lm",
               params={k: float(v) for k, v in convert(popt).items()},
               objective=ssr, num_points=n,
               details=dict(lm_params=dict(zip(names, map(float, popt))), best_start=best_p0,
                            score=best_score, num_starts=len(grid), num_failed=failures,
                            covariance=pcov, bounded=bounded))


def huber_objective(theta_sp: np.ndarray, X_jnp: np.ndarray, y_n: np.ndarray,
                    delta: float = HUBER_DELTA, with_grad: bool = True):
    """Huber loss of log residuals and its analytic gradient, for many starts at once.

    Args:
      theta_sp: [S, p] parameter vectors (one per start).
      X_jnp: [J, n, p] LSE design: log Lhat_n = logsumexp_j (X[j, n] @ theta).
      y_n: [n] log of the observed losses.
      delta: Huber threshold.
      with_grad: False skips the gradient (returned as None).
    Returns:
      (f [S], grad [S, p], r [S, n] residuals log Lhat - y, w [S, J, n] softmax weights).
    """
    J, n, p = X_jnp.shape
    z = (theta_sp @ X_jnp.reshape(J * n, p).T).reshape(len(theta_sp), J, n)
    zmax = z.max(axis=1, keepdims=True)
    ez = np.exp(z - zmax)
    denom = ez.sum(axis=1)
    r = zmax[:, 0] + np.log(denom) - y_n
    w = ez / denom[:, None]
    f = scipy.special.huber(delta, r).sum(axis=1)
    if not with_grad:
        return f, None, r, w
    psi = np.clip(r, -delta, delta)
    # d lse / d theta = sum_j softmax_j X_j; d Huber / d r = clip(r, -delta, delta).
    grad = (psi[:, None, :] * w).reshape(len(theta_sp), J * n) @ X_jnp.reshape(J * n, p)
    return f, grad, r, w


def _batched_gauss_newton(theta, X, y, delta, iters):
    """Damped Gauss-Newton on the Huber IRLS weights, all starts at once.

    Huber minimisation is iteratively reweighted least squares with weights
    min(1, delta / |r|); each start takes its own Levenberg-damped step and keeps it only
    if its objective falls, so every start descends independently.
    """
    J, n, p = X.shape
    X_njp = np.ascontiguousarray(X.transpose(1, 0, 2))
    mu = np.full(len(theta), 1e-2)
    f, _, r, w = huber_objective(theta, X, y, delta, with_grad=False)
    eye = np.eye(p)
    for _ in range(iters):
        jac = np.matmul(w.transpose(2, 0, 1), X_njp).transpose(1, 0, 2)   # [S, n, p]
        irls = np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))
        jw = jac * irls[:, :, None]
        g = np.matmul(jw.transpose(0, 2, 1), r[:, :, None])[..., 0]
        H = np.matmul(jw.transpose(0, 2, 1), jac)
        diag = np.diagonal(H, axis1=1, axis2=2)
        A = H + mu[:, None, None] * eye * (diag[:, :, None] + 1e-12)
        with np.errstate(all="ignore"):
            try:
                step = np.linalg.solve(A, -g[..., None])[..., 0]
            except np.linalg.LinAlgError:
                step = np.stack([np.linalg.lstsq(a, -gi, rcond=None)[0] for a, gi in zip(A, g)])
            cand = theta + step
            fc, _, rc, wc = huber_objective(cand, X, y, delta, with_grad=False)
        ok = np.isfinite(fc) & (fc < f)
        theta[ok], f[ok], r[ok], w[ok] = cand[ok], fc[ok], rc[ok], wc[ok]
        mu = np.where(ok, mu / 3.0, np.minimum(mu * 4.0, 1e12))
    return theta, f


def _fit_huber(spec, N, D, loss, starts, delta, num_polish) -> Fit:
    X = spec.design(N, D)
    y = np.log(loss)
    grid = _grid(starts if starts is not None else HUBER_GRIDS[spec.name], spec.theta_names)
    theta = grid.copy()
    # Two stages keep the batched pass cheap: every start takes 8 steps, then the best
    # 256 continue to convergence; L-BFGS-B polishes the best `num_polish`. On Epoch's
    # grid the winning basin is reached by dozens of starts (tests compare with
    # `fit_loss_law_exhaustive`, one L-BFGS-B per start).
    theta, f = _batched_gauss_newton(theta, X, y, delta, iters=8)
    keep = np.argsort(np.where(np.isfinite(f), f, np.inf))[:256]
    theta_k, f_k = _batched_gauss_newton(theta[keep].copy(), X, y, delta, iters=60)
    order = np.argsort(np.where(np.isfinite(f_k), f_k, np.inf))[:num_polish]

    def one(t):
        fv, g, _, _ = huber_objective(t[None], X, y, delta)
        return fv[0], g[0]
    best = None
    for i in order:
        with np.errstate(all="ignore"):
            res = scipy.optimize.minimize(one, theta_k[i], jac=True, method="L-BFGS-B")
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best, best_start = res, grid[keep[i]]
    if best is None:
        raise RuntimeError(f"fit_loss_law(form={spec.name!r}, method='huber'): no start "
                           "reached a finite objective")
    fit = Fit(law=spec.name, method="huber",
              params={k: float(v) for k, v in spec.from_theta(best.x).items()},
              objective=float(best.fun), num_points=len(loss),
              details=dict(theta=best.x, best_start=best_start, num_starts=len(grid),
                           converged=bool(best.success), message=str(best.message),
                           delta=delta))
    if not best.success:
        fit._flag(f"L-BFGS-B did not converge: {best.message}")
    return fit


def fit_loss_law_exhaustive(N, D, loss, form: str = "chinchilla", *,
                            starts: Mapping[str, Sequence[float]] | None = None,
                            delta: float = HUBER_DELTA, jac: bool = True) -> Fit:
    """Reference Huber fit: L-BFGS-B from every start of the grid (Epoch's procedure).

    Slow (one scipy run per start); used by tests and `tools/bench_fit.py` to check that
    the batched `fit_loss_law(method="huber")` finds the same optimum. With jac=False
    the gradient is by finite differences, exactly as Epoch's notebook.
    """
    spec = laws.get_form(form)
    N, D, loss = _loss_inputs(spec, N, D, loss)
    X, y = spec.design(N, D), np.log(loss)
    grid = _grid(starts if starts is not None else HUBER_GRIDS[spec.name], spec.theta_names)

    def value_grad(t):
        fv, g, _, _ = huber_objective(t[None], X, y, delta)
        return (fv[0], g[0]) if jac else fv[0]
    best = None
    for t0 in grid:
        with np.errstate(all="ignore"):
            res = scipy.optimize.minimize(value_grad, t0, jac=jac, method="L-BFGS-B")
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best, best_start = res, t0
    return Fit(law=form, method="huber", params=spec.from_theta(best.x),
               objective=float(best.fun), num_points=len(loss),
               data=dict(N=N, D=D, loss=loss),
               details=dict(theta=best.x, best_start=best_start, num_starts=len(grid)),
               _predict=lambda p, **inp: spec.predict(p, *_resolve_ND(spec, **inp)))


def fit_error_law(loss, err, *, p0: Sequence[float] | None = None, maxfev: int = 10000,
                  num_questions=None) -> Fit:
    """Fits Err(L) = eps - k exp(-gamma L) (Gadre et al. eq. 4) by `curve_fit`.

    As Gadre et al.: no bounds (Levenberg-Marquardt), default p0 (all ones), maxfev
    10000, unweighted least squares on the raw error.

    Args:
      loss: [n] loss per model (nats per token); Gadre et al. use measured C4-eval loss.
      err: [n] average top-1 error per model, in [0, 1].
      p0: starting (eps, k, gamma); None means curve_fit's default of ones.
      num_questions: optional number of questions behind each error (scalar or [n]; for
        an average over tasks, the effective count err (1 - err) / variance). Used by
        `prediction`/`predict_interval` for the binomial noise of a finite question set;
        None treats all scatter about the law as one normal noise.
    Returns:
      A `Fit` with params eps, k, gamma and `.predict(loss=...)`.
    Raises:
      ValueError: non-finite inputs, err outside [0, 1], or fewer than 3 points.
    """
    loss = _checks.as_1d(loss, "loss", positive=True)
    err = _checks.as_1d(err, "err", unit_interval="closed")
    _checks.same_length(loss=loss, err=err)
    _checks.enough_points(len(loss), 3, "fit_error_law")
    if num_questions is not None:
        num_questions = np.broadcast_to(_checks.as_1d(num_questions, "num_questions",
                                                      positive=True), loss.shape).copy()
    try:
        popt, pcov = scipy.optimize.curve_fit(laws.error_law, loss, err, p0=p0, maxfev=maxfev)
    except RuntimeError as e:
        raise RuntimeError(f"fit_error_law: curve_fit did not converge: {e}") from e
    resid = laws.error_law(loss, *popt) - err
    data = dict(loss=loss, err=err)
    if num_questions is not None:
        data["num_questions"] = num_questions
    fit = Fit(law="error", method="curve_fit",
              params=dict(eps=float(popt[0]), k=float(popt[1]), gamma=float(popt[2])),
              objective=float(np.sum(resid ** 2)), num_points=len(loss),
              data=data, details=dict(covariance=pcov),
              _predict=lambda p, loss: laws.error_law(loss, p["eps"], p["k"], p["gamma"]),
              _refit=lambda idx: fit_error_law(
                  loss[idx], err[idx], p0=p0, maxfev=maxfev,
                  num_questions=None if num_questions is None else num_questions[idx]),
              _refit_values=lambda y: fit_error_law(loss, np.clip(y, 0.0, 1.0), p0=popt,
                                                    maxfev=maxfev,
                                                    num_questions=num_questions))
    if len(loss) == 3:
        fit._flag("3 points for 3 parameters: no residual degrees of freedom")
    if not np.all(np.isfinite(pcov)):
        fit._flag("parameter covariance is not finite (parameters not identifiable)")
    if popt[2] <= 0 or popt[1] <= 0:
        fit._flag("fitted error does not fall with loss (k <= 0 or gamma <= 0)")
    elif popt[1] < 1e-6:
        fit._flag(f"k = {popt[1]:.3g} is at its bound 0: error does not depend on loss")
    if popt[0] >= 1.0:
        fit._flag(f"eps = {popt[0]:.4g} is at or past its bound 1 (error of a model with "
                  "infinite loss): the law's curvature is not identified by these points")
    return fit


def predict_chain(loss_fit: Fit, err_fit: Fit, **inputs) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) -> predicted loss -> predicted error (Gadre et al. section 2.3).

    The *predicted* loss, not a measured one, goes into the error law.

    Args:
      loss_fit: from `fit_loss_law`.
      err_fit: from `fit_error_law`.
      **inputs: N=, D= (or C=, M=) for the target models, [n] each.
    Returns:
      (loss [n], err [n]).
    """
    loss = np.asarray(loss_fit.predict(**inputs), float)
    return loss, np.asarray(err_fit.predict(loss=loss), float)
