"""Test doubles shared by tests and users: tiny model configs and helpers.

Stage: testing. Everything here is small enough to run on 2 CPU cores in seconds.
"""

from lmscale.models.config import ModelConfig


def tiny_config(**overrides) -> ModelConfig:
    """A 2-layer byte-level decoder (~30k parameters) with GQA and partial rotary."""
    base = dict(vocab_size=256, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=80,
                rotary_fraction=0.5, max_seq_len=64, name="tiny")
    base.update(overrides)
    return ModelConfig(**base)
