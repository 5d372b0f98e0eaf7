"""The training loop: the library entry point the `lmscale.main.train` binary wraps.

Stage: train. Consumes a `RunSpec` (what to train), an `OptimizerConfig`, a `MeshConfig`
and a `LoopConfig` (how often to log, evaluate and checkpoint); produces a run directory

  <workdir>/<spec.name>/run.json       `lmscale.train.record.RunRecord`: running|done|failed
                       /config.gin     the resolved configuration, written before step 0
                       /metrics.jsonl  + tensorboard/: train and validation metrics
                       /checkpoints/   orbax: every K steps + final (kept), latest (resume)

The same code runs on 2 CPU cores and on a multi-host TPU pod; only the configs change.
Every process runs the same jitted calls in the same order; each feeds only the batch
rows its devices hold (`jax.make_array_from_process_local_data`); process 0 writes files.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from typing import Any, Sequence

import jax
import numpy as np
from absl import logging
from flax import linen as nn
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec

from lmscale import logs
from lmscale.config_check import check_fields
from lmscale.models.config import ConfigError
from lmscale.train import checkpoints as ckpt_lib
from lmscale.train import metrics as metrics_lib
from lmscale.train import optim
from lmscale.train import state as state_lib
from lmscale.train import step as step_lib
from lmscale.train.record import RunRecord, flops
from lmscale.train.spec import RunSpec

CONFIG_FILE = "config.gin"


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """How a run logs, evaluates and checkpoints.

    Attributes:
      log_every_steps: write train metrics (averaged over the interval) and a progress line.
      eval_every_steps: validation interval in steps; None evaluates only at the end.
      eval_batches: validation batches per split (global batch = the run's); None means one
        full finite pass of each split.
      validation: named held-out sets, triples (name, task, split); task None means the
        run's corpus (Gadre et al. also track code and German splits this way).
      checkpoint_every_tokens: keep a checkpoint every this many tokens for evaluation
        (rounded up to whole steps); None keeps only the final one.
      save_every_steps: how often the latest (resume) checkpoint is written.
      async_checkpointing: let orbax write in the background.
      peak_flops_per_device: for MFU; None measures a float32 matmul at start.
      noise_scale: log the gradient noise scale (splits each batch in two halves).
      compute_dtype: "auto" (bfloat16 on accelerators, float32 on CPU), or a dtype name.
      data_shards: number of data-stream shards the global batch is built from (default:
        the process count). Fixing it makes a 1-process run read the same rows as a
        multi-process one.
      constrain_activations: apply the model's logical activation constraints at block
        boundaries (the mesh is set while tracing; see `step.make_train_step`).
    """

    log_every_steps: int = 10
    eval_every_steps: int | None = None
    eval_batches: int | None = 16
    validation: tuple = (("validation", None, "validation"),)
    checkpoint_every_tokens: int | None = None
    save_every_steps: int = 100
    async_checkpointing: bool = True
    peak_flops_per_device: float | None = None
    noise_scale: bool = True
    compute_dtype: str = "auto"
    data_shards: int | None = None
    constrain_activations: bool = True

    def __post_init__(self):
        check_fields(self, ConfigError, ranges={"peak_flops_per_device": {"min": 1}})
        for field in ("log_every_steps", "save_every_steps"):
            if getattr(self, field) < 1:
                raise ConfigError(f"LoopConfig.{field}={getattr(self, field)!r}: must be >= 1")
        for field in ("eval_every_steps", "eval_batches", "checkpoint_every_tokens",
                      "data_shards"):
            value = getattr(self, field)
            if value is not None and value < 1:
                raise ConfigError(f"LoopConfig.{field}={value!r}: must be >= 1 or None")
        for i, entry in enumerate(self.validation):
            if len(entry) != 3:
                raise ConfigError(f"LoopConfig.validation[{i}]={entry!r}: must be a triple "
                                  f"(name, task or None, split)")
        if self.compute_dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"LoopConfig.compute_dtype={self.compute_dtype!r}: allowed "
                              f"'auto', 'float32', 'bfloat16', 'float16'")


def checkpoint_every_steps(spec: RunSpec, loop: LoopConfig) -> int:
    """K: evaluation checkpoints are kept at multiples of K (and at the last step)."""
    if loop.checkpoint_every_tokens is None:
        return spec.num_steps
    return max(1, math.ceil(loop.checkpoint_every_tokens / spec.tokens_per_step))


def validate(spec: RunSpec, optimizer: optim.OptimizerConfig, mesh_config: state_lib.MeshConfig,
             loop: LoopConfig, num_devices: int, num_processes: int) -> None:
    """Every check that can fail before anything is compiled; raises ConfigError."""
    mesh_config.shape(num_devices)
    optimizer.warmup_for(spec.num_steps)
    shards = loop.data_shards or num_processes
    if spec.batch_size % shards:
        raise ConfigError(f"RunSpec.batch_size={spec.batch_size} is not divisible by "
                          f"LoopConfig.data_shards={shards}")
    if loop.noise_scale and spec.batch_size % 2:
        raise ConfigError(f"RunSpec.batch_size={spec.batch_size}: LoopConfig.noise_scale "
                          f"splits each batch in two halves, so it must be even")
    check_data(spec, loop)


def check_data(spec: RunSpec, loop: LoopConfig) -> None:
    """The vocabulary and every corpus / validation task exist, and the model has an
    embedding row for every id of the vocabulary (raises ConfigError naming the field).

    Only builds the seqio providers; reads no data.
    """
    from lmscale.data import pipeline  # pylint: disable=g-import-not-at-top
    from lmscale.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    try:
        vocab = vocab_lib.get_vocabulary(spec.vocab_spec)
    except ValueError as e:
        raise ConfigError(f"RunSpec.vocab_spec={spec.vocab_spec!r}: {e}") from None
    if spec.model.vocab_size < vocab.vocab_size:
        raise ConfigError(
            f"ModelConfig.vocab_size={spec.model.vocab_size} is smaller than the "
            f"vocabulary RunSpec.vocab_spec={spec.vocab_spec!r}, which has "
            f"{vocab.vocab_size} ids: set ModelConfig.vocab_size >= {vocab.vocab_size}")
    tasks = [("RunSpec.corpus", spec.corpus, "train")]
    tasks += [(f"LoopConfig.validation[{i}] ({name!r})", task or spec.corpus, split)
              for i, (name, task, split) in enumerate(loop.validation)]
    for field, task, split in tasks:
        try:
            pipeline.LMStream(task, split, spec.seq_len, 1, seed=spec.seed,
                              vocab_spec=spec.vocab_spec)
        except ValueError as e:
            raise ConfigError(f"{field}={task!r}: {e}") from None


class _Feeder:
    """Builds global batches from this process's data-stream shards.

    The global batch is the concatenation over shards s = 0..S-1 of each shard's
    B/S rows; this process reads only the shards covering the rows its devices hold.
    """

    def __init__(self, make_stream, batch_size: int, seq_len: int, num_shards: int,
                 sharding: jax.sharding.NamedSharding):
        self.shape = (batch_size, seq_len)
        self.sharding = sharding
        rows = sorted({(idx[0].start or 0, idx[0].stop or batch_size)
                       for idx in sharding.addressable_devices_indices_map(self.shape).values()})
        lo, hi = rows[0][0], max(r[1] for r in rows)
        per_shard = batch_size // num_shards
        if lo % per_shard or hi % per_shard:
            raise ConfigError(
                f"this process holds batch rows [{lo}, {hi}) which do not align with "
                f"LoopConfig.data_shards={num_shards} blocks of {per_shard} rows")
        self.streams = [make_stream(s, num_shards, per_shard)
                        for s in range(lo // per_shard, hi // per_shard)]

    def local_batches(self):
        """Yields this process's rows as dicts of [rows, T] int32 (None when exhausted)."""
        while True:
            parts = [next(s, None) for s in self.streams]
            if all(p is None for p in parts):
                return
            template = next(p for p in parts if p is not None)
            parts = [p if p is not None else {k: np.zeros_like(v) for k, v in template.items()}
                     for p in parts]
            yield {k: np.concatenate([p[k] for p in parts]) for k in template}

    def to_global(self, local: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        return {k: jax.make_array_from_process_local_data(self.sharding, v, self.shape)
                for k, v in local.items()}


def _open_run(spec: RunSpec, workdir: str, optimizer: optim.OptimizerConfig,
              mesh: state_lib.MeshConfig, loop: LoopConfig, config_text: str | None,
              is_writer: bool) -> tuple[pathlib.Path, RunSpec, RunRecord, bool]:
    """The run directory, the spec at its compute dtype, and its record (status running;
    wall time and checkpoints carried over from an earlier session); done=True when an
    earlier session finished the run (the record is then the one on disk)."""
    run_dir = pathlib.Path(workdir) / spec.name
    previous = RunRecord.load(run_dir) if RunRecord.exists(run_dir) else None
    if previous is not None and previous.done:
        logging.info("%s: already done, skipping", run_dir)
        return run_dir, spec, previous, True
    if is_writer:
        run_dir.mkdir(parents=True, exist_ok=True)
    dtype = loop.compute_dtype
    if dtype == "auto":
        dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
    spec = dataclasses.replace(spec, model=spec.model.replace(dtype=dtype))
    record = RunRecord.from_spec(
        spec, status="running", checkpoint_every_steps=checkpoint_every_steps(spec, loop),
        optimizer=dataclasses.asdict(optimizer),
        mesh=dict(zip(state_lib.MESH_AXES, mesh.shape(jax.device_count()))),
        num_processes=jax.process_count(),
        wall_s=previous.wall_s if previous is not None else 0.0,
        checkpoints=list(previous.checkpoints) if previous is not None else [])
    if is_writer:
        (run_dir / CONFIG_FILE).write_text(
            config_text if config_text is not None else
            f"# lmscale.train.loop.train called without gin\n# spec = {spec!r}\n"
            f"# optimizer = {optimizer!r}\n# mesh = {mesh!r}\n# loop = {loop!r}\n",
            encoding="utf-8")
        record.save(run_dir)
    return run_dir, spec, record, False


def _restore_or_init(spec: RunSpec, manager, abstract, tx, optimizer, device_mesh, shardings,
                     run_dir: pathlib.Path):
    """(state, first step): the latest checkpoint's, or a fresh state at step 0."""
    restored = ckpt_lib.restore_latest(manager, abstract)
    if restored is None:
        return state_lib.create_train_state(spec, tx, optimizer, device_mesh, shardings), 0
    latest, state, data_state, _ = restored
    start = int(data_state["batches_consumed"])
    if start != int(state.step):
        raise RuntimeError(f"{run_dir}: checkpoint {latest} has step {int(state.step)} but "
                           f"data position {start}")
    logging.info("%s: resumed from step %d", run_dir, start)
    return state, start


@dataclasses.dataclass
class _Session:
    """What one training session holds while it steps: the compiled steps, the data feeds,
    the metric writers and the run's record."""

    spec: RunSpec
    loop: LoopConfig
    run_dir: pathlib.Path
    record: RunRecord
    is_writer: bool
    manager: Any
    train_step: Any
    eval_step: Any
    train_feed: _Feeder
    valid_sets: dict
    writer: Any
    throughput: metrics_lib.Throughput
    noise: metrics_lib.NoiseScale

    def evaluate(self, params, step: int) -> None:
        scalars = {name: _validation_loss(self.eval_step, params, feed, local)
                   for name, (feed, local) in self.valid_sets.items()}
        self.writer.write_scalars(step, {metrics_lib.valid_loss_name(k): v
                                         for k, v in scalars.items()})
        logging.info("step %d/%d validation %s", step, self.spec.num_steps,
                     " ".join(f"{k}={v:.4f}" for k, v in scalars.items()))

    def save(self, state, done: int, every: int) -> None:
        ckpt_lib.save(self.manager, done, state, {"batches_consumed": done},
                      {"step": done, "tokens_seen": self.spec.tokens_per_step * done,
                       "run_name": self.spec.name})
        if (done % every == 0 or done == self.spec.num_steps) and \
                done not in self.record.checkpoints:
            self.record.checkpoints = sorted(self.record.checkpoints + [done])


def _start_session(spec, run_dir, record, optimizer, mesh, device_mesh, loop, is_writer):
    """Builds the optimizer, state (restored or fresh), feeds and compiled steps."""
    rules = mesh.logical_rules()
    tx, schedule = optim.make_optimizer(optimizer, spec.num_steps, spec.model.d_model)
    abstract, shardings = state_lib.state_shardings(spec, tx, device_mesh, rules)
    batch_sharding = nn.logical_to_mesh_sharding(PartitionSpec("batch", "length"),
                                                 device_mesh, rules)
    manager = ckpt_lib.make_manager(run_dir, eval_every_steps=record.checkpoint_every_steps,
                                    num_steps=spec.num_steps,
                                    async_save=loop.async_checkpointing)
    state, start = _restore_or_init(spec, manager, abstract, tx, optimizer, device_mesh,
                                    shardings, run_dir)
    shards = loop.data_shards or jax.process_count()
    train_feed = _Feeder(
        lambda s, n, rows: _stream(spec, spec.corpus, "train", rows, s, n, repeat=True,
                                   start_batch=start),
        spec.batch_size, spec.seq_len, shards, batch_sharding)
    session = _Session(
        spec=spec, loop=loop, run_dir=run_dir, record=record, is_writer=is_writer,
        manager=manager,
        train_step=step_lib.make_train_step(
            spec.model, tx, schedule, device_mesh, rules, shardings, batch_sharding,
            noise_scale=loop.noise_scale, constrain_activations=loop.constrain_activations),
        eval_step=step_lib.make_eval_step(
            spec.model, device_mesh, rules, shardings.params, batch_sharding,
            constrain_activations=loop.constrain_activations),
        train_feed=train_feed,
        valid_sets=_validation_batches(spec, loop, shards, batch_sharding),
        writer=metrics_lib.make_writer(run_dir, is_writer),
        throughput=metrics_lib.Throughput(
            spec.flops_per_step, spec.tokens_per_step,
            metrics_lib.peak_flops_total(loop.peak_flops_per_device), spec.num_steps, start),
        noise=metrics_lib.NoiseScale())
    return session, state, start


def _run_steps(session: _Session, state, start: int):
    """Steps from `start` to the last step: logs, evaluates, checks finiteness, saves."""
    spec, loop = session.spec, session.loop
    every = session.record.checkpoint_every_steps
    pending: list[dict[str, jax.Array]] = []
    batches = session.train_feed.local_batches()
    progress = logs.stage(f"train {spec.name}", total=spec.num_steps - start, unit="steps")
    for step in range(start, spec.num_steps):
        state, step_metrics = session.train_step(state,
                                                 session.train_feed.to_global(next(batches)))
        pending.append(step_metrics)
        done = step + 1
        if step == start:
            jax.block_until_ready(state)
            session.throughput.reset(done)  # leave compilation out of tokens/s
        will_save = (done % every == 0 or done % loop.save_every_steps == 0
                     or done == spec.num_steps)
        if will_save or done % loop.log_every_steps == 0:
            # Never log or checkpoint past a non-finite step (one host sync per check).
            _check_finite(pending, done, session)
        note = None
        if done % loop.log_every_steps == 0 or done == spec.num_steps:
            loss = _log_train(session.writer, pending, done, spec, session.throughput,
                              session.noise, loop.noise_scale)
            pending, note = [], f"loss {loss:.4f}"
        progress.update(1, note=note)
        if loop.eval_every_steps and done % loop.eval_every_steps == 0 and done < spec.num_steps:
            session.evaluate(state.params, done)
            session.throughput.reset(done)
        if will_save:
            session.save(state, done, every)
            session.throughput.reset(done)
    progress.close()
    return state


def train(spec: RunSpec, workdir: str, optimizer: optim.OptimizerConfig = optim.OptimizerConfig(),
          mesh: state_lib.MeshConfig = state_lib.MeshConfig(), loop: LoopConfig = LoopConfig(),
          config_text: str | None = None) -> RunRecord:
    """Trains (or resumes, or skips when done) one run; returns its record (run.json).

    Args:
      spec: what to train; the run directory is `<workdir>/<spec.name>`.
      workdir: parent directory of run directories.
      optimizer, mesh, loop: see their classes.
      config_text: the resolved gin configuration, saved as `config.gin` before step 0.

    Returns:
      The run's `RunRecord` (status "done"), as saved in `<run_dir>/run.json`.

    Raises:
      ConfigError: a bad setting, before anything is compiled (names the field).
      TrainingDivergedError: a non-finite loss or gradient norm; run.json gets status
        "failed" and the message; no checkpoint is written past the last finite step.
      lmscale.train.checkpoints.CorruptCheckpointError: checkpoints exist but none restores.
      lmscale.train.record.RunRecordError: an existing run.json is corrupt or too old.
    """
    start_wall = time.time()
    validate(spec, optimizer, mesh, loop, jax.device_count(), jax.process_count())
    device_mesh = state_lib.make_mesh(mesh)
    state_lib.check_batch(mesh, device_mesh, spec.batch_size)
    is_writer = jax.process_index() == 0
    run_dir, spec, record, done = _open_run(spec, workdir, optimizer, mesh, loop, config_text,
                                            is_writer)
    if done:
        return record
    session, state, start = _start_session(spec, run_dir, record, optimizer, mesh,
                                           device_mesh, loop, is_writer)
    state = _run_steps(session, state, start)
    session.evaluate(state.params, spec.num_steps)
    ckpt_lib.close(session.manager)
    session.writer.flush()
    session.writer.close()
    record.status = "done"
    record.wall_s += time.time() - start_wall
    if is_writer:
        record.save(run_dir)
    multihost_utils.sync_global_devices(f"lmscale train done {spec.name}")
    return record


class TrainingDivergedError(FloatingPointError):
    """A training step produced a non-finite loss or gradient; names the step and the last
    good checkpoint (which is left intact)."""


def _check_finite(pending: Sequence[dict], done: int, session: _Session) -> None:
    """Raises TrainingDivergedError if a step in `pending` (steps done - len + 1 .. done,
    numbered as in metrics.jsonl) has a non-finite loss or gradient norm; first lets the
    last save finish and marks run.json status "failed"."""
    host = jax.device_get(list(pending))
    for i, m in enumerate(host):
        values = {k: float(m[k]) for k in ("loss", "grad_norm")}
        if all(math.isfinite(v) for v in values.values()):
            continue
        step = done - len(host) + 1 + i
        manager, run_dir = session.manager, session.run_dir
        manager.wait_until_finished()
        last = manager.latest_step()
        where = (f"last good checkpoint: {run_dir / ckpt_lib.CHECKPOINT_DIR / str(last)} "
                 f"(step {last})" if last is not None else "no checkpoint was saved")
        message = (f"{run_dir}: non-finite training metrics at step {step} "
                   f"({', '.join(f'{k}={v}' for k, v in values.items())}); {where}")
        if session.is_writer:
            dataclasses.replace(session.record, status="failed", failure=message,
                                failed_step=step, last_good_checkpoint=last).save(run_dir)
        raise TrainingDivergedError(message)


def _log_train(writer, pending: Sequence[dict], done: int, spec: RunSpec,
               throughput: metrics_lib.Throughput, noise: metrics_lib.NoiseScale,
               with_noise: bool) -> float:
    """Writes and logs the mean metrics of `pending` steps; returns their training loss."""
    host = jax.device_get(list(pending))
    mean = lambda k: float(np.mean([m[k] for m in host]))  # noqa: E731
    tokens_seen = done * spec.tokens_per_step
    scalars = {metrics_lib.TRAIN_LOSS: mean("loss"), metrics_lib.TRAIN_Z_LOSS: mean("z_loss"),
               metrics_lib.GRAD_NORM: mean("grad_norm"),
               metrics_lib.LEARNING_RATE: float(host[-1]["lr"]),
               metrics_lib.TOKENS_SEEN: tokens_seen,
               metrics_lib.FLOPS_SEEN: flops(spec.num_params_non_embedding, tokens_seen)}
    if with_noise:
        for m in host:
            b_noise = noise.update(float(m["grad_sq_small"]), float(m["grad_sq_big"]),
                                   float(m["tokens_small"]), float(m["tokens"]))
        scalars[metrics_lib.NOISE_SCALE] = b_noise
    perf = throughput.report(done)
    scalars.update({k: v for k, v in perf.items() if k != "eta_s"})
    writer.write_scalars(done, scalars)
    logging.info("step %d/%d loss %.4f lr %.2e tokens/s %.0f MFU %.2f%% ETA %s", done,
                 spec.num_steps, scalars[metrics_lib.TRAIN_LOSS],
                 scalars[metrics_lib.LEARNING_RATE], perf[metrics_lib.TOKENS_PER_S],
                 100 * perf[metrics_lib.MFU], metrics_lib.format_eta(perf["eta_s"]))
    return scalars[metrics_lib.TRAIN_LOSS]


def _stream(spec: RunSpec, task: str, split: str, rows: int, shard: int, num_shards: int,
            *, repeat: bool, start_batch: int = 0):
    from lmscale.data.pipeline import LMStream  # pylint: disable=g-import-not-at-top
    return LMStream(task, split, spec.seq_len, rows, seed=spec.seed, vocab_spec=spec.vocab_spec,
                    repeat=repeat, shard_index=shard, num_shards=num_shards,
                    start_batch=start_batch)


def _validation_batches(spec: RunSpec, loop: LoopConfig, shards: int,
                        sharding) -> dict[str, tuple[_Feeder, list[dict[str, np.ndarray]]]]:
    """Reads each validation split once (host memory), padded to the same number of
    batches on every process so all processes issue the same eval calls."""
    out = {}
    for name, task, split in loop.validation:
        feed = _Feeder(lambda s, n, rows, task=task, split=split: _stream(
            spec, task or spec.corpus, split, rows, s, n, repeat=False),
            spec.batch_size, spec.seq_len, shards, sharding)
        local = []
        for batch in feed.local_batches():
            local.append(batch)
            if loop.eval_batches is not None and len(local) == loop.eval_batches:
                break
        count = len(local)
        if jax.process_count() > 1:
            count = int(np.max(multihost_utils.process_allgather(np.array(count))))
        if count == 0:
            raise ValueError(f"LoopConfig.validation {name!r}: split {split!r} of "
                             f"{task or spec.corpus!r} yielded no batches")
        zeros = {k: np.zeros_like(v) for k, v in (local[0] if local else {}).items()}
        local += [zeros] * (count - len(local))
        out[name] = (feed, local)
    return out


def _validation_loss(eval_step, params, feed: _Feeder,
                     local: list[dict[str, np.ndarray]]) -> float:
    """Token-weighted mean NLL (nats/token) over the cached validation batches."""
    nll, weight = 0.0, 0.0
    sums = [eval_step(params, feed.to_global(b)) for b in local]
    for s in jax.device_get(sums):
        nll += float(s["nll_sum"])
        weight += float(s["weight_sum"])
    return nll / max(weight, 1.0)
