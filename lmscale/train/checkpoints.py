"""Checkpoints of a run: orbax CheckpointManager with items `state`, `data`, `meta`.

Stage: train. The trainer saves (a) a checkpoint every K steps (K from "every so many
tokens") plus the final step, all kept, for loss-vs-performance curves over training (Du et
al. evaluate every ~43B tokens), and (b) the latest one, for resume, with the data-stream
position (`data`) and step/tokens/run summary (`meta`); the RNG lives in the state. The
evaluator reads checkpoints read-only through `list_eval_checkpoints` / `restore_params`,
onto any mesh or one device: restores always target an abstract, sharded tree.

Layout: `<run_dir>/checkpoints/<step>/{state,data,meta}`; `<run_dir>/run.json` records
`checkpoint_every_steps` and `num_steps`, which define the evaluation checkpoints.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import flax.linen as nn
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from lmscale.models import sharding as sharding_lib
from lmscale.models.config import ModelConfig
from lmscale.models.decoder import init_params
from lmscale.train import RUN_FILE, run_info  # noqa: F401  (re-exported)
from lmscale.train.state import fit_sharding

CHECKPOINT_DIR = "checkpoints"
ITEMS = ("state", "data", "meta")


def make_manager(run_dir: str | pathlib.Path, *, eval_every_steps: int, num_steps: int,
                 async_save: bool = True, read_only: bool = False) -> ocp.CheckpointManager:
    """The run's CheckpointManager.

    Keeps the latest checkpoint (resume), every `eval_every_steps`-th step and the final
    step (evaluation); anything else is deleted once a newer one is saved.
    """
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(1), pp.EveryNSteps(eval_every_steps), pp.CustomSteps([num_steps])])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, enable_async_checkpointing=async_save and not read_only,
        cleanup_tmp_directories=not read_only, read_only=read_only, create=not read_only)
    return ocp.CheckpointManager(pathlib.Path(run_dir).absolute() / CHECKPOINT_DIR,
                                 item_names=ITEMS, options=options)


def save(manager: ocp.CheckpointManager, step: int, state, data: dict, meta: dict) -> None:
    """Saves (asynchronously when the manager is) the three items at `step`."""
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data),
        meta=ocp.args.JsonSave(meta)), force=True)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state) -> tuple[Any, dict, dict]:
    """(state, data, meta) at `step`; `abstract_state` carries the target shardings."""
    out = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
    return out["state"], out["data"], out["meta"]


def _saved_steps(run_dir: pathlib.Path) -> list[int]:
    root = run_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    # Only finalized step directories: orbax writes into a temporary name and renames.
    return sorted(int(p.name) for p in root.iterdir()
                  if p.is_dir() and p.name.isdigit() and (p / "state").is_dir())


def list_eval_checkpoints(run_dir: str | pathlib.Path) -> list[int]:
    """Steps of the checkpoints kept for evaluation (every K steps, and the final one).

    The latest-for-resume checkpoint of an unfinished run is not included unless it falls
    on the evaluation grid.
    """
    run_dir = pathlib.Path(run_dir)
    info = run_info(run_dir)
    every, last = int(info["checkpoint_every_steps"]), int(info["num_steps"])
    return [s for s in _saved_steps(run_dir) if s > 0 and (s % every == 0 or s == last)]


def restore_params(run_dir: str | pathlib.Path, step: int, config: ModelConfig | None = None,
                   mesh: jax.sharding.Mesh | None = None, rules=None):
    """The parameters saved at `step`, read-only, unboxed.

    Args:
      run_dir: a run directory (holds run.json and checkpoints/).
      step: a saved step (see `list_eval_checkpoints`).
      config: the model config; default from run.json.
      mesh: place parameters sharded over this (data, fsdp, tensor) mesh with the model's
        logical rules (`rules`, default `lmscale.models.sharding.rules()`); default: the
        first local device, unsharded.

    Returns:
      A float32 pytree usable as `Decoder(config).apply({"params": params}, ...)`.
    """
    run_dir = pathlib.Path(run_dir)
    if config is None:
        config = ModelConfig(**run_info(run_dir)["model_config"])
    if step not in _saved_steps(run_dir):
        raise FileNotFoundError(f"{run_dir / CHECKPOINT_DIR}: no checkpoint at step {step}; "
                                f"saved steps: {_saved_steps(run_dir)}")
    boxed = jax.eval_shape(lambda r: init_params(config, r), jax.random.PRNGKey(0))["params"]
    abstract = nn.unbox(boxed)
    if mesh is None:
        device = jax.local_devices()[0]
        shardings = jax.tree_util.tree_map(
            lambda _: jax.sharding.SingleDeviceSharding(device), abstract)
    else:
        rules = sharding_lib.rules() if rules is None else rules
        shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
        shardings = jax.tree_util.tree_map(lambda s, a: fit_sharding(s, a.shape),
                                           shardings, abstract)
    target = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    # Partial restore: only the params subtree is read, not the optimizer moments.
    item = {"params": target}
    checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler())
    restored = checkpointer.restore(
        run_dir / CHECKPOINT_DIR / str(step) / "state",
        args=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
            partial_restore=True))
    return restored["params"]

