"""The lmscale decoder-only Transformer (Flax Linen), for training, scoring and decoding.

Stage: models. Consumes a `ModelConfig` and token ids; produces next-token logits, and in
decode mode an updated KV cache. One module covers LLaMA-style (pre-norm RMSNorm, rotary,
gated SiLU), Hu et al. (gated GeLU, tied embeddings), open_lm/Gadre et al. (qk-LayerNorm,
gain-only LayerNorm) and GPT-NeoX/Pythia (LayerNorm with bias, parallel residual, 25%
rotary, biases, plain GeLU MLP).

Call forms of `Decoder.__call__`:
  * train/score: `logits = model.apply(vars, tokens, positions, segment_ids)`;
  * prefill: `logits, kv = model.apply(vars, tokens, positions, return_kv=True)` with `kv`
    a `KVCache` of this call's keys/values ([L, B, T, K, H]), usable as a shared prefix;
  * decode: `logits, cache = model.apply(vars, tokens, positions, cache=cache,
    cache_index=idx, prefix=prefix, prefix_index=pidx)` (see `KVCache`, `Prefix`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmscale.models.config import ModelConfig
from lmscale.models import ops
from lmscale.models.layers import Attention, Mlp, Norm, rotary_tables

Array = jax.Array


class KVCache(NamedTuple):
    """Per-slot keys and values, stacked over layers.

    k, v: [L, B, S, K, H] in the compute dtype. Row b's valid entries are [0, n_b), where
    n_b is tracked by the caller (the sampler) and passed as `cache_index`.
    """

    k: Array
    v: Array


class Prefix(NamedTuple):
    """Shared prompt keys/values: computed once, read by many slots.

    k, v: [L, Bp, P, K, H]; lengths: [Bp] int32 valid prefix lengths.
    """

    k: Array
    v: Array
    lengths: Array


def init_cache(config: ModelConfig, batch: int, length: int, dtype=None) -> KVCache:
    """An all-zero KV cache for `batch` slots of `length` positions."""
    dtype = jnp.dtype(dtype or config.dtype)
    shape = (config.n_layers, batch, length, config.n_kv_heads, config.head_dim)
    return KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))


def cache_bytes_per_slot(config: ModelConfig, length: int, dtype=None) -> int:
    """Bytes of KV cache one slot needs for `length` positions."""
    itemsize = jnp.dtype(dtype or config.dtype).itemsize
    return 2 * config.n_layers * length * config.n_kv_heads * config.head_dim * itemsize


class Block(nn.Module):
    """One pre-norm Transformer block (sequential or parallel residual)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x, positions, segment_ids, cache, cache_index, prefix, prefix_index,
                 rope=None, attention_mask=None, attention_window=None):
        c = self.config
        dtype = jnp.dtype(c.dtype)
        out_std = c.init_std / (2 * c.n_layers) ** 0.5
        attn = Attention(
            n_heads=c.n_heads, n_kv_heads=c.n_kv_heads, head_dim=c.head_dim,
            rotary_dims=c.rotary_dims, rope_theta=c.rope_theta, qk_norm=c.qk_norm,
            norm=c.norm, norm_eps=c.norm_eps, use_bias=c.use_bias, init_std=c.init_std,
            out_std=out_std, dtype=dtype, attention_impl=c.attention_impl, name="attn")
        mlp = Mlp(d_ff=c.d_ff, kind=c.mlp, activation=c.activation, use_bias=c.use_bias,
                  init_std=c.init_std, out_std=out_std, dtype=dtype, name="mlp")
        h = Norm(c.norm, c.norm_eps, name="ln_attn")(x)
        a, kv, new_cache = attn(h, positions, segment_ids, cache, cache_index, prefix,
                                prefix_index, rope, attention_mask, attention_window)
        if c.parallel_residual:
            x = x + a + mlp(Norm(c.norm, c.norm_eps, name="ln_mlp")(x))
        else:
            x = x + a
            x = x + mlp(Norm(c.norm, c.norm_eps, name="ln_mlp")(x))
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        return x, kv, new_cache


