"""Tests of the scorer's partial-scoring mode (Winograd schemas: contexts differ, one
shared continuation is scored), against one full forward per choice.

Run under XLA's default optimisations (no fast-compile fixture): the numbers compared are
the ones a study computes.
"""

import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from lmscale.data import vocab as vocab_lib
from lmscale.eval import results as R
from lmscale.eval import scorer as S
from lmscale.models import Decoder, init_params
from lmscale.testing import tiny_config


@pytest.fixture(scope="module")
def model():
    config = tiny_config(max_seq_len=64)
    params = nn.unbox(init_params(config, jax.random.PRNGKey(7)))["params"]
    params = jax.tree_util.tree_map(lambda x: x * 4.0, params)  # sharper distributions
    return config, params


@functools.lru_cache(maxsize=None)
def _forward(config):
    return jax.jit(lambda params, tokens: Decoder(config).apply({"params": params}, tokens))


def _continuation_loglik(config, params, context, continuation, bos=0):
    """One full forward over [bos] + context + continuation: the continuation's summed
    log-prob and whether each of its tokens is the argmax."""
    seq = np.concatenate([[bos], context, continuation]).astype(np.int32)
    padded = np.zeros((1, config.max_seq_len), np.int32)  # causal: padding changes nothing
    padded[0, :len(seq) - 1] = seq[:-1]
    logits = np.asarray(_forward(config)(params, padded)[0, :len(seq) - 1], np.float64)
    logp = np.asarray(jax.nn.log_softmax(logits), np.float64)
    start = 1 + len(context)
    rows = np.arange(start - 1, len(seq) - 1)
    return logp[rows, seq[start:]].sum(), bool(np.all(logp[rows].argmax(-1) == seq[start:]))


def _partial_questions(rng):
    out = []
    for i, (lengths, cont_len) in enumerate([((5, 9), 4), ((0, 3, 12), 1), ((20, 20), 7),
                                             ((2, 1), 3)]):
        out.append(S.PartialQuestion(
            id=f"p{i}", context_ids=tuple(rng.integers(3, 256, n).astype(np.int32)
                                          for n in lengths),
            continuation_ids=rng.integers(3, 256, cont_len).astype(np.int32),
            continuation_text="y" * cont_len, gold=i % len(lengths)))
    return out


def test_partial_scores_equal_one_forward_per_choice(model):
    config, params = model
    qs = _partial_questions(np.random.default_rng(0))
    # batch_questions=3: the 9 (context, continuation) rows span several batches.
    scores = S.Scorer(config, params, batch_questions=3).score_partial(qs)
    for q, s in zip(qs, scores):
        assert s.id == q.id and s.gold == q.gold
        assert len(s.loglik) == len(q.context_ids)
        for c, ctx in enumerate(q.context_ids):
            want, want_greedy = _continuation_loglik(config, params, ctx, q.continuation_ids)
            assert s.loglik[c] == pytest.approx(want, abs=1e-4)
            assert bool(s.greedy[c]) == want_greedy
        assert list(s.num_tokens) == [len(q.continuation_ids)] * len(q.context_ids)
    # The contexts change the continuation's score (else the check above proves little).
    assert all(np.ptp(s.loglik) > 0.05 for s in scores)


def test_partial_scoring_differs_from_full_sentence_scoring(model):
    """The same schema, scored whole, also counts the differing context tokens."""
    config, params = model
    vocab = vocab_lib.get_vocabulary(vocab_lib.BYTE)
    contexts = ["The cup fell off the table because the cup",
                "The cup fell off the table because the table"]
    rest = " was unsteady."
    (part,) = S.Scorer(config, params).score_partial(
        [S.encode_partial_question(vocab, "w", "", contexts, rest, 1)])
    (full,) = S.Scorer(config, params).score(
        [S.encode_question(vocab, "w", "", [c + rest for c in contexts], 1)])
    for c, ctx in enumerate(contexts):
        want, _ = _continuation_loglik(config, params,
                                       np.asarray(vocab.encode(ctx), np.int32),
                                       np.asarray(vocab.encode(rest), np.int32))
        assert part.loglik[c] == pytest.approx(want, abs=1e-4)
    assert np.all(full.loglik < part.loglik - 1.0)  # full adds the context's own tokens
    m = part.metrics()
    # Same scored tokens for every choice: length normalisation cannot change the pick.
    assert m[R.ACCURACY] == m[R.ACCURACY_NORM_CHARS] == m[R.ACCURACY_NORM_TOKENS]
    assert m[R.ACCURACY] == float(np.argmax(part.loglik) == 1)
    back = S.QuestionScore.from_detail("w", part.detail())
    np.testing.assert_array_equal(back.loglik, part.loglik)
    assert back.metrics() == m


def test_bad_partial_questions_are_named():
    with pytest.raises(ValueError, match=r"partial question 'z'.*no tokens"):
        S.PartialQuestion("z", (np.array([3]),), np.array([], np.int32), "", 0)
    with pytest.raises(ValueError, match=r"partial question 'y'.*gold=2"):
        S.PartialQuestion("y", (np.array([3]), np.array([4])), np.array([5]), "x", 2)
