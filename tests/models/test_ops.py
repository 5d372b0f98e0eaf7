"""lmscale.models.ops: the explicit-backward product equals autodiff's, in value and grads.

Run under XLA's default optimisations (no fast-compile opt-in): the optimised program is
the one users and the benchmarks run, so it is the one whose gradients are checked, each
against `jax.grad` of the plain formulation.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import meta

from lmscale.models import ops
from lmscale.models.config import ConfigError, ModelConfig
from lmscale.models.decoder import Decoder



@pytest.fixture(autouse=True)
def _optimised():
    assert not jax.config.read("jax_disable_most_optimizations"), \
        "these tests check the optimised program: do not opt them into fast compiles"


# (lhs shape, rhs shape, dimension numbers): dense, dense with a 3-D kernel, attention
# scores with batch dims, the transposed-kernel tied logits, two contracting dims.
CASES = [
    ((2, 5, 6), (6, 7), (((2,), (0,)), ((), ()))),
    ((2, 5, 6), (6, 3, 4), (((2,), (0,)), ((), ()))),
    ((2, 3, 4, 5), (2, 3, 6, 5), (((3,), (3,)), ((0, 1), (0, 1)))),
    ((2, 5, 6), (9, 6), (((2,), (1,)), ((), ()))),
    ((2, 5, 3, 4), (3, 4, 6), (((2, 3), (0, 1)), ((), ()))),
    ((4, 2, 5), (5, 4, 3), (((2,), (0,)), ((0,), (1,)))),
]


@pytest.mark.parametrize("lhs_shape,rhs_shape,dims", CASES)
def test_value_and_grads_equal_autodiff(lhs_shape, rhs_shape, dims):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    lhs = jax.random.normal(k1, lhs_shape)
    rhs = jax.random.normal(k2, rhs_shape)
    out_shape = jax.eval_shape(lambda a, b: jax.lax.dot_general(a, b, dims), lhs, rhs).shape
    ct = jax.random.normal(k3, out_shape)

    def loss(dot, a, b):
        return jnp.sum(dot(a, b, dims) * ct)

    ops.set_explicit_vjp(True)
    try:
        value, grads = jax.jit(jax.value_and_grad(lambda a, b: loss(ops.dot_general, a, b),
                                                  argnums=(0, 1)))(lhs, rhs)
    finally:
        ops.set_explicit_vjp(None)
    ref_value, ref_grads = jax.value_and_grad(
        lambda a, b: loss(jax.lax.dot_general, a, b), argnums=(0, 1))(lhs, rhs)
    # A sum of O(1) terms that nearly cancels (about -0.08): its float32 rounding is
    # absolute (1.6e-6 between jit and eager on one host), so the tolerance is too.
    np.testing.assert_allclose(value, ref_value, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_subscripts_follow_dot_general_output_order():
    # batch dims first, then lhs free, then rhs free: as lax.dot_general orders its output.
    lhs, rhs, out = ops._subscripts(3, 3, (((2,), (0,)), ((0,), (1,))))
    assert (lhs, rhs, out) == ("acb", "bad", "acd")


def test_decoder_gradients_equal_with_and_without_explicit_backward():
    config = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         d_ff=48, rotary_fraction=0.5, tie_embeddings=True)
    params = meta.unbox(Decoder(config).init(jax.random.PRNGKey(1),
                                             jnp.zeros((1, 8), jnp.int32)))["params"]
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 12), 0, 64)
    # Row 0 packs two documents (positions restart, attention stays inside a segment).
    segments = jnp.array([[1] * 5 + [2] * 7, [1] * 12])
    positions = jnp.array([list(range(5)) + list(range(7)), list(range(12))])

    def loss(p):
        logits = Decoder(config).apply({"params": p}, tokens, positions, segments)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0])

    grads = {}
    for enabled in (True, False):
        ops.set_explicit_vjp(enabled)
        try:
            grads[enabled] = jax.jit(jax.grad(loss))(params)
        finally:
            ops.set_explicit_vjp(None)
    flat_true = jax.tree_util.tree_leaves_with_path(grads[True])
    flat_false = jax.tree_util.tree_leaves(grads[False])
    assert len(flat_true) == len(flat_false) > 10
    for (path, a), b in zip(flat_true, flat_false):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=str(path))


def test_explicit_backward_only_by_default_on_cpu():
    assert ops.explicit_vjp_enabled() == (jax.default_backend() == "cpu")
    ops.set_explicit_vjp(False)
    try:
        assert not ops.explicit_vjp_enabled()
        lhs, rhs = jnp.ones((3, 4)), jnp.ones((4, 5))
        text = jax.jit(jax.grad(lambda a: jnp.sum(ops.dot_general(
            a, rhs, (((1,), (0,)), ((), ())))))).lower(lhs).as_text()
        assert "custom_vjp" not in text
    finally:
        ops.set_explicit_vjp(None)


def test_explicit_vjp_context_sets_and_restores_the_choice():
    default = ops.explicit_vjp_enabled()
    with ops.explicit_vjp(not default):
        assert ops.explicit_vjp_enabled() == (not default)
        with ops.explicit_vjp(default):
            assert ops.explicit_vjp_enabled() == default
        assert ops.explicit_vjp_enabled() == (not default)
    assert ops.explicit_vjp_enabled() == default
    with pytest.raises(RuntimeError), ops.explicit_vjp(not default):
        raise RuntimeError("restored on error too")
    assert ops.explicit_vjp_enabled() == default


def test_rotary_table_lookup_equals_computed_angles():
    from lmscale.models.layers import rotary_tables
    positions = jnp.array([[0, 1, 2, 63], [5, 17, 40, 2]], jnp.int32)
    sin_c, cos_c = rotary_tables(positions, 8, 10000.0)
    sin_t, cos_t = rotary_tables(positions, 8, 10000.0, max_len=64)
    assert sin_t.shape == sin_c.shape == (2, 4, 1, 4)
    np.testing.assert_allclose(sin_t, sin_c, atol=1e-6)
    np.testing.assert_allclose(cos_t, cos_c, atol=1e-6)
    # Past the table (padding rows only): the last row, finite.
    sin_p, _ = rotary_tables(jnp.array([[70]], jnp.int32), 8, 10000.0, max_len=64)
    np.testing.assert_allclose(sin_p[0, 0], sin_t[0, 3])


def _attention_inputs(seed, b, t, k, g, h):
    """Random queries, keys, values and an output cotangent of the attention tests."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    return (jax.random.normal(keys[0], (b, t, k, g, h)), jax.random.normal(keys[1], (b, t, k, h)),
            jax.random.normal(keys[2], (b, t, k, h)), jax.random.normal(keys[3], (b, t, k, g, h)))


