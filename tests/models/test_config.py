"""ModelConfig validation, exact parameter counts and FLOPs."""

import math

import flax.linen as nn
import jax
import numpy as np
import pytest

from lmscale.models import ConfigError, ModelConfig, abstract_params, count_params
from lmscale.testing import tiny_config, tiny_params

pytestmark = pytest.mark.usefixtures("fast_compiles")

# Each entry changes one or more options of the tiny config; together they cover every
# branch of count_params.
OPTION_SETS = {
    "mha": dict(n_kv_heads=4),
    "gqa": dict(n_kv_heads=2),
    "mqa": dict(n_kv_heads=1),
    "qk_norm_rms": dict(qk_norm=True),
    "qk_norm_layernorm_bias": dict(qk_norm=True, norm="layernorm", use_bias=True),
    "qk_norm_gain_only": dict(qk_norm=True, norm="layernorm_gain", n_kv_heads=1),
    "biases": dict(use_bias=True),
    "untied": dict(tie_embeddings=False),
    "plain_mlp": dict(mlp="plain", activation="gelu"),
    "plain_mlp_bias_untied": dict(mlp="plain", use_bias=True, tie_embeddings=False),
    "explicit_head_dim": dict(head_dim=16, n_heads=4, n_kv_heads=2),
    "vocab_padding": dict(vocab_size=250, vocab_pad_multiple=128),
    "vocab_padding_untied": dict(vocab_size=250, vocab_pad_multiple=128, tie_embeddings=False),
    "neox_like": dict(norm="layernorm", use_bias=True, parallel_residual=True, mlp="plain",
                      rotary_fraction=0.25, tie_embeddings=False, n_kv_heads=4),
}


def _leaf_sizes(tree):
    return {jax.tree_util.keystr(path): int(np.prod(leaf.shape))
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _embedding_leaf_sizes(config, sizes):
    """Sizes of the tables that count_params calls embeddings, as initialised (padded)."""
    return sum(size for path, size in sizes.items() if "'embed'" in path or "'unembed'" in path)


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_count_params_equals_initialised_shapes(name):
    config = tiny_config(**OPTION_SETS[name])
    sizes = _leaf_sizes(nn.unbox(abstract_params(config))["params"])
    count = count_params(config)
    padding_rows = config.padded_vocab_size - config.vocab_size
    n_tables = 1 if config.tie_embeddings else 2
    initialised_total = sum(sizes.values())
    # Counts are unpadded: the padded rows of each table are not parameters of the model.
    assert count.total == initialised_total - n_tables * padding_rows * config.d_model
    assert count.embedding == _embedding_leaf_sizes(config, sizes) - (
        n_tables * padding_rows * config.d_model)
    assert count.non_embedding == count.total - count.embedding


def test_count_params_equals_really_initialised_params():
    config = tiny_config(qk_norm=True, use_bias=True, norm="layernorm", tie_embeddings=False,
                         n_layers=1)
    params = tiny_params(config)
    assert sum(x.size for x in jax.tree.leaves(params)) == count_params(config).total
    assert config.num_params == count_params(config)


def test_count_params_by_hand():
    # d=32, 2 layers, N=4, K=2, H=8, F=80, gated, RMSNorm, tied, vocab 256.
    attn = 32 * 32 + 2 * 32 * 16 + 32 * 32
    mlp = 3 * 32 * 80
    expected_non_embedding = 2 * (attn + mlp + 2 * 32) + 32
    count = count_params(tiny_config())
    assert count.non_embedding == expected_non_embedding
    assert count.embedding == 256 * 32
    assert count.total == expected_non_embedding + 256 * 32


def test_untying_adds_one_table_to_embedding_only():
    tied, untied = count_params(tiny_config()), count_params(tiny_config(tie_embeddings=False))
    assert untied.non_embedding == tied.non_embedding
    assert untied.embedding == 2 * tied.embedding


def test_flops_per_token_is_six_n_plus_attention():
    config = tiny_config()
    n = count_params(config).non_embedding + config.vocab_size * config.d_model
    attention = 6 * config.n_layers * 64 * config.n_heads * config.head_dim
    assert config.flops_per_token(64) == pytest.approx(6 * n + attention, rel=1e-12)
    assert config.flops_per_token() == config.flops_per_token(config.max_seq_len)


def test_config_is_frozen_and_rebuilds_from_its_fields():
    config = tiny_config(n_kv_heads=1, qk_norm=True)
    with pytest.raises(Exception):
        config.d_model = 64
    import dataclasses
    assert ModelConfig(**dataclasses.asdict(config)) == config
    assert config.replace(d_model=64, n_heads=8).head_dim == 8


@pytest.mark.parametrize("overrides, field", [
    (dict(d_model=30, n_heads=4, n_kv_heads=None), "d_model"),
    (dict(n_heads=4, n_kv_heads=3), "n_kv_heads"),
    (dict(rotary_fraction=0.125), "rotary_fraction"),   # 1 of head_dim 8: odd
    (dict(rotary_fraction=0.3), "rotary_fraction"),     # 2.4 dims: not an integer
    (dict(rotary_fraction=1.5), "rotary_fraction"),
    (dict(d_model=0), "d_model"),
    (dict(n_layers=2.0), "n_layers"),
    (dict(mlp="swiglu"), "mlp"),
    (dict(activation="relu"), "activation"),
    (dict(norm="batchnorm"), "norm"),
    (dict(dtype="int8"), "dtype"),
    (dict(norm_eps=0.0), "norm_eps"),
    (dict(z_loss_weight=-1e-4), "z_loss_weight"),
    (dict(vocab_pad_multiple=0), "vocab_pad_multiple"),
])
def test_bad_config_raises_config_error_naming_field(overrides, field):
    with pytest.raises(ConfigError, match=rf"ModelConfig\.{field}="):
        tiny_config(**overrides)


def test_heads_error_names_both_fields():
    with pytest.raises(ConfigError) as info:
        tiny_config(n_heads=4, n_kv_heads=3)
    assert "n_heads=4" in str(info.value) and "n_kv_heads=3" in str(info.value)
    with pytest.raises(ConfigError) as info:
        tiny_config(d_model=30, n_heads=4, n_kv_heads=None)
    assert "d_model=30" in str(info.value) and "n_heads=4" in str(info.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_rotary_dims_and_padded_vocab():
    config = tiny_config(vocab_size=259, vocab_pad_multiple=128, rotary_fraction=0.25)
    assert config.rotary_dims == 2
    assert config.padded_vocab_size == 384
    assert math.isclose(config.head_dim * config.rotary_fraction, config.rotary_dims)
