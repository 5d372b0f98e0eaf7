"""The fit/report probe: the study's own analysis and report on stand-in result rows.

Stage: report (numpy; the analysis it times is `lmscale.report.study.analyze_and_report`).
`time_report(study_config)` builds, from the plan alone, the run records and result rows a
finished study would hold (every run, evaluated checkpoint, task and instance, in the
evaluator's row format: `scorer.QuestionScore.detail`, `pu_batch.PassUntilInstance.detail`)
with values from a smooth stand-in ladder (loss falling as a power of N and of the tokens
seen, accuracy and PU rising with it), then times the fits, bootstraps, figures and
report written from them into a temporary directory. The fit/report stage does not depend
on the devices, only on the number of runs, checkpoints, tasks and instances, which the
stand-in has exactly, and on which branches the values send the analysis down: the
stand-in's losses are shaped as the default study's measured ones (`FINAL_LOSS`: linear
in log C on the fitted rungs, so the backtest picks the compute law with its floor at the
bound and every bootstrap draw refits it by bounded least squares), its multiple-choice
scores as the measured ones (accuracy ~0.3 .. ~0.48), its PU over the measured range with
most instances capped on the small rungs. On the default study it makes the real
analysis's 606 `_fit_lm` calls (4 before; tests/report/test_reportprobe.py) and timed
0.8 .. 1.1x the real rows' analysis in the same process (docs/planning.md).
"""

from __future__ import annotations

import math
import pathlib
import tempfile
import time

import numpy as np


