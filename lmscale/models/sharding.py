"""Logical axis names and the rules that map them onto the device mesh.

Stage: models. Model code names every parameter and block-boundary activation with the
logical axes below; only the trainer and evaluator turn them into mesh shardings, using
`rules` (overridable from gin). Physical mesh axes are `data`, `fsdp`, `tensor`.
"""

from __future__ import annotations

from typing import Sequence

# The closed set of logical axis names; a new one needs a rule below and a test.
LOGICAL_AXES = ("batch", "length", "embed", "heads", "kv_heads", "head_dim", "mlp", "vocab",
                "layers", "cache_length")
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
    ("layers", None),
    ("cache_length", None),
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
