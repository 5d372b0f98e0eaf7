"""Binary: train a ladder of (model, token multiplier, seed) runs.

  python -m lmscale.main.ladder --gin_file=experiments/ladder_tiny.gin --workdir=/tmp/ladder

Flags (those of `lmscale.main.train`) -> gin -> `lmscale.train.ladder.train_ladder` on the
configured `LadderConfig` (the gin file binds its `template` to a `RunSpec`); runs whose run.json
says "done" are skipped, interrupted ones resume from their latest checkpoint.
"""

from __future__ import annotations

from absl import app

from lmscale.main import _cli


def main(argv) -> None:
    config_text = _cli.start(argv)
    from lmscale.train import ladder, loop  # pylint: disable=g-import-not-at-top
    config = _cli.configured(ladder.LadderConfig)()
    ladder.train_ladder(config, _cli.FLAGS.workdir, train_fn=_cli.configured(loop.train),
                        config_text=config_text)


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.parse_flags)
