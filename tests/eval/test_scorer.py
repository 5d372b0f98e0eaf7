"""Tests of lmscale.eval.scorer: shared-context log-likelihoods, metrics, validation loss."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmscale.eval import results as R
from lmscale.eval import scorer as S
from lmscale.models import Decoder, KVCache, init_params, ops
from lmscale.testing import tiny_config

pytestmark = pytest.mark.usefixtures("fast_compiles")


@pytest.fixture(scope="module")
def model():
    config = tiny_config(max_seq_len=64)
    params = nn.unbox(init_params(config, jax.random.PRNGKey(3)))["params"]
    # Larger weights than init so log-probs differ clearly between choices.
    params = jax.tree_util.tree_map(lambda x: x * 4.0, params)
    return config, params


@functools.lru_cache(maxsize=None)
def _forward(config):
    return jax.jit(lambda params, tokens: Decoder(config).apply({"params": params}, tokens))


def _full_logits(config, params, tokens):
    """Logits [T, V] of one unbatched sequence; right-padded to max_seq_len (causal, so the
    padding cannot change earlier positions) to compile once."""
    padded = np.zeros((1, config.max_seq_len), np.int32)
    padded[0, :len(tokens)] = tokens
    return np.asarray(_forward(config)(params, padded)[0, :len(tokens)], np.float64)


def _brute_loglik(config, params, context, choice, bos=0):
    """Full forward over [bos] + context + choice; sum of the choice tokens' log-probs."""
    seq = np.concatenate([[bos], context, choice]).astype(np.int32)
    logp = np.asarray(jax.nn.log_softmax(_full_logits(config, params, seq[:-1])), np.float64)
    start = 1 + len(context)
    positions = np.arange(start - 1, len(seq) - 1)
    chosen = logp[positions, seq[start:]]
    greedy = bool(np.all(np.argmax(logp[positions], -1) == seq[start:]))
    return chosen.sum(), greedy


def _questions(rng):
    qs = []
    for i, (ctx_len, n_choices) in enumerate([(5, 4), (13, 2), (1, 3), (0, 2), (20, 4)]):
        choices = [rng.integers(3, 256, size=rng.integers(1, 7)).astype(np.int32)
                   for _ in range(n_choices)]
        qs.append(S.Question(id=f"q{i}", context_ids=rng.integers(3, 256, ctx_len),
                             choice_ids=tuple(choices),
                             choice_texts=tuple("x" * len(c) for c in choices), gold=0))
    return qs


def test_shared_context_matches_full_forward_per_choice(model):
    config, params = model
    qs = _questions(np.random.default_rng(0))
    # batch_questions=2: several batches, one partly padded, context buckets differ.
    scores = S.Scorer(config, params, batch_questions=2).score(qs)
    for q, s in zip(qs, scores):
        assert s.id == q.id
        for c, choice in enumerate(q.choice_ids):
            want, want_greedy = _brute_loglik(config, params, q.context_ids, choice)
            assert s.loglik[c] == pytest.approx(want, abs=1e-4)
            assert bool(s.greedy[c]) == want_greedy
        assert list(s.num_tokens) == [len(c) for c in q.choice_ids]
    # Choices of one question must not all score alike (the check above would be vacuous).
    assert np.ptp(scores[0].loglik) > 0.1


def test_many_short_choices_take_the_window_and_match_full_forward(model):
    """Six choices of 1-4 tokens pack to 16 or more with the longest at most 4: the call
    reads only a band of choice keys (`ops.prefix_window_attention`), and every
    log-likelihood still equals the full forward's."""
    config, params = model
    rng = np.random.default_rng(1)
    qs = []
    for i, ctx_len in enumerate([3, 9, 0]):
        choices = [rng.integers(3, 256, size=n).astype(np.int32) for n in (4, 1, 3, 4, 2, 3)]
        qs.append(S.Question(id=f"w{i}", context_ids=rng.integers(3, 256, ctx_len),
                             choice_ids=tuple(choices),
                             choice_texts=tuple("x" * len(c) for c in choices), gold=0))
    scorer = S.Scorer(config, params, batch_questions=2)
    assert [shape[3] for shape in scorer.batch_shapes(qs)] == [4, 4]
    # Where the attention would not read it (no explicit-VJP path), no window is compiled.
    with ops.explicit_vjp(False):
        plain = S.Scorer(config, params, batch_questions=2)
    assert [shape[3] for shape in plain.batch_shapes(qs)] == [0, 0]
    for q, s in zip(qs, scorer.score(qs)):
        for c, choice in enumerate(q.choice_ids):
            want, want_greedy = _brute_loglik(config, params, q.context_ids, choice)
            assert s.loglik[c] == pytest.approx(want, abs=1e-4)
            assert bool(s.greedy[c]) == want_greedy


