"""Tests for lmscale.data.vocab and tools/train_tokenizer.py."""
import importlib.util
import pathlib

import pytest

from lmscale.data import corpora
from lmscale.data import vocab as vocab_lib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_tool():
    spec = importlib.util.spec_from_file_location("train_tokenizer",
                                                  ROOT / "tools" / "train_tokenizer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_byte_vocabulary_offsets_bytes_by_three():
    v = vocab_lib.get_vocabulary("byte")
    assert v.vocab_size == 259 and v.eos_id == 1 and v.pad_id == 0
    assert list(v.encode("ab")) == [ord("a") + 3, ord("b") + 3]
    assert v.decode(v.encode("import os\n")) == "import os\n"


def test_unknown_spec_is_named():
    with pytest.raises(ValueError, match="wordpiece"):
        vocab_lib.get_vocabulary("wordpiece")
    with pytest.raises(ValueError, match="not found"):
        vocab_lib.get_vocabulary("/no/such/file.model")


def test_trained_sentencepiece_bpe_round_trips_and_compresses(tmp_path):
    tool = _load_tool()
    docs = corpora.stdlib_texts("train")[:40]
    path = tool.train(docs, vocab_size=600, output=str(tmp_path / "bpe"))
    v = vocab_lib.get_vocabulary(path)
    assert v.vocab_size == 600 and v.pad_id == 0 and v.eos_id == 1
    text = "def f(x):\n    return x + 1\n"
    ids = v.encode(text)
    assert v.decode(ids) == text
    assert len(ids) < len(text.encode())  # BPE merges: fewer tokens than bytes.
    assert vocab_lib.vocab_key(path).startswith("bpe_")


def test_tokenizers_json_adapter(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.train_from_iterator(["import os\nimport sys\n"] * 50, trainer=trainer)
    path = tmp_path / "tok.json"
    tok.save(str(path))
    v = vocab_lib.get_vocabulary(f"tokenizers:{path}")
    assert v.eos_id == 0  # GPT-NeoX convention: <|endoftext|> is id 0.
    ids = v.encode("import sys\n")
    assert v.decode(ids) == "import sys\n"
    import tensorflow as tf
    assert v.encode_tf(tf.constant("import sys\n")).numpy().tolist() == list(ids)
