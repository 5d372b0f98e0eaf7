"""Beam search on PassUntil instances, for Hu et al.'s beam-search vs sampling table.

Stage: eval. Consumes a run directory (its final checkpoint), PassUntil tasks and beam
sizes; appends per-instance rows to the results file under the pseudo-task
`beam_task_name(task, W)` (metric "instance", value 1.0 when the top beam passes; detail:
beam_size, top_passed, any_passed, top_text, top_score), then num_instances and the
unit_complete marker, so a finished (run, step, task, W) is skipped on a rerun.

Each instance's prompt is built as the PassUntil evaluator builds it (the start id, then
the prompt left-truncated to fit), beam search (`lmscale.eval.search.beam_search`, sums
of log-probabilities, no length penalty) runs for the task's max_new_tokens, and every
beam's text (EOS dropped, cut before the first stop string, as `Sampler.text` cuts a
sample) goes through the task's own pass checker. `lmscale.report.hu.beam_table` sets
the counts beside PassUntil's.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from absl import logging

from lmscale.eval import pu_batch
from lmscale.eval import results as R

BEAM_MARK = "#beam"


def beam_task_name(task: str, beam_size: int) -> str:
    """The pseudo-task the beam rows of `task` at beam size W are written under."""
    return f"{task}{BEAM_MARK}{int(beam_size)}"


def parse_beam_task(name: str) -> tuple[str, int] | None:
    """(task, W) of a beam pseudo-task name, or None for any other task."""
    task, mark, size = name.rpartition(BEAM_MARK)
    return (task, int(size)) if mark and size.isdigit() else None


def beam_texts(params, config, vocab, prompt, beam_size: int, max_new_tokens: int,
               stop_strings: Sequence[str] = (), eos_id: int | None = None):
    """(texts best first, scores) of beam search on `prompt` [T] ids."""
    from lmscale.data.checkers import cut_at_stop
    from lmscale.eval import search

    res = search.beam_search(params, config, prompt, beam_size, max_new_tokens, eos_id=eos_id)
    texts = []
    for row, n, score in zip(res.tokens, res.lengths, res.scores):
        ids = [int(t) for t in row[:n]]
        if ids and eos_id is not None and ids[-1] == eos_id:
            ids = ids[:-1]
        texts.append(None if not np.isfinite(score) else
                     cut_at_stop(vocab.decode(ids), tuple(stop_strings)))
    return texts, [float(s) for s in res.scores]


def evaluate_beam(run_dir: str, tasks: Sequence, beam_sizes: Sequence[int], *,
                  results_path: str, split: str = "test", limit: int | None = None,
                  source=None, mesh=None, sandbox_timeout_s: float = 10.0) -> R.ResultsFile:
    """Beam search on every instance of each PassUntil task at the run's final checkpoint.

    Args:
      run_dir: one run directory (run.json and checkpoints).
      tasks: task names or `EvalTask`s (generative, with a pass checker).
      beam_sizes: the W's to run.
      results_path: the study's results file (rows appended).
      split, limit: the instances, as the PassUntil evaluation took them.
      source, mesh: as `runner.evaluate`.
    Returns:
      The `ResultsFile`.
    """
    import jax

    from lmscale.eval import checkers as checkers_lib
    from lmscale.eval import plan as plan_lib
    from lmscale.eval import runner

    source = source or runner.train_source()
    results = R.ResultsFile(results_path, writable=jax.process_index() == 0)
    record = source.load_record(str(run_dir))
    step = int(record.num_steps)
    run = plan_lib.RunCheckpoints(str(run_dir), record, (step,))
    resolved = runner._resolve_tasks(tasks)  # pylint: disable=protected-access
    todo = [(t, int(w)) for t in resolved for w in beam_sizes
            if not results.is_complete(run.run_name, step, beam_task_name(t.name, w))]
    if not todo:
        return results
    context = plan_lib.EvalContext(results=results, source=source, passuntil=None,
                                   validation=None, split=split, limit=limit, mesh=mesh)
    ckpt = runner._Checkpoint.open(run, step, context)  # pylint: disable=protected-access
    start_id = runner._start_id(ckpt.vocab)  # pylint: disable=protected-access
    eos_id = getattr(ckpt.vocab, "eos_id", None)
    for task, width in todo:
        if not task.checker:
            raise ValueError(f"evaluate_beam: task {task.name!r} has no pass checker")
        room = pu_batch.prompt_room(task, ckpt.config.max_seq_len, "evaluate_beam")
        name = beam_task_name(task.name, width)
        rows = []
        for inst in task.instances(split=split, limit=limit):
            prompt, _ = pu_batch.prompt_ids(ckpt.vocab, inst.prompt, start_id, room)
            texts, scores = beam_texts(ckpt.params, ckpt.config, ckpt.vocab, prompt, width,
                                       task.max_new_tokens, task.stop_strings, eos_id)
            check = checkers_lib.make_checker(task, inst, timeout_s=sandbox_timeout_s)
            passed = [t is not None and bool(check(t)) for t in texts]
            rows.append(ckpt.row(name, R.INSTANCE, float(passed[0]), inst.id, dict(
                beam_size=width, top_passed=passed[0], any_passed=any(passed),
                top_text=texts[0], top_score=scores[0])))
        solved = sum(bool(r.detail["top_passed"]) for r in rows)
        rows += [ckpt.row(name, R.NUM_INSTANCES, len(rows)),
                 ckpt.row(name, R.UNIT_COMPLETE, len(rows))]
        results.append(rows)
        logging.info("beam %s@%d %s W=%d: top beam solves %d of %d", run.run_name, step,
                     task.name, width, solved, len(rows) - 2)
    return results
