"""Data stage: the evaluation-task types (EvalTask, Instance) and the table they register in.

An `EvalTask` knows how to build its fully formatted `Instance`s (k-shot demonstrations
included), its answer form, the pass-checker kind PassUntil uses, its random-guess
baseline and its stop strings. Every registered EvalTask is also a seqio Task named
`lmscale_eval.<name>` (features "inputs" = prompt, "targets" = target or gold choice) with
postprocessors and metric functions for greedy scoring.

Families (`lmscale.data.tasks.*`) import this module and register into it; it imports no
family back. Look tasks up through `lmscale.data.registry`, which loads the families first.
Parametrised names: a registered base name may take suffixes `:n<instances>`, `:s<seed>`,
`:k<shots>` and `:c<context chars>` when its family supports them, e.g.
"gen_uicl_dates:n500:s3:k2" or "py_identifier_copy:n400:c96".
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
from typing import Any, Callable, Sequence

from absl import logging

from lmscale.data import checkers

MULTIPLE_CHOICE = "multiple_choice"
GENERATIVE = "generative"
KINDS = (MULTIPLE_CHOICE, GENERATIVE)
SEQIO_PREFIX = "lmscale_eval."


@dataclasses.dataclass(frozen=True)
class Instance:
    """One evaluation instance.

    Attributes:
      id: unique within the task and split.
      prompt: the fully formatted model input (demonstrations included).
      target: the open target text (generative; for code, the reference solution, used
        for the answer loss), or None.
      choices: candidate continuations of `prompt` (multiple choice), or None.
      gold: index of the correct choice, or None.
      meta: extra fields: "input" (the raw query, used by filters); for code "test" and
        "entry_point"; for QA "aliases".
    """

    id: str
    prompt: str
    target: str | None = None
    choices: tuple[str, ...] | None = None
    gold: int | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


@dataclasses.dataclass(frozen=True)
class FilterReport:
    """What one instance filter removed, and why."""

    filter_name: str
    reason: str
    num_before: int
    removed_ids: tuple[str, ...]

    @property
    def num_removed(self) -> int:
        return len(self.removed_ids)


# An instance filter maps instances to (kept instances, report).
InstanceFilter = Callable[[list[Instance]], tuple[list[Instance], FilterReport]]


@dataclasses.dataclass(frozen=True)
class EvalTask:
    """An evaluation task: instances plus how to check and score them.

    Attributes:
      name: registry name.
      kind: MULTIPLE_CHOICE (score each choice) or GENERATIVE (sample, then check).
      checker: checkers.EXACT / CONTAINS / CODE, or None (scoring only).
      random_baseline: expected accuracy of a uniform random guess (1/num_choices for
        multiple choice; 0 for open generation).
      stop_strings: generation stops at (and the check cuts at) the first of these.
      max_new_tokens: generation budget, in tokens of a byte vocabulary.
      loader: split -> list of Instance (before filters and limit).
      family: e.g. "generated", "bigbench", "humaneval", "tfds", "python".
      description: one line for listings.
      num_shots: demonstrations in each prompt.
      splits: splits `loader` accepts.
      filters: distracting-instance filters applied in order (each reports removals).
      num_test: keep at most this many instances after filtering (None = all).
      answer_pattern: regex whose group is the answer in a chain-of-thought sample.
      partial_scoring: multiple choice whose choices are alternative contexts (after the
        prompt) followed by one shared continuation, the instance's `target`, scored by
        the continuation's log-likelihood (LLM-foundry's "schema" tasks: Winograd).
    """

    name: str
    kind: str
    checker: str | None
    random_baseline: float
    stop_strings: tuple[str, ...]
    max_new_tokens: int
    loader: Callable[[str], list[Instance]] = dataclasses.field(repr=False, compare=False)
    family: str = ""
    description: str = ""
    num_shots: int = 0
    splits: tuple[str, ...] = ("test",)
    filters: tuple[InstanceFilter, ...] = dataclasses.field(default=(), repr=False,
                                                             compare=False)
    num_test: int | None = None
    answer_pattern: str | None = None
    partial_scoring: bool = False

    def __post_init__(self):
        if not re.fullmatch(r"[\w.:]+", self.name):
            raise ValueError(f"EvalTask name {self.name!r}: use letters, digits, '_', '.', ':'")
        if self.kind not in KINDS:
            raise ValueError(f"EvalTask {self.name}: kind={self.kind!r}, allowed {KINDS}")
        if self.checker is not None and self.checker not in checkers.CHECKERS:
            raise ValueError(f"EvalTask {self.name}: checker={self.checker!r}, allowed "
                             f"{checkers.CHECKERS} or None")
        if not 0.0 <= self.random_baseline <= 1.0:
            raise ValueError(f"EvalTask {self.name}: random_baseline="
                             f"{self.random_baseline} not in [0, 1]")
        if self.partial_scoring and self.kind != MULTIPLE_CHOICE:
            raise ValueError(f"EvalTask {self.name}: partial_scoring needs kind="
                             f"{MULTIPLE_CHOICE!r}, not {self.kind!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"EvalTask {self.name}: max_new_tokens={self.max_new_tokens}")

    def instances(self, split: str = "test", limit: int | None = None) -> list[Instance]:
        """Formatted, validated, filtered instances of `split` (at most `limit`)."""
        return self.instances_with_reports(split, limit)[0]

    def instances_with_reports(self, split: str = "test", limit: int | None = None
                               ) -> tuple[list[Instance], list[FilterReport]]:
        """As `instances`, plus one FilterReport per filter.

        Raises:
          ValueError: unknown split, or an instance violates its task's answer form.
        """
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has no split {split!r}; splits: "
                             f"{self.splits}")
        items = list(self.loader(split))
        reports = []
        for flt in self.filters:
            items, report = flt(items)
            reports.append(report)
            logging.info("%s[%s]: filter %s removed %d of %d (%s)", self.name, split,
                         report.filter_name, report.num_removed, report.num_before,
                         report.reason)
        if self.num_test is not None:
            items = items[: self.num_test]
        if limit is not None:
            items = items[:limit]
        for inst in items:
            self._check(inst)
        return items, reports

    def _check(self, inst: Instance) -> None:
        where = f"task {self.name!r}, instance {inst.id!r}"
        if self.kind == MULTIPLE_CHOICE:
            if not inst.choices or inst.gold is None or not 0 <= inst.gold < len(inst.choices):
                raise ValueError(f"{where}: multiple choice needs choices and a gold index "
                                 f"in range (choices={inst.choices}, gold={inst.gold})")
            if self.partial_scoring and not inst.target:
                raise ValueError(f"{where}: partial scoring needs the shared continuation "
                                 f"as the target (target={inst.target!r})")
        elif inst.target is None:
            raise ValueError(f"{where}: generative instance has no target")


_TASKS: dict[str, EvalTask] = {}
# Parametric families: base name -> factory(name, num, seed, shots) with None = default.
_FACTORIES: dict[str, Callable[..., EvalTask]] = {}
_SUFFIX = re.compile(r":([nskc])(\d+)")


def register_eval_task(task: EvalTask, with_seqio: bool = True) -> EvalTask:
    """Adds `task` (replacing one of the same name) and its seqio Task."""
    _TASKS[task.name] = task
    if with_seqio:
        from lmscale.data import seqio_tasks  # seqio/TF imported only when registering

        seqio_tasks.register(task, SEQIO_PREFIX + task.name)
    return task


def register_factory(base: str, factory: Callable[..., EvalTask]) -> None:
    """Lets `get_eval_task("<base>:n<num>:s<seed>:k<shots>")` build variants of `base`."""
    _FACTORIES[base] = factory


def names() -> list[str]:
    """Sorted names of the tasks registered so far."""
    return sorted(_TASKS)


def lookup(name: str) -> EvalTask:
    """The registered task `name` among those registered so far, building variants.

    Raises:
      KeyError: unknown name; the message lists close names and how many are known.
    """
    if name in _TASKS:
        return _TASKS[name]
    base = name.split(":", 1)[0]
    if base in _FACTORIES and ":" in name:
        rest = name[len(base):]
        params = dict((k, int(v)) for k, v in _SUFFIX.findall(rest))
        if _SUFFIX.sub("", rest):
            raise KeyError(f"bad suffix {rest!r} in task name {name!r}; use :n<num>, "
                           f":s<seed>, :k<shots>, :c<context chars>")
        extra = {}
        if "c" in params:
            if "context" not in inspect.signature(_FACTORIES[base]).parameters:
                raise KeyError(f"task name {name!r}: family {base!r} takes no :c<context "
                               f"chars> suffix")
            extra["context"] = params["c"]
        return register_eval_task(_FACTORIES[base](name=name, num=params.get("n"),
                                                   seed=params.get("s"),
                                                   shots=params.get("k"), **extra))
    close = difflib.get_close_matches(name, list(_TASKS), n=5, cutoff=0.5)
    raise KeyError(f"unknown eval task {name!r}; close matches: {close}; "
                   f"{len(_TASKS)} known (list_eval_tasks()); parametric bases: "
                   f"{sorted(_FACTORIES)}")


def format_demonstrations(demos: Sequence[tuple[str, str]], query: str, input_prefix: str,
                          output_prefix: str, separator: str, task_prefix: str = "") -> str:
    """BIG-bench-style prompt: prefix, then `in_pfx + x + out_pfx + y` joined by `separator`,
    then the query `in_pfx + query + out_pfx` (the model continues with the answer)."""
    shots = [f"{input_prefix}{x}{output_prefix}{y}" for x, y in demos]
    return task_prefix + separator.join(shots + [f"{input_prefix}{query}{output_prefix}"])
