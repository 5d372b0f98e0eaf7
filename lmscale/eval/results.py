"""Result rows: the schema, metric names, and an append-only JSONL results file.

Stage: eval. The evaluator writes one row per (run, checkpoint step, task, metric), plus one
per-instance row per evaluated instance (PassUntil K and passes, or choice log-likelihoods),
to a JSONL file that `lmscale.fit` / `lmscale.report` read. Every metric name is a constant
here; nothing else spells them.

A (run, step, task) *unit* is complete once its `UNIT_COMPLETE` row is in the file: the
aggregate rows and that marker are written in one batch, after every instance row. On
restart, complete units are skipped and the instance rows of an incomplete unit are reused,
so a PassUntil task killed midway redoes only the instances that had not finished. A kill
during a write can leave a last line without its newline: it is dropped (and truncated from
the file) on open; any other unparsable line is an error naming the file and line.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable, Mapping

from absl import logging

# Metric names (the `metric` field of a row).
VALIDATION_LOSS = "validation_loss"  # token-weighted mean NLL, nats/token
ACCURACY = "accuracy"  # argmax of the choice log-likelihoods is gold
ACCURACY_NORM_CHARS = "accuracy_norm_chars"  # argmax of loglik / characters
ACCURACY_NORM_BYTES = "accuracy_norm_bytes"  # argmax of loglik / UTF-8 bytes
ACCURACY_NORM_TOKENS = "accuracy_norm_tokens"  # argmax of loglik / tokens
CORRECT_CHOICE_PROB = "correct_choice_prob"  # softmax over choices, gold's probability
BRIER_SCORE = "brier_score"  # sum over choices of (p - onehot)^2
ANSWER_LOSS = "answer_loss"  # NLL per token of the gold / target continuation, nats
# Per-instance detail of generative units: NLL of the target summed over its tokens, nats (the
# `answer_loss` input of `lmscale.fit.fit_pu_instances`, loss-assisted PassUntil).
ANSWER_LOSS_SUM = "answer_loss_sum"
PASSUNTIL = "passuntil"  # mean over instances of the unbiased PassUntil estimate
PASSUNTIL_NAIVE = "passuntil_naive"  # mean over instances of r/K (Hu et al.'s printed form)
PASSUNTIL_CAPPED = "passuntil_capped"  # fraction of instances that hit k_max
# Greedy decoding units (`lmscale.eval.greedy`): fraction of instances whose greedy
# completion passes the task's checker; its row's detail holds the counts and a binomial
# interval. The unit's rows carry the task name `greedy_task(task)`.
GREEDY_EXACT_MATCH = "greedy_exact_match"
NUM_INSTANCES = "num_instances"  # instances evaluated in the unit
INSTANCE = "instance"  # per-instance row: value is the instance's main number
UNIT_COMPLETE = "unit_complete"  # marker: the (run, step, task) unit is finished

MC_METRICS = (ACCURACY, ACCURACY_NORM_CHARS, ACCURACY_NORM_BYTES, ACCURACY_NORM_TOKENS,
              CORRECT_CHOICE_PROB, BRIER_SCORE, ANSWER_LOSS)
PASSUNTIL_METRICS = (PASSUNTIL, PASSUNTIL_NAIVE, PASSUNTIL_CAPPED, ANSWER_LOSS)
METRICS = frozenset(MC_METRICS + PASSUNTIL_METRICS + (
    VALIDATION_LOSS, NUM_INSTANCES, INSTANCE, UNIT_COMPLETE, GREEDY_EXACT_MATCH))

# The pseudo-task name of the validation-loss unit.
VALIDATION_TASK = "validation"
# Rows of a task's greedy unit are filed under "<task>/greedy": a unit is one (run, step,
# task) key, and "/" never occurs in a task name, so it cannot clash with a real task.
GREEDY_TASK_SUFFIX = "/greedy"


def greedy_task(task: str) -> str:
    """The results-file task name of `task`'s greedy-decoding unit."""
    return task + GREEDY_TASK_SUFFIX


@dataclasses.dataclass(frozen=True)
class RunPoint:
    """Where a checkpoint sits on the scaling axes (shared by all its rows).

    Attributes:
      run: run name (the run directory's name).
      step: checkpoint step.
      tokens: training tokens seen at this step (step * tokens_per_step).
      num_params: total parameters N (unpadded vocabulary).
      num_params_non_embedding: non-embedding parameters (Kaplan et al.'s N).
      num_tokens: the run's planned training tokens D (so M = D / N of the run).
      flops: training compute spent up to this checkpoint, 6 * N_non_embedding * tokens.
    """

    run: str
    step: int
    tokens: int
    num_params: int
    num_params_non_embedding: int
    num_tokens: int
    flops: float