class Decoder(nn.Module):
    """Decoder-only LM. See the module docstring for the call forms."""

    config: ModelConfig

    @nn.compact
    def __call__(self, tokens: Array, positions: Array | None = None,
                 segment_ids: Array | None = None, *, cache: KVCache | None = None,
                 cache_index: Array | None = None, prefix: Prefix | None = None,
                 prefix_index: Array | None = None, return_kv: bool = False,
                 logits_at: Array | None = None, logits_from: int | None = None,
                 attention_mask: Array | None = None,
                 attention_window: tuple[int, int] | None = None):
        """Runs the decoder.

        Args:
          tokens: [B, T] int token ids.
          positions: [B, T] int absolute positions (rotary), below `max_seq_len` (the
            rotary table's length); default arange(T). With a prefix of length P, the
            first generated token sits at position P.
          segment_ids: [B, T] int packing segments (train/score only); tokens attend only
            within their segment.
          cache: decode mode: the slots' `KVCache`; this call's keys/values are written at
            rows' `cache_index` + [0, T).
          cache_index: [B] int32, where each row writes (its number of cached tokens).
            The caller keeps cache_index + T <= S (the cache length): writes past the end
            are dropped inside jit, where no error can be raised.
          prefix: optional shared `Prefix` every query may attend to.
          prefix_index: [B] int32, which prefix each row reads. Default: the one prefix
            when it has a single row, row b reads prefix b when it has B rows, and with
            R rows (B a multiple of R) rows come in R consecutive groups, group r reading
            prefix r.
          return_kv: also return this call's keys/values as a `KVCache` ([L, B, T, K, H]).
          logits_at: optional [B] int: compute the logits of position logits_at[b] of row
            b only, [B, 1, V]; or [B, R] int: of positions logits_at[b, :], [B, R, V].
          logits_from: optional static int: compute the logits of positions
            [logits_from, T) only, [B, T - logits_from, V]; with `logits_at`, those rows
            follow logits_at's (the scorer's last context position, then its choices: the
            context's other positions are never unembedded).
          attention_mask: optional [B, T, T] bool (train/score, no cache): query i of row
            b attends to key j where it is True, in place of the causal (and segment)
            mask; every row must see at least one key, and no query a later key (the CPU
            path skips the keys after each block of queries, `ops.causal_masked_attention`).
            The scorer's one forward per batch lets each choice see its context and,
            causally, itself.
          attention_window: optional static (prefix, window), with `attention_mask` only:
            the mask lets no query at i >= prefix see a key in [prefix, i - window], so
            the CPU path skips those too (`ops.prefix_window_attention`; the scorer's
            choices, at most `window` tokens each). Other paths apply the mask as is.

        Returns:
          logits [B, T, vocab_size] float32, then (decode) the new `KVCache`, or
          (return_kv) this call's `KVCache`.
        """
        c = self.config
        dtype = jnp.dtype(c.dtype)
        b, t = tokens.shape
        if attention_mask is not None and (cache is not None or
                                           attention_mask.shape != (b, t, t)):
            raise ValueError(f"Decoder: attention_mask {attention_mask.shape} must be "
                             f"[B, T, T] = {(b, t, t)}, and is not taken with a cache")
        if attention_window is not None and (
                attention_mask is None or len(attention_window) != 2
                or not 0 < attention_window[0] < t or attention_window[1] < 1):
            raise ValueError(f"Decoder: attention_window={attention_window} must be a "
                             f"(prefix, window) with 0 < prefix < T = {t} and window >= 1, "
                             "given with attention_mask")
        attention_window = None if attention_window is None else tuple(
            int(x) for x in attention_window)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        embed = nn.Embed(
            c.padded_vocab_size, c.d_model, dtype=dtype, name="embed",
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(c.init_std),
                                                        ("vocab", "embed")))
        x = embed(tokens)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        rope = (rotary_tables(positions, c.rotary_dims, c.rope_theta, c.max_seq_len)
                if c.rotary_dims else None)  # shared by every layer
        keys, values = [], []
        stacked = None if cache is None else (cache.k, cache.v)
        for i in range(c.n_layers):
            layer_cache = None if stacked is None else (*stacked, i)
            layer_prefix = None if prefix is None else (prefix.k[i], prefix.v[i],
                                                        prefix.lengths)
            x, (k_i, v_i), stacked = Block(c, name=f"block_{i}")(
                x, positions, segment_ids, layer_cache, cache_index, layer_prefix,
                prefix_index, rope, attention_mask, attention_window)
            if return_kv:
                keys.append(k_i)
                values.append(v_i)
        if logits_from is not None and not 0 <= int(logits_from) < t:
            raise ValueError(f"Decoder: logits_from={logits_from} must be in [0, T = {t})")
        rows = [] if logits_at is None else [jnp.take_along_axis(  # [B, R, D]
            x, (logits_at[:, None] if logits_at.ndim == 1 else logits_at)[..., None], axis=1)]
        if logits_from is not None:
            rows.append(x[:, int(logits_from):])  # a static slice
        if rows:
            x = rows[0] if len(rows) == 1 else jnp.concatenate(rows, axis=1)
        x = Norm(c.norm, c.norm_eps, name="ln_final")(x)
        if c.tie_embeddings:
            # embed.attend(x), with the product through ops.dot_general.
            table = embed.embedding.astype(dtype)
            logits = ops.dot_general(x.astype(dtype), table, (((x.ndim - 1,), (1,)), ((), ())))
        else:
            logits = nn.Dense(
                c.padded_vocab_size, use_bias=False, dtype=dtype, name="unembed",
                dot_general=ops.dot_general,
                kernel_init=nn.with_logical_partitioning(nn.initializers.normal(c.init_std),
                                                         ("embed", "vocab")))(x)
        logits = logits.astype(jnp.float32)
        if c.padded_vocab_size != c.vocab_size:
            logits = logits[..., :c.vocab_size]
        logits = nn.with_logical_constraint(logits, ("batch", "length", "vocab"))
        if cache is not None:
            return logits, KVCache(*stacked)
        if return_kv:
            return logits, KVCache(jnp.stack(keys), jnp.stack(values))
        return logits


def init_params(config: ModelConfig, rng: Array, batch: int = 1, length: int = 8):
    """Initialises `Decoder(config)`; returns the boxed (logically partitioned) variables."""
    tokens = jnp.zeros((batch, length), jnp.int32)
    return Decoder(config).init(rng, tokens)


@functools.lru_cache(maxsize=None)
def abstract_params(config: ModelConfig):
    """Shape/dtype tree of the (boxed) variables, without allocating them."""
    return jax.eval_shape(lambda r: init_params(config, r), jax.random.PRNGKey(0))


def z_loss(logits: Array) -> Array:
    """The z-loss term log(Z)^2 per position, Z = sum_v exp(logits_v) (PaLM, Sec. 5).

    The trainer adds `config.z_loss_weight * z_loss(logits)` to the per-token cross-entropy,
    under the same loss weights, so the softmax normaliser stays near 1 in low precision.

    Args:
      logits: [B, T, V] float logits as returned by `Decoder`.
    Returns:
      [B, T] float32 log(Z)^2.
    """
    log_z = jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)
    return log_z * log_z
