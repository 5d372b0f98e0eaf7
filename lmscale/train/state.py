"""Device mesh and sharded train state.

Stage: train. Consumes a `MeshConfig`, a `RunSpec` and an optimizer; produces the mesh,
the `TrainState` created directly in its sharded layout, and the shardings every jitted
step uses. The recipe (STYLE.md §4): abstract init -> logical partition specs -> mesh
shardings (via the model's logical-axis rules) -> `jax.jit(init, out_shardings=...)`, so no
full copy of the parameters ever lives on one device.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from lmscale.config_check import check_fields
from lmscale.models import sharding as sharding_lib
from lmscale.models.config import ConfigError
from lmscale.models.decoder import init_params
from lmscale.train import optim
from lmscale.train.spec import RunSpec

MESH_AXES = sharding_lib.MESH_AXES


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh shape over all devices of all processes; -1 on one axis means "the rest".

    Attributes:
      data: pure data-parallel replicas.
      fsdp: data parallel with parameters and optimizer state sharded (ZeRO-3).
      tensor: Megatron-style tensor parallelism of heads / MLP / vocab.
      rules: overrides of `lmscale.models.sharding.DEFAULT_RULES`, pairs
        (logical axis, mesh axis or tuple of mesh axes or None).
    """

    data: int = 1
    fsdp: int = -1
    tensor: int = 1
    rules: tuple = ()

    def __post_init__(self):
        check_fields(self, ConfigError)
        sizes = [getattr(self, a) for a in MESH_AXES]
        for axis, size in zip(MESH_AXES, sizes):
            if not isinstance(size, int) or (size < 1 and size != -1):
                raise ConfigError(f"MeshConfig.{axis}={size!r}: must be a positive int or -1")
        if sizes.count(-1) > 1:
            raise ConfigError(f"MeshConfig data={self.data}, fsdp={self.fsdp}, "
                              f"tensor={self.tensor}: at most one axis may be -1")
        try:
            sharding_lib.rules(tuple(tuple(r) for r in self.rules))
        except ValueError as e:
            raise ConfigError(f"MeshConfig.rules: {e}") from None

    def shape(self, num_devices: int) -> tuple[int, int, int]:
        """(data, fsdp, tensor) sizes for `num_devices` devices.

        Raises:
          ConfigError: the mesh does not divide / match the device count.
        """
        sizes = [getattr(self, a) for a in MESH_AXES]
        known = int(np.prod([s for s in sizes if s != -1]))
        if -1 in sizes:
            if num_devices % known:
                axis = MESH_AXES[sizes.index(-1)]
                raise ConfigError(
                    f"MeshConfig.{axis}=-1 (data={self.data}, fsdp={self.fsdp}, "
                    f"tensor={self.tensor}): the other axes' product {known} does not "
                    f"divide the device count {num_devices}")
            sizes[sizes.index(-1)] = num_devices // known
        if int(np.prod(sizes)) != num_devices:
            raise ConfigError(
                f"MeshConfig data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} = "
                f"{int(np.prod(sizes))} devices, but {num_devices} are available")
        return tuple(sizes)

    def logical_rules(self) -> tuple:
        return sharding_lib.rules(tuple(tuple(r) for r in self.rules))


def make_mesh(config: MeshConfig, devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = config.shape(len(devices))
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)


def check_batch(config: MeshConfig, mesh: jax.sharding.Mesh, batch_size: int) -> None:
    """Raises ConfigError when the global batch does not split over the batch axes."""
    rules = dict(config.logical_rules())
    axes = rules.get("batch") or ()
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    ways = int(np.prod([mesh.shape[a] for a in axes])) if axes else 1
    if batch_size % ways:
        raise ConfigError(
            f"RunSpec.batch_size={batch_size} is not divisible by the batch mesh axes "
            f"{axes} of total size {ways} (MeshConfig data x fsdp)")


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs besides the data position.

    step: [] int32 optimizer steps done. params: unboxed float32 pytree. opt_state: optax
    state (mirrors params). rng: [2] uint32 key for any per-step randomness (folded with
    step), checkpointed so a resumed run draws the same numbers.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array


