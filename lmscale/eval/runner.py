"""Checkpoint evaluator: every eval checkpoint of every run, every task, into result rows.

Stage: eval. Consumes training run directories (`run.json` + orbax checkpoints, read through
`lmscale.train`), evaluation tasks (`lmscale.data.registry`) and a held-out corpus
(`lmscale.data.pipeline.LMStream`); produces rows in an append-only results file
(`lmscale.eval.results`). Units of work are (run, step, task), with validation loss as the
pseudo-task `results.VALIDATION_TASK`:

  * validation: token-weighted mean NLL of the run's corpus "validation" split;
  * multiple-choice tasks: the likelihood `Scorer` (accuracy, normalised accuracies,
    CorrectChoiceProb, Brier score, answer loss);
  * generative tasks with a checker: PassUntil (Hu et al.) per instance with the jitted
    `Sampler` + the task's pass checker + `passuntil.run`, plus the answer loss of the
    target (the input of loss-assisted PassUntil); without a checker, the answer loss only.

Resume. A complete unit is skipped. Per-instance rows are appended (fsynced) as instances
finish, and an interrupted unit reuses them, so only unfinished instances are redone.
Sample i of an instance depends only on (params, prompt, seed of the instance, i), and the
instance seed is a hash of (seed, task, instance id), so a resumed run writes exactly the
rows an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
import zlib
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from absl import logging

from lmscale.data import registry
from lmscale.eval import checkers as checkers_lib
from lmscale.eval import results as R
from lmscale.eval import sampler as sampler_lib
from lmscale.eval import scorer as scorer_lib
from lmscale.models import ModelConfig
from lmscale.train import record as record_lib

RESULTS_FILE = "results.jsonl"


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
    """

    r: int = 2
    k_max: int = 1000
    batch_size: int = 64
    num_slots: int = 64
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 0

    def __post_init__(self):
        from lmscale.config_check import check_fields  # pylint: disable=g-import-not-at-top
        from lmscale.models import ConfigError  # pylint: disable=g-import-not-at-top
        check_fields(self, ConfigError, ranges={"seed": {"min": 0}, "top_k": {"min": 1}})
        for name in ("r", "k_max", "batch_size", "num_slots"):
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


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """Where runs and their parameters come from (default: `lmscale.train`).

    Attributes:
      load_record: run_dir -> its `lmscale.train.record.RunRecord`.
      list_steps: run_dir -> eval checkpoint steps.
      restore_params: (run_dir, step, config) -> unboxed params.
    """

    load_record: Callable[[str], Any]
    list_steps: Callable[[str], list[int]]
    restore_params: Callable[[str, int, ModelConfig], Any]


def train_source() -> CheckpointSource:
    from lmscale.train import checkpoints

    return CheckpointSource(load_record=record_lib.RunRecord.load,
                            list_steps=checkpoints.list_eval_checkpoints,
                            restore_params=lambda d, s, c: checkpoints.restore_params(d, s, c))


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


class _Progress:
    """Logs units done / total with an ETA from this session's mean unit time."""

    def __init__(self, total: int):
        self.total, self.done, self.timed = total, 0, 0
        self.start = time.monotonic()

    def unit(self, desc: str, skipped: bool) -> None:
        self.done += 1
        self.timed += 0 if skipped else 1
        elapsed = time.monotonic() - self.start
        left = self.total - self.done
        eta = f"{elapsed / self.timed * left:.0f}s" if self.timed else "-"
        logging.info("evaluate %d/%d %s%s | elapsed %.0fs | ETA %s", self.done,
                     self.total, desc, " (done earlier: skipped)" if skipped else "",
                     elapsed, eta)


def _resolve_tasks(tasks) -> list:
    return [registry.get_eval_task(t) if isinstance(t, str) else t for t in tasks]


