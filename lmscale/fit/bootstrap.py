"""Bootstrap intervals for fitted parameters and predictions.

Stage: fit. Consumes a `Fit` (anything with `.data`, `.refit(indices)`, `.params`,
`.predict(...)`); produces `Bootstrap`: the refitted parameter samples and percentile
intervals for parameters and for predictions at new inputs.

Points are resampled with replacement (the nonparametric bootstrap that Epoch AI use for
the Chinchilla fit, 4,000 resamples there). A resample whose refit raises or comes back
unreliable is counted in `num_failed` and left out, never silently replaced.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable, Sequence

import numpy as np


@dataclasses.dataclass
class Bootstrap:
    """Refits on resampled points.

    Attributes:
      params: name -> [B] parameter samples from the B successful refits.
      fits: the B successful refitted objects (their `.predict` gives prediction bands).
      num_failed: resamples whose refit raised or was flagged unreliable.
      num_resamples: resamples drawn.
    """
    params: dict[str, np.ndarray]
    fits: list[Any] = dataclasses.field(repr=False)
    num_failed: int
    num_resamples: int

    def interval(self, name: str, level: float = 0.95) -> tuple[float, float]:
        """Percentile interval of parameter `name` at confidence `level`."""
        if name not in self.params:
            raise ValueError(f"no parameter {name!r}; have {sorted(self.params)}")
        return percentile_interval(self.params[name], level)

    def predict(self, **inputs) -> np.ndarray:
        """[B, n] predictions of every refit at `inputs` (same keywords as `.predict`)."""
        return np.stack([np.asarray(f.predict(**inputs), float).reshape(-1) for f in self.fits])

    def predict_interval(self, level: float = 0.95, **inputs) -> tuple[np.ndarray, np.ndarray]:
        """Percentile band ([n] lower, [n] upper) of predictions at `inputs`."""
        return percentile_interval(self.predict(**inputs), level, axis=0)


def percentile_interval(samples, level: float = 0.95, axis: int | None = None):
    """Central percentile interval of `samples` at confidence `level` in (0, 1)."""
    if not 0 < level < 1:
        raise ValueError(f"level={level} must lie in (0, 1)")
    samples = np.asarray(samples, float)
    if samples.size == 0:
        raise ValueError("no bootstrap samples (every resample failed)")
    q = 100 * np.array([(1 - level) / 2, (1 + level) / 2])
    lo, hi = np.percentile(samples, q, axis=axis)
    return (float(lo), float(hi)) if np.ndim(lo) == 0 else (lo, hi)


def resample_indices(n: int, num_resamples: int, seed: int) -> np.ndarray:
    """[num_resamples, n] indices drawn with replacement from range(n)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(num_resamples, n))


def bootstrap_fit(fit, num_resamples: int = 200, seed: int = 0,
                  refit: Callable[[np.ndarray], Any] | None = None) -> Bootstrap:
    """Bootstraps a fit: resample its points with replacement, refit, collect parameters.

    Args:
      fit: a fitted object with `.data` (name -> [n] arrays), `.params` and `.refit`.
      num_resamples: B, number of resamples.
      seed: numpy Generator seed (results are deterministic given it).
      refit: optional replacement for `fit.refit`, called with [n] indices.
    Returns:
      A `Bootstrap`.
    Raises:
      ValueError: num_resamples < 1, or every resample failed.
    """
    if num_resamples < 1:
        raise ValueError(f"num_resamples={num_resamples} must be >= 1")
    n = len(next(iter(fit.data.values())))
    refit = refit or fit.refit
    fits, failed = [], 0
    for idx in resample_indices(n, num_resamples, seed):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f = refit(idx)
        except (ValueError, RuntimeError, np.linalg.LinAlgError):
            failed += 1
            continue
        if not getattr(f, "reliable", True):
            failed += 1
            continue
        fits.append(f)
    if not fits:
        raise ValueError(f"bootstrap: all {num_resamples} refits failed; the fit has too "
                         "few distinct points to resample")
    params = {k: np.array([f.params[k] for f in fits], float) for k in fits[0].params}
    return Bootstrap(params=params, fits=fits, num_failed=failed, num_resamples=num_resamples)
