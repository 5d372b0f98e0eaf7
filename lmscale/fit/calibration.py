"""Coverage of predictive intervals, measured on simulated studies.

Stage: fit. A trial is a function `trial(rng) -> (truth, {level: Prediction})`: it draws
one simulated study, fits it and predicts a held-out quantity whose measured value is
`truth`. `coverage` runs many trials and reports, per nominal level, the fraction of
intervals that covered the truth and their median width. Any predictor can plug in
(loss and accuracy in `simulate`; PassUntil trials in `simulate_pu`).
"""
from __future__ import annotations

import logging
from typing import Callable, Mapping, Sequence

import numpy as np

Trial = Callable[[np.random.Generator], tuple]


def coverage(trial: Trial, num_sims: int = 200, levels: Sequence[float] = (0.5, 0.8, 0.9),
             seed: int = 0) -> dict:
    """Runs `num_sims` trials and measures the coverage of each level's intervals.

    Args:
      trial: `trial(rng) -> (truth: float, predictions: {level: Prediction})`.
      num_sims: simulated studies.
      levels: nominal levels to score (each must be a key of every trial's predictions).
      seed: the trials' generator seed (trial i gets its own child generator).
    Returns:
      dict: "num_sims", "num_failed" (trials that raised: their messages in "failures"),
      "coverage" {level: fraction covered}, "median_width" {level: median high - low},
      "median_rel_error" (median |point - truth| / |truth| at the first level).
    Raises:
      ValueError: num_sims < 1, or every trial failed.
    """
    if num_sims < 1:
        raise ValueError(f"num_sims={num_sims} must be >= 1")
    children = np.random.SeedSequence(seed).spawn(num_sims)
    hits = {lv: [] for lv in levels}
    widths = {lv: [] for lv in levels}
    rel, failures = [], []
    for child in children:
        try:
            truth, preds = trial(np.random.default_rng(child))
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
            failures.append(f"{type(e).__name__}: {e}")
            continue
        for lv in levels:
            p = preds[lv]
            hits[lv].append(p.covers(truth))
            widths[lv].append(p.high - p.low)
        if truth != 0:
            rel.append(abs(preds[levels[0]].point - truth) / abs(truth))
    if not rel and not hits[levels[0]]:
        raise ValueError(f"coverage: all {num_sims} trials failed (first: {failures[0]})")
    if failures:
        logging.info("coverage: %d of %d trials failed", len(failures), num_sims)
    return dict(num_sims=num_sims, num_failed=len(failures), failures=failures,
                coverage={lv: float(np.mean(hits[lv])) for lv in levels},
                median_width={lv: float(np.median(widths[lv])) for lv in levels},
                median_rel_error=float(np.median(rel)) if rel else float("nan"))


def table(rows: Mapping[str, dict]) -> str:
    """A plain-text table: one line per quantity, coverage and median width per level."""
    levels = list(next(iter(rows.values()))["coverage"])
    head = ["quantity", "sims", "failed"] + [f"cov@{lv:g}" for lv in levels] + \
           [f"width@{lv:g}" for lv in levels] + ["med rel err"]
    lines = ["  ".join(f"{h:>11}" for h in head)]
    for name, r in rows.items():
        cells = [name, str(r["num_sims"]), str(r["num_failed"])]
        cells += [f"{r['coverage'][lv]:.3f}" for lv in levels]
        cells += [f"{r['median_width'][lv]:.4g}" for lv in levels]
        cells += [f"{r['median_rel_error']:.4f}"]
        lines.append("  ".join(f"{c:>11}" for c in cells))
    return "\n".join(lines)


def within(row: dict, tolerance: float = 0.05) -> bool:
    """Whether every level's coverage is within `tolerance` of its nominal level."""
    return all(abs(c - lv) <= tolerance for lv, c in row["coverage"].items())
