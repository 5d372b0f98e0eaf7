"""Import public checkpoints (LLaMA and GPT-NeoX/Pythia layouts, safetensors) into lmscale.

Stage: models. Consumes a Hugging Face style checkpoint, i.e. `config.json` plus
`*.safetensors` (one file, several, or a sharded `model.safetensors.index.json`), and
produces `(ModelConfig, params)`: an unboxed float32 parameter tree usable as
`Decoder(config).apply({"params": params}, tokens)`. Nothing is downloaded: point it at a
local directory (e.g. a Pythia revision fetched beforehand).

Layouts (the `model_type` of config.json):
  * "llama" (and "mistral" without sliding window): RMSNorm, gated SiLU MLP, rotary on
    the full head (rotate-half convention, like lmscale), grouped-query attention;
  * "gpt_neox" (Pythia): LayerNorm with bias, fused per-head query/key/value, biases,
    plain GeLU MLP, partial rotary (`rotary_pct`), parallel residual.
Anything the decoder cannot represent (rope scaling, sliding windows, biases on only some
projections) raises `CheckpointError` instead of converting into a different model.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Mapping

import flax.linen as nn
import jax
import numpy as np

from lmscale.models.config import ConfigError, ModelConfig
from lmscale.models.decoder import abstract_params

LLAMA_TYPES = ("llama", "mistral")
NEOX_TYPES = ("gpt_neox",)
_ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_new": "gelu_tanh",
                "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh"}
# Buffers some exporters save next to the weights; they carry no parameters.
_BUFFERS = re.compile(r"(rotary_emb\.inv_freq|attention\.bias|attention\.masked_bias)$")


class CheckpointError(ValueError):
    """A checkpoint cannot be imported; the message names the file, field or tensor."""


# --------------------------------------------------------------------------- config.json


def _rope(hf: dict, where: str) -> tuple[float, float]:
    """(theta, partial rotary fraction) from old-style keys or `rope_parameters`."""
    params = dict(hf.get("rope_parameters") or {})
    scaling = hf.get("rope_scaling")
    if isinstance(scaling, dict):
        params = {**scaling, **params}
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in (None, "default"):
        raise CheckpointError(f"{where}: rope_type={rope_type!r} (rope scaling) is not "
                              f"supported; only plain rotary embedding is")
    theta = params.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", 10000.0)))
    fraction = params.get("partial_rotary_factor",
                          hf.get("partial_rotary_factor", hf.get("rotary_pct", 1.0)))
    return float(theta), float(fraction)


def _get(hf: dict, key: str, where: str):
    if key not in hf:
        raise CheckpointError(f"{where}: missing field {key!r}")
    return hf[key]


def _activation(name: str, where: str) -> str:
    if name not in _ACTIVATIONS:
        raise CheckpointError(f"{where}: hidden_act={name!r} is not supported; known: "
                              f"{sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def config_from_hf(hf: Mapping, where: str = "config.json", **overrides) -> ModelConfig:
    """Maps a Hugging Face `config.json` dict (llama or gpt_neox) to a `ModelConfig`.

    Args:
      hf: the parsed config.json.
      where: how to name the source in error messages (its path).
      **overrides: `ModelConfig` fields to set afterwards (e.g. `dtype="bfloat16"`).
    Raises:
      CheckpointError: unknown model_type, missing field, or an option lmscale lacks.
    """
    hf = dict(hf)
    model_type = hf.get("model_type")
    d_model = int(_get(hf, "hidden_size", where))
    n_heads = int(_get(hf, "num_attention_heads", where))
    head_dim = int(hf.get("head_dim") or d_model // n_heads)
    theta, fraction = _rope(hf, where)
    common = dict(vocab_size=int(_get(hf, "vocab_size", where)), d_model=d_model,
                  n_layers=int(_get(hf, "num_hidden_layers", where)), n_heads=n_heads,
                  d_ff=int(_get(hf, "intermediate_size", where)), rope_theta=theta,
                  max_seq_len=int(hf.get("max_position_embeddings", 2048)),
                  init_std=float(hf.get("initializer_range", 0.02)),
                  activation=_activation(hf.get("hidden_act", "silu"), where),
                  name=str(hf.get("_name_or_path") or model_type))
    if model_type in LLAMA_TYPES:
        if hf.get("sliding_window") is not None:
            raise CheckpointError(f"{where}: sliding_window={hf['sliding_window']} is not "
                                  f"supported")
        attention_bias, mlp_bias = bool(hf.get("attention_bias", False)), bool(
            hf.get("mlp_bias", False))
        if attention_bias != mlp_bias:
            raise CheckpointError(f"{where}: attention_bias={attention_bias} with mlp_bias="
                                  f"{mlp_bias}: lmscale has biases on all projections or none")
        fields = dict(common, n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
                      head_dim=head_dim, mlp="gated", norm="rms",
                      norm_eps=float(hf.get("rms_norm_eps", 1e-6)), use_bias=attention_bias,
                      rotary_fraction=fraction,
                      tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
    elif model_type in NEOX_TYPES:
        if not hf.get("attention_bias", True):
            raise CheckpointError(f"{where}: attention_bias=False with GPT-NeoX's always-"
                                  f"biased MLP is not supported")
        # GPT-NeoX rotates int(head_dim * rotary_pct) dims; keep exactly that many.
        rotary_dims = int(head_dim * fraction)
        fields = dict(common, head_dim=head_dim, mlp="plain", norm="layernorm",
                      norm_eps=float(hf.get("layer_norm_eps", 1e-5)), use_bias=True,
                      parallel_residual=bool(hf.get("use_parallel_residual", True)),
                      rotary_fraction=rotary_dims / head_dim,
                      tie_embeddings=bool(hf.get("tie_word_embeddings", False)))
    else:
        raise CheckpointError(f"{where}: model_type={model_type!r} is not supported; known: "
                              f"{LLAMA_TYPES + NEOX_TYPES}")
    fields.update(overrides)
    try:
        return ModelConfig(**fields)
    except ConfigError as e:
        raise CheckpointError(f"{where}: {e}") from e


# --------------------------------------------------------------------------- safetensors


def _safetensor_files(path: pathlib.Path) -> list[pathlib.Path]:
    if path.is_file():
        return [path]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: no 'weight_map' object")
        files = [path / name for name in sorted(set(weight_map.values()))]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{index}: lists shards that are absent: {missing}")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{path}: no *.safetensors files")
    return files


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a file, a directory of files, or a sharded index, as float32 numpy.

    Raises:
      CheckpointError: no files, an absent shard, or a tensor name in two files.
    """
    from safetensors import safe_open

    tensors = {}
    for file in _safetensor_files(pathlib.Path(path)):
        # The flax framework reads bfloat16 too; parameters are kept in float32.
        with safe_open(str(file), framework="flax") as f:
            for name in f.keys():
                if name in tensors:
                    raise CheckpointError(f"{file}: tensor {name!r} also in another file")
                tensors[name] = np.asarray(f.get_tensor(name), dtype=np.float32)
    return tensors


