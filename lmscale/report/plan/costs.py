"""The arithmetic of a study plan: training and evaluation FLOPs, PassUntil sample budgets.

Stage: report (pure numpy/scipy arithmetic over `ModelConfig`s; nothing is traced, nothing
is trained). Every formula is stated where it is computed, and docs/planning.md repeats
them with a worked example.

Conventions (those of `ModelConfig.flops_per_token` and `RunSpec.flops`):

  * N is the non-embedding parameter count (Kaplan et al.); the matmul weights a token
    passes through are N_fwd = N + V d (the unembedding, tied or not, is one V x d matmul).
  * A forward pass costs 2 N_fwd FLOPs per token plus attention: a token at context length
    c computes q.k over c keys and the weighted sum of c values, 4 L c (n_heads d_head)
    FLOPs. Over a causal row of T tokens the mean context is T / 2, so 2 L T n_heads d_head
    per token (Kaplan et al.'s 2 n_layer n_ctx d_attn).
  * Training is 3x forward. "6ND" is the compute of the scaling laws (C = 6 N D, N
    non-embedding); "model FLOPs" adds the unembedding and attention:
    3 (2 N_fwd + 2 L T n_heads d_head) D.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

from lmscale.models.config import ModelConfig, count_params

# The kinds of evaluation work a plan counts.
VALIDATION = "validation"
MULTIPLE_CHOICE = "multiple_choice"
PASSUNTIL = "passuntil"
DECODE = "decode"   # a fixed number of sequences per instance: greedy (1), beam search (W)
KINDS = (VALIDATION, MULTIPLE_CHOICE, PASSUNTIL, DECODE)


def forward_weights(model: ModelConfig) -> int:
    """N_fwd = N (non-embedding) + V d: the weights one token's forward pass multiplies."""
    return count_params(model).non_embedding + model.vocab_size * model.d_model


def attention_flops(model: ModelConfig, context: float) -> float:
    """Forward attention FLOPs of one token attending over `context` keys: 4 L c H_q d_h."""
    return 4.0 * model.n_layers * context * model.n_heads * model.head_dim


def forward_flops_per_token(model: ModelConfig, mean_context: float) -> float:
    """Forward FLOPs of one token at mean context length `mean_context`: 2 N_fwd + attn."""
    return 2.0 * forward_weights(model) + attention_flops(model, mean_context)


def training_flops(model: ModelConfig, tokens: float, seq_len: int) -> tuple[float, float]:
    """(6 N D, model FLOPs 3 (2 N_fwd + 2 L T H_q d_h) D) of training on `tokens` tokens.

    The second equals `ModelConfig.flops_per_token(seq_len) * tokens`.
    """
    six_nd = 6.0 * count_params(model).non_embedding * tokens
    return six_nd, 3.0 * forward_flops_per_token(model, seq_len / 2.0) * tokens


# ------------------------------------------------------------------------- PassUntil


