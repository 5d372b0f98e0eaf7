"""Mesh config checks and the sharded state layout."""
import jax
import numpy as np
import optax
import pytest

from lmscale.models.config import ConfigError
from lmscale.testing import tiny_config
from lmscale.train import optim
from lmscale.train import spec as spec_lib
from lmscale.train import state as state_lib


@pytest.mark.parametrize("mesh, match", [
    (state_lib.MeshConfig(data=3, fsdp=1, tensor=1), "3 devices, but 8"),
    (state_lib.MeshConfig(data=3, fsdp=-1, tensor=1), "MeshConfig.fsdp=-1"),
    (state_lib.MeshConfig(data=2, fsdp=2, tensor=4), "16 devices, but 8"),
])
def test_mesh_not_matching_the_devices_fails_naming_the_axis(mesh, match):
    with pytest.raises(ConfigError, match=match):
        state_lib.make_mesh(mesh)


def test_bad_mesh_fields_fail_at_construction():
    with pytest.raises(ConfigError, match="MeshConfig.tensor"):
        state_lib.MeshConfig(tensor=0)
    with pytest.raises(ConfigError, match="MeshConfig.rules"):
        state_lib.MeshConfig(rules=(("bogus", "data"),))


def test_batch_not_divisible_by_data_x_fsdp_fails():
    config = state_lib.MeshConfig(data=2, fsdp=2, tensor=2)
    mesh = state_lib.make_mesh(config)
    state_lib.check_batch(config, mesh, 8)
    with pytest.raises(ConfigError, match="RunSpec.batch_size=6"):
        state_lib.check_batch(config, mesh, 6)


def test_state_shardings_follow_logical_rules_and_moments_follow_params():
    config = state_lib.MeshConfig(data=2, fsdp=2, tensor=2)
    mesh = state_lib.make_mesh(config)
    spec = spec_lib.RunSpec(tiny_config(d_ff=81), seq_len=16, batch_size=8, num_tokens=1280)
    tx, _ = optim.make_optimizer(optim.OptimizerConfig(warmup_steps=0), spec.num_steps, 32)
    abstract, shardings = state_lib.state_shardings(spec, tx, mesh, config.logical_rules())
    p = shardings.params
    assert tuple(p["embed"]["embedding"].spec) == ("tensor", "fsdp")
    assert tuple(p["block_0"]["attn"]["query"]["kernel"].spec) == ("fsdp", "tensor", None)
    # 81 MLP units do not split over tensor=2: that dim falls back to replicated.
    assert tuple(p["block_0"]["mlp"]["wi_up"]["kernel"].spec) == ("fsdp", None)
    mu = shardings.opt_state[0].mu if hasattr(shardings.opt_state[0], "mu") else None
    adam = [s for s in jax.tree_util.tree_leaves(
        shardings.opt_state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")]
    assert adam, "no Adam state found"
    assert adam[0].mu["embed"]["embedding"] == p["embed"]["embedding"]
    assert adam[0].nu["block_1"]["mlp"]["wo"]["kernel"] == p["block_1"]["mlp"]["wo"]["kernel"]
    assert abstract.params["embed"]["embedding"].shape == (256, 32)
    del mu
    assert np.prod(mesh.devices.shape) == 8


def test_state_shardings_under_mup_multi_transform():
    """muP's optax.multi_transform holds MaskedNodes in its moments; every moment still takes
    its parameter's sharding (this raised a pytree structure error before)."""
    config = state_lib.MeshConfig(data=2, fsdp=2, tensor=2)
    mesh = state_lib.make_mesh(config)
    spec = spec_lib.RunSpec(tiny_config(d_ff=81), seq_len=16, batch_size=8, num_tokens=1280)
    tx, _ = optim.make_optimizer(optim.OptimizerConfig(warmup_steps=0, mup_base_width=16),
                                 spec.num_steps, 32)
    _, shardings = state_lib.state_shardings(spec, tx, mesh, config.logical_rules())
    p = shardings.params
    adam = [s for s in jax.tree_util.tree_leaves(
        shardings.opt_state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")]
    assert len(adam) == 2, "one Adam state per muP group"
    hidden = [a for a in adam if "block_0" in a.mu and not isinstance(
        a.mu["block_0"]["attn"]["query"]["kernel"], optax.MaskedNode)]
    assert hidden, "no Adam state holds the hidden matrices"
    assert hidden[0].nu["block_0"]["attn"]["query"]["kernel"] == \
        p["block_0"]["attn"]["query"]["kernel"]
    base = [a for a in adam if not isinstance(a.mu["embed"]["embedding"], optax.MaskedNode)]
    assert base[0].mu["embed"]["embedding"] == p["embed"]["embedding"]
