"""Plan a study before paying for it: compute, memory and time of every stage.

Stage: report. The core (`core.build_plan`) takes primitive inputs (`Rung`, `Task`,
`Mesh`, `Device`, `Thresholds`) and returns a `Plan`; `render.format_plan` prints it and
`render.plan_to_json` serialises it; `adapter.plan_study_config` / `adapter.dry_run`
reach it from a `StudyConfig`; `probe.time_plan` (optional, runs JAX) times it.
docs/planning.md explains how to read a plan.
"""

from lmscale.report.plan.adapter import dry_run, plan_study_config
from lmscale.report.plan.core import (Device, Mesh, Plan, Rung, Task, Thresholds,
                                      build_plan)
from lmscale.report.plan.render import format_plan, plan_to_json

__all__ = ["Device", "Mesh", "Plan", "Rung", "Task", "Thresholds", "build_plan", "dry_run",
           "format_plan", "plan_study_config", "plan_to_json"]