def _as_probs(pu) -> np.ndarray:
    p = np.atleast_1d(np.asarray(pu, dtype=np.float64))
    if np.any(~np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise ValueError(f"prior PU values must lie in [0, 1], got {p[~((p >= 0) & (p <= 1))]}")
    return p


def expected_capped_samples(pu, r: int, k_max: int) -> np.ndarray:
    """E[min(K, k_max)] for K ~ the number of Bernoulli(pu) draws until the r-th pass.

    K is negative binomial (r passes, K - r failures before the r-th). Exactly:
      E[min(K, m)] = E[K 1{K <= m}] + m P(K > m)
                   = (r / p) P(Bin(m + 1, p) >= r + 1) + m P(Bin(m, p) <= r - 1),
    using k C(k-1, r-1) p^r q^(k-r) = (r / p) C(k, r) p^(r+1) q^(k-r) (the pmf of the
    (r+1)-th pass at draw k + 1) and P(K <= m) = P(Bin(m, p) >= r). Without the cap the
    mean is r / p; at p = 0 it is m.

    Args:
      pu: one PU or an array of them (per instance), each in [0, 1].
      r: passes waited for; k_max: the sample cap (>= r).

    Returns:
      Array of the same length as `pu` (float64).
    """
    p = _as_probs(pu)
    out = np.full(p.shape, float(k_max))
    pos = p > 0
    q = p[pos]
    out[pos] = (r / q) * stats.binom.sf(r, k_max + 1, q) + k_max * stats.binom.cdf(
        r - 1, k_max, q)
    return out


def capped_probability(pu, r: int, k_max: int) -> np.ndarray:
    """P(K > k_max) = P(Bin(k_max, p) <= r - 1): the chance an instance hits the cap."""
    p = _as_probs(pu)
    return stats.binom.cdf(r - 1, k_max, p)


def expected_drawn_samples(pu, r: int, k_max: int, batch: int) -> np.ndarray:
    """Expected samples the sampler generates when PassUntil draws in batches of `batch`.

    `passuntil.run` requests `batch` samples per call until the r-th pass, shortening the
    last call so that at most k_max are drawn; the whole batch is generated even when the
    r-th pass comes early in it. Batch j (starting after s_j = j * batch samples) is drawn
    iff K > s_j, so E[drawn] = sum_j min(batch, k_max - s_j) P(Bin(s_j, p) <= r - 1).
    """
    p = _as_probs(pu)
    starts = np.arange(0, k_max, batch)
    sizes = np.minimum(batch, k_max - starts).astype(np.float64)
    alive = stats.binom.cdf(r - 1, starts[None, :], p[:, None])  # [instances, batches]
    return alive @ sizes


def needed_samples(pu) -> np.ndarray:
    """r / PU per unit r: the expected samples to the r-th pass is r / PU (inf at 0)."""
    p = _as_probs(pu)
    with np.errstate(divide="ignore"):
        return np.where(p > 0, 1.0 / np.where(p > 0, p, 1.0), np.inf)


def share_unmeasurable(pu, r: int, k_max: int) -> float:
    """Share of instances whose expected samples to the r-th pass, r / PU, exceed k_max."""
    p = _as_probs(pu)
    return float(np.mean(r * needed_samples(p) > k_max))


# ------------------------------------------------------------------------- memory


def _ways(total: int, *dims: int) -> int:
    """`total` if it divides every dim (the mesh axis shards them), else 1 (replicated),
    as `lmscale.train.state.fit_sharding` does."""
    return total if all(d % total == 0 for d in dims) else 1


def param_bytes(model: ModelConfig, fsdp: int = 1, tensor: int = 1) -> dict[str, float]:
    """Bytes per device of float32 parameters, AdamW's two float32 moments and gradients.

    Parameters and moments are sharded over fsdp (the embedding dimension d_model) and
    tensor (heads, MLP units, vocabulary), replicated over data; an axis that does not
    divide the dimension replicates it. The embedding table counts its padded rows.
    """
    counts = count_params(model)
    stored = counts.total - counts.embedding + model.padded_vocab_size * model.d_model * (
        1 if model.tie_embeddings else 2)
    shard = _ways(fsdp, model.d_model) * _ways(tensor, model.n_heads, model.n_kv_heads,
                                              model.d_ff, model.padded_vocab_size)
    params = 4.0 * stored / shard
    return {"params": params, "optimizer": 2.0 * params, "gradients": params}


def activation_bytes(model: ModelConfig, rows_per_device: int, seq_len: int,
                     compute_bytes: int, tensor: int = 1) -> float:
    """Bytes of activations one device keeps for the backward pass (no rematerialisation).

    Per layer and token, in the compute dtype: 4 d (the two residual inputs and the two
    norm outputs) + 2 (n_heads + n_kv_heads) d_head (q, k, v and the attention output,
    rotated q/k counted once) + 4 d_ff gated / 2 d_ff plain (gate, up, activation,
    product); plus the float32 softmax of every head over the row, n_heads T; plus float32
    logits and their gradient, 2 V_pad, once per token. Heads, MLP units and the vocabulary
    divide over `tensor`. XLA fuses some of these away: read it as an upper estimate.
    """
    m = model
    t_heads = _ways(tensor, m.n_heads, m.n_kv_heads)
    t_mlp = _ways(tensor, m.d_ff)
    t_vocab = _ways(tensor, m.padded_vocab_size)
    mlp_units = (4 if m.mlp == "gated" else 2) * m.d_ff
    per_layer = (compute_bytes * (4 * m.d_model
                                  + 2 * (m.n_heads + m.n_kv_heads) * m.head_dim / t_heads
                                  + mlp_units / t_mlp)
                 + 4.0 * m.n_heads * seq_len / t_heads)
    per_token = m.n_layers * per_layer + 8.0 * m.padded_vocab_size / t_vocab
    return float(rows_per_device) * seq_len * per_token


def kv_cache_bytes(model: ModelConfig, slots: int, length: int, cache_bytes: int) -> float:
    """The sampler's cache: layers x 2 (k, v) x slots x length x kv_heads x head_dim x bytes."""
    return (float(model.n_layers) * 2 * slots * length * model.n_kv_heads * model.head_dim
            * cache_bytes)


def sampler_bytes(model: ModelConfig, slots: int, max_new_tokens: int, prompt_tokens: int,
                  capacity: int, cache_bytes: int) -> dict[str, float]:
    """Bytes on the device that samples: float32 parameters, each slot's cache of its own
    generated tokens, the shared prompt prefix's cache (padded to a power of two) and the
    output buffer (capacity x max_new_tokens tokens and log-probs, 8 bytes each)."""
    prompt_bucket = 1 << max(0, int(prompt_tokens) - 1).bit_length()
    return {"params": 4.0 * count_params(model).total,
            "kv_cache": kv_cache_bytes(model, slots, max_new_tokens, cache_bytes),
            "prefix_cache": kv_cache_bytes(model, 1, prompt_bucket, cache_bytes),
            "buffers": 8.0 * capacity * max_new_tokens}


def bucket(n: int) -> int:
    """Smallest power of two >= n (the sampler's padded sizes)."""
    return 1 << max(0, int(n) - 1).bit_length()


def format_count(x: float | None, unit: str = "") -> str:
    """3 significant digits with an SI suffix (k, M, G, T, P, E, Z); '-' for None."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    for scale, suffix in ((1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"),
                          (1e6, "M"),
                          (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def format_bytes(x: float | None) -> str:
    """Bytes in binary units (KiB, MiB, GiB)."""
    if x is None:
        return "-"
    for scale, suffix in ((2 ** 40, "TiB"), (2 ** 30, "GiB"), (2 ** 20, "MiB"),
                          (2 ** 10, "KiB")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {suffix}"
    return f"{x:.0f} B"


def mean_or_none(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None
