"""Greedy-decoding units: each instance of a generative task decoded greedily, then checked.

Stage: eval. Consumes a restored checkpoint (model config, parameters, vocabulary), a
generative `EvalTask` with a checker and the evaluation context of `lmscale.eval.plan`;
produces result rows under the task name `results.greedy_task(task)`: one per-instance
row each (value 1.0 / 0.0: the greedy completion passed the task's checker; detail: the
completion cut at the stop strings, what the checker compared, the generated tokens) and
the unit's `GREEDY_EXACT_MATCH` (the fraction passed, with counts and a binomial interval
in its detail, `lmscale.eval.greedy_stats`).

This is the papers' greedy exact match beside PassUntil: TriviaQA with its aliases and
SQuAD normalisation, GSM8K's final number, LAMBADA's last word (`lmscale.data.checkers`,
bound by `lmscale.eval.checkers.make_checker`, the same checks PassUntil samples get).

How it decodes. The jitted sampler with `Greedy()` and one sample per prompt; up to
`num_slots` prompts share one sampler call (`Sampler.sample_many`), every call padded to
the same rows and capacity and every prompt to the unit's longest-prompt bucket, so a unit
compiles one decode loop. A completion ends at EOS, at a stop string's tokens or after the
task's `max_new_tokens`; its text is cut at the first stop string. The prompt is
[start id] + the prompt's tokens, left-truncated so that prompt and completion fit, as
for PassUntil. Greedy decoding takes no random key, so the rows do not depend on the seed,
on the slot count or on how instances were batched (up to float32 ties between tokens).

Resume: instance rows are appended after each sampler call; an interrupted unit decodes
only the instances without a row.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
from absl import logging

from lmscale.data import checkers as kinds
from lmscale.eval import checkers as checkers_lib
from lmscale.eval import greedy_stats
from lmscale.eval import pu_batch
from lmscale.eval import results as R
from lmscale.eval import sampler as sampler_lib

DEFAULT_SLOTS = 64


def make_sampler(checkpoint, task, longest_prompt: int, num_slots: int
                 ) -> sampler_lib.Sampler:
    """The greedy sampler of one unit: one prompt bucket, `num_slots` prompts a call."""
    return sampler_lib.Sampler(
        checkpoint.params, checkpoint.config, checkpoint.vocab, method=sampler_lib.Greedy(),
        num_slots=num_slots, max_new_tokens=task.max_new_tokens,
        stop_strings=task.stop_strings,
        min_prompt_bucket=sampler_lib.bucket(longest_prompt),
        max_samples_per_call=max(num_slots, 1))


def decode(sampler: sampler_lib.Sampler, prompts: Sequence[np.ndarray], rows: int
           ) -> list[tuple[str, int]]:
    """Greedy completions of `prompts` in one sampler call padded to `rows` prompts:
    (text without EOS, cut at the first stop string; generated tokens) per prompt."""
    n = len(prompts)
    got = sampler.sample_many(list(prompts), [1] * n, [0] * n, min_rows=rows,
                              min_capacity=rows)
    return [(sampler.text(c)[0], int(c.lengths[0])) for c in got]


def _detail(task, inst, text: str, num_tokens: int, truncated: int, passed: bool,
            check) -> dict[str, Any]:
    detail: dict[str, Any] = {"passed": bool(passed), "text": text,
                              "num_tokens": num_tokens}
    if task.checker in kinds.STRING_CHECKS:
        detail["prediction"] = kinds.prediction(task.checker, text, task.stop_strings,
                                                task.answer_pattern)
    if truncated:
        detail["truncated"] = truncated
    if getattr(check, "isolation", None):  # code tasks: the sandbox level of the check
        detail["isolation"] = check.isolation
    return detail


def run_unit(task, checkpoint, context, start_id: int) -> str:
    """Decodes, checks and records every instance of `task` at one checkpoint.

    Args:
      task: a generative `EvalTask` with a checker (`plan.plan_evaluation` checks it).
      checkpoint: the runner's restored checkpoint (`params`, `config`, `vocab`, `point`,
        `row(task, metric, value, instance, detail)`).
      context: the `lmscale.eval.plan.EvalContext` (results file, split, limit, sandbox
        timeout; `passuntil.num_slots` sets the prompts decoded together).
      start_id: the id put before every prompt (the runner's `_start_id`).

    Returns:
      The progress note ("greedy_exact_match=0.25 [0.1, 0.47]").

    Raises:
      ValueError: the task has no instances or no room for a prompt.
    """
    name, point = R.greedy_task(task.name), checkpoint.point
    instances = task.instances(split=context.split, limit=context.limit)
    if not instances:
        raise ValueError(f"task {task.name!r} split {context.split!r}: no instances")
    room = pu_batch.prompt_room(task, checkpoint.config.max_seq_len, "greedy")
    done = context.results.instance_rows(point.run, point.step, name)
    todo = [i for i in instances if i.id not in done]
    encoded = {i.id: pu_batch.prompt_ids(checkpoint.vocab, i.prompt, start_id, room)
               for i in todo}
    slots = int(getattr(context.passuntil, "num_slots", DEFAULT_SLOTS))
    if todo:
        sampler = make_sampler(checkpoint, task, max(ids.size for ids, _ in encoded.values()),
                               slots)
        start = time.monotonic()
        for at in range(0, len(todo), slots):
            batch = todo[at:at + slots]
            outs = decode(sampler, [encoded[i.id][0] for i in batch], slots)
            rows = []
            for inst, (text, num_tokens) in zip(batch, outs):
                check = checkers_lib.make_checker(task, inst,
                                                  timeout_s=context.sandbox_timeout_s)
                passed = bool(check(text))
                rows.append(checkpoint.row(name, R.INSTANCE, float(passed), inst.id, _detail(
                    task, inst, text, num_tokens, encoded[inst.id][1], passed, check)))
            context.results.append(rows)
            logging.info("%s@%d %s: %d/%d instances decoded greedily | %.1fs", point.run,
                         point.step, name, at + len(batch), len(todo),
                         time.monotonic() - start)
    done = context.results.instance_rows(point.run, point.step, name)
    summary = greedy_stats.summarize([done[i.id].detail["passed"] for i in instances])
    context.results.append([
        checkpoint.row(name, R.GREEDY_EXACT_MATCH, summary["exact_match"], detail=summary),
        checkpoint.row(name, R.NUM_INSTANCES, len(instances)),
        checkpoint.row(name, R.UNIT_COMPLETE, len(instances))])
    low, high = summary["interval"]
    return f"{R.GREEDY_EXACT_MATCH}={summary['exact_match']:.4g} [{low:.3g}, {high:.3g}]"
