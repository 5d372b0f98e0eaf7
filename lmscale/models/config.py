"""Model configuration: the one decoder's options, validated, with exact parameter counts.

Stage: models. `ModelConfig` is a frozen dataclass built by code or gin; it validates itself
in `__post_init__` (naming the bad field, its value and what is allowed) and knows its own
parameter count and training FLOPs per token, so run specs and reports never re-derive them.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from lmscale.config_check import check_fields

NORMS = ("rms", "layernorm", "layernorm_gain")
MLPS = ("gated", "plain")
ACTIVATIONS = ("gelu", "gelu_tanh", "silu")
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION_IMPLS = ("default", "xla", "cudnn")


class ConfigError(ValueError):
    """A model, run or mesh configuration is invalid; the message names the field."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and options of the lmscale decoder.

    Attributes:
      vocab_size: number of token ids the model reads and predicts (unpadded; counts use it).
      d_model: residual stream width D.
      n_layers: number of Transformer blocks.
      n_heads: query heads N.
      n_kv_heads: key/value heads K (N for multi-head, 1 for multi-query, else grouped-query).
        `None` means `n_heads`.
      head_dim: per-head width H; `None` means d_model // n_heads.
      d_ff: MLP hidden width F.
      mlp: "gated" (GLU: act(x W_gate) * (x W_up)) or "plain" (act(x W_in)).
      activation: "gelu" (exact erf), "gelu_tanh" or "silu".
      norm: "rms" (RMSNorm, LLaMA), "layernorm" (with bias, GPT-NeoX) or "layernorm_gain"
        (LayerNorm without bias, open_lm).
      norm_eps: epsilon of every norm.
      parallel_residual: GPT-NeoX/Pythia block x + attn(ln1(x)) + mlp(ln2(x)).
      rotary_fraction: fraction of each head's dims that get rotary embedding (1.0 LLaMA,
        0.5 Du et al., 0.25 Pythia). The rotated width must be even.
      rope_theta: rotary base.
      qk_norm: apply a norm (of kind `norm`) to the projected queries and keys over the full
        projection width, as open_lm's qk-LayerNorm (Gadre et al.).
      use_bias: biases in attention and MLP projections (GPT-NeoX).
      tie_embeddings: output projection is the transposed input embedding.
      vocab_pad_multiple: pad the embedding table's rows to a multiple of this (sharding
        friendliness); parameter counts stay unpadded and logits are returned unpadded.
      max_seq_len: longest sequence the model is run on (documentation and cache sizing).
      init_std: standard deviation of the embedding and input-projection init.
      z_loss_weight: weight of the auxiliary z-loss, weight * log(Z)^2 per token with Z the
        softmax normaliser of the logits (PaLM; open_lm/Gadre et al. use 1e-4). The model
        only declares it; the trainer adds it to the cross-entropy (see `decoder.z_loss`).
      dtype: activation/compute dtype name; parameters are always float32.
      attention_impl: how training and full-sequence attention (no cache, no prefix) is
        computed: "default" (lmscale's einsum path, with the explicit backward on CPU), or
        `jax.nn.dot_product_attention` with implementation "xla" or "cudnn" (the fused GPU
        kernel; needs a GPU and bfloat16/float16). Decoding always uses the default path.
      name: free-form label (family and size), carried into reports.
    """

    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None
    head_dim: int | None = None
    d_ff: int = 160
    mlp: str = "gated"
    activation: str = "gelu"
    norm: str = "rms"
    norm_eps: float = 1e-6
    parallel_residual: bool = False
    rotary_fraction: float = 1.0
    rope_theta: float = 10000.0
    qk_norm: bool = False
    use_bias: bool = False
    tie_embeddings: bool = True
    vocab_pad_multiple: int = 1
    max_seq_len: int = 2048
    init_std: float = 0.02
    z_loss_weight: float = 0.0
    dtype: str = "float32"
    attention_impl: str = "default"
    name: str = ""

    def __post_init__(self):
        check_fields(self, ConfigError)

        def positive(field):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"ModelConfig.{field}={value!r}: must be a positive integer")

        for field in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "vocab_pad_multiple",
                      "max_seq_len"):
            positive(field)
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        positive("n_kv_heads")
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ConfigError(
                    f"ModelConfig.d_model={self.d_model} is not divisible by "
                    f"ModelConfig.n_heads={self.n_heads}; set head_dim explicitly or pick "
                    f"n_heads among the divisors of d_model")
            object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
        positive("head_dim")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"ModelConfig.n_heads={self.n_heads} is not divisible by "
                f"ModelConfig.n_kv_heads={self.n_kv_heads}: grouped-query attention needs "
                f"each kv head to serve a whole number of query heads")
        for field, allowed in (("mlp", MLPS), ("activation", ACTIVATIONS), ("norm", NORMS),
                               ("dtype", DTYPES),
                               ("attention_impl", ATTENTION_IMPLS)):
            if getattr(self, field) not in allowed:
                raise ConfigError(
                    f"ModelConfig.{field}={getattr(self, field)!r}: allowed values are {allowed}")
        if not 0.0 <= self.rotary_fraction <= 1.0:
            raise ConfigError(
                f"ModelConfig.rotary_fraction={self.rotary_fraction}: must lie in [0, 1]")
        rotary_dims = self.head_dim * self.rotary_fraction
        if abs(rotary_dims - round(rotary_dims)) > 1e-9 or round(rotary_dims) % 2:
            raise ConfigError(
                f"ModelConfig.rotary_fraction={self.rotary_fraction} gives "
                f"{rotary_dims:g} rotary dims of head_dim={self.head_dim}: must be an even integer")
        if self.norm_eps <= 0:
            raise ConfigError(f"ModelConfig.norm_eps={self.norm_eps}: must be > 0")
        if self.init_std <= 0:
            raise ConfigError(f"ModelConfig.init_std={self.init_std}: must be > 0")
        if self.z_loss_weight < 0:
            raise ConfigError(f"ModelConfig.z_loss_weight={self.z_loss_weight}: must be >= 0")
        if self.rope_theta <= 0:
            raise ConfigError(f"ModelConfig.rope_theta={self.rope_theta}: must be > 0")

    @property
    def rotary_dims(self) -> int:
        """Per-head dims that receive rotary embedding (even)."""
        return int(round(self.head_dim * self.rotary_fraction))

    @property
    def padded_vocab_size(self) -> int:
        m = self.vocab_pad_multiple
        return ((self.vocab_size + m - 1) // m) * m

    @property
    def num_params(self) -> "ParamCount":
        return count_params(self)

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token: 6 N (non-embedding matmuls + unembedding) + attention.

        Follows Kaplan et al. / PaLM: forward 2 FLOPs per weight per token (including the
        output projection), attention scores and values 2 * 2 * n_layers * seq * N*H per
        token forward; training is 3x forward.
        """
        seq_len = self.max_seq_len if seq_len is None else seq_len
        dense = count_params(self).non_embedding + self.vocab_size * self.d_model
        attn = 2 * self.n_layers * seq_len * self.n_heads * self.head_dim
        return 3.0 * (2.0 * dense + attn)

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


class ParamCount(NamedTuple):
    """Parameter counts (unpadded vocabulary).

    total: every parameter. non_embedding: total minus the input embedding table and, when
    untied, the output projection (Kaplan et al.'s N).
    """

    total: int
    non_embedding: int
    embedding: int


def _norm_params(norm: str, width: int) -> int:
    return 2 * width if norm == "layernorm" else width


def count_params(config: ModelConfig) -> ParamCount:
    """Exact parameter count of `config`, as `Decoder` initialises it (vocab unpadded)."""
    c = config
    d, h = c.d_model, c.head_dim
    q_width, kv_width = c.n_heads * h, c.n_kv_heads * h
    attn = d * q_width + 2 * d * kv_width + q_width * d
    if c.use_bias:
        attn += q_width + 2 * kv_width + d
    if c.qk_norm:
        attn += _norm_params(c.norm, q_width) + _norm_params(c.norm, kv_width)
    n_in = 2 if c.mlp == "gated" else 1
    mlp = n_in * d * c.d_ff + c.d_ff * d
    if c.use_bias:
        mlp += n_in * c.d_ff + d
    block = attn + mlp + 2 * _norm_params(c.norm, d)
    non_embedding = c.n_layers * block + _norm_params(c.norm, d)
    embedding = c.vocab_size * d * (1 if c.tie_embeddings else 2)
    return ParamCount(total=non_embedding + embedding, non_embedding=non_embedding,
                      embedding=embedding)
