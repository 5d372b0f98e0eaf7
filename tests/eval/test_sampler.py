"""Tests for lmscale.eval.sampler: distributions, hand-written decodes, cache, refill, seeds."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from lmscale.data import checkers
from lmscale.eval import methods
from lmscale.eval import sampler as S
from lmscale.models import Decoder, KVCache, Prefix, init_cache, init_params
from lmscale.testing import tiny_config

PROMPT = [1, 2, 4, 5, 3]


pytestmark = pytest.mark.usefixtures("fast_compiles")


@pytest.fixture(scope="module")
def model():
    """Tiny GQA / partial-rotary model over 8 tokens with spread-out next-token probs."""
    config = tiny_config(vocab_size=8, init_std=0.1)
    params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))["params"]
    return config, params


def markov_model(logits_vv):
    """A real `Decoder` whose next-token logits are `logits_vv[last token]` (up to RMS eps).

    Every block's output projections are zero, so the residual stream is the embedding of
    the last token; embeddings are the identity, RMSNorm maps e_i to sqrt(D) e_i, and the
    untied unembedding is logits_vv / sqrt(D).
    """
    v = logits_vv.shape[0]
    config = tiny_config(vocab_size=v, d_model=v, n_heads=2, n_kv_heads=1, d_ff=8,
                         n_layers=1, tie_embeddings=False)
    params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))["params"]

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            return jnp.ones_like(leaf)
        if "embed" in name and "unembed" not in name:
            return jnp.eye(v, dtype=leaf.dtype)
        if "unembed" in name:
            return jnp.asarray(logits_vv / np.sqrt(v), leaf.dtype)
        return jnp.zeros_like(leaf)

    return config, jax.tree_util.tree_map_with_path(fill, params)


def successor_chain(v=8, margin=5.0):
    """Logits with argmax next token = last + 1 (mod v)."""
    logits = np.zeros((v, v), np.float32)
    logits[np.arange(v), (np.arange(v) + 1) % v] = margin
    return logits


class CharVocab:
    """Token i <-> letter 'a' + i."""

    eos_id = None

    def encode(self, text):
        return [ord(c) - ord("a") for c in text]

    def decode(self, ids):
        return "".join(chr(ord("a") + int(i)) for i in ids)


def forward_probs(config, params, prompts, temperature=1.0):
    logits = Decoder(config).apply({"params": params}, jnp.asarray(prompts, jnp.int32))
    return np.asarray(jax.nn.softmax(logits[:, -1] / temperature, axis=-1), np.float64)


def chi_square_pvalue(observed, expected_probs):
    keep = expected_probs > 0
    assert observed[~keep].sum() == 0, f"samples outside the support: {observed}"
    exp = expected_probs[keep] / expected_probs[keep].sum() * observed.sum()
    return stats.chisquare(observed[keep], exp).pvalue


# ---- hand-written expectations on the Markov model ------------------------------------


def test_greedy_follows_hand_written_chain():
    config, params = markov_model(successor_chain())
    sampler = S.Sampler(params, config, method=S.Greedy(), num_slots=2, max_new_tokens=6)
    out = sampler.sample([0, 5, 2], 3, seed=0)
    np.testing.assert_array_equal(out.tokens, [[3, 4, 5, 6, 7, 0]] * 3)
    np.testing.assert_array_equal(out.lengths, [6, 6, 6])


def test_eos_stops_and_is_kept():
    config, params = markov_model(successor_chain())
    sampler = S.Sampler(params, config, method=S.Greedy(), num_slots=2, max_new_tokens=6,
                        eos_id=6)
    out = sampler.sample([2], 2, seed=0)
    np.testing.assert_array_equal(out.tokens, [[3, 4, 5, 6, 0, 0]] * 2)
    np.testing.assert_array_equal(out.lengths, [4, 4])
    # A prompt whose very first completion token is EOS gives length 1.
    out = sampler.sample([5], 1, seed=0)
    np.testing.assert_array_equal(out.lengths, [1])


def test_stop_strings_stop_in_loop_and_cut_text():
    config, params = markov_model(successor_chain())
    sampler = S.Sampler(params, config, CharVocab(), method=S.Greedy(), num_slots=2,
                        max_new_tokens=7, stop_strings=["fg"])
    out = sampler.sample("c", 1, seed=0)  # d e f g | h a ...
    np.testing.assert_array_equal(out.lengths, [4])
    np.testing.assert_array_equal(out.tokens[0], [3, 4, 5, 6, 0, 0, 0])
    assert sampler.text(out) == ["de"]
    assert checkers.cut_at_stop("abcXdeY", ["Y", "X"]) == "abc"


# ---- distributions (chi-square at fixed seeds) -----------------------------------------


def test_first_tokens_follow_tempered_softmax(model):
    config, params = model
    probs = forward_probs(config, params, [PROMPT], temperature=0.7)[0]
    sampler = S.Sampler(params, config, method=S.Temperature(0.7), num_slots=64,
                        max_new_tokens=1)
    first = sampler.sample(PROMPT, 4000, seed=3).tokens[:, 0]
    counts = np.bincount(first, minlength=8)
    assert chi_square_pvalue(counts, probs) > 1e-3
    # The same samples are far from the untempered softmax: the test can fail.
    wrong = forward_probs(config, params, [PROMPT], temperature=1.0)[0]
    assert chi_square_pvalue(counts, wrong) < 1e-6


def test_token_pairs_follow_model_through_decode_path(model):
    config, params = model
    p1 = forward_probs(config, params, [PROMPT])[0]
    p2 = forward_probs(config, params, [PROMPT + [t] for t in range(8)])  # [t1, t2]
    expected = (p1[:, None] * p2).ravel()
    sampler = S.Sampler(params, config, num_slots=32, max_new_tokens=2)
    out = sampler.sample(PROMPT, 6000, seed=11).tokens
    counts = np.bincount(out[:, 0] * 8 + out[:, 1], minlength=64)
    mask = expected * 6000 >= 5  # chi-square needs expected counts >= 5
    observed = np.append(counts[mask], counts[~mask].sum())
    exp = np.append(expected[mask], expected[~mask].sum())
    assert stats.chisquare(observed, exp / exp.sum() * 6000).pvalue > 1e-3


def test_top_k_keeps_k_most_likely(model):
    config, params = model
    probs = forward_probs(config, params, [PROMPT])[0]
    top = np.argsort(-probs)[:3]
    truncated = np.where(np.isin(np.arange(8), top), probs, 0.0)
    sampler = S.Sampler(params, config, method=S.TopK(3), num_slots=64, max_new_tokens=1)
    counts = np.bincount(sampler.sample(PROMPT, 3000, seed=5).tokens[:, 0], minlength=8)
    assert set(np.flatnonzero(counts)) == set(top)
    assert chi_square_pvalue(counts, truncated) > 1e-3


def test_top_p_keeps_smallest_set_reaching_p(model):
    config, params = model
    probs = forward_probs(config, params, [PROMPT])[0]
    order = np.argsort(-probs)
    before = np.cumsum(probs[order]) - probs[order]
    p = float((before[2] + before[3]) / 2)  # strictly between: exactly 3 tokens reach p
    truncated = np.zeros(8)
    truncated[order[:3]] = probs[order[:3]]
    sampler = S.Sampler(params, config, method=S.TopP(p), num_slots=64, max_new_tokens=1)
    counts = np.bincount(sampler.sample(PROMPT, 3000, seed=6).tokens[:, 0], minlength=8)
    assert set(np.flatnonzero(counts)) == set(order[:3])
    assert chi_square_pvalue(counts, truncated) > 1e-3


def test_filters_on_hand_written_logits():
    logits = jnp.log(jnp.asarray([[0.05, 0.5, 0.15, 0.3]]))
    kept = lambda f: np.isfinite(np.asarray(f.filter(logits)[0]))  # noqa: E731
    np.testing.assert_array_equal(kept(S.TopP(0.7)), [False, True, False, True])
    np.testing.assert_array_equal(kept(S.TopP(0.85)), [False, True, True, True])
    np.testing.assert_array_equal(kept(S.TopP(0.1)), [False, True, False, False])
    np.testing.assert_array_equal(kept(S.TopK(1)), [False, True, False, False])
    np.testing.assert_array_equal(kept(S.TopK(3)), [False, True, True, True])
    np.testing.assert_allclose(S.Temperature(2.0).filter(logits), logits / 2.0)


# ---- cache, refill, determinism --------------------------------------------------------


def test_cached_decode_matches_forward_along_samples():
    config = tiny_config()  # GQA, half rotary, 256 tokens
    params = nn.unbox(init_params(config, jax.random.PRNGKey(1)))["params"]
    prompt = list(range(40, 51))  # 11 tokens: padded to the 16 bucket
    sampler = S.Sampler(params, config, num_slots=3, max_new_tokens=9, eos_id=7)
    out = sampler.sample(prompt, 7, seed=2)
    for row, n, logp in zip(out.tokens, out.lengths, out.logprobs):
        seq = jnp.asarray([prompt + list(row[:n])], jnp.int32)
        full = jax.nn.log_softmax(Decoder(config).apply({"params": params}, seq)[0], -1)
        want = np.asarray(full[len(prompt) - 1:-1])[np.arange(n), row[:n]]
        np.testing.assert_allclose(logp[:n], want, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(logp[n:], 0.0)


def test_refill_produces_every_requested_completion(model):
    config, params = model
    slots, new_tokens = 4, 6
    sampler = S.Sampler(params, config, num_slots=slots, max_new_tokens=new_tokens, eos_id=2)
    state = sampler.prefill(PROMPT)
    fn = S.make_sampler(config, sampler.method, slots, new_tokens, 64, 2, ())
    key = jax.random.PRNGKey(0)[None]
    out = fn(params, state.prefix, state.first_logits, key, jnp.asarray([37]),
             jnp.asarray([0]), jnp.asarray(37))
    lengths = np.asarray(out.lengths)
    assert (lengths[:37] >= 1).all() and (lengths[37:] == 0).all()
    ends_eos = np.asarray(out.tokens)[np.arange(37), lengths[:37] - 1] == 2
    assert ((lengths[:37] == new_tokens) | ends_eos).all()
    assert ends_eos.sum() > 5  # EOS (p ~ 0.22 per token) really shortens samples
    # Slots stay busy: decode steps barely exceed generated tokens / slots.
    steps = int(out.num_steps)
    assert steps <= int(np.ceil((lengths.sum() - 37) / slots)) + new_tokens
    assert sampler.sample(PROMPT, 37, seed=0).tokens.shape == (37, new_tokens)


def test_samples_depend_only_on_seed_and_index(model):
    config, params = model
    a = S.Sampler(params, config, num_slots=8, max_new_tokens=5, eos_id=2)
    b = S.Sampler(params, config, num_slots=3, max_new_tokens=5, eos_id=2,
                  max_samples_per_call=7)
    ref = a.sample(PROMPT, 20, seed=4)
    np.testing.assert_array_equal(a.sample(PROMPT, 20, seed=4).tokens, ref.tokens)
    np.testing.assert_array_equal(b.sample(PROMPT, 20, seed=4).tokens, ref.tokens)
    np.testing.assert_array_equal(a.sample(PROMPT, 12, seed=4, start=8).tokens,
                                  ref.tokens[8:])
    assert (a.sample(PROMPT, 20, seed=5).tokens != ref.tokens).any()


def test_slots_move_on_to_the_next_prompt(model):
    config, params = model
    sampler = S.Sampler(params, config, num_slots=4, max_new_tokens=5, eos_id=2)
    p0 = sampler.prefill([1, 2, 3])
    p1 = sampler.prefill([7, 6, 5, 4])
    prefix = S.Prefix(*(jnp.concatenate([x, y], axis=1) for x, y in zip(p0.prefix[:2],
                                                                        p1.prefix[:2])),
                      jnp.concatenate([p0.prefix.lengths, p1.prefix.lengths]))
    first = jnp.concatenate([p0.first_logits, p1.first_logits])
    keys = jnp.stack([jax.random.PRNGKey(10), jax.random.PRNGKey(20)])
    fn = S.make_sampler(config, sampler.method, 4, 5, 16, 2, ())
    out = fn(params, prefix, first, keys, jnp.asarray([3, 6]), jnp.asarray([2, 0]),
             jnp.asarray(9))
    np.testing.assert_array_equal(out.tokens[:3], sampler.sample(p0, 3, 10, start=2).tokens)
    np.testing.assert_array_equal(out.tokens[3:9], sampler.sample(p1, 6, 20).tokens)


def test_sampling_loop_makes_no_host_transfers(model):
    config, params = model
    sampler = S.Sampler(params, config, num_slots=4, max_new_tokens=4, eos_id=2)
    state = sampler.prefill(PROMPT)
    fn = S.make_sampler(config, sampler.method, 4, 4, 16, 2, ((3, 4),))
    args = jax.device_put((params, state.prefix, state.first_logits,
                           jax.random.PRNGKey(0)[None], jnp.asarray([10]), jnp.asarray([0]),
                           jnp.asarray(10)))
    want = fn(*args)  # compiles outside the guard
    with jax.transfer_guard("disallow"):
        out = fn(*args)
        out.tokens.block_until_ready()
    np.testing.assert_array_equal(out.tokens, want.tokens)


def test_make_draw_checks_texts_in_sampling_order():
    config, params = markov_model(np.random.default_rng(0).normal(size=(8, 8)) * 2)
    sampler = S.Sampler(params, config, CharVocab(), num_slots=4, max_new_tokens=3)
    draw = S.make_draw(sampler, "ab", lambda text: "c" in text, seed=9)
    first, second = draw(3), draw(6)
    texts = sampler.text(sampler.sample("ab", 9, seed=9))
    np.testing.assert_array_equal(np.concatenate([first, second]), ["c" in t for t in texts])
    assert draw.texts == texts[3:]
    assert 0 < np.concatenate([first, second]).sum() < 9  # both outcomes occur


def test_prompt_lengths_in_one_bucket_share_one_compilation(model):
    config, params = model
    sampler = S.Sampler(params, config, num_slots=2, max_new_tokens=2)
    sampler.sample([1, 2, 3, 4, 5], 2, seed=0)
    fn = S.make_sampler(config, sampler.method, 2, 2, 2, None, ())
    before = fn._cache_size()
    sampler.sample([1, 2, 3, 4, 5, 6, 7, 0, 1], 2, seed=0)
    assert fn._cache_size() == before
    assert S.bucket(9, 16) == 16 and S.bucket(17, 16) == 32 and S.bucket(1) == 1


def test_bad_input_is_named(model):
    config, params = model
    with pytest.raises(ValueError, match="TopK.k"):
        S.TopK(0)
    with pytest.raises(ValueError, match="TopP.p"):
        S.TopP(1.5)
    with pytest.raises(ValueError, match="Temperature.temperature"):
        S.Temperature(0.0)
    sampler = S.Sampler(params, config, num_slots=2, max_new_tokens=2)
    with pytest.raises(ValueError, match="empty prompt"):
        sampler.sample([], 1, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        sampler.sample([9], 1, seed=0)
    with pytest.raises(ValueError, match="max_seq_len"):
        sampler.sample(list(range(8)) * 8, 1, seed=0)
    with pytest.raises(ValueError, match="need a vocab"):
        S.Sampler(params, config, stop_strings=["x"])


# ---- fast decode paths (issue #7): same results as the straightforward forms ----------


def test_one_shared_prefix_decodes_like_per_row_prefixes_and_forward():
    # Bp == 1 takes the no-gather einsum path; the same prompt stored twice (Bp == 2) takes
    # the gathered path. Both must equal the full forward pass on prompt + continuation.
    config = tiny_config(n_layers=1)
    params = nn.unbox(init_params(config, jax.random.PRNGKey(3)))["params"]
    model = Decoder(config)
    prompt = jnp.asarray([[5, 9, 2, 7, 1, 0, 0, 0]], jnp.int32)  # 5 real tokens, padded
    length = 5
    _, kv = model.apply({"params": params}, prompt, return_kv=True)
    one = Prefix(kv.k, kv.v, jnp.asarray([length], jnp.int32))
    two = Prefix(jnp.concatenate([kv.k, kv.k], 1), jnp.concatenate([kv.v, kv.v], 1),
                   jnp.asarray([length, length], jnp.int32))
    continuation = np.asarray([[3, 4, 8], [6, 6, 1], [2, 0, 5]], np.int32)
    rows = continuation.shape[0]

    @jax.jit
    def decode(prefix, prefix_index):
        cache = init_cache(config, rows, 4)
        outs = []
        for k in range(continuation.shape[1]):
            logits, cache = model.apply(
                {"params": params}, jnp.asarray(continuation[:, k:k + 1]),
                jnp.full((rows, 1), length + k, jnp.int32), cache=cache,
                cache_index=jnp.full((rows,), k, jnp.int32), prefix=prefix,
                prefix_index=prefix_index)
            outs.append(logits[:, 0])
        return jnp.stack(outs, 1)

    shared = decode(one, jnp.zeros((rows,), jnp.int32))
    gathered = decode(two, jnp.asarray([0, 1, 1], jnp.int32))
    np.testing.assert_allclose(shared, gathered, rtol=1e-5, atol=1e-5)
    full = model.apply({"params": params}, jnp.asarray(
        np.concatenate([np.repeat(np.asarray(prompt)[:, :length], rows, 0), continuation], 1)))
    np.testing.assert_allclose(shared, full[:, length:], rtol=1e-4, atol=1e-4)
    # Logits differ between rows: a prefix read through the wrong index would show.
    assert float(jnp.max(jnp.abs(shared[0] - shared[1]))) > 1e-3


def test_decode_writes_only_its_own_cache_rows():
    config = tiny_config(n_layers=2)
    params = nn.unbox(init_params(config, jax.random.PRNGKey(4)))["params"]
    rows, length = 3, 5
    sentinel = init_cache(config, rows, length)
    sentinel = KVCache(sentinel.k + 7.0, sentinel.v - 7.0)
    index = np.asarray([0, 3, length], np.int32)  # the last row writes past the end
    _, cache = Decoder(config).apply(
        {"params": params}, jnp.asarray([[1], [2], [3]], jnp.int32),
        jnp.asarray(index[:, None]), cache=sentinel, cache_index=jnp.asarray(index))
    for name, old, new in (("k", sentinel.k, cache.k), ("v", sentinel.v, cache.v)):
        changed = np.asarray(jnp.any(new != old, axis=(-1, -2)))  # [L, B, S]
        want = np.zeros_like(changed)
        want[:, 0, 0] = want[:, 1, 3] = True  # row 2's write (index == S) is dropped
        np.testing.assert_array_equal(changed, want, err_msg=name)


def test_sampling_draws_equal_jax_categorical_and_argmax():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(64, 37)).astype(np.float32) * 3
    logits[:, 5] = -np.inf  # filtered tokens (top-k / top-p)
    logits[:8, 10:13] = 50.0  # exact ties: the lowest index wins, as jnp.argmax
    logits = jnp.asarray(logits)
    keys = jax.random.split(jax.random.PRNGKey(7), 64)
    want = jax.vmap(jax.random.categorical)(keys, logits)
    got = jax.jit(methods.categorical)(keys, logits)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(np.asarray(got))) > 10  # draws really vary across rows
    np.testing.assert_array_equal(jax.jit(methods.argmax)(logits), jnp.argmax(logits, -1))
    assert set(np.asarray(methods.argmax(logits))[:8]) == {10}


# ---- several prompts per call (issue #14) ----------------------------------------------


def test_many_prompts_in_one_call_draw_what_single_prompt_calls_draw(model):
    config, params = model
    sampler = S.Sampler(params, config, num_slots=8, max_new_tokens=4, eos_id=2)
    prompts = [[1, 2, 3], [7, 6, 5, 4], [3, 3], list(range(1, 8)) * 3]  # buckets 16 and 32
    counts, seeds, starts = [5, 9, 0, 6], [10, 20, 30, 40], [2, 0, 0, 7]
    many = sampler.sample_many(prompts, counts, seeds, starts)
    assert [len(c.tokens) for c in many] == counts
    for prompt, n, seed, start, got in zip(prompts, counts, seeds, starts, many):
        want = sampler.sample(prompt, n, seed, start=start)
        np.testing.assert_array_equal(got.tokens, want.tokens)
        np.testing.assert_array_equal(got.lengths, want.lengths)
        np.testing.assert_allclose(got.logprobs, want.logprobs, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="as many"):
        sampler.sample_many(prompts, counts[:2], seeds)


def test_many_prompts_per_call_follow_each_prompts_distribution(model):
    config, params = model
    prompts = [PROMPT, [6, 1, 1, 7]]
    probs = [forward_probs(config, params, [p])[0] for p in prompts]
    sampler = S.Sampler(params, config, num_slots=64, max_new_tokens=1,
                        max_samples_per_call=8192)
    many = sampler.sample_many(prompts, [3000, 3000], [1, 2])
    for got, p in zip(many, probs):
        assert chi_square_pvalue(np.bincount(got.tokens[:, 0], minlength=8), p) > 1e-3
    # The two prompts' next-token distributions differ: a mix-up of rows would fail.
    assert chi_square_pvalue(np.bincount(many[0].tokens[:, 0], minlength=8), probs[1]) < 1e-6


def test_grouped_prefix_attention_equals_the_gathered_one():
    """Rows in R consecutive groups reading prefix r (the sampler's slot groups, no gather)
    score and read the prefixes as the per-row gather with prefix_index does."""
    import jax
    import jax.numpy as jnp

    from lmscale.models import layers

    r, per, t, k, g, h, p = 3, 2, 1, 2, 2, 4, 5
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    qg = jax.random.normal(keys[0], (r * per, t, k, g, h))
    pk = jax.random.normal(keys[1], (r, p, k, h))
    pv = jax.random.normal(keys[2], (r, p, k, h))
    plen = jnp.asarray([5, 2, 3], jnp.int32)
    probs = jax.nn.softmax(jax.random.normal(keys[3], (r * per, k, g, t, p)), axis=-1)
    grouped, read_grouped = layers._prefix_part(qg, (pk, pv, plen), None)
    index = jnp.repeat(jnp.arange(r), per)
    gathered, read_gathered = layers._prefix_part(qg, (pk, pv, plen), index)
    np.testing.assert_allclose(grouped, gathered, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(read_grouped(probs), read_gathered(probs), rtol=1e-6,
                               atol=1e-6)
    assert float(grouped[per, 0, 0, 0, 3]) < -1e29  # prefix 1 has 2 valid positions


def test_min_capacity_shares_one_loop_and_changes_no_sample(model):
    """Calls of 5 and 20 samples with min_capacity=32 run one compiled loop (capacity 32)
    and draw the samples a plain call draws (sample i depends on its index only)."""
    config, params = model
    sampler = S.Sampler(params, config, num_slots=4, max_new_tokens=3,
                        max_samples_per_call=64)
    plain = sampler.sample(PROMPT, 5, seed=3)
    S.make_sampler.cache_clear()
    small = sampler.collect(sampler.dispatch(PROMPT, 5, 3, min_capacity=32))
    large = sampler.collect(sampler.dispatch(PROMPT, 20, 3, min_capacity=32))
    assert S.make_sampler.cache_info().currsize == 1
    for got in (small, large):
        np.testing.assert_array_equal(got.tokens[:5], plain.tokens)
        np.testing.assert_array_equal(got.lengths[:5], plain.lengths)
    assert len(large.lengths) == 20