def test_greedy_flag_true_for_argmax_continuation(model):
    config, params = model
    ctx = np.array([10, 20, 30], np.int32)
    seq = [0, *ctx]
    for _ in range(3):  # build the greedy continuation by full forwards
        seq.append(int(np.argmax(_full_logits(config, params, seq)[-1])))
    greedy_choice = np.array(seq[4:], np.int32)
    other = greedy_choice.copy()
    other[-1] = (other[-1] + 1) % 256
    q = S.Question("g", ctx, (greedy_choice, other), ("a", "b"), gold=0)
    (s,) = S.Scorer(config, params).score([q])
    assert list(s.greedy) == [True, False]
    assert s.loglik[0] > s.loglik[1]


class _Bigram(nn.Module):
    """Fake-logits model: logits of a position are table[token], whatever the context."""

    vocab: int

    @nn.compact
    def __call__(self, tokens, positions=None, segment_ids=None, *, cache=None,
                 cache_index=None, prefix=None, prefix_index=None, return_kv=False,
                 logits_at=None, logits_from=None, attention_mask=None,
                 attention_window=None):
        table = self.param("table", nn.initializers.zeros, (self.vocab, self.vocab))
        full = table[tokens]
        rows = [] if logits_at is None else [jnp.take_along_axis(
            full, (logits_at[:, None] if logits_at.ndim == 1 else logits_at)[..., None],
            axis=1)]
        if logits_from is not None:
            rows.append(full[:, logits_from:])
        logits = jnp.concatenate(rows, axis=1) if rows else full
        if cache is not None:
            return logits, cache
        if return_kv:
            z = jnp.zeros((1,) + tokens.shape + (1, 1))
            return logits, KVCache(z, z)
        return logits


def test_fake_logits_hand_computation():
    table = np.zeros((5, 5), np.float32)
    table[3] = [0.0, 2.0, 0.0, 0.0, 1.0]  # after token 3: p(1) = e^2 / (e^2 + e + 3)
    table[4] = [0.0, 0.0, 3.0, 0.0, 0.0]  # after token 4: p(2) = e^3 / (e^3 + 4)
    config = tiny_config(vocab_size=5)
    q = S.Question("h", np.array([2, 3], np.int32),
                   (np.array([1], np.int32), np.array([4, 2], np.int32)), ("one", "four two"),
                   gold=1)
    scorer = S.Scorer(config, {"table": table}, model=_Bigram(5))
    (s,) = scorer.score([q])
    z3 = math.exp(2) + math.exp(1) + 3
    ll0 = 2 - math.log(z3)
    ll1 = (1 - math.log(z3)) + (3 - math.log(math.exp(3) + 4))
    np.testing.assert_allclose(s.loglik, [ll0, ll1], rtol=1e-5)
    m = s.metrics()
    p1 = math.exp(ll1) / (math.exp(ll0) + math.exp(ll1))
    assert m[R.ACCURACY] == float(ll1 > ll0)
    assert m[R.CORRECT_CHOICE_PROB] == pytest.approx(p1, rel=1e-6)
    assert m[R.BRIER_SCORE] == pytest.approx(2 * (1 - p1) ** 2, rel=1e-6)
    assert m[R.ANSWER_LOSS] == pytest.approx(-ll1 / 2, rel=1e-6)
    # Empty context: the first choice token is predicted from bos (id 0, all-zero row).
    q0 = S.Question("e", np.array([], np.int32), (np.array([1], np.int32),), ("x",), gold=0)
    (s0,) = scorer.score([q0])
    assert s0.loglik[0] == pytest.approx(-math.log(5), rel=1e-6)


