"""Tests for lmscale.data.registry, checkers and the generated / python / HumanEval
families: formats against the papers' examples, seeds, disjoint demonstrations."""
import datetime
import re

import pytest
import seqio

from lmscale.data import checkers
from lmscale.data import registry
from lmscale.data.tasks import generated


def test_unprepared_tfds_dataset_error_names_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LMSCALE_TFDS_DIR", str(tmp_path))
    from lmscale.data import errors
    with pytest.raises(errors.DataError, match="piqa:validation: TFDS dataset not prepared"):
        registry.get_eval_task("piqa").instances()


def test_unknown_task_lists_close_names():
    with pytest.raises(KeyError, match="gen_uicl_dates"):
        registry.get_eval_task("gen_uicl_datez")


def test_every_task_builds_valid_instances_and_a_seqio_task():
    names = registry.list_eval_tasks()
    for expected in ("gen_uicl_dates", "gen_uicl_identity", "humaneval", "py_next_line_mc",
                     "gen_date_understanding", "gen_modular_arithmetic"):
        assert expected in names
    for name in names:
        task = registry.get_eval_task(name)
        if task.family in ("tfds", "mmlu"):
            continue  # data not prepared here; see test_tfds_tasks.py (mock_data)
        items = task.instances(limit=3)
        assert items, name
        assert name == task.name and registry.SEQIO_PREFIX + name in seqio.TaskRegistry.names()
        if task.kind == registry.MULTIPLE_CHOICE:
            every = task.instances()
            chance = sum(1 / len(i.choices) for i in every) / len(every)
            assert task.random_baseline == pytest.approx(chance, abs=0.01)


def test_uicl_dates_format_matches_hu_table7():
    # Hu et al. Table 7: Input: 2015-10-22  Target: !10!22!2015!
    task = registry.get_eval_task("gen_uicl_dates")
    assert task.num_shots == 4 and task.checker == checkers.EXACT
    for inst in task.instances():
        d = datetime.date.fromisoformat(inst.meta["input"])
        assert inst.target == f"!{d.month:02d}!{d.day:02d}!{d.year}!"
        assert inst.prompt.endswith(f"Input: {inst.meta['input']}\nOutput: ")
        assert inst.prompt.count("Input: ") == 5
        assert inst.meta["input"] not in [x for x, _ in inst.meta["demonstrations"]]


def test_uicl_other_formats():
    form = registry.get_eval_task("gen_uicl_dates_unnatural_form").instances(limit=5)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", i.target) for i in form)
    assert all(re.fullmatch(r"!\d\d!\d\d!\d{4}!", i.meta["input"]) for i in form)
    ident = registry.get_eval_task("gen_uicl_identity").instances()
    for inst in ident:
        letters = inst.target.split(", ")
        assert inst.target == inst.meta["input"] and len(set(letters)) == 5
        assert set(letters) <= set("abcdefgh")
    rev = registry.get_eval_task("gen_uicl_reverse_natural_content").instances()
    for inst in rev:
        assert inst.target.split(", ") == inst.meta["input"].split(", ")[::-1]


def test_date_understanding_answers_are_correct():
    for inst in registry.get_eval_task("gen_date_understanding").instances():
        m = re.match(r"(Today is|Yesterday was|Tomorrow will be|One week ago was|"
                     r"One week from today will be|10 days ago was) (\w+ \d+, \d+)\. "
                     r"What is the date (.+) in MM/DD/YYYY\?", inst.meta["input"])
        assert m, inst.meta["input"]
        known = datetime.datetime.strptime(m.group(2), "%B %d, %Y").date()
        offset = {"Today is": 0, "Yesterday was": -1, "Tomorrow will be": 1,
                  "One week ago was": -7, "One week from today will be": 7,
                  "10 days ago was": -10}[m.group(1)]
        today = known - datetime.timedelta(days=offset)
        asked = {"today": 0, "yesterday": -1, "tomorrow": 1, "one week from today": 7,
                 "one week ago": -7, "10 days ago": -10}.get(m.group(3))
        if asked is not None:
            assert inst.target == (today + datetime.timedelta(days=asked)).strftime("%m/%d/%Y")
    mc = registry.get_eval_task("gen_date_understanding_mc").instances()
    assert all(len(set(i.choices)) == 4 for i in mc)
    golds = [i.gold for i in mc]
    assert len(set(golds)) == 4  # gold position is shuffled


def test_modular_arithmetic_targets():
    for inst in registry.get_eval_task("gen_modular_arithmetic").instances():
        a, op, b, m = re.fullmatch(r"(\d+) ([+*]) (\d+) mod (\d+)", inst.meta["input"]).groups()
        value = int(a) + int(b) if op == "+" else int(a) * int(b)
        assert int(inst.target) == value % int(m)
    plus = registry.get_eval_task("gen_modified_addition_plus_one").instances(limit=5)
    for inst in plus:
        a, b = map(int, re.search(r"(\d+) \+ (\d+) -> $", inst.prompt).groups())
        assert inst.target == str(a + b + 1)


