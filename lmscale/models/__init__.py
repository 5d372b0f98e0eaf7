"""lmscale.models: the decoder, its configuration, shape families and parameter counts."""

from lmscale.models.config import ConfigError, ModelConfig, ParamCount, count_params
from lmscale.models.decoder import (Decoder, KVCache, Prefix, abstract_params,
                                    cache_bytes_per_slot, init_cache, init_params, z_loss)

__all__ = ["ConfigError", "ModelConfig", "ParamCount", "count_params", "Decoder", "KVCache",
           "Prefix", "abstract_params", "cache_bytes_per_slot", "init_cache", "init_params", "z_loss"]
