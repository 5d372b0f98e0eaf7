"""lmscale.models: the decoder, its configuration, shape families and parameter counts."""

from lmscale.models.config import ConfigError, ModelConfig, ParamCount, count_params
from lmscale.models.decoder import (Decoder, KVCache, Prefix, abstract_params,
                                    cache_bytes_per_slot, init_cache, init_params, z_loss)
from lmscale.models.convert import CheckpointError, config_from_hf, load_checkpoint
from lmscale.models.families import (FAMILIES, du2024, family_sizes, gadre2024, get_family,
                                     hu2023, open_lm_reported_params, tiny)

__all__ = ["ConfigError", "ModelConfig", "ParamCount", "count_params", "Decoder", "KVCache",
           "Prefix", "abstract_params", "cache_bytes_per_slot", "init_cache", "init_params", "z_loss",
           "FAMILIES", "du2024", "family_sizes", "gadre2024", "get_family", "hu2023",
           "open_lm_reported_params", "tiny", "CheckpointError", "config_from_hf",
           "load_checkpoint"]
