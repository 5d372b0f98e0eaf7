"""The report's greedy exact-match section: per task and checkpoint, greedy EM beside PU.

Stage: report. Consumes result rows (dicts or `ResultRow`s) of greedy-decoding units
(`lmscale.eval.greedy`: task `results.greedy_task(task)`, metric `GREEDY_EXACT_MATCH` with
its counts in the detail) and, for the same checkpoints, the task's PassUntil rows;
produces a JSON-ready dict (`analyze`) and the markdown lines of its section (`section`).
Intervals are recomputed from the counts at the study's level (Clopper-Pearson,
`lmscale.eval.greedy_stats`); numpy and scipy only, no JAX.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Sequence

from lmscale.eval import greedy_stats
from lmscale.eval import results as R


def _as_dict(row) -> dict:
    return dict(row) if isinstance(row, Mapping) else dataclasses.asdict(row)


def analyze(rows: Iterable, tasks: Sequence[str], level: float = 0.9) -> dict[str, Any]:
    """Greedy exact match of every evaluated checkpoint of each task.

    Args:
      rows: result rows.
      tasks: the study's greedy tasks (their plain names).
      level: the interval's coverage.

    Returns:
      {"level", "method", "tasks": {task: [point, ...]}}, a point being {"run", "N" (non-
      embedding), "step", "final" (the run's last evaluated step), "exact_match",
      "num_passed", "num_instances", "interval", "passuntil" (the PassUntil PU of the
      same checkpoint, or None)}, sorted by N, run and step. A task without greedy rows
      maps to [].
    """
    em: dict[tuple, dict] = {}
    pu: dict[tuple, float] = {}
    wanted = {R.greedy_task(t): t for t in tasks}
    for row in map(_as_dict, rows):
        if row["metric"] == R.GREEDY_EXACT_MATCH and row["task"] in wanted:
            em[(wanted[row["task"]], row["run"], int(row["step"]))] = row
        elif row["metric"] == R.PASSUNTIL and row["task"] in tasks:
            pu[(row["task"], row["run"], int(row["step"]))] = float(row["value"])
    last: dict[tuple, int] = {}
    for task, run, step in em:
        last[(task, run)] = max(step, last.get((task, run), step))
    out: dict[str, list] = {t: [] for t in tasks}
    for (task, run, step), row in em.items():
        detail = row.get("detail") or {}
        k, n = int(detail["num_passed"]), int(detail["num_instances"])
        out[task].append({
            "run": run, "N": int(row["num_params_non_embedding"]), "step": step,
            "final": step == last[(task, run)], "exact_match": float(row["value"]),
            "num_passed": k, "num_instances": n,
            "interval": list(greedy_stats.binomial_interval(k, n, level)),
            "passuntil": pu.get((task, run, step))})
    for points in out.values():
        points.sort(key=lambda p: (p["N"], p["run"], p["step"]))
    return {"level": level, "method": "Clopper-Pearson", "tasks": out}


def _num(x) -> str:
    return "–" if x is None else f"{x:.4g}"


def section(greedy: Mapping[str, Any] | None) -> list[str]:
    """Markdown lines: one table per task of the final checkpoints (none without data)."""
    if not greedy or not greedy.get("tasks"):
        return []
    level = 100 * greedy["level"]
    lines = ["## Greedy exact match", "",
             "Each instance decoded greedily (argmax, cut at the task's stop strings) and "
             "checked with the task's checker, answer normalisation and aliases included; "
             f"{level:.0f}% {greedy['method']} intervals over the task's instances. The "
             "PassUntil PU of the same checkpoint is beside it (– when not evaluated). "
             "Final checkpoints; every checkpoint is in results.json.", ""]
    for task, points in greedy["tasks"].items():
        lines += [f"### {task} (greedy)", ""]
        finals = [p for p in points if p["final"]]
        if not finals:
            lines += ["No greedy rows.", ""]
            continue
        lines += ["| run | N | step | greedy EM [low, high] | passed / instances | "
                  "PassUntil PU |", "|---|---|---|---|---|---|"]
        lines += [f"| {p['run']} | {p['N']:,} | {p['step']:,} | {_num(p['exact_match'])} "
                  f"[{_num(p['interval'][0])}, {_num(p['interval'][1])}] | "
                  f"{p['num_passed']} / {p['num_instances']} | {_num(p['passuntil'])} |"
                  for p in finals]
        lines += [""]
    return lines
