"""Logical axis names and the rules that map them onto the device mesh.

Stage: models. Model code names every parameter and block-boundary activation with the
logical axes below; only the trainer and evaluator turn them into mesh shardings, using
`rules` (overridable from gin). Physical mesh axes are `data`, `fsdp`, `tensor`.
"""

from __future__ import annotations

from typing import Sequence

# The closed set of logical axis names; a new one needs a rule below and a test.
LOGICAL_AXES = ("batch", "length", "embed", "heads", "kv_heads", "head_dim", "mlp", "vocab")
MESH_AXES = ("data", "fsdp", "tensor")

# batch over data x fsdp; parameters' embed dim over fsdp (ZeRO-3 style); the "wide"
# dims over tensor (Megatron style). Everything else replicated.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("length", None),
    ("head_dim", None),
)


def rules(overrides: Sequence[tuple[str, str | tuple[str, ...] | None]] = ()) -> tuple:
    """The default rules with `overrides` replacing entries of the same logical name.

    Raises:
      ValueError: an override names an unknown logical or mesh axis.
    """
    table = dict(DEFAULT_RULES)
    for name, target in overrides:
        if name not in LOGICAL_AXES:
            raise ValueError(f"sharding rule for unknown logical axis {name!r}; "
                             f"known axes: {LOGICAL_AXES}")
        targets = (target,) if isinstance(target, str) else (target or ())
        for t in targets:
            if t not in MESH_AXES:
                raise ValueError(f"sharding rule {name!r} -> {target!r}: unknown mesh axis "
                                 f"{t!r}; mesh axes are {MESH_AXES}")
        table[name] = target
    return tuple(table.items())


def make_mesh(shape: dict[str, int] | Sequence[int], devices=None):
    """A device mesh over `MESH_AXES` whose axes are all `AxisType.Auto`.

    lmscale shards the model GSPMD-style: parameters and block-boundary activations carry
    logical names, the rules turn them into shardings and XLA propagates the rest. That
    needs Auto axes; `jax.make_mesh` now defaults to Explicit axes, under which every
    gather and contraction over a sharded dimension must state its output sharding (the
    embedding lookup fails first). Use this with `jax.set_mesh(mesh)` and
    `flax.linen.logical_axis_rules(rules())`.

    Args:
      shape: sizes of ("data", "fsdp", "tensor"), as a mapping or a sequence in that order;
        their product must equal the number of devices used.
      devices: devices to lay out (default: all of `jax.devices()`).
    Raises:
      ValueError: unknown axis names, wrong number of sizes, or a size product that does
        not match the device count.
    """
    import jax
    from jax.sharding import AxisType

    if isinstance(shape, dict):
        unknown = set(shape) - set(MESH_AXES)
        if unknown:
            raise ValueError(f"make_mesh shape: unknown mesh axes {sorted(unknown)}; "
                             f"mesh axes are {MESH_AXES}")
        sizes = tuple(int(shape.get(name, 1)) for name in MESH_AXES)
    else:
        sizes = tuple(int(s) for s in shape)
        if len(sizes) != len(MESH_AXES):
            raise ValueError(f"make_mesh shape={tuple(shape)}: need one size per mesh axis "
                             f"{MESH_AXES}")
    devices = list(jax.devices() if devices is None else devices)
    product = 1
    for s in sizes:
        product *= s
    if product != len(devices):
        raise ValueError(f"make_mesh shape={dict(zip(MESH_AXES, sizes))}: product {product} "
                         f"!= {len(devices)} devices")
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                         devices=devices)
