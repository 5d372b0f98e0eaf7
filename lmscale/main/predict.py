"""Binary: refit a finished study for new targets (trains and evaluates nothing).

  python -m lmscale.main.predict --gin_file=experiments/default.gin --workdir=workdir/default \
      --targets=d_model=128 --targets="N=5e6,M=20"

The gin files are the study's (they configure `study.run_study`); --targets (repeatable;
see `StudyConfig.targets`) replaces the configured targets. One call of
`lmscale.report.study.run_study(mode="predict")` (`predict_workdir`): it reads the workdir's run records and results
file and rewrites report.md, results.json and the figures.
"""

from __future__ import annotations

from absl import flags, logging

from lmscale.main import _cli

_TARGETS = flags.DEFINE_multi_string(
    "targets", [], "Targets to predict (replacing StudyConfig.targets): d_model=W, "
    "N=..,D=.. or N=..,M=..")


def main(argv) -> None:
    flags_ = _cli.FLAGS
    _cli.start(argv)
    from lmscale.report import markdown, study  # pylint: disable=g-import-not-at-top
    predict = _cli.configured(study.run_study)
    analysis = predict(workdir=flags_.workdir, mode="predict", targets=_TARGETS.value or None)
    print("\n".join(markdown.targets_table(analysis)))
    print(markdown.coverage_line(analysis["backtests"]["summary"]))
    logging.info("predict done: %s/report.md", flags_.workdir)


if __name__ == "__main__":
    _cli.run(main)
