"""The run record: one typed summary per training run, saved as `<run_dir>/run.json`.

Stage: train. `lmscale.train.loop.train` writes it (status running, then done or failed);
the evaluator and the report read it through `RunRecord.load`. It holds what every later
stage needs about a run: the spec's fields, N (non-embedding and total), D (tokens trained
on), the compute C from `flops` (the one definition the library uses), the tokens per step,
the vocabulary and the unit of its loss, the device mesh, the status and the evaluation
checkpoints saved so far.

Importing this module needs only the standard library.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

RUN_FILE = "run.json"
FORMAT_VERSION = 1
STATUSES = ("running", "done", "failed")
BYTE_VOCAB = "byte"


def flops(num_params_non_embedding: float, tokens: float) -> float:
    """Training compute C = 6 N D in FLOPs, N the non-embedding parameter count (Kaplan et
    al.; Gadre et al. eq. 1), D the tokens trained on. The one definition lmscale uses."""
    return 6.0 * num_params_non_embedding * tokens


def loss_unit(vocab_spec: str) -> str:
    """The unit of a per-token loss under `vocab_spec`: one byte vocabulary id is one byte."""
    return "nats/byte" if vocab_spec == BYTE_VOCAB else "nats/token"


class RunRecordError(ValueError):
    """A run.json is missing, unreadable, of an older format, or lacks a field (names the
    file)."""


@dataclasses.dataclass
class RunRecord:
    """One run's summary (the contents of run.json).

    Attributes:
      run_name: the run directory's name (`RunSpec.name`).
      model_config: `dataclasses.asdict` of the run's `ModelConfig`.
      num_params: N including the embedding tables (unpadded vocabulary).
      num_params_non_embedding: Kaplan et al.'s N, the N of C = 6 N D.
      num_tokens: D, tokens trained on (num_steps * tokens_per_step).
      flops: C = `flops(num_params_non_embedding, num_tokens)`.
      token_multiplier: M = D / N as asked for (None when the run was given D).
      tokens_per_step, batch_size, seq_len, num_steps: the step arithmetic.
      vocab_spec: the vocabulary (`lmscale.data.vocab.get_vocabulary`).
      loss_unit: "nats/byte" for the byte vocabulary, "nats/token" otherwise.
      corpus: the training corpus task.
      seed: init and data-order seed.
      status: running | done | failed.
      checkpoint_every_steps: K, evaluation checkpoints at multiples of K and the last step.
      checkpoints: steps of the evaluation checkpoints saved so far.
      mesh: device mesh axis name -> size.
      num_processes: JAX processes of the run.
      optimizer: `dataclasses.asdict` of the `OptimizerConfig`.
      wall_s: training wall time over all sessions of the run.
      failure, failed_step, last_good_checkpoint: set when status is "failed".
      format_version: the run.json format (`FORMAT_VERSION`).
    """

    run_name: str
    model_config: dict
    num_params: int
    num_params_non_embedding: int
    num_tokens: int
    flops: float
    token_multiplier: float | None
    tokens_per_step: int
    batch_size: int
    seq_len: int
    num_steps: int
    vocab_spec: str
    loss_unit: str
    corpus: str
    seed: int
    status: str = "running"
    checkpoint_every_steps: int = 0
    checkpoints: list[int] = dataclasses.field(default_factory=list)
    mesh: dict[str, int] = dataclasses.field(default_factory=dict)
    num_processes: int = 1
    optimizer: dict[str, Any] = dataclasses.field(default_factory=dict)
    wall_s: float = 0.0
    failure: str | None = None
    failed_step: int | None = None
    last_good_checkpoint: int | None = None
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        if self.status not in STATUSES:
            raise RunRecordError(f"RunRecord.status={self.status!r}: allowed {STATUSES}")

    @property
    def done(self) -> bool:
        return self.status == "done"

    @property
    def N(self) -> int:  # noqa: N802  (the scaling-law symbol)
        """Non-embedding parameters, the N of the laws."""
        return self.num_params_non_embedding

    @property
    def D(self) -> int:  # noqa: N802
        return self.num_tokens

    def tokens_at(self, step: int) -> int:
        """Tokens seen after `step` optimizer steps."""
        return int(step) * self.tokens_per_step

    def flops_at(self, step: int) -> float:
        """Compute spent up to `step` (same `flops` definition)."""
        return flops(self.num_params_non_embedding, self.tokens_at(step))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields (the run.json keys)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "run.json") -> "RunRecord":
        """Builds a record from run.json contents; raises RunRecordError naming `where`."""
        if not isinstance(data, dict):
            raise RunRecordError(f"{where}: expected a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise RunRecordError(
                f"{where}: run.json format_version={version!r}, this lmscale reads "
                f"{FORMAT_VERSION} (written by an older lmscale: retrain the run or rewrite "
                f"its run.json)")
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(f.name for f in dataclasses.fields(cls)
                         if f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING and f.name not in data)
        if missing:
            raise RunRecordError(f"{where}: lacks field(s) {missing}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise RunRecordError(f"{where}: unknown field(s) {unknown}")
        try:
            return cls(**data)
        except (TypeError, RunRecordError) as e:
            raise RunRecordError(f"{where}: {e}") from None

    @classmethod
    def from_spec(cls, spec, **fields) -> "RunRecord":
        """A record of a `RunSpec` (status running unless `fields` say otherwise)."""
        return cls(
            run_name=spec.name, model_config=dataclasses.asdict(spec.model),
            num_params=spec.num_params, num_params_non_embedding=spec.num_params_non_embedding,
            num_tokens=spec.total_tokens, flops=spec.flops,
            token_multiplier=spec.token_multiplier, tokens_per_step=spec.tokens_per_step,
            batch_size=spec.batch_size, seq_len=spec.seq_len, num_steps=spec.num_steps,
            vocab_spec=spec.vocab_spec, loss_unit=loss_unit(spec.vocab_spec),
            corpus=spec.corpus, seed=spec.seed, **fields)

    @staticmethod
    def path(run_dir: str | os.PathLike) -> pathlib.Path:
        return pathlib.Path(run_dir) / RUN_FILE

    @staticmethod
    def exists(run_dir: str | os.PathLike) -> bool:
        return RunRecord.path(run_dir).is_file()

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "RunRecord":
        """The record in `<run_dir>/run.json`.

        Raises:
          FileNotFoundError: no run.json (not a training run directory); names the file.
          RunRecordError: corrupt JSON, an older format, or a missing field; names the file.
        """
        path = cls.path(run_dir)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no run.json (not a training run directory)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunRecordError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(data, where=str(path))

    def save(self, run_dir: str | os.PathLike) -> pathlib.Path:
        """Writes `<run_dir>/run.json` atomically (temporary file, then rename)."""
        path = self.path(run_dir)
        tmp = path.with_name(f".{RUN_FILE}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
        return path
