"""PassUntil driver (eval stage): sample an instance until r passes or k_max samples.

Hu et al., *Unlock Predictable Scaling from Emergent Abilities*, Sec. 3: for one test
instance, draw samples in order until the r-th pass, or stop at the cap k_max. The number
of samples drawn, K, is then negative-binomially distributed, and PU = r / E[K].

This module consumes a ``draw(n)`` callable (the sampler plus the task's pass checker,
already reduced to host booleans, in sampling order) and produces a `PassUntilResult`
for the instance. It only drives sampling: the statistics (unbiased estimate, the
paper's r/K, the interval, capped-run handling) are computed by the pure-numpy
functions of `lmscale.fit.passuntil`, so notebooks and the evaluator agree.

Resumption: `run` accepts and returns (``PassUntilResult.state``) a small JSON-able
dict ``{"num_samples", "num_passes", "r", "k_max"}``; ``on_batch`` sees the same dict
after every batch, so an evaluator can persist it and, after being killed, continue an
instance where it stopped, while a finished instance's state returns at once without
drawing.
"""
from __future__ import annotations

import dataclasses
import numbers
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lmscale.fit import passuntil as pu_stats

# Keys of the resumable state, in the order they are written.
STATE_KEYS = ("num_samples", "num_passes", "r", "k_max")


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

    @property
    def state(self) -> dict[str, int]:
        """The JSON-able state that resumes (here: returns at once) this instance."""
        return _state(self.num_samples, self.num_passes, self.r, self.k_max)


def _state(num_samples: int, num_passes: int, r: int, k_max: int) -> dict[str, int]:
    return dict(zip(STATE_KEYS, (num_samples, num_passes, r, k_max)))


def _check_count(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"passuntil.run: {name}={value!r}; must be an int >= {low}")
    return int(value)


def _restore(state: Mapping[str, Any], r: int, k_max: int) -> tuple[int, int]:
    """Validates a saved state against this run; returns (num_samples, num_passes)."""
    if not isinstance(state, Mapping):
        raise ValueError(f"passuntil.run: state must be a mapping with keys {STATE_KEYS}, "
                         f"got {type(state).__name__}")
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f"passuntil.run: state lacks {missing} (has {sorted(state)})")
    for key, expected in (("r", r), ("k_max", k_max)):
        if state[key] != expected:
            raise ValueError(f"passuntil.run: state[{key!r}]={state[key]!r} was saved by a "
                             f"run with other settings than {key}={expected}")
    num_samples = _check_count("state['num_samples']", state["num_samples"], 0)
    num_passes = _check_count("state['num_passes']", state["num_passes"], 0)
    if num_samples > k_max or num_passes > min(num_samples, r):
        raise ValueError(f"passuntil.run: state {dict(state)} is impossible: need "
                         f"num_passes <= min(num_samples, r) and num_samples <= k_max")
    return num_samples, num_passes


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
        state: Mapping[str, Any] | None = None,
        on_batch: Callable[[dict[str, int]], None] | None = None,
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
      state: a state saved from an earlier, interrupted call (``on_batch`` or
        ``PassUntilResult.state``) to continue from; None starts afresh.
      on_batch: called after every batch with the current state dict (JSON-able).
      confidence: level of `PassUntilResult.interval`, in (0, 1).

    Returns:
      The instance's `PassUntilResult`.

    Raises:
      ValueError: bad r, k_max or batch_size (named), a state that does not fit this
        run, or a `draw` that returns the wrong number or kind of outcomes.
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
    num_samples, num_passes = (0, 0) if state is None else _restore(state, r, k_max)

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
        if on_batch is not None:
            on_batch(_state(num_samples, num_passes, r, k_max))

    capped = num_passes < r
    lo, hi = pu_stats.interval(num_samples, num_passes, capped, confidence=confidence)
    return PassUntilResult(
        num_samples=num_samples, num_passes=num_passes, capped=capped, r=r, k_max=k_max,
        estimate=float(pu_stats.estimate(num_samples, num_passes, r, capped)),
        naive_estimate=float(pu_stats.naive_estimate(num_samples, num_passes)),
        interval=(float(lo), float(hi)))