def test_metrics_by_hand():
    # loglik per choice; gold = 1. Raw argmax is choice 0, per-token argmax is choice 1.
    s = S.QuestionScore(id="m", loglik=np.array([-2.0, -3.0, -9.0, -9.0]),
                        num_tokens=np.array([1, 6, 1, 1]), num_chars=np.array([2, 3, 9, 9]),
                        num_bytes=np.array([1, 3, 9, 9]),
                        greedy=np.zeros(4, bool), gold=1)
    m = s.metrics()
    assert m[R.ACCURACY] == 0.0
    assert m[R.ACCURACY_NORM_TOKENS] == 1.0  # -0.5 beats -2
    assert m[R.ACCURACY_NORM_CHARS] == 0.0  # all tie at -1: first wins
    assert m[R.ACCURACY_NORM_BYTES] == 1.0  # -1 beats -2
    e = np.exp([-2.0, -3.0, -9.0, -9.0])
    p = e / e.sum()
    assert m[R.CORRECT_CHOICE_PROB] == pytest.approx(p[1])
    assert m[R.BRIER_SCORE] == pytest.approx(p[0] ** 2 + (1 - p[1]) ** 2 + 2 * p[2] ** 2)
    assert m[R.ANSWER_LOSS] == pytest.approx(0.5)
    # Uniform over 4 choices: Brier 0.75 (Du et al., random-guess baseline).
    u = S.QuestionScore("u", np.full(4, -1.0), np.ones(4, int), np.ones(4, int),
                        np.ones(4, int), np.zeros(4, bool), gold=2)
    assert u.metrics()[R.BRIER_SCORE] == pytest.approx(0.75)
    assert u.metrics()[R.ACCURACY] == 0.0  # ties go to the first choice, not gold
    agg = S.aggregate([s, u])
    assert agg[R.ACCURACY_NORM_TOKENS] == pytest.approx(0.5)
    assert agg[R.CORRECT_CHOICE_PROB] == pytest.approx((p[1] + 0.25) / 2)


def test_detail_round_trips_lengths_and_logliks(model):
    config, params = model
    q = S.encode_question(_ByteVocab(), "d", "Q: 2+2=", [" 4", " five", " é"], 0)
    (s,) = S.Scorer(config, params).score([q])
    d = s.detail()
    assert d["num_chars"] == [2, 5, 2] and d["num_bytes"] == [2, 5, 3]
    assert d["num_tokens"] == [2, 5, 3]
    np.testing.assert_allclose(d["loglik"], s.loglik)


class _ByteVocab:
    def encode(self, s):
        return [b + 3 for b in s.encode("utf-8")]


def test_jitted_scorer_is_shared_across_tasks(model):
    config, params = model
    rng = np.random.default_rng(1)
    fn = S._score_fn(Decoder(config))
    first = _questions(rng)[:2]
    S.Scorer(config, params).score(first)
    size = fn._cache_size()
    # A second "task" with the same buckets (other tokens, choices of lengths within the
    # same bucket) and a second Scorer reuse the executables.
    second = [S.Question(q.id, q.context_ids[::-1], tuple(c[::-1] for c in q.choice_ids),
                         q.choice_texts, 1) for q in first]
    S.Scorer(config, params).score(second)
    assert fn._cache_size() == size
    # A longer context falls in another bucket: one more executable.
    S.Scorer(config, params).score([S.Question("long", np.arange(3, 40), first[0].choice_ids,
                                               first[0].choice_texts, 0)])
    assert fn._cache_size() == size + 1


def test_long_context_truncated_from_left(model):
    config, params = model
    rng = np.random.default_rng(2)
    ctx = rng.integers(3, 256, 100).astype(np.int32)
    choice = np.array([7, 8, 9], np.int32)
    (s,) = S.Scorer(config, params).score([S.Question("t", ctx, (choice,), ("abc",), 0)])
    keep = config.max_seq_len - len(choice) - 1  # bos stays
    want, _ = _brute_loglik(config, params, ctx[-keep:], choice)
    assert s.truncated == 100 - keep
    assert s.loglik[0] == pytest.approx(want, abs=1e-4)


def test_bad_questions_are_named():
    with pytest.raises(ValueError, match=r"question 'z'.*choice 1"):
        S.Question("z", np.array([1]), (np.array([3]), np.array([], np.int32)), ("a", ""), 0)
    with pytest.raises(ValueError, match="gold=2"):
        S.Question("y", np.array([1]), (np.array([3]),), ("a",), 2)


