"""Matrix products whose backward pass suits XLA's CPU backend.

Stage: models. Every product in the decoder (projections, attention, logits) goes through
`dot_general` here, a drop-in for `jax.lax.dot_general` (and for the `dot_general=`
argument of `flax.linen.Dense` and `jnp.einsum`'s `_dot_general`).

Why: autodiff's transpose rule writes the weight gradient of y = x W as a product that
XLA:CPU lays out by transposing the cotangent dy ([tokens, F], the larger operand) with
the elementwise backward of whatever produced it (GeLU's erf derivative, the gating
multiply) fused into that transposing loop, recomputed for each consumer, and then runs
the product outside the fast GEMM library. Measured on a gated MLP block (1,024 tokens,
D 256, F 640): those loops took ~7 ms each where the elementwise work alone takes ~1 ms.
Here the backward is written out as two einsums with the saved operand first
(d_rhs = einsum(lhs, ct), d_lhs = einsum(ct, rhs)); XLA then transposes the smaller
activation once and both gradients run in the library GEMM: fwd+bwd of that block 33.8 ->
24.3 ms, results equal to float32 rounding. See docs/performance.md.

The explicit backward is used only on the CPU backend (`explicit_vjp_enabled`); on TPU and
GPU plain autodiff is left to XLA. `set_explicit_vjp(True/False/None)` overrides the
choice (tests use it to compare both).
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
from jax import lax

_OVERRIDE: bool | None = None


def set_explicit_vjp(enabled: bool | None) -> None:
    """Forces the explicit backward on or off; `None` restores the per-backend default."""
    global _OVERRIDE
    _OVERRIDE = enabled


@contextlib.contextmanager
def explicit_vjp(enabled: bool | None):
    """`set_explicit_vjp(enabled)` for the duration of a `with` block (then the previous
    setting again): products traced inside use that choice."""
    global _OVERRIDE
    previous, _OVERRIDE = _OVERRIDE, enabled
    try:
        yield
    finally:
        _OVERRIDE = previous


def explicit_vjp_enabled() -> bool:
    """Whether products traced now use the explicit backward (`_explicit_dot`)."""
    if _OVERRIDE is not None:
        return _OVERRIDE
    return jax.default_backend() == "cpu"


def _plain(lhs, rhs, dimension_numbers, precision, preferred_element_type):
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type)


def _subscripts(lhs_ndim, rhs_ndim, dimension_numbers) -> tuple[str, str, str]:
    """einsum subscripts (lhs, rhs, out) equivalent to a `dot_general`'s dimension numbers."""
    (lc, rc), (lb, rb) = dimension_numbers
    letters = iter("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    lhs, rhs = [None] * lhs_ndim, [None] * rhs_ndim
    for i, j in zip(lb, rb):
        lhs[i] = rhs[j] = next(letters)
    batch = [lhs[i] for i in lb]
    for i, j in zip(lc, rc):
        lhs[i] = rhs[j] = next(letters)
    lfree = [i for i in range(lhs_ndim) if lhs[i] is None]
    rfree = [j for j in range(rhs_ndim) if rhs[j] is None]
    for i in lfree:
        lhs[i] = next(letters)
    for j in rfree:
        rhs[j] = next(letters)
    out = batch + [lhs[i] for i in lfree] + [rhs[j] for j in rfree]
    return "".join(lhs), "".join(rhs), "".join(out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _explicit_dot(lhs, rhs, dimension_numbers, precision, preferred_element_type):
    return _plain(lhs, rhs, dimension_numbers, precision, preferred_element_type)


def _explicit_dot_fwd(lhs, rhs, dimension_numbers, precision, preferred_element_type):
    out = _plain(lhs, rhs, dimension_numbers, precision, preferred_element_type)
    return out, (lhs, rhs)


def _explicit_dot_bwd(dimension_numbers, precision, preferred_element_type, residuals, ct):
    lhs, rhs = residuals
    ls, rs, os_ = _subscripts(lhs.ndim, rhs.ndim, dimension_numbers)
    # Each gradient is one product with its own operand first: d_rhs = lhs (x) ct keeps
    # the activation on the left, which XLA:CPU turns into one transpose of the (smaller)
    # activation and a library GEMM, rather than a transposing loop over the cotangent.
    d_lhs = jnp.einsum(f"{os_},{rs}->{ls}", ct, rhs, precision=precision,
                       preferred_element_type=jnp.float32)
    d_rhs = jnp.einsum(f"{ls},{os_}->{rs}", lhs, ct, precision=precision,
                       preferred_element_type=jnp.float32)
    return d_lhs.astype(lhs.dtype), d_rhs.astype(rhs.dtype)


_explicit_dot.defvjp(_explicit_dot_fwd, _explicit_dot_bwd)


def _hashable(dimension_numbers):
    return tuple(tuple(tuple(int(i) for i in axes) for axes in pair)
                 for pair in dimension_numbers)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                out_sharding=None):
    """`lax.dot_general`, with the explicit backward when `explicit_vjp_enabled()`.

    Same arguments and result as `jax.lax.dot_general`; an explicit `out_sharding` (not
    used by lmscale) falls back to the plain product.
    """
    if out_sharding is not None:
        return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type,
                               out_sharding=out_sharding)
    if not explicit_vjp_enabled():
        return _plain(lhs, rhs, dimension_numbers, precision, preferred_element_type)
    if isinstance(precision, list):
        precision = tuple(precision)
    return _explicit_dot(lhs, rhs, _hashable(dimension_numbers), precision,
                        preferred_element_type)


