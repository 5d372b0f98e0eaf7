"""The warnings and errors of a plan: what would waste the budget or not run at all.

Stage: report. `check(plan)` (a `core.Plan`; this module does not import core, which calls it) appends to `plan.warnings` / `plan.errors`; each message
names the rung, the task and the numbers behind it.
"""

from __future__ import annotations

from lmscale.report.plan import costs


def _memory(plan) -> None:
    limit, th = plan.device.bytes_limit, plan.thresholds
    if limit is None:
        plan.warnings.append("memory: device size unknown (JAX reports no bytes_limit and none "
                             "was stated): the fit check is skipped")
        return
    for rp in plan.rungs:
        for what, need in (("training", rp.train_bytes), ("sampler", rp.sampler_total_bytes)):
            if not need:
                continue
            msg = (f"rung {rp.rung.name}: {what} needs {costs.format_bytes(need)} per device, "
                   f"device has {costs.format_bytes(limit)} ({plan.device.bytes_source})")
            if need > limit:
                plan.errors.append(msg + ": does not fit")
            elif need > th.memory_headroom * limit:
                plan.warnings.append(msg + f": above {th.memory_headroom:.0%} of it")


def _steps(plan) -> None:
    th = plan.thresholds
    for rp in plan.rungs:
        r = rp.rung
        if r.num_steps < r.warmup_steps + th.min_decay_steps:
            plan.warnings.append(
                f"rung {r.name}: {r.num_steps} steps for {r.warmup_steps} warmup + "
                f"{th.min_decay_steps} decay steps at least: raise the token multiplier or "
                f"shrink the batch ({r.batch_size} rows)")
        if r.batch_size % (plan.mesh.data * plan.mesh.fsdp):
            plan.errors.append(
                f"rung {r.name}: batch {r.batch_size} not divisible by data x fsdp = "
                f"{plan.mesh.data * plan.mesh.fsdp}")
        lo_hi = th.fitted_token_multipliers
        m = r.token_multiplier
        if lo_hi is not None and m is not None and not lo_hi[0] <= m <= lo_hi[1]:
            plan.warnings.append(
                f"rung {r.name}: token multiplier M={m:g} outside the range the laws were "
                f"fitted on [{lo_hi[0]:g}, {lo_hi[1]:g}]: their predictions extrapolate")


def _evaluation(plan) -> None:
    th = plan.thresholds
    train, expected = plan.train_flops, plan.has_prior
    evaluate = plan.eval_flops(expected)
    if train and evaluate > th.eval_fraction * train:
        which = "expected" if expected else "worst-case"
        plan.warnings.append(
            f"evaluation ({which}) costs {costs.format_count(evaluate, 'FLOP')}, "
            f"{evaluate / train:.2f}x training ({costs.format_count(train, 'FLOP')}), above "
            f"the {th.eval_fraction:g} threshold: lower k_max on intermediate checkpoints or "
            f"evaluate fewer checkpoints")
    names = sorted({e.task for rp in plan.rungs for e in rp.evals if e.kind == costs.PASSUNTIL})
    for name in names:
        bad = [(rp.rung.name, e) for rp in plan.rungs for e in rp.evals
               if e.task == name and e.unmeasurable_share is not None
               and e.unmeasurable_share >= th.unmeasurable_share]
        if not bad:
            continue
        shares = ", ".join(f"{r} {e.unmeasurable_share:.0%}" for r, e in bad)
        every = " (every rung)" if len(bad) == len(plan.rungs) else ""
        plan.warnings.append(
            f"task {name}: PassUntil budget too small for the prior PU: share of instances "
            f"with r / PU > k_max: {shares}{every}; those instances will be capped and "
            f"their PU not measured: raise k_max or drop the task")
    unknown = sorted({e.task for rp in plan.rungs for e in rp.evals if e.scored_tokens is None
                      and e.kind not in (costs.PASSUNTIL, costs.DECODE)})
    if unknown:
        plan.warnings.append(f"scored tokens unknown for {unknown} (state them): their "
                             f"evaluation FLOPs are left out")


def check(plan) -> None:
    """Appends every warning and error of `plan` to it."""
    _steps(plan)
    _memory(plan)
    _evaluation(plan)
