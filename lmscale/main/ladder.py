"""Binary and library function: train a ladder of (model, token multiplier) runs.

  python -m lmscale.main.ladder --gin_file=experiments/ladder_tiny.gin --workdir=/tmp/ladder

Each (model, M) pair becomes one `RunSpec` (the other spec fields from gin) and one call of
`lmscale.train.loop.train`; runs whose run.json says "done" are skipped, interrupted ones
resume from their latest checkpoint. Flags are those of `lmscale.main.train`.
"""

from __future__ import annotations

from typing import Callable, Sequence

from absl import app, logging

from lmscale.main import _cli


def run_ladder(workdir: str, models: Sequence, token_multipliers: Sequence[float],
               spec_fn: Callable | None = None, train_fn: Callable | None = None,
               config_text: str | None = None) -> list[dict]:
    """Trains every (model, M) pair, smallest model first; returns their run.json dicts.

    Args:
      workdir: parent directory of the run directories.
      models: `ModelConfig`s (distinct names: they name the runs).
      token_multipliers: M values (D = M * N, N non-embedding).
      spec_fn: builds a `RunSpec` from `model=` and `token_multiplier=` (default `RunSpec`).
      train_fn: `lmscale.train.loop.train` or a configured version of it.
      config_text: saved as each run's config.gin.
    """
    from lmscale.train import loop  # pylint: disable=g-import-not-at-top
    from lmscale.train.spec import RunSpec  # pylint: disable=g-import-not-at-top
    spec_fn = spec_fn or RunSpec
    train_fn = train_fn or loop.train
    names = [m.name for m in models]
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"run_ladder models: names {names} must be non-empty and distinct "
                         f"(they name the run directories)")
    results = []
    for model in models:
        for multiplier in token_multipliers:
            spec = spec_fn(model=model, token_multiplier=multiplier)
            logging.info("ladder: %s (%d steps)", spec.name, spec.num_steps)
            results.append(train_fn(spec=spec, workdir=workdir, config_text=config_text))
    return results


def main(argv) -> None:
    flags = _cli.FLAGS
    config_text = _cli.start(argv)
    from lmscale.train import loop  # pylint: disable=g-import-not-at-top
    from lmscale.train.spec import RunSpec  # pylint: disable=g-import-not-at-top
    # The gin files bind `lmscale.main.ladder.run_ladder`, not this `__main__` copy.
    from lmscale.main import ladder  # pylint: disable=g-import-not-at-top
    _cli.configured(ladder.run_ladder)(
        workdir=flags.workdir, spec_fn=_cli.configured(RunSpec),
        train_fn=_cli.configured(loop.train), config_text=config_text)


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.parse_flags)
