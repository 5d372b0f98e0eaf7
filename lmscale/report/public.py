"""Public-ladder study: evaluate downloaded Hugging Face checkpoints, fit, predict, report.

Stage: report. The study of `lmscale.report.study` without its training stage: the runs
are the checkpoints of a `lmscale.eval.public.PublicLadder` (sizes x training steps of a
published ladder, e.g. Pythia revisions fetched beforehand), evaluated by the same
`lmscale.eval.runner.evaluate` through `public_source`, then analysed and reported by the
same functions (`analysis.analyze`, `figures.write_figures`, `markdown.write_report`).
Resumable like the study: finished (run, checkpoint, task) units are skipped and the
analysis is recomputed from the results file.

Outputs in the workdir: `results.jsonl`, `report.md`, `results.json`, PNG figures and the
resolved configuration `config.gin` when given.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Sequence

from absl import logging

from lmscale.eval import public as public_lib
from lmscale.eval import results as results_lib
from lmscale.eval import runner
from lmscale.models import ConfigError, ModelConfig
from lmscale.report import analysis as analysis_lib
from lmscale.report import figures as figures_lib
from lmscale.report import markdown
from lmscale.report import study as study_lib


@dataclasses.dataclass(frozen=True)
class PublicStudyConfig:
    """What the public-ladder study measures and predicts (`StudyConfig`'s evaluation
    fields, with a `PublicLadder` in place of the trained ladder).

    Attributes:
      ladder: the checkpoints and their N and D.
      mc_tasks: multiple-choice tasks scored by likelihood.
      passuntil_tasks: generative tasks evaluated by PassUntil.
      instances: instances per task (None: all).
      passuntil: PassUntil settings on final checkpoints.
      intermediate_k_max: sample cap on intermediate checkpoints (None: the same).
      validation: validation-loss settings (its corpus defaults to the ladder's).
      held_out: number of largest rungs excluded from every fit and predicted.
      targets: models to predict, "N=<non-embedding N>,D=<tokens>" (or "N=..,M=..",
        "d_model=W" in the largest model's shape family), optional "name=..." part.
      level: nominal coverage of every prediction interval.
    """

    ladder: public_lib.PublicLadder
    mc_tasks: tuple[str, ...] = ()
    passuntil_tasks: tuple[str, ...] = ()
    instances: int | None = None
    passuntil: runner.PassUntilConfig = runner.PassUntilConfig()
    intermediate_k_max: int | None = None
    validation: runner.ValidationConfig = runner.ValidationConfig()
    held_out: int = 1
    targets: tuple[str, ...] = ()
    level: float = 0.9

    def __post_init__(self):
        for name in ("mc_tasks", "passuntil_tasks", "targets"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not 0 < self.level < 1:
            raise ConfigError(f"PublicStudyConfig.level={self.level}: must lie in (0, 1)")
        if self.held_out < 1:
            raise ConfigError(f"PublicStudyConfig.held_out={self.held_out}: must be >= 1")
        if self.instances is not None and self.instances < 1:
            raise ConfigError(f"PublicStudyConfig.instances={self.instances}: >= 1 or None")
        if self.intermediate_k_max is not None and self.intermediate_k_max < self.passuntil.r:
            raise ConfigError(f"PublicStudyConfig.intermediate_k_max={self.intermediate_k_max}"
                              f" < PassUntil r={self.passuntil.r}")

        if not self.validation.enabled or not (self.validation.corpus or self.ladder.corpus):
            raise ConfigError("PublicStudyConfig: the report needs validation loss; set "
                              "PublicLadder.corpus (or ValidationConfig.corpus) and keep "
                              "ValidationConfig.enabled")

    @property
    def tasks(self) -> list[str]:
        return list(self.mc_tasks) + list(self.passuntil_tasks)


def check_rungs(config: PublicStudyConfig, runs: dict[str, public_lib.PublicRun]) -> None:
    """Fails before any evaluation when the runs give too few rungs for the analysis."""
    rungs = {(r.record.N, r.record.D) for r in runs.values()}
    if len(rungs) < config.held_out + 3:
        raise ConfigError(
            f"PublicStudyConfig: {len(runs)} run(s) give {len(rungs)} rung(s) (distinct N, "
            f"final D); with held_out={config.held_out} the loss law needs "
            f">= {config.held_out + 3}: add models, or set PublicLadder.per_checkpoint_runs "
            f"= True to make every checkpoint a rung")


def evaluate_runs(config: PublicStudyConfig, runs: dict[str, public_lib.PublicRun],
                  results_path: pathlib.Path) -> results_lib.ResultsFile:
    """Evaluates every checkpoint of every run: full PassUntil on each run's final
    checkpoint, `intermediate_k_max` on the others (as the study does)."""
    source = public_lib.public_source(runs)
    intermediate = config.passuntil if config.intermediate_k_max is None else \
        dataclasses.replace(config.passuntil, k_max=config.intermediate_k_max)
    common = dict(results_path=str(results_path), validation=config.validation,
                  limit=config.instances, source=source)
    results = None
    for name, run in runs.items():
        final = run.record.num_steps
        results = runner.evaluate([name], config.tasks, steps=[final],
                                  passuntil_config=config.passuntil, **common)
        others = [s for s in run.record.checkpoints if s != final]
        if others:
            results = runner.evaluate([name], config.tasks, steps=others,
                                      passuntil_config=intermediate, **common)
        logging.info("public ladder: %s: %d checkpoint(s) evaluated", name, 1 + len(others))
    return results


def resolved_targets(config: PublicStudyConfig, runs: dict[str, public_lib.PublicRun]
                     ) -> list[tuple[str, int, int]]:
    """The targets as (name, non-embedding N, D): "d_model=W" scales the largest run's
    model at its D / N (`study.resolve_target`)."""
    largest = max(runs.values(), key=lambda r: (r.record.N, r.record.D)).record
    family = ModelConfig(**largest.model_config)
    return [study_lib.resolve_target(t, family, largest.D / largest.N) for t in config.targets]


def report(config: PublicStudyConfig, workdir: pathlib.Path,
           runs: dict[str, public_lib.PublicRun], rows: Sequence,
           setup: dict[str, Any]) -> dict[str, Any]:
    """Fits and predicts from the rows; writes report.md, results.json and figures (the
    calls of `study.analyze_and_report`, which takes a trained ladder's StudyConfig)."""
    from lmscale.data import registry

    baselines = {t: registry.get_eval_task(t).random_baseline for t in config.mc_tasks}
    analysis = analysis_lib.analyze(
        rows, {name: run.record for name, run in runs.items()}, mc_tasks=config.mc_tasks,
        passuntil_tasks=config.passuntil_tasks, random_baselines=baselines,
        held_out=config.held_out, passuntil_r=config.passuntil.r,
        passuntil_k_max=config.passuntil.k_max, targets=resolved_targets(config, runs),
        level=config.level)
    figures = figures_lib.write_figures(analysis, workdir)
    markdown.write_report(analysis, figures, workdir, title=config.ladder.name, setup=setup)
    return analysis


def _setup(config: PublicStudyConfig, runs: dict[str, public_lib.PublicRun],
           eval_s: float) -> dict[str, Any]:
    ladder = config.ladder
    return {
        "public ladder": ", ".join(
            f"{name} (N={r.record.N:,}, {len(r.record.checkpoints)} checkpoint(s), final "
            f"D={r.record.D:,})" for name, r in runs.items()),
        "root": ladder.root,
        "runs": "one per checkpoint" if ladder.per_checkpoint_runs else "one per model",
        "validation corpus / vocabulary": (
            f"{config.validation.corpus or ladder.corpus or '-'} / "
            f"{ladder.vocab_spec or 'each model tokenizer.json'}"),
        "multiple-choice tasks": list(config.mc_tasks),
        "PassUntil tasks": list(config.passuntil_tasks),
        "PassUntil": (f"r={config.passuntil.r}, k_max={config.passuntil.k_max} on final "
                      f"checkpoints, {config.intermediate_k_max or config.passuntil.k_max} "
                      f"on intermediate ones, temperature {config.passuntil.temperature}"),
        "instances per task": config.instances or "all",
        "evaluation wall time (s, this invocation)": round(eval_s, 1),
    }


def evaluate_public_ladder(config: PublicStudyConfig, workdir: str | pathlib.Path,
                           config_text: str | None = None) -> dict[str, Any]:
    """Evaluates (or resumes) every checkpoint of the public ladder, then fits, predicts
    and writes the report; returns the analysis dict.

    Args:
      config: the ladder, tasks and evaluation settings.
      workdir: where results.jsonl, report.md, results.json and the figures go.
      config_text: the resolved gin configuration, saved as `<workdir>/config.gin`.
    """
    import jax

    start = time.time()
    root = pathlib.Path(workdir).absolute()
    root.mkdir(parents=True, exist_ok=True)
    if config_text and jax.process_index() == 0:
        (root / "config.gin").write_text(config_text, encoding="utf-8")
    runs = public_lib.build_runs(config.ladder)
    check_rungs(config, runs)
    results = evaluate_runs(config, runs, root / runner.RESULTS_FILE)
    if jax.process_index() != 0:
        return {}
    setup = _setup(config, runs, time.time() - start)
    setup["device"] = f"{jax.device_count()} x {jax.devices()[0].platform}"
    analysis = report(config, root, runs, results.rows, setup)
    logging.info("public ladder %r: report written to %s (%.0fs in all)", config.ladder.name,
                 root / "report.md", time.time() - start)
    return analysis
