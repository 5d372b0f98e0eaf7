"""Decoder building blocks: norms, rotary embedding, attention with a KV cache, MLP.

Stage: models. Flax Linen modules that take only the numbers they use. Every parameter is
created with logical axis names (see `sharding.py`); activations are constrained at block
boundaries only. Einsum letters: B batch, T query length, S key length, P prefix length,
D model, N query heads, K kv heads, G = N/K, H head dim, F MLP hidden.
"""

from __future__ import annotations

import contextlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmscale.models import ops

Array = jax.Array
_NEG_INF = ops.NEG_INF


def _dense_init(std: float, names: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(std), names)


def _zeros(names: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


class Norm(nn.Module):
    """RMSNorm, LayerNorm with bias, or gain-only LayerNorm over the last axis.

    Computed in float32 whatever the activation dtype (numerics), cast back on return.
    """

    kind: str
    eps: float
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        width = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                                 (self.axis_name,)), (width,))
        xf = x.astype(jnp.float32)
        if self.kind == "rms":
            y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
        else:
            mean = jnp.mean(xf, axis=-1, keepdims=True)
            centred = xf - mean
            var = jnp.mean(centred * centred, axis=-1, keepdims=True)
            y = centred * jax.lax.rsqrt(var + self.eps)
        y = y * scale
        if self.kind == "layernorm":
            bias = self.param("bias", _zeros((self.axis_name,)), (width,))
            y = y + bias
        return y.astype(x.dtype)


def rotary_tables(positions: Array, rotary_dims: int, theta: float,
                  max_len: int | None = None) -> tuple[Array, Array]:
    """(sin, cos) of the rotary angles, each [B, T, 1, rotary_dims // 2] float32.

    With `max_len`, the angles of positions [0, max_len) are a compile-time constant table
    and the positions index it; positions past the table read its last row (padding rows
    of the scorer's buckets do, and are masked; real positions are checked against
    `ModelConfig.max_seq_len` by the trainer, sampler and scorer).
    The decoder does this once per forward for every layer: computed from the positions
    instead, XLA:CPU fuses the sin/cos into each consumer and evaluates them per head
    and per layer (about 10% of a d_model 64 train step).
    """
    half = rotary_dims // 2
    inv_freq = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) * 2.0 / rotary_dims))
    if max_len is None:
        angles = positions.astype(jnp.float32)[:, :, None] * inv_freq  # [B, T, half]
        return jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
    angles = jnp.arange(max_len, dtype=jnp.float32)[:, None] * inv_freq  # [max_len, half]

    def lookup(table):
        return jnp.take(table, positions, axis=0, mode="clip")[:, :, None]
    return lookup(jnp.sin(angles)), lookup(jnp.cos(angles))


def rotary(x: Array, tables: tuple[Array, Array], rotary_dims: int) -> Array:
    """Rotary embedding on the first `rotary_dims` of each head, rotate-half convention.

    Args:
      x: [B, T, heads, H] queries or keys.
      tables: (sin, cos) from `rotary_tables` for x's positions.
      rotary_dims: even number of leading head dims to rotate (0 leaves x unchanged).
    Returns:
      [B, T, heads, H], same dtype as x.
    """
    if rotary_dims == 0:
        return x
    half = rotary_dims // 2
    sin, cos = tables
    rot, keep = x[..., :rotary_dims].astype(jnp.float32), x[..., rotary_dims:]
    x1, x2 = rot[..., :half], rot[..., half:]
    rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return jnp.concatenate([rotated.astype(x.dtype), keep], axis=-1)


def _activation(name: str):
    return {"gelu": lambda x: nn.gelu(x, approximate=False),
            "gelu_tanh": lambda x: nn.gelu(x, approximate=True),
            "silu": nn.silu}[name]


