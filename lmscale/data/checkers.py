"""Data stage: names of pass-checker kinds and the pure-string checks behind seqio metrics.

A task only *names* its checker kind; `lmscale.eval` binds each kind to an implementation
(CODE to the execution sandbox). The string checks here (cut at a stop string, exact
match, "output contains target", answer extraction) are what those kinds mean for text,
and are also used as seqio postprocessors / metric functions for greedy scoring.
"""
from __future__ import annotations

import functools
import re
import string
from typing import Sequence

EXACT = "exact"          # sample, cut at the first stop string and stripped, equals target
CONTAINS = "contains"    # target occurs in the cut sample (Hu et al.'s Emoji Movie / dates)
CODE = "code"            # prompt + sample passes the instance's unit tests (eval sandbox)
# SQuAD-normalised answer (lowercase; punctuation, articles, extra whitespace dropped)
# equals the normalised target or one of the instance's aliases (TriviaQA, SQuAD).
EXACT_NORM = "exact_norm"
NUMBER = "number"        # the last number in the sample equals the target number (GSM8K)
LAST_WORD = "last_word"  # the sample's first word is the passage's last word (LAMBADA)
STRING_CHECKS = (EXACT, CONTAINS, EXACT_NORM, NUMBER, LAST_WORD)
CHECKERS = STRING_CHECKS + (CODE,)

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_WORD = re.compile(r"[^\s" + re.escape(string.punctuation) + r"]+")


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, drop punctuation, the articles a/an/the,
    and collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def last_number(text: str) -> str:
    """The last number in `text`, commas and a trailing '.0...' dropped ('' when none)."""
    found = _NUMBER.findall(text)
    if not found:
        return ""
    num = found[-1].replace(",", "")
    if "." in num:
        num = num.rstrip("0").rstrip(".")
    return num


def first_word(text: str) -> str:
    """The first word of `text` (leading whitespace skipped, cut at whitespace or
    punctuation): a LAMBADA sample continues the passage with its last word."""
    m = _WORD.search(text)
    return m.group(0) if m else ""


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """`text` up to (not including) the earliest of `stop_strings` (empty ones ignored)."""
    if not stop_strings:
        return text
    m = _stop_pattern(tuple(stop_strings)).search(text)
    return text if m is None else text[:m.start()]


@functools.lru_cache(maxsize=256)
def _stop_pattern(stop_strings: tuple[str, ...]) -> "re.Pattern":
    """One regex finding the earliest stop: a PassUntil check cuts ~10^5 texts at the
    identifier tasks' 28 stops, where one `str.find` per stop took 2.7 us a text, the
    regex 0.4 us (this host)."""
    stops = sorted({s for s in stop_strings if s}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, stops)) if stops else "(?!)")


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


def prediction(kind: str, sample: str, stop_strings: Sequence[str] = (),
               answer_pattern: str | None = None) -> str:
    """What a string check compares: the sample cut at the stop strings, then the kind's
    answer (the pattern's answer, SQuAD-normalised for EXACT_NORM; the last number; the
    first word). CONTAINS keeps the whole cut text.

    Raises:
      ValueError: `kind` is not a string check.
    """
    if kind not in STRING_CHECKS:
        raise ValueError(f"checker {kind!r} is not a string check; string checks: "
                         f"{STRING_CHECKS}")
    text = cut_at_stop(sample, stop_strings)
    if kind == CONTAINS:
        return text
    if kind == NUMBER:
        return last_number(extract_answer(text, answer_pattern) if answer_pattern
                           else text)
    if kind == LAST_WORD:
        return first_word(text)
    answer = extract_answer(text, answer_pattern)
    return normalize_answer(answer) if kind == EXACT_NORM else answer


def reference(kind: str, target: str) -> str:
    """The target as the kind compares it (normalised for EXACT_NORM / NUMBER)."""
    if kind == EXACT_NORM:
        return normalize_answer(target)
    if kind == NUMBER:
        return last_number(target)
    return target.strip()


def passes(kind: str, sample: str, target: str, stop_strings: Sequence[str] = (),
           answer_pattern: str | None = None, aliases: Sequence[str] = ()) -> bool:
    """Whether a text `sample` passes a string check (every kind but CODE).

    `aliases` are further accepted targets (TriviaQA's answer aliases, SQuAD's several
    answers); `target` is always accepted.

    Raises:
      ValueError: `kind` is CODE (needs the sandbox) or unknown.
    """
    pred = prediction(kind, sample, stop_strings, answer_pattern)
    refs = {reference(kind, t) for t in (target, *aliases)}
    if kind == CONTAINS:
        return any(r in pred for r in refs)
    if kind == EXACT:
        return pred in refs
    return pred != "" and pred in refs  # an empty answer never matches a normalised one


def exact_match_metric(targets: Sequence[str], predictions: Sequence[str]) -> dict:
    """seqio metric: percent of predictions equal to targets (already postprocessed)."""
    hits = sum(t.strip() == p.strip() for t, p in zip(targets, predictions))
    return {"exact_match": 100.0 * hits / max(len(targets), 1)}


def contains_metric(targets: Sequence[str], predictions: Sequence[str]) -> dict:
    """seqio metric: percent of predictions that contain their target."""
    hits = sum(t.strip() in p for t, p in zip(targets, predictions))
    return {"contains": 100.0 * hits / max(len(targets), 1)}
