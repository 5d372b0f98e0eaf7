"""Tests for the TFDS-backed benchmark tasks under tfds.testing.mock_data."""
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from lmscale.data import errors
from lmscale.data import registry
from lmscale.data.tasks import tfds_tasks


def _fixed(records):
    def as_dataset(self, *args, **kwargs):
        del self, args, kwargs
        cols = {k: [r[k] for r in records] for k in records[0]}
        return tf.data.Dataset.from_tensor_slices(cols)
    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_hellaswag_zero_shot_format():
    rec = {"activity_label": "Baking", "context": "She mixes the flour and",
           "endings": ["eggs.", "sings.", "drives.", "sleeps."], "label": 0,
           "source_id": "x", "split_type": "indomain"}
    with _fixed([rec, dict(rec, label=2)]):
        items = registry.get_eval_task("hellaswag").instances()
    assert items[0].prompt == "Baking: She mixes the flour and"
    assert items[0].choices == (" eggs.", " sings.", " drives.", " sleeps.")
    assert [i.gold for i in items] == [0, 2]
    assert registry.get_eval_task("hellaswag").random_baseline == 0.25


def test_hellaswag_bad_label_is_named():
    rec = {"activity_label": "a", "context": "b", "endings": ["1", "2", "3", "4"],
           "label": 7, "source_id": "x", "split_type": "y"}
    with _fixed([rec]), pytest.raises(errors.DataError, match="field 'label'.*gold index 7"):
        registry.get_eval_task("hellaswag").instances()


def test_gsm8k_cot_demonstrations_and_final_number():
    recs = [{"question": f"Q{i}?", "answer": f"{i} + 1 = <<{i}+1={i + 1}>>{i + 1}\n#### {i + 1}",
             "annotation": "", "short_answer": str(i + 1)} for i in range(12)]
    with _fixed(recs):
        task = registry.get_eval_task("gsm8k_cot")
        items = task.instances()
    first = items[0]
    assert first.target == "1" and first.prompt.endswith("Question: Q0?\nAnswer:")
    assert first.prompt.count("The answer is") == 8  # 8 CoT demonstrations from train
    assert "<<" not in first.prompt
    assert tfds_tasks.gsm8k_cot("a <<2*3=6>>6 b\n#### 1,200") == ("a 6 b The answer is 1200.",
                                                                  "1200")
    from lmscale.data import checkers
    assert checkers.passes(task.checker, " 1 + 1 = 2. The answer is 1.\n\nQuestion:",
                           first.target, task.stop_strings, task.answer_pattern)


def test_race_expands_questions_and_maps_letters():
    rec = {"article": "Tom has a cat.", "example_id": "r1",
           "questions": ["Who has a cat?", "What does Tom have?"],
           "options": [["Tom", "Ann", "Bob", "Eve"], ["a dog", "a cat", "a cow", "a fox"]],
           "answers": ["A", "B"]}
    with _fixed([rec] * 4):
        items = registry.get_eval_task("race_high").instances()
    assert [i.gold for i in items[:2]] == [0, 1] and items[1].id == "0.1"
    assert items[0].prompt.endswith("Article: Tom has a cat.\n\nQuestion: Who has a cat?\nAnswer:")


@pytest.mark.parametrize("name, num_choices", [
    ("piqa", 2), ("copa", 2), ("winogrande", 2), ("boolq", 2), ("triviaqa_closed_book", 0),
    ("lambada", 0)])
def test_random_mock_examples_build(name, num_choices):
    with tfds.testing.mock_data(num_examples=8):
        task = registry.get_eval_task(name)
        items = task.instances()
    assert len(items) == 8
    if num_choices:
        assert all(len(i.choices) == num_choices and 0 <= i.gold < num_choices for i in items)
    else:
        assert all(isinstance(i.target, str) for i in items)
    if task.num_shots:
        assert items[0].prompt.count("Answer:") == task.num_shots + 1


def test_mmlu_from_csv(tmp_path):
    for split in ("dev", "test"):
        (tmp_path / split).mkdir()
        rows = "\n".join(f"What is {i}+{i}?,{2 * i},{i},0,1,A" for i in range(6))
        (tmp_path / split / f"math_{split}.csv").write_text(rows + "\n")
    items = tfds_tasks.make_mmlu_task(str(tmp_path)).instances()
    assert len(items) == 6 and items[0].choices == (" A", " B", " C", " D")
    assert items[0].prompt.count("Answer:") == 6 and items[0].gold == 0
    (tmp_path / "test" / "bad_test.csv").write_text("q,a,b,c,d,E\n")
    with pytest.raises(errors.DataError, match=r"bad_test\.csv, line 1"):
        tfds_tasks.make_mmlu_task(str(tmp_path)).instances()