@dataclasses.dataclass(frozen=True)
class ResultRow(RunPoint):
    """One line of the results file.

    Attributes: those of `RunPoint` (inherited), then
      task: eval task name (`VALIDATION_TASK` for validation loss).
      metric: one of `METRICS`.
      value: the number (for `INSTANCE` rows: the estimate or the gold log-likelihood).
      instance: instance id on per-instance rows, else None.
      detail: JSON-ready extra data: PassUntil `num_samples` (K), `num_passes`, `capped`,
        `estimate`, ...; scorer `loglik`, `num_tokens`, ... per choice.
    """

    task: str
    metric: str
    value: float
    instance: str | None = None
    detail: Mapping[str, Any] | None = None

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"ResultRow.metric={self.metric!r}: not one of {sorted(METRICS)}")

    @classmethod
    def make(cls, point: RunPoint, task: str, metric: str, value: float,
             instance: str | None = None, detail: Mapping[str, Any] | None = None):
        return cls(**dataclasses.asdict(point), task=task, metric=metric, value=float(value),
                   instance=None if instance is None else str(instance), detail=detail)

    @property
    def unit(self) -> tuple[str, int, str]:
        return (self.run, self.step, self.task)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, allow_nan=True)


_FIELDS = tuple(f.name for f in dataclasses.fields(ResultRow))
_REQUIRED = tuple(f.name for f in dataclasses.fields(ResultRow)
                  if f.default is dataclasses.MISSING)


def _row_from_dict(d: Mapping[str, Any], where: str) -> ResultRow:
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ValueError(f"{where}: result row lacks field(s) {missing}")
    unknown = sorted(set(d) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown result row field(s) {unknown}")
    try:
        return ResultRow(**d)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def read_rows(path: str | os.PathLike) -> list[ResultRow]:
    """All rows of a results file, the one public JSONL reader.

    Raises:
      ValueError: a line (a cut last line included) is not a JSON row, or a row is invalid;
        the message names the file and line and says how to repair it.
    """
    path = os.fspath(path)
    rows, torn = _read(path)
    if torn is not None:
        with open(path, "rb") as f:
            lineno = f.read(torn).count(b"\n") + 1
            raw = f.read()
        try:
            json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(_cut_line_message(f"{path}:{lineno}", e.msg, lineno, rows)) from None
        raise ValueError(_cut_line_message(f"{path}:{lineno}", "no final newline", lineno, rows))
    return rows


def _cut_line_message(where: str, msg: str, lineno: int, rows: list[ResultRow]) -> str:
    hint = (f" (probably {rows[-1].unit}, the unit of the row before it)" if rows else "")
    return (f"{where}: not a JSON row ({msg}); the line is cut or corrupt: delete line "
            f"{lineno} and the other rows of its (run, step, task) unit{hint}, then rerun the "
            f"evaluator: it redoes every unit that has no {UNIT_COMPLETE} row")


def _read(path: str) -> tuple[list[ResultRow], int | None]:
    """Rows, and the byte offset of a torn last line (None if the file ends cleanly).

    A torn last line (no final newline: killed mid-write) is returned as an offset, for
    `ResultsFile` to drop on resume; `read_rows` raises on it."""
    rows: list[ResultRow] = []
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        end = offset + len(raw)
        if end == len(data):  # the text after the last newline
            if raw.strip():
                return rows, offset
            break
        if raw.strip():
            where = f"{path}:{lineno}"
            try:
                d = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ValueError(_cut_line_message(where, e.msg, lineno, rows)) from None
            rows.append(_row_from_dict(d, where))
        offset = end + 1
    return rows, None


class ResultsFile:
    """Append-only JSONL results, with the resume bookkeeping of the evaluator.

    Args:
      path: the JSONL file; created (with its directory) when absent.
      writable: only process 0 of a multi-host job writes; others open read-only.
    """

    def __init__(self, path: str | os.PathLike, writable: bool = True):
        self.path = os.fspath(path)
        self.writable = writable
        self._rows: list[ResultRow] = []
        if os.path.exists(self.path):
            self._rows, torn = _read(self.path)
            if torn is not None:
                logging.warning("%s: dropping a torn last line at byte %d (killed mid-write)",
                                self.path, torn)
                if writable:
                    with open(self.path, "r+b") as f:
                        f.truncate(torn)
        elif writable:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            open(self.path, "a").close()
        self._complete = {r.unit for r in self._rows if r.metric == UNIT_COMPLETE}

    @property
    def rows(self) -> list[ResultRow]:
        return list(self._rows)

    def append(self, rows: Iterable[ResultRow]) -> None:
        """Appends rows in one write, then flushes and fsyncs (durable before returning)."""
        rows = list(rows)
        if not rows:
            return
        if self.writable:
            text = "".join(r.to_json() + "\n" for r in rows)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        self._rows.extend(rows)
        self._complete.update(r.unit for r in rows if r.metric == UNIT_COMPLETE)

    def is_complete(self, run: str, step: int, task: str) -> bool:
        """Whether the unit's `UNIT_COMPLETE` marker is in the file."""
        return (run, step, task) in self._complete

    def instance_rows(self, run: str, step: int, task: str) -> dict[str, ResultRow]:
        """Per-instance rows already written for a unit, by instance id (last one wins)."""
        return {r.instance: r for r in self._rows
                if r.metric == INSTANCE and r.unit == (run, step, task)
                and r.instance is not None}
