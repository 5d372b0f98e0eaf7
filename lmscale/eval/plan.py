"""The evaluation plan: every unit of work (run, checkpoint, task, settings), and its context.

Stage: eval. `plan_evaluation` turns runs (a `RunCheckpoints` each: directory, run record,
evaluation checkpoint steps) and tasks into an `EvalPlan` of `EvalUnit`s, one per (run,
step, task) plus the validation-loss pseudo-task and, for the tasks asked for, a
greedy-decoding unit, each marked complete when the results file already holds its
`UNIT_COMPLETE` row. It chooses per unit what the study needs:
final vs intermediate checkpoints (`final_only`, `intermediate_passuntil`) and per-instance
PassUntil caps. `lmscale.eval.runner.execute` runs the plan's incomplete units with one
`EvalContext` (results file, checkpoint source, configs, hooks, mesh), restoring each
checkpoint once for all of its units.

Importing this module needs only the standard library, `lmscale.eval.results` and the task
kind names of `lmscale.data.evaltask` (no JAX).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from lmscale.data.evaltask import MULTIPLE_CHOICE as _MC_TASK
from lmscale.eval import results as R

# Unit kinds.
VALIDATION = "validation"            # held-out loss (the pseudo-task `R.VALIDATION_TASK`)
MULTIPLE_CHOICE = "multiple_choice"  # likelihood scorer
PASSUNTIL = "passuntil"              # generative task with a checker: sampler + PassUntil
ANSWER_LOSS = "answer_loss"          # generative task without a checker: target NLL only
GREEDY = "greedy"  # generative task with a checker, decoded greedily (`lmscale.eval.greedy`)
KINDS = (VALIDATION, MULTIPLE_CHOICE, PASSUNTIL, ANSWER_LOSS, GREEDY)


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """Where runs and their parameters come from (default: `lmscale.train`).

    Attributes:
      load_record: run_dir -> its `lmscale.train.record.RunRecord`.
      list_steps: run_dir -> eval checkpoint steps.
      restore_params: (run_dir, step, config, mesh) -> unboxed params, placed with the
        model's shardings on `mesh` (a `jax.sharding.Mesh`); a source that ignores `mesh`
        may return host or one-device arrays: the evaluator places them onto the mesh.
    """

    load_record: Callable[[str], Any]
    list_steps: Callable[[str], list[int]]
    restore_params: Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class RunCheckpoints:
    """One run to evaluate: its directory, `RunRecord` and evaluation checkpoint steps."""

    run_dir: str
    record: Any
    steps: tuple[int, ...]

    @property
    def run_name(self) -> str:
        import pathlib

        return self.record.run_name or pathlib.Path(self.run_dir).name

    def is_final(self, step: int) -> bool:
        return int(step) == int(self.record.num_steps)


@dataclasses.dataclass(frozen=True)
class EvalUnit:
    """One (run, checkpoint, task) unit and the settings it runs with.

    Attributes:
      run_dir, run_name, step: the checkpoint.
      task_name: the task (`R.VALIDATION_TASK` for validation loss).
      kind: one of `KINDS`.
      final: the run's last step.
      passuntil: the `PassUntilConfig` of a PassUntil unit (None otherwise).
      caps: instance id -> k_max for a PassUntil unit; instances not named use
        `passuntil.k_max` (None: all do).
      complete: the results file already holds the unit's `UNIT_COMPLETE` row.
    """

    run_dir: str
    run_name: str
    step: int
    task_name: str
    kind: str
    final: bool
    passuntil: Any = None
    caps: Mapping[str, int] | None = None
    complete: bool = False

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.run_name, self.step, self.task_name)

    @property
    def source_task(self) -> str:
        """The evaluated task's name (a greedy unit's `task_name` is `R.greedy_task` of it)."""
        if self.kind == GREEDY:
            return self.task_name[:-len(R.GREEDY_TASK_SUFFIX)]
        return self.task_name

    def cap(self, instance_id: str) -> int:
        """The sample cap of one PassUntil instance."""
        if self.caps is not None and instance_id in self.caps:
            return int(self.caps[instance_id])
        return int(self.passuntil.k_max)


@dataclasses.dataclass(frozen=True)
class EvalPlan:
    """Every unit of an evaluation, in execution order (run, step, then task order).

    Attributes:
      units: all units, complete ones included (`todo` lists the rest).
      runs: the runs planned, in order.
      tasks: the task objects (`EvalTask`), by name.
    """

    units: tuple[EvalUnit, ...]
    runs: tuple[RunCheckpoints, ...]
    tasks: Mapping[str, Any]

    def todo(self) -> tuple[EvalUnit, ...]:
        return tuple(u for u in self.units if not u.complete)

    def checkpoints(self) -> list[tuple[RunCheckpoints, int, tuple[EvalUnit, ...]]]:
        """(run, step, its incomplete units) for each checkpoint with work left, in order."""
        by_dir = {r.run_dir: r for r in self.runs}
        out: dict[tuple[str, int], list[EvalUnit]] = {}
        for unit in self.todo():
            out.setdefault((unit.run_dir, unit.step), []).append(unit)
        return [(by_dir[d], s, tuple(us)) for (d, s), us in out.items()]

    def describe(self) -> str:
        """E.g. '3 runs, 12 checkpoints, 36 units (30 done earlier, 6 to run)'."""
        checkpoints = {(u.run_dir, u.step) for u in self.units}
        todo = len(self.todo())
        return (f"{len(self.runs)} runs, {len(checkpoints)} checkpoints, {len(self.units)} "
                f"units ({len(self.units) - todo} done earlier, {todo} to run)")


def unit_kind(task) -> str:
    """The unit kind of an `EvalTask`."""
    if task.kind == _MC_TASK:
        return MULTIPLE_CHOICE
    return ANSWER_LOSS if task.checker is None else PASSUNTIL


def _check_caps(caps, tasks: Mapping[str, Any], r: int) -> None:
    for task_name, per_instance in (caps or {}).items():
        if task_name not in tasks:
            raise ValueError(f"passuntil_caps: task {task_name!r} is not evaluated "
                             f"(tasks: {sorted(tasks)})")
        if unit_kind(tasks[task_name]) != PASSUNTIL:
            raise ValueError(f"passuntil_caps: task {task_name!r} is not a PassUntil task")
        for instance_id, cap in per_instance.items():
            if isinstance(cap, bool) or not isinstance(cap, int) or cap < r:
                raise ValueError(f"passuntil_caps[{task_name!r}][{instance_id!r}]={cap!r}: "
                                 f"must be an int >= r={r}")


def plan_evaluation(runs: Sequence[RunCheckpoints], tasks: Sequence, *,
                    passuntil: Any = None, validation: bool = True,
                    steps: Sequence[int] | None = None, final_only: bool = False,
                    intermediate_passuntil: Any = None,
                    caps: Mapping[str, Mapping[str, int]] | None = None,
                    done: Callable[[str, int, str], bool] = lambda run, step, task: False,
                    greedy_tasks: Sequence = ()) -> EvalPlan:
    """Lists every unit of an evaluation and marks those already complete.

    Args:
      runs: the runs with their evaluation checkpoints.
      tasks: `EvalTask` objects.
      passuntil: the `PassUntilConfig` of PassUntil units (needed when a task has a checker).
      validation: plan a validation-loss unit per checkpoint.
      steps: only these checkpoint steps (None: every one listed in `runs`).
      final_only: only each run's final checkpoint.
      intermediate_passuntil: PassUntil settings of the non-final checkpoints (e.g. a lower
        k_max); None: `passuntil`, caps included.
      caps: task name -> instance id -> k_max, for units run with `passuntil`.
      done: (run name, step, task name) -> already complete (e.g.
        `ResultsFile.is_complete`).
      greedy_tasks: generative `EvalTask`s with a checker to decode greedily as well (a
        GREEDY unit per checkpoint, after the others, named `R.greedy_task(name)`); they
        need not be among `tasks`.

    Returns:
      The `EvalPlan`.

    Raises:
      ValueError: two tasks share a name, caps name an unknown or non-PassUntil task or a
        cap below r, a PassUntil task has no `passuntil` settings, or a greedy task is not
        generative with a checker.
    """
    by_name: dict[str, Any] = {}
    for task in tasks:
        if task.name in by_name or task.name == R.VALIDATION_TASK:
            raise ValueError(f"plan_evaluation: task name {task.name!r} given twice (or "
                             f"reserved)")
        by_name[task.name] = task
    if passuntil is None and any(unit_kind(t) == PASSUNTIL for t in by_name.values()):
        raise ValueError("plan_evaluation: PassUntil tasks need `passuntil` settings")
    _check_caps(caps, by_name, getattr(passuntil, "r", 1))
    greedy = _greedy_tasks(greedy_tasks, by_name)
    wanted = None if steps is None else {int(s) for s in steps}
    units = []
    for run in runs:
        for step in run.steps:
            final = run.is_final(step)
            if (wanted is not None and step not in wanted) or (final_only and not final):
                continue
            names = ([R.VALIDATION_TASK] if validation else []) + list(by_name)
            for name in names:
                kind = VALIDATION if name == R.VALIDATION_TASK else unit_kind(by_name[name])
                pu, unit_caps = None, None
                if kind == PASSUNTIL:
                    pu = passuntil if final or intermediate_passuntil is None \
                        else intermediate_passuntil
                    unit_caps = (caps or {}).get(name) if pu is passuntil else None
                units.append(EvalUnit(
                    run_dir=run.run_dir, run_name=run.run_name, step=int(step),
                    task_name=name, kind=kind, final=final, passuntil=pu, caps=unit_caps,
                    complete=bool(done(run.run_name, int(step), name))))
            for name in greedy:
                unit_name = R.greedy_task(name)
                units.append(EvalUnit(
                    run_dir=run.run_dir, run_name=run.run_name, step=int(step),
                    task_name=unit_name, kind=GREEDY, final=final,
                    complete=bool(done(run.run_name, int(step), unit_name))))
    return EvalPlan(units=tuple(units), runs=tuple(runs), tasks={**greedy, **by_name})


def _greedy_tasks(tasks: Sequence, by_name: Mapping[str, Any]) -> dict[str, Any]:
    """Greedy tasks by name (checked: generative with a checker, one object per name)."""
    out: dict[str, Any] = {}
    for task in tasks:
        if task.kind == _MC_TASK or task.checker is None:
            raise ValueError(f"greedy_tasks: task {task.name!r} is not a generative task "
                             f"with a checker (kind={task.kind!r}, checker={task.checker!r})")
        if task.name in out or (task.name in by_name and by_name[task.name] != task):
            raise ValueError(f"greedy_tasks: task name {task.name!r} given twice")
        out[task.name] = task
    return out


@dataclasses.dataclass(frozen=True)
class EvalContext:
    """Everything the execution of a plan needs besides the plan (one object, passed down).

    Attributes:
      results: the `ResultsFile` rows go to.
      source: the `CheckpointSource`.
      passuntil: default `PassUntilConfig` (units carry their own).
      validation: the `ValidationConfig`.
      split: task split evaluated.
      limit: at most this many instances per task (None: all).
      score_batch_questions: questions prefilled together by the scorer.
      sandbox_timeout_s: wall-clock limit of one "code" check.
      draw_factory: `(sampler, prompt, checker_fn, seed) -> draw` for PassUntil; None uses
        the sampler directly (several prompts per call when
        `PassUntilConfig.prompts_per_call` > 1).
      stream_factory: `(corpus, split, seq_len, batch, vocab_spec) -> batches`.
      mesh: where parameters go: a `jax.sharding.Mesh`, an `lmscale.train.state.MeshConfig`
        over all devices, or None (the run record's mesh when it matches the device
        count, else every device along fsdp).
      pu_reference: time the sampler alone on the largest PassUntil unit's shapes after
        the plan (`EvalSummary.pu_alone_per_s`).
    """

    results: R.ResultsFile
    source: CheckpointSource
    passuntil: Any
    validation: Any
    split: str = "test"
    limit: int | None = None
    score_batch_questions: int = 8
    sandbox_timeout_s: float = 10.0
    draw_factory: Callable | None = None
    stream_factory: Callable | None = None
    mesh: Any = None
    pu_reference: bool = False
