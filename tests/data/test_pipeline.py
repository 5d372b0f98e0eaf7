"""Tests for lmscale.data.pipeline.LMStream: shapes, determinism, resume, shards."""
import json

import numpy as np
import pytest

from lmscale.data import corpora
from lmscale.data import pipeline

TASK = corpora.STDLIB_TASK


def _take(stream, n):
    return [next(stream) for _ in range(n)]


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in pipeline.FEATURES)


def test_batches_have_packed_decoder_features():
    (batch,) = _take(pipeline.LMStream(TASK, "train", 48, 3, seed=0), 1)
    assert set(batch) == set(pipeline.FEATURES)
    for value in batch.values():
        assert value.shape == (3, 48) and value.dtype == np.int32
    tgt, inp = batch["decoder_target_tokens"], batch["decoder_input_tokens"]
    seg, pos = batch["decoder_segment_ids"], batch["decoder_positions"]
    # Inputs are targets shifted right within each segment (BOS = 0 at position 0).
    assert np.array_equal(inp[:, 1:][pos[:, 1:] > 0], tgt[:, :-1][pos[:, 1:] > 0])
    assert np.all(inp[pos == 0] == 0)
    assert np.array_equal(batch["decoder_loss_weights"], (tgt != 0).astype(np.int32))
    assert np.all((seg > 0) == (tgt != 0))


def test_same_seed_same_stream_other_seed_differs():
    a = _take(pipeline.LMStream(TASK, "train", 32, 2, seed=7), 3)
    b = _take(pipeline.LMStream(TASK, "train", 32, 2, seed=7), 3)
    c = _take(pipeline.LMStream(TASK, "train", 32, 2, seed=8), 3)
    assert all(_same(x, y) for x, y in zip(a, b))
    assert not all(_same(x, y) for x, y in zip(a, c))


def test_resume_from_state_reproduces_uninterrupted_stream():
    straight = _take(pipeline.LMStream(TASK, "train", 32, 2, seed=3), 10)
    first = pipeline.LMStream(TASK, "train", 32, 2, seed=3)
    head = _take(first, 4)
    state = json.loads(json.dumps(first.state()))  # must survive JSON
    assert state["batches_consumed"] == 4
    resumed = pipeline.LMStream(TASK, "train", 32, 2, seed=3).restore(state)
    tail = _take(resumed, 6)
    assert all(_same(x, y) for x, y in zip(straight, head + tail))
    via_arg = _take(pipeline.LMStream(TASK, "train", 32, 2, seed=3, start_batch=4), 1)
    assert _same(via_arg[0], straight[4])


def test_restore_rejects_state_of_another_stream():
    state = pipeline.LMStream(TASK, "train", 32, 2, seed=3).state()
    with pytest.raises(ValueError, match="'seed'"):
        pipeline.LMStream(TASK, "train", 32, 2, seed=4).restore(state)


def test_validation_pass_is_finite_and_covers_every_byte():
    files = corpora.stdlib_files()["validation"]
    expected = sum(len(t.encode("utf-8")) + 1 for t in corpora.stdlib_texts("validation"))
    batches = list(pipeline.LMStream(TASK, "validation", 512, 8, seed=0, repeat=False))
    assert all(b["decoder_target_tokens"].shape == (8, 512) for b in batches)
    assert sum(int(b["decoder_loss_weights"].sum()) for b in batches) == expected
    assert len(files) > 1


def test_shards_are_disjoint_and_cover_the_split():
    def pieces(shard, num_shards):
        stream = pipeline.LMStream(TASK, "validation", 1 << 15, 4, seed=0, repeat=False,
                                   pack=False, shard_index=shard, num_shards=num_shards)
        rows = [r for b in stream for r in b["decoder_target_tokens"] if r.any()]
        return [r[r > 0].tobytes() for r in rows]

    a, b, whole = pieces(0, 2), pieces(1, 2), pieces(0, 1)
    assert a and b and not set(a) & set(b)
    assert sorted(a + b) == sorted(whole)


def test_unpacked_rows_hold_one_segment():
    (batch,) = _take(pipeline.LMStream(TASK, "train", 64, 4, seed=0, pack=False), 1)
    seg, pos = batch["decoder_segment_ids"], batch["decoder_positions"]
    assert set(np.unique(seg)) <= {0, 1}
    row = seg[0] == 1
    assert np.array_equal(pos[0][row], np.arange(row.sum()))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="shard_index"):
        pipeline.LMStream(TASK, "train", 32, 2, seed=0, shard_index=2, num_shards=2)
    with pytest.raises(ValueError, match="sequence_length"):
        pipeline.LMStream(TASK, "train", 1, 2, seed=0)
