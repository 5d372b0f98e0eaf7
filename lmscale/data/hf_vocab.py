"""Data stage: `tokenizers` JSON vocabularies behind the seqio interface.

`TokenizersVocabulary` (spec "tokenizers:<file.json>") wraps one file; `HFVocabulary` adds
what a Hugging Face checkpoint's `tokenizer.json` needs (its EOS from the files beside it).

Spec "hf:<path>" (`vocab.get_vocabulary`): `<path>` is a checkpoint directory holding
`tokenizer.json`, or the `tokenizer.json` file itself. Ids are the file's own ids, so they
line up with the checkpoint's embedding table (`lmscale.models.convert`). Text is encoded
without the tokenizer's post-processor (no BOS/EOS added): the pipeline appends EOS and the
evaluator prepends its own start id.

The end-of-sequence token is read from the checkpoint's files next to `tokenizer.json`, in
this order: `tokenizer_config.json` "eos_token", `special_tokens_map.json` "eos_token",
`config.json` "eos_token_id"; then the first of `FALLBACK_EOS_TOKENS` in the vocabulary.

The `tokenizers` package is imported only when such a vocabulary is built.
"""
from __future__ import annotations

import json
import os
import pathlib
from typing import Sequence

import numpy as np
import seqio
import tensorflow as tf

TOKENIZER_FILE = "tokenizer.json"
FALLBACK_EOS_TOKENS = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")


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



class HFTokenizerError(ValueError):
    """A tokenizer.json (or the file naming its EOS token) is missing or malformed; the
    message names the file."""


def tokenizer_file(path: str | pathlib.Path) -> pathlib.Path:
    """`path` itself when it is a file, else `<path>/tokenizer.json`; raises
    HFTokenizerError naming the file when it does not exist."""
    path = pathlib.Path(path)
    file = path if path.is_file() else path / TOKENIZER_FILE
    if not file.is_file():
        raise HFTokenizerError(f"{file}: no such file (an 'hf:' vocabulary needs the "
                               f"checkpoint's {TOKENIZER_FILE})")
    return file


def _read_json(file: pathlib.Path) -> dict | None:
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HFTokenizerError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise HFTokenizerError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def _token_text(value, file: pathlib.Path) -> str | None:
    """An "eos_token" entry: a string, or an AddedToken dict with "content"."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise HFTokenizerError(f"{file}: field 'eos_token'={value!r} is neither a string nor an "
                           f"object with a 'content' string")


def find_eos_id(tok, directory: pathlib.Path) -> tuple[int, str]:
    """(eos id, where it was found) for tokenizer `tok` of the checkpoint in `directory`.

    Raises:
      HFTokenizerError: a config names an EOS token the vocabulary lacks, an id outside
        it, or nothing names one and no fallback token is present.
    """
    size = tok.get_vocab_size(with_added_tokens=True)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        file = directory / name
        token = _token_text((_read_json(file) or {}).get("eos_token"), file)
        if token is not None:
            eos = tok.token_to_id(token)
            if eos is None:
                raise HFTokenizerError(f"{file}: eos_token {token!r} is not in "
                                       f"{directory / TOKENIZER_FILE}")
            return eos, f"{file} eos_token={token!r}"
    file = directory / "config.json"
    eos = (_read_json(file) or {}).get("eos_token_id")
    if isinstance(eos, list):  # some configs list several; the first ends a document
        eos = eos[0] if eos else None
    if eos is not None:
        if isinstance(eos, bool) or not isinstance(eos, int) or not 0 <= eos < size:
            raise HFTokenizerError(f"{file}: eos_token_id={eos!r} is not an id of the "
                                   f"{size}-token vocabulary")
        return eos, f"{file} eos_token_id={eos}"
    for token in FALLBACK_EOS_TOKENS:
        eos = tok.token_to_id(token)
        if eos is not None:
            return eos, f"token {token!r} of the vocabulary"
    raise HFTokenizerError(
        f"{directory}: no EOS token: none of tokenizer_config.json / special_tokens_map.json "
        f"'eos_token', config.json 'eos_token_id', nor any of {list(FALLBACK_EOS_TOKENS)} "
        f"in {TOKENIZER_FILE}")


def find_start_id(tok, directory: pathlib.Path) -> int | None:
    """The id the checkpoint's model expects first in every sequence (its BOS), when its
    tokenizer adds one: tokenizer_config.json "add_bos_token" true (LLaMA) with its
    "bos_token", else config.json "bos_token_id" under the same flag; None otherwise
    (GPT-NeoX/Pythia add none: the evaluator's default start id 0, "<|endoftext|>")."""
    file = directory / "tokenizer_config.json"
    conf = _read_json(file) or {}
    if not conf.get("add_bos_token"):
        return None
    token = conf.get("bos_token")
    token = token.get("content") if isinstance(token, dict) else token
    if isinstance(token, str) and tok.token_to_id(token) is not None:
        return int(tok.token_to_id(token))
    bos = (_read_json(directory / "config.json") or {}).get("bos_token_id")
    return bos if isinstance(bos, int) and not isinstance(bos, bool) else None


class HFVocabulary(TokenizersVocabulary):
    """A checkpoint's `tokenizer.json` behind the seqio interface (spec "hf:<path>").

    Args:
      path: the checkpoint directory or its tokenizer.json.

    Raises:
      HFTokenizerError: tokenizer.json is missing or malformed, or no EOS token is found
        (the message names the file).
    """

    def __init__(self, path: str | pathlib.Path):  # pylint: disable=super-init-not-called
        import tokenizers  # An optional dependency.

        file = tokenizer_file(path)
        _read_json(file)  # a JSON error names the file before the Rust parser sees it
        try:
            tok = tokenizers.Tokenizer.from_file(str(file))
        except Exception as e:  # the Rust parser raises a bare Exception
            raise HFTokenizerError(f"{file}: not a tokenizers JSON file ({e})") from None
        self._path = str(file)
        self._tok = tok
        self._eos_id, self.eos_source = find_eos_id(tok, file.parent)
        # The evaluator prepends `start_id` to every scored context and prompt (None: 0).
        self.start_id = find_start_id(tok, file.parent)
        unk = getattr(tok.model, "unk_token", None)
        self._unk_id = tok.token_to_id(unk) if unk else None
        # seqio.Vocabulary.__init__ directly: the parent's would reload the file.
        super(TokenizersVocabulary, self).__init__(extra_ids=0)

    def __eq__(self, other) -> bool:
        return isinstance(other, HFVocabulary) and other._path == self._path

    def __hash__(self) -> int:
        return hash(("HFVocabulary", self._path))
