"""Public ladders: Hugging Face checkpoints as evaluator runs, with no training.

Stage: eval. Consumes a directory of downloaded LLaMA- or GPT-NeoX-layout checkpoints
(`config.json`, `*.safetensors`, `tokenizer.json` each), e.g. a ladder's sizes x training
steps laid out as `<root>/<model>/<revision>/`, described by a `PublicLadder` that names
every checkpoint with its model, its tokens seen D and optionally its optimizer step and
non-embedding N; produces the `runner.CheckpointSource` and the run names that
`runner.evaluate(run_names, tasks, source=public_source(ladder), results_path=...)` reads.

Runs. By default one run per model: its checkpoints are the run's steps, the last one its
final checkpoint, as for a trained ladder (fits use final checkpoints, the intermediate
ones feed the loss-vs-performance views). With `per_checkpoint_runs` every checkpoint is a
run of its own, so each (N, D) is a rung (Gadre et al.'s grid of sizes x token counts).

Coordinates. N is the non-embedding count of the checkpoint's config.json
(`lmscale.models.count_params`) unless the entry gives `num_params`. D is the entry's
`tokens`. A run's checkpoints must sit on one token grid: with steps given for every
entry of a model, `tokens = step * tokens_per_step` for one integer tokens_per_step; with
no steps, the step of a checkpoint is its token count (tokens_per_step 1). Either way the
evaluator's rows carry `tokens` = D and `flops` = 6 N D exactly.

The vocabulary of a run is its last checkpoint's tokenizer ("hf:<dir>",
`lmscale.data.hf_vocab`) unless the ladder names one.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Mapping, Sequence

from absl import logging

from lmscale.data import vocab as vocab_lib
from lmscale.eval import runner
from lmscale.models import ConfigError, ModelConfig, count_params
from lmscale.models import convert
from lmscale.train import record as record_lib


class PublicLadderError(ConfigError):
    """A public-ladder description is inconsistent or names a missing checkpoint; the
    message names the entry or file (a ConfigError: the binaries print it without a
    traceback)."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One downloaded checkpoint of a public ladder.

    Attributes:
      model: the model (size) it belongs to; the run name.
      path: its directory (config.json, *.safetensors, tokenizer.json), relative to
        `PublicLadder.root` unless absolute.
      tokens: D, tokens seen when it was saved.
      step: its optimizer step (None: the step is `tokens`).
      num_params: non-embedding N (None: counted from config.json).
    """

    model: str
    path: str
    tokens: int
    step: int | None = None
    num_params: int | None = None

    @classmethod
    def coerce(cls, value, where: str) -> "Checkpoint":
        """A Checkpoint from itself or a mapping with its fields (gin dict literals)."""
        if isinstance(value, Checkpoint):
            return value
        if not isinstance(value, Mapping):
            raise PublicLadderError(f"{where}: expected a Checkpoint or a dict, got "
                                    f"{type(value).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        missing = sorted({"model", "path", "tokens"} - set(value))
        if unknown or missing:
            raise PublicLadderError(f"{where}: unknown field(s) {unknown}, missing field(s) "
                                    f"{missing}; fields are {sorted(names)}")
        return cls(**dict(value))


@dataclasses.dataclass(frozen=True)
class PublicLadder:
    """A public ladder: which checkpoints, and what the evaluator needs to know of them.

    Attributes:
      name: title of the study (report heading).
      root: directory that relative checkpoint paths start from (None: every path must
        be absolute; checked when the checkpoints are read).
      checkpoints: `Checkpoint`s or dicts with their fields, in any order.
      corpus: validation corpus task (`lmscale.data.corpora`); None: no corpus recorded
        (validation loss then needs `ValidationConfig.corpus`, or `enabled=False`).
      seq_len: validation rows' length (capped at each model's max_seq_len).
      vocab_spec: vocabulary for every run (None: each run's last checkpoint's tokenizer).
      per_checkpoint_runs: every checkpoint its own run (see the module docstring).
      dtype: compute dtype override of every model (None: the converter's default).
    """

    name: str = "public ladder"
    root: str | None = None
    checkpoints: tuple = ()
    corpus: str | None = None
    seq_len: int = 512
    vocab_spec: str | None = None
    per_checkpoint_runs: bool = False
    dtype: str | None = None

    def __post_init__(self):
        entries = tuple(Checkpoint.coerce(c, f"PublicLadder.checkpoints[{i}]")
                        for i, c in enumerate(self.checkpoints))
        object.__setattr__(self, "checkpoints", entries)
        if not entries:
            raise PublicLadderError("PublicLadder.checkpoints is empty")
        if self.seq_len < 2:
            raise PublicLadderError(f"PublicLadder.seq_len={self.seq_len}: must be >= 2")
        for i, c in enumerate(entries):
            where = f"PublicLadder.checkpoints[{i}] ({c.model!r}, {c.path!r})"
            for field in ("tokens", "step", "num_params"):
                value = getattr(c, field)
                if value is not None and (isinstance(value, bool) or int(value) != value
                                          or value < 1):
                    raise PublicLadderError(f"{where}: {field}={value!r} must be a positive "
                                            f"integer")
            if not c.model or "/" in c.model:
                raise PublicLadderError(f"{where}: model must be a non-empty name without '/'")
        seen: dict[tuple[str, int], int] = {}
        for i, c in enumerate(entries):
            key = (c.model, c.step if c.step is not None else c.tokens)
            if key in seen:
                raise PublicLadderError(f"PublicLadder.checkpoints[{i}] and [{seen[key]}]: "
                                        f"model {c.model!r} has two checkpoints at step "
                                        f"{key[1]}")
            seen[key] = i

    def checkpoint_dir(self, entry: Checkpoint) -> pathlib.Path:
        """The entry's directory; raises PublicLadderError for a relative path without a
        root."""
        path = pathlib.Path(entry.path).expanduser()
        if path.is_absolute():
            return path
        if not self.root:
            raise PublicLadderError(f"PublicLadder.root is unset and checkpoint "
                                    f"{entry.model!r} has the relative path {entry.path!r}: "
                                    f"set the root (PUBLIC_ROOT in experiments/public_ladder"
                                    f".gin) or give absolute paths")
        return pathlib.Path(self.root).expanduser() / path

    def models(self) -> dict[str, list[Checkpoint]]:
        """Model name -> its checkpoints in step order."""
        out: dict[str, list[Checkpoint]] = {}
        for c in self.checkpoints:
            out.setdefault(c.model, []).append(c)
        return {m: sorted(cs, key=lambda c: (c.step or c.tokens, c.tokens))
                for m, cs in out.items()}


@dataclasses.dataclass(frozen=True)
class PublicRun:
    """One evaluator run of a public ladder: its record and step -> checkpoint dir."""

    record: record_lib.RunRecord
    paths: dict[int, pathlib.Path]


def _read_config(ladder: PublicLadder, entry: Checkpoint) -> tuple[ModelConfig, str]:
    """(ModelConfig, model_type) of an entry's config.json; errors name the file."""
    directory = ladder.checkpoint_dir(entry)
    file = directory / "config.json"
    if not file.is_file():
        raise PublicLadderError(f"{file}: no config.json (checkpoint {entry.model!r} at "
                                f"{entry.path!r}; root {ladder.root!r})")
    try:
        hf = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PublicLadderError(f"{file}: not valid JSON ({e})") from None
    overrides = {"dtype": ladder.dtype} if ladder.dtype else {}
    config = convert.config_from_hf(hf, where=str(file), **overrides)
    return config.replace(name=entry.model), hf.get("model_type")


def _steps(model: str, entries: Sequence[Checkpoint]) -> tuple[list[int], int]:
    """(steps, tokens_per_step) of one run's checkpoints (see the module docstring)."""
    given = [c.step is not None for c in entries]
    if not any(given):
        return [c.tokens for c in entries], 1
    if not all(given):
        raise PublicLadderError(f"PublicLadder: model {model!r} gives step for some "
                                f"checkpoints and not others; give all or none")
    last = entries[-1]
    per_step = last.tokens // last.step
    bad = [(c.step, c.tokens) for c in entries if c.tokens != c.step * per_step]
    if per_step < 1 or bad:
        raise PublicLadderError(
            f"PublicLadder: model {model!r}: (step, tokens) {bad or [(last.step, last.tokens)]}"
            f" are not on one grid tokens = step * {per_step}; omit the steps (each "
            f"checkpoint's step is then its token count)")
    return [int(c.step) for c in entries], per_step


def _record(ladder: PublicLadder, run: str, entries: Sequence[Checkpoint]) -> PublicRun:
    configs = [_read_config(ladder, c) for c in entries]
    config, _ = configs[-1]
    for c, (other, _) in zip(entries, configs):
        if other != config:
            raise PublicLadderError(
                f"{ladder.checkpoint_dir(c) / 'config.json'}: model {run!r} differs from its "
                f"last checkpoint's config.json ({ladder.checkpoint_dir(entries[-1])})")
    counted = count_params(config)
    ns = {c.num_params for c in entries if c.num_params is not None}
    if len(ns) > 1:
        raise PublicLadderError(f"PublicLadder: model {run!r} gives different num_params "
                                f"{sorted(ns)}")
    n = ns.pop() if ns else counted.non_embedding
    steps, per_step = _steps(run, entries)
    last = entries[-1]
    vocab_spec = ladder.vocab_spec or vocab_lib.HF_PREFIX + str(
        ladder.checkpoint_dir(last).absolute())
    record = record_lib.RunRecord(
        run_name=run, model_config=dataclasses.asdict(config), num_params=counted.total,
        num_params_non_embedding=int(n), num_tokens=int(last.tokens),
        flops=record_lib.flops(n, last.tokens), token_multiplier=None,
        tokens_per_step=per_step, batch_size=0,
        seq_len=min(ladder.seq_len, config.max_seq_len), num_steps=steps[-1],
        vocab_spec=vocab_spec, loss_unit=record_lib.loss_unit(vocab_spec),
        corpus=ladder.corpus or "", seed=0, status="done", checkpoints=list(steps))
    return PublicRun(record, {s: ladder.checkpoint_dir(c) for s, c in zip(steps, entries)})


def build_runs(ladder: PublicLadder) -> dict[str, PublicRun]:
    """Run name -> `PublicRun`, reading every checkpoint's config.json (no weights).

    Raises:
      PublicLadderError: a missing or unreadable config.json, checkpoints of one model
        with different configs, steps off one token grid (each named).
      lmscale.models.CheckpointError: a config.json lmscale cannot represent.
    """
    runs: dict[str, PublicRun] = {}
    for model, entries in ladder.models().items():
        if ladder.per_checkpoint_runs:
            for c in entries:
                name = f"{model}@{c.step or c.tokens}"
                runs[name] = _record(ladder, name, [c])
        else:
            runs[model] = _record(ladder, model, entries)
    for name, run in runs.items():
        r = run.record
        logging.info("public ladder %r: run %s N=%d (total %d) D=%d, %d checkpoint(s) %s",
                     ladder.name, name, r.N, r.num_params, r.D, len(r.checkpoints),
                     r.checkpoints)
    return runs


def public_source(runs: Mapping[str, PublicRun]) -> runner.CheckpointSource:
    """The evaluator's source over `build_runs`' runs; the run "directories" given to
    `runner.evaluate` are the run names (`list(runs)`)."""

    def run(name: str) -> PublicRun:
        key = pathlib.PurePath(name).name
        if key not in runs:
            raise KeyError(f"public ladder: no run {name!r}; runs: {sorted(runs)}")
        return runs[key]

    def restore(name: str, step: int, config: ModelConfig, mesh=None) -> Any:
        # `mesh` is unused: the evaluator places the returned host arrays onto it.
        del mesh
        paths = run(name).paths
        if step not in paths:
            raise KeyError(f"public ladder: run {name!r} has no checkpoint at step {step}; "
                           f"steps: {sorted(paths)}")
        logging.info("public ladder: loading %s step %d from %s", name, step, paths[step])
        _, params = convert.load_checkpoint(paths[step], config=config)
        return params

    return runner.CheckpointSource(load_record=lambda name: run(name).record,
                                   list_steps=lambda name: list(run(name).record.checkpoints),
                                   restore_params=restore)
