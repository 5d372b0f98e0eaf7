"""Checkpoint evaluator: every eval checkpoint of every run, every task, into result rows.

Stage: eval. Consumes training run directories (`run.json` + orbax checkpoints, read through
`lmscale.train`), evaluation tasks (`lmscale.data.registry`) and a held-out corpus
(`lmscale.data.pipeline.LMStream`); produces rows in an append-only results file
(`lmscale.eval.results`). `evaluate` plans, then executes: `lmscale.eval.plan` lists the
units (run, step, task), with validation loss as the pseudo-task `results.VALIDATION_TASK`,
and `execute` runs the incomplete ones with one `plan.EvalContext`, restoring each
checkpoint once, onto a device mesh (the run's training mesh by default), for all of its
units:

  * validation: token-weighted mean NLL of the run's corpus "validation" split (training's
    `eval_step`);
  * multiple-choice tasks: the likelihood `Scorer` (accuracy, normalised accuracies,
    CorrectChoiceProb, Brier score, answer loss);
  * generative tasks with a checker: PassUntil (Hu et al.) per instance with the jitted
    `Sampler` + the task's pass checker + `passuntil.run`, several instances per sampler
    call (`lmscale.eval.pu_batch`), plus the answer loss of the target (the input of
    loss-assisted PassUntil); without a checker, the answer loss only;
  * `greedy_tasks`: each instance decoded greedily and checked (`lmscale.eval.greedy`),
    rows under the task name `results.greedy_task(task)`.

Resume. A complete unit is skipped. Per-instance rows are appended (fsynced) as instances
finish, in instance order, and an interrupted unit reuses them, so only unfinished
instances are redone. Sample i of an instance depends only on (params, prompt, seed of
the instance, i), and the instance seed is a hash of (seed, task, instance id), so a
resumed run writes exactly the rows an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
import zlib
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from absl import logging

from lmscale.data import checkers as data_checkers
from lmscale.data import registry
from lmscale.eval import checkers as checkers_lib
from lmscale.eval import greedy as greedy_lib
from lmscale.eval import plan as plan_lib
from lmscale.eval import pu_batch
from lmscale.eval import results as R
from lmscale.eval import sampler as sampler_lib
from lmscale.eval import scorer as scorer_lib
from lmscale.models import ModelConfig
from lmscale.train import record as record_lib

RESULTS_FILE = "results.jsonl"
# Default cap of one scorer call: questions x max_seq_len (score_batch).
SCORE_ROW_TOKENS = 32768


# Timed calls of the same-shape reference spread over a unit (`evaluate(pu_reference=)`).
REFERENCE_CALLS = 3


@dataclasses.dataclass(frozen=True)
class PassUntilConfig:
    """PassUntil settings (Hu et al., Sec. 3).

    Attributes:
      r: passes to wait for per instance (>= 2 for an informative unbiased estimate).
      k_max: sample cap per instance.
      batch_size: samples drawn per `draw` call (the r-th pass inside a batch stops at its
        position, so this changes speed, never K).
      num_slots: sampler slots decoded in parallel.
      temperature, top_k, top_p: sampling method (top_k / top_p None: off; both set is an
        error).
      seed: base seed; instance seeds derive from it, the task and the instance id.
      prompts_per_call: instances sampled together per `Sampler.sample_many` call;
        None: enough prompts for a batch's worth of samples per call and for the slots,
        max(ceil(batch_size / d), num_slots // d) with d = min(batch_size, k_max), rounded
        down to a power of two (slot groups) and at most num_slots: 1 for the study's
        final checkpoints (d = 512), 8 for its intermediate ones (d = 50). With the
        next call dispatched ahead (`pu_batch.run_batched`), 4 and 8 prompts a call
        measured alike on w96@416 (`tools/bench_pu_unit.py --run_dir=... --step=416
        --k_max=50 --num_slots=64 --prompts_per_call=4,8,4,8,4,8 --warmup`: 2,383 /
        2,904 / 2,431 against 2,355 / 2,627 / 3,178 samples/s). Speed only, never
        results (docs/performance.md).
      loss_sized_first_draw: with an exact-match checker, an instance whose target
        (probability exp(-its summed answer loss)) would need more than a batch for r
        passes draws its whole cap at once (`pu_batch.first_draw_for`): one sampler call
        instead of two or more, each ending on idle slots. Speed only, never results.
    """

    r: int = 2
    k_max: int = 1000
    batch_size: int = 64
    num_slots: int = 64
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0
    prompts_per_call: int | None = None
    loss_sized_first_draw: bool = True

    def __post_init__(self):
        from lmscale.config_check import check_fields  # pylint: disable=g-import-not-at-top
        from lmscale.models import ConfigError  # pylint: disable=g-import-not-at-top
        check_fields(self, ConfigError, ranges={"seed": {"min": 0}, "top_k": {"min": 1}})
        for name in ("r", "k_max", "batch_size", "num_slots") + (
                () if self.prompts_per_call is None else ("prompts_per_call",)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"PassUntilConfig.{name}={value!r}: must be a positive int")
        if self.k_max < self.r:
            raise ConfigError(f"PassUntilConfig.k_max={self.k_max} < r={self.r}")
        if self.top_k is not None and self.top_p is not None:
            raise ConfigError(f"PassUntilConfig: top_k={self.top_k} and top_p={self.top_p} "
                              f"both set; pick one")
        try:
            self.method  # pylint: disable=pointless-statement
        except ValueError as e:  # temperature <= 0, top_p outside (0, 1]
            field = "top_p" if "TopP" in str(e) else "temperature"
            raise ConfigError(f"PassUntilConfig.{field}={getattr(self, field)!r}: "
                              f"{str(e).split(': ', 1)[-1]}") from None

    def per_call(self, k_max: int | None = None) -> int:
        """Prompts per sampler call (`prompts_per_call`, or the slots' worth when None)."""
        if self.prompts_per_call is not None:
            return self.prompts_per_call
        draw = min(self.batch_size, k_max or self.k_max)
        want = min(max(-(-self.batch_size // draw), self.num_slots // draw), self.num_slots)
        return 1 << (max(1, want).bit_length() - 1)

    @property
    def method(self) -> sampler_lib.Method:
        if self.top_k is not None:
            return sampler_lib.TopK(self.top_k, self.temperature)
        if self.top_p is not None:
            return sampler_lib.TopP(self.top_p, self.temperature)
        return sampler_lib.Temperature(self.temperature)


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    """Validation-loss settings.

    Attributes:
      enabled: compute validation loss for every checkpoint.
      corpus: corpus task name; None uses the run's own corpus (run.json "corpus").
      split: the held-out split.
      sequence_length: tokens per row; None uses the run's seq_len.
      batch_size: rows per batch.
      max_batches: read at most this many batches (None: the whole split).
    """

    enabled: bool = True
    corpus: str | None = None
    split: str = "validation"
    sequence_length: int | None = None
    batch_size: int = 8
    max_batches: int | None = None

    def __post_init__(self):
        from lmscale.config_check import check_fields  # pylint: disable=g-import-not-at-top
        from lmscale.models import ConfigError  # pylint: disable=g-import-not-at-top
        check_fields(self, ConfigError, ranges={
            "batch_size": {"min": 1}, "sequence_length": {"min": 2}, "max_batches": {"min": 1}})


CheckpointSource = plan_lib.CheckpointSource  # (re-exported: its home is `plan`)


def train_source() -> CheckpointSource:
    from lmscale.train import checkpoints

    return CheckpointSource(
        load_record=record_lib.RunRecord.load, list_steps=checkpoints.list_eval_checkpoints,
        restore_params=lambda d, s, c, mesh=None: checkpoints.restore_params(d, s, c, mesh))


def instance_seed(seed: int, task: str, instance_id: str) -> int:
    """A 31-bit seed that depends only on (seed, task, instance id)."""
    return zlib.crc32(f"{seed}/{task}/{instance_id}".encode()) & 0x7FFFFFFF


def find_runs(workdir_or_run_dirs: str | os.PathLike | Sequence[str | os.PathLike],
              source: CheckpointSource) -> list[str]:
    """Run directories: the given list, or every child of a workdir holding a run.json."""
    if isinstance(workdir_or_run_dirs, (str, os.PathLike)):
        root = pathlib.Path(workdir_or_run_dirs)
        if (root / record_lib.RUN_FILE).is_file():
            return [str(root)]
        if not root.is_dir():
            raise FileNotFoundError(f"evaluate: {root} is not a directory")
        runs = sorted(str(p) for p in root.iterdir() if (p / record_lib.RUN_FILE).is_file())
        if not runs:
            raise FileNotFoundError(f"evaluate: no run directory (with run.json) in {root}")
        return runs
    return [str(p) for p in workdir_or_run_dirs]


def run_point(run_dir: str, rec, step: int) -> R.RunPoint:
    """Scaling coordinates of one checkpoint from its run record (a `RunRecord`, or the
    run.json dict, checked by `RunRecord.from_dict`)."""
    if isinstance(rec, dict):
        rec = record_lib.RunRecord.from_dict(rec, where=str(record_lib.RunRecord.path(run_dir)))
    return R.RunPoint(run=rec.run_name or pathlib.Path(run_dir).name, step=int(step),
                      tokens=rec.tokens_at(step), num_params=rec.num_params,
                      num_params_non_embedding=rec.N, num_tokens=rec.D,
                      flops=rec.flops_at(step))


def _resolve_tasks(tasks) -> list:
    return [registry.get_eval_task(t) if isinstance(t, str) else t for t in tasks]


@dataclasses.dataclass(frozen=True)
class EvalSummary:
    """What one `execute` did and where its time went (logged as the evaluation's last line).

    Attributes:
      units_run, units_skipped: units evaluated now / complete earlier.
      wall_s: seconds of the whole execution.
      compile_s, programs, cache_hits, cache_misses: `lmscale.compilation.CompileTimer`'s.
      pu_samples: PassUntil samples drawn (those after an r-th pass inside a batch too).
      pu_sample_s: wall seconds of the PassUntil drivers (sampler construction, compiles,
        draws, checks, row appends).
      pu_compile_s: the compile seconds inside `pu_sample_s`.
      pu_alone_per_s, pu_alone_length: the same-shape reference (`evaluate`'s
        `pu_reference`): samples/s of the sampler alone (`sampler.alone_rate`) on the
        PassUntil unit that drew the most samples, and its mean completion length; 0
        when not measured.
      pu_alone_samples: samples per call of the reference (`REFERENCE_SAMPLES`, fewer
        when the unit drew under three times that).
      pu_alone_how: how the reference was timed: the median of `REFERENCE_CALLS` calls
        spread over the unit (`sampler.InterleavedReference`, where that costs at most a
        third of the unit's samples) or the best of 2 calls after the units.
      pu_tokens: tokens the PassUntil samples generated (their lengths summed). A
        sampler's decode step costs the same whatever its slots hold, and a sample's first
        token comes from the prompt's logits without one, so work is counted in decode
        tokens (`pu_tokens - pu_samples`): the in-study rate is set against the reference
        in decode tokens/s (one prompt's completions may be shorter than the unit's mix).
    """

    units_run: int
    units_skipped: int
    wall_s: float
    compile_s: float
    programs: int
    cache_hits: int
    cache_misses: int
    pu_samples: int
    pu_sample_s: float
    pu_compile_s: float = 0.0
    pu_alone_per_s: float = 0.0
    pu_alone_length: float = 0.0
    pu_tokens: int = 0
    pu_alone_samples: int = 0
    pu_alone_how: str = ""

    @property
    def compile_share(self) -> float:
        """Fraction of the wall time spent compiling (0 when nothing ran)."""
        return self.compile_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def samples_per_s(self) -> float:
        """PassUntil samples per second of the drivers' time less their compiles: what
        tools/bench_sample.py's study row measures (it times calls after the first)."""
        run_s = self.pu_sample_s - self.pu_compile_s
        return self.pu_samples / run_s if run_s > 0 else 0.0

    @property
    def wall_samples_per_s(self) -> float:
        """PassUntil samples per second of the drivers' wall time, compiles included."""
        return self.pu_samples / self.pu_sample_s if self.pu_sample_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Generated PassUntil tokens per second of the drivers' time less compiles."""
        run_s = self.pu_sample_s - self.pu_compile_s
        return self.pu_tokens / run_s if run_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """`tokens_per_s` less each sample's first token, which the sampler draws from
        the prompt's logits without a decode step: the tokens its steps computed."""
        run_s = self.pu_sample_s - self.pu_compile_s
        return (self.pu_tokens - self.pu_samples) / run_s if run_s > 0 else 0.0

    @property
    def alone_decode_tokens_per_s(self) -> float:
        """The reference's `decode_tokens_per_s` (0 when not measured or not counted)."""
        return self.pu_alone_per_s * max(0.0, self.pu_alone_length - 1.0)

    @property
    def alone_share(self) -> float:
        """The in-study rate over the sampler-alone reference, in decode tokens/s (a
        decode step costs the same whatever its slots hold, and one prompt's completions
        may be shorter or longer than the unit's mix); in samples/s when the tokens were
        not counted; 0 when not measured."""
        if self.pu_alone_per_s <= 0:
            return 0.0
        if self.pu_tokens and self.alone_decode_tokens_per_s > 0:
            return self.decode_tokens_per_s / self.alone_decode_tokens_per_s
        return self.samples_per_s / self.pu_alone_per_s

    def line(self) -> str:
        """E.g. '6 units (30 done earlier) in 41.0 s; compile 12.3 s (30%), ...'."""
        pu = (f"; PassUntil {self.pu_samples} samples at {self.samples_per_s:.0f} samples/s "
              f"excluding {self.pu_compile_s:.1f} s compiling ({self.wall_samples_per_s:.0f} "
              f"wall)" if self.pu_samples else "")
        if self.pu_samples and self.pu_alone_per_s > 0:
            tokens = (f" by decode tokens/s ({self.decode_tokens_per_s:.0f} vs "
                      f"{self.alone_decode_tokens_per_s:.0f}; the tokens after each sample's "
                      f"first, which needs no decode step)"
                      if self.pu_tokens and self.alone_decode_tokens_per_s > 0 else "")
            pu += (f", {100 * self.alone_share:.0f}% of the sampler alone on the same "
                   f"shapes{tokens} (alone: {self.pu_alone_per_s:.0f} samples/s"
                   + (f" of mean length {self.pu_alone_length:.2f}" if self.pu_alone_length
                      else "")
                   + (f", {self.pu_alone_samples} per call" if self.pu_alone_samples else "")
                   + (f", {self.pu_alone_how}" if self.pu_alone_how else "")
                   + ", tools/bench_sample.py's study-row measure)")
        return (f"{self.units_run} units ({self.units_skipped} done earlier) in "
                f"{self.wall_s:.1f} s; compile {self.compile_s:.1f} s "
                f"({100 * self.compile_share:.0f}%), {self.programs} programs, "
                f"{self.cache_hits} persistent-cache hits{pu}")


def evaluate(workdir_or_run_dirs, tasks: Sequence = (), *, results_path: str | None = None,
             passuntil_config: PassUntilConfig = PassUntilConfig(),
             validation: ValidationConfig = ValidationConfig(), split: str = "test",
             limit: int | None = None, score_batch_questions: int | None = None,
             sandbox_timeout_s: float = 10.0, steps: Sequence[int] | None = None,
             source: CheckpointSource | None = None,
             draw_factory: Callable | None = None,
             stream_factory: Callable | None = None,
             passuntil_caps: Mapping[str, Mapping[str, int]] | None = None,
             intermediate_passuntil: PassUntilConfig | None = None,
             mesh=None, greedy_tasks: Sequence = (),
             pu_reference: bool = False) -> R.ResultsFile:
    """Evaluates every eval checkpoint of every run on every task; appends result rows.

    Plans the units (`plan.plan_evaluation`, complete ones marked) and executes the rest
    (`execute`).

    Args:
      workdir_or_run_dirs: a ladder workdir (each child with a run.json is a run), one run
        directory, or a list of run directories.
      tasks: eval task names (`lmscale.data.registry`) or `EvalTask` objects.
      results_path: the JSONL results file; default `<workdir>/results.jsonl` (for a list of
        runs: next to the first run).
      passuntil_config: PassUntil and sampling settings for generative tasks.
      validation: validation-loss settings.
      split: task split to evaluate.
      limit: at most this many instances per task (None: all).
      score_batch_questions: questions prefilled together by the scorer; None: all of a
        task's questions in one call, up to `SCORE_ROW_TOKENS` // max_seq_len of them (the
        scorer compiles once per shape, and on 2 CPU cores a batch of 8 gave a 200-question
        task 21 shapes: 15-25 s of compiling per checkpoint; all 200 together gave 2).
      sandbox_timeout_s: wall-clock limit of one "code" check.
      steps: evaluate only these checkpoint steps (None: all eval checkpoints).
      source: where runs come from (default `train_source()`; tests pass stand-ins).
      draw_factory: `(sampler, prompt, checker_fn, seed) -> draw` (default: the sampler,
        `PassUntilConfig.prompts_per_call` prompts per call).
      stream_factory: `(corpus, split, seq_len, batch, vocab_spec) -> batches` (default a
        finite, unshuffled `LMStream`).
      passuntil_caps: task name -> instance id -> k_max of that instance (default
        `passuntil_config.k_max`), e.g. from a per-task sample budget.
      intermediate_passuntil: PassUntil settings of each run's non-final checkpoints (e.g.
        a lower k_max; caps do not apply to them); None: `passuntil_config`, caps included.
      mesh: a `jax.sharding.Mesh` or `MeshConfig` for the parameters (default: the run
        record's mesh when it matches the device count, else every device along fsdp).
      greedy_tasks: generative task names or `EvalTask`s (with a checker) also decoded
        greedily on every checkpoint: greedy exact match beside PassUntil (they need not
        be in `tasks`; `passuntil_config.num_slots` prompts are decoded together).
      pu_reference: time the sampler alone on the shapes of the PassUntil unit that drew
        the most samples (its model, sampler settings and first prompt): the summary's
        `pu_alone_per_s`, the reference the in-study rate is set against. Where it costs
        at most a third of a unit's samples, `REFERENCE_CALLS` calls of 4096 spread over
        the unit (`sampler.InterleavedReference`, median; left out of the unit's
        PassUntil time, inside the summary's wall: about 2 s of a study rung); else the
        best of 2 calls after the plan (`sampler.alone_rate`, outside the wall).

    Returns:
      The `ResultsFile` (all rows, earlier ones included); its `summary` attribute holds
      this call's `EvalSummary` (compile share, PassUntil samples/s).
    """
    import jax

    source = source or train_source()
    runs = find_runs(workdir_or_run_dirs, source)
    if results_path is None:
        base = (pathlib.Path(workdir_or_run_dirs) if isinstance(workdir_or_run_dirs, (
            str, os.PathLike)) else pathlib.Path(runs[0]).parent)
        results_path = str(base / RESULTS_FILE)
    results = R.ResultsFile(results_path, writable=jax.process_index() == 0)
    context = plan_lib.EvalContext(
        results=results, source=source, passuntil=passuntil_config, validation=validation,
        split=split, limit=limit, score_batch_questions=score_batch_questions,
        sandbox_timeout_s=sandbox_timeout_s, draw_factory=draw_factory,
        stream_factory=stream_factory or _lm_stream, mesh=mesh, pu_reference=pu_reference)
    checkpoints = []
    for run_dir in runs:
        run_steps = source.list_steps(run_dir)
        checkpoints.append(plan_lib.RunCheckpoints(run_dir, source.load_record(run_dir),
                                                   tuple(int(s) for s in run_steps)))
    plan = plan_lib.plan_evaluation(
        checkpoints, _resolve_tasks(tasks), passuntil=passuntil_config,
        validation=validation.enabled, steps=steps, caps=passuntil_caps,
        intermediate_passuntil=intermediate_passuntil, done=results.is_complete,
        greedy_tasks=_resolve_tasks(greedy_tasks))
    logging.info("evaluate: %s -> %s", plan.describe(), results_path)
    results.summary = execute(plan, context)
    return results


def execute(plan: plan_lib.EvalPlan, context: plan_lib.EvalContext) -> EvalSummary:
    """Runs the plan's incomplete units, restoring each checkpoint once onto the mesh.

    One progress line per unit (`lmscale.logs.stage("evaluate")`); the last log line is the
    `EvalSummary` (compile share of the time, PassUntil samples/s).
    """
    from lmscale import compilation, logs

    todo = plan.todo()
    counters = _Counters()
    with compilation.CompileTimer() as timer:
        counters.timer = timer
        progress = logs.stage("evaluate", total=len(todo), unit="units", every_pct=0.0)
        for run, step, units in plan.checkpoints():
            checkpoint = _Checkpoint.open(run, step, context)
            for unit in units:
                note = _run_unit(unit, plan, checkpoint, context, counters)
                progress.update(1, note=f"{unit.run_name}@{unit.step} {unit.task_name} {note}")
        progress.close(note=timer.summary())
    alone, alone_n, how = (0.0, 0.0), 0, ""
    if context.pu_reference and counters.reference is not None:
        samples, sampler, prompt, interleaved = counters.reference
        if interleaved is not None and interleaved.seconds:
            alone, alone_n = interleaved.rate, interleaved.num_samples
            how = f"median of {len(interleaved.seconds)} calls spread over the unit"
        else:
            # At most a third of the unit's own samples a call (it makes three), so the
            # reference never costs more than the unit.
            alone_n = min(sampler_lib.REFERENCE_SAMPLES, sampler.max_samples_per_call,
                          max(1, samples // 3))
            alone = sampler_lib.alone_rate(sampler, prompt, alone_n)
            how = "best of 2 calls after the units"
    summary = EvalSummary(
        units_run=len(todo), units_skipped=len(plan.units) - len(todo),
        wall_s=timer.wall_s(), compile_s=timer.compile_s, programs=timer.programs,
        cache_hits=timer.cache_hits, cache_misses=timer.cache_misses,
        pu_samples=counters.pu_samples, pu_sample_s=counters.pu_sample_s,
        pu_compile_s=counters.pu_compile_s, pu_alone_per_s=alone[0],
        pu_alone_length=alone[1], pu_alone_samples=alone_n, pu_tokens=counters.pu_tokens,
        pu_alone_how=how)
    logging.info("evaluate: %s", summary.line())
    return summary


@dataclasses.dataclass
class _Counters:
    pu_samples: int = 0
    pu_sample_s: float = 0.0
    pu_compile_s: float = 0.0
    pu_tokens: int = 0
    timer: Any = None  # the running `compilation.CompileTimer`
    # (samples, sampler, first prompt, its InterleavedReference or None) of the PassUntil
    # unit that drew the most samples.
    reference: tuple | None = None

    def compile_s(self) -> float:
        return self.timer.compile_s if self.timer is not None else 0.0


def _device_mesh(record, option):
    """The mesh parameters go onto (see `evaluate`'s `mesh`)."""
    import jax

    from lmscale.train import state as state_lib

    if isinstance(option, jax.sharding.Mesh):
        return option
    if option is None:
        shape = {a: int(record.mesh.get(a, 1)) for a in state_lib.MESH_AXES} \
            if record.mesh else None
        if shape and int(np.prod(list(shape.values()))) == jax.device_count():
            option = state_lib.MeshConfig(**shape)
        else:
            option = state_lib.MeshConfig(data=1, fsdp=-1, tensor=1)
    return state_lib.make_mesh(option)


@dataclasses.dataclass(frozen=True)
class _Checkpoint:
    """A restored checkpoint: its run, scaling point, model, parameters (on `mesh`), vocab."""

    run: plan_lib.RunCheckpoints
    point: R.RunPoint
    config: ModelConfig
    params: Any
    vocab: Any
    mesh: Any

    @classmethod
    def open(cls, run: plan_lib.RunCheckpoints, step: int,
             context: plan_lib.EvalContext) -> "_Checkpoint":
        import jax

        from lmscale.train import checkpoints as ckpt_lib

        rec = run.record
        config = ModelConfig(**rec.model_config)
        mesh = _device_mesh(rec, context.mesh)
        params = context.source.restore_params(run.run_dir, step, config, mesh)
        # A source that ignores the mesh: place its arrays with the train state's shardings.
        params = jax.device_put(params, ckpt_lib.param_shardings(config, mesh)[1])
        return cls(run=run, point=run_point(run.run_dir, rec, step), config=config,
                   params=params, vocab=_vocab(rec.vocab_spec), mesh=mesh)

    def row(self, task: str, metric: str, value, instance=None, detail=None) -> R.ResultRow:
        return R.ResultRow.make(self.point, task, metric, value, instance, detail)


def _run_unit(unit: plan_lib.EvalUnit, plan: plan_lib.EvalPlan, checkpoint: _Checkpoint,
              context: plan_lib.EvalContext, counters: _Counters) -> str:
    """Evaluates one unit (rows appended); returns its summary for the progress line."""
    if unit.kind == plan_lib.VALIDATION:
        return _validation_unit(checkpoint, context)
    if unit.kind == plan_lib.GREEDY:
        return greedy_lib.run_unit(plan.tasks[unit.source_task], checkpoint, context,
                                   _start_id(checkpoint.vocab))
    return _TaskUnit(unit, plan.tasks[unit.task_name], checkpoint, context, counters).run()


def _validation_unit(checkpoint: _Checkpoint, context: plan_lib.EvalContext) -> str:
    rec, cfg = checkpoint.run.record, context.validation
    batches = context.stream_factory(cfg.corpus or rec.corpus, cfg.split,
                                     cfg.sequence_length or rec.seq_len, cfg.batch_size,
                                     rec.vocab_spec)
    from lmscale.data import pipeline  # pylint: disable=g-import-not-at-top (TF at import)
    batches = pipeline.with_start_id(batches, _start_id(checkpoint.vocab))
    loss = scorer_lib.validation_loss(checkpoint.config, checkpoint.params, batches,
                                      max_batches=cfg.max_batches)
    context.results.append([
        checkpoint.row(R.VALIDATION_TASK, R.VALIDATION_LOSS, loss.loss_nats,
                       detail={"num_tokens": loss.num_tokens, "num_batches": loss.num_batches}),
        checkpoint.row(R.VALIDATION_TASK, R.UNIT_COMPLETE, 1)])
    return f"loss={loss.loss_nats:.4f}"


def _lm_stream(corpus, split, seq_len, batch_size, vocab_spec) -> Iterable[dict]:
    from lmscale.data.pipeline import LMStream

    return LMStream(corpus, split, seq_len, batch_size, seed=0, vocab_spec=vocab_spec,
                    repeat=False)


def _start_id(vocab) -> int:
    """The id put before every context and prompt: the vocabulary's `start_id` (an imported
    checkpoint's BOS, `lmscale.data.hf_vocab`) or 0 (lmscale's training shift token)."""
    start = getattr(vocab, "start_id", None)
    return 0 if start is None else int(start)


def _vocab(spec: str):
    from lmscale.data.vocab import get_vocabulary

    return get_vocabulary(spec)


def score_batch(requested: int | None, num_questions: int, config) -> int:
    """Questions per scorer call: `requested`, or (None) every question of the task, at most
    `SCORE_ROW_TOKENS // config.max_seq_len` of them (at least 1)."""
    if requested is not None:
        return int(requested)
    return max(1, min(num_questions, SCORE_ROW_TOKENS // max(1, config.max_seq_len)))


class _TaskUnit:
    """One (run, step, task) unit: per-instance rows as they finish, then aggregates."""

    def __init__(self, unit: plan_lib.EvalUnit, task, checkpoint: _Checkpoint,
                 context: plan_lib.EvalContext, counters: _Counters):
        self.unit, self.task, self.ckpt, self.ctx = unit, task, checkpoint, context
        self.counters = counters
        self.instances = task.instances(split=context.split, limit=context.limit)
        if not self.instances:
            raise ValueError(f"task {task.name!r} split {context.split!r}: no instances")
        self.start_id = _start_id(checkpoint.vocab)
        self.scorer = scorer_lib.Scorer(checkpoint.config, checkpoint.params,
                                        batch_questions=score_batch(
                                            context.score_batch_questions,
                                            len(self.instances), checkpoint.config),
                                        bos_id=self.start_id)
        point = checkpoint.point
        self.done = context.results.instance_rows(point.run, point.step, task.name)

    def _row(self, metric, value, instance=None, detail=None):
        return self.ckpt.row(self.task.name, metric, value, instance, detail)

    def run(self) -> str:
        point = self.ckpt.point
        todo = [i for i in self.instances if i.id not in self.done]
        if len(todo) < len(self.instances):
            logging.info("%s@%d %s: resuming, %d of %d instances already done",
                         point.run, point.step, self.task.name,
                         len(self.instances) - len(todo), len(self.instances))
        if self.unit.kind == plan_lib.MULTIPLE_CHOICE:
            self._multiple_choice(todo)
        else:
            self._generative(todo)
        done = self.ctx.results.instance_rows(point.run, point.step, self.task.name)
        details = [done[i.id].detail for i in self.instances]
        aggregates = self._aggregate(details)
        rows = [self._row(m, v) for m, v in aggregates.items()]
        rows.append(self._row(R.NUM_INSTANCES, len(details)))
        rows.append(self._row(R.UNIT_COMPLETE, len(details)))
        self.ctx.results.append(rows)
        return " ".join(f"{m}={v:.4g}" for m, v in aggregates.items())

    def _multiple_choice(self, todo) -> None:
        vocab = self.ckpt.vocab
        if getattr(self.task, "partial_scoring", False):  # Winograd schemas
            questions = [scorer_lib.encode_partial_question(vocab, i.id, i.prompt, i.choices,
                                                            i.target, i.gold) for i in todo]
            scores = self.scorer.score_partial(questions) if questions else []
        else:
            questions = [scorer_lib.encode_question(vocab, i.id, i.prompt, i.choices, i.gold)
                         for i in todo]
            scores = self.scorer.score(questions) if questions else []
        self.ctx.results.append([self._row(R.INSTANCE, s.loglik[s.gold], s.id, s.detail())
                                 for s in scores])

    def _answer_losses(self, todo) -> dict[str, dict[str, float]]:
        """Per instance: target NLL per token (`ANSWER_LOSS`) and summed (`ANSWER_LOSS_SUM`)."""
        vocab = self.ckpt.vocab
        questions = [scorer_lib.encode_question(vocab, i.id, i.prompt, [i.target], 0)
                     for i in todo]
        scores = self.scorer.score(questions) if questions else []
        return {s.id: {R.ANSWER_LOSS: s.metrics()[R.ANSWER_LOSS],
                       R.ANSWER_LOSS_SUM: float(-s.loglik[0])} for s in scores}

    def _generative(self, todo) -> None:
        losses = self._answer_losses(todo)
        if self.unit.kind == plan_lib.ANSWER_LOSS:
            self.ctx.results.append([self._row(R.INSTANCE, losses[i.id][R.ANSWER_LOSS], i.id,
                                               dict(losses[i.id])) for i in todo])
            return
        jobs, point = self._jobs(todo, losses), self.ckpt.point
        start, compile_start = time.monotonic(), self.counters.compile_s()
        sampler, results = self._drive(jobs)
        reference = self._interleaved_reference(sampler, jobs)
        unit_samples, reference_compile_s = 0, 0.0
        for n, (job, res, drawn) in enumerate(results, 1):
            inst = pu_batch.PassUntilInstance.make(job, res, losses[job.instance_id])
            self.ctx.results.append([self._row(R.INSTANCE, inst.estimate, inst.instance_id,
                                               inst.detail())])
            self.counters.pu_samples += drawn
            unit_samples += drawn
            elapsed = time.monotonic() - start
            logging.info("%s@%d %s: instance %d/%d %s K=%d passes=%d%s | ETA %.0fs",
                         point.run, point.step, self.task.name, n, len(jobs),
                         inst.instance_id, inst.num_samples, inst.num_passes,
                         " (capped)" if inst.capped else "", elapsed / n * (len(jobs) - n))
            if reference is not None:
                before = self.counters.compile_s()
                reference.after(n)
                reference_compile_s += self.counters.compile_s() - before
        spent = reference.spent_s if reference is not None else 0.0
        self.counters.pu_sample_s += time.monotonic() - start - spent
        self.counters.pu_compile_s += (self.counters.compile_s() - compile_start
                                       - reference_compile_s)
        self.counters.pu_tokens += sampler.drawn_tokens
        if self.ctx.pu_reference and jobs and (self.counters.reference is None
                     or unit_samples > self.counters.reference[0]):
            self.counters.reference = (unit_samples, sampler, jobs[0].prompt, reference)

    def _interleaved_reference(self, sampler, jobs):
        """A `sampler_lib.InterleavedReference` for this unit when the context asks for
        the reference and it costs at most a third of the unit's fewest samples (one draw
        per instance): on the default study, the final checkpoints' units; else None."""
        if not self.ctx.pu_reference or not jobs:
            return None
        pu = self.unit.passuntil
        per_call = min(sampler_lib.REFERENCE_SAMPLES, sampler.max_samples_per_call)
        fewest = sum(min(pu.batch_size, j.cap) for j in jobs)
        if (REFERENCE_CALLS + 1) * per_call * 3 > fewest:
            return None
        return sampler_lib.InterleavedReference(sampler, jobs[0].prompt, per_call, len(jobs),
                                                calls=REFERENCE_CALLS)

    def _jobs(self, todo, losses) -> list[pu_batch.PassUntilJob]:
        """One `PassUntilJob` per instance: bos + the prompt, left-truncated so prompt +
        completion fit (as the scorer does), its seed, cap and checker; with an exact-match
        checker, the whole cap in one first draw where the target's own probability says
        a batch will not hold r passes (`pu_batch.first_draw_for`)."""
        room = pu_batch.prompt_room(self.task, self.ckpt.config.max_seq_len)
        pu, jobs = self.unit.passuntil, []
        exact = pu.loss_sized_first_draw and self.task.checker == data_checkers.EXACT
        for inst in todo:
            prompt, truncated = pu_batch.prompt_ids(self.ckpt.vocab, inst.prompt,
                                                    self.start_id, room)
            cap = self.unit.cap(inst.id)
            first = pu_batch.first_draw_for(losses[inst.id][R.ANSWER_LOSS_SUM], pu.r,
                                            pu.batch_size, cap) if exact else None
            jobs.append(pu_batch.PassUntilJob(
                instance_id=inst.id, prompt=prompt,
                seed=instance_seed(pu.seed, self.task.name, inst.id),
                cap=cap, truncated=int(truncated), first_draw=first,
                checker=checkers_lib.make_checker(self.task, inst,
                                                  timeout_s=self.ctx.sandbox_timeout_s)))
        return jobs

    def _drive(self, jobs):
        """(the unit's sampler, an iterator of (job, result, samples drawn) per job, in
        order)."""
        pu = self.unit.passuntil
        # One prompt bucket for the whole unit: the sampler compiles once per (model, task).
        longest = max((j.prompt.size for j in jobs), default=1)
        per_call = pu.per_call(max((j.cap for j in jobs), default=pu.k_max))
        sampler = sampler_lib.Sampler(
            self.ckpt.params, self.ckpt.config, self.ckpt.vocab, method=pu.method,
            num_slots=pu.num_slots, max_new_tokens=self.task.max_new_tokens,
            stop_strings=self.task.stop_strings, min_prompt_bucket=sampler_lib.bucket(longest),
            max_samples_per_call=max(4096,
                                     per_call * pu_batch.largest_draw(jobs, pu.batch_size)))
        if self.ctx.draw_factory is None and per_call > 1:
            return sampler, pu_batch.run_batched(sampler, jobs, pu.r, pu.batch_size, per_call)
        if self.ctx.draw_factory is None:
            return sampler, pu_batch.run_pipelined(sampler, jobs, pu.r, pu.batch_size)
        factory = self.ctx.draw_factory or sampler_lib.make_draw
        return sampler, pu_batch.run_sequential(
            jobs, lambda job: factory(sampler, job.prompt, job.checker, job.seed), pu.r,
            pu.batch_size)

    def _aggregate(self, details: list[dict]) -> dict[str, float]:
        if self.unit.kind == plan_lib.MULTIPLE_CHOICE:
            scores = [scorer_lib.QuestionScore.from_detail(i.id, d)
                      for i, d in zip(self.instances, details)]
            return scorer_lib.aggregate(scores)
        out = {R.ANSWER_LOSS: float(np.mean([d[R.ANSWER_LOSS] for d in details]))}
        if self.unit.kind == plan_lib.PASSUNTIL:
            out[R.PASSUNTIL] = float(np.mean([d["estimate"] for d in details]))
            out[R.PASSUNTIL_NAIVE] = float(np.mean([d["naive_estimate"] for d in details]))
            out[R.PASSUNTIL_CAPPED] = float(np.mean([d["capped"] for d in details]))
        return out
