"""Tests for the TFDS-backed benchmark tasks under tfds.testing.mock_data."""
import pytest
import tensorflow_datasets as tfds

from lmscale import testing
from lmscale.data import errors
from lmscale.data import registry
from lmscale.data.tasks import tfds_tasks


_fixed = _nested = testing.mock_tfds_records


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
    # winogrande_full: random mock sentences have no "_" blank for the partial form (its
    # records are fixed in test_winogrande_is_partially_scored).
    ("piqa", 2), ("copa", 2), ("winogrande_full", 2), ("boolq", 2), ("triviaqa_closed_book", 0),
    ("lambada", 0)])
def test_random_mock_examples_build(name, num_choices):
    # 12 examples: piqa and boolq draw 10 demonstrations (Gadre et al.) from train.
    with tfds.testing.mock_data(num_examples=12):
        task = registry.get_eval_task(name)
        items = task.instances()
    assert len(items) == 12
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


@pytest.mark.parametrize("name", ["arc_easy", "piqa", "boolq"])
def test_gadre_ten_shot_tasks_draw_ten_demonstrations(name):
    task = registry.get_eval_task(name)
    assert task.num_shots == 10
    with tfds.testing.mock_data(num_examples=12):
        items = task.instances()
    assert len(items) >= 12
    assert items[0].prompt.count("Answer:") == 11
    # Seeded: the same demonstrations every time.
    with tfds.testing.mock_data(num_examples=12):
        again = task.instances()
    assert again[0].prompt == items[0].prompt


@pytest.mark.parametrize("name, shots", [("copa", 0), ("lambada", 0), ("hellaswag", 0),
                                         ("winograd", 0), ("winograd_full", 0),
                                         ("coqa", 0), ("squad", 10),
                                         ("hellaswag_10shot", 10)])
def test_gadre_shot_counts(name, shots):
    assert registry.get_eval_task(name).num_shots == shots


def test_triviaqa_keeps_aliases_and_normalised_checker():
    from lmscale.eval import checkers as eval_checkers
    recs = [{"question": f"Who sang {i}?", "question_id": str(i), "question_source": "",
             "entity_pages": {"doc_source": [], "filename": [], "title": [],
                              "wiki_context": []},
             "search_results": {"description": [], "filename": [], "rank": [],
                                "title": [], "url": [], "search_context": []},
             "answer": {"aliases": ["The Beatles", "Fab Four"],
                        "normalized_aliases": ["the beatles", "fab four"],
                        "matched_wiki_entity_name": "", "normalized_matched_wiki_entity_name": "",
                        "normalized_value": "the beatles", "type": "", "value": "The Beatles"}}
            for i in range(6)]
    with _nested(recs):
        task = registry.get_eval_task("triviaqa_closed_book")
        items = task.instances()
    first = items[0]
    assert task.checker == "exact_norm" and first.target == "The Beatles"
    assert set(first.meta["aliases"]) == {"The Beatles", "Fab Four", "the beatles",
                                          "fab four"}
    assert first.prompt.count(" The Beatles\n\nQuestion:") == 5  # 5-shot demonstrations
    check = eval_checkers.make_checker(task, first)
    assert check(" fab four.\nQuestion: x") and check(" beatles")
    assert not check(" The Rolling Stones")


def test_lambada_last_word_target_and_checker():
    recs = [{"passage": "He patted the old dog"}, {"passage": "She read the book"}]
    with _fixed(recs):
        task = registry.get_eval_task("lambada")
        items = task.instances()
    assert items[0].prompt == "He patted the old" and items[0].target == "dog"
    from lmscale.data import checkers
    assert task.checker == checkers.LAST_WORD
    assert checkers.passes(task.checker, " dog. Then", "dog", task.stop_strings)
    assert not checkers.passes(task.checker, " cat", "dog", task.stop_strings)


