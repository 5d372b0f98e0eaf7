"""A plan as plain text (fixed-width tables) and as JSON.

Stage: report. `format_plan(plan)` is what `dry_run` prints; `plan_to_json(plan)` is the
same content as a JSON-serialisable dict (numbers unformatted); `plan_vs_measured` sets a
saved plan beside a finished study's measured stage times (the report's plan section).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from lmscale.report.plan import core
from lmscale.report.plan.costs import format_bytes, format_count

fc = format_count


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.1f}s"
    if s < 7200:
        return f"{s / 60:.1f}m"
    if s < 172800:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def _mfu(flops: float, seconds: float | None, plan: core.Plan) -> str:
    peak = plan.device.peak_flops
    if not seconds or not peak:
        return "-"
    return f"{100 * flops / (seconds * peak * plan.mesh.devices):.1f}%"


def _training(plan: core.Plan) -> list[str]:
    rows = []
    for rp in plan.rungs:
        r = rp.rung
        m = "-" if r.token_multiplier is None else f"{r.token_multiplier:g}"
        rows.append([r.name, fc(rp.n_non_embedding), fc(rp.n_total), m, fc(r.tokens),
                     str(r.num_steps), f"{r.batch_size}x{r.seq_len}", str(r.seeds),
                     str(r.checkpoints), fc(rp.flops_6nd), fc(rp.flops_model),
                     _seconds(rp.train_seconds), _mfu(rp.flops_model, rp.train_seconds, plan)])
    header = ["rung", "N", "N total", "M", "D/run", "steps", "tok/step", "seeds", "ckpts",
              "6ND", "model FLOPs", "est. time", "MFU"]
    return _table(header, rows)


def _memory(plan: core.Plan) -> list[str]:
    rows = []
    for rp in plan.rungs:
        t, s = rp.train_memory, rp.sampler_memory
        measured = rp.measured.get("peak_bytes")
        rows.append([rp.rung.name, format_bytes(t["params"]), format_bytes(t["optimizer"]),
                     format_bytes(t["gradients"]), format_bytes(t["activations"]),
                     format_bytes(rp.train_bytes), format_bytes(measured),
                     format_bytes(s.get("kv_cache")), format_bytes(rp.sampler_total_bytes or None)])
    header = ["rung", "params", "AdamW", "grads", "activations", "train total", "measured",
              "KV cache", "sampler total"]
    return _table(header, rows)


def _evaluation(plan: core.Plan) -> list[str]:
    rows = []
    for rp in plan.rungs:
        for e in rp.evals:
            pu = e.kind in (core.PASSUNTIL, core.DECODE)
            rows.append([rp.rung.name, e.task, str(e.checkpoints), fc(e.scored_tokens),
                         fc(e.samples_worst) if pu else "", fc(e.samples_expected) if pu else "",
                         fc(e.decode_tokens_worst) if pu else "",
                         fc(e.flops_worst), fc(e.flops_expected),
                         "-" if e.unmeasurable_share is None else f"{e.unmeasurable_share:.0%}"])
        rows.append([rp.rung.name, "(all tasks)", "", "", "", "", "",
                     fc(rp.eval_flops(False)), fc(rp.eval_flops(True)), ""])
    header = ["rung", "task", "ckpts", "scored tok", "samples max", "samples E",
              "decode tok max", "FLOPs max", "FLOPs E", "r/PU>k_max"]
    return _table(header, rows)


def _totals(plan: core.Plan, sections: Sequence[str]) -> list[str]:
    train = plan.train_flops
    worst, expected = plan.eval_flops(False), plan.eval_flops(True)
    lines = []
    if TRAINING in sections:
        lines.append(f"training: 6ND {fc(plan.train_flops_6nd, 'FLOP')}, model FLOPs "
                     f"{fc(train, 'FLOP')}")
    if EVALUATION in sections:
        ratio = TRAINING in sections and train > 0
        lines.append(
            f"evaluation: worst case {fc(worst, 'FLOP')}"
            + (f" ({worst / train:.3g}x training)" if ratio else "")
            + ((f", expected {fc(expected, 'FLOP')}"
                + (f" ({expected / train:.3g}x training)" if ratio else ""))
               if plan.has_prior else ", expected: no prior PU given"))
    times = []
    for section, seconds in ((TRAINING, [rp.train_seconds for rp in plan.rungs]),
                             (EVALUATION, [rp.eval_seconds for rp in plan.rungs])):
        if section in sections and all(t is not None for t in seconds):
            times.append(f"{section} {_seconds(sum(seconds))}")
    if times and plan.report_seconds is not None and EVALUATION in sections:
        times.append(f"fit/report {_seconds(plan.report_seconds)}")
    if times:
        probe = "" if plan.probe_seconds is None else f", {plan.probe_seconds:.0f} s"
        lines.append(f"estimated wall time: {', '.join(times)} (from the probe{probe})")
    compile_s = [rp.eval_breakdown.get("compile_s") for rp in plan.rungs]
    if EVALUATION in sections and compile_s and all(c is not None for c in compile_s):
        lines.append(f"of the evaluation, compiles {_seconds(sum(compile_s))} (once per rung "
                     f"shape and scorer batch shape, for a cold compilation cache: a rerun "
                     f"in the same workdir reads them back from <workdir>/.jax_cache)")
    return lines


def _eval_times(plan: core.Plan) -> list[str]:
    """Per rung: the probe's estimated evaluation seconds by part."""
    keys = ("compile_s", "validation_s", "scoring_s", "passuntil_s", "total_s")
    rows = [[rp.rung.name] + [_seconds(rp.eval_breakdown.get(k)) for k in keys]
            for rp in plan.rungs if rp.eval_breakdown]
    if not rows:
        return []
    return ["", "Estimated evaluation time per rung (probe: the evaluator on a stand-in "
            "checkpoint; compiles once per shape, runs x every evaluated checkpoint)"] + (
        _table(["rung", "compile", "validation", "MC scoring", "PassUntil", "total"], rows))