def evaluate(workdir_or_run_dirs, tasks: Sequence = (), *, results_path: str | None = None,
             passuntil_config: PassUntilConfig = PassUntilConfig(),
             validation: ValidationConfig = ValidationConfig(), split: str = "test",
             limit: int | None = None, score_batch_questions: int = 8,
             sandbox_timeout_s: float = 10.0, steps: Sequence[int] | None = None,
             source: CheckpointSource | None = None,
             draw_factory: Callable | None = None,
             stream_factory: Callable | None = None) -> R.ResultsFile:
    """Evaluates every eval checkpoint of every run on every task; appends result rows.

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
      score_batch_questions: questions prefilled together by the scorer.
      sandbox_timeout_s: wall-clock limit of one "code" check.
      steps: evaluate only these checkpoint steps (None: all eval checkpoints).
      source: where runs come from (default `train_source()`; tests pass stand-ins).
      draw_factory: `(sampler, prompt, checker_fn, seed) -> draw` (default
        `sampler.make_draw`).
      stream_factory: `(corpus, split, seq_len, batch, vocab_spec) -> batches` (default a
        finite, unshuffled `LMStream`).

    Returns:
      The `ResultsFile` (all rows, earlier ones included).
    """
    source = source or train_source()
    draw_factory = draw_factory or sampler_lib.make_draw
    stream_factory = stream_factory or _lm_stream
    runs = find_runs(workdir_or_run_dirs, source)
    if results_path is None:
        base = (pathlib.Path(workdir_or_run_dirs) if isinstance(workdir_or_run_dirs, (
            str, os.PathLike)) else pathlib.Path(runs[0]).parent)
        results_path = str(base / RESULTS_FILE)
    task_objs = _resolve_tasks(tasks)
    import jax

    results = R.ResultsFile(results_path, writable=jax.process_index() == 0)
    plan = []
    for run_dir in runs:
        rec = source.load_record(run_dir)
        run_steps = source.list_steps(run_dir)
        if steps is not None:
            run_steps = [s for s in run_steps if s in set(steps)]
        for step in run_steps:
            plan.append((run_dir, rec, step))
    unit_names = ([R.VALIDATION_TASK] if validation.enabled else []) + [t.name for t in task_objs]
    progress = _Progress(len(plan) * len(unit_names))
    logging.info("evaluate: %d runs, %d checkpoints, %d units -> %s", len(runs), len(plan),
                 progress.total, results_path)
    for run_dir, rec, step in plan:
        point = run_point(run_dir, rec, step)
        todo = [u for u in unit_names if not results.is_complete(point.run, step, u)]
        for u in unit_names:
            if u not in todo:
                progress.unit(f"{point.run}@{step} {u}", skipped=True)
        if not todo:
            continue
        config = ModelConfig(**rec.model_config)
        params = source.restore_params(run_dir, step, config)
        vocab = _vocab(rec.vocab_spec)
        if validation.enabled and R.VALIDATION_TASK in todo:
            batches = stream_factory(validation.corpus or rec.corpus, validation.split,
                                     validation.sequence_length or rec.seq_len,
                                     validation.batch_size, rec.vocab_spec)
            loss = scorer_lib.validation_loss(config, params, batches,
                                              max_batches=validation.max_batches)
            results.append([
                R.ResultRow.make(point, R.VALIDATION_TASK, R.VALIDATION_LOSS, loss.loss_nats,
                                 detail={"num_tokens": loss.num_tokens,
                                         "num_batches": loss.num_batches}),
                R.ResultRow.make(point, R.VALIDATION_TASK, R.UNIT_COMPLETE, 1)])
            progress.unit(f"{point.run}@{step} validation loss={loss.loss_nats:.4f}", False)
        for task in task_objs:
            if task.name not in todo:
                continue
            unit = _TaskUnit(task, point, config, params, vocab, results, split, limit,
                             score_batch_questions, passuntil_config, sandbox_timeout_s,
                             draw_factory)
            summary = unit.run()
            progress.unit(f"{point.run}@{step} {task.name} {summary}", False)
    return results


def _lm_stream(corpus, split, seq_len, batch_size, vocab_spec) -> Iterable[dict]:
    from lmscale.data.pipeline import LMStream

    return LMStream(corpus, split, seq_len, batch_size, seed=0, vocab_spec=vocab_spec,
                    repeat=False)


def _vocab(spec: str):
    from lmscale.data.vocab import get_vocabulary

    return get_vocabulary(spec)


