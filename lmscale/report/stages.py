"""The study's stage records: plan.json (the plan at the start) and stages.json (measured
seconds of the stages no run record holds: evaluation per run, fit/report), and the
report's "Plan vs measured" rows made from them.

Stage: report (process 0 writes).
"""

from __future__ import annotations

import json
import pathlib

from absl import logging

from lmscale.train.record import RunRecord

PLAN_FILE = "plan.json"
STAGES_FILE = "stages.json"


def save_plan(config: StudyConfig, root: pathlib.Path, optimizer, mesh, loop,
              probe: bool) -> None:
    """Writes `<root>/plan.json` (the study's plan, probed when `probe`) unless a previous
    session of the study already wrote it."""
    from lmscale.report import plan as plan_lib  # pylint: disable=g-import-not-at-top
    from lmscale.report.plan import adapter  # pylint: disable=g-import-not-at-top

    if (root / PLAN_FILE).exists():
        return
    plan = adapter.make_plan(config, optimizer, mesh, probe=probe, loop=loop)
    adapter.write_json(plan, root / PLAN_FILE)
    logging.info("study plan:\n%s", plan_lib.format_plan(plan))


def _eval_seconds(root: pathlib.Path) -> dict[str, float]:
    path = root / STAGES_FILE
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")).get("evaluate_s", {}))


def _fit_report_seconds(root: pathlib.Path) -> float | None:
    path = root / STAGES_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("fit_report_s")


def _save_stages(root: pathlib.Path, eval_seconds: dict[str, float],
                 fit_report_s: float | None = None) -> None:
    """Writes stages.json (evaluation seconds per run so far and, once the report is
    written, the fit/report stage's seconds; process 0 only)."""
    import jax  # pylint: disable=g-import-not-at-top

    if jax.process_index() == 0:
        out = {"evaluate_s": eval_seconds}
        if fit_report_s is not None:
            out["fit_report_s"] = fit_report_s
        (root / STAGES_FILE).write_text(json.dumps(out, indent=1), encoding="utf-8")


def plan_vs_measured(root: pathlib.Path, infos: dict[str, RunRecord],
                     fit_report_s: float | None = None) -> list[dict] | None:
    """plan.json beside the measured seconds per rung (`render.plan_vs_measured`): training
    from the run records' wall_s, evaluation from stages.json, fit/report `fit_report_s`
    (this analysis's own time) or else stages.json's; None without a plan."""
    from lmscale.report.plan import render  # pylint: disable=g-import-not-at-top

    if not (root / PLAN_FILE).exists():
        return None
    plan_json = json.loads((root / PLAN_FILE).read_text(encoding="utf-8"))
    evaluated = _eval_seconds(root)
    measured: dict[str, dict[str, float]] = {"train": {}, "evaluate": {}, "report": {}}
    if fit_report_s is None:
        fit_report_s = _fit_report_seconds(root)
    if fit_report_s is not None:
        measured["report"]["(all)"] = fit_report_s
    for name, rec in infos.items():
        rung = rec.model_config.get("name") or name
        measured["train"][rung] = measured["train"].get(rung, 0.0) + rec.wall_s
        if name in evaluated:
            measured["evaluate"][rung] = measured["evaluate"].get(rung, 0.0) + evaluated[name]
    return render.plan_vs_measured(plan_json, measured)
