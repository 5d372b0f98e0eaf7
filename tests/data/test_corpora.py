"""Tests for lmscale.data.corpora: the stdlib corpus, local files, C4 and bad input."""
import json
import os

import numpy as np
import pytest
import seqio
import tensorflow_datasets as tfds

from lmscale.data import corpora
from lmscale.data import errors
from lmscale.data import pipeline


def test_stdlib_corpus_size_and_disjoint_split():
    files = corpora.stdlib_files()
    train, val = set(files["train"]), set(files["validation"])
    assert not train & val
    train_bytes = sum(os.path.getsize(p) for p in train)
    val_bytes = sum(os.path.getsize(p) for p in val)
    assert 4_000_000 <= train_bytes + val_bytes <= corpora.STDLIB_MAX_BYTES
    assert val_bytes >= 200_000
    assert not any("site-packages" in p or f"{os.sep}test{os.sep}" in p for p in train | val)


def test_split_is_a_stable_function_of_the_relative_path():
    # Fixed expectations: sha1 does not change between runs or machines.
    assert corpora.stable_unit("abc") == pytest.approx(
        int("a9993e364706816", 16) / 16 ** 15)
    keys = [f"pkg/mod{i}.py" for i in range(2000)]
    share = np.mean([corpora.split_of(k, 0.06) == "validation" for k in keys])
    assert 0.04 < share < 0.08


def test_stdlib_task_is_registered_with_byte_targets():
    task = seqio.get_mixture_or_task(corpora.STDLIB_TASK)
    assert isinstance(task.output_features["targets"].vocabulary, seqio.ByteVocabulary)
    ex = next(task.get_dataset({"targets": 64}, split="validation", shuffle=False)
              .as_numpy_iterator())
    assert 0 < len(ex["targets"]) <= 64


def test_split_to_length_keeps_every_token():
    import tensorflow as tf
    ds = tf.data.Dataset.from_tensor_slices({"targets": tf.ragged.constant(
        [[1, 2, 3, 4, 5, 6, 7], [8, 9]])})
    ds = ds.map(lambda x: {"targets": x["targets"]})
    pieces = [p["targets"].tolist() for p in
              corpora.split_to_length(ds, {"targets": 3}).as_numpy_iterator()]
    assert pieces == [[1, 2, 3], [4, 5, 6], [7], [8, 9]]


def _write(path, text, mode="w"):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode) as f:
        f.write(text)
    return path


def _all_val_tokens(name, vocab_spec="byte"):
    stream = pipeline.LMStream(name, "validation", 32, 2, seed=0, repeat=False,
                               vocab_spec=vocab_spec)
    return sum(int(b["decoder_loss_weights"].sum()) for b in stream)


def test_local_jsonl_corpus_streams_every_record(tmp_path):
    for i in range(30):
        _write(tmp_path / f"d{i:02d}.jsonl",
               "\n".join(json.dumps({"text": f"doc {i} line {j}"}) for j in range(3)) + "\n")
    corpora.register_corpus_task("test_local_jsonl", str(tmp_path / "*.jsonl"),
                                 text_field="text", validation_fraction=0.3)
    val_files = [p for p in sorted(tmp_path.glob("*.jsonl"))
                 if corpora.split_of(p.name, 0.3) == "validation"]
    assert val_files
    expected = sum(len(f"doc {int(p.stem[1:])} line {j}".encode()) + 1  # + EOS
                   for p in val_files for j in range(3))
    assert _all_val_tokens("test_local_jsonl") == expected


@pytest.mark.parametrize("content, mode, match", [
    ('{"text": "ok"}\n{"text": "broken\n', "w", r"bad\.jsonl, line 2: malformed JSON"),
    ('{"text": "ok"}\n{"body": "x"}\n', "w", r"line 2, field 'text': missing field"),
    ('{"text": 3}\n', "w", r"line 1, field 'text': expected str, got int"),
    (b'{"text": "caf\xe9"}\n', "wb", r"line 1: not UTF-8"),
    ('\n\n', "w", r"no JSON records"),
])
def test_bad_jsonl_names_file_line_and_field(tmp_path, content, mode, match):
    for i in range(20):  # enough files that both splits are non-empty
        _write(tmp_path / f"good{i}.jsonl", '{"text": "fine"}\n')
    for split_name in ("train", "validation"):
        bad = tmp_path / f"bad.jsonl"
        _write(bad, content, mode)
        corpora.register_corpus_task("test_bad_jsonl", str(tmp_path / "*.jsonl"),
                                     text_field="text", validation_fraction=0.5)
        split = corpora.split_of("bad.jsonl", 0.5)
        with pytest.raises(errors.DataError, match=match):
            next(pipeline.LMStream("test_bad_jsonl", split, 32, 2, seed=0))


def test_empty_glob_and_empty_file_fail_at_registration(tmp_path):
    with pytest.raises(errors.DataError, match="matches no files"):
        corpora.register_corpus_task("test_empty", str(tmp_path / "*.txt"))
    _write(tmp_path / "a.txt", "")
    with pytest.raises(errors.DataError, match=r"a\.txt: file is empty"):
        corpora.register_corpus_task("test_empty", str(tmp_path / "*.txt"))


def test_non_utf8_text_file_names_line(tmp_path):
    _write(tmp_path / "x.txt", b"line one\nline \xff two\n", "wb")
    corpora.register_corpus_task("test_latin", str(tmp_path / "*.txt"),
                                 validation_fraction=0.0)
    with pytest.raises(errors.DataError, match=r"x\.txt, line 2: not UTF-8"):
        next(pipeline.LMStream("test_latin", "train", 32, 2, seed=0))


def test_unknown_corpus_lists_known_names():
    with pytest.raises(ValueError, match="lmscale_stdlib_py"):
        pipeline.LMStream("no_such_corpus", "train", 32, 2, seed=0)


def test_c4_task_under_mock_data():
    with tfds.testing.mock_data(num_examples=6):
        batch = next(pipeline.LMStream(corpora.C4_TASK, "train", 32, 2, seed=0))
    assert batch["decoder_target_tokens"].shape == (2, 32)
    assert batch["decoder_loss_weights"].sum() > 0
