"""Decoder building blocks: norms, rotary embedding, attention with a KV cache, MLP.

Stage: models. Flax Linen modules that take only the numbers they use. Every parameter is
created with logical axis names (see `sharding.py`); activations are constrained at block
boundaries only. Einsum letters: B batch, T query length, S key length, P prefix length,
D model, N query heads, K kv heads, G = N/K, H head dim, F MLP hidden.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
_NEG_INF = -1e30


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


def rotary(x: Array, positions: Array, rotary_dims: int, theta: float) -> Array:
    """Rotary embedding on the first `rotary_dims` of each head, rotate-half convention.

    Args:
      x: [B, T, heads, H] queries or keys.
      positions: [B, T] int absolute positions.
      rotary_dims: even number of leading head dims to rotate (0 leaves x unchanged).
      theta: frequency base.
    Returns:
      [B, T, heads, H], same dtype as x.
    """
    if rotary_dims == 0:
        return x
    half = rotary_dims // 2
    inv_freq = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) * 2.0 / rotary_dims))
    angles = positions.astype(jnp.float32)[:, :, None] * inv_freq  # [B, T, half]
    sin = jnp.sin(angles)[:, :, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
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
                            kernel_init=_dense_init(std, (in_name, out_name)),
                            bias_init=_zeros((out_name,)), name=name)

        if self.kind == "gated":
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
        y = jax.lax.dot_general(
            x, kernel, ((tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))), ((), ())))
        if self.use_bias:
            bias = self.param("bias", _zeros(self.names[n_in:]), tuple(self.features))
            y = y + bias.astype(self.dtype)
        return y


class Attention(nn.Module):
    """Causal multi-/grouped-/multi-query self-attention with optional KV cache and prefix.

    Three call forms (see `Decoder`): training/scoring (no cache); prefill with
    `return_kv=True`, which also returns this call's rotated keys and values; decoding, which
    writes this call's keys/values into `cache` rows at `cache_index` and attends to the
    valid part of the cache and of a shared `prefix`.
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

    @nn.compact
    def __call__(self, x, positions, segment_ids=None, cache=None, cache_index=None,
                 prefix=None, prefix_index=None):
        n, k, h = self.n_heads, self.n_kv_heads, self.head_dim
        g = n // k

        def proj(name, heads, heads_axis):
            return HeadsDense((heads, h), ("embed", heads_axis, "head_dim"), self.use_bias,
                              self.init_std, self.dtype, name=name)(x)

        q = proj("query", n, "heads")
        key = proj("key", k, "kv_heads")
        value = proj("value", k, "kv_heads")
        if self.qk_norm:
            b, t = x.shape[:2]
            q = Norm(self.norm, self.norm_eps, "heads", name="q_norm")(
                q.reshape(b, t, n * h)).reshape(b, t, n, h)
            key = Norm(self.norm, self.norm_eps, "kv_heads", name="k_norm")(
                key.reshape(b, t, k * h)).reshape(b, t, k, h)
        q = rotary(q, positions, self.rotary_dims, self.rope_theta)
        key = rotary(key, positions, self.rotary_dims, self.rope_theta)
        q = nn.with_logical_constraint(q, ("batch", "length", "heads", "head_dim"))
        key = nn.with_logical_constraint(key, ("batch", "length", "kv_heads", "head_dim"))
        value = nn.with_logical_constraint(value, ("batch", "length", "kv_heads", "head_dim"))

        b, t = q.shape[:2]
        qg = q.reshape(b, t, k, g, h) * jnp.asarray(h ** -0.5, q.dtype)
        new_cache = None
        if cache is None:
            keys, values = key, value
            q_pos = jnp.arange(t)
            mask = q_pos[:, None] >= q_pos[None, :]  # [T, S]
            mask = jnp.broadcast_to(mask, (b, t, t))
            if segment_ids is not None:
                mask = mask & (segment_ids[:, :, None] == segment_ids[:, None, :])
        else:
            # Write this call's T keys/values at cache_index[b] + [0, T) of each row.
            cache_k, cache_v = cache
            s = cache_k.shape[1]
            write = cache_index[:, None] + jnp.arange(t)[None, :]  # [B, T]
            onehot = jax.nn.one_hot(write, s, dtype=jnp.bool_)  # [B, T, S]
            hit = jnp.any(onehot, axis=1)[:, :, None, None]  # [B, S, 1, 1]
            src = jnp.argmax(onehot, axis=1)  # [B, S]: which of the T tokens lands at s
            gathered_k = jnp.take_along_axis(key, src[:, :, None, None], axis=1)
            gathered_v = jnp.take_along_axis(value, src[:, :, None, None], axis=1)
            cache_k = jnp.where(hit, gathered_k.astype(cache_k.dtype), cache_k)
            cache_v = jnp.where(hit, gathered_v.astype(cache_v.dtype), cache_v)
            new_cache = (cache_k, cache_v)
            keys, values = cache_k.astype(q.dtype), cache_v.astype(q.dtype)
            mask = jnp.arange(s)[None, None, :] <= write[:, :, None]  # [B, T, S]
        scores = jnp.einsum("btkgh,bskh->bkgts", qg, keys,
                            preferred_element_type=jnp.float32)
        scores = jnp.where(mask[:, None, None, :, :], scores, _NEG_INF)
        if prefix is not None:
            # Shared prompt keys/values [Bp, P, K, H], valid up to lengths[Bp]; row b reads
            # prefix prefix_index[b]. Every query may attend to every valid prefix key.
            pk, pv, plen = prefix
            if prefix_index is None:
                prefix_index = jnp.zeros((b,), jnp.int32)
            pk, pv = pk[prefix_index].astype(q.dtype), pv[prefix_index].astype(q.dtype)
            pmask = jnp.arange(pk.shape[1])[None, :] < plen[prefix_index][:, None]  # [B, P]
            pscores = jnp.einsum("btkgh,bpkh->bkgtp", qg, pk,
                                 preferred_element_type=jnp.float32)
            pscores = jnp.where(pmask[:, None, None, None, :], pscores, _NEG_INF)
            scores = jnp.concatenate([pscores, scores], axis=-1)
            values = jnp.concatenate([pv, values], axis=1)
        probs = jax.nn.softmax(scores, axis=-1).astype(values.dtype)
        out = jnp.einsum("bkgts,bskh->btkgh", probs, values).reshape(b, t, n, h)
        out = nn.with_logical_constraint(out, ("batch", "length", "heads", "head_dim"))
        out = HeadsDense((x.shape[-1],), ("heads", "head_dim", "embed"), self.use_bias,
                         self.out_std, self.dtype, name="out")(out)
        return out, (key, value), new_cache