# --------------------------------------------------------------------------- weights


class _Tensors:
    """Tensor lookup that records what was used and names missing tensors."""

    def __init__(self, tensors: Mapping[str, np.ndarray], where: str):
        self.tensors, self.where, self.used = tensors, where, set()

    def __call__(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in self.tensors:
            raise CheckpointError(f"{self.where}: missing tensor {name!r}")
        value = self.tensors[name]
        if value.shape != shape:
            raise CheckpointError(f"{self.where}: tensor {name!r} has shape {value.shape}, "
                                  f"expected {shape} from config.json")
        self.used.add(name)
        return value

    def check_all_used(self):
        extra = sorted(n for n in self.tensors if n not in self.used and not _BUFFERS.search(n))
        if extra:
            raise CheckpointError(f"{self.where}: tensors the decoder has no place for: "
                                  f"{extra[:8]}{' ...' if len(extra) > 8 else ''}")


def _llama_params(c: ModelConfig, get: _Tensors) -> dict:
    d, n, k, h, f = c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff
    params = {"embed": {"embedding": get("model.embed_tokens.weight", (c.vocab_size, d))},
              "ln_final": {"scale": get("model.norm.weight", (d,))}}
    for i in range(c.n_layers):
        p = f"model.layers.{i}."

        def heads_in(name, heads):
            out = {"kernel": get(p + name + ".weight", (heads * h, d)).T.reshape(d, heads, h)}
            if c.use_bias:
                out["bias"] = get(p + name + ".bias", (heads * h,)).reshape(heads, h)
            return out

        def dense(name, n_in, n_out):
            out = {"kernel": get(p + name + ".weight", (n_out, n_in)).T}
            if c.use_bias:
                out["bias"] = get(p + name + ".bias", (n_out,))
            return out

        attn = {"query": heads_in("self_attn.q_proj", n), "key": heads_in("self_attn.k_proj", k),
                "value": heads_in("self_attn.v_proj", k),
                "out": {"kernel": get(p + "self_attn.o_proj.weight", (d, n * h)).T.reshape(
                    n, h, d)}}
        if c.use_bias:
            attn["out"]["bias"] = get(p + "self_attn.o_proj.bias", (d,))
        params[f"block_{i}"] = {
            "ln_attn": {"scale": get(p + "input_layernorm.weight", (d,))},
            "ln_mlp": {"scale": get(p + "post_attention_layernorm.weight", (d,))},
            "attn": attn,
            "mlp": {"wi_gate": dense("mlp.gate_proj", d, f), "wi_up": dense("mlp.up_proj", d, f),
                    "wo": dense("mlp.down_proj", f, d)}}
    if not c.tie_embeddings:
        params["unembed"] = {"kernel": get("lm_head.weight", (c.vocab_size, d)).T}
    return params


def _neox_params(c: ModelConfig, get: _Tensors) -> dict:
    d, n, h, f = c.d_model, c.n_heads, c.head_dim, c.d_ff

    def norm(name):
        return {"scale": get(name + ".weight", (d,)), "bias": get(name + ".bias", (d,))}

    params = {"embed": {"embedding": get("gpt_neox.embed_in.weight", (c.vocab_size, d))},
              "ln_final": norm("gpt_neox.final_layer_norm")}
    for i in range(c.n_layers):
        p = f"gpt_neox.layers.{i}."
        # The fused projection is laid out per head: rows [head][q | k | v][head_dim].
        qkv_w = get(p + "attention.query_key_value.weight", (3 * n * h, d)).reshape(n, 3, h, d)
        qkv_b = get(p + "attention.query_key_value.bias", (3 * n * h,)).reshape(n, 3, h)
        attn = {name: {"kernel": qkv_w[:, j].transpose(2, 0, 1), "bias": qkv_b[:, j]}
                for j, name in enumerate(("query", "key", "value"))}
        attn["out"] = {"kernel": get(p + "attention.dense.weight", (d, n * h)).T.reshape(n, h, d),
                       "bias": get(p + "attention.dense.bias", (d,))}
        params[f"block_{i}"] = {
            "ln_attn": norm(p + "input_layernorm"), "ln_mlp": norm(p + "post_attention_layernorm"),
            "attn": attn,
            "mlp": {"wi": {"kernel": get(p + "mlp.dense_h_to_4h.weight", (f, d)).T,
                           "bias": get(p + "mlp.dense_h_to_4h.bias", (f,))},
                    "wo": {"kernel": get(p + "mlp.dense_4h_to_h.weight", (d, f)).T,
                           "bias": get(p + "mlp.dense_4h_to_h.bias", (d,))}}}
    if not c.tie_embeddings:
        params["unembed"] = {"kernel": get("embed_out.weight", (c.vocab_size, d)).T}
    return params


def convert_params(tensors: Mapping[str, np.ndarray], config: ModelConfig, model_type: str,
                   where: str = "checkpoint") -> dict:
    """Maps HF-named tensors ([out, in] torch layout) onto the lmscale parameter tree.

    Args:
      tensors: name -> float array, as `read_safetensors` returns.
      config: the target config (from `config_from_hf`); vocab padding is added here.
      model_type: "llama"/"mistral" or "gpt_neox".
      where: how to name the source in error messages.
    Returns:
      unboxed float32 params whose structure and shapes equal `Decoder(config)`'s.
    Raises:
      CheckpointError: a missing, misshapen or unused tensor (named).
    """
    if model_type in LLAMA_TYPES:
        build = _llama_params
        # Checkpoints of the bare LlamaModel have no "model." prefix.
        tensors = {(n if n.startswith("model.") or n.startswith("lm_head.") else "model." + n): v
                   for n, v in tensors.items()}
    elif model_type in NEOX_TYPES:
        build = _neox_params
        tensors = {(n if n.startswith("gpt_neox.") or n.startswith("embed_out.")
                    else "gpt_neox." + n): v for n, v in tensors.items()}
    else:
        raise CheckpointError(f"{where}: model_type={model_type!r} is not supported")
    get = _Tensors(tensors, where)
    params = build(config, get)
    get.check_all_used()
    pad = config.padded_vocab_size - config.vocab_size
    if pad:
        params["embed"]["embedding"] = np.pad(params["embed"]["embedding"], ((0, pad), (0, 0)))
        if "unembed" in params:
            params["unembed"]["kernel"] = np.pad(params["unembed"]["kernel"], ((0, 0), (0, pad)))
    expected = nn.unbox(abstract_params(config))["params"]
    want = {jax.tree_util.keystr(p): x.shape
            for p, x in jax.tree_util.tree_leaves_with_path(expected)}
    got = {jax.tree_util.keystr(p): x.shape
           for p, x in jax.tree_util.tree_leaves_with_path(params)}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))
        raise CheckpointError(f"{where}: converted parameters differ from the decoder's: {diff}")
    return jax.tree.map(lambda x: np.ascontiguousarray(x, dtype=np.float32), params)


