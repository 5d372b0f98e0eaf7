"""Checkpoints of a run: orbax CheckpointManager with items `state`, `data`, `meta`.

Stage: train. The trainer saves (a) a checkpoint every K steps (K from "every so many
tokens") plus the final step, all kept, for loss-vs-performance curves over training (Du et
al. evaluate every ~43B tokens), and (b) the latest one, for resume, with the data-stream
position (`data`) and step/tokens/run summary (`meta`); the RNG lives in the state. The
evaluator reads checkpoints read-only through `list_eval_checkpoints` / `restore_params`,
onto any mesh or one device: restores always target an abstract, sharded tree.

Layout: `<run_dir>/checkpoints/<step>/{state,data,meta}`; `<run_dir>/run.json` records
`checkpoint_every_steps` and `num_steps`, which define the evaluation checkpoints.

Crash safety (docs/reliability.md): orbax writes each step into `<step>.orbax-checkpoint-tmp*`
and renames it to `<step>` only once every item is written, so a process killed mid-write
leaves a temporary directory that is never listed and is removed on the next start. Old
steps are retired by an atomic rename into `checkpoints/trash/` (emptied before each save)
rather than deleted in place, so a kill during deletion cannot leave a half-deleted step
that looks finished. Every save records a fingerprint of the state in `meta`; a restore
recomputes it, so a truncated or garbled file is detected (orbax itself would return
garbled float data silently). Resume falls back to the newest checkpoint that verifies and
moves the bad ones into `checkpoints/corrupt/`.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from lmscale.models import sharding as sharding_lib
from lmscale.models.config import ModelConfig
from lmscale.models.decoder import init_params
from lmscale.train import RUN_FILE, run_info  # noqa: F401  (re-exported)
from lmscale.train.state import fit_sharding

CHECKPOINT_DIR = "checkpoints"
ITEMS = ("state", "data", "meta")
TRASH_DIR = "trash"      # retired steps, renamed here atomically, emptied before each save
CORRUPT_DIR = "corrupt"  # steps that failed verification on resume, kept for inspection
FINGERPRINT = "fingerprint"  # meta key: {leaf path: uint32 fingerprint}


class CorruptCheckpointError(RuntimeError):
    """A checkpoint exists but cannot be read back intact; the message names its path."""


def make_manager(run_dir: str | pathlib.Path, *, eval_every_steps: int, num_steps: int,
                 async_save: bool = True, read_only: bool = False) -> ocp.CheckpointManager:
    """The run's CheckpointManager.

    Keeps the latest checkpoint (resume), every `eval_every_steps`-th step and the final
    step (evaluation); anything else is moved to `checkpoints/trash/` once a newer one is
    saved. A writable manager removes temporary directories of interrupted saves.
    """
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(1), pp.EveryNSteps(eval_every_steps), pp.CustomSteps([num_steps])])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, enable_async_checkpointing=async_save and not read_only,
        cleanup_tmp_directories=not read_only, read_only=read_only, create=not read_only,
        todelete_subdir=TRASH_DIR)
    return ocp.CheckpointManager(pathlib.Path(run_dir).absolute() / CHECKPOINT_DIR,
                                 item_names=ITEMS, options=options)


def _path_name(path) -> str:
    return "/".join(str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k))))
                    for k in path)


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
    """sum_i bits_i * (2 i + 1) mod 2^32 over the leaf's raw bits (uint32 words).

    The odd weights are invertible mod 2^32, so changing any one word always changes the
    result; integer sums are exact in any order, so it is independent of the sharding.
    """
    if x.dtype == jnp.bool_:
        words = x.astype(jnp.uint32)
    elif x.dtype.itemsize >= 4:
        words = jax.lax.bitcast_convert_type(x, jnp.uint32)
    else:
        words = jax.lax.bitcast_convert_type(
            x, jnp.dtype(f"uint{8 * x.dtype.itemsize}")).astype(jnp.uint32)
    weights = jnp.arange(words.size, dtype=jnp.uint32).reshape(words.shape) * 2 + 1
    return jnp.sum(words * weights, dtype=jnp.uint32)


_fingerprint_leaves = jax.jit(lambda leaves: [_leaf_fingerprint(x) for x in leaves])


def fingerprint(tree) -> dict[str, int]:
    """{leaf path ("params/embed/embedding"): uint32 fingerprint} of an array pytree.

    Computed on device (one jitted reduction per leaf; only scalars leave the devices).
    """
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    values = jax.device_get(_fingerprint_leaves([leaf for _, leaf in flat]))
    return {_path_name(path): int(v) for (path, _), v in zip(flat, values)}


def _verify(tree, meta: dict, where: pathlib.Path) -> None:
    """Raises CorruptCheckpointError when `tree`'s fingerprint differs from the saved one."""
    saved = meta.get(FINGERPRINT)
    if saved is None:
        logging.warning("%s: saved without a fingerprint; contents not verified", where)
        return
    got = fingerprint(tree)
    bad = [k for k, v in got.items() if saved.get(k) != v]
    if bad:
        raise CorruptCheckpointError(
            f"{where}: contents differ from what was saved (fingerprint mismatch in "
            f"{len(bad)} of {len(got)} arrays, e.g. {bad[:3]}); the file is truncated or "
            f"garbled")


