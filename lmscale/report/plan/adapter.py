"""From today's study configuration to plan inputs, and the dry run the binaries call.

Stage: report. `plan_study_config(study_config, ...)` builds the `Rung`s from the study's
run specs and the `Task`s from its evaluation settings (token counts from the task
registry, through the study's vocabulary), then `core.build_plan`. `dry_run(...)` is the
function a binary's `--dry_run` calls: it returns the printed plan. `lmscale.report.study.load_gin` reads a
study gin file into the configs the binaries would build, without training anything.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Mapping, Sequence

from absl import logging

from lmscale.models.config import ConfigError
from lmscale.report.plan import core
from lmscale.report.plan import render

VALIDATION_NAME = "validation"  # lmscale.eval.results.VALIDATION_TASK
_STDLIB = "lmscale_stdlib_py"
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _warmup(optimizer, num_steps: int) -> int:
    try:
        return optimizer.warmup_for(num_steps)
    except ConfigError:
        return num_steps  # the plan's step check then warns; training would refuse
    except AttributeError:
        return 0


def rungs_from_specs(specs: Sequence, checkpoints: int, optimizer=None) -> list[core.Rung]:
    """One `Rung` per distinct model of `specs` (RunSpecs), counting its seeds."""
    rungs: dict[str, core.Rung] = {}
    for s in specs:
        name = s.model.name or s.name
        if name in rungs:
            rungs[name] = dataclasses.replace(rungs[name], seeds=rungs[name].seeds + 1)
            continue
        rungs[name] = core.Rung(name=name, model=s.model, seq_len=s.seq_len,
                                batch_size=s.batch_size, num_steps=s.num_steps,
                                checkpoints=checkpoints,
                                warmup_steps=_warmup(optimizer, s.num_steps),
                                token_multiplier=s.token_multiplier)
    return list(rungs.values())


def validation_tokens(corpus: str, vocab_spec: str, validation, seq_len: int) -> float | None:
    """Tokens the validation loss scores per checkpoint: max_batches x batch x length when
    capped; for the embedded standard-library corpus with the byte vocabulary, the bytes of
    its validation files; otherwise unknown (None)."""
    length = validation.sequence_length or seq_len
    if validation.max_batches is not None:
        return float(validation.max_batches * validation.batch_size * length)
    if (validation.corpus or corpus) == _STDLIB and vocab_spec == "byte":
        from lmscale.data import corpora

        files = corpora.stdlib_files()["validation"]
        return float(sum(pathlib.Path(p).stat().st_size for p in files))
    return None


def _encoded_length(vocab, text: str) -> int:
    return len(vocab.encode(text))


def task_from_registry(name: str, vocab_spec: str, limit: int | None, passuntil,
                       k_max_intermediate: int | None,
                       prior_pu: Mapping[str, Sequence[float]] | None) -> core.Task:
    """A plan `Task` from a registered eval task: instance count and token lengths measured
    by encoding its instances with the study's vocabulary."""
    from lmscale.data import registry
    from lmscale.data.vocab import get_vocabulary

    task = registry.get_eval_task(name)
    vocab = get_vocabulary(vocab_spec)
    instances = task.instances(split="test", limit=limit)
    if not instances:
        raise ConfigError(f"task {name!r}: no instances")
    prompts = [_encoded_length(vocab, i.prompt) + 1 for i in instances]  # + bos
    mean_prompt = sum(prompts) / len(prompts)
    if task.kind == registry.MULTIPLE_CHOICE:
        scored = sum(p + sum(_encoded_length(vocab, c) for c in i.choices)
                     for p, i in zip(prompts, instances)) / len(instances)
        return core.Task(name=name, kind=core.MULTIPLE_CHOICE, instances=len(instances),
                         scored_tokens=scored, prompt_tokens=mean_prompt)
    answer = sum(p + _encoded_length(vocab, i.target or "")
                 for p, i in zip(prompts, instances)) / len(instances)
    return core.Task(name=name, kind=core.PASSUNTIL, instances=len(instances),
                     scored_tokens=answer, prompt_tokens=mean_prompt,
                     generated_tokens=task.max_new_tokens, r=passuntil.r, k_max=passuntil.k_max,
                     k_max_intermediate=k_max_intermediate, draw_batch=passuntil.batch_size,
                     num_slots=passuntil.num_slots, prior_pu=prior_pu)


