"""Data stage: names of pass-checker kinds and the pure-string checks behind seqio metrics.

A task only *names* its checker kind; `lmscale.eval` binds each kind to an implementation
(CODE to the execution sandbox). The string checks here (cut at a stop string, exact
match, "output contains target", answer extraction) are what those kinds mean for text,
and are also used as seqio postprocessors / metric functions for greedy scoring.
"""
from __future__ import annotations

import re
from typing import Sequence

EXACT = "exact"          # sample, cut at the first stop string and stripped, equals target
CONTAINS = "contains"    # target occurs in the cut sample (Hu et al.'s Emoji Movie / dates)
CODE = "code"            # prompt + sample passes the instance's unit tests (eval sandbox)
CHECKERS = (EXACT, CONTAINS, CODE)


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """`text` up to (not including) the earliest of `stop_strings`."""
    end = len(text)
    for stop in stop_strings:
        i = text.find(stop) if stop else -1
        if 0 <= i < end:
            end = i
    return text[:end]


def extract_answer(text: str, pattern: str | None) -> str:
    """The first group of `pattern`'s last match in `text` (whole text without a pattern).

    Used for chain-of-thought tasks, where only the final answer is compared (GSM8K:
    "The answer is 72."). Commas in numbers are dropped. No match gives "".
    """
    if pattern is None:
        return text.strip()
    matches = re.findall(pattern, text)
    if not matches:
        return ""
    last = matches[-1]
    last = last[0] if isinstance(last, tuple) else last
    return last.replace(",", "").rstrip(".").strip()


def passes(kind: str, sample: str, target: str, stop_strings: Sequence[str] = (),
           answer_pattern: str | None = None) -> bool:
    """Whether a text `sample` passes for the string kinds EXACT and CONTAINS.

    Raises:
      ValueError: `kind` is CODE (needs the sandbox) or unknown.
    """
    text = cut_at_stop(sample, stop_strings)
    if kind == EXACT:
        return extract_answer(text, answer_pattern) == target.strip()
    if kind == CONTAINS:
        return target.strip() in text
    raise ValueError(f"checker {kind!r} is not a string check; string checks: "
                     f"{(EXACT, CONTAINS)}")


def exact_match_metric(targets: Sequence[str], predictions: Sequence[str]) -> dict:
    """seqio metric: percent of predictions equal to targets (already postprocessed)."""
    hits = sum(t.strip() == p.strip() for t, p in zip(targets, predictions))
    return {"exact_match": 100.0 * hits / max(len(targets), 1)}


def contains_metric(targets: Sequence[str], predictions: Sequence[str]) -> dict:
    """seqio metric: percent of predictions that contain their target."""
    hits = sum(t.strip() in p for t, p in zip(targets, predictions))
    return {"contains": 100.0 * hits / max(len(targets), 1)}
