"""PassUntil driver (eval stage): sample an instance until r passes or k_max samples.

Hu et al., *Unlock Predictable Scaling from Emergent Abilities*, Sec. 3: for one test
instance, draw samples in order until the r-th pass, or stop at the cap k_max. The number
of samples drawn, K, is then negative-binomially distributed, and PU = r / E[K].

This module consumes a ``draw(n)`` callable (the sampler plus the task's pass checker,
already reduced to host booleans, in sampling order) and produces a `PassUntilResult`
for the instance. It only drives sampling: the statistics (unbiased estimate, the
paper's r/K, the interval, capped-run handling) are computed by the pure-numpy
functions of `lmscale.fit.passuntil`, so notebooks and the evaluator agree.
"""
from __future__ import annotations

import dataclasses
import numbers
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from lmscale.fit import passuntil as pu_stats

@dataclasses.dataclass(frozen=True)
class PassUntilResult:
    """PassUntil outcome for one instance.

    Attributes:
      num_samples: K, samples drawn up to and including the r-th pass (or k_max).
      num_passes: passes among those K samples (= r unless capped).
      capped: True when k_max samples were drawn without reaching r passes.
      r: passes required.
      k_max: sample cap.
      estimate: unbiased estimate of the pass probability (`lmscale.fit.passuntil`).
      naive_estimate: num_passes / K, Hu et al.'s PU = r / K for one instance.
      interval: (lo, hi) confidence interval for the pass probability, at the
        `confidence` given to `run` (default 95%).
    """

    num_samples: int
    num_passes: int
    capped: bool
    r: int
    k_max: int
    estimate: float
    naive_estimate: float
    interval: tuple[float, float]



def _check_count(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"passuntil.run: {name}={value!r}; must be an int >= {low}")
    return int(value)


def _outcomes(draw: Callable, n: int, drawn: Any) -> np.ndarray:
    """Checks what `draw(n)` returned; returns it as a bool array of shape [n]."""
    outcomes = np.asarray(drawn)
    if outcomes.shape != (n,):
        raise ValueError(f"passuntil.run: draw({n}) returned shape {outcomes.shape}; "
                         f"expected ({n},) outcomes ({draw!r})")
    if outcomes.dtype != np.bool_:
        if not (np.issubdtype(outcomes.dtype, np.integer)
                and np.isin(outcomes, (0, 1)).all()):
            raise ValueError(f"passuntil.run: draw({n}) returned {outcomes.dtype} values "
                             f"other than pass/fail booleans ({draw!r})")
        outcomes = outcomes.astype(bool)
    return outcomes


def run(draw: Callable[[int], Sequence[bool]], r: int, k_max: int, batch_size: int, *,
        confidence: float = 0.95) -> PassUntilResult:
    """Samples one instance until its r-th pass or k_max samples (Hu et al., PassUntil).

    Samples are ordered: when the r-th pass falls inside a batch, K is its position and
    the rest of the batch is discarded; the last batch is shortened so that no more than
    k_max samples are ever drawn.

    Args:
      draw: ``draw(n)`` returns n pass/fail outcomes (bools or 0/1 ints, host values,
        shape [n]) in sampling order.
      r: passes to wait for (>= 1; r = 1 warns: its unbiased estimate is degenerate).
      k_max: cap on samples for this instance (>= r).
      batch_size: samples requested per `draw` call (>= 1).
      confidence: level of `PassUntilResult.interval`, in (0, 1).

    Returns:
      The instance's `PassUntilResult`.

    Raises:
      ValueError: bad r, k_max or batch_size (named), or a `draw` that returns the wrong
        number or kind of outcomes.
    """
    r = _check_count("r", r, 1)
    k_max = _check_count("k_max", k_max, 1)
    if k_max < r:
        raise ValueError(f"passuntil.run: k_max={k_max} < r={r}: r passes need at least "
                         "r samples")
    batch_size = _check_count("batch_size", batch_size, 1)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"passuntil.run: confidence={confidence!r}; must be in (0, 1)")
    if r == 1:
        warnings.warn("passuntil.run: r=1; the unbiased estimate (r-1)/(K-1) carries no "
                      "information with one pass, use r >= 2", stacklevel=2)
    num_samples, num_passes = 0, 0

    while num_passes < r and num_samples < k_max:
        n = min(batch_size, k_max - num_samples)
        outcomes = _outcomes(draw, n, draw(n))
        hits = np.flatnonzero(outcomes)
        needed = r - num_passes
        if len(hits) >= needed:
            # Position (1-based) of the r-th pass inside this batch.
            num_samples += int(hits[needed - 1]) + 1
            num_passes = r
        else:
            num_samples += n
            num_passes += len(hits)

    capped = num_passes < r
    lo, hi = pu_stats.interval(num_samples, num_passes, capped, confidence=confidence)
    return PassUntilResult(
        num_samples=num_samples, num_passes=num_passes, capped=capped, r=r, k_max=k_max,
        estimate=float(pu_stats.estimate(num_samples, num_passes, r, capped)),
        naive_estimate=float(pu_stats.naive_estimate(num_samples, num_passes)),
        interval=(float(lo), float(hi)))
