"""Data stage: vocabularies as `seqio.Vocabulary` objects, chosen by a short spec string.

Specs:
  "byte"                      seqio.ByteVocabulary (259 ids: pad 0, eos 1, unk 2, byte b -> b+3).
  "/path/to/model.model"      any SentencePiece model (e.g. one from tools/train_tokenizer.py).
  "tokenizers:/path/tok.json" a Hugging Face `tokenizers` JSON file (GPT-NeoX / Pythia).
  "hf:/path/to/checkpoint"    a Hugging Face checkpoint's tokenizer.json (or the file), EOS
                              from its tokenizer config (`hf_vocab.HFVocabulary`).

Consumed by `corpora.py` (task output features), `pipeline.py` and the evaluator, which
tokenises prompts and choices itself.
"""
from __future__ import annotations

import functools
import os
from typing import Sequence

import numpy as np
import seqio
import tensorflow as tf

BYTE = "byte"
TOKENIZERS_PREFIX = "tokenizers:"
HF_PREFIX = "hf:"


class TokenizersVocabulary(seqio.Vocabulary):
    """A `tokenizers` JSON vocabulary behind the seqio interface.

    Ids are the file's own ids (so imported GPT-NeoX/Pythia checkpoints line up). seqio
    reserves id 0 for padding; in the GPT-NeoX file id 0 is "<|endoftext|>", so its EOS
    doubles as padding and gets no loss weight in the feature converter, which matches
    how those models treat document ends.

    Args:
      path: the tokenizer JSON file.
      eos_token: the token that ends a document; its id is `eos_id`.
    """

    def __init__(self, path: str, eos_token: str = "<|endoftext|>"):
        import tokenizers  # Imported here: an optional dependency.

        if not os.path.isfile(path):
            raise ValueError(f"tokenizers vocabulary file not found: {path}")
        self._path = path
        self._tok = tokenizers.Tokenizer.from_file(path)
        self._eos_id = self._tok.token_to_id(eos_token)
        unk = getattr(self._tok.model, "unk_token", None)
        self._unk_id = self._tok.token_to_id(unk) if unk else None
        super().__init__(extra_ids=0)

    @property
    def eos_id(self) -> int | None:
        return self._eos_id

    @property
    def unk_id(self) -> int | None:
        return self._unk_id

    @property
    def _base_vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def _encode(self, s: str) -> Sequence[int]:
        return self._tok.encode(s, add_special_tokens=False).ids

    def _decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
        # tf.data calls this on scalar strings; a py_function keeps the Rust tokenizer.
        def enc(x):
            return np.asarray(self._encode(x.numpy().decode("utf-8")), np.int32)

        out = tf.py_function(enc, [s], tf.int32)
        out.set_shape([None])
        return out

    def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
        def dec(x):
            return self._decode(x.numpy().tolist()).encode("utf-8")

        out = tf.py_function(dec, [ids], tf.string)
        out.set_shape([])
        return out

    def __eq__(self, other) -> bool:
        return isinstance(other, TokenizersVocabulary) and other._path == self._path

    def __hash__(self) -> int:
        return hash(("TokenizersVocabulary", self._path))


@functools.lru_cache(maxsize=None)
def get_vocabulary(spec: str = BYTE) -> seqio.Vocabulary:
    """The vocabulary named by `spec` (see the module docstring); cached per spec.

    Raises:
      ValueError: `spec` is none of the known forms, or names a file that does not exist.
    """
    if spec == BYTE:
        return seqio.ByteVocabulary()
    if spec.startswith(TOKENIZERS_PREFIX):
        return TokenizersVocabulary(spec[len(TOKENIZERS_PREFIX):])
    if spec.startswith(HF_PREFIX):
        from lmscale.data import hf_vocab  # imports this module: resolved on use

        return hf_vocab.HFVocabulary(spec[len(HF_PREFIX):])
    if spec.endswith(".model"):
        if not os.path.isfile(spec):
            raise ValueError(f"SentencePiece model not found: {spec}")
        return seqio.SentencePieceVocabulary(spec)
    raise ValueError(f"unknown vocabulary spec {spec!r}; expected 'byte', a SentencePiece "
                     f"'.model' path, '{TOKENIZERS_PREFIX}<path.json>' or "
                     f"'{HF_PREFIX}<checkpoint dir>'")


def vocab_key(spec: str) -> str:
    """A short name-safe key for `spec`, used to suffix seqio task names ("" for byte)."""
    if spec == BYTE:
        return ""
    import hashlib

    stem = os.path.splitext(os.path.basename(spec.split(":", 1)[-1]))[0]
    stem = "".join(c if c.isalnum() else "_" for c in stem)[:24]
    return f"{stem}_{hashlib.sha1(spec.encode()).hexdigest()[:8]}"