class Mlp(nn.Module):
    """Gated (GLU) or plain MLP: D -> F -> D."""

    d_ff: int
    kind: str
    activation: str
    use_bias: bool
    init_std: float
    out_std: float
    dtype: Any

    @nn.compact
    def __call__(self, x: Array) -> Array:
        d = x.shape[-1]
        act = _activation(self.activation)

        def dense(name, features, in_name, out_name, std):
            return nn.Dense(features, use_bias=self.use_bias, dtype=self.dtype,
                            dot_general=ops.dot_general,
                            kernel_init=_dense_init(std, (in_name, out_name)),
                            bias_init=_zeros((out_name,)), name=name)

        if self.kind == "gated" and fused_projections_enabled() and not self.use_bias:
            kernels = [_Kernel((d, self.d_ff), ("embed", "mlp"), self.init_std, name=name)()
                       for name in ("wi_gate", "wi_up")]
            w = jnp.concatenate(kernels, axis=1).astype(self.dtype)
            y = ops.dot_general(x.astype(self.dtype), w, (((x.ndim - 1,), (0,)), ((), ())))
            h = act(y[..., :self.d_ff]) * y[..., self.d_ff:]
        elif self.kind == "gated":
            gate = dense("wi_gate", self.d_ff, "embed", "mlp", self.init_std)(x)
            up = dense("wi_up", self.d_ff, "embed", "mlp", self.init_std)(x)
            h = act(gate) * up
        else:
            h = act(dense("wi", self.d_ff, "embed", "mlp", self.init_std)(x))
        h = nn.with_logical_constraint(h, ("batch", "length", "mlp"))
        return dense("wo", d, "mlp", "embed", self.out_std)(h)


class HeadsDense(nn.Module):
    """A projection whose kernel keeps the head axes: [D] -> [heads, H] or [heads, H] -> [D].

    Contracts the last `len(in_names)` axes of x with a kernel of shape in_shape + features.
    Used instead of `nn.DenseGeneral`, whose initialiser draws a flat 2-D kernel and reshapes
    it: under `logical_axis_rules` and a mesh (init, and the shape check Flax runs on apply)
    that flat draw gets the 3-D logical constraint and fails.
    """

    features: tuple[int, ...]
    names: tuple[str, ...]
    use_bias: bool
    init_std: float
    dtype: Any

    @nn.compact
    def __call__(self, x: Array) -> Array:
        n_in = len(self.names) - len(self.features)
        in_shape = x.shape[x.ndim - n_in:]
        kernel = self.param("kernel", _dense_init(self.init_std, self.names),
                            tuple(in_shape) + tuple(self.features))
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        y = ops.dot_general(
            x, kernel, ((tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))), ((), ())))
        if self.use_bias:
            bias = self.param("bias", _zeros(self.names[n_in:]), tuple(self.features))
            y = y + bias.astype(self.dtype)
        return y


_FUSED: list[bool | None] = [None]


@contextlib.contextmanager
def fused_projections(enabled: bool | None):
    """Within the block, projections traced without biases that read the same input run
    as one matmul against their joined kernels, the parameters keeping their own names and
    shapes: queries, keys and values (`Attention._fused_qkv`) and a gated MLP's gate and
    up kernels (`Mlp`). None: the default (off, `fused_projections_enabled`). Read at
    trace time, like `ops.explicit_vjp`."""
    previous, _FUSED[0] = _FUSED[0], enabled
    try:
        yield
    finally:
        _FUSED[0] = previous


def fused_projections_enabled() -> bool:
    """Whether projections traced now are fused; off by default: on this project's CPU
    hosts the fused train step ran 1.05-1.09x faster at d_model 64 and 0.94-0.95x at 128
    and 256 (docs/performance.md, issue 18), and on TPU and GPU a kernel sharded on its
    heads or mlp axis would be concatenated across devices. `tools/bench_train.py`'s
    `fused_projections` variant key turns it on."""
    return bool(_FUSED[0])


class _Kernel(nn.Module):
    """A projection's kernel alone (same name, shape and initialiser), for the fused
    projections (`fused_projections`)."""

    shape: tuple[int, ...]
    names: tuple[str, ...]
    init_std: float

    @nn.compact
    def __call__(self):
        return self.param("kernel", _dense_init(self.init_std, self.names), self.shape)


