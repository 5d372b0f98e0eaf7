"""From today's study configuration to plan inputs, and the dry run the binaries call.

Stage: report. `plan_study_config(study_config, ...)` builds the `Rung`s from the study's
run specs and the `Task`s from its evaluation settings (token counts from the task
registry, through the study's vocabulary), then `core.build_plan`. `dry_run(...)` is the
function the study binary's `--dry_run` calls: it returns the printed plan;
`ladder_dry_run` (a `LadderConfig`: training only) and `evaluation_dry_run` (the trained runs
of a workdir: evaluation only) are the ladder and evaluate binaries'. `lmscale.report.study.load_gin` reads a
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


def rungs_from_specs(specs: Sequence, checkpoints, optimizer=None) -> list[core.Rung]:
    """One `Rung` per distinct (model, token budget) of `specs` (RunSpecs), counting its
    seeds; named by the model, plus `_M<M>` when a model runs at several multipliers.
    `checkpoints`: evaluated checkpoints per run, or a spec -> count callable."""
    count = checkpoints if callable(checkpoints) else (lambda _: checkpoints)
    groups: dict[tuple, list] = {}
    for s in specs:
        groups.setdefault((s.model.name or s.name, s.total_tokens), []).append(s)
    per_model: dict[str, int] = {}
    for model, _ in groups:
        per_model[model] = per_model.get(model, 0) + 1
    rungs = []
    for (model, _), group in groups.items():
        s = group[0]
        name = model if per_model[model] == 1 else f"{model}_M{s.token_multiplier:g}"
        rungs.append(core.Rung(name=name, model=s.model, seq_len=s.seq_len,
                               batch_size=s.batch_size, num_steps=s.num_steps,
                               seeds=len(group), checkpoints=count(s),
                               warmup_steps=_warmup(optimizer, s.num_steps),
                               token_multiplier=s.token_multiplier))
    return rungs


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


def score_shapes(model, questions, batch_questions: int | None = None
                 ) -> tuple[tuple[int, ...], ...]:
    """The padded shape of each scorer call on `questions` (`Scorer.batch_shapes`, the
    evaluator's own batching), for a model of `model`'s max_seq_len; `batch_questions`
    None: the evaluator's default (`runner.score_batch`: the whole task per call, up to
    its row-token cap)."""
    from lmscale.eval import runner, scorer  # pylint: disable=g-import-not-at-top

    per_call = runner.score_batch(batch_questions, len(questions), model)
    return tuple(scorer.Scorer(model, None, batch_questions=per_call
                               ).batch_shapes(questions))


def task_from_registry(name: str, vocab_spec: str, limit: int | None, passuntil,
                       k_max_intermediate: int | None,
                       prior_pu: Mapping[str, Sequence[float]] | None,
                       model=None) -> core.Task:
    """A plan `Task` from a registered eval task: instance count and token lengths measured
    by encoding its instances with the study's vocabulary; with `model` (a `ModelConfig`),
    the shapes of the scorer calls one checkpoint makes."""
    from lmscale.data import registry
    from lmscale.data.vocab import get_vocabulary
    from lmscale.eval import scorer  # pylint: disable=g-import-not-at-top

    task = registry.get_eval_task(name)
    vocab = get_vocabulary(vocab_spec)
    instances = task.instances(split="test", limit=limit)
    if not instances:
        raise ConfigError(f"task {name!r}: no instances")
    prompts = [_encoded_length(vocab, i.prompt) + 1 for i in instances]  # + bos
    mean_prompt = sum(prompts) / len(prompts)
    mc = task.kind == registry.MULTIPLE_CHOICE
    shapes = () if model is None else score_shapes(model, [
        scorer.encode_question(vocab, i.id, i.prompt, i.choices if mc else [i.target or " "],
                               i.gold if mc else 0) for i in instances])
    if mc:
        scored = sum(p + sum(_encoded_length(vocab, c) for c in i.choices)
                     for p, i in zip(prompts, instances)) / len(instances)
        return core.Task(name=name, kind=core.MULTIPLE_CHOICE, instances=len(instances),
                         scored_tokens=scored, prompt_tokens=mean_prompt, score_shapes=shapes)
    answer = sum(p + _encoded_length(vocab, i.target or "")
                 for p, i in zip(prompts, instances)) / len(instances)
    return core.Task(name=name, kind=core.PASSUNTIL, instances=len(instances),
                     scored_tokens=answer, prompt_tokens=mean_prompt,
                     generated_tokens=task.max_new_tokens, r=passuntil.r, k_max=passuntil.k_max,
                     k_max_intermediate=k_max_intermediate, draw_batch=passuntil.batch_size,
                     num_slots=passuntil.num_slots, prior_pu=prior_pu, score_shapes=shapes)


def decode_tasks(study_config, vocab_spec: str, tasks: Sequence[core.Task]) -> list[core.Task]:
    """The study's greedy and beam units as `core.DECODE` tasks: every `greedy_tasks` task
    decoded once per instance on every evaluated checkpoint, and, per width W of
    `beam_sizes`, W beams per PassUntil instance on each run's final checkpoint."""
    c = study_config
    out = []
    for name in getattr(c, "greedy_tasks", ()) or ():
        t = task_from_registry(name, vocab_spec, c.instances, c.passuntil, None, None)
        out.append(dataclasses.replace(t, name=f"{name} (greedy)", kind=core.DECODE,
                                       decodes=1, score_shapes=(), prior_pu=None))
    by_name = {t.name: t for t in tasks if t.kind == core.PASSUNTIL}
    for width in getattr(c, "beam_sizes", ()) or ():
        for name in c.passuntil_tasks:
            out.append(dataclasses.replace(by_name[name], name=f"{name} (beam {width})",
                                           kind=core.DECODE, decodes=int(width),
                                           final_only=True, score_shapes=(), prior_pu=None))
    return out


