"""The decoder: cached decode equals the full forward pass, invariances, packing, z-loss.

Run under XLA's default optimisations (no fast-compile opt-in), as users run the model.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmscale.models import (Decoder, KVCache, Prefix, cache_bytes_per_slot, init_cache,
                            init_params, z_loss)
from lmscale.testing import tiny_config, tiny_params

# GQA with half-rotary heads (Du et al.), and MQA with 25% rotary + qk-norm + GPT-NeoX
# block options, so both the grouped einsums and the partial rotary path are covered.
CONFIGS = {
    "gqa_half_rotary": tiny_config(),
    "mqa_quarter_rotary_neox": tiny_config(
        n_kv_heads=1, rotary_fraction=0.25, qk_norm=True, norm="layernorm", use_bias=True,
        parallel_residual=True, mlp="plain", tie_embeddings=False),
}
TOL = 1e-4


# Every test calls the model at the same few shapes, so each config compiles a handful of
# programs: forward/prefill at [3, 12], and decode steps of 4 and 1 tokens for 3 slots.
ROWS, LENGTH, CACHE, CHUNK = 3, 12, 16, 4


@functools.lru_cache(maxsize=None)
def _model(name):
    config = CONFIGS[name]
    model = Decoder(config)
    params = tiny_params(config, seed=1)

    @jax.jit
    def prefill(p, tokens, positions, segment_ids):
        return model.apply({"params": p}, tokens, positions, segment_ids, return_kv=True)

    @jax.jit
    def step(p, tokens, positions, cache, cache_index, prefix=None, prefix_index=None):
        return model.apply({"params": p}, tokens, positions, cache=cache,
                           cache_index=cache_index, prefix=prefix, prefix_index=prefix_index)

    return config, params, prefill, step


def _forward(name, rows, positions=None, segment_ids=None):
    """Full-forward logits of up to ROWS sequences (each <= LENGTH), one [T_i, V] each.

    Rows are right-padded to [ROWS, LENGTH]; causality keeps padding out of the kept logits.
    """
    _, params, prefill, _ = _model(name)
    tokens = np.zeros((ROWS, LENGTH), np.int32)
    pos = np.broadcast_to(np.arange(LENGTH, dtype=np.int32), (ROWS, LENGTH)).copy()
    seg = np.ones((ROWS, LENGTH), np.int32)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = row
        if positions is not None:
            pos[i, :len(row)] = positions[i]
        if segment_ids is not None:
            seg[i, :len(row)] = segment_ids[i]
    logits, kv = prefill(params, jnp.asarray(tokens), jnp.asarray(pos), jnp.asarray(seg))
    return [logits[i, :len(row)] for i, row in enumerate(rows)], kv


def _tokens(seed, shape):
    return np.asarray(jax.random.randint(jax.random.PRNGKey(seed), shape, 0, 256, jnp.int32))


def _chunks(config, params, step, tokens, starts, cache, prefix=None, prefix_index=None):
    """Feeds tokens [ROWS, n] (n >= CHUNK): one CHUNK-token call, then single tokens.

    Row r's tokens go to positions starts[r] + k and cache slots k (cache_index = k).
    """
    n = tokens.shape[1]
    extra = {} if prefix is None else dict(prefix=prefix, prefix_index=jnp.asarray(prefix_index))
    pos = starts[:, None] + np.arange(n)[None, :]
    logits, cache = step(params, jnp.asarray(tokens[:, :CHUNK]), jnp.asarray(pos[:, :CHUNK]),
                         cache, jnp.zeros((ROWS,), jnp.int32), **extra)
    out = [logits]
    for k in range(CHUNK, n):
        logits, cache = step(params, jnp.asarray(tokens[:, k:k + 1]), jnp.asarray(pos[:, k:k + 1]),
                             cache, jnp.full((ROWS,), k, jnp.int32), **extra)
        out.append(logits)
    return jnp.concatenate(out, axis=1), cache


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_decode_matches_forward(name):
    config, params, _, step = _model(name)
    tokens = _tokens(0, (ROWS, 10))
    full, _ = _forward(name, list(tokens))
    cache = init_cache(config, batch=ROWS, length=CACHE)
    decoded, cache = _chunks(config, params, step, tokens, np.zeros(ROWS, np.int64), cache)
    assert decoded.shape == (ROWS, 10, config.vocab_size) and decoded.dtype == jnp.float32
    np.testing.assert_allclose(decoded, jnp.stack(full), atol=TOL, rtol=0)
    assert isinstance(cache, KVCache)
    assert cache.k.shape == (config.n_layers, ROWS, CACHE, config.n_kv_heads, config.head_dim)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_decode_rows_at_different_cache_positions(name):
    config, params, _, step = _model(name)
    lengths = np.array([2, 4, 3])
    tokens = _tokens(1, (ROWS, 10))
    # Prefill every prompt padded to CHUNK; a short row's padding is overwritten as it
    # decodes, and never attended to before that (keys beyond the write index are masked).
    cache = init_cache(config, batch=ROWS, length=CACHE)
    pos = np.broadcast_to(np.arange(CHUNK), (ROWS, CHUNK))
    logits, cache = step(params, jnp.asarray(tokens[:, :CHUNK]), jnp.asarray(pos), cache,
                         jnp.zeros((ROWS,), jnp.int32))
    got = [[logits[r, :lengths[r]]] for r in range(ROWS)]
    for k in range(5):
        at = lengths + k
        logits, cache = step(params, jnp.asarray(tokens[np.arange(ROWS), at][:, None]),
                             jnp.asarray(at[:, None]), cache, jnp.asarray(at, jnp.int32))
        for r in range(ROWS):
            got[r].append(logits[r])
    want, _ = _forward(name, [tokens[r, :lengths[r] + 5] for r in range(ROWS)])
    for r in range(ROWS):
        np.testing.assert_allclose(jnp.concatenate(got[r], axis=0), want[r], atol=TOL, rtol=0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_decode_with_shared_prefix_matches_forward(name):
    config, params, _, step = _model(name)
    prompts = _tokens(2, (2, 6))
    prompt_lengths = np.array([4, 6])
    _, kv = _forward(name, list(prompts))
    prefix = Prefix(kv.k[:, :2], kv.v[:, :2], jnp.asarray(prompt_lengths, jnp.int32))
    # Three slots: slot 0 reads prompt 0, slots 1 and 2 read prompt 1 (two samples).
    prefix_index = np.array([0, 1, 1])
    continuation = _tokens(3, (ROWS, 6))
    starts = prompt_lengths[prefix_index]
    cache = init_cache(config, batch=ROWS, length=CACHE)
    got, _ = _chunks(config, params, step, continuation, starts, cache, prefix, prefix_index)
    sequences = [np.concatenate([prompts[p, :prompt_lengths[p]], continuation[s]])
                 for s, p in enumerate(prefix_index)]
    want, _ = _forward(name, sequences)
    for s, p in enumerate(prefix_index):
        np.testing.assert_allclose(got[s], want[s][prompt_lengths[p]:], atol=TOL, rtol=0)


def test_prefill_returns_this_calls_keys_and_values():
    config = CONFIGS["gqa_half_rotary"]
    tokens = _tokens(4, (ROWS, LENGTH))
    _, kv = _forward("gqa_half_rotary", list(tokens))
    assert kv.k.shape == (config.n_layers, ROWS, LENGTH, config.n_kv_heads, config.head_dim)
    # Keys/values of the first 5 positions do not depend on later tokens (causality) ...
    _, kv_other = _forward("gqa_half_rotary", [np.concatenate([t[:5], t[5:][::-1]])
                                               for t in tokens])
    np.testing.assert_allclose(kv.k[:, :, :5], kv_other.k[:, :, :5], atol=1e-6, rtol=0)
    np.testing.assert_allclose(kv.v[:, :, :5], kv_other.v[:, :, :5], atol=1e-6, rtol=0)
    # ... but those of position 5 on do.
    assert float(jnp.max(jnp.abs(kv.k[:, :, 5:] - kv_other.k[:, :, 5:]))) > 1e-3


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_appending_tokens_leaves_earlier_logits_unchanged(name):
    tokens = _tokens(5, (LENGTH,))
    changed = tokens.copy()
    changed[8] = (changed[8] + 1) % 256
    short, long, other = _forward(name, [tokens[:7], tokens, changed])[0]
    np.testing.assert_allclose(long[:7], short, atol=1e-5, rtol=0)
    # Changing token 8 leaves logits 0..7 alone and changes 8.. (so the test can fail).
    np.testing.assert_allclose(other[:8], long[:8], atol=1e-5, rtol=0)
    assert float(jnp.max(jnp.abs(other[8:] - long[8:]))) > 1e-3


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_packed_segments_do_not_attend_across_segments(name):
    a, b = _tokens(6, (5,)), _tokens(7, (7,))
    packed = np.concatenate([a, b])
    positions = np.concatenate([np.arange(5), np.arange(7)])
    segments = np.array([1] * 5 + [2] * 7)
    (got, unmasked), _ = _forward(name, [packed, packed], positions=[positions, positions],
                                  segment_ids=[segments, np.ones(12)])
    alone_a, alone_b = _forward(name, [a, b])[0]
    np.testing.assert_allclose(got[:5], alone_a, atol=TOL, rtol=0)
    np.testing.assert_allclose(got[5:], alone_b, atol=TOL, rtol=0)
    # Without segment ids the second sequence does see the first.
    assert float(jnp.max(jnp.abs(unmasked[5:] - got[5:]))) > 1e-3


def test_bfloat16_compute_returns_float32_logits_close_to_float32():
    config = CONFIGS["gqa_half_rotary"].replace(dtype="bfloat16")
    _, params, _, _ = _model("gqa_half_rotary")  # parameters stay float32 whatever dtype
    tokens = _tokens(8, (ROWS, LENGTH))
    low = jax.jit(lambda p, t: Decoder(config).apply({"params": p}, t))(params, tokens)
    high = jnp.stack(_forward("gqa_half_rotary", list(tokens))[0])
    assert low.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(low - high))) > 1e-6  # really computed in bfloat16
    np.testing.assert_allclose(low, high, atol=5e-2, rtol=0)


def test_padded_vocab_logits_are_unpadded():
    config = tiny_config(vocab_size=250, vocab_pad_multiple=128)
    variables = jax.eval_shape(lambda r: Decoder(config).init(r, jnp.zeros((1, 4), jnp.int32)),
                               jax.random.PRNGKey(0))
    variables = nn.unbox(variables)
    assert variables["params"]["embed"]["embedding"].shape == (256, config.d_model)
    logits = jax.eval_shape(lambda v, t: Decoder(config).apply(v, t), variables,
                            jnp.zeros((1, 4), jnp.int32))
    assert logits.shape == (1, 4, 250)


def test_z_loss_is_squared_log_partition():
    x = np.random.default_rng(0).normal(size=(2, 3, 11)) * 4.0
    logits = jnp.asarray(x, jnp.float32)
    log_z = np.log(np.exp(x).sum(-1))
    np.testing.assert_allclose(z_loss(logits), log_z ** 2, rtol=1e-5)
    assert z_loss(logits).shape == (2, 3)


def test_cache_bytes_per_slot_matches_allocated_cache():
    config = tiny_config()
    cache = init_cache(config, batch=3, length=20)
    assert cache.k.dtype == jnp.float32
    assert cache_bytes_per_slot(config, 20) * 3 == cache.k.nbytes + cache.v.nbytes
    assert cache_bytes_per_slot(config, 20, jnp.bfloat16) * 2 == cache_bytes_per_slot(config, 20)


def test_logits_at_equals_the_full_logits_at_those_positions():
    config = tiny_config()
    params = nn.unbox(init_params(config, jax.random.PRNGKey(4)))["params"]
    tokens = jax.random.randint(jax.random.PRNGKey(5), (3, 9), 0, config.vocab_size)
    full, kv_full = Decoder(config).apply({"params": params}, tokens, return_kv=True)
    at = jnp.array([8, 0, 4])
    some, kv = Decoder(config).apply({"params": params}, tokens, return_kv=True, logits_at=at)
    assert some.shape == (3, 1, config.vocab_size)
    np.testing.assert_allclose(some[:, 0], full[jnp.arange(3), at], atol=1e-5)
    np.testing.assert_allclose(kv.k, kv_full.k, atol=1e-6)


@pytest.mark.parametrize("overrides", [{}, {"activation": "silu", "n_kv_heads": 1}])
def test_fused_projections_equal_the_separate_ones(overrides):
    """`layers.fused_projections` (bench_train's ablation): queries, keys and values, and a gated
    MLP's gate and up, each from one matmul against the joined kernels, with the same
    parameters (names, shapes and initial values) and the same logits and gradients."""
    from lmscale.models import layers

    config = tiny_config(**overrides)  # a gated MLP, no biases
    params = tiny_params(config)
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, config.vocab_size, (2, 12)))
    loss = lambda p: jnp.mean(Decoder(config).apply({"params": p}, tokens) ** 2)  # noqa: E731
    with layers.fused_projections(False):
        want, want_grad = jax.value_and_grad(loss)(params)
        apart_params = Decoder(config).init(jax.random.PRNGKey(0), tokens)["params"]
    with layers.fused_projections(True):
        got, got_grad = jax.value_and_grad(loss)(params)
        fused_params = Decoder(config).init(jax.random.PRNGKey(0), tokens)["params"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, nn.unbox(fused_params),
                           nn.unbox(apart_params))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, w in zip(jax.tree_util.tree_leaves(got_grad), jax.tree_util.tree_leaves(want_grad)):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-6)


def test_logits_rows_and_a_static_tail_equal_the_full_logits_there():
    """`logits_at` [B, R] gathers R rows per row; `logits_from` adds the static tail
    [logits_from, T) after them (the scorer's last context position, then its choices)."""
    config = tiny_config()
    params = nn.unbox(init_params(config, jax.random.PRNGKey(4)))["params"]
    tokens = jax.random.randint(jax.random.PRNGKey(5), (3, 9), 0, config.vocab_size)
    model = Decoder(config)
    full = model.apply({"params": params}, tokens)
    at = jnp.array([[2, 7], [0, 0], [5, 1]])
    both = model.apply({"params": params}, tokens, logits_at=at, logits_from=6)
    assert both.shape == (3, 2 + 3, config.vocab_size)
    np.testing.assert_allclose(both[:, :2], jnp.take_along_axis(full, at[..., None], axis=1),
                               atol=1e-5)
    np.testing.assert_allclose(both[:, 2:], full[:, 6:], atol=1e-5)
    tail = model.apply({"params": params}, tokens, logits_from=8)
    np.testing.assert_allclose(tail, full[:, 8:], atol=1e-5)
    with pytest.raises(ValueError, match="logits_from=9"):
        model.apply({"params": params}, tokens, logits_from=9)
