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

import seqio

from lmscale.data import hf_vocab

BYTE = "byte"
TOKENIZERS_PREFIX = "tokenizers:"
HF_PREFIX = "hf:"
TokenizersVocabulary = hf_vocab.TokenizersVocabulary  # its home is hf_vocab


@functools.lru_cache(maxsize=None)
def get_vocabulary(spec: str = BYTE) -> seqio.Vocabulary:
    """The vocabulary named by `spec` (see the module docstring); cached per spec.

    Raises:
      ValueError: `spec` is none of the known forms, or names a file that does not exist.
    """
    if spec == BYTE:
        return seqio.ByteVocabulary()
    if spec.startswith(TOKENIZERS_PREFIX):
        return hf_vocab.TokenizersVocabulary(spec[len(TOKENIZERS_PREFIX):])
    if spec.startswith(HF_PREFIX):
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