def _assert_same_value_and_grads(fn, reference, q, kk, v, ct, jit_reference=True):
    """sum(fn(q, k, v) * ct) and its gradients in q, k, v == the reference's."""
    def value_and_grads(f, jit=True):
        vg = jax.value_and_grad(lambda *a: jnp.sum(f(*a) * ct), argnums=(0, 1, 2))
        return (jax.jit(vg) if jit else vg)(q, kk, v)

    got, want = value_and_grads(fn), value_and_grads(reference, jit_reference)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
    for a, w in zip(got[1], want[1]):
        np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-5)


def test_masked_attention_grads_equal_autodiff():
    b, t, k, g, h = 2, 6, 2, 3, 4
    q, kk, v, ct = _attention_inputs(3, b, t, k, g, h)
    causal = jnp.tril(jnp.ones((t, t), bool))
    segments = jnp.array([[1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 1, 0]])
    mask = causal[None] & (segments[:, :, None] == segments[:, None, :])

    def reference(q, kk, v):
        s = jnp.einsum("btkgh,bskh->bkgts", q, kk)
        p = jax.nn.softmax(jnp.where(mask[:, None, None], s, -1e30), axis=-1)
        return jnp.einsum("bkgts,bskh->btkgh", p, v)

    _assert_same_value_and_grads(lambda *a: ops.masked_attention(*a, mask), reference,
                                 q, kk, v, ct, jit_reference=False)


@pytest.mark.parametrize("blocks", [2, 3, 7])
def test_blocked_causal_attention_equals_one_product_in_values_and_grads(blocks):
    """`causal_masked_attention` (query blocks skip the keys after them) == one
    `masked_attention` over the whole causal, packed mask; and its default at T = 128 is
    two blocks, at T = 64 one (the rule the decoder's CPU path uses)."""
    b, t, k, g, h = 2, 7, 2, 2, 4
    q, kk, v, ct = _attention_inputs(5, b, t, k, g, h)
    segments = jnp.array([[1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 1, 1, 0]])
    mask = jnp.tril(jnp.ones((t, t), bool))[None] & (segments[:, :, None] ==
                                                     segments[:, None, :])

    _assert_same_value_and_grads(lambda *a: ops.causal_masked_attention(*a, mask, blocks=blocks),
                                 lambda *a: ops.masked_attention(*a, mask), q, kk, v, ct)
    assert ops.attention_blocks(128) == 2 and ops.attention_blocks(64) == 1
    assert ops.attention_blocks(4096) == ops.MAX_ATTENTION_BLOCKS
    with ops.attention_block_count(1):
        assert ops.attention_blocks(128) == 1