def fit_sharding(sharding: NamedSharding, shape: tuple[int, ...]) -> NamedSharding:
    """Drops mesh axes from dims they do not divide (e.g. 80 MLP units over 3 devices),
    replicating that dim instead of failing: ladders mix widths."""
    spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
    for i, axes in enumerate(spec):
        if axes is None:
            continue
        names = (axes,) if isinstance(axes, str) else tuple(axes)
        ways = int(np.prod([sharding.mesh.shape[a] for a in names]))
        if shape[i] % ways:
            spec[i] = None
    return NamedSharding(sharding.mesh, PartitionSpec(*spec))


def param_shardings(spec: RunSpec, mesh: jax.sharding.Mesh, rules) -> tuple[Any, Any]:
    """(abstract unboxed params, their NamedShardings) from the model's logical axes."""
    boxed = jax.eval_shape(lambda r: init_params(spec.model, r), jax.random.PRNGKey(0))["params"]
    logical = nn.get_partition_spec(boxed)
    abstract = nn.unbox(boxed)
    mesh_shardings = nn.logical_to_mesh_sharding(logical, mesh, rules)
    shardings = jax.tree_util.tree_map(lambda s, a: fit_sharding(s, a.shape), mesh_shardings,
                                       abstract)
    return abstract, shardings


def _key_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _moment_shardings(abstract_opt, abstract_params, p_shardings, replicated):
    """Each optimizer-state leaf takes the sharding of the parameter whose key path ends its
    own path with the same shape (Adam's moments, also inside `optax.multi_transform`,
    whose masked states hold `MaskedNode`s where `tree_map_params` expects parameters);
    every other leaf (counts, scalars) is replicated."""
    by_path = {}
    for (path, a), s in zip(jax.tree_util.tree_flatten_with_path(abstract_params)[0],
                            jax.tree_util.tree_leaves(p_shardings)):
        by_path[_key_names(path)] = (a.shape, s)

    def sharding(path, leaf):
        names = _key_names(path)
        for start in range(len(names)):
            hit = by_path.get(names[start:])
            if hit is not None and hit[0] == leaf.shape:
                return hit[1]
        return replicated
    return jax.tree_util.tree_map_with_path(sharding, abstract_opt)


def state_shardings(spec: RunSpec, tx: optax.GradientTransformation,
                    mesh: jax.sharding.Mesh, rules) -> tuple[TrainState, TrainState]:
    """(abstract TrainState of ShapeDtypeStructs with shardings, TrainState of shardings).

    Optimizer moments take their parameter's sharding; scalars are replicated.
    """
    abstract_params, p_shardings = param_shardings(spec, mesh, rules)
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_shardings = _moment_shardings(abstract_opt, abstract_params, p_shardings, replicated)
    shardings = TrainState(step=replicated, params=p_shardings, opt_state=opt_shardings,
                           rng=replicated)
    abstract = TrainState(step=jax.ShapeDtypeStruct((), np.int32), params=abstract_params,
                          opt_state=abstract_opt,
                          rng=jax.ShapeDtypeStruct((2,), np.uint32))
    abstract = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    return abstract, shardings


def create_train_state(spec: RunSpec, tx: optax.GradientTransformation,
                       optimizer: optim.OptimizerConfig, mesh: jax.sharding.Mesh,
                       shardings: TrainState) -> TrainState:
    """A fresh state, initialised by one jitted call straight into `shardings`.

    Parameters depend only on `spec.seed` (and the muP option), never on the mesh.
    """
    def init(seed_key):
        init_key, state_key = jax.random.split(seed_key)
        params = nn.unbox(init_params(spec.model, init_key))["params"]
        params = optim.scale_init(optimizer, spec.model.d_model, params)
        return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                          opt_state=tx.init(params), rng=state_key)

    return jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(spec.seed))
