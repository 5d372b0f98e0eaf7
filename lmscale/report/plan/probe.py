"""A short measured probe: a few real train steps and evaluator calls per distinct shape.

Stage: report (runs JAX). `time_plan(plan)` times, on the devices at hand, the library's
own jitted train step (`lmscale.train.state` + `lmscale.train.step.make_train_step`) for
every rung, and, given the study's evaluation settings, its evaluator on a stand-in
checkpoint of the rung (`evalprobe.time_evaluation`), then fills each rung's estimated
wall time:

  train = seeds x (compile time + steps x median step time + a run's fixed cost: the
          real training loop of the first run cut to a few steps, less its compile and
          steps: data pipeline, state init, checkpoint saves, final validation);
  evaluate = `evaltime.evaluation_seconds`: compiles once per rung shape (validation
             step, one program per distinct scorer batch shape, the sampler's paths) plus
             the measured run rates times the planned work of every evaluated checkpoint.

The compile time of a run (the first call of its jitted step, less one step) is paid once
per run, not per step; the train step is built as the training loop builds it (its
`constrain_activations` setting), so the probe times the program the study runs. The probe
runs inside `isolated_compiles`, so it warms no cache the study then benefits from.

It also records the measured peak device memory where JAX reports it (`peak_bytes_in_use`)
and, when unknown, the peak FLOP/s from a float32 matmul (`metrics.measure_peak_flops`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time

from absl import logging

from lmscale.report.plan import core


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(median seconds of `repeats` calls of `fn`, seconds of the first, compiling, call)."""
    start = time.perf_counter()
    fn()  # compile
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), first


def time_train_step(rung: core.Rung, optimizer, mesh_config, compute_dtype: str,
                    steps: int, constrain_activations: bool = True):
    """(median seconds of one real train step of `rung` on random tokens, seconds of the
    first call (compilation included), the params)."""
    import flax.linen as nn
    import jax
    import numpy as np
    from jax.sharding import PartitionSpec

    from lmscale.train import optim, spec as spec_lib, state as state_lib, step as step_lib

    model = rung.model.replace(dtype=compute_dtype)
    spec = spec_lib.RunSpec(model=model, seq_len=rung.seq_len, batch_size=rung.batch_size,
                            num_tokens=rung.tokens)
    optimizer = optimizer or optim.OptimizerConfig()
    mesh = state_lib.make_mesh(mesh_config)
    rules = mesh_config.logical_rules()
    tx, schedule = optim.make_optimizer(optimizer, max(spec.num_steps, 3), model.d_model)
    _, shardings = state_lib.state_shardings(spec, tx, mesh, rules)
    batch_sharding = nn.logical_to_mesh_sharding(PartitionSpec("batch", "length"), mesh, rules)
    box = {"state": state_lib.create_train_state(spec, tx, optimizer, mesh, shardings)}
    fn = step_lib.make_train_step(model, tx, schedule, mesh, rules, shardings, batch_sharding,
                                  constrain_activations=constrain_activations)
    rng = np.random.default_rng(0)
    shape = (rung.batch_size, rung.seq_len)
    host = {"decoder_input_tokens": rng.integers(1, model.vocab_size, shape, np.int32),
            "decoder_target_tokens": rng.integers(1, model.vocab_size, shape, np.int32),
            "decoder_positions": np.broadcast_to(np.arange(rung.seq_len, dtype=np.int32),
                                                 shape).copy(),
            "decoder_segment_ids": np.ones(shape, np.int32),
            "decoder_loss_weights": np.ones(shape, np.int32)}
    batch = {k: jax.device_put(v, batch_sharding) for k, v in host.items()}

    def one():
        box["state"], metrics = fn(box["state"], batch)
        jax.block_until_ready(metrics["loss"])

    seconds, first = _timed(one, steps)
    return seconds, first, box["state"].params


OVERHEAD_STEPS = 3  # steps of the real training run that measures a run's fixed cost


