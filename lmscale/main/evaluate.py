r"""Evaluates every checkpoint of every run in a ladder workdir (absl binary, thin).

  python -m lmscale.main.evaluate --gin_file=experiments/runs/evaluate.gin \
      --workdir=/tmp/ladder --gin_bindings="TASKS = ['gen_uicl_identity']"

Flags -> gin -> one call of `lmscale.eval.runner.evaluate` (configured by the gin files).
Rows go to `<workdir>/results.jsonl` unless `--results_path` is given; rerunning skips
finished (run, step, task) units and resumes an interrupted PassUntil task.
"""

from absl import app, flags, logging
import gin

from lmscale import runtime

flags.DEFINE_multi_string("gin_file", [], "Gin files, in order.")
flags.DEFINE_multi_string("gin_bindings", [], "Extra gin bindings, after the files.")
flags.DEFINE_string("workdir", None, "Ladder workdir (runs in its children) or one run dir.")
flags.DEFINE_string("results_path", None, "Results JSONL (default <workdir>/results.jsonl).")
flags.mark_flag_as_required("workdir")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    runtime.tune_host_allocator()  # before JAX starts its CPU threads
    from lmscale.eval import runner

    gin.parse_config_files_and_bindings(FLAGS.gin_file, FLAGS.gin_bindings)
    logging.info("gin config:\n%s", gin.config_str())
    evaluate = gin.get_configurable(runner.evaluate)
    results = evaluate(FLAGS.workdir, results_path=FLAGS.results_path)
    logging.info("evaluate: %d rows in %s", len(results.rows), results.path)


if __name__ == "__main__":
    app.run(main)