def _empty_trash(manager: ocp.CheckpointManager) -> None:
    trash = pathlib.Path(manager.directory) / TRASH_DIR
    if jax.process_index() == 0 and trash.is_dir():
        for entry in trash.iterdir():
            shutil.rmtree(entry, ignore_errors=True)


def save(manager: ocp.CheckpointManager, step: int, state, data: dict, meta: dict) -> None:
    """Saves (asynchronously when the manager is) the three items at `step`.

    `meta` gains the state's fingerprint, checked on every restore.
    """
    # orbax's save waits for the previous save (and its deletions) anyway; waiting first
    # lets the trash be emptied while nothing is being renamed into it.
    manager.wait_until_finished()
    _empty_trash(manager)
    meta = dict(meta, **{FINGERPRINT: fingerprint(state)})
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data),
        meta=ocp.args.JsonSave(meta)), force=True)


def close(manager: ocp.CheckpointManager) -> None:
    """Waits for the last save, empties the trash and closes the manager."""
    manager.wait_until_finished()
    _empty_trash(manager)
    manager.close()


def restore(manager: ocp.CheckpointManager, step: int, abstract_state) -> tuple[Any, dict, dict]:
    """(state, data, meta) at `step`; `abstract_state` carries the target shardings.

    Raises:
      CorruptCheckpointError: unreadable or fingerprint mismatch (names the step directory).
    """
    where = pathlib.Path(manager.directory) / str(step)
    try:
        out = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax / tensorstore raise many kinds for damaged files
        raise CorruptCheckpointError(f"{where}: cannot be restored: {type(e).__name__}: "
                                     f"{str(e)[:500]}") from e
    if not isinstance(out["meta"], dict) or not isinstance(out["data"], dict):
        raise CorruptCheckpointError(f"{where}: meta/data items are not JSON objects")
    _verify(out["state"], out["meta"], where)
    return out["state"], out["data"], out["meta"]


def restore_latest(manager: ocp.CheckpointManager,
                   abstract_state) -> tuple[int, Any, dict, dict] | None:
    """(step, state, data, meta) of the newest checkpoint that restores intact, or None.

    Newer checkpoints that fail are reported (absl warning with their path) and, once an
    older one has restored, moved to `checkpoints/corrupt/` so the run can write those steps
    again.

    Raises:
      CorruptCheckpointError: checkpoints exist but none restores (each failure listed);
        nothing is moved, since the cause may be a changed config rather than damage.
    """
    root = pathlib.Path(manager.directory)
    failures = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            state, data, meta = restore(manager, step, abstract_state)
        except CorruptCheckpointError as e:
            logging.warning("checkpoint %s is damaged, trying an older one: %s",
                            root / str(step), e)
            failures.append((step, str(e)))
            continue
        if failures:
            _quarantine(manager, [s for s, _ in failures])
        return step, state, data, meta
    if failures:
        raise CorruptCheckpointError(
            f"{root}: no checkpoint restores:\n" + "\n".join(m for _, m in failures))
    return None


