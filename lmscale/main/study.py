"""Binary: the predict-before-you-train study (train a ladder, evaluate, fit, report).

  python -m lmscale.main.study --gin_file=experiments/default.gin --workdir=workdir/default
  python -m lmscale.main.study --gin_file=experiments/default.gin --workdir=w --dry_run

Flags (those of `lmscale.main.train`: --gin_file, --gin_bindings, --workdir and the
multi-host flags) -> gin -> one call of `lmscale.report.study.run_study`. Rerunning resumes:
finished runs, checkpoints, tasks and PassUntil instances are skipped.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from lmscale.main import _cli

_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the study plan (runs, tokens, FLOPs, "
                             "evaluation units) and exit: nothing is trained.")
_PROBE = flags.DEFINE_bool("probe", False, "Time the plan with a short probe (a few train "
                           "steps and sampler calls per shape): printed with --dry_run, "
                           "else saved in <workdir>/plan.json and set beside the measured "
                           "times in the report.")


def main(argv) -> None:
    flags = _cli.FLAGS
    config_text = _cli.start(argv)
    from lmscale.report import markdown, study  # pylint: disable=g-import-not-at-top
    if _DRY_RUN.value:
        print(_cli.configured(study.run_study)(workdir=flags.workdir, mode="plan",
                                               probe=_PROBE.value)["plan"])
        return
    run = _cli.configured(study.run_study)
    analysis = run(workdir=flags.workdir, config_text=config_text, probe=_PROBE.value)
    if analysis:
        print(markdown.console_summary(os.path.join(flags.workdir, "report.md"), analysis))
    logging.info("study done")


if __name__ == "__main__":
    app.run(main, flags_parser=_cli.parse_flags)