class _TaskUnit:
    """One (run, step, task) unit: per-instance rows as they finish, then aggregates."""

    def __init__(self, task, point, config, params, vocab, results, split, limit,
                 score_batch_questions, pu: PassUntilConfig, sandbox_timeout_s, draw_factory):
        self.task, self.point, self.config, self.params = task, point, config, params
        self.vocab, self.results, self.pu = vocab, results, pu
        self.sandbox_timeout_s, self.draw_factory = sandbox_timeout_s, draw_factory
        self.instances = task.instances(split=split, limit=limit)
        if not self.instances:
            raise ValueError(f"task {task.name!r} split {split!r}: no instances")
        self.scorer = scorer_lib.Scorer(config, params, batch_questions=score_batch_questions)
        self.done = results.instance_rows(point.run, point.step, task.name)

    def _row(self, metric, value, instance=None, detail=None):
        return R.ResultRow.make(self.point, self.task.name, metric, value, instance, detail)

    def run(self) -> str:
        todo = [i for i in self.instances if i.id not in self.done]
        if len(todo) < len(self.instances):
            logging.info("%s@%d %s: resuming, %d of %d instances already done",
                         self.point.run, self.point.step, self.task.name,
                         len(self.instances) - len(todo), len(self.instances))
        if self.task.kind == registry.MULTIPLE_CHOICE:
            self._multiple_choice(todo)
        else:
            self._generative(todo)
        done = self.results.instance_rows(self.point.run, self.point.step, self.task.name)
        details = [done[i.id].detail for i in self.instances]
        aggregates = self._aggregate(details)
        rows = [self._row(m, v) for m, v in aggregates.items()]
        rows.append(self._row(R.NUM_INSTANCES, len(details)))
        rows.append(self._row(R.UNIT_COMPLETE, len(details)))
        self.results.append(rows)
        return " ".join(f"{m}={v:.4g}" for m, v in aggregates.items())

    def _multiple_choice(self, todo) -> None:
        questions = [scorer_lib.encode_question(self.vocab, i.id, i.prompt, i.choices, i.gold)
                     for i in todo]
        scores = self.scorer.score(questions) if questions else []
        self.results.append([self._row(R.INSTANCE, s.loglik[s.gold], s.id, s.detail())
                             for s in scores])

    def _answer_losses(self, todo) -> dict[str, dict[str, float]]:
        """Per instance: target NLL per token (`ANSWER_LOSS`) and summed (`ANSWER_LOSS_SUM`)."""
        questions = [scorer_lib.encode_question(self.vocab, i.id, i.prompt, [i.target], 0)
                     for i in todo]
        scores = self.scorer.score(questions) if questions else []
        return {s.id: {R.ANSWER_LOSS: s.metrics()[R.ANSWER_LOSS],
                       R.ANSWER_LOSS_SUM: float(-s.loglik[0])} for s in scores}

    def _generative(self, todo) -> None:
        losses = self._answer_losses(todo)
        if self.task.checker is None:
            self.results.append([self._row(R.INSTANCE, losses[i.id][R.ANSWER_LOSS], i.id,
                                           dict(losses[i.id])) for i in todo])
            return
        from lmscale.eval import passuntil  # needs lmscale.fit; only PassUntil units do

        pu = self.pu
        room = self.config.max_seq_len - self.task.max_new_tokens - 1
        if room < 1:
            raise ValueError(f"task {self.task.name!r}: max_new_tokens="
                             f"{self.task.max_new_tokens} leaves no room for a prompt in "
                             f"max_seq_len={self.config.max_seq_len}")
        prompts = {}
        for inst in todo:
            # bos (id 0) first, as in training (the feature converter's shift) and the
            # scorer; left-truncated (as the scorer does) so prompt + completion fit.
            ids = np.asarray(self.vocab.encode(inst.prompt), np.int32).reshape(-1)
            truncated = max(0, ids.size - room)
            prompts[inst.id] = (np.concatenate([[0], ids[truncated:]]).astype(np.int32),
                                truncated)
        # One prompt bucket for the whole unit: the sampler compiles once per (model, task).
        longest = max((p.size for p, _ in prompts.values()), default=1)
        sampler = sampler_lib.Sampler(
            self.params, self.config, self.vocab, method=pu.method, num_slots=pu.num_slots,
            max_new_tokens=self.task.max_new_tokens, stop_strings=self.task.stop_strings,
            min_prompt_bucket=sampler_lib.bucket(longest))
        start = time.monotonic()
        for n, inst in enumerate(todo, 1):
            seed = instance_seed(pu.seed, self.task.name, inst.id)
            prompt, truncated = prompts[inst.id]
            checker = checkers_lib.make_checker(self.task, inst,
                                                timeout_s=self.sandbox_timeout_s)
            draw = self.draw_factory(sampler, prompt, checker, seed)
            res = passuntil.run(draw, pu.r, pu.k_max, pu.batch_size)
            detail = {"num_samples": res.num_samples, "num_passes": res.num_passes,
                      "capped": res.capped, "estimate": res.estimate,
                      "naive_estimate": res.naive_estimate, "interval": list(res.interval),
                      "r": pu.r, "k_max": pu.k_max, "seed": seed, "truncated": int(truncated),
                      **losses[inst.id]}
            if getattr(checker, "isolation", None):  # code execution: the sandbox level used
                detail["isolation"] = checker.isolation
            self.results.append([self._row(R.INSTANCE, res.estimate, inst.id, detail)])
            elapsed = time.monotonic() - start
            logging.info("%s@%d %s: instance %d/%d %s K=%d passes=%d%s | ETA %.0fs",
                         self.point.run, self.point.step, self.task.name, n, len(todo),
                         inst.id, res.num_samples, res.num_passes,
                         " (capped)" if res.capped else "", elapsed / n * (len(todo) - n))

    def _aggregate(self, details: list[dict]) -> dict[str, float]:
        if self.task.kind == registry.MULTIPLE_CHOICE:
            scores = [scorer_lib.QuestionScore.from_detail(i.id, d)
                      for i, d in zip(self.instances, details)]
            return scorer_lib.aggregate(scores)
        out = {R.ANSWER_LOSS: float(np.mean([d[R.ANSWER_LOSS] for d in details]))}
        if self.task.checker is not None:
            out[R.PASSUNTIL] = float(np.mean([d["estimate"] for d in details]))
            out[R.PASSUNTIL_NAIVE] = float(np.mean([d["naive_estimate"] for d in details]))
            out[R.PASSUNTIL_CAPPED] = float(np.mean([d["capped"] for d in details]))
        return out
