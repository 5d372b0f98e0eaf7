"""Test doubles shared by tests and users: tiny model configs and helpers.

Stage: testing. Everything here is small enough to run on 2 CPU cores in seconds.
"""

from __future__ import annotations

from lmscale.models.config import ModelConfig


def tiny_config(**overrides) -> ModelConfig:
    """A 2-layer byte-level decoder (~30k parameters) with GQA and partial rotary."""
    base = dict(vocab_size=256, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=80,
                rotary_fraction=0.5, max_seq_len=64, name="tiny")
    base.update(overrides)
    return ModelConfig(**base)


def tiny_params(config: ModelConfig | None = None, seed: int = 0):
    """Unboxed float32 parameters of `Decoder(config)` (default `tiny_config()`).

    Initialised under `jax.jit` (one compile instead of op-by-op dispatch), so a test pays
    well under a second for it on CPU.

    Returns:
      the `params` collection, ready for `Decoder(config).apply({"params": params}, ...)`.
    """
    import flax.linen as nn
    import jax

    from lmscale.models.decoder import init_params

    config = tiny_config() if config is None else config
    variables = jax.jit(lambda rng: init_params(config, rng))(jax.random.PRNGKey(seed))
    return nn.unbox(variables)["params"]


STUDY_ROW_PROMPT_LEN = 64
STUDY_ROW_NEW_TOKENS = 8


def study_row_config() -> ModelConfig:
    """The benchmarks' "study row" model: the shape of the default study's rungs (byte
    vocabulary of 259, d_model 64, 2 layers, GQA 4/2, partial rotary), sized for a
    64-token prompt and 8 new tokens."""
    return ModelConfig(vocab_size=259, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                       d_ff=160, mlp="gated", activation="gelu", rotary_fraction=0.5,
                       tie_embeddings=True,
                       max_seq_len=STUDY_ROW_PROMPT_LEN + STUDY_ROW_NEW_TOKENS,
                       name="bench-study")


def random_prompts(num: int, length: int = STUDY_ROW_PROMPT_LEN, vocab_size: int = 259,
                   seed: int = 0) -> list:
    """`num` int32 prompts of `length` ids drawn uniformly from [3, vocab_size), seeded."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab_size, length).astype(np.int32) for _ in range(num)]


# A program that forks sleeping children until fork fails (at most 200) and prints how
# many it made: a sandbox's process cap holds when the count stays under the cap.
FORK_COUNTER_PROGRAM = ("import os, time\n"
                        "n = 0\n"
                        "for _ in range(200):\n"
                        "    try:\n"
                        "        pid = os.fork()\n"
                        "    except OSError:\n"
                        "        break\n"
                        "    if pid == 0:\n"
                        "        time.sleep(30)\n"
                        "        os._exit(0)\n"
                        "    n += 1\n"
                        "print(n)\n")


def mock_tfds_records(records):
    """`tfds.testing.mock_data` that serves `records` (dicts of features, with at most
    nested dicts of equal-length lists) as every split of every TFDS builder, for tests
    of TFDS-backed tasks: use as a context manager."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    def columns(rows):
        if isinstance(rows[0], dict):
            return {k: columns([r[k] for r in rows]) for k in rows[0]}
        return rows

    def as_dataset(self, *args, **kwargs):
        del self, args, kwargs
        return tf.data.Dataset.from_tensor_slices(columns(records))
    return tfds.testing.mock_data(as_dataset_fn=as_dataset)