def _quarantine(manager: ocp.CheckpointManager, steps: list[int]) -> None:
    root = pathlib.Path(manager.directory)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("lmscale quarantine checkpoints")
    if jax.process_index() == 0:
        (root / CORRUPT_DIR).mkdir(exist_ok=True)
        for step in steps:
            target = root / CORRUPT_DIR / f"{step}.{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(root / str(step), target)
            logging.warning("moved damaged checkpoint %s to %s", root / str(step), target)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("lmscale quarantine checkpoints done")
    manager.reload()


def _saved_steps(run_dir: pathlib.Path) -> list[int]:
    root = run_dir / CHECKPOINT_DIR
    if not root.is_dir():
        return []
    # Only committed step directories: orbax writes into a temporary name, renames when
    # every item is written, and the rename is atomic.
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


def param_shardings(config: ModelConfig, mesh: jax.sharding.Mesh | None = None, rules=None):
    """(abstract unboxed params, their shardings) of `Decoder(config)` on `mesh`.

    The shardings are the train state's (`lmscale.train.state.param_shardings`): the model's
    logical axes through `rules` (default `lmscale.models.sharding.rules()`), mesh axes
    dropped from dims they do not divide. `mesh` None: the first local device.
    """
    boxed = jax.eval_shape(lambda r: init_params(config, r), jax.random.PRNGKey(0))["params"]
    abstract = nn.unbox(boxed)
    if mesh is None:
        device = jax.local_devices()[0]
        return abstract, jax.tree_util.tree_map(
            lambda _: jax.sharding.SingleDeviceSharding(device), abstract)
    rules = sharding_lib.rules() if rules is None else rules
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
    return abstract, jax.tree_util.tree_map(lambda s, a: fit_sharding(s, a.shape), shardings,
                                            abstract)


def restore_params(run_dir: str | pathlib.Path, step: int, config: ModelConfig | None = None,
                   mesh: jax.sharding.Mesh | None = None, rules=None):
    """The parameters saved at `step`, read-only, unboxed, verified against the fingerprint.

    Args:
      run_dir: a run directory (holds run.json and checkpoints/).
      step: a saved step (see `list_eval_checkpoints`).
      config: the model config; default from run.json.
      mesh: place parameters sharded over this (data, fsdp, tensor) mesh with the model's
        logical rules (`rules`, default `lmscale.models.sharding.rules()`); default: the
        first local device, unsharded.

    Returns:
      A float32 pytree usable as `Decoder(config).apply({"params": params}, ...)`.

    Raises:
      FileNotFoundError: no committed checkpoint at `step`.
      CorruptCheckpointError: the checkpoint is unreadable or its contents differ from what
        was saved (names the step directory).
    """
    run_dir = pathlib.Path(run_dir).absolute()  # orbax wants absolute paths
    if config is None:
        config = ModelConfig(**run_info(run_dir)["model_config"])
    if step not in _saved_steps(run_dir):
        raise FileNotFoundError(f"{run_dir / CHECKPOINT_DIR}: no checkpoint at step {step}; "
                                f"saved steps: {_saved_steps(run_dir)}")
    abstract, shardings = param_shardings(config, mesh, rules)
    target = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
    # Partial restore: only the params subtree is read, not the optimizer moments.
    item = {"params": target}
    step_dir = run_dir / CHECKPOINT_DIR / str(step)
    try:
        meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(step_dir / "meta")
        restored = ocp.Checkpointer(ocp.PyTreeCheckpointHandler()).restore(
            step_dir / "state",
            args=ocp.args.PyTreeRestore(
                item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                partial_restore=True))
    except Exception as e:  # orbax / tensorstore raise many kinds for damaged files
        raise CorruptCheckpointError(f"{step_dir}: cannot be restored: {type(e).__name__}: "
                                     f"{str(e)[:500]}") from e
    _verify(restored, meta, step_dir)
    return restored["params"]
