"""Damaged checkpoints and diverging runs: real faults on disk and in real training.

A finished 10-step run (kept steps 4, 8, 10) is copied per test; the data files of step 10 are
then truncated, garbled or removed, and the run is resumed or restored.
"""
import json
import logging
import shutil

import jax
import numpy as np
import pytest

from lmscale import train as train_pkg
from lmscale.testing import tiny_config
from lmscale.train import checkpoints, loop, optim
from lmscale.train import spec as spec_lib
from lmscale.train import state as state_lib

SPEC = spec_lib.RunSpec(tiny_config(vocab_size=259), seq_len=32, batch_size=8,
                        num_tokens=10 * 256, seed=5)
OPT = optim.OptimizerConfig(warmup_steps=2)
LOOP = loop.LoopConfig(log_every_steps=5, eval_batches=1, checkpoint_every_tokens=4 * 256,
                       save_every_steps=2, peak_flops_per_device=1e10,
                       async_checkpointing=False, noise_scale=False)
MESH = state_lib.MeshConfig(data=2, fsdp=-1, tensor=1)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs")
    loop.train(SPEC, str(workdir), OPT, MESH, LOOP)
    run_dir = workdir / SPEC.name
    params = checkpoints.restore_params(run_dir, 10)
    return run_dir, params


def _copy(finished, tmp_path, status="running"):
    run_dir = tmp_path / "runs" / SPEC.name
    shutil.copytree(finished[0], run_dir)
    info = train_pkg.run_info(run_dir)
    (run_dir / "run.json").write_text(json.dumps(dict(info, status=status)))
    return run_dir


def _damage_step(run_dir, step, how):
    """Damages every tensor data file of the step (orbax spreads arrays over several)."""
    files = [p for p in (run_dir / "checkpoints" / str(step) / "state").rglob("*")
             if p.is_file() and "/d/" in p.as_posix()]
    assert files
    for path in files:
        _damage(path, how)


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 16]))
    elif how == "garble":
        # One byte in every 4 KiB flipped (the file holds params and both Adam moments):
        # orbax alone restores wrong numbers without an error.
        for i in range(len(data) // 16, len(data), 4096):
            data[i] ^= 0x5A
        path.write_bytes(bytes(data))
    elif how == "remove":
        path.unlink()
    else:
        raise ValueError(how)


def _assert_same(a, b):
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_finished_run_keeps_eval_steps_and_an_empty_trash(finished):
    run_dir, _ = finished
    assert checkpoints.list_eval_checkpoints(run_dir) == [4, 8, 10]
    root = run_dir / "checkpoints"
    assert sorted(p.name for p in root.iterdir() if p.name.isdigit()) == ["10", "4", "8"]
    assert not list((root / checkpoints.TRASH_DIR).iterdir())  # step 2, 6 were retired
    assert not list(root.glob("*orbax-checkpoint-tmp*"))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncate", "garble", "remove"])
def test_damaged_checkpoint_named_by_restore_params(finished, tmp_path, how):
    run_dir = _copy(finished, tmp_path)
    _damage_step(run_dir, 10, how)
    with pytest.raises(checkpoints.CorruptCheckpointError, match=str(run_dir / "checkpoints" / "10")):
        checkpoints.restore_params(run_dir, 10)
    earlier = checkpoints.restore_params(run_dir, 8)  # the others are untouched
    assert np.all(np.isfinite(earlier["embed"]["embedding"]))


@pytest.mark.slow
def test_garbled_meta_is_named_by_restore_params(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    meta = run_dir / "checkpoints" / "10" / "meta" / "metadata"
    meta.write_text(meta.read_text()[:20])
    with pytest.raises(checkpoints.CorruptCheckpointError, match="checkpoints/10"):
        checkpoints.restore_params(run_dir, 10)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["truncate", "garble"])
def test_resume_skips_a_damaged_latest_and_retrains_to_the_same_params(
        finished, tmp_path, how, caplog):
    run_dir = _copy(finished, tmp_path)
    _damage_step(run_dir, 10, how)
    with caplog.at_level(logging.WARNING):
        info = loop.train(SPEC, str(run_dir.parent), OPT, MESH, LOOP)
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(str(run_dir / "checkpoints" / "10") in m and "damaged" in m for m in warned)
    assert info.status == "done"
    quarantined = list((run_dir / "checkpoints" / checkpoints.CORRUPT_DIR).iterdir())
    assert [p.name.split(".")[0] for p in quarantined] == ["10"]
    # Steps 9-10 were retrained from step 8: the rewritten step 10 equals the original.
    _assert_same(checkpoints.restore_params(run_dir, 10), finished[1])
    assert checkpoints.list_eval_checkpoints(run_dir) == [4, 8, 10]


@pytest.mark.slow
def test_no_restorable_checkpoint_is_an_error_and_moves_nothing(finished, tmp_path):
    run_dir = _copy(finished, tmp_path)
    for step in (4, 8, 10):
        _damage_step(run_dir, step, "truncate")
    with pytest.raises(checkpoints.CorruptCheckpointError, match="no checkpoint restores"):
        loop.train(SPEC, str(run_dir.parent), OPT, MESH, LOOP)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) \
        == ["10", "4", "8"]


def _poisoned_stream(poison_batch):
    real = loop._stream  # pylint: disable=protected-access

    def stream(spec, task, split, rows, shard, num_shards, *, repeat, start_batch=0):
        it = real(spec, task, split, rows, shard, num_shards, repeat=repeat,
                  start_batch=start_batch)
        if split != "train":
            yield from it
            return
        for i, batch in enumerate(it, start=start_batch):
            if i == poison_batch:
                # Token ids past the vocabulary (a corrupt shard): real NaN logits.
                batch = dict(batch, decoder_target_tokens=np.full_like(
                    batch["decoder_target_tokens"], 10 ** 6))
            yield batch
    return stream


@pytest.mark.slow
def test_nan_loss_stops_the_run_naming_step_and_last_good_checkpoint(tmp_path, monkeypatch):
    # Batch index 6 feeds step 7 (metrics numbering); saves at 2, 4, 6 come before it.
    monkeypatch.setattr(loop, "_stream", _poisoned_stream(6))
    run_dir = tmp_path / SPEC.name
    with pytest.raises(loop.TrainingDivergedError) as err:
        loop.train(SPEC, str(tmp_path), OPT, MESH, LOOP)
    message = str(err.value)
    assert "step 7" in message and "loss=nan" in message
    assert f"{run_dir / 'checkpoints' / '6'} (step 6)" in message
    info = train_pkg.run_info(run_dir)
    assert info["status"] == "failed" and info["failed_step"] == 7
    assert info["last_good_checkpoint"] == 6 and info["failure"] == message
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [4, 6]  # nothing saved after the bad step (save_every_steps=2 -> 8)
    params = checkpoints.restore_params(run_dir, 6)  # intact and verified
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(params))