def einsum(subscripts: str, *operands, preferred_element_type=None):
    """`jnp.einsum` whose products go through `dot_general` above."""
    return jnp.einsum(subscripts, *operands, preferred_element_type=preferred_element_type,
                      _dot_general=dot_general)


NEG_INF = -1e30  # the masked-score value (finite: a fully padded row stays NaN-free)


def _attention_probs(q, k, mask):
    scores = jnp.einsum("btkgh,bskh->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = jnp.where(mask[:, None, None, :, :], scores, NEG_INF)
    return jax.nn.softmax(scores, axis=-1)


@jax.custom_vjp
def masked_attention(q, k, v, mask):
    """softmax(q k^T, masked) v for grouped queries, with an explicit backward.

    Args:
      q: [B, T, K, G, H] queries, already scaled; k, v: [B, S, K, H]; mask: [B, T, S] bool,
        every query row attending to at least one key.
    Returns:
      [B, T, K, G, H] in v's dtype.

    The backward reuses the saved probabilities P: dS = P (dP - rowsum(dP P)), so neither
    the mask nor the softmax's division is differentiated, and no [T, S] matrix is
    transposed in a fused elementwise loop (autodiff's version of this backward spent
    ~40% of the attention time in such loops on XLA:CPU).
    """
    return _masked_attention_fwd(q, k, v, mask)[0]


def _masked_attention_fwd(q, k, v, mask):
    probs = _attention_probs(q, k, mask).astype(v.dtype)
    return jnp.einsum("bkgts,bskh->btkgh", probs, v), (q, k, v, probs)


def _masked_attention_bwd(residuals, d_out):
    q, k, v, probs = residuals
    # d_v and d_k contract the [T, S] matrices over T: written as (.)^T P, with the
    # [T, S] operand on the right, XLA transposes only [T, H]-sized tensors.
    d_v = jnp.einsum("btkgh,bkgts->bkhs", d_out, probs).transpose(0, 3, 1, 2)
    d_probs = jnp.einsum("btkgh,bskh->bkgts", d_out, v, preferred_element_type=jnp.float32)
    p32 = probs.astype(jnp.float32)
    d_scores = p32 * (d_probs - jnp.sum(d_probs * p32, axis=-1, keepdims=True))
    d_scores = d_scores.astype(q.dtype)
    d_q = jnp.einsum("bkgts,bskh->btkgh", d_scores, k)
    d_k = jnp.einsum("btkgh,bkgts->bkhs", q, d_scores).transpose(0, 3, 1, 2)
    return d_q, d_k.astype(k.dtype), d_v.astype(v.dtype), None  # no gradient for the mask


masked_attention.defvjp(_masked_attention_fwd, _masked_attention_bwd)


# Queries per block of `causal_masked_attention` (at least): at T = 128, two blocks of 64
# beat one by 6-13% of the train step at d_model 128-256 and tied at d_model 64 in
# tools/bench_train.py's `attention_blocks` variants; four blocks of 32 lost 8-20% at
# d_model 64 (more, smaller ops), docs/performance.md.
ATTENTION_BLOCK = 64
MAX_ATTENTION_BLOCKS = 8


_BLOCKS: list[int | None] = [None]


@contextlib.contextmanager
def attention_block_count(blocks: int | None):
    """Within the block, `causal_masked_attention` traced there splits its queries into
    `blocks` blocks (1: one product over the whole mask; None: `attention_blocks`'s
    rule); tools/bench_train.py's `attention_blocks` variant key."""
    previous, _BLOCKS[0] = _BLOCKS[0], blocks
    try:
        yield
    finally:
        _BLOCKS[0] = previous


def attention_blocks(length: int) -> int:
    """How many query blocks `causal_masked_attention` splits `length` queries into: one
    per `ATTENTION_BLOCK` queries, at most `MAX_ATTENTION_BLOCKS` (or the count set by
    `attention_block_count`)."""
    if _BLOCKS[0] is not None:
        return max(1, min(int(_BLOCKS[0]), length))
    return max(1, min(MAX_ATTENTION_BLOCKS, length // ATTENTION_BLOCK))


def causal_masked_attention(q, k, v, mask, blocks: int | None = None):
    """`masked_attention` for a causal mask (no query attends to a later key), by blocks.

    The queries are cut into `blocks` (default `attention_blocks(T)`) consecutive blocks;
    block [a, e) attends to keys [0, e) only, since every later key is masked anyway. At
    T = 128 in two blocks a quarter of the [T, T] scores, their softmax and their
    backward are never computed, and each block's scores are smaller. The result is the
    same (to float rounding) as one `masked_attention` with the whole mask, IF the mask
    is causal; q [B, T, K, G, H], k, v [B, T, K, H], mask [B, T, T] as there.
    """
    t = q.shape[1]
    blocks = attention_blocks(t) if blocks is None else max(1, min(int(blocks), t))
    if blocks == 1:
        return masked_attention(q, k, v, mask)
    edges = [t * i // blocks for i in range(blocks + 1)]
    return jnp.concatenate(
        [masked_attention(q[:, a:e], k[:, :e], v[:, :e], mask[:, a:e, :e])
         for a, e in zip(edges[:-1], edges[1:])], axis=1)


def prefix_window_attention(q, k, v, mask, prefix: int, window: int):
    """`causal_masked_attention` for a mask with a shared prefix and a band after it.

    For a mask where every query at i >= `prefix` attends to no key in [prefix, i - window]
    (it sees the first `prefix` keys and at most the `window` keys up to itself: the
    scorer's packed choices, each at most `window` tokens, each reading its context and
    itself), the queries after the prefix go in blocks of `window`, and block [a, e)
    reads keys [0, prefix) and [a - window + 1, e) only. The first `prefix` queries go
    through `causal_masked_attention`. Same result (to float rounding) as one
    `masked_attention` with the whole mask IF the mask has that form (and is causal).
    """
    t = q.shape[1]
    prefix, window = int(prefix), int(window)
    if not 0 < prefix < t or window < 1:
        raise ValueError(f"prefix_window_attention: prefix={prefix} must be in (0, {t}) "
                         f"and window={window} >= 1")
    outs = [causal_masked_attention(q[:, :prefix], k[:, :prefix], v[:, :prefix],
                                    mask[:, :prefix, :prefix])]
    for a in range(prefix, t, window):
        e, lo = min(a + window, t), max(prefix, a - window + 1)
        keys = jnp.concatenate([k[:, :prefix], k[:, lo:e]], axis=1)
        values = jnp.concatenate([v[:, :prefix], v[:, lo:e]], axis=1)
        block_mask = jnp.concatenate([mask[:, a:e, :prefix], mask[:, a:e, lo:e]], axis=2)
        outs.append(masked_attention(q[:, a:e], keys, values, block_mask))
    return jnp.concatenate(outs, axis=1)
