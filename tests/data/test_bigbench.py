"""Tests for BIG-bench task.json loading, Hu et al.'s distractor filters and bad files."""
import json

import pytest

from lmscale.data import errors
from lmscale.data import registry
from lmscale.data.tasks import bigbench
from lmscale.data.tasks import filters


def test_shared_unnatural_dates_prompt_format(shared_data):
    path = shared_data / "bigbench/unnatural_in_context_learning/dates/task.json"
    task = bigbench.make_bigbench_task(str(path), "t_dates", num_test=20)
    items = task.instances()
    assert len(items) == 20 and task.checker == "exact" and task.stop_strings == ("\n",)
    inst = items[0]
    # BIG-bench prefixes from the file: "Input: ", "\nOutput: ", separator "\n".
    assert inst.prompt.count("\nOutput: ") == 5
    assert inst.prompt.endswith(f"Input: {inst.meta['input']}\nOutput: ")
    y, m, d = inst.meta["input"].split("-")
    assert inst.target == f"!{m}!{d}!{y}!"


def test_shared_emoji_movie_mc_and_generative(shared_data):
    folder = shared_data / "bigbench/emoji_movie"
    names = bigbench.register_bigbench_folder(str(folder), prefix="t_bb_")
    assert names == ["t_bb_emoji_movie", "t_bb_emoji_movie_gen"]
    mc = registry.get_eval_task("t_bb_emoji_movie")
    items, reports = mc.instances_with_reports()
    assert mc.random_baseline == pytest.approx(0.2)
    assert reports[0].filter_name == "common_word_targets" and reports[0].num_removed > 0
    assert len(items) + reports[0].num_removed + mc.num_shots == 100
    assert "\n  choice: " in items[0].prompt  # append_choices_to_input
    gen = registry.get_eval_task("t_bb_emoji_movie_gen").instances()
    assert gen[0].target == items[0].choices[items[0].gold]
    assert "choice:" not in gen[0].prompt and gen[0].prompt.count("\nA: ") == 5


def test_date_understanding_copy_filter_removes_hu_table8_cases(shared_data):
    task = registry.get_eval_task("bb_date_understanding_gen")
    items, (report,) = task.instances_with_reports()
    assert report.num_removed > 0
    kept = {i.meta["input"] for i in items}
    assert not any(i.target in i.meta["input"] for i in items)
    # Hu et al. Table 8, first row: the answer is stated in the question.
    assert not any("10/16/1924. What is the date tomorrow" in q for q in kept)
    assert any("10/16/1924. What is the date today" in q for q in kept)


def test_subtask_folder_lists_subtasks(shared_data):
    files = bigbench.task_files(str(shared_data / "bigbench/modified_arithmetic"))
    assert len(files) == 6 and "modified_arithmetic.three_digit_addition_plus_one" in files


def _inst(i, query, target):
    return registry.Instance(str(i), "demo\n" + query, target, meta={"input": query})


def test_filters_report_what_they_remove():
    items = [_inst(0, "🤡🎈", "it"), _inst(1, "🐟", "finding nemo"), _inst(2, "x", "Up")]
    kept, rep = filters.common_word_targets()(items)
    assert [i.id for i in kept] == ["1"] and rep.removed_ids == ("0", "2")
    assert rep.num_before == 3 and "common" in rep.reason
    items = [_inst(0, "Today is 9/7. Jane is watching NFL 2003. What is the date today?",
                   "09/07/2003"),
             _inst(1, "Yesterday was 12/31/1929. What is the date yesterday?", "12/31/1929"),
             _inst(2, "Yesterday was April 30, 2021. What is the date today?", "05/01/2021")]
    kept, rep = filters.answerable_by_copying()(items)
    assert [i.id for i in kept] == ["2"] and rep.num_removed == 2


def _write(tmp_path, text, name="task.json", mode="w"):
    path = tmp_path / name
    with open(path, mode) as f:
        f.write(text)
    return str(path)


@pytest.mark.parametrize("content, match", [
    ('{"examples": [{"input": "a", "target": "b"},\n  {"input": "c" "target": "d"}]}',
     r"task\.json, line 2: malformed JSON"),
    ('{"examples": [{"input": "a"}]}', r"field 'target': examples\[0\]: needs"),
    ('{"examples": [{"input": 5, "target": "b"}]}', r"field 'input': examples\[0\]"),
    ('{"examples": [{"input": "a", "target_scores": {"x": "high"}}]}',
     r"field 'target_scores'"),
    ('{"name": "header only"}', r"field 'examples': no 'examples'"),
    ('', r"file is empty"),
])
def test_bad_task_json_is_named(tmp_path, content, match):
    bigbench.read_task_json.cache_clear()
    path = _write(tmp_path, content)
    with pytest.raises(errors.DataError, match=match):
        bigbench.make_bigbench_task(path, "t_bad")


def test_non_utf8_task_json(tmp_path):
    path = _write(tmp_path, b'{"examples": [\n{"input": "caf\xe9", "target": "x"}]}', mode="wb")
    with pytest.raises(errors.DataError, match=r"line 2: not UTF-8"):
        bigbench.make_bigbench_task(path, "t_latin")


def test_folder_without_tasks(tmp_path):
    with pytest.raises(errors.DataError, match="no task.json"):
        bigbench.task_files(str(tmp_path))


def test_emoji_movie_chain_of_thought_demonstrations(shared_data):
    folder = shared_data / "bigbench/emoji_movie"
    task = bigbench.register_emoji_movie_cot(str(folder), name="t_bb_emoji_cot")
    assert task.checker == "contains" and task.num_shots == 4
    items = task.instances()
    plain = registry.get_eval_task("bb_emoji_movie_gen").instances()
    assert [i.id for i in items] == [i.id for i in plain]  # same demos, filter and order
    prompt = items[0].prompt
    assert prompt.count(" So the answer is ") == 4
    for gold, why in bigbench.EMOJI_MOVIE_RATIONALES.items():
        assert f"\nA: {why} So the answer is {gold}.\n\n" in prompt
    assert prompt.endswith(f"Q: {items[0].meta['input']}\nA: ")


def test_chain_of_thought_demo_without_rationale_is_named(shared_data):
    path = shared_data / "bigbench/emoji_movie/task.json"
    task = bigbench.make_bigbench_task(str(path), "t_bb_cot_bad", True, seed=1,
                                       rationales=bigbench.EMOJI_MOVIE_RATIONALES)
    with pytest.raises(errors.DataError, match="no chain-of-thought rationale"):
        task.instances()


def test_gadre_bigbench_tasks_register_ten_shot(tmp_path):
    folder = tmp_path / "operators"
    folder.mkdir()
    examples = [{"input": f"{i} op 1", "target": str(i + 1)} for i in range(14)]
    (folder / "task.json").write_text(json.dumps({"name": "operators",
                                                  "examples": examples}))
    (name,) = bigbench.register_bigbench_folder(str(folder), prefix="t_g_")
    task = registry.get_eval_task(name)
    assert task.num_shots == 10 and len(task.instances()) == 4
