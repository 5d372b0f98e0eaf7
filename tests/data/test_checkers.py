"""Tests of lmscale.data.checkers: answer normalisation, aliases, number and word checks."""
import pytest

from lmscale.data import checkers as C


def test_squad_normalisation():
    assert C.normalize_answer("  The  Eiffel-Tower!! ") == "eiffeltower"
    assert C.normalize_answer("An apple, a day") == "apple day"
    assert C.normalize_answer("Theatre") == "theatre"  # 'the' only as a word


def test_exact_norm_accepts_aliases_and_normalises():
    stops = ("\n",)
    assert C.passes(C.EXACT_NORM, " the Beatles.\nQuestion:", "Beatles", stops)
    assert C.passes(C.EXACT_NORM, " Fab Four\n", "The Beatles", stops,
                    aliases=("fab four", "Beatles"))
    assert not C.passes(C.EXACT_NORM, " Fab Four\n", "The Beatles", stops)
    assert not C.passes(C.EXACT_NORM, " Beatles fans\n", "Beatles", stops)
    assert not C.passes(C.EXACT_NORM, "\n", "", stops)  # empty never passes
    # Plain EXACT stays strict (case and articles count).
    assert not C.passes(C.EXACT, " the Beatles\n", "Beatles", stops)


def test_number_is_the_last_number_of_the_generation():
    assert C.last_number("3 + 4 = 7, so 1,200 in total.") == "1200"
    assert C.last_number("x is 2.50") == "2.5" and C.last_number("-3 apples") == "-3"
    assert C.last_number("no digits") == ""
    sample = " She has 3 + 4 = 7 apples. The answer is 7.\n\nQuestion: next 9"
    assert C.passes(C.NUMBER, sample, "7", ("\n\n",))
    assert not C.passes(C.NUMBER, sample, "9", ("\n\n",))  # 9 is after the stop
    assert not C.passes(C.NUMBER, " 7 then 8", "7")
    assert C.passes(C.NUMBER, " 1,000.0", "1000")
    assert not C.passes(C.NUMBER, " none", "")


def test_last_word_is_the_first_word_of_the_continuation():
    assert C.first_word("  dog, said Ann") == "dog"
    assert C.passes(C.LAST_WORD, " dog.", "dog", ("\n",))
    assert C.passes(C.LAST_WORD, " dog and cat", "dog", ("\n",))
    assert not C.passes(C.LAST_WORD, " doghouse", "dog", ("\n",))
    assert not C.passes(C.LAST_WORD, "\ndog", "dog", ("\n",))
    # The old setting (EXACT cut at " ") rejected every continuation with a leading space.
    assert not C.passes(C.EXACT, " dog", "dog", (" ", "\n"))


def test_prediction_and_reference_unknown_kind():
    assert C.prediction(C.EXACT_NORM, " The Answer\n", ("\n",)) == "answer"
    assert C.reference(C.NUMBER, "1,200") == "1200"
    with pytest.raises(ValueError, match="not a string check"):
        C.prediction(C.CODE, "x")
    with pytest.raises(ValueError, match="not a string check"):
        C.passes("nope", "x", "x")


def test_seqio_postprocessing_follows_the_task_checker():
    import seqio

    from lmscale.data import registry
    for name, sample, target, want in [
            ("lambada", b" dog. Then", b"dog", "dog"),
            ("gsm8k_cot", b" 3 + 4 = 7. The answer is 7.\n\nQuestion: 9", b"7", "7"),
            ("triviaqa_closed_book", b" The Beatles!\nQuestion:", b"The Beatles",
             "beatles")]:
        registry.get_eval_task(name)  # registers lmscale_eval.<name>
        task = seqio.get_mixture_or_task("lmscale_eval." + name)
        pred = task.postprocess_fn(sample, example=None, is_target=False)
        ref = task.postprocess_fn(target, example=None, is_target=True)
        assert pred == want and ref == want
        assert C.exact_match_metric([ref], [pred])["exact_match"] == 100.0
