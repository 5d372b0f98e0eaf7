"""Binary: train a ladder of (model, token multiplier, seed) runs.

  python -m lmscale.main.ladder --gin_file=experiments/ladder_tiny.gin --workdir=/tmp/ladder
  python -m lmscale.main.ladder --gin_file=experiments/ladder_tiny.gin --workdir=w --dry_run

Flags (those of `lmscale.main.train`) -> gin -> `lmscale.train.ladder.train_ladder` on the
configured `LadderConfig` (the gin file binds its `template` to a `RunSpec`); runs whose run.json
says "done" are skipped, interrupted ones resume from their latest checkpoint. `--dry_run`
prints the training plan (`lmscale.report.plan.adapter.ladder_dry_run`: per rung N, D, steps,
FLOPs, memory per device; `--probe` adds measured time estimates) and trains nothing.
"""

from __future__ import annotations

from absl import app, flags

from lmscale.main import _cli

_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the training plan and exit: nothing "
                             "is trained.")
_PROBE = flags.DEFINE_bool("probe", False, "With --dry_run: time a few train steps per "
                           "shape and print wall-time estimates.")


def main(argv) -> None:
    config_text = _cli.start(argv)
    from lmscale.train import ladder, loop  # pylint: disable=g-import-not-at-top
    config = _cli.configured(ladder.LadderConfig)()
    if _DRY_RUN.value:
        from lmscale.report.plan import adapter  # pylint: disable=g-import-not-at-top
        from lmscale.train import optim, state  # pylint: disable=g-import-not-at-top
        print(adapter.ladder_dry_run(config, _cli.configured(optim.OptimizerConfig)(),
                                     _cli.configured(state.MeshConfig)(),
                                     _cli.configured(loop.LoopConfig)(), probe=_PROBE.value),
              end="")
        return
    ladder.train_ladder(config, _cli.FLAGS.workdir, train_fn=_cli.configured(loop.train),
                        config_text=config_text)


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.parse_flags)