class Attention(nn.Module):
    """Causal multi-/grouped-/multi-query self-attention with optional KV cache and prefix.

    Every call returns `(out [B, T, D], (keys, values) [B, T, K, H], new_cache)`: this
    call's rotated keys and values (which `Decoder` returns from prefill, `return_kv=True`)
    and, when decoding, the updated cache. A decoding call gets `cache = (k, v, layer)`
    with k, v the decoder's stacked [L, B, S, K, H] cache: it writes its keys/values into
    rows `cache_index[b] + [0, T)` of layer `layer` and attends to entries up to its own
    position, plus the valid part of a shared `prefix`. Passing the stacked cache (rather
    than a per-layer slice that the decoder would re-stack) keeps every write in place.
    """

    n_heads: int
    n_kv_heads: int
    head_dim: int
    rotary_dims: int
    rope_theta: float
    qk_norm: bool
    norm: str
    norm_eps: float
    use_bias: bool
    init_std: float
    out_std: float
    dtype: Any
    attention_impl: str = "default"

    @nn.compact
    def __call__(self, x, positions, segment_ids=None, cache=None, cache_index=None,
                 prefix=None, prefix_index=None, rope=None, attention_mask=None,
                 attention_window=None):
        q, key, value = self._project(x, positions, rope)
        b, t, n, h = q.shape
        k = self.n_kv_heads
        qg = q.reshape(b, t, k, n // k, h) * jnp.asarray(h ** -0.5, q.dtype)
        # Scores and values come in parts (the prefix, then the cache when decoding or this
        # call's own keys otherwise), scores [B, K, G, T, *]; one softmax runs over the
        # concatenated scores (small) while the values stay where they are: no
        # [B, P + S, K, H] concatenation per layer and step.
        parts = [] if prefix is None else [_prefix_part(qg, prefix, prefix_index)]
        new_cache = None
        if cache is not None:
            part, new_cache = _cache_part(qg, key, value, cache, cache_index)
            parts.append(part)
        else:
            mask = (_causal_mask(b, t, segment_ids) if attention_mask is None
                    else attention_mask)
            if prefix is None and self.attention_impl != "default":
                out = _fused_attention(qg, key, value, mask, segment_ids, self.attention_impl,
                                       custom_mask=attention_mask is not None)
                return self._output(out, b, t, n, h, x.shape[-1]), (key, value), None
            if prefix is None and ops.explicit_vjp_enabled():
                # Training and scoring on CPU: one op with a hand-written backward, per
                # block of queries (the mask is causal: keys after a block are skipped;
                # with a window, those before its band too).
                out = (ops.causal_masked_attention(qg, key, value, mask)
                       if attention_window is None else
                       ops.prefix_window_attention(qg, key, value, mask, *attention_window))
                return self._output(out, b, t, n, h, x.shape[-1]), (key, value), None
            parts.append(_self_part(qg, key, value, mask))
        out = _attend(parts, value.dtype)
        return self._output(out, b, t, n, h, x.shape[-1]), (key, value), new_cache

    def _fused_qkv(self, x):
        """Queries, keys and values from one matmul against the three kernels joined on
        the heads axis (the parameters keep their own names and shapes)."""
        n, k, h = self.n_heads, self.n_kv_heads, self.head_dim
        kernels = [_Kernel((x.shape[-1], heads, h), ("embed", axis, "head_dim"),
                           self.init_std, name=name)()
                   for name, heads, axis in (("query", n, "heads"), ("key", k, "kv_heads"),
                                             ("value", k, "kv_heads"))]
        w = jnp.concatenate(kernels, axis=1).astype(self.dtype)
        y = ops.dot_general(x.astype(self.dtype), w, (((x.ndim - 1,), (0,)), ((), ())))
        return y[..., :n, :], y[..., n:n + k, :], y[..., n + k:, :]

    def _project(self, x, positions, rope):
        """Queries [B, T, N, H] and keys, values [B, T, K, H]: normed, rotated, constrained."""
        n, k, h = self.n_heads, self.n_kv_heads, self.head_dim

        def proj(name, heads, heads_axis):
            return HeadsDense((heads, h), ("embed", heads_axis, "head_dim"), self.use_bias,
                              self.init_std, self.dtype, name=name)(x)

        if fused_projections_enabled() and not self.use_bias:
            q, key, value = self._fused_qkv(x)
        else:
            q = proj("query", n, "heads")
            key = proj("key", k, "kv_heads")
            value = proj("value", k, "kv_heads")
        if self.qk_norm:
            b, t = x.shape[:2]
            q = Norm(self.norm, self.norm_eps, "heads", name="q_norm")(
                q.reshape(b, t, n * h)).reshape(b, t, n, h)
            key = Norm(self.norm, self.norm_eps, "kv_heads", name="k_norm")(
                key.reshape(b, t, k * h)).reshape(b, t, k, h)
        if self.rotary_dims:
            if rope is None:  # standalone use; the decoder passes its shared tables
                rope = rotary_tables(positions, self.rotary_dims, self.rope_theta)
            q = rotary(q, rope, self.rotary_dims)
            key = rotary(key, rope, self.rotary_dims)
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "head_dim"))
        key = nn.with_logical_constraint(key, ("batch", "length", "kv_heads", "head_dim"))
        value = nn.with_logical_constraint(value, ("batch", "length", "kv_heads", "head_dim"))
        return q, key, value

    def _output(self, out, b, t, n, h, d):
        """The output projection of [B, T, K, G, H] attention values to [B, T, D]."""
        out = out.reshape(b, t, n, h)
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "head_dim"))
        return HeadsDense((d,), ("heads", "head_dim", "embed"), self.use_bias,
                          self.out_std, self.dtype, name="out")(out)


