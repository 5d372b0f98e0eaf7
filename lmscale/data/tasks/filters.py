"""Data stage: filters that drop "distracting" instances (Hu et al., App. D.5).

Each filter returns the kept instances and a `evaltask.FilterReport` naming how many it
removed, which, and why; `EvalTask.instances_with_reports` logs and returns the reports.
Filters read the raw query from `instance.meta["input"]`, never the demonstrations.
"""
from __future__ import annotations

import re
from typing import Iterable

from lmscale.data import evaltask
from lmscale.data.tasks import wordlists


def _answer(inst: evaltask.Instance) -> str:
    if inst.target is not None:
        return inst.target
    return inst.choices[inst.gold] if inst.choices and inst.gold is not None else ""


def _apply(name, reason, items, drop):
    kept, removed = [], []
    for inst in items:
        (removed if drop(inst) else kept).append(inst)
    return kept, evaltask.FilterReport(name, reason, len(items),
                                       tuple(i.id for i in removed))


def common_word_targets(words: Iterable[str] = wordlists.COMMON_WORDS
                        ) -> evaltask.InstanceFilter:
    """Drops instances whose answer is a single common word (Emoji Movie's "it"): a
    "contains" check passes them by chance, whatever the model size."""
    vocab = frozenset(w.lower() for w in words)

    def flt(items):
        return _apply("common_word_targets", "answer is a common English word", items,
                      lambda i: _answer(i).strip().lower() in vocab)

    return flt


def _numbers(text: str) -> set[int]:
    return {int(n) for n in re.findall(r"\d+", text)}


def answerable_by_copying() -> evaltask.InstanceFilter:
    """Drops instances whose answer can be copied from the question: the answer occurs in
    it verbatim, or every number of the answer does (Date Understanding, Hu et al. Table 8:
    "Today is 9/7. Jane is watching NFL 2003. What is the date today ...")."""
    def copyable(inst):
        query, answer = inst.meta.get("input", ""), _answer(inst).strip()
        if not answer:
            return False
        if answer in query:
            return True
        nums = _numbers(answer)
        return bool(nums) and not re.search(r"[A-Za-z]", answer) and nums <= _numbers(query)

    def flt(items):
        return _apply("answerable_by_copying", "answer can be copied from the question",
                      items, copyable)

    return flt