def mesh_and_device(mesh_config=None, num_devices: int | None = None,
                    device_bytes: float | None = None, compute_dtype: str | None = None,
                    peak_flops: float | None = None, use_jax: bool = True
                    ) -> tuple[core.Mesh, core.Device]:
    """The resolved mesh and the devices' memory / peak.

    With `use_jax`, the device count, platform and `device.memory_stats()["bytes_limit"]`
    come from JAX (where it reports them); a stated `device_bytes` wins over the measured
    size, and `num_devices` over the count (planning a pod from a workstation). The compute
    dtype defaults to what the trainer picks ("auto": float32 on CPU, bfloat16 elsewhere).
    """
    platform, measured = "unknown", None
    count = num_devices
    if use_jax:
        import jax

        dev = jax.devices()[0]
        platform = dev.platform
        count = count or jax.device_count()
        stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
        measured = (stats or {}).get("bytes_limit")
    count = count or 1
    if mesh_config is None:
        data, fsdp, tensor = 1, count, 1
    else:
        data, fsdp, tensor = mesh_config.shape(count)
    dtype = compute_dtype or ("float32" if platform in ("cpu", "unknown") else "bfloat16")
    if dtype not in _DTYPE_BYTES:
        raise ConfigError(f"compute_dtype={dtype!r}: allowed {sorted(_DTYPE_BYTES)}")
    if device_bytes is not None:
        limit, source = float(device_bytes), "stated"
    elif measured:
        limit, source = float(measured), "memory_stats"
    else:
        limit, source = None, "none"
    return (core.Mesh(data, fsdp, tensor, _DTYPE_BYTES[dtype]),
            core.Device(platform=platform, bytes_limit=limit, bytes_source=source,
                        peak_flops=peak_flops))


def plan_study_config(study_config, optimizer=None, mesh_config=None, *,
                      num_devices: int | None = None, device_bytes: float | None = None,
                      compute_dtype: str | None = None, peak_flops: float | None = None,
                      prior_pu: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
                      thresholds: core.Thresholds = core.Thresholds(),
                      use_jax: bool = True) -> core.Plan:
    """The plan of a `lmscale.report.study.StudyConfig`.

    Args:
      study_config: the study (its `specs()`, tasks, PassUntil and validation settings).
      optimizer: its `OptimizerConfig` (warmup); None: no warmup check.
      mesh_config: its `MeshConfig`; None: every device on fsdp.
      num_devices, device_bytes, compute_dtype, peak_flops: see `mesh_and_device`.
      prior_pu: task name -> {rung name or "*": per-instance prior PU}.
      thresholds: when to warn.
      use_jax: read devices from JAX (False: plan for stated devices only).
    """
    c = study_config
    rungs = rungs_from_specs(c.specs(), c.eval_checkpoints, optimizer)
    tasks = []
    if c.validation.enabled:
        tokens = validation_tokens(c.corpus, c.vocab_spec, c.validation, c.seq_len)
        tasks.append(core.Task(name=VALIDATION_NAME, kind=core.VALIDATION, instances=1,
                               scored_tokens=tokens))
    prior_pu = prior_pu or {}
    for name in list(c.mc_tasks) + list(c.passuntil_tasks):
        tasks.append(task_from_registry(name, c.vocab_spec, c.instances, c.passuntil,
                                        c.intermediate_k_max, prior_pu.get(name)))
    mesh, device = mesh_and_device(mesh_config, num_devices, device_bytes, compute_dtype,
                                   peak_flops, use_jax)
    return core.build_plan(c.name, rungs, tasks, mesh, device, thresholds)


def dry_run(study_config_or_ladder, optimizer=None, mesh_config=None, *, probe: bool = False,
            probe_steps: int = 3, json_path: str | None = None, **plan_kwargs: Any) -> str:
    """What a binary's `--dry_run` prints: the plan, optionally timed by a short probe.

    Args:
      study_config_or_ladder: a `StudyConfig` (anything with `specs()`, `eval_checkpoints`,
        the task lists and the PassUntil / validation settings).
      optimizer, mesh_config: the run's `OptimizerConfig` and `MeshConfig`.
      probe: time a few train steps and sampler calls per distinct shape on the devices
        at hand (`probe.time_plan`) and print wall-time estimates and MFU.
      probe_steps: timed train steps (and sampler calls) per shape.
      json_path: also write `plan_to_json` there.
      **plan_kwargs: passed to `plan_study_config`.
    """
    plan = plan_study_config(study_config_or_ladder, optimizer, mesh_config, **plan_kwargs)
    if probe:
        from lmscale.report.plan import probe as probe_lib

        probe_lib.time_plan(plan, optimizer=optimizer, mesh_config=mesh_config,
                            steps=probe_steps)
    if json_path:
        import json

        pathlib.Path(json_path).write_text(json.dumps(render.plan_to_json(plan), indent=1),
                                           encoding="utf-8")
        logging.info("plan written to %s", json_path)
    return render.format_plan(plan)
