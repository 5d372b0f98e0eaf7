"""Sharded train step: 8-device mesh equals one device; noise-scale split is exact."""
import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from lmscale.testing import tiny_config
from lmscale.train import optim
from lmscale.train import spec as spec_lib
from lmscale.train import state as state_lib
from lmscale.train import step as step_lib

BATCH, SEQ = 8, 16


def _batches(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        # Counting sequences from random offsets: learnable, so the loss must fall.
        starts = rng.integers(0, 64, (BATCH, 1))
        toks = ((starts + np.arange(SEQ + 1)) % 64 + 1).astype(np.int32)
        weights = np.ones((BATCH, SEQ), np.int32)
        weights[:, -3:] = 0  # padding must not count
        out.append({"decoder_input_tokens": toks[:, :-1], "decoder_target_tokens": toks[:, 1:],
                    "decoder_loss_weights": weights,
                    "decoder_segment_ids": np.ones((BATCH, SEQ), np.int32),
                    "decoder_positions": np.tile(np.arange(SEQ, dtype=np.int32), (BATCH, 1))})
    return out


def _run(mesh_config, devices, batches, noise_scale=True, z_loss_weight=0.0,
         constrain_activations=False):
    spec = spec_lib.RunSpec(tiny_config(z_loss_weight=z_loss_weight), seq_len=SEQ,
                            batch_size=BATCH, num_tokens=len(batches) * BATCH * SEQ)
    opt = optim.OptimizerConfig(warmup_steps=3 if len(batches) > 4 else 0)
    tx, schedule = optim.make_optimizer(opt, spec.num_steps, spec.model.d_model)
    mesh = state_lib.make_mesh(mesh_config, devices)
    rules = mesh_config.logical_rules()
    _, shardings = state_lib.state_shardings(spec, tx, mesh, rules)
    state = state_lib.create_train_state(spec, tx, opt, mesh, shardings)
    batch_sharding = nn.logical_to_mesh_sharding(PartitionSpec("batch", "length"), mesh, rules)
    train_step = step_lib.make_train_step(spec.model, tx, schedule, mesh, rules, shardings,
                                          batch_sharding, noise_scale=noise_scale,
                                          constrain_activations=constrain_activations)
    losses = []
    for batch in batches:
        state, metrics = train_step(state, batch)
        losses.append(float(metrics["loss"]))
    return np.array(losses), state, metrics


@pytest.mark.slow  # ~10 s alone, ~40 s on 2 shared cores
def test_mesh_2x2x2_matches_single_device_for_20_steps():
    batches = _batches(20)
    single, _, _ = _run(state_lib.MeshConfig(data=1, fsdp=1, tensor=1), jax.devices()[:1],
                        batches)
    sharded, state, _ = _run(state_lib.MeshConfig(data=2, fsdp=2, tensor=2), jax.devices(),
                             batches)
    assert single[-1] < single[0] - 0.1  # it learns
    np.testing.assert_allclose(sharded, single, rtol=1e-5)
    spec = state.params["block_0"]["mlp"]["wi_gate"]["kernel"].sharding.spec
    assert tuple(spec) == ("fsdp", "tensor")


@pytest.mark.slow
def test_noise_scale_split_gives_the_full_batch_gradient():
    batches = _batches(2, seed=1)
    mesh = state_lib.MeshConfig(data=1, fsdp=1, tensor=1)
    split_losses, split_state, m = _run(mesh, jax.devices()[:1], batches, noise_scale=True)
    full_losses, full_state, _ = _run(mesh, jax.devices()[:1], batches, noise_scale=False)
    np.testing.assert_allclose(split_losses, full_losses, rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(split_state.params),
                    jax.tree_util.tree_leaves(full_state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # Halves are noisier than the whole: E|g_half|^2 > E|g_full|^2.
    assert float(m["grad_sq_small"]) > float(m["grad_sq_big"]) > 0
    assert float(m["tokens_small"]) * 2 == float(m["tokens"]) == BATCH * (SEQ - 3)


@pytest.mark.slow
def test_z_loss_is_reported_apart_and_changes_the_update():
    batches = _batches(2, seed=2)
    mesh = state_lib.MeshConfig(data=1, fsdp=1, tensor=1)
    plain, plain_state, plain_m = _run(mesh, jax.devices()[:1], batches, z_loss_weight=0.0)
    zl, z_state, z_m = _run(mesh, jax.devices()[:1], batches, z_loss_weight=1e-2)
    assert float(plain_m["z_loss"]) == 0.0
    assert float(z_m["z_loss"]) > 0.0
    assert plain[0] == pytest.approx(zl[0], rel=1e-6)  # step 0 loss: same params, no z term
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(
        jax.tree_util.tree_leaves(plain_state.params), jax.tree_util.tree_leaves(z_state.params)))
    assert diff > 0.0


@pytest.mark.slow  # ~15 s on 2 shared cores
def test_activation_constraints_on_2x2x2_match_single_device():
    batches = _batches(5, seed=3)
    single, _, _ = _run(state_lib.MeshConfig(data=1, fsdp=1, tensor=1), jax.devices()[:1],
                        batches)
    constrained, _, _ = _run(state_lib.MeshConfig(data=2, fsdp=2, tensor=2), jax.devices(),
                             batches, constrain_activations=True)
    assert single[-1] < single[0]
    np.testing.assert_allclose(constrained, single, rtol=1e-5)
