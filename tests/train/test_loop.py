"""The loop on the embedded corpus: run directory, metrics, checkpoints, restore, errors."""
import json

import jax
import numpy as np
import pytest

from lmscale import train as train_pkg
from lmscale.models.config import ConfigError, ModelConfig
from lmscale.testing import tiny_config
from lmscale.train import checkpoints, loop, metrics, optim
from lmscale.train import spec as spec_lib
from lmscale.train.record import RunRecord
from lmscale.train import state as state_lib

SPEC = spec_lib.RunSpec(tiny_config(vocab_size=259, vocab_pad_multiple=128), seq_len=32,
                        batch_size=8, num_tokens=10 * 256, seed=3)
OPT = optim.OptimizerConfig(warmup_steps=2)
LOOP = loop.LoopConfig(log_every_steps=1, eval_every_steps=5, eval_batches=2,
                       checkpoint_every_tokens=4 * 256, save_every_steps=3,
                       peak_flops_per_device=1e10, async_checkpointing=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("runs")
    info = loop.train(SPEC, str(workdir), OPT, state_lib.MeshConfig(data=2, fsdp=2, tensor=2),
                      LOOP)
    return workdir / SPEC.name, info


@pytest.mark.slow
def test_run_directory_contract(run):
    run_dir, info = run
    assert isinstance(info, RunRecord) and RunRecord.load(run_dir) == info
    on_disk = train_pkg.run_info(run_dir)  # the dict compatibility path
    assert on_disk == json.loads(json.dumps(info.to_dict()))
    assert info.loss_unit == "nats/byte" and info.mesh == {"data": 2, "fsdp": 2, "tensor": 2}
    assert info.checkpoints == [4, 8, 10] and info.flops == info.flops_at(10)
    assert on_disk["status"] == "done" and on_disk["num_steps"] == 10
    assert on_disk["num_tokens"] == 2560 and on_disk["tokens_per_step"] == 256
    assert on_disk["flops"] == 6 * on_disk["num_params_non_embedding"] * 2560
    assert ModelConfig(**on_disk["model_config"]) == SPEC.model  # float32 on CPU
    assert (run_dir / "config.gin").read_text()
    assert list((run_dir / "tensorboard").iterdir())


@pytest.mark.slow
def test_metrics_rows_and_lr_minimum_at_last_step(run):
    run_dir, _ = run
    rows = metrics.read_metrics(run_dir)
    train_rows = [r for r in rows if metrics.TRAIN_LOSS in r]
    assert [r["step"] for r in train_rows] == list(range(1, 11))
    lrs = [r[metrics.LEARNING_RATE] for r in train_rows]  # lr used by steps 0..9
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(OPT.lr_peak, rel=1e-6)
    assert lrs[-1] == pytest.approx(OPT.lr_peak * OPT.lr_min_ratio, rel=1e-5)
    assert min(lrs[2:]) == lrs[-1]
    assert train_rows[-1][metrics.TOKENS_SEEN] == 2560
    assert all(r[metrics.TOKENS_PER_S] > 0 and 0 < r[metrics.MFU] for r in train_rows[1:])
    valid = [r for r in rows if metrics.valid_loss_name("validation") in r]
    assert [r["step"] for r in valid] == [5, 10]
    assert np.isfinite(valid[-1][metrics.valid_loss_name("validation")])
    assert train_rows[-1][metrics.TRAIN_LOSS] < train_rows[0][metrics.TRAIN_LOSS]


@pytest.mark.slow
def test_eval_checkpoints_kept_and_params_restore_on_any_mesh(run):
    run_dir, _ = run
    assert checkpoints.list_eval_checkpoints(run_dir) == [4, 8, 10]
    single = checkpoints.restore_params(run_dir, 10)
    mesh = state_lib.make_mesh(state_lib.MeshConfig(data=1, fsdp=4, tensor=2))
    sharded = checkpoints.restore_params(run_dir, 10, mesh=mesh)
    assert tuple(sharded["embed"]["embedding"].sharding.spec) == ("tensor", "fsdp")
    for a, b in zip(jax.tree_util.tree_leaves(single), jax.tree_util.tree_leaves(sharded)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    earlier = checkpoints.restore_params(run_dir, 4)
    assert not np.array_equal(earlier["embed"]["embedding"], single["embed"]["embedding"])
    with pytest.raises(FileNotFoundError, match="no checkpoint at step 5"):
        checkpoints.restore_params(run_dir, 5)


@pytest.mark.slow
def test_finished_run_is_skipped(run):
    run_dir, info = run
    again = loop.train(SPEC, str(run_dir.parent), OPT, state_lib.MeshConfig(), LOOP)
    assert again == info


@pytest.mark.parametrize("kwargs, match", [
    (dict(mesh=state_lib.MeshConfig(data=3, fsdp=1, tensor=1)), "data=3"),
    (dict(mesh=state_lib.MeshConfig(data=2, fsdp=2, tensor=2),
          spec=spec_lib.RunSpec(tiny_config(vocab_size=259), seq_len=32, batch_size=6, num_tokens=6400)),
     "RunSpec.batch_size=6"),
    (dict(optimizer=optim.OptimizerConfig(warmup_steps=50)), "OptimizerConfig.warmup_steps=50"),
    (dict(loop=loop.LoopConfig(data_shards=3)), "LoopConfig.data_shards=3"),
])
def test_bad_config_fails_before_anything_is_written(tmp_path, kwargs, match):
    args = dict(spec=SPEC, workdir=str(tmp_path), optimizer=OPT, mesh=state_lib.MeshConfig(),
                loop=LOOP)
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        loop.train(**args)
    assert not list(tmp_path.iterdir())