def test_validation_loss_matches_per_segment_forward(model):
    config, params = model
    rng = np.random.default_rng(4)
    t = 16
    docs = [rng.integers(3, 256, n) for n in (6, 7, 11)]
    # Row 0 packs docs 0 and 1; row 1 holds doc 2 then padding (weight 0).
    feats = {k: np.zeros((2, t), np.int32) for k in (
        "decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights",
        "decoder_positions", "decoder_segment_ids")}
    placement = [(0, 0, docs[0]), (0, 6, docs[1]), (1, 0, docs[2])]
    for seg, (row, start, doc) in enumerate(placement, 1):
        n = len(doc)
        sl = slice(start, start + n)
        feats["decoder_target_tokens"][row, sl] = doc
        feats["decoder_input_tokens"][row, sl] = np.concatenate([[0], doc[:-1]])
        feats["decoder_loss_weights"][row, sl] = 1
        feats["decoder_positions"][row, sl] = np.arange(n)
        feats["decoder_segment_ids"][row, sl] = seg
    got = S.validation_loss(config, params, iter([feats, feats]))
    nll, count = 0.0, 0
    for doc in docs:
        inputs = np.concatenate([[0], doc[:-1]]).astype(np.int32)[None]
        logp = jax.nn.log_softmax(_full_logits(config, params, inputs[0]))
        nll -= float(np.sum(np.asarray(logp)[np.arange(len(doc)), doc]))
        count += len(doc)
    assert got.num_tokens == 2 * count and got.num_batches == 2
    assert got.loss_nats == pytest.approx(nll / count, abs=1e-4)
    assert S.validation_loss(config, params, iter([feats] * 3), max_batches=1).num_batches == 1
    with pytest.raises(ValueError, match="no weighted target"):
        S.validation_loss(config, params, iter([{k: v * 0 for k, v in feats.items()}]))


def test_buckets_pad_under_a_fifth_and_grow_monotonically():
    sizes = [S._bucket(n, 1) for n in range(1, 2049)]
    assert all(s >= n for n, s in zip(range(1, 2049), sizes))
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))
    assert max((s - n) / s for n, s in zip(range(1, 2049), sizes)) < 0.2
    assert len(set(sizes)) <= 4 * 11 + 4  # about four shapes per doubling
    assert S._bucket(3, 8) == 8 and S._bucket(65, 8) == 80


def test_acc_norm_excludes_the_joining_space_as_the_harness_does():
    # Choices " a" and " bcd" after "Answer:"; gold = 1. Hand computation:
    #   counting the space: -2/2 = -1.0  vs -5/4 = -1.25 -> argmax 0 (wrong)
    #   harness (no space): -2/1 = -2.0  vs -5/3 = -1.67 -> argmax 1 (right)
    texts = (" a", " bcd")
    assert list(S.delimiter_chars(texts)) == [1, 1]
    assert list(S.delimiter_chars(("a", " ", "\nx"))) == [0, 0, 0]
    kw = dict(id="n", loglik=np.array([-2.0, -5.0]), num_tokens=np.array([2, 4]),
              num_chars=np.array([2, 4]), num_bytes=np.array([2, 4]),
              greedy=np.zeros(2, bool), gold=1)
    with_space = S.QuestionScore(**kw)
    harness = S.QuestionScore(**kw, delimiter_chars=S.delimiter_chars(texts))
    assert with_space.metrics()[R.ACCURACY_NORM_CHARS] == 0.0
    assert harness.metrics()[R.ACCURACY_NORM_CHARS] == 1.0
    assert harness.metrics()[R.ACCURACY_NORM_BYTES] == 1.0
    assert harness.metrics()[R.ACCURACY] == 0.0  # raw argmax unchanged
    back = S.QuestionScore.from_detail("n", harness.detail())
    assert back.metrics()[R.ACCURACY_NORM_CHARS] == 1.0
    assert list(back.norm_lengths()[0]) == [1, 3]


def test_scorer_records_the_delimiter_of_each_choice(model):
    config, params = model
    q = S.encode_question(_ByteVocab(), "d", "Q:", [" 4", "five"], 0)
    (s,) = S.Scorer(config, params).score([q])
    assert list(s.delimiter_chars) == [1, 0]
    assert s.detail()["delimiter_chars"] == [1, 0]
    assert [list(x) for x in s.norm_lengths()] == [[1, 4], [1, 4]]
