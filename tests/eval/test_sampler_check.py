"""`sampler.check`: distinct completions decoded and (pure checkers) checked once each."""

import numpy as np

from lmscale import testing
from lmscale.data.vocab import get_vocabulary
from lmscale.eval import sampler as sampler_lib


def _sampler():
    config = testing.study_row_config()
    return sampler_lib.Sampler(testing.tiny_params(config), config, get_vocabulary("byte"),
                               num_slots=4, max_new_tokens=4, stop_strings=("\n",))


def _completions(rows, lengths):
    tokens = np.asarray(rows, np.int32)
    return sampler_lib.Completions(tokens, np.asarray(lengths, np.int32),
                                   np.zeros(tokens.shape, np.float32))


def test_check_matches_per_sample_checking_and_calls_pure_checker_once_per_text():
    sampler = _sampler()
    a, b = ord("a") + 3, ord("b") + 3  # byte vocab: ids are bytes + 3
    # Rows 0, 2 and 4 are the same completion ("ab"); row 1 differs only past its length
    # from row 3 ("a" both); row 5 is "ba".
    comp = _completions([[a, b, 0, 0], [a, a, 0, 0], [a, b, 0, 0], [a, b, 0, 0],
                         [a, b, 0, 0], [b, a, 0, 0]], [2, 1, 2, 1, 2, 2])
    calls = []

    def pure(text):
        calls.append(text)
        return text == "ab"

    pure.pure = True
    texts, passed = sampler_lib.check(sampler, comp, pure)
    assert texts == sampler.text(comp) == ["ab", "a", "ab", "a", "ab", "ba"]
    assert passed.tolist() == [True, False, True, False, True, False]
    assert sorted(calls) == ["a", "ab", "ba"]

    impure_calls = []

    def impure(text):
        impure_calls.append(text)
        return text == "ab"

    _, passed2 = sampler_lib.check(sampler, comp, impure)
    assert passed2.tolist() == passed.tolist()
    assert impure_calls == texts  # every sample, in sampling order


def test_check_of_no_completions():
    texts, passed = sampler_lib.check(_sampler(), _completions(np.zeros((0, 4)), []), bool)
    assert texts == [] and passed.shape == (0,)