def validation_task(corpus: str, vocab_spec: str, validation, seq_len: int) -> core.Task:
    """The validation pseudo-task: scored tokens and batches per checkpoint (the packed
    held-out stream: tokens / (batch_size x length), rounded up)."""
    tokens = validation_tokens(corpus, vocab_spec, validation, seq_len)
    rows = validation.batch_size * (validation.sequence_length or seq_len)
    batches = 0 if tokens is None else int(-(-tokens // rows))
    return core.Task(name=VALIDATION_NAME, kind=core.VALIDATION, instances=1,
                     scored_tokens=tokens, batches=batches)


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
    template = c.ladder.template
    if c.validation.enabled:
        tasks.append(validation_task(template.corpus, template.vocab_spec, c.validation,
                                     template.seq_len))
    prior_pu = prior_pu or {}
    for name in list(c.mc_tasks) + list(c.passuntil_tasks):
        tasks.append(task_from_registry(name, template.vocab_spec, c.instances,
                                        c.passuntil, c.intermediate_k_max, prior_pu.get(name),
                                        model=rungs[0].model))
    tasks += decode_tasks(c, template.vocab_spec, tasks)
    mesh, device = mesh_and_device(mesh_config, num_devices, device_bytes, compute_dtype,
                                   peak_flops, use_jax)
    return core.build_plan(c.name, rungs, tasks, mesh, device, thresholds)


def plan_ladder(ladder, optimizer=None, mesh_config=None, loop=None, **device_kwargs: Any
                ) -> core.Plan:
    """The training plan of a `lmscale.train.ladder.LadderConfig` (no evaluation tasks):
    checkpoints per run from `loop`'s spacing (`LoopConfig`; None: the final one only).
    `device_kwargs`: `num_devices`, `device_bytes`, `compute_dtype`, `peak_flops`,
    `use_jax` (see `mesh_and_device`) and `thresholds`."""
    from lmscale.train import loop as loop_lib  # pylint: disable=g-import-not-at-top

    def checkpoints(spec) -> int:
        if loop is None:
            return 1
        every = loop_lib.checkpoint_every_steps(spec, loop)
        return -(-spec.num_steps // every)

    thresholds = device_kwargs.pop("thresholds", core.Thresholds())
    rungs = rungs_from_specs(ladder.specs(), checkpoints, optimizer)
    mesh, device = mesh_and_device(mesh_config, **device_kwargs)
    return core.build_plan("ladder", rungs, [], mesh, device, thresholds)


def plan_evaluation(records: Sequence, tasks: Sequence[str], passuntil, validation, *,
                    limit: int | None = None, k_max_intermediate: int | None = None,
                    mesh_config=None, steps: Sequence[int] | None = None,
                    prior_pu: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
                    **device_kwargs: Any) -> core.Plan:
    """The evaluation plan of trained runs (`RunRecord`s, e.g. a ladder workdir's), as
    `lmscale.eval.runner.evaluate` would run it: every saved evaluation checkpoint (or the
    `steps` among them) on validation plus `tasks`."""
    thresholds = device_kwargs.pop("thresholds", core.Thresholds())
    if not records:
        raise ConfigError("plan: no trained runs (no run.json) to evaluate")
    groups: dict[tuple, list] = {}
    for rec in records:
        groups.setdefault((rec.model_config.get("name") or rec.run_name, rec.num_tokens),
                          []).append(rec)
    from lmscale.models.config import ModelConfig  # pylint: disable=g-import-not-at-top

    rungs = []
    for (model, _), group in groups.items():
        rec = group[0]
        saved = [s for s in rec.checkpoints if steps is None or s in steps]
        name = model if sum(m == model for m, _ in groups) == 1 else group[0].run_name
        rungs.append(core.Rung(name=name, model=ModelConfig(**rec.model_config),
                               seq_len=rec.seq_len, batch_size=rec.batch_size,
                               num_steps=rec.num_steps, seeds=len(group),
                               checkpoints=max(1, len(saved)),
                               token_multiplier=rec.token_multiplier))
    first = records[0]
    plan_tasks = []
    if validation.enabled:
        plan_tasks.append(validation_task(first.corpus, first.vocab_spec, validation,
                                          first.seq_len))
    prior_pu = prior_pu or {}
    for name in tasks:
        plan_tasks.append(task_from_registry(name, first.vocab_spec, limit, passuntil,
                                             k_max_intermediate, prior_pu.get(name),
                                             model=rungs[0].model))
    mesh, device = mesh_and_device(mesh_config, **device_kwargs)
    return core.build_plan("evaluation", rungs, plan_tasks, mesh, device, thresholds)


def eval_setup(study_config):
    """What the probe needs to run the study's evaluator (`probe.EvalSetup`)."""
    from lmscale.report.plan import evalprobe  # pylint: disable=g-import-not-at-top

    c = study_config
    intermediate = c.passuntil if c.intermediate_k_max is None else dataclasses.replace(
        c.passuntil, k_max=c.intermediate_k_max)
    template = c.ladder.template
    return evalprobe.EvalSetup(mc_tasks=tuple(c.mc_tasks),
                               passuntil_tasks=tuple(c.passuntil_tasks),
                               passuntil=c.passuntil, intermediate_passuntil=intermediate,
                               validation=c.validation, corpus=template.corpus,
                               vocab_spec=template.vocab_spec, limit=c.instances)


def make_plan(study_config, optimizer=None, mesh_config=None, *, probe: bool = False,
              probe_steps: int = 5, loop=None, **plan_kwargs: Any) -> core.Plan:
    """`plan_study_config`, then (with `probe`) timed by `probe.time_plan` with the
    train step built as `loop` (a `LoopConfig`; None: the loop's default) builds it and
    the study's evaluator run on a stand-in checkpoint of each rung shape."""
    plan = plan_study_config(study_config, optimizer, mesh_config, **plan_kwargs)
    if probe:
        from lmscale.report.plan import probe as probe_lib

        constrain = True if loop is None else loop.constrain_activations
        probe_lib.time_plan(plan, optimizer=optimizer, mesh_config=mesh_config,
                            steps=probe_steps, constrain_activations=constrain,
                            evaluation=eval_setup(study_config), study_config=study_config,
                            loop=loop)
    return plan


def write_json(plan: core.Plan, path: str | pathlib.Path) -> pathlib.Path:
    """Writes `render.plan_to_json(plan)` to `path`."""
    import json

    path = pathlib.Path(path)
    path.write_text(json.dumps(render.plan_to_json(plan), indent=1), encoding="utf-8")
    logging.info("plan written to %s", path)
    return path


def dry_run(study_config_or_ladder, optimizer=None, mesh_config=None, *, probe: bool = False,
            probe_steps: int = 5, json_path: str | None = None, loop=None,
            **plan_kwargs: Any) -> str:
    """What a binary's `--dry_run` prints: the plan, optionally timed by a short probe.

    Args:
      study_config_or_ladder: a `StudyConfig` (anything with `specs()`, `eval_checkpoints`,
        the task lists and the PassUntil / validation settings).
      optimizer, mesh_config: the run's `OptimizerConfig` and `MeshConfig`.
      probe: time a few train steps and sampler calls per distinct shape on the devices
        at hand (`probe.time_plan`) and print wall-time estimates and MFU.
      probe_steps: timed train steps (and sampler calls) per shape.
      json_path: also write `plan_to_json` there.
      loop: the run's `LoopConfig` (the probe builds its train step the same way).
      **plan_kwargs: passed to `plan_study_config`.
    """
    plan = make_plan(study_config_or_ladder, optimizer, mesh_config, probe=probe,
                     probe_steps=probe_steps, loop=loop, **plan_kwargs)
    if json_path:
        write_json(plan, json_path)
    return render.format_plan(plan)


def ladder_dry_run(ladder, optimizer=None, mesh_config=None, loop=None, *,
                   probe: bool = False, probe_steps: int = 5, **device_kwargs: Any) -> str:
    """What the ladder binary's `--dry_run` prints: the training part of the plan
    (`plan_ladder`; with `probe`, timed on the devices at hand)."""
    plan = plan_ladder(ladder, optimizer, mesh_config, loop, **device_kwargs)
    if probe:
        from lmscale.report.plan import probe as probe_lib

        constrain = True if loop is None else loop.constrain_activations
        probe_lib.time_plan(plan, optimizer=optimizer, mesh_config=mesh_config,
                            steps=probe_steps, constrain_activations=constrain)
    return render.format_plan(plan, sections=(render.TRAINING, render.MEMORY))


def find_records(workdir: str | pathlib.Path) -> list:
    """The `RunRecord`s of a run directory or of a ladder workdir's run directories."""
    from lmscale.train.record import RunRecord  # pylint: disable=g-import-not-at-top

    root = pathlib.Path(workdir)
    if RunRecord.exists(root):
        return [RunRecord.load(root)]
    return [RunRecord.load(p) for p in sorted(root.iterdir()) if RunRecord.exists(p)] if (
        root.is_dir()) else []


def evaluation_dry_run(workdir: str | pathlib.Path, tasks: Sequence = (), *,
                       passuntil_config=None, validation=None, limit: int | None = None,
                       steps: Sequence[int] | None = None, mesh_config=None,
                       **device_kwargs: Any) -> str:
    """What the evaluate binary's `--dry_run` prints: the evaluation part of the plan for
    the runs found in `workdir`, with `lmscale.eval.runner.evaluate`'s settings (tasks,
    PassUntil, validation, limit, steps); nothing is evaluated.

    Raises:
      ConfigError: no run.json under `workdir` (names it).
    """
    from lmscale.eval import runner  # pylint: disable=g-import-not-at-top

    records = find_records(workdir)
    if not records:
        raise ConfigError(f"evaluate --dry_run: {workdir} holds no run.json (no trained run "
                          "to plan the evaluation of)")
    names = [getattr(t, "name", t) for t in tasks]
    plan = plan_evaluation(records, names, passuntil_config or runner.PassUntilConfig(),
                           validation or runner.ValidationConfig(), limit=limit, steps=steps,
                           mesh_config=mesh_config, **device_kwargs)
    return render.format_plan(plan, sections=(render.MEMORY, render.EVALUATION))
