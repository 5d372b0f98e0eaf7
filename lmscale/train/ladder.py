"""The ladder: many runs of one template, keyed by (N, D, seed).

Stage: train. A `LadderConfig` is a `RunSpec` template plus the models, token multipliers,
seeds and (optionally) per-model batch sizes; `train_ladder` trains every run not yet done
(smallest model first) with `lmscale.train.loop.train` and returns their `RunRecord`s. Both
the ladder binary (`lmscale.main.ladder`) and the study use it.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

from absl import logging

from lmscale.config_check import check_fields
from lmscale.models.config import ConfigError, ModelConfig
from lmscale.train.record import RunRecord
from lmscale.train.spec import RunSpec


@dataclasses.dataclass(frozen=True)
class LadderConfig:
    """What a ladder trains.

    Attributes:
      template: a `RunSpec` whose model, token budget, seed and name are replaced per run
        (seq_len, batch_size, corpus, vocab_spec are shared).
      models: the ladder's models, smallest first; distinct non-empty names (they name runs).
      token_multipliers: M = D / N values (N non-embedding); every model runs each.
      seeds: every (model, M) runs once per seed.
      batch_sizes: optional rows per step, one per model, overriding the template's.
    """

    template: RunSpec
    models: tuple[ModelConfig, ...] = ()
    token_multipliers: tuple[float, ...] = (20.0,)
    seeds: tuple[int, ...] = (0,)
    batch_sizes: tuple[int, ...] | None = None

    def __post_init__(self):
        check_fields(self, ConfigError, ranges={"seeds": {"min": 0}, "batch_sizes": {"min": 1}})
        for field in ("models", "token_multipliers", "seeds"):
            object.__setattr__(self, field, tuple(getattr(self, field)))
            if not getattr(self, field):
                raise ConfigError(f"LadderConfig.{field} is empty")
        if self.batch_sizes is not None:
            object.__setattr__(self, "batch_sizes", tuple(self.batch_sizes))
            if len(self.batch_sizes) != len(self.models):
                raise ConfigError(f"LadderConfig.batch_sizes has {len(self.batch_sizes)} "
                                  f"entries for {len(self.models)} models")
        names = [m.name for m in self.models]
        if len(set(names)) != len(names) or not all(names):
            raise ConfigError(f"LadderConfig.models: names {names} must be non-empty and "
                              f"distinct (they name the run directories)")
        for field in ("token_multipliers", "seeds"):
            values = getattr(self, field)
            if len(set(values)) != len(values):
                raise ConfigError(f"LadderConfig.{field}={list(values)}: repeated value")

    def specs(self) -> list[RunSpec]:
        """One spec per (model, M, seed), smallest model first; names
        `<model>_M<M>_s<seed>`, unique per (model, M, seed)."""
        batches = self.batch_sizes or (self.template.batch_size,) * len(self.models)
        return [dataclasses.replace(self.template, model=m, batch_size=b,
                                    token_multiplier=mult, num_tokens=None, seed=s,
                                    name=f"{m.name}_M{mult:g}_s{s}")
                for m, b in zip(self.models, batches) for mult in self.token_multipliers
                for s in self.seeds]


def train_ladder(config: LadderConfig, workdir: str | pathlib.Path,
                 train_fn: Callable | None = None, config_text: str | None = None,
                 loop_for: Callable | None = None,
                 on_done: Callable[[int, RunSpec, RunRecord], None] | None = None
                 ) -> dict[tuple[int, int, int], RunRecord]:
    """Trains every run of the ladder not yet done; returns (N, D, seed) -> record.

    Args:
      config: the ladder.
      workdir: parent directory of the run directories.
      train_fn: `lmscale.train.loop.train` (default) or a configured version of it; called
        as `train_fn(spec=..., workdir=..., config_text=...)` plus `loop=` when `loop_for`
        is given.
      config_text: saved as each run's config.gin.
      loop_for: spec -> `LoopConfig` for that run (e.g. checkpoint spacing per run).
      on_done: called with (index, spec, record) after each run (progress logging).
    """
    if train_fn is None:
        from lmscale.train import loop  # pylint: disable=g-import-not-at-top
        train_fn = loop.train
    records: dict[tuple[int, int, int], RunRecord] = {}
    specs = config.specs()
    for i, spec in enumerate(specs, 1):
        key = (spec.num_params_non_embedding, spec.total_tokens, spec.seed)
        if key in records:
            raise ConfigError(f"LadderConfig: runs {records[key].run_name} and {spec.name} "
                              f"have the same (N, D, seed) = {key}")
        logging.info("ladder %d/%d: %s (%d steps)", i, len(specs), spec.name, spec.num_steps)
        extra = {"loop": loop_for(spec)} if loop_for is not None else {}
        records[key] = train_fn(spec=spec, workdir=str(workdir), config_text=config_text,
                                **extra)
        if on_done is not None:
            on_done(i, spec, records[key])
    return records
