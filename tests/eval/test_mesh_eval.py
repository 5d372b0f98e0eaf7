"""Evaluation restored onto the training mesh (8 forced host devices) matches one device.

A tiny run is built on a data=2 x fsdp=2 x tensor=2 mesh (the train state created sharded,
its parameters sharpened so sampled completions pass sometimes, saved by the trainer's
checkpoint code, and a run record naming that mesh). The evaluator restores it twice: onto
the run's mesh (the default) and onto one device; validation loss, multiple-choice scores
and answer losses agree to 1e-5, and PassUntil draws the same samples (same K and passes
per instance) at the same seed. The 8 host devices come from tests/conftest.py, which sets
`--xla_force_host_platform_device_count=8` before JAX starts.
"""

import jax
import numpy as np
import pytest

from lmscale.data import registry
from lmscale.eval import results as R
from lmscale.eval import runner
from lmscale.eval import scorer
from lmscale.testing import tiny_config
from lmscale.train import checkpoints, optim
from lmscale.train import spec as spec_lib
from lmscale.train import state as state_lib
from lmscale.train.record import RunRecord

SPEC = spec_lib.RunSpec(tiny_config(vocab_size=259, max_seq_len=64), seq_len=32,
                        batch_size=8, num_tokens=4 * 256, seed=11, name="mesh_run")
MESH = state_lib.MeshConfig(data=2, fsdp=2, tensor=2)
pytestmark = pytest.mark.usefixtures("fast_compiles")  # subject: placement, not XLA numerics

PU = runner.PassUntilConfig(r=2, k_max=64, batch_size=16, num_slots=8, seed=3,
                            prompts_per_call=4)


def _build_run(workdir):
    opt = optim.OptimizerConfig(warmup_steps=0)
    tx, _ = optim.make_optimizer(opt, SPEC.num_steps, SPEC.model.d_model)
    mesh = state_lib.make_mesh(MESH)
    _, shardings = state_lib.state_shardings(SPEC, tx, mesh, MESH.logical_rules())
    state = state_lib.create_train_state(SPEC, tx, opt, mesh, shardings)
    state = state.replace(params=jax.tree_util.tree_map(lambda x: x * 3.0, state.params))
    run_dir = workdir / SPEC.name
    run_dir.mkdir(parents=True)
    manager = checkpoints.make_manager(run_dir, eval_every_steps=SPEC.num_steps,
                                       num_steps=SPEC.num_steps, async_save=False)
    checkpoints.save(manager, SPEC.num_steps, state, {}, {"step": SPEC.num_steps})
    checkpoints.close(manager)
    RunRecord.from_spec(SPEC, status="done", checkpoint_every_steps=SPEC.num_steps,
                        checkpoints=[SPEC.num_steps], mesh=dict(data=2, fsdp=2, tensor=2)
                        ).save(run_dir)
    return run_dir


def _stream(corpus, split, seq_len, batch_size, vocab_spec):
    rng = np.random.default_rng(0)
    for _ in range(2):
        t = rng.integers(3, 259, (batch_size, seq_len)).astype(np.int32)
        yield {"decoder_target_tokens": t,
               "decoder_input_tokens": np.concatenate([np.zeros_like(t[:, :1]), t[:, :-1]], 1),
               "decoder_loss_weights": np.ones_like(t),
               "decoder_positions": np.broadcast_to(np.arange(seq_len), t.shape).copy(),
               "decoder_segment_ids": np.ones_like(t)}


def _tasks():
    mc = [registry.Instance(f"m{i}", f"Q{i}: pick", choices=(" a", " bb", " ccc"), gold=i % 3)
          for i in range(4)]
    gen = [registry.Instance(f"g{i}", f"say {i}:", target=t) for i, t in enumerate("aeiou")]
    return [registry.EvalTask("mesh_mc", registry.MULTIPLE_CHOICE, None, 1 / 3, (), 1,
                              loader=lambda split: mc),
            registry.EvalTask("mesh_gen", registry.GENERATIVE, "contains", 0.0, ("\n",), 4,
                              loader=lambda split: gen)]


def _evaluate(run_dir, results_path, mesh):
    seen = []
    base = runner.train_source()

    def restore(d, step, config, mesh=None):
        params = base.restore_params(d, step, config, mesh)
        seen.append(params["block_0"]["mlp"]["wi_gate"]["kernel"].sharding)
        return params

    source = runner.CheckpointSource(base.load_record, base.list_steps, restore)
    results = runner.evaluate([str(run_dir)], _tasks(), results_path=str(results_path),
                              source=source, passuntil_config=PU, stream_factory=_stream,
                              validation=runner.ValidationConfig(batch_size=4), mesh=mesh)
    return {(r.task, r.metric, r.instance): r for r in results.rows}, seen


@pytest.mark.slow
def test_restored_on_the_training_mesh_matches_one_device(tmp_path, monkeypatch):
    assert jax.device_count() == 8
    run_dir = _build_run(tmp_path)
    placed = []
    batch_sharding = scorer.batch_sharding
    monkeypatch.setattr(scorer, "batch_sharding",
                        lambda params, b: placed.append(batch_sharding(params, b)) or placed[-1])
    sharded, seen = _evaluate(run_dir, tmp_path / "mesh.jsonl", mesh=None)
    # Validation batches (4 rows) split over data x fsdp = 4 shards, not replicated.
    assert placed and all(tuple(p.spec) == (("data", "fsdp"), None) for p in placed)
    assert seen[0].mesh.shape == {"data": 2, "fsdp": 2, "tensor": 2}
    assert tuple(seen[0].spec) == ("fsdp", "tensor")  # the train state's sharding
    one = jax.make_mesh((1, 1, 1), state_lib.MESH_AXES, devices=jax.devices()[:1],
                        axis_types=(jax.sharding.AxisType.Auto,) * 3)
    placed.clear()
    single, seen = _evaluate(run_dir, tmp_path / "one.jsonl", mesh=one)
    assert seen[0].mesh.size == 1 and placed and all(p is None for p in placed)
    assert sharded.keys() == single.keys()
    for key, row in single.items():
        other = sharded[key]
        assert other.value == pytest.approx(row.value, rel=1e-5, abs=1e-6), key
        if key[1] == R.INSTANCE and key[0] == "mesh_gen":
            for name in ("num_samples", "num_passes", "capped", "seed", "k_max"):
                assert other.detail[name] == row.detail[name], (key, name)
            for name in (R.ANSWER_LOSS, R.ANSWER_LOSS_SUM):
                assert other.detail[name] == pytest.approx(row.detail[name], rel=1e-5)
        elif key[1] == R.INSTANCE:
            np.testing.assert_allclose(other.detail["loglik"], row.detail["loglik"],
                                       rtol=1e-5)
    gen = [r.detail for k, r in single.items() if k[0] == "mesh_gen" and k[1] == R.INSTANCE]
    assert len(gen) == 5 and not all(d["capped"] for d in gen)  # samples do pass
    assert single[(R.VALIDATION_TASK, R.VALIDATION_LOSS, None)].value > 0


def test_batch_sharding_splits_rows_over_the_data_axes_only_when_they_divide():
    mesh = state_lib.make_mesh(MESH)
    w = jax.device_put(np.ones((4, 4), np.float32), jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec("fsdp", "tensor")))
    assert tuple(scorer.batch_sharding({"w": w}, 8).spec) == (("data", "fsdp"), None)
    assert scorer.batch_sharding({"w": w}, 6) is None  # 6 rows over 4 data shards
    assert scorer.batch_sharding({"w": np.ones(3)}, 8) is None  # not on a mesh
