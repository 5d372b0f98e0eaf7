"""Evaluation wall time from measured rates: compiles once per shape, runs per unit of work.

Stage: report (pure arithmetic; the rates come from `probe.time_evaluation`, which runs the
real evaluator on a stand-in checkpoint of each rung shape).

The evaluator (`lmscale.eval.runner`) spends its time in two ways, and they scale apart:

  * compiles, paid once per rung shape in the study's process (every seed and checkpoint
    of the rung reuses the jitted programs): the validation step, one scorer program per
    distinct padded batch shape (`Scorer.batch_shapes`: multiple-choice questions and
    PassUntil answers share one jitted scorer), and the sampler's programs per PassUntil
    task and path (the final checkpoint's sequential draws, the intermediate checkpoints'
    several-prompts-per-call draws at their lower cap);
  * runs, paid per evaluated checkpoint: validation batches, scorer batches, PassUntil
    instances (prefill, answer loss, checks, rows) and samples (the expected number under
    the prior PU, else the worst case of k_max per instance), each at the probe's seconds
    per sample times the expected completion length (the mean answer plus its stop token)
    over the probe's mean length: the sampler refills a slot as soon as it stops.

The estimate is for a cold compilation cache (a fresh workdir). A rerun in the same
workdir reads the programs back from `<workdir>/.jax_cache` instead: its compile part is an
upper bound there, which is why it is kept apart (`compile_s`).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from lmscale.report.plan import costs

FINAL, INTERMEDIATE = "final", "intermediate"


@dataclasses.dataclass(frozen=True)
class EvalRates:
    """What the probe measured on one rung shape (seconds).

    Attributes:
      validation_compile_s: first-call cost of the validation step (compile).
      validation_fixed_s: per checkpoint: opening the held-out stream, the unit's rows.
      validation_batch_s: per validation batch.
      score_compile_s: per distinct scorer batch shape (one program each).
      score_batch_s: per multiple-choice scorer batch (warm).
      score_fixed_s: per multiple-choice unit (task and checkpoint) besides its batches.
      sampler_compile_s: task -> path -> the sampler's first-call cost on that path.
      sample_s: task -> path -> seconds per probe sample (warm, checks included).
      sample_tokens: task -> mean tokens of the probe's samples (its stand-in model stops
        at the task's stop strings by chance): a real sample costs
        sample_s x expected completion length / sample_tokens.
      instance_s: task -> path -> seconds per PassUntil instance besides its samples
        (prefill, its share of the answer-loss batches, rows).
    """

    validation_compile_s: float = 0.0
    validation_fixed_s: float = 0.0
    validation_batch_s: float = 0.0
    score_compile_s: float = 0.0
    score_batch_s: float = 0.0
    score_fixed_s: float = 0.0
    sampler_compile_s: Mapping[str, Mapping[str, float]] = dataclasses.field(
        default_factory=dict)
    sample_s: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    sample_tokens: Mapping[str, float] = dataclasses.field(default_factory=dict)
    instance_s: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)


def passuntil_samples(task, rung) -> dict[str, float]:
    """Samples one PassUntil task draws on `rung` (all seeds) per path: the final
    checkpoints at k_max, the others at k_max_intermediate; expected under the prior PU
    (batched draws, `costs.expected_drawn_samples`) when given, else the caps."""
    caps = {FINAL: task.k_max, INTERMEDIATE: task.k_max_intermediate or task.k_max}
    checkpoints = {FINAL: rung.seeds, INTERMEDIATE: rung.seeds * (rung.checkpoints - 1)}
    prior = task.prior_for(rung.name)
    out = {}
    for path, cap in caps.items():
        if prior is None:
            per_checkpoint = float(task.instances * cap)
        else:
            pu = np.broadcast_to(prior, (task.instances,))
            per_checkpoint = float(np.sum(costs.expected_drawn_samples(
                pu, task.r, cap, task.draw_batch)))
        out[path] = checkpoints[path] * per_checkpoint
    return out


def decode_seconds(task, rung, rates: EvalRates) -> float:
    """Greedy / beam decoding (`core.DECODE`), costed per generated token at the sampler's
    rate on the final checkpoints of this rung's PassUntil probes (the same decode step:
    their per-sample time over their mean completion); 0 when no PassUntil task was probed
    (no rate: the plan's FLOPs still count the work)."""
    per_token = [rates.sample_s[name][FINAL] / max(1e-9, rates.sample_tokens.get(name, 1.0))
                 for name in rates.sample_s if FINAL in rates.sample_s[name]]
    if not per_token:
        return 0.0
    sequences = rung.seeds * (1 if task.final_only else rung.checkpoints) * task.instances
    return sequences * task.decodes * task.expected_generated_tokens * float(
        np.mean(per_token))


def scorer_shapes(tasks: Sequence) -> set[tuple]:
    """Distinct scorer batch shapes of every task: one compiled program each per rung."""
    return {tuple(s) for t in tasks for s in t.score_shapes}


def evaluation_seconds(rung, tasks: Sequence, rates: EvalRates) -> dict[str, float]:
    """Estimated evaluation seconds of `rung` (all seeds and evaluated checkpoints).

    Args:
      rung: a `core.Rung` (seeds, checkpoints).
      tasks: its `core.Task`s (validation, multiple choice, PassUntil).
      rates: the probe's measurements on this rung's shape.

    Returns:
      {"compile_s", "validation_s", "scoring_s", "passuntil_s", "total_s"}: compile paid
      once per rung shape, the others summed over the evaluated checkpoints.
    """
    checkpoints = rung.seeds * rung.checkpoints
    compile_s = len(scorer_shapes(tasks)) * rates.score_compile_s
    validation_s = scoring_s = passuntil_s = 0.0
    for t in tasks:
        if t.kind == costs.VALIDATION:
            compile_s += rates.validation_compile_s
            validation_s += checkpoints * (rates.validation_fixed_s
                                           + t.batches * rates.validation_batch_s)
        elif t.kind == costs.MULTIPLE_CHOICE:
            scoring_s += checkpoints * (rates.score_fixed_s
                                        + len(t.score_shapes) * rates.score_batch_s)
        elif t.kind == costs.DECODE:
            passuntil_s += decode_seconds(t, rung, rates)
        else:
            samples = passuntil_samples(t, rung)
            length = t.expected_generated_tokens / max(
                1e-9, rates.sample_tokens.get(t.name, t.generated_tokens))
            runs = {FINAL: rung.seeds, INTERMEDIATE: rung.seeds * (rung.checkpoints - 1)}
            for path in (FINAL, INTERMEDIATE):
                if not runs[path]:
                    continue
                compile_s += rates.sampler_compile_s.get(t.name, {}).get(path, 0.0)
                passuntil_s += (runs[path] * t.instances
                                * rates.instance_s.get(t.name, {}).get(path, 0.0)
                                + samples[path] * length
                                * rates.sample_s.get(t.name, {}).get(path, 0.0))
    return {"compile_s": compile_s, "validation_s": validation_s, "scoring_s": scoring_s,
            "passuntil_s": passuntil_s,
            "total_s": compile_s + validation_s + scoring_s + passuntil_s}
