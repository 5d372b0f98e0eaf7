"""Greedy exact match as a binomial proportion: the count of passing instances and its
interval.

Stage: eval (numpy and scipy only, so `lmscale.report` and a notebook use it without JAX).
A greedy completion is deterministic, so the only noise in a task's exact match is which
instances the task happens to hold: k passes out of n instances is a binomial draw, and
its interval is a binomial proportion interval (scipy's `binomtest(...).proportion_ci`):
Clopper-Pearson ("exact", the default, as `lmscale.fit.passuntil.interval` uses for
capped instances) or Wilson ("wilson").
"""

from __future__ import annotations

from typing import Sequence

import scipy.stats

METHODS = ("exact", "wilson")
DEFAULT_LEVEL = 0.95  # the evaluator's rows; the study report recomputes at its own level


def binomial_interval(num_passed: int, num_instances: int, level: float = DEFAULT_LEVEL,
                      method: str = "exact") -> tuple[float, float]:
    """Two-sided `level` interval of the pass probability from k of n instances.

    Args:
      num_passed: k, instances whose greedy completion passed (0 <= k <= n).
      num_instances: n >= 1.
      level: coverage in (0, 1).
      method: "exact" (Clopper-Pearson) or "wilson".

    Returns:
      (low, high) with 0 <= low <= k / n <= high <= 1.

    Raises:
      ValueError: counts out of range, level outside (0, 1) or an unknown method.
    """
    k, n = int(num_passed), int(num_instances)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"binomial_interval: num_passed={num_passed} must lie in "
                         f"[0, num_instances={num_instances}] with num_instances >= 1")
    if not 0 < level < 1:
        raise ValueError(f"binomial_interval: level={level} must lie in (0, 1)")
    if method not in METHODS:
        raise ValueError(f"binomial_interval: method={method!r}; use one of {METHODS}")
    ci = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=level, method=method)
    return float(ci.low), float(ci.high)


def summarize(passed: Sequence[bool], level: float = DEFAULT_LEVEL,
              method: str = "exact") -> dict:
    """JSON-ready summary of per-instance passes: exact match, counts and interval."""
    k, n = sum(bool(p) for p in passed), len(passed)
    low, high = binomial_interval(k, n, level, method)
    return {"exact_match": k / n, "num_passed": k, "num_instances": n,
            "interval": [low, high], "level": level, "method": method}