@pytest.mark.parametrize("prefix,window", [(3, 2), (4, 3), (2, 9)])
def test_prefix_window_attention_equals_one_product_in_values_and_grads(prefix, window):
    """`prefix_window_attention` == one `masked_attention` over a mask of its form (a
    causal prefix, then packed segments of at most `window` tokens that each see the
    valid prefix and, causally, themselves), values and gradients; a window wider than
    the band is the same; bad arguments are named."""
    b, t, k, g, h = 2, 11, 1, 2, 4
    q, kk, v, ct = _attention_inputs(6, b, t, k, g, h)
    idx = jnp.arange(t)
    causal = idx[:, None] >= idx[None, :]
    seg = np.zeros((b, t), np.int32)  # after the prefix: segments of <= 2 tokens
    for row, lengths in enumerate([(2, 1, 2, 1, 2), (1, 2, 2, 2)]):
        at = prefix
        for s_id, n in enumerate(lengths, 1):
            seg[row, at:min(t, at + n)] = s_id
            at += n
    seg = jnp.asarray(seg)
    valid = jnp.array([prefix, prefix - 1])  # row 1's last prefix key is padding
    in_prefix = idx < prefix
    mask = ((in_prefix[None, :, None] & in_prefix[None, None, :] & causal[None])
            | (~in_prefix[None, :, None] & ((idx[None, None, :] < valid[:, None, None])
                                            | ((seg[:, :, None] == seg[:, None, :])
                                               & (seg[:, None, :] > 0) & causal[None]))))

    _assert_same_value_and_grads(
        lambda *a: ops.prefix_window_attention(*a, mask, prefix, max(window, 2)),
        lambda *a: ops.masked_attention(*a, mask), q, kk, v, ct)
    # A window narrower than a segment drops keys the mask keeps: the result differs.
    narrow = ops.prefix_window_attention(q, kk, v, mask, prefix, 1)
    assert not np.allclose(narrow, ops.masked_attention(q, kk, v, mask), atol=1e-3)
    with pytest.raises(ValueError, match="prefix=0"):
        ops.prefix_window_attention(q, kk, v, mask, 0, 2)


def test_dot_product_attention_path_equals_default_in_values_and_grads():
    """attention_impl="xla" (jax.nn.dot_product_attention) == the default path on CPU."""
    config = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                         d_ff=48, rotary_fraction=0.5, tie_embeddings=True)
    fused = dataclasses.replace(config, attention_impl="xla")
    params = meta.unbox(Decoder(config).init(jax.random.PRNGKey(1),
                                             jnp.zeros((1, 8), jnp.int32)))["params"]
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 12), 0, 64)
    segments = jnp.array([[1] * 5 + [2] * 7, [1] * 12])  # row 0 packs two documents
    positions = jnp.array([list(range(5)) + list(range(7)), list(range(12))])

    def loss(p, c):
        logits = Decoder(c).apply({"params": p}, tokens, positions, segments)
        return jnp.mean(jax.nn.log_softmax(logits)[..., 0]), logits

    grad = jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)
    (g_ref, logits_ref), (g_new, logits_new) = grad(params, config), grad(params, fused)
    np.testing.assert_allclose(logits_new, logits_ref, rtol=1e-5, atol=1e-5)
    flat_ref = jax.tree_util.tree_leaves_with_path(g_ref)
    flat_new = jax.tree_util.tree_leaves(g_new)
    assert len(flat_ref) == len(flat_new) > 10
    for (path, a), b in zip(flat_ref, flat_new):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6, err_msg=str(path))
    # The segment mask is honoured: without it, row 0's second document changes.
    unpacked = Decoder(fused).apply({"params": params}, tokens, positions, jnp.ones_like(segments))
    assert float(jnp.max(jnp.abs(unpacked[0, 5:] - logits_new[0, 5:]))) > 1e-3


def test_attention_impl_is_validated():
    with pytest.raises(ConfigError, match="attention_impl"):
        ModelConfig(attention_impl="flash")