def test_parametrised_names_change_count_and_seed():
    small = registry.get_eval_task("gen_uicl_dates:n7:s1:k2")
    items = small.instances()
    assert len(items) == 7 and small.num_shots == 2
    assert items[0].prompt.count("Input: ") == 3
    again = registry.get_eval_task("gen_uicl_dates:n7:s1:k2").instances()
    other = registry.get_eval_task("gen_uicl_dates:n7:s2:k2").instances()
    assert [i.prompt for i in items] == [i.prompt for i in again]
    assert [i.prompt for i in items] != [i.prompt for i in other]
    with pytest.raises(KeyError, match="bad suffix"):
        registry.get_eval_task("gen_uicl_dates:x3")


def test_python_tasks_come_from_validation_code():
    from lmscale.data import corpora
    val = "".join(corpora.stdlib_texts("validation"))
    imp = registry.get_eval_task("py_import_completion").instances()
    assert all(re.search(r"(import|from) $", i.prompt) and i.target.isidentifier() for i in imp)
    assert all((i.prompt + i.target) in val for i in imp)
    for inst in registry.get_eval_task("py_identifier_copy").instances(limit=50):
        word = inst.prompt[-1] + inst.target
        assert re.search(rf"\b{word}\b", inst.prompt[:-1])
    for inst in registry.get_eval_task("py_copy_line").instances(limit=50):
        line, half = inst.prompt.split("\n")
        assert half + inst.target == line
    mc = registry.get_eval_task("py_next_line_mc")
    assert mc.random_baseline == 0.25
    for inst in mc.instances(limit=50):
        last = inst.prompt.rstrip("\n").rsplit("\n", 1)[-1]
        gold = inst.choices[inst.gold]
        # Blank lines are dropped from the context, so allow them between the two.
        assert re.search(re.escape(last) + r"\n(?:[ \t]*\n)*" + re.escape(gold), val)
        assert all(c in val for c in inst.choices)


def test_humaneval_is_zero_shot_code():
    task = registry.get_eval_task("humaneval")
    items = task.instances()
    assert len(items) == 164 and task.checker == checkers.CODE and task.num_shots == 0
    first = items[0]
    assert first.id == "HumanEval/0" and first.prompt.startswith("from typing import List")
    assert first.meta["entry_point"] == "has_close_elements" and "def check" in first.meta["test"]
    assert "\ndef " in task.stop_strings


def test_checkers_cut_and_compare():
    assert checkers.cut_at_stop("!10!22!2015!\nInput", ("\n",)) == "!10!22!2015!"
    assert checkers.passes(checkers.EXACT, "!10!22!2015!\nInput: x", "!10!22!2015!", ("\n",))
    assert not checkers.passes(checkers.EXACT, "!10!22!2015", "!10!22!2015!", ("\n",))
    assert checkers.passes(checkers.CONTAINS, "I think finding nemo.", "finding nemo")
    assert checkers.extract_answer("so 3+4=7. The answer is 1,234.", r"answer is (-?[\d,.]+)") \
        == "1234"
    with pytest.raises(ValueError, match="not a string check"):
        checkers.passes(checkers.CODE, "x", "y")


def test_seqio_eval_task_postprocesses_at_stop():
    task = seqio.get_mixture_or_task(registry.SEQIO_PREFIX + "gen_uicl_dates")
    ex = next(task.get_dataset(None, split="test", shuffle=False).as_numpy_iterator())
    assert ex["inputs_pretokenized"].decode().endswith("Output: ")
    assert task.postprocess_fn("!01!02!2000!\nInput: 1") == "!01!02!2000!"
    assert task.metric_fns[0](["a"], ["a"]) == {"exact_match": 100.0}


def test_bad_eval_task_fields_are_named():
    with pytest.raises(ValueError, match="kind='ranking'"):
        registry.EvalTask("t", "ranking", None, 0.0, (), 8, loader=lambda s: [])
    bad = registry.EvalTask("t", registry.MULTIPLE_CHOICE, None, 0.5, (), 8,
                            loader=lambda s: [registry.Instance("0", "p", None, ("a", "b"), 2)])
    with pytest.raises(ValueError, match="instance '0'.*gold index"):
        bad.instances()


def test_context_suffix_bounds_python_prompts():
    from lmscale.data import registry as reg

    short = reg.get_eval_task("py_identifier_copy:n50:c96").instances()
    assert len(short) == 50 and max(len(i.prompt) for i in short) <= 96
    long = reg.get_eval_task("py_identifier_copy:n50").instances()
    assert max(len(i.prompt) for i in long) > 96
    with pytest.raises(KeyError, match="takes no :c"):
        reg.get_eval_task("gen_uicl_dates:c50")