def _causal_mask(b: int, t: int, segment_ids: Array | None) -> Array:
    """[B, T, T] bool: query i sees key j <= i (and, when packed, of its own segment)."""
    q_pos = jnp.arange(t)
    mask = jnp.broadcast_to(q_pos[:, None] >= q_pos[None, :], (b, t, t))
    if segment_ids is not None:
        mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])
    return mask


def _fused_attention(qg: Array, key: Array, value: Array, mask: Array,
                     segment_ids: Array | None, impl: str, custom_mask: bool = False) -> Array:
    """[B, T, K, G, H] by `jax.nn.dot_product_attention` ("xla" or "cudnn" kernel).

    qg is already scaled, so the call's own scale is 1. With "xla" the [B, T, T] `mask`
    (causal, and same segment when packed) is passed as is; with "cudnn" the kernel's own
    causal mask is used and packing segments, when given, enter as an additive bias (cuDNN
    fuses a bias, not a boolean mask); a caller's own mask (`custom_mask`) enters whole as
    a bias, without the kernel's causal mask.
    """
    b, t, k, g, h = qg.shape
    q = qg.reshape(b, t, k * g, h)
    if impl == "cudnn" and custom_mask:
        bias = jnp.where(mask, 0.0, _NEG_INF).astype(q.dtype)[:, None]
        out = jax.nn.dot_product_attention(q, key, value, bias=bias, scale=1.0,
                                           implementation="cudnn")
    elif impl == "cudnn":
        bias = None
        if segment_ids is not None:
            same = segment_ids[:, :, None] == segment_ids[:, None, :]
            bias = jnp.where(same, 0.0, _NEG_INF).astype(q.dtype)[:, None]
        out = jax.nn.dot_product_attention(q, key, value, bias=bias, scale=1.0,
                                           is_causal=True, implementation="cudnn")
    else:
        out = jax.nn.dot_product_attention(q, key, value, mask=mask[:, None], scale=1.0,
                                           implementation=impl)
    return out.reshape(b, t, k, g, h)


def _self_part(qg: Array, key: Array, value: Array, mask: Array):
    """Scores [B, K, G, T, T] of this call's own tokens (masked) and their value reader."""
    scores = ops.einsum("btkgh,bskh->bkgts", qg, key, preferred_element_type=jnp.float32)
    return (jnp.where(mask[:, None, None, :, :], scores, _NEG_INF),
            lambda p: ops.einsum("bkgts,bskh->btkgh", p, value))


def _cache_part(qg: Array, key: Array, value: Array, cache, cache_index: Array):
    """Decode: writes this call's keys/values into the stacked cache, then scores it.

    Writing before reading lets XLA update the loop-carried cache in place (a read of the
    old cache after it would force a copy of the whole cache every step). Returns
    ((scores [B, K, G, T, S] with rows past cache_index + t masked, value reader),
    (new k, new v) [L, B, S, K, H]).
    """
    cache_k, cache_v, layer = cache
    b, t = key.shape[:2]
    s = cache_k.shape[2]
    rows = jnp.arange(b)[:, None]  # [B, 1]
    write = cache_index[:, None] + jnp.arange(t)[None, :]  # [B, T]; past S: dropped
    cache_k = cache_k.at[layer, rows, write].set(key.astype(cache_k.dtype), mode="drop")
    cache_v = cache_v.at[layer, rows, write].set(value.astype(cache_v.dtype), mode="drop")
    layer_v = cache_v[layer].astype(qg.dtype)
    scores = _cache_scores(qg, cache_k[layer].astype(qg.dtype))
    mask = jnp.arange(s)[None, None, :] <= write[:, :, None]  # [B, T, S]
    part = (jnp.where(mask[:, None, None, :, :], scores, _NEG_INF),
            lambda p: _cache_read(p, layer_v))
    return part, (cache_k, cache_v)


def _attend(parts, dtype) -> Array:
    """[B, T, K, G, H]: one softmax over the parts' concatenated scores, values read per part."""
    scores = [score for score, _ in parts]
    probs = jax.nn.softmax(jnp.concatenate(scores, axis=-1) if len(scores) > 1
                           else scores[0], axis=-1).astype(dtype)
    out, start = None, 0
    for score, read in parts:
        width = score.shape[-1]
        part = read(probs[..., start:start + width])
        out = part if out is None else out + part
        start += width
    return out


