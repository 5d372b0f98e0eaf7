"""Checkpoint import: tiny random `transformers` models, saved locally, match to 1e-4.

`transformers` and `torch` are test-only dependencies; nothing is downloaded.
"""

import json

import jax
import numpy as np
import pytest

from lmscale.models import Decoder
from lmscale.models.convert import (CheckpointError, config_from_hf, convert_params,
                                    load_checkpoint, read_safetensors)

pytestmark = pytest.mark.usefixtures("fast_compiles")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, LENGTH = 96, 12


def _randomise(model, seed):
    """Every parameter random (norm gains and biases too), so each mapping is exercised."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    return model.eval()


def _llama(tie, n_kv_heads, seed=0):
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=n_kv_heads, intermediate_size=72, max_position_embeddings=64,
        rms_norm_eps=1e-5, rope_theta=5000.0, tie_word_embeddings=tie,
        attn_implementation="eager")
    return _randomise(transformers.LlamaForCausalLM(config), seed)


def _neox(parallel, seed=0):
    config = transformers.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, rotary_pct=0.25,
        rotary_emb_base=10000, use_parallel_residual=parallel, hidden_act="gelu",
        layer_norm_eps=1e-5, tie_word_embeddings=False, attn_implementation="eager")
    return _randomise(transformers.GPTNeoXForCausalLM(config), seed)


CASES = {
    "llama_gqa_untied_sharded": lambda: (_llama(tie=False, n_kv_heads=2), "8KB"),
    "llama_mqa_tied": lambda: (_llama(tie=True, n_kv_heads=1, seed=1), None),
    "pythia_parallel_quarter_rotary": lambda: (_neox(parallel=True), None),
    "neox_sequential": lambda: (_neox(parallel=False, seed=2), "8KB"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_imported_logits_match_transformers(case, tmp_path):
    model, shard_size = CASES[case]()
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(tmp_path, safe_serialization=True, **kwargs)
    if shard_size:
        assert (tmp_path / "model.safetensors.index.json").is_file()
        assert len(list(tmp_path.glob("*.safetensors"))) > 1
    tokens = np.random.default_rng(0).integers(0, VOCAB, size=(2, LENGTH))
    with torch.no_grad():
        want = model(torch.tensor(tokens)).logits.numpy()

    config, params = load_checkpoint(tmp_path)
    got = jax.jit(lambda p, t: Decoder(config).apply({"params": p}, t))(params, tokens)
    assert got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


def test_single_file_with_explicit_config(tmp_path):
    model = _neox(parallel=True)
    model.save_pretrained(tmp_path, safe_serialization=True)
    expected, _ = load_checkpoint(tmp_path)
    (tmp_path / "config.json").unlink()
    config, params = load_checkpoint(tmp_path / "model.safetensors", config=expected)
    assert config == expected
    assert params["block_0"]["attn"]["query"]["kernel"].shape == (32, 4, 8)
    with pytest.raises(CheckpointError, match="config.json: not found"):
        load_checkpoint(tmp_path / "model.safetensors")


def test_vocab_padding_pads_tables_with_zero_rows(tmp_path):
    model = _llama(tie=False, n_kv_heads=2)
    model.save_pretrained(tmp_path, safe_serialization=True)
    config, params = load_checkpoint(tmp_path, vocab_pad_multiple=128)
    assert params["embed"]["embedding"].shape == (128, 32)
    assert not params["embed"]["embedding"][VOCAB:].any()
    assert params["unembed"]["kernel"].shape == (32, 128)
    tokens = np.arange(2 * LENGTH).reshape(2, LENGTH) % VOCAB
    with torch.no_grad():
        want = model(torch.tensor(tokens)).logits.numpy()
    got = jax.jit(lambda p, t: Decoder(config).apply({"params": p}, t))(params, tokens)
    assert got.shape == (2, LENGTH, VOCAB)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=0)


def test_config_mapping_llama():
    hf = _llama(tie=True, n_kv_heads=2).config.to_dict()
    c = config_from_hf(hf)
    assert (c.vocab_size, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff) == (
        VOCAB, 32, 2, 4, 2, 8, 72)
    assert (c.norm, c.norm_eps, c.mlp, c.activation) == ("rms", 1e-5, "gated", "silu")
    assert (c.rope_theta, c.rotary_fraction, c.tie_embeddings, c.use_bias) == (
        5000.0, 1.0, True, False)
    assert c.max_seq_len == 64 and not c.parallel_residual


def test_config_mapping_old_style_pythia_json():
    # Keys as in the published Pythia config.json files (pre-`rope_parameters`).
    hf = {"model_type": "gpt_neox", "vocab_size": 50304, "hidden_size": 512,
          "num_hidden_layers": 6, "num_attention_heads": 8, "intermediate_size": 2048,
          "hidden_act": "gelu", "rotary_pct": 0.25, "rotary_emb_base": 10000,
          "layer_norm_eps": 1e-5, "use_parallel_residual": True, "tie_word_embeddings": False,
          "max_position_embeddings": 2048, "initializer_range": 0.02}
    c = config_from_hf(hf)
    assert (c.head_dim, c.rotary_dims, c.rope_theta) == (64, 16, 10000.0)
    assert (c.norm, c.norm_eps, c.mlp, c.activation, c.use_bias) == (
        "layernorm", 1e-5, "plain", "gelu", True)
    assert c.parallel_residual and not c.tie_embeddings and c.n_kv_heads == 8
    assert config_from_hf({**hf, "hidden_act": "gelu_new"}).activation == "gelu_tanh"
    assert config_from_hf(hf, dtype="bfloat16").dtype == "bfloat16"


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gpt2"}, "model_type='gpt2'"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "rope_type='llama3'"),
    ({"hidden_act": "relu"}, "hidden_act='relu'"),
    ({"attention_bias": True, "mlp_bias": False}, "attention_bias=True"),
    ({"sliding_window": 4096}, "sliding_window=4096"),
    ({"num_key_value_heads": 3}, "n_kv_heads=3"),
])
def test_unsupported_configs_raise_naming_the_field(change, message):
    hf = {"model_type": "llama", "vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 1,
          "num_attention_heads": 4, "intermediate_size": 64, "hidden_act": "silu"}
    with pytest.raises(CheckpointError, match=message):
        config_from_hf({**hf, **change}, where="x/config.json")


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    model = _llama(tie=False, n_kv_heads=2)
    model.save_pretrained(tmp_path, safe_serialization=True)
    tensors = read_safetensors(tmp_path)
    config = config_from_hf(json.loads((tmp_path / "config.json").read_text()))
    missing = {k: v for k, v in tensors.items() if k != "model.layers.1.mlp.up_proj.weight"}
    with pytest.raises(CheckpointError, match="missing tensor 'model.layers.1.mlp.up_proj.weight'"):
        convert_params(missing, config, "llama")
    extra = {**tensors, "model.layers.0.self_attn.q_norm.weight": np.ones(32, np.float32)}
    with pytest.raises(CheckpointError, match="q_norm"):
        convert_params(extra, config, "llama")
    wrong = {**tensors, "lm_head.weight": np.ones((VOCAB + 1, 32), np.float32)}
    with pytest.raises(CheckpointError, match="'lm_head.weight' has shape"):
        convert_params(wrong, config, "llama")
    # Exporters' rotary buffers are ignored, not reported as parameters.
    buffers = {**tensors, "model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(4, np.float32)}
    convert_params(buffers, config, "llama")
