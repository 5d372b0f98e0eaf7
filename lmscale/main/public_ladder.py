"""Binary: evaluate a public ladder's downloaded checkpoints, fit, predict, report.

  python -m lmscale.main.public_ladder --gin_file=experiments/public_ladder.gin \
      --workdir=workdir/pythia --gin.PUBLIC_ROOT="'/data/pythia'"

Flags (`lmscale.main._cli`'s) -> gin -> one call of
`lmscale.report.public.evaluate_public_ladder`. Nothing is trained or downloaded; rerunning
skips the (run, checkpoint, task) units already in `<workdir>/results.jsonl`.
"""

from __future__ import annotations

import os

from absl import app, logging

from lmscale.main import _cli


def main(argv) -> None:
    flags = _cli.FLAGS
    config_text = _cli.start(argv)
    from lmscale.report import markdown, public  # pylint: disable=g-import-not-at-top
    run = _cli.configured(public.evaluate_public_ladder)
    analysis = run(workdir=flags.workdir, config_text=config_text)
    if analysis:
        print(markdown.console_summary(os.path.join(flags.workdir, "report.md"), analysis))
    logging.info("public ladder done")


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.parse_flags)
