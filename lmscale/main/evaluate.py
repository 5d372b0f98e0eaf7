r"""Binary: evaluate every checkpoint of every run in a ladder workdir.

  python -m lmscale.main.evaluate --gin_file=experiments/runs/evaluate.gin \
      --workdir=/tmp/ladder --gin_bindings="TASKS = ['gen_uicl_identity']"

Flags (`lmscale.main._cli`'s, plus `--results_path`) -> gin -> one call of
`lmscale.eval.runner.evaluate` (configured by the gin files). Rows go to
`<workdir>/results.jsonl` unless `--results_path` is given; the resolved configuration is
saved beside them as `evaluate_config.gin`. Rerunning skips finished (run, step, task)
units and resumes an interrupted PassUntil task. `--dry_run` prints the evaluation plan of
the runs found in the workdir (`lmscale.report.plan.adapter.evaluation_dry_run`: per rung
and task the scored tokens, PassUntil samples and FLOPs, sampler memory) and evaluates
nothing.
"""

from __future__ import annotations

import pathlib

from absl import app, flags, logging

from lmscale.main import _cli

flags.DEFINE_string("results_path", None, "Results JSONL (default <workdir>/results.jsonl).")
flags.DEFINE_bool("dry_run", False, "Print the evaluation plan of the workdir's runs and "
                  "exit: nothing is evaluated.")
CONFIG_FILE = "evaluate_config.gin"
_PLANNED = ("tasks", "passuntil_config", "validation", "limit", "steps")


def main(argv) -> None:
    config_text = _cli.start(argv)
    import jax  # pylint: disable=g-import-not-at-top
    from lmscale.eval import runner  # pylint: disable=g-import-not-at-top

    FLAGS = _cli.FLAGS  # noqa: N806
    if FLAGS.dry_run:
        import gin  # pylint: disable=g-import-not-at-top
        from lmscale.report.plan import adapter  # pylint: disable=g-import-not-at-top
        bound = gin.get_bindings(runner.evaluate)
        print(adapter.evaluation_dry_run(FLAGS.workdir, **{k: bound[k] for k in _PLANNED
                                                           if k in bound}), end="")
        return
    logging.info("gin config:\n%s", config_text)
    results = _cli.configured(runner.evaluate)(FLAGS.workdir, results_path=FLAGS.results_path)
    if jax.process_index() == 0:
        out = pathlib.Path(results.path).parent / CONFIG_FILE
        out.write_text(config_text, encoding="utf-8")
    logging.info("evaluate: %d rows in %s", len(results.rows), results.path)


if __name__ == "__main__":
    app.run(main)
