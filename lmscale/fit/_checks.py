"""Input validation shared by the fit modules: arrays in, clear ValueErrors out.

Every public fit function converts its inputs here, so a NaN, a negative size or a
length mismatch is reported with the argument's name and the offending index.
"""
from __future__ import annotations

import numpy as np


def as_1d(x, name: str, *, positive: bool = False, finite: bool = True,
          unit_interval: str | None = None) -> np.ndarray:
    """Converts `x` (list, array, pandas Series) to a float64 [n] array and checks it.

    Args:
      x: array-like of numbers.
      name: argument name used in error messages.
      positive: require every value > 0 (sizes, tokens, compute, losses).
      finite: require no NaN or inf.
      unit_interval: None, "open" (0 < x < 1), "closed" (0 <= x <= 1) or "right"
        (0 < x <= 1).
    Returns:
      [n] float64 array.
    Raises:
      ValueError: naming `name` and the first bad index.
    """
    if x is None:
        raise ValueError(f"{name} is required")
    arr = np.asarray(getattr(x, "to_numpy", lambda: x)(), dtype=float)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if finite and not np.all(np.isfinite(arr)):
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name}[{i}] = {arr[i]} is not finite")
    if positive and np.any(arr <= 0):
        i = int(np.flatnonzero(arr <= 0)[0])
        raise ValueError(f"{name}[{i}] = {arr[i]} must be > 0")
    if unit_interval is not None:
        lo_ok = arr > 0 if unit_interval in ("open", "right") else arr >= 0
        hi_ok = arr < 1 if unit_interval == "open" else arr <= 1
        bad = ~(lo_ok & hi_ok)
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            allowed = {"open": "(0, 1)", "closed": "[0, 1]", "right": "(0, 1]"}[unit_interval]
            raise ValueError(f"{name}[{i}] = {arr[i]} must lie in {allowed}")
    return arr


def same_length(**arrays) -> int:
    """Returns the common length of `arrays`; raises ValueError naming the mismatch."""
    lengths = {k: len(v) for k, v in arrays.items() if v is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs differ in length: {lengths}")
    return next(iter(lengths.values()))


def enough_points(n: int, num_params: int, what: str) -> None:
    """Raises ValueError when `n` points cannot determine `num_params` parameters."""
    if n < num_params:
        raise ValueError(f"{what}: {n} points cannot determine {num_params} parameters; "
                         f"need at least {num_params}")