def checkpoint_steps(num_steps: int, tokens_per_step: int, total_tokens: int,
                     checkpoints: int) -> list[int]:
    """The evaluation checkpoints the study keeps: every ceil(D / checkpoints) tokens
    rounded up to whole steps, and the last step."""
    every = -(-(-(-total_tokens // checkpoints)) // tokens_per_step)
    steps = list(range(every, num_steps, every)) + [num_steps]
    return sorted(set(steps))


# The stand-in ladder, fitted to the default study's measured rows (/tmp/base, 2026-12-02;
# docs/planning.md). Final validation losses: 2.58, 2.18, 1.88, 1.66 on the four fitted
# rungs fall linearly in log C (slope -0.25 per e-fold, bending slightly down): faster
# than any power law with a floor can follow, so the study's backtest rejects Kaplan's
# L(N) (non-finite prediction from 3 sizes), picks the compute law with its irreducible
# loss at the bound 0 and refits it by bounded least squares in every bootstrap draw (the
# ~600 `_fit_lm` calls of the real analysis); the two-step accuracy's task-loss law does
# the same. A stand-in with scatter on the final losses, or a floor, takes cheaper
# branches (Kaplan-with-floor refits; 4 `_fit_lm` calls instead of ~600).
FINAL_LOSS = (2.585, -1.101, -0.154)  # final loss = a + b v + c v^2, v = log(C/C_min) / log(C_max/C_min)
CHECKPOINT_EXPONENT = 0.15  # loss at t of a run's D tokens: final x (t / D)^-0.15 (measured
#                             1.10 .. 1.26 x final at 1/3 of the run, 1.02 .. 1.06 at 2/3)
LOSS_SD = 0.01  # relative scatter of an intermediate checkpoint's loss about the curve


def _quality(v: float, fraction: float) -> float:
    """Stand-in validation loss (nats per token) of a run at `fraction` of its tokens,
    whose compute sits at `v` in [0, 1] on the study's log-compute range (`FINAL_LOSS`)."""
    a, b, c = FINAL_LOSS
    return max(a + b * v + c * v * v, 0.2) * fraction ** -CHECKPOINT_EXPONENT


def _mc_rows(make, task: str, instances: int, loss: float, rng) -> list:
    """Multiple-choice rows as the default study's 4-way questions measured them: the
    gold choice's loss per token 1.19 x the validation loss, every choice's scattered by
    0.37 .. 0.77 nats per token (growing as the loss falls, three-tenths of it fresh per
    checkpoint, the rest the question's own), the gold 0.14 .. 0.56 above the others:
    accuracy ~0.3 at loss 2.6 to ~0.48 at 1.6, as measured."""
    from lmscale.eval import results as R  # pylint: disable=g-import-not-at-top
    from lmscale.eval import scorer  # pylint: disable=g-import-not-at-top

    learnt = max(0.0, 2.58 - loss)
    spread, gap = 0.37 + 0.4 * learnt, 0.136 + 0.42 * learnt
    scores = []
    for i in range(instances):
        own = np.random.default_rng([7, i])  # the question's fixed difficulty and length
        n = int(own.integers(4, 12))
        noise = np.sqrt(0.7) * own.normal(0.0, 1.0, 4) + np.sqrt(0.3) * rng.normal(0.0, 1.0, 4)
        per_token = -1.19 * loss - gap + spread * noise
        per_token[i % 4] += gap
        scores.append(scorer.QuestionScore(
            id=str(i), loglik=per_token * n, num_tokens=np.full(4, n),
            num_chars=np.full(4, n), num_bytes=np.full(4, n), greedy=np.zeros(4, bool),
            gold=i % 4))
    rows = [make(task, R.INSTANCE, s.loglik[s.gold], s.id, s.detail()) for s in scores]
    rows += [make(task, m, v) for m, v in scorer.aggregate(scores).items()]
    return rows + [make(task, R.NUM_INSTANCES, instances), make(task, R.UNIT_COMPLETE,
                                                                instances)]


def _pu_rows(make, task: str, instances: int, loss: float, r: int, cap: int, rng) -> list:
    from lmscale.eval import pu_batch  # pylint: disable=g-import-not-at-top
    from lmscale.eval import results as R  # pylint: disable=g-import-not-at-top
    from lmscale.fit import passuntil as pu_fit  # pylint: disable=g-import-not-at-top

    rows, details = [], []
    for i in range(instances):
        # Mean PU ~0.003 at loss 2.6 to ~0.17 at 1.6, instances spread over e^7, most capped
        # on the small rungs (the default study measured 0.0027 .. 0.174, 86% .. 50% capped).
        p = float(np.clip(math.exp(6.7 - 4.1 * loss - 0.06 * i), 1e-6, 0.9))
        k = int(rng.negative_binomial(r, p) + r)  # draws to the r-th pass
        capped = k > cap
        k, passes = (cap, min(r - 1, int(rng.binomial(cap, p)))) if capped else (k, r)
        estimate = pu_fit.estimate(k, passes, r, capped)
        inst = pu_batch.PassUntilInstance(
            instance_id=str(i), num_samples=k, num_passes=passes, capped=capped,
            estimate=estimate, naive_estimate=passes / k,
            interval=tuple(pu_fit.interval(k, passes, capped)), r=r, cap=cap,
            seed=i, truncated=0, answer_loss=loss, answer_loss_sum=4 * loss)
        details.append(inst.detail())
        rows.append(make(task, R.INSTANCE, inst.estimate, inst.instance_id, inst.detail()))
    rows += [make(task, R.ANSWER_LOSS, loss),
             make(task, R.PASSUNTIL, float(np.mean([d["estimate"] for d in details]))),
             make(task, R.PASSUNTIL_NAIVE,
                  float(np.mean([d["naive_estimate"] for d in details]))),
             make(task, R.PASSUNTIL_CAPPED, float(np.mean([d["capped"] for d in details])))]
    return rows + [make(task, R.NUM_INSTANCES, instances), make(task, R.UNIT_COMPLETE,
                                                                instances)]


def stand_in_study(config, instances: dict[str, int], seed: int = 0):
    """(run name -> `RunRecord`, result rows) of a finished `config` (a `StudyConfig`)
    with stand-in values; `instances`: task name -> instances evaluated."""
    from lmscale.eval import results as R  # pylint: disable=g-import-not-at-top
    from lmscale.eval import runner  # pylint: disable=g-import-not-at-top
    from lmscale.train.record import RunRecord  # pylint: disable=g-import-not-at-top

    rng = np.random.default_rng(seed)
    infos, rows = {}, []
    pu, k_int = config.passuntil, config.intermediate_k_max or config.passuntil.k_max
    specs = config.specs()
    log_c = [math.log(s.flops) for s in specs]  # C = 6 N D of each run
    span = max(log_c) - min(log_c) or 1.0
    for spec, lc in zip(specs, log_c):
        steps = checkpoint_steps(spec.num_steps, spec.tokens_per_step, spec.total_tokens,
                                 config.eval_checkpoints)
        rec = RunRecord.from_spec(spec, status="done", checkpoints=steps)
        infos[rec.run_name] = rec
        for step in steps:
            point = runner.run_point(spec.name, rec, step)
            # Final losses on the curve itself (scatter there flips the backtest's choice
            # of law, run to run); intermediate checkpoints scattered about it.
            loss = _quality((lc - min(log_c)) / span, step / spec.num_steps)
            if step != spec.num_steps:
                loss *= float(np.exp(rng.normal(0.0, LOSS_SD)))
            make = lambda t, m, v, i=None, d=None, p=point: R.ResultRow.make(  # noqa: E731
                p, t, m, v, i, d)
            if config.validation.enabled:
                rows += [make(R.VALIDATION_TASK, R.VALIDATION_LOSS, loss),
                         make(R.VALIDATION_TASK, R.UNIT_COMPLETE, 1)]
            for task in config.mc_tasks:
                rows += _mc_rows(make, task, instances[task], loss, rng)
            cap = pu.k_max if step == spec.num_steps else k_int
            for task in config.passuntil_tasks:
                rows += _pu_rows(make, task, instances[task], loss, pu.r, cap, rng)
    return infos, rows


def time_report(config, instances: dict[str, int]) -> float:
    """Seconds of `analyze_and_report` on `stand_in_study(config, instances)`."""
    from lmscale.report import study as study_lib  # pylint: disable=g-import-not-at-top

    infos, rows = stand_in_study(config, instances)
    with tempfile.TemporaryDirectory(prefix="lmscale_report_probe_") as tmp:
        start = time.perf_counter()
        study_lib.analyze_and_report(config, pathlib.Path(tmp), infos, rows, setup={})
        return time.perf_counter() - start
