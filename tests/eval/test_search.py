"""Tests for lmscale.eval.search: beam search against exhaustive search, greedy vs beam-1."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmscale.eval import search
from lmscale.models import Decoder, init_params
from lmscale.testing import tiny_config

PROMPT = [1, 3, 2]


pytestmark = pytest.mark.usefixtures("fast_compiles")


@pytest.fixture(scope="module")
def model():
    """4-token vocabulary with peaked, distinct log-probs (no near ties)."""
    config = tiny_config(vocab_size=4, init_std=0.3)
    params = nn.unbox(init_params(config, jax.random.PRNGKey(3)))["params"]
    return config, params


def exhaustive(config, params, length, eos_id=None):
    """Every distinct completion of at most `length` tokens with its log-prob, best first."""
    seqs = np.array(list(itertools.product(range(config.vocab_size), repeat=length)))
    tokens = jnp.asarray(np.concatenate([np.tile(PROMPT, (len(seqs), 1)), seqs], 1))
    logp = jax.nn.log_softmax(Decoder(config).apply({"params": params}, tokens), -1)
    token_logp = np.asarray(logp[:, len(PROMPT) - 1:-1])[
        np.arange(len(seqs))[:, None], np.arange(length)[None], seqs]
    scored = {}
    for seq, lp in zip(seqs, token_logp):
        n = length
        if eos_id is not None and eos_id in seq:
            n = int(np.argmax(seq == eos_id)) + 1
        scored[tuple(seq[:n])] = float(lp[:n].sum())
    return sorted(scored.items(), key=lambda kv: -kv[1])


@pytest.mark.parametrize("eos_id", [None, 0])
def test_wide_beam_equals_exhaustive_search(model, eos_id):
    config, params = model
    length = 3
    width = config.vocab_size ** (length - 1)  # keeps every prefix: beam search is exact
    got = search.beam_search(params, config, PROMPT, width, length, eos_id=eos_id)
    want = exhaustive(config, params, length, eos_id)[:width]
    for (seq, score), row, n, got_score in zip(want, got.tokens, got.lengths, got.scores):
        assert tuple(row[:n]) == seq
        assert (row[n:] == 0).all()
        np.testing.assert_allclose(got_score, score, rtol=1e-5, atol=1e-5)
    if eos_id is not None:
        assert min(got.lengths) < length  # some beams really finished early


def test_narrow_beam_keeps_its_best_prefixes(model):
    config, params = model
    got = search.beam_search(params, config, PROMPT, 2, 3)
    assert np.all(np.diff(got.scores) <= 0)  # sorted best first
    table = dict(exhaustive(config, params, 3))
    for row, score in zip(got.tokens, got.scores):
        np.testing.assert_allclose(score, table[tuple(row)], rtol=1e-5, atol=1e-5)


def test_greedy_equals_one_beam():
    config = tiny_config(init_std=0.3)  # 256 tokens, GQA, half rotary
    params = nn.unbox(init_params(config, jax.random.PRNGKey(5)))["params"]
    prompt = [10, 20, 30, 40, 50]
    tokens, length = search.greedy(params, config, prompt, 8, eos_id=7)
    beam = search.beam_search(params, config, prompt, 1, 8, eos_id=7)
    assert length == beam.lengths[0]
    np.testing.assert_array_equal(tokens, beam.tokens[0])
    # Greedy really is the argmax chain: each token is the argmax of a full forward pass.
    seq = jnp.asarray([prompt + list(tokens[:length])])
    logits = Decoder(config).apply({"params": params}, seq)[0, len(prompt) - 1:-1]
    np.testing.assert_array_equal(np.argmax(logits, -1), tokens[:length])


def test_bad_beam_size_is_named(model):
    config, params = model
    with pytest.raises(ValueError, match="beam_size"):
        search.beam_search(params, config, PROMPT, 0, 3)
