"""PassUntil counts: the unbiased PU estimate from (samples, passes) arrays, and simulated
PassUntil runs.

Stage: fit. Shared by `passuntil` (the task-law fits) and `pu_predictive` (their
predictive intervals), so neither imports the other back. numpy + scipy only.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.stats


def pu_from_counts(num_samples, num_passes, r: int) -> np.ndarray:
    """Vectorised unbiased PU from count arrays of any shape; capped = passes < r.

    For r == 1 the uncapped estimate is 1 / K (biased; one warning is emitted).
    """
    K = np.asarray(num_samples, float)
    x = np.asarray(num_passes, float)
    if K.shape != x.shape:
        raise ValueError(f"num_samples shape {K.shape} != num_passes shape {x.shape}")
    if np.any(~np.isfinite(K)) or np.any(K < 1):
        raise ValueError("num_samples must be finite and >= 1 everywhere")
    if np.any(x < 0) or np.any(x > K) or np.any(x > r):
        raise ValueError(f"num_passes must lie in [0, min(num_samples, r={r})]")
    capped = x < r
    if r == 1 and np.any(~capped):
        warnings.warn("PassUntil with r=1: 1/K is biased upwards", stacklevel=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        stopped = (r - 1) / (K - 1) if r >= 2 else 1.0 / K
    return np.where(capped, x / K, np.where(K == 1, 1.0, stopped))


def sample_passuntil(rng: np.random.Generator, p, r: int, k_max: int):
    """Simulates PassUntil runs at pass probabilities `p` (any shape), vectorised.

    K - r failures before the r-th pass ~ NegativeBinomial(r, p); the run is capped when
    K > k_max, i.e. when the first k_max samples hold fewer than r passes, and its
    passes are then Binomial(k_max, p) conditioned on < r (drawn from that truncated
    pmf by inversion).

    Returns:
      (num_samples, num_passes) int arrays shaped like `p`.
    """
    p = np.asarray(p, float)
    if np.any((p < 0) | (p > 1)) or np.any(~np.isfinite(p)):
        raise ValueError("sample_passuntil: p must lie in [0, 1]")
    if r < 1 or k_max < r:
        raise ValueError(f"sample_passuntil: need 1 <= r={r} <= k_max={k_max}")
    safe = np.clip(p, 1e-12, 1.0)  # below 1e-12 every run is capped with 0 passes
    failures = rng.negative_binomial(r, safe)
    capped = (p < 1e-12) | (failures > k_max - r)
    K = np.where(capped, k_max, r + np.minimum(failures, k_max))
    logpmf = scipy.stats.binom.logpmf(np.arange(r)[:, None], k_max, safe.reshape(1, -1))
    pmf = np.exp(logpmf - logpmf.max(axis=0, keepdims=True))
    cdf = np.cumsum(pmf, axis=0) / pmf.sum(axis=0, keepdims=True)
    u = rng.random(p.size)
    trunc = np.minimum((u[None] > cdf).sum(axis=0), r - 1).reshape(p.shape)
    passes = np.where(capped, np.where(p < 1e-12, 0, trunc), r)
    return K.astype(np.int64), passes.astype(np.int64)