def load_checkpoint(path: str | os.PathLike, config: ModelConfig | None = None,
                    **overrides) -> tuple[ModelConfig, dict]:
    """Imports a LLaMA- or GPT-NeoX-layout safetensors checkpoint.

    Args:
      path: a directory with config.json and *.safetensors (or a sharded index), or one
        .safetensors file (its config.json is looked for beside it).
      config: use this instead of mapping config.json; the layout is then taken from
        config.json when present, else guessed from the tensor names.
      **overrides: `ModelConfig` fields to set on the mapped config (e.g. dtype).
    Returns:
      (config, params): params is an unboxed float32 tree for
      `Decoder(config).apply({"params": params}, tokens)`.
    Raises:
      CheckpointError: no config, unsupported options, missing or unexpected tensors.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    config_file = (path if path.is_dir() else path.parent) / "config.json"
    hf = json.loads(config_file.read_text()) if config_file.is_file() else None
    tensors = read_safetensors(path)
    if hf is not None:
        model_type = hf.get("model_type")
    elif any(n.startswith("gpt_neox.") for n in tensors):
        model_type = "gpt_neox"
    else:
        model_type = "llama"
    if config is None:
        if hf is None:
            raise CheckpointError(f"{config_file}: not found; pass config= explicitly")
        config = config_from_hf(hf, where=str(config_file), **overrides)
    elif overrides:
        config = config.replace(**overrides)
    return config, convert_params(tensors, config, model_type, where=str(path))