def _cache_scores(qg: Array, keys: Array) -> Array:
    """[B, K, G, T, S] float32 scores of queries qg [B, T, K, G, H] against keys [B, S, K, H]."""
    return ops.einsum("btkgh,bskh->bkgts", qg, keys, preferred_element_type=jnp.float32)


def _cache_read(probs: Array, values: Array) -> Array:
    """[B, T, K, G, H] weighted values: probs [B, K, G, T, S], values [B, S, K, H]."""
    return ops.einsum("bkgts,bskh->btkgh", probs, values)


def _prefix_part(qg, prefix, prefix_index):
    """Scores of queries against a shared prefix, and a function reading its values.

    Args:
      qg: [B, T, K, G, H] scaled queries.
      prefix: (k, v [Bp, P, K, H], lengths [Bp]); row b reads prefix prefix_index[b].
      prefix_index: [B] int, or None: with Bp == 1 every row reads the one prefix, with
        Bp == B row b reads prefix b, with B a multiple of Bp the rows come in Bp
        consecutive groups, group r reading prefix r (the sampler's slots; no gather).
    Returns:
      scores [B, K, G, T, P] float32 (invalid prefix positions at -1e30), and
      `read(probs [B, K, G, T, P]) -> [B, T, K, G, H]`.
    """
    pk, pv, plen = prefix
    dtype = qg.dtype
    if pk.shape[0] == 1:
        # One prompt for every row (the PassUntil case): contract against the single
        # [P, K, H] prefix directly, so no row gets its own copy of the prompt's keys.
        pk, pv = pk[0].astype(dtype), pv[0].astype(dtype)
        pmask = (jnp.arange(pk.shape[0]) < plen[0])[None, None, None, None, :]
        scores = ops.einsum("btkgh,pkh->bkgtp", qg, pk, preferred_element_type=jnp.float32)
        return (jnp.where(pmask, scores, _NEG_INF),
                lambda p: ops.einsum("bkgtp,pkh->btkgh", p, pv))
    if prefix_index is None and pk.shape[0] != qg.shape[0] and qg.shape[0] % pk.shape[0] == 0:
        return _grouped_prefix_part(qg, pk.astype(dtype), pv.astype(dtype), plen)
    if prefix_index is None:
        if pk.shape[0] != qg.shape[0]:
            raise ValueError(f"prefix_index is required: {pk.shape[0]} prefixes for "
                             f"{qg.shape[0]} rows")
        pk, pv = pk.astype(dtype), pv.astype(dtype)  # row b reads prefix b
        pmask = jnp.arange(pk.shape[1])[None, :] < plen[:, None]  # [B, P]
    else:
        pk, pv = pk[prefix_index].astype(dtype), pv[prefix_index].astype(dtype)  # [B, P, K, H]
        pmask = jnp.arange(pk.shape[1])[None, :] < plen[prefix_index][:, None]  # [B, P]
    scores = ops.einsum("btkgh,bpkh->bkgtp", qg, pk, preferred_element_type=jnp.float32)
    return (jnp.where(pmask[:, None, None, None, :], scores, _NEG_INF),
            lambda p: ops.einsum("bkgtp,bpkh->btkgh", p, pv))


def _grouped_prefix_part(qg, pk, pv, plen):
    """`_prefix_part` for rows in R consecutive groups, group r reading prefix r: one
    batched contraction per group against its [P, K, H] prefix (a per-row gather of the
    prefixes, [B, P, K, H] per layer and decode step, cost the sampler more than the model
    did at the study's shapes)."""
    b, t, k, g, h = qg.shape
    r, p = pk.shape[0], pk.shape[1]
    q = qg.reshape(r, b // r, t, k, g, h)
    scores = ops.einsum("rbtkgh,rpkh->rbkgtp", q, pk, preferred_element_type=jnp.float32)
    pmask = (jnp.arange(p)[None, :] < plen[:, None])[:, None, None, None, None, :]
    scores = jnp.where(pmask, scores, _NEG_INF).reshape(b, k, g, t, p)
    return (scores, lambda probs: ops.einsum(
        "rbkgtp,rpkh->rbtkgh", probs.reshape(r, b // r, k, g, t, p), pv).reshape(b, t, k, g, h))
