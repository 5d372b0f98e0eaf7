"""Logical-axis rules: the tiny model's shardings on an 8-device mesh equal a golden table.

The golden table `golden/tiny_partition_specs.json` was written by this file:
`python tests/models/test_sharding.py` (run it after an intended change of the rules or
of the parameter layout, and review the diff).
"""

import json
import os
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmscale.models import Decoder, abstract_params, init_params, sharding
from lmscale.testing import tiny_config, tiny_params

pytestmark = pytest.mark.usefixtures("fast_compiles")

GOLDEN = pathlib.Path(__file__).with_name("golden") / "tiny_partition_specs.json"
MESH_SHAPE = {"data": 2, "fsdp": 2, "tensor": 2}
CONFIGS = {
    "tiny": {},
    "tiny_all_options": dict(qk_norm=True, use_bias=True, norm="layernorm",
                             tie_embeddings=False, mlp="plain"),
}


def _mesh():
    return sharding.make_mesh(MESH_SHAPE)


def _table(config, mesh):
    """{parameter path: {"logical": [...], "mesh": [...]}} under the default rules."""
    logical = nn.get_partition_spec(abstract_params(config))
    physical = nn.logical_to_mesh_sharding(logical, mesh, sharding.rules())
    table = {}
    for (path, spec), (_, named) in zip(jax.tree_util.tree_leaves_with_path(logical),
                                        jax.tree_util.tree_leaves_with_path(physical)):
        table[jax.tree_util.keystr(path)] = {
            "logical": list(spec),
            "mesh": [list(a) if isinstance(a, tuple) else a for a in named.spec]}
    return table


def _tables():
    mesh = _mesh()
    return {name: _table(tiny_config(**overrides), mesh) for name, overrides in CONFIGS.items()}


def test_partition_specs_equal_golden_table():
    assert len(jax.devices()) == 8
    golden = json.loads(GOLDEN.read_text())
    assert _tables() == golden


def test_every_parameter_uses_known_logical_axes_and_divides_the_mesh():
    mesh = _mesh()
    for overrides in CONFIGS.values():
        config = tiny_config(**overrides)
        shapes = nn.unbox(abstract_params(config))
        for path, entry in _table(config, mesh).items():
            assert set(entry["logical"]) <= set(sharding.LOGICAL_AXES), path
        physical = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract_params(config)),
                                               mesh, sharding.rules())
        for leaf, named in zip(jax.tree.leaves(shapes), jax.tree.leaves(physical)):
            # shard_shape raises when a dimension is not divisible by its mesh axes.
            assert np.prod(named.shard_shape(leaf.shape)) * 8 >= np.prod(leaf.shape)


def test_rules_overrides_and_errors():
    table = dict(sharding.rules([("embed", None), ("batch", "data")]))
    assert table["embed"] is None and table["batch"] == "data" and table["mlp"] == "tensor"
    assert set(table) == set(sharding.LOGICAL_AXES)
    with pytest.raises(ValueError, match="unknown logical axis 'width'"):
        sharding.rules([("width", "tensor")])
    with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
        sharding.rules([("mlp", "model")])


def test_make_mesh_is_auto_and_checks_its_shape():
    mesh = sharding.make_mesh({"data": 4, "tensor": 2})
    assert dict(mesh.shape) == {"data": 4, "fsdp": 1, "tensor": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    with pytest.raises(ValueError, match="product 4 != 8 devices"):
        sharding.make_mesh((2, 2, 1))
    with pytest.raises(ValueError, match="unknown mesh axes"):
        sharding.make_mesh({"model": 8})


def test_sharded_init_and_forward_equal_single_device():
    """The trainer's path: abstract init -> logical specs -> mesh shardings -> jitted init."""
    config = tiny_config(qk_norm=True, n_layers=1)  # one block keeps the 8-way compile short
    params = tiny_params(config, seed=3)
    tokens = jax.random.randint(jax.random.PRNGKey(0), (8, 16), 0, 256, jnp.int32)
    single = jax.jit(lambda p, t: Decoder(config).apply({"params": p}, t))(params, tokens)
    mesh, rules = _mesh(), sharding.rules()
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract_params(config)),
                                            mesh, rules)
    batch_sharding = nn.logical_to_mesh_sharding(
        jax.sharding.PartitionSpec("batch", "length"), mesh, rules)

    @jax.jit
    def forward(p, t):
        return Decoder(config).apply({"params": p}, t)

    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        boxed = jax.jit(lambda r: init_params(config, r), out_shardings=shardings)(
            jax.random.PRNGKey(3))
        params_sharded = nn.unbox(boxed)["params"]
        sharded = forward(params_sharded, jax.device_put(tokens, batch_sharding))
    kernel = params_sharded["block_0"]["mlp"]["wi_gate"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    for a, b in zip(jax.tree.leaves(params_sharded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_allclose(sharded, single, atol=1e-5, rtol=0)


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(_tables(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
