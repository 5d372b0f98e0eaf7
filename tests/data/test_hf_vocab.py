"""The "hf:" vocabulary: a checkpoint's tokenizer.json behind seqio, EOS from its configs."""

import json

import numpy as np
import pytest
import tensorflow as tf

from lmscale.data import hf_vocab
from lmscale.data import vocab as vocab_lib

tokenizers = pytest.importorskip("tokenizers")

TEXTS = ["the cat sat on the mat", "a dog ran to the hat", "the bird sang over the barn"]


def _tokenizer(directory, special=("<pad>", "</s>", "<|endoftext|>")):
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, tokenizers.trainers.BpeTrainer(
        vocab_size=280, special_tokens=list(special), show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet()))
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    return tok


def test_encode_decode_and_eos_from_tokenizer_config(tmp_path):
    tok = _tokenizer(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": {"content": "</s>", "lstrip": False}}))
    vocab = vocab_lib.get_vocabulary(f"hf:{tmp_path}")
    assert isinstance(vocab, hf_vocab.HFVocabulary)
    assert vocab.eos_id == tok.token_to_id("</s>") == 1
    assert vocab.vocab_size == tok.get_vocab_size()
    text = "the cat ran over the barn"
    ids = vocab.encode(text)
    assert ids == tok.encode(text, add_special_tokens=False).ids and len(ids) < len(text)
    assert vocab.decode(ids) == text
    # The tf path (seqio's pipeline) gives the same ids.
    tf_ids = vocab.encode_tf(tf.constant(text)).numpy().tolist()
    assert tf_ids == ids
    # The file itself is accepted too, and names the same vocabulary.
    assert hf_vocab.HFVocabulary(tmp_path / "tokenizer.json") == vocab


def test_eos_sources_in_order(tmp_path):
    tok = _tokenizer(tmp_path)
    # No tokenizer_config.json: special_tokens_map.json, then config.json, then fallbacks.
    (tmp_path / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<pad>"}))
    assert hf_vocab.HFVocabulary(tmp_path).eos_id == 0
    (tmp_path / "special_tokens_map.json").unlink()
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": [2, 1]}))
    assert hf_vocab.HFVocabulary(tmp_path).eos_id == 2
    (tmp_path / "config.json").unlink()
    got = hf_vocab.HFVocabulary(tmp_path)
    assert got.eos_id == tok.token_to_id("<|endoftext|>") and "<|endoftext|>" in got.eos_source


def test_errors_name_the_file(tmp_path):
    with pytest.raises(hf_vocab.HFTokenizerError, match=f"{tmp_path}/tokenizer.json: no such"):
        vocab_lib.get_vocabulary(f"hf:{tmp_path}")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(hf_vocab.HFTokenizerError, match="tokenizer.json: not valid JSON"):
        hf_vocab.HFVocabulary(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "Nonsense"}}))
    with pytest.raises(hf_vocab.HFTokenizerError, match="tokenizer.json: not a tokenizers"):
        hf_vocab.HFVocabulary(tmp_path)
    _tokenizer(tmp_path, special=("<pad>",))
    with pytest.raises(hf_vocab.HFTokenizerError, match="no EOS token"):
        hf_vocab.HFVocabulary(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<nope>"}))
    with pytest.raises(hf_vocab.HFTokenizerError,
                       match="tokenizer_config.json: eos_token '<nope>'"):
        hf_vocab.HFVocabulary(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    (tmp_path / "config.json").write_text(json.dumps({"eos_token_id": 10**6}))
    with pytest.raises(hf_vocab.HFTokenizerError, match="config.json: eos_token_id=1000000"):
        hf_vocab.HFVocabulary(tmp_path)


def test_vocab_key_is_name_safe(tmp_path):
    key = vocab_lib.vocab_key(f"hf:{tmp_path}/pythia-70m/step143000")
    assert key.startswith("step143000_") and all(c.isalnum() or c == "_" for c in key)
    assert np.unique([vocab_lib.vocab_key(f"hf:{tmp_path}/{m}/step1") for m in "ab"]).size == 2


def test_start_id_is_the_bos_only_when_the_tokenizer_adds_one(tmp_path):
    from lmscale.eval import runner
    tok = _tokenizer(tmp_path, special=("<unk>", "<s>", "</s>"))
    # GPT-NeoX style: no add_bos_token -> the evaluator's default start id 0.
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    vocab = hf_vocab.HFVocabulary(tmp_path)
    assert vocab.start_id is None and runner._start_id(vocab) == 0
    # LLaMA style: add_bos_token with "<s>" (id 1) -> every context starts with 1.
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "</s>", "bos_token": {"content": "<s>"}, "add_bos_token": True}))
    vocab = hf_vocab.HFVocabulary(tmp_path)
    assert vocab.start_id == tok.token_to_id("<s>") == 1 and runner._start_id(vocab) == 1
    # The bos token missing from the vocabulary: config.json's bos_token_id.
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "</s>", "bos_token": "<bos>", "add_bos_token": True}))
    (tmp_path / "config.json").write_text(json.dumps({"bos_token_id": 2}))
    assert hf_vocab.HFVocabulary(tmp_path).start_id == 2
    # lmscale's own vocabularies have no start_id: 0, the training shift token.
    assert runner._start_id(vocab_lib.get_vocabulary("byte")) == 0