def test_gsm8k_target_is_the_number_after_hashes_and_checker_takes_the_last_number():
    recs = [{"question": f"Q{i}?", "answer": f"so 2 + {i} = {i + 2}\n#### {i + 2:,}000",
             "annotation": "", "short_answer": ""} for i in range(10)]
    with _fixed(recs):
        task = registry.get_eval_task("gsm8k_cot")
        items = task.instances()
    assert items[3].target == "5000"
    from lmscale.data import checkers
    assert task.checker == checkers.NUMBER
    assert checkers.passes(task.checker, " 2 + 3 is 5, times 1,000 gives 5,000.\n\nQ",
                           items[3].target, task.stop_strings, task.answer_pattern)
    assert not checkers.passes(task.checker, " it is 5000 or 6", items[3].target,
                               task.stop_strings, task.answer_pattern)


_WSC = {"text": "The cup fell off the table because it was unsteady.",
        "option1": "the cup", "option1_normalized": "cup", "option2": "the table",
        "option2_normalized": "table", "pronoun_start": 35, "pronoun_end": 37,
        "pronoun_text": "it", "label": 1, "idx": 0}


def test_winograd_full_is_wsc273_full_sentences():
    with _fixed([_WSC]):
        task = registry.get_eval_task("winograd_full")
        (item,) = task.instances()
    assert item.prompt == "" and item.gold == 1 and not task.partial_scoring
    assert item.choices == ("The cup fell off the table because the cup was unsteady.",
                            "The cup fell off the table because the table was unsteady.")


def test_winograd_is_wsc273_partially_scored():
    with _fixed([_WSC]):
        task = registry.get_eval_task("winograd")
        (item,) = task.instances()
    assert task.partial_scoring and task.kind == registry.MULTIPLE_CHOICE
    assert item.prompt == "" and item.gold == 1
    assert item.choices == ("The cup fell off the table because the cup",
                            "The cup fell off the table because the table")
    assert item.target == " was unsteady."


def test_winogrande_is_partially_scored():
    recs = [{"sentence": "Sam lent Kim a pen because _ had   two.", "option1": "Sam",
             "option2": "Kim", "label": 0}]
    with _fixed(recs):
        task = registry.get_eval_task("winogrande")
        (item,) = task.instances()
    assert task.partial_scoring
    assert item.choices == ("Sam lent Kim a pen because Sam", "Sam lent Kim a pen because Kim")
    assert item.target == " had   two." and item.gold == 0
    with _fixed([dict(recs[0], sentence="Sam lent Kim a pen because _")]), pytest.raises(
            errors.DataError, match="field 'sentence'.*nothing follows the blank"):
        registry.get_eval_task("winogrande").instances()
    with _fixed(recs):
        (full,) = registry.get_eval_task("winogrande_full").instances()
    assert full.choices[1] == "Sam lent Kim a pen because Kim had   two."


def test_squad_answers_become_aliases_and_coqa_turns_carry_history():
    recs = [{"id": str(i), "title": "T", "context": "Ann owns a red car.",
             "question": "What colour?", "answers": {"text": ["red", "Red car"],
                                                     "answer_start": [10, 10]}}
            for i in range(11)]
    with _nested(recs):
        items = registry.get_eval_task("squad").instances()
    assert items[0].target == "red" and items[0].meta["aliases"] == ("Red car",)
    assert items[0].prompt.endswith("Question: What colour?\nAnswer:")
    coqa = [{"source": "s", "story": "Ann owns a car.", "questions": ["Who?", "What?"],
             "answers": {"input_text": ["Ann", "a car"], "answer_start": [0, 9],
                         "answer_end": [3, 14]}}]
    with _nested(coqa):
        turns = registry.get_eval_task("coqa").instances()
    assert [t.id for t in turns] == ["0", "0.1"] and turns[1].target == "a car"
    assert turns[1].prompt == "Ann owns a car.\n\nQ: Who?\nA: Ann\n\nQ: What?\nA:"