def time_run_overhead(spec, optimizer, mesh_config, loop, step_s: float,
                      compile_s: float, checkpoints: int = 3) -> float:
    """Seconds one training run costs besides its steps and its step's compile: the real
    `lmscale.train.loop.train` of `spec` cut to `OVERHEAD_STEPS` steps, with `checkpoints`
    evaluation checkpoints as the study keeps them, in a temporary directory (data
    pipeline start, state init, checkpoint manager and saves, the final validation, the
    run record), less compile_s + OVERHEAD_STEPS x step_s measured for the same shape."""
    import tempfile  # pylint: disable=g-import-not-at-top

    from lmscale.train import loop as loop_lib  # pylint: disable=g-import-not-at-top
    from lmscale.train import optim  # pylint: disable=g-import-not-at-top

    steps = max(OVERHEAD_STEPS, checkpoints)
    short = dataclasses.replace(spec, token_multiplier=None, name="probe_overhead",
                                num_tokens=steps * spec.tokens_per_step)
    loop = dataclasses.replace(loop or loop_lib.LoopConfig(),
                               checkpoint_every_tokens=spec.tokens_per_step
                               * max(1, steps // checkpoints))
    with tempfile.TemporaryDirectory(prefix="lmscale_probe_run_") as tmp:
        start = time.perf_counter()
        loop_lib.train(short, tmp, optimizer or optim.OptimizerConfig(), mesh_config, loop)
        wall = time.perf_counter() - start
    return max(0.0, wall - compile_s - steps * step_s)


@contextlib.contextmanager
def isolated_compiles():
    """Compiles inside leave nothing for the code after: the persistent compilation cache
    is off while the probe runs and every in-memory jit cache is cleared after it, so the
    study that follows compiles (and caches) its own programs as if no probe had run, and
    its measured times are those the estimate is compared with."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    cc.reset_cache()
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)
        cc.reset_cache()
        jax.clear_caches()


def time_plan(plan: core.Plan, optimizer=None, mesh_config=None, steps: int = 3,
              constrain_activations: bool = True, evaluation=None,
              study_config=None, loop=None) -> core.Plan:
    """Fills every rung's `train_seconds`, `eval_seconds`, `eval_breakdown` and `measured`
    from the probe (inside `isolated_compiles`), and the plan's `report_seconds`.

    `constrain_activations`: as the study's `LoopConfig` sets it (the loop's default).
    `evaluation`: an `evalprobe.EvalSetup` (the study's evaluation settings); None: the
    evaluation is not timed. `study_config`: the `StudyConfig` whose first run measures
    a run's fixed cost (`time_run_overhead`, with `loop`, its `LoopConfig`; added to every
    run) and whose fit/report stage `reportprobe.time_report` times on stand-in rows;
    None: neither is timed."""
    from lmscale import logs  # pylint: disable=g-import-not-at-top

    parts = len(plan.rungs) + (2 if study_config is not None else 0)
    with logs.stage("probe", total=parts, unit="parts") as progress, logs.muted():
        _probe(plan, optimizer, mesh_config, steps, constrain_activations, evaluation,
               study_config, loop, progress)
    return plan


def _probe(plan, optimizer, mesh_config, steps, constrain_activations, evaluation,
           study_config, loop, progress) -> None:
    with isolated_compiles():
        _time_plan(plan, optimizer, mesh_config, steps, constrain_activations, evaluation,
                   progress)
        if study_config is not None:
            from lmscale.train import state as state_lib  # pylint: disable=g-import-not-at-top

            start, first = time.perf_counter(), plan.rungs[0]
            overhead = time_run_overhead(
                study_config.specs()[0], optimizer, mesh_config or state_lib.MeshConfig(),
                loop, first.measured["step_s"], first.measured["compile_s"],
                first.rung.checkpoints)
            for rp in plan.rungs:
                rp.measured["run_overhead_s"] = overhead
                rp.train_seconds += overhead * rp.rung.seeds
            plan.probe_seconds += time.perf_counter() - start
            progress.update(note="run overhead")
    if study_config is not None:
        from lmscale.report.plan import reportprobe  # pylint: disable=g-import-not-at-top

        start = time.perf_counter()
        instances = {t.name: t.instances for t in plan.tasks}
        plan.report_seconds = reportprobe.time_report(study_config, instances)
        plan.probe_seconds = (plan.probe_seconds or 0.0) + time.perf_counter() - start
        progress.update(note="fit/report")


def _time_plan(plan, optimizer, mesh_config, steps, constrain_activations, evaluation,
               progress=None):
    import jax

    from lmscale.report.plan import evalprobe, evaltime
    from lmscale.train import metrics as metrics_lib
    from lmscale.train import state as state_lib

    mesh_config = mesh_config or state_lib.MeshConfig()
    if plan.mesh.devices != jax.device_count():
        logging.warning("probe: the plan is for %d devices but %d are at hand; the probe "
                        "times the shapes on these, so its wall times are for this host",
                        plan.mesh.devices, jax.device_count())
    dtype = {4: "float32", 2: "bfloat16"}[plan.mesh.compute_bytes]
    start = time.perf_counter()
    for rp in plan.rungs:
        r = rp.rung
        t_step, first, params = time_train_step(r, optimizer, mesh_config, dtype, steps,
                                                constrain_activations)
        compile_s = max(0.0, first - t_step)
        rp.train_seconds = (compile_s + t_step * r.num_steps) * r.seeds
        rp.measured["step_s"] = t_step
        rp.measured["compile_s"] = compile_s
        if evaluation is not None:
            rates = evalprobe.time_evaluation(r, params, evaluation)
            rp.eval_breakdown = evaltime.evaluation_seconds(r, plan.tasks, rates)
            rp.eval_seconds = rp.eval_breakdown["total_s"]
            rp.measured["eval_rates"] = dataclasses.asdict(rates)
        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            rp.measured["peak_bytes"] = float(stats["peak_bytes_in_use"])
        logging.info("probe %s: %.4fs per step, %.1fs compile; evaluation %s", r.name,
                     t_step, compile_s, rp.eval_breakdown)
        if progress is not None:
            progress.update(note=r.name)
    if plan.device.peak_flops is None:
        peak = metrics_lib.measure_peak_flops()
        if jax.default_backend() == "cpu":
            peak /= plan.mesh.devices  # CPU devices share one host's cores
        plan.device = dataclasses.replace(plan.device, peak_flops=peak)
    plan.probe_seconds = time.perf_counter() - start