TRAINING, MEMORY, EVALUATION = "training", "memory", "evaluation"
SECTIONS = (TRAINING, MEMORY, EVALUATION)


def format_plan(plan: core.Plan, sections: Sequence[str] = SECTIONS) -> str:
    """The plan as text: the `sections` (training, memory, evaluation), totals, warnings,
    errors."""
    m, d = plan.mesh, plan.device
    out = [f"Plan: {plan.name}",
           f"mesh data={m.data} x fsdp={m.fsdp} x tensor={m.tensor} ({m.devices} devices, "
           f"{d.platform}); compute dtype {m.compute_bytes} bytes; device memory "
           f"{format_bytes(d.bytes_limit)} ({d.bytes_source}); peak "
           f"{fc(d.peak_flops, 'FLOP/s')} per device"]
    if TRAINING in sections:
        out += ["", "Training (per rung, all seeds; model FLOPs = 6(N + V d)D + "
                "6 L T H_q d_h D)"] + _training(plan)
    if MEMORY in sections:
        out += ["", "Memory per device (training: params, AdamW moments, grads float32 over "
                "fsdp x tensor; activations of batch/(data x fsdp) rows; sampler: one device)"]
        out += _memory(plan)
    if EVALUATION in sections:
        out += ["", "Evaluation (all evaluated checkpoints; max = k_max samples per instance, "
                "E = expected under the prior PU)"]
        out += _evaluation(plan)
        out += _eval_times(plan)
    out += ["", "Totals"] + ["  " + x for x in _totals(plan, sections)]
    if plan.warnings:
        out += ["", "Warnings"] + [f"  ! {w}" for w in plan.warnings]
    if plan.errors:
        out += ["", "Errors"] + [f"  X {e}" for e in plan.errors]
    return "\n".join(out) + "\n"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def plan_to_json(plan: core.Plan) -> dict[str, Any]:
    """The plan as a JSON-serialisable dict: inputs, per-rung costs, totals, warnings."""
    rungs = []
    for rp in plan.rungs:
        entry = _plain(rp)
        entry["train_bytes"] = rp.train_bytes
        entry["sampler_bytes"] = rp.sampler_total_bytes
        rungs.append(entry)
    return {"name": plan.name, "mesh": _plain(plan.mesh), "device": _plain(plan.device),
            "thresholds": _plain(plan.thresholds), "rungs": rungs,
            "probe_seconds": plan.probe_seconds, "report_seconds": plan.report_seconds,
            "totals": {"train_flops_6nd": plan.train_flops_6nd,
                       "train_flops_model": plan.train_flops,
                       "eval_flops_worst": plan.eval_flops(False),
                       "eval_flops_expected": plan.eval_flops(True) if plan.has_prior else None},
            "warnings": list(plan.warnings), "errors": list(plan.errors)}


def plan_vs_measured(plan_json: Mapping[str, Any],
                     measured: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """The saved plan (`plan_to_json`) beside a finished study's measured wall times.

    Args:
      plan_json: the plan as saved at the start of the study.
      measured: stage ("train", "evaluate") -> rung name -> measured seconds (all seeds);
        "report" -> {"(all)": seconds of the fit/report stage}.

    Returns one row per (stage, rung) plus a "(all)" row per stage: stage, rung, flops
    (training: model FLOPs; evaluation: expected FLOPs where a prior was given, else worst
    case), estimated_s (None without a probe), measured_s (None if not measured) and ratio
    (measured / estimated); last a "fit/report" row (estimate: the plan's report_seconds;
    no FLOPs: numpy on the host).
    """
    rows: list[dict[str, Any]] = []
    for stage, key in (("train", "train_seconds"), ("evaluate", "eval_seconds")):
        stage_rows = []
        for rung in plan_json.get("rungs", []):
            name = rung["rung"]["name"]
            if stage == "train":
                flops = rung["flops_model"]
            else:
                flops = sum(e["flops_expected"] if e.get("flops_expected") is not None
                            else e["flops_worst"] for e in rung["evals"])
            stage_rows.append({"stage": stage, "rung": name, "flops": flops,
                               "estimated_s": rung.get(key),
                               "measured_s": measured.get(stage, {}).get(name)})
        total = {"stage": stage, "rung": "(all)",
                 "flops": sum(r["flops"] for r in stage_rows)}
        for field in ("estimated_s", "measured_s"):
            values = [r[field] for r in stage_rows]
            total[field] = None if any(v is None for v in values) else sum(values)
        for r in stage_rows + [total]:
            est, got = r["estimated_s"], r["measured_s"]
            r["ratio"] = got / est if est and got is not None else None
        rows += stage_rows + [total]
    est, got = plan_json.get("report_seconds"), measured.get("report", {}).get("(all)")
    rows.append({"stage": "fit/report", "rung": "(all)", "flops": 0.0, "estimated_s": est,
                 "measured_s": got, "ratio": got / est if est and got is not None else None})
    return rows
