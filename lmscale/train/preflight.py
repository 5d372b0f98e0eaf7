"""Start-up checks of every run of a job against the mesh, before anything is compiled.

Stage: train. Consumes the `RunSpec`s a job will train (one run, a ladder, a study's
rungs), its `OptimizerConfig`, `MeshConfig` and `LoopConfig`, and the device and process
counts; produces the list of problems, each naming the field, the run and what to do. The
binaries call `check_runs` (through `lmscale.main._cli`) once, before the first rung
trains, so a bad fifth rung fails in seconds instead of after four rungs of training.

Checked per run: the mesh covers the devices (`MeshConfig.shape`); the global batch splits
over the batch mesh axes (data x fsdp) and over the data shards; the query heads split
over the tensor axis (otherwise every device computes every head); warmup ends before
the last step; the noise-scale option's even batch; the corpus, validation tasks and
vocabulary (`loop.check_data`, once per distinct corpus setting). Parameters whose dims a
mesh axis does not divide are replicated by design (`state.fit_sharding`: ladders mix
widths), so those are not errors.

`check_sampler` does the same for the PassUntil sampler (plain numbers, so this stage
needs nothing from `lmscale.eval`): slots vs. samples per draw, and room for a prompt in
every model's context next to each task's completion length.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Iterable, Mapping, Sequence

import numpy as np

from lmscale.models.config import ConfigError, ModelConfig
from lmscale.train import loop as loop_lib
from lmscale.train import optim
from lmscale.train import state as state_lib
from lmscale.train.spec import RunSpec


def _ways(mesh_shape: Mapping[str, int], target) -> tuple[tuple[str, ...], int]:
    """(mesh axes, their total size) a logical axis is sharded over under the rules."""
    axes = (target,) if isinstance(target, str) else tuple(target or ())
    return axes, int(np.prod([mesh_shape[a] for a in axes])) if axes else 1


def _mesh_text(mesh_shape: Mapping[str, int]) -> str:
    return " x ".join(f"{a}={n}" for a, n in mesh_shape.items())


def check_mesh(spec: RunSpec, mesh: state_lib.MeshConfig, num_devices: int) -> list[str]:
    """Problems of one run on the mesh: device count, batch over data x fsdp, heads over
    tensor. Each names the field and what to do."""
    try:
        sizes = mesh.shape(num_devices)
    except ConfigError as e:
        return [f"{e}: set MeshConfig.data x fsdp x tensor = {num_devices} (one axis may be "
                f"-1 to take the rest; on one device use data=1, fsdp=-1, tensor=1)"]
    mesh_shape = dict(zip(state_lib.MESH_AXES, sizes))
    rules = dict(mesh.logical_rules())
    problems = []
    axes, ways = _ways(mesh_shape, rules.get("batch"))
    if spec.batch_size % ways:
        problems.append(
            f"RunSpec.batch_size={spec.batch_size} is not divisible by the batch mesh axes "
            f"{' x '.join(axes)} of total size {ways} (run {spec.name}; mesh "
            f"{_mesh_text(mesh_shape)} over {num_devices} devices): use a multiple of {ways}, "
            f"or shrink those MeshConfig axes")
    axes, ways = _ways(mesh_shape, rules.get("heads"))
    if spec.model.n_heads % ways:
        divisors = [d for d in range(1, spec.model.n_heads + 1) if spec.model.n_heads % d == 0]
        problems.append(
            f"ModelConfig.n_heads={spec.model.n_heads} (model {spec.model.name or spec.name}) "
            f"is not divisible by the tensor mesh axes {' x '.join(axes)} = {ways}: attention "
            f"would not be split (every device computes every head); set MeshConfig.tensor "
            f"to one of {divisors}, or pick n_heads divisible by {ways}")
    return problems


def _run_problems(spec: RunSpec, optimizer: optim.OptimizerConfig,
                  mesh: state_lib.MeshConfig, loop: loop_lib.LoopConfig,
                  num_devices: int, num_processes: int) -> list[str]:
    problems = check_mesh(spec, mesh, num_devices)
    try:
        optimizer.warmup_for(spec.num_steps)
    except ConfigError as e:
        problems.append(f"{e} (run {spec.name}): lower the warmup or raise the token budget")
    shards = loop.data_shards or num_processes
    if spec.batch_size % shards:
        problems.append(f"RunSpec.batch_size={spec.batch_size} (run {spec.name}) is not "
                        f"divisible by the data shards LoopConfig.data_shards={shards} "
                        f"(default: the process count): use a multiple of {shards}")
    if loop.noise_scale and spec.batch_size % 2:
        problems.append(f"RunSpec.batch_size={spec.batch_size} (run {spec.name}) is odd, but "
                        f"LoopConfig.noise_scale splits each batch in two halves: use an "
                        f"even batch or set LoopConfig.noise_scale=False")
    return problems


def check_runs(specs: Sequence[RunSpec], optimizer: optim.OptimizerConfig,
               mesh: state_lib.MeshConfig, loop: loop_lib.LoopConfig, num_devices: int,
               num_processes: int = 1, check_data: bool = True) -> list[str]:
    """Every problem of every run (mesh, batch, heads, warmup, data), all at once.

    Args:
      specs: the runs the job will train, in order.
      optimizer, mesh, loop: the job's settings (shared by every run).
      num_devices, num_processes: of the whole job (`jax.device_count()`, ...).
      check_data: also resolve corpus, validation tasks and vocabulary
        (`loop.check_data`; builds seqio providers, reads no data), once per distinct
        (corpus, vocabulary, seq_len, seed).
    Returns:
      Messages, one per problem (empty: all runs can start).
    """
    problems, seen = [], set()
    for spec in specs:
        problems += _run_problems(spec, optimizer, mesh, loop, num_devices, num_processes)
        key = (spec.corpus, spec.vocab_spec, spec.seq_len, spec.seed, spec.model.vocab_size)
        if check_data and key not in seen:
            seen.add(key)
            try:
                loop_lib.check_data(spec, loop)
            except ConfigError as e:
                problems.append(str(e))
    return list(dict.fromkeys(problems))


def check_sampler(models: Iterable[ModelConfig], num_slots: int, draw_batch: int,
                  max_new_tokens: Mapping[str, int], where: str = "PassUntilConfig"
                  ) -> list[str]:
    """Problems of the PassUntil sampler settings against the models and tasks.

    Args:
      models: every model the sampler will run (empty: not known yet, e.g. the evaluator).
      num_slots: sampler slots decoded in parallel.
      draw_batch: samples requested per PassUntil draw.
      max_new_tokens: generative task name -> its completion length.
      where: the config's name in messages.
    """
    problems = []
    if num_slots > draw_batch:
        problems.append(f"{where}.num_slots={num_slots} > {where}.batch_size={draw_batch}: a "
                        f"draw of {draw_batch} samples keeps at most {draw_batch} slots busy "
                        f"and the rest decode padding; set num_slots <= batch_size")
    for model in models:
        for task, new_tokens in sorted(max_new_tokens.items()):
            if model.max_seq_len - new_tokens - 1 < 1:
                problems.append(
                    f"ModelConfig.max_seq_len={model.max_seq_len} (model {model.name}) leaves "
                    f"no room for a prompt next to task {task!r}'s max_new_tokens="
                    f"{new_tokens}: raise max_seq_len above {new_tokens + 1} or drop the task")
    return problems


_RECORDED = ("batch_size", "seq_len", "corpus", "vocab_spec", "seed", "num_steps")


def check_existing_runs(specs: Sequence[RunSpec], parents: Sequence[str | pathlib.Path]
                        ) -> list[str]:
    """Problems of runs whose directory exists (under any of `parents`) with a run.json
    recorded for a different configuration: the trainer would skip (done) or resume it as
    if it matched, silently mixing two configurations in one study."""
    problems = []
    for spec in specs:
        for parent in parents:
            path = pathlib.Path(parent) / spec.name / "run.json"
            try:
                recorded = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # no run yet (a corrupt run.json is the trainer's to report)
            now = {"num_steps": spec.num_steps, **{f: getattr(spec, f) for f in _RECORDED
                                                    if f != "num_steps"}}
            changed = [f"{f}={recorded.get(f)!r} (now {now[f]!r})" for f in _RECORDED
                       if f in recorded and recorded[f] != now[f]]
            model = {k: v for k, v in dataclasses.asdict(spec.model).items() if k != "dtype"}
            old_model = recorded.get("model_config") or {}
            changed += [f"ModelConfig.{k}={old_model[k]!r} (now {v!r})"
                        for k, v in model.items() if k in old_model and old_model[k] != v]
            if changed:
                problems.append(
                    f"{path.parent}: an existing run of another configuration ("
                    f"{', '.join(changed)}); it would be skipped or resumed as if it "
                    f"matched: use a fresh --workdir, or delete {path.parent}")
    return problems


def raise_problems(problems: Sequence[str]) -> None:
    """Raises ConfigError listing every problem (nothing when there are none)."""
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) found at start-up, before anything "
                          f"ran:\n  " + "\n  ".join(problems))
