"""The fit/report probe: the study's own analysis and report on stand-in result rows.

Stage: report (numpy; the analysis it times is `lmscale.report.study.analyze_and_report`).
`time_report(study_config)` builds, from the plan alone, the run records and result rows a
finished study would hold (every run, evaluated checkpoint, task and instance, in the
evaluator's row format: `scorer.QuestionScore.detail`, `pu_batch.PassUntilInstance.detail`)
with values from a smooth stand-in ladder (loss falling as a power of N and of the tokens
seen, accuracy and PU rising with it), then times the fits, bootstraps, figures and
report written from them into a temporary directory. The fit/report stage does not depend
on the devices, only on the number of runs, checkpoints, tasks and instances, which the
stand-in has exactly, and on how hard the values make the fitters work: the stand-in's
losses follow a law fitted to the default study's measured ones, with scatter at a real
ladder's scale (`LOSS_SD`), and its PU spans the measured range with most instances capped
on the small rungs. It still does not reach the ~600 bounded least-squares refits the real
default study's analysis makes (4 here; docs/planning.md): the estimate runs ~0.6x.
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


LOSS_SD = 0.03  # relative scatter of a stand-in checkpoint's loss about the law


def _quality(n: float, tokens: float) -> float:
    """Stand-in loss of a model of n parameters after `tokens` tokens (nats per token): a
    law fitted to the default study's measured validation losses (2.85 at w32's first
    checkpoint to 1.58 at w96's last, within 0.1), so that the fitters see losses, and
    PU and accuracy ranges, where a real ladder puts them."""
    return 21.7 * n ** -0.39 + 18.1 * tokens ** -0.176


def _mc_rows(make, task: str, instances: int, loss: float, rng) -> list:
    from lmscale.eval import results as R  # pylint: disable=g-import-not-at-top
    from lmscale.eval import scorer  # pylint: disable=g-import-not-at-top

    scores = []
    for i in range(instances):
        margin = 2.0 / loss + rng.normal(0.0, 0.5)
        loglik = -loss * 4 + rng.normal(0.0, 0.3, 4)
        loglik[i % 4] += margin
        scores.append(scorer.QuestionScore(
            id=str(i), loglik=loglik, num_tokens=np.full(4, 4), num_chars=np.full(4, 4),
            num_bytes=np.full(4, 4), greedy=np.zeros(4, bool), gold=i % 4))
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
    for spec in config.specs():
        steps = checkpoint_steps(spec.num_steps, spec.tokens_per_step, spec.total_tokens,
                                 config.eval_checkpoints)
        rec = RunRecord.from_spec(spec, status="done", checkpoints=steps)
        infos[rec.run_name] = rec
        for step in steps:
            point = runner.run_point(spec.name, rec, step)
            # Scatter about the law at a real ladder's scale (the default study's losses
            # sit up to 0.1 off a smooth law): without it the loss laws converge at once.
            loss = _quality(rec.N, rec.tokens_at(step)) * float(np.exp(rng.normal(0.0, LOSS_SD)))
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
