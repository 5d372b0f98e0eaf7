"""Graded Python tasks: every difficulty represented, answers determined by the context."""
import collections
import re

import pytest

from lmscale.data import registry


def test_identifier_tail_cycles_tail_lengths_and_copies_from_the_context():
    from lmscale.data import corpora
    val = "".join(corpora.stdlib_texts("validation"))
    task = registry.get_eval_task("py_identifier_tail:n48:c96")
    items = task.instances()
    assert len(items) == 48 and len({i.id for i in items}) == 48
    assert collections.Counter(i.meta["tail"] for i in items) == {t: 6 for t in range(1, 9)}
    for inst in items:
        assert len(inst.target) == inst.meta["tail"] and len(inst.prompt) <= 96
        word = re.search(r"\w+$", inst.prompt).group() + inst.target
        # The whole identifier occurs earlier in the prompt, and the text is real code.
        assert re.search(rf"\b{word}\b", inst.prompt[: -len(word) + len(inst.target)])
        assert inst.prompt + inst.target in val
    assert task.max_new_tokens >= 9 and "+" in task.stop_strings
    other = registry.get_eval_task("py_identifier_tail:n48:c96:s1").instances()
    assert [i.id for i in other] != [i.id for i in items]


def test_identifier_mc_only_the_gold_choice_occurs_in_the_context():
    task = registry.get_eval_task("py_identifier_mc:n60:c96")
    assert task.kind == registry.MULTIPLE_CHOICE and task.random_baseline == 0.25
    items = task.instances()
    assert len(items) == 60
    golds = collections.Counter(i.gold for i in items)
    assert len(golds) == 4  # the gold position is shuffled
    for inst in items:
        words = set(re.findall(r"[A-Za-z_]\w*", inst.prompt))
        assert len(set(inst.choices)) == 4 and len({len(c) for c in inst.choices}) == 1
        assert inst.choices[inst.gold] in words
        assert not any(c in words for j, c in enumerate(inst.choices) if j != inst.gold)
        assert len(inst.prompt) <= 96


def test_graded_tasks_reject_a_tiny_context():
    with pytest.raises(ValueError, match="need >= 32"):
        registry.get_eval_task("py_identifier_tail:n4:c16").instances()
