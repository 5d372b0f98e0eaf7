"""Tests of lmscale.eval.checkers: checker kinds bound to string checks and the sandbox."""

import dataclasses

import pytest

from lmscale.data import registry
from lmscale.eval import checkers


@dataclasses.dataclass(frozen=True)
class _Task:
    name: str
    checker: str | None
    stop_strings: tuple = ("\n",)
    answer_pattern: str | None = None


def _inst(target="42", meta=None, prompt="Q: 6*7=\nA:"):
    return registry.Instance("i0", prompt, target, meta=meta or {})


def test_exact_cuts_at_stop_and_strips():
    check = checkers.make_checker(_Task("t", "exact"), _inst())
    assert check(" 42\nQ: next")
    assert not check(" 421")
    assert not check("The answer is 42")


def test_contains_finds_target_before_stop():
    check = checkers.make_checker(_Task("t", "contains"), _inst())
    assert check("The answer is 42.")
    assert not check("The answer\n is 42")  # after the stop string


def test_exact_with_answer_pattern():
    task = _Task("t", "exact", stop_strings=(), answer_pattern=r"answer is (\d[\d,]*)")
    check = checkers.make_checker(task, _inst(target="1200"))
    assert check("so 600 + 600; the answer is 1,200.")
    assert not check("the answer is 12")


def test_code_humaneval_canonical_passes_and_corrupted_fails():
    task = registry.get_eval_task("humaneval")
    inst = task.instances(limit=1)[0]
    check = checkers.make_checker(task, inst, timeout_s=20.0)
    assert check(inst.target)
    assert not check("    return True\n")
    assert check.isolation in ("bwrap", "unshare")  # a constant answer fails the unit tests


def test_code_with_test_only():
    meta = {"test": "assert add(2, 3) == 5"}
    task, inst = _Task("t", "code"), _inst(meta=meta, prompt="def add(a, b):\n")
    check = checkers.make_checker(task, inst, timeout_s=20.0)
    program = checkers.code_program(task, inst, "    return a + b\n")
    assert program == "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n"
    assert check("    return a + b\n")
    assert not check("    return a - b\n")


def test_missing_pieces_are_named():
    with pytest.raises(ValueError, match=r"task 'nochk'.*checker=None"):
        checkers.make_checker(_Task("nochk", None), _inst())
    with pytest.raises(ValueError, match=r"instance 'i0'.*meta\['test'\]"):
        checkers.make_checker(_Task("c", "code"), _inst(meta={"entry_point": "f"}))
    with pytest.raises(ValueError, match=r"instance 'i0'.*needs a target"):
        checkers.make_checker(_Task("e", "exact"), _inst(target=None))


def test_cut_at_stop_cuts_at_the_earliest_stop_of_many():
    """The one-regex cut equals the earliest `str.find` of any stop (empty stops ignored,
    overlapping and prefix-sharing stops, regex metacharacters)."""
    import random

    from lmscale.data.checkers import cut_at_stop

    def naive(text, stops):
        found = [text.find(s) for s in stops if s and s in text]
        return text[:min(found)] if found else text

    stops = ("", "ab", "b", "bab", ".", "(", "\n", "a*", "|")
    rng = random.Random(0)
    for _ in range(2000):
        text = "".join(rng.choice("ab.(*|\nx") for _ in range(rng.randint(0, 10)))
        chosen = tuple(rng.sample(stops, rng.randint(0, len(stops))))
        assert cut_at_stop(text, chosen) == naive(text, chosen), (text, chosen)
    assert cut_at_stop("x.y", ["."]) == "x"  # a list works too
