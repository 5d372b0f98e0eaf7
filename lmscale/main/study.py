"""Binary: the predict-before-you-train study (train a ladder, evaluate, fit, report).

  python -m lmscale.main.study --gin_file=experiments/default.gin --workdir=workdir/default

Flags (those of `lmscale.main.train`: --gin_file, --gin_bindings, --workdir and the
multi-host flags) -> gin -> one call of `lmscale.report.study.run_study`. Rerunning resumes:
finished runs, checkpoints, tasks and PassUntil instances are skipped.
"""

from __future__ import annotations

import os

from absl import app, logging

from lmscale.main import _cli


def main(argv) -> None:
    flags = _cli.FLAGS
    config_text = _cli.start(argv)
    from lmscale.report import study  # pylint: disable=g-import-not-at-top
    run = _cli.configured(study.run_study)
    analysis = run(workdir=flags.workdir, config_text=config_text)
    if analysis:
        report = os.path.join(flags.workdir, "report.md")
        print(f"\nReport: {report}")
        for p in analysis["predictions"]:
            err = "n/a" if p["rel_error"] is None else f"{100 * p['rel_error']:.2f}%"
            print(f"  {p['quantity']:<28} {p['task']:<26} {p['method']:<32} predicted "
                  f"{p['predicted']:.5g}  measured {p['measured']:.5g}  rel. error {err}")
    logging.info("study done")


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.parse_flags)
