"""Shape families: the papers' model ladders and a tiny CPU ladder, as `ModelConfig`s.

Stage: models. Each family maps a size name (or index) to one `ModelConfig`; parameter
counts follow from `count_params` and are tested against the papers' tables:

  * `hu2023(i)`: Hu et al., *Unlock Predictable Scaling from Emergent Abilities*, Table 4
    (the "shape" family: layers 4i, heads floor(i(8+i)/4), head dim 64, d_ff 2.5 d_model,
    tied embeddings, gated GeLU, otherwise LLaMA 2).
  * `du2024(name)`: Du et al., *Understanding Emergent Abilities of Language Models from
    the Loss Perspective*, Tables 3 and 4 (LLaMA-like with grouped-query attention and
    rotary embedding on half of each head).
  * `gadre2024(name)`: the open_lm configurations of Gadre et al., *Language models scale
    reliably with over-training and on downstream tasks* (0.011B ... 6.9B).
  * `tiny(width)`: a fixed-depth ladder for CPU runs (10k to 3M parameters) in which only
    the width changes.

`get_family(family, size)` dispatches by name, so gin files and binaries can say
`family="hu2023", size=5`. Every family accepts keyword overrides of `ModelConfig`
fields (e.g. `vocab_size=259` to train the shape on the byte vocabulary).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from lmscale.models.config import ConfigError, ModelConfig

# --------------------------------------------------------------------------- Hu et al.

# The paper leaves the vocabulary open; 32000 is LLaMA 2's, whose architecture they follow.
# It changes only the embedding count; Table 4's N is non-embedding.
HU2023_VOCAB_SIZE = 32000
HU2023_TABLE4_INDICES = tuple(range(3, 10))


def hu2023(i: int, **overrides) -> ModelConfig:
    """Hu et al. Table 4 shape i: d_model 64 floor(i(8+i)/4), 4i layers, d_ff 2.5 d_model.

    LLaMA 2 architecture (pre-norm RMSNorm eps 1e-5, full rotary, no biases, multi-head
    attention) with tied embeddings and gated GeLU, as the paper's Appendix D.1 states.
    Table 4 lists i = 3..9 (0.036B ... 2.45B non-embedding parameters); any i >= 1 is
    accepted, so a ladder can extend the family downwards.

    Raises:
      ConfigError: i is not a positive integer.
    """
    if not isinstance(i, int) or isinstance(i, bool) or i < 1:
        raise ConfigError(f"hu2023 i={i!r}: must be a positive integer (Table 4 uses 3..9)")
    n_heads = (i * (8 + i)) // 4
    d_model = 64 * n_heads
    # d_ff = 2.5 d_model is an integer because d_model is a multiple of 64.
    base = dict(vocab_size=HU2023_VOCAB_SIZE, d_model=d_model, n_layers=4 * i, n_heads=n_heads,
                head_dim=64, d_ff=5 * d_model // 2, mlp="gated", activation="gelu",
                norm="rms", norm_eps=1e-5, tie_embeddings=True, max_seq_len=4096,
                name=f"hu2023-i{i}")
    return ModelConfig(**{**base, **overrides})


# --------------------------------------------------------------------------- Du et al.

# Assumptions where the paper is silent (Du et al. are the GLM team; their architecture
# description, "LLaMA with grouped-query attention and rotary on half the dimensions",
# matches ChatGLM2/3-6B, whose 6B shape is exactly the paper's 6B row):
#   * vocabulary 65024 (ChatGLM2/3's padded SentencePiece vocabulary), untied embeddings;
#   * 2 key/value heads (ChatGLM's multi_query_group_num), except the 9-head 300M model,
#     where 2 does not divide 9: it gets 3 (groups of 3 query heads);
#   * gated SiLU MLP with d_hidden as printed, RMSNorm eps 1e-5, no biases, rotary on half
#     of each 128-wide head, theta 10000, sequence length 2048 (Sec. A).
DU2024_VOCAB_SIZE = 65024


class DuShape(NamedTuple):
    d_model: int
    d_hidden: int
    n_heads: int
    n_layers: int
    n_kv_heads: int


DU2024_SHAPES = {
    "300M": DuShape(1152, 3840, 9, 12, 3),
    "540M": DuShape(1536, 5120, 12, 12, 2),
    "1B": DuShape(2048, 6912, 16, 16, 2),
    "1.5B": DuShape(2048, 6912, 16, 24, 2),
    "3B": DuShape(3072, 10240, 24, 24, 2),
    "6B": DuShape(4096, 13696, 32, 28, 2),
    "32B": DuShape(6656, 22272, 52, 58, 2),
}


class DuRun(NamedTuple):
    """One pre-training run of Du et al.: shape, tokens, batch (sequences of 2048), peak LR."""

    shape: str
    num_tokens: float
    batch_size: int
    lr_peak: float
    table: int


def _du_runs() -> dict[str, DuRun]:
    runs = {}
    table4 = (("300M", (67, 125, 250, 500), 2.8e-3), ("540M", (33, 66, 125, 250, 500), 2e-3),
              ("1B", (33, 67, 125, 250, 500), 1.5e-3),
              ("1.5B", (67, 100, 125, 250, 375, 500), 1e-3), ("3B", (67, 125, 250, 500), 7e-4),
              ("6B", (33, 67, 125, 250), 4e-4))
    for shape, billions, lr in table4:
        for b in billions:
            runs[f"{shape}-{b}B"] = DuRun(shape, b * 1e9, 1152, lr, 4)
    for shape, tokens, label, batch, lr in (("1.5B", 3e12, "3T", 1344, 5e-4),
                                            ("6B", 3e12, "3T", 4224, 4e-4),
                                            ("32B", 2.5e12, "2.5T", 8832, 3e-4)):
        runs[f"{shape}-{label}"] = DuRun(shape, tokens, batch, lr, 3)
    return runs


# Names "<size>-<tokens>", e.g. "300M-67B" (Table 4, 28 runs) and "32B-2.5T" (Table 3).
DU2024_RUNS = _du_runs()


def du2024(name: str, **overrides) -> ModelConfig:
    """Du et al. model by size ("300M", ..., "32B") or run name ("540M-33B", "6B-3T").

    Runs of one size share a shape; the run name only documents which table row it is
    (its token count, batch and learning rate are in `DU2024_RUNS`).

    Raises:
      ConfigError: unknown name (the message lists the known ones).
    """
    shape_name = DU2024_RUNS[name].shape if name in DU2024_RUNS else name
    if shape_name not in DU2024_SHAPES:
        raise ConfigError(f"du2024 name={name!r}: unknown; sizes are {list(DU2024_SHAPES)} "
                          f"and runs are {list(DU2024_RUNS)}")
    s = DU2024_SHAPES[shape_name]
    base = dict(vocab_size=DU2024_VOCAB_SIZE, d_model=s.d_model, n_layers=s.n_layers,
                n_heads=s.n_heads, n_kv_heads=s.n_kv_heads, d_ff=s.d_hidden, mlp="gated",
                activation="silu", norm="rms", norm_eps=1e-5, rotary_fraction=0.5,
                tie_embeddings=False, max_seq_len=2048, name=f"du2024-{name}")
    return ModelConfig(**{**base, **overrides})


# --------------------------------------------------------------------------- Gadre et al.

# open_lm, as the testbed was trained (mlfoundations/scaling exp_data/models/*.json:
# `--model-norm gain_only_lp_layer_norm --qk-norm --z-loss 0.0001`, open_lm_version 0.0.21):
#   * LayerNorm with gain and no bias (eps 1e-5) before attention, before the MLP and at
#     the end; qk-LayerNorm over the full query and key projections (n_heads * head_dim);
#   * SwiGLU with hidden width 256 * ceil(int(8 d / 3) / 256) (LLaMA's rule), no biases;
#   * full-width rotary (theta 10000), multi-head attention, head_dim = d / heads;
#   * untied input and output embeddings, GPT-NeoX tokenizer padded to 50432 rows.
# The published counts (`params`, `params_no_embed`) are reproduced exactly with two
# conventions of open_lm's counting (see `open_lm_reported_params`): they omit the qk-norm
# gains (2 d per layer), and "no_embed" removes only the input table, keeping the output
# projection. Both are checked in tests against testbed.csv.
GADRE2024_VOCAB_SIZE = 50432


class OpenLmShape(NamedTuple):
    arch: str
    d_model: int
    n_layers: int
    n_heads: int


GADRE2024_SHAPES = {
    "0.011B": OpenLmShape("d=96_l=8_h=4", 96, 8, 4),
    "0.079B": OpenLmShape("d=512_l=8_h=4", 512, 8, 4),
    "0.154B": OpenLmShape("d=576_l=24_h=8", 576, 24, 8),
    "0.411B": OpenLmShape("d=1024_l=24_h=8", 1024, 24, 8),
    "1.4B": OpenLmShape("open_lm_1b", 2048, 24, 16),
    "6.9B": OpenLmShape("open_lm_7b", 4096, 32, 32),
}


def open_lm_swiglu_hidden(d_model: int) -> int:
    """open_lm's SwiGLU width: 8 d / 3 (truncated) rounded up to a multiple of 256."""
    return 256 * ((int(2 * 4 * d_model / 3) + 256 - 1) // 256)


def gadre2024(name: str, **overrides) -> ModelConfig:
    """Gadre et al.'s open_lm model by size label ("0.011B") or arch ("d=96_l=8_h=4").

    Raises:
      ConfigError: unknown name (the message lists the known ones).
    """
    by_arch = {s.arch: label for label, s in GADRE2024_SHAPES.items()}
    label = by_arch.get(name, name)
    if label not in GADRE2024_SHAPES:
        raise ConfigError(f"gadre2024 name={name!r}: unknown; sizes are "
                          f"{list(GADRE2024_SHAPES)}, archs are {list(by_arch)}")
    s = GADRE2024_SHAPES[label]
    base = dict(vocab_size=GADRE2024_VOCAB_SIZE, d_model=s.d_model, n_layers=s.n_layers,
                n_heads=s.n_heads, d_ff=open_lm_swiglu_hidden(s.d_model), mlp="gated",
                activation="silu", norm="layernorm_gain", norm_eps=1e-5, qk_norm=True,
                tie_embeddings=False, z_loss_weight=1e-4, max_seq_len=2048,
                name=f"gadre2024-{label}")
    return ModelConfig(**{**base, **overrides})


def open_lm_reported_params(config: ModelConfig) -> tuple[int, int]:
    """(params, params_no_embed) as open_lm reported them for the Gadre et al. testbed.

    That count leaves out the qk-norm gains and subtracts only the input embedding table
    (the output projection stays in `params_no_embed`). Use it to compare with published
    numbers; lmscale's own N is `count_params(config)`, which counts every parameter the
    decoder holds.
    """
    from lmscale.models.config import count_params

    no_qk = count_params(config.replace(qk_norm=False))
    input_table = config.vocab_size * config.d_model
    return no_qk.total, no_qk.total - input_table


# --------------------------------------------------------------------------- tiny

# One shape, only the width changes (Hu et al. keep a uniform shape across the ladder so
# that the size trend is not confounded with a change of depth or aspect): 4 layers,
# 16-wide heads, d_ff 2.5 d, tied embeddings, gated GeLU, byte vocabulary (seqio's
# ByteVocabulary: 256 bytes + 3 special ids).
TINY_WIDTHS = (16, 32, 48, 64, 96, 128, 160, 192, 256)
TINY_LAYERS = 4
TINY_HEAD_DIM = 16
TINY_VOCAB_SIZE = 259


def tiny(name_or_d_model: int | str, **overrides) -> ModelConfig:
    """A tiny CPU model: width `d_model` (int) or name "d<width>", e.g. "d64".

    Widths in `TINY_WIDTHS` span about 16k to 3.1M parameters with the byte vocabulary;
    any positive multiple of 16 is accepted.

    Raises:
      ConfigError: not a multiple of 16, or a malformed name.
    """
    width = name_or_d_model
    if isinstance(width, str):
        digits = width[1:] if width.startswith("d") else ""
        if not digits.isdigit():
            raise ConfigError(f"tiny name={width!r}: expected 'd<width>' (e.g. 'd64') "
                              f"or an int; ladder widths are {TINY_WIDTHS}")
        width = int(digits)
    if not isinstance(width, int) or isinstance(width, bool) or width < TINY_HEAD_DIM or (
            width % TINY_HEAD_DIM):
        raise ConfigError(f"tiny d_model={name_or_d_model!r}: must be a positive multiple of "
                          f"{TINY_HEAD_DIM} (the fixed head width)")
    base = dict(vocab_size=TINY_VOCAB_SIZE, d_model=width, n_layers=TINY_LAYERS,
                n_heads=width // TINY_HEAD_DIM, head_dim=TINY_HEAD_DIM, d_ff=5 * width // 2,
                mlp="gated", activation="gelu", norm="rms", norm_eps=1e-6,
                tie_embeddings=True, max_seq_len=256, name=f"tiny-d{width}")
    return ModelConfig(**{**base, **overrides})


# --------------------------------------------------------------------------- dispatch

FAMILIES: dict[str, Callable[..., ModelConfig]] = {
    "hu2023": hu2023, "du2024": du2024, "gadre2024": gadre2024, "tiny": tiny}


def family_sizes(family: str) -> tuple:
    """The published sizes of `family`, smallest first (what a ladder iterates over)."""
    sizes = {"hu2023": HU2023_TABLE4_INDICES, "du2024": tuple(DU2024_SHAPES),
             "gadre2024": tuple(GADRE2024_SHAPES), "tiny": TINY_WIDTHS}
    if family not in sizes:
        raise ConfigError(f"family={family!r}: unknown; families are {list(FAMILIES)}")
    return sizes[family]


def get_family(family: str, size, **overrides) -> ModelConfig:
    """`ModelConfig` of `size` in `family` ("hu2023", "du2024", "gadre2024" or "tiny").

    Raises:
      ConfigError: unknown family or size.
    """
    if family not in FAMILIES:
        raise ConfigError(f"family={family!r}: unknown; families are {list(FAMILIES)}")
    return FAMILIES[family](size, **overrides)
