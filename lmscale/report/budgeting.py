"""The study's PassUntil budget: per-instance caps of the next rung from the rungs below.

`lmscale.eval.budget` is the policy (predict each instance's PU at the next size, fund the
instances cheapest first within a per-task sample budget, flag what it cannot fund for
loss-assisted PU). This module feeds it the final checkpoints' per-instance rows of the
rungs evaluated so far and returns what `runner.evaluate(passuntil_caps=...)` takes. The
study calls it before each rung's final checkpoint when `StudyConfig.passuntil_budget`
is set; the first rung (nothing below it) gets the flat cap.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
from absl import logging

from lmscale.eval import budget as budget_lib
from lmscale.eval import results as R
from lmscale.train.record import RunRecord


def _final_counts(rows: Iterable, done: Sequence[RunRecord], task: str):
    """(N [m], ids, K [m, I], passes [m, I], answer loss sum [m, I]) of the runs in `done`
    that have per-instance rows of `task` at their final step (ids: the first run's)."""
    finals = {rec.run_name: rec.num_steps for rec in done}
    per_run: dict[str, dict[str, Mapping]] = {}
    for row in rows:
        if (row.task == task and row.metric == R.INSTANCE and row.run in finals
                and row.step == finals[row.run] and row.detail):
            per_run.setdefault(row.run, {})[row.instance] = row.detail
    runs = [rec for rec in done if rec.run_name in per_run]
    if not runs:
        return None
    ids = sorted(per_run[runs[0].run_name])
    runs = [rec for rec in runs if set(ids) <= set(per_run[rec.run_name])]

    def mat(key):
        return np.array([[float(per_run[rec.run_name][i].get(key, np.nan)) for i in ids]
                         for rec in runs])

    return (np.array([float(rec.N) for rec in runs]), ids, mat("num_samples"),
            mat("num_passes"), mat(R.ANSWER_LOSS_SUM))


def next_rung_caps(rows: Iterable, done: Sequence[RunRecord], N_next: float,
                   tasks: Sequence[str], *, r: int, k_max: int, per_instance: int,
                   k_floor: int = 20, ceiling_factor: int = 5
                   ) -> tuple[dict[str, dict[str, int]], dict[str, tuple[str, ...]]]:
    """Per-task caps for a rung of size `N_next` from the final rows of the `done` runs.

    Args:
      rows: result rows (`ResultRow`s) evaluated so far.
      done: run records of the rungs evaluated so far.
      N_next: the next rung's non-embedding parameters.
      tasks: PassUntil task names.
      r: PassUntil pass target.
      k_max: the flat cap (the ceiling of one instance is `ceiling_factor * k_max`).
      per_instance: the task's budget on the rung, per instance (samples).
      k_floor: least cap of any instance.
    Returns:
      ({task: {instance id: cap}}, {task: ids flagged loss-assisted}); a task with no
      rows below (the first rung) is absent, so it runs with the flat cap.
    """
    caps: dict[str, dict[str, int]] = {}
    flagged: dict[str, tuple[str, ...]] = {}
    for task in tasks:
        counts = _final_counts(rows, done, task)
        if counts is None:
            continue
        N, ids, K, x, loss = counts
        have_loss = np.isfinite(loss).all()
        pred = budget_lib.predict_next_pu(N, K, x, r=r, N_next=N_next, ids=ids,
                                          answer_loss=loss if have_loss else None)
        plan = budget_lib.plan_caps(pred, r=r, budget=per_instance * len(ids),
                                    k_floor=max(r, min(k_floor, per_instance)),
                                    k_ceiling=max(ceiling_factor * k_max, k_floor, r))
        caps[task], flagged[task] = plan.caps, plan.loss_assisted
        logging.info("PassUntil budget %s at N=%d: %d samples over %d instances, %.0f "
                     "expected; %d funded to r passes, %d left to loss-assisted PU", task,
                     N_next, plan.spent, len(ids), plan.expected,
                     len(ids) - len(plan.loss_assisted), len(plan.loss_assisted))
    return caps, flagged
