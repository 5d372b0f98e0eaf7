"""Scaling-law functions of the three papers, as plain vectorised numpy.

Stage: fit. Consumes arrays of sizes, tokens, compute and losses; produces predicted
losses, errors and PassUntil scores. No fitting happens here (see `fitters.py`).

Symbols (used as names throughout `lmscale.fit`):
    N   parameters (Gadre et al. use the total count, Hu et al. non-embedding).
    D   training tokens.
    C   training compute in FLOPs, C = 6 N D (Kaplan et al. 2020; Gadre et al. eq. 2).
    M   token multiplier M = D / N (Gadre et al. section 2.2).
    L   loss in nats per token.
    Err average top-1 error in [0, 1] (Gadre et al. eq. 4).
    PU  PassUntil score in (0, 1] (Hu et al. eq. 2).

Laws:
    Kaplan      L(N) = L_inf + (N0 / N)^alpha                 (Du et al. eq. 4)
    Chinchilla  L(N, D) = E + A N^-alpha + B D^-beta           (Hoffmann et al. eq. 10)
    Over-train  L(C, M) = E + (a M^eta + b M^-eta) C^-eta      (Gadre et al. eq. 3)
    Compute     L(C) = E + lambda C^-eta                       (Gadre et al. eq. 1-2)
    Error       Err(L) = eps - k exp(-gamma L)                 (Gadre et al. eq. 4)
    PassUntil   PU(N) = exp(-c N^-alpha)                       (Hu et al. eq. 4)
    Two-circuit F(N) = -sum_i w_i g_i, g_i = alpha_i log N - log c_i,
                            w = softmax(g), F = log(-log PU)               (Hu et al. section 6)

Every loss law is also written in log-sum-exp form, log L = LSE_j(X_j theta), where
each term's exponent is linear in the parameter vector theta. `LossForm` carries the
design of each term, which is what the Huber fitter and its analytic gradient use.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np


def kaplan(N, L_inf, N0, alpha):
    """L(N) = L_inf + (N0 / N)^alpha (Kaplan et al. 2020; Du et al. eq. 4)."""
    return L_inf + (N0 / np.asarray(N, float)) ** alpha


def chinchilla(N, D, E, A, B, alpha, beta):
    """L(N, D) = E + A N^-alpha + B D^-beta (Hoffmann et al. 2022, eq. 10)."""
    N = np.asarray(N, float)
    D = np.asarray(D, float)
    return E + A * N ** -alpha + B * D ** -beta


def overtrain(C, M, E, a, b, eta):
    """L(C, M) = E + (a M^eta + b M^-eta) C^-eta (Gadre et al. 2024, eq. 3)."""
    C = np.asarray(C, float)
    M = np.asarray(M, float)
    return E + (a * M ** eta + b * M ** -eta) * C ** -eta


def compute_law(C, E, lam, eta):
    """L(C) = E + lambda C^-eta (Gadre et al. 2024, eqs. 1-2 at fixed M)."""
    return E + lam * np.asarray(C, float) ** -eta


def error_law(L, eps, k, gamma):
    """Err(L) = eps - k exp(-gamma L) (Gadre et al. 2024, eq. 4)."""
    return eps - k * np.exp(-gamma * np.asarray(L, float))


def pu_law(N, c, alpha):
    """PU(N) = exp(-c N^-alpha) (Hu et al. 2024, eq. 4)."""
    return np.exp(-c * np.asarray(N, float) ** -alpha)


def two_circuit_F(logN, log_c1, alpha1, log_c2, alpha2):
    """Soft-min of two circuits' F = log(-log PU) (Hu et al. section 6, Theorem 3).

    Each circuit i follows the task law, g_i = alpha_i log N - log c_i = -F_i; the fit
    combines them with softmax(g) weights, F = -(w_1 g_1 + w_2 g_2), a smooth min of F_i.

    Args:
        logN: [n] natural log of N.
    Returns:
        [n] F(N).
    """
    logN = np.asarray(logN, float)
    g = np.stack([alpha1 * logN - log_c1, alpha2 * logN - log_c2])
    w = np.exp(g - g.max(axis=0))
    w /= w.sum(axis=0)
    return -(w * g).sum(axis=0)


@dataclasses.dataclass(frozen=True)
class LossForm:
    """A loss law, its inputs and its log-sum-exp design.

    Attributes:
        name: "kaplan", "chinchilla", "overtrain" or "compute".
        param_names: user-facing parameter names, in order.
        theta_names: names of the LSE parameter vector theta (log-scale coefficients and
            exponents) used by the fitters.
        design: (N [n], D [n]) -> [terms, n, p] matrix; log L = LSE_j(design[j] @ theta).
        from_theta: theta [p] -> dict of user-facing parameters.
        to_theta: dict of user-facing parameters -> theta [p].
        predict: (params dict, N [n], D [n]) -> L [n].
        needs_D: whether D is used (False for Kaplan).
    """
    name: str
    param_names: tuple[str, ...]
    theta_names: tuple[str, ...]
    design: Callable[[np.ndarray, np.ndarray], np.ndarray]
    from_theta: Callable[[np.ndarray], dict]
    to_theta: Callable[[Mapping[str, float]], np.ndarray]
    predict: Callable[[Mapping[str, float], np.ndarray, np.ndarray], np.ndarray]
    needs_D: bool = True


def _stack_terms(*terms):
    return np.stack([np.stack(t, axis=-1) for t in terms])


def _chinchilla_design(N, D):
    one, zero = np.ones_like(N), np.zeros_like(N)
    lN, lD = np.log(N), np.log(D)
    # theta = (a, b, e, alpha, beta): A = e^a, B = e^b, E = e^e (Hoffmann et al. D.2).
    return _stack_terms((one, zero, zero, -lN, zero),
                        (zero, one, zero, zero, -lD),
                        (zero, zero, one, zero, zero))


def _overtrain_design(N, D):
    one, zero = np.ones_like(N), np.zeros_like(N)
    lC, lM = np.log(6.0 * N * D), np.log(D / N)
    # theta = (log a, log b, log E, eta).
    return _stack_terms((one, zero, zero, lM - lC),
                        (zero, one, zero, -lM - lC),
                        (zero, zero, one, zero))


def _kaplan_design(N, D):
    del D
    one, zero = np.ones_like(N), np.zeros_like(N)
    # theta = (alpha log N0, log L_inf, alpha): (N0/N)^alpha = exp(alpha log N0 - alpha log N).
    return _stack_terms((one, zero, -np.log(N)), (zero, one, zero))


def _compute_design(N, D):
    one, zero = np.ones_like(N), np.zeros_like(N)
    # theta = (log lambda, log E, eta).
    return _stack_terms((one, zero, -np.log(6.0 * N * D)), (zero, one, zero))


FORMS: dict[str, LossForm] = {
    "chinchilla": LossForm(
        name="chinchilla",
        param_names=("E", "A", "B", "alpha", "beta"),
        theta_names=("a", "b", "e", "alpha", "beta"),
        design=_chinchilla_design,
        from_theta=lambda t: dict(E=np.exp(t[2]), A=np.exp(t[0]), B=np.exp(t[1]),
                                  alpha=t[3], beta=t[4]),
        to_theta=lambda p: np.array([np.log(p["A"]), np.log(p["B"]), np.log(p["E"]),
                                     p["alpha"], p["beta"]]),
        predict=lambda p, N, D: chinchilla(N, D, **p)),
    "overtrain": LossForm(
        name="overtrain",
        param_names=("E", "a", "b", "eta"),
        theta_names=("log_a", "log_b", "log_E", "eta"),
        design=_overtrain_design,
        from_theta=lambda t: dict(E=np.exp(t[2]), a=np.exp(t[0]), b=np.exp(t[1]), eta=t[3]),
        to_theta=lambda p: np.array([np.log(p["a"]), np.log(p["b"]), np.log(p["E"]),
                                     p["eta"]]),
        predict=lambda p, N, D: overtrain(6.0 * N * D, D / N, **p)),
    "kaplan": LossForm(
        name="kaplan",
        param_names=("L_inf", "N0", "alpha"),
        theta_names=("alpha_log_N0", "log_L_inf", "alpha"),
        design=_kaplan_design,
        from_theta=lambda t: dict(L_inf=np.exp(t[1]), N0=np.exp(t[0] / t[2]), alpha=t[2]),
        to_theta=lambda p: np.array([p["alpha"] * np.log(p["N0"]), np.log(p["L_inf"]),
                                     p["alpha"]]),
        predict=lambda p, N, D: kaplan(N, **p),
        needs_D=False),
    "compute": LossForm(
        name="compute",
        param_names=("E", "lam", "eta"),
        theta_names=("log_lam", "log_E", "eta"),
        design=_compute_design,
        from_theta=lambda t: dict(E=np.exp(t[1]), lam=np.exp(t[0]), eta=t[2]),
        to_theta=lambda p: np.array([np.log(p["lam"]), np.log(p["E"]), p["eta"]]),
        predict=lambda p, N, D: compute_law(6.0 * N * D, **p)),
}


def get_form(form: str) -> LossForm:
    """Returns the `LossForm` named `form`; raises ValueError naming the allowed ones."""
    if form not in FORMS:
        raise ValueError(f"form={form!r} is not a loss law; allowed: {sorted(FORMS)}")
    return FORMS[form]
