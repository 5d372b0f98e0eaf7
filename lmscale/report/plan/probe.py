"""A short measured probe: a few real train steps and sampler calls per distinct shape.

Stage: report (runs JAX). `time_plan(plan)` times, on the devices at hand, the library's
own jitted train step (`lmscale.train.state` + `lmscale.train.step.make_train_step`) and
sampler (`lmscale.eval.sampler.Sampler.sample`) for every rung, then fills each rung's
estimated wall time:

  train = seeds x (compile time + steps x median step time);
  evaluate = (sampler compile per run and task) + scored tokens x step time / (3 x tokens per step)  (a forward pass is a third
             of a training step) + PassUntil samples (expected under the prior, else the
             worst case) x (time per sample of one draw batch at full length) x (expected
             completion length / full length: the mean answer plus its stop token).

The compile time of a run (the first call of its jitted step, less one step) is paid once
per run, not per step; the train step is built as the training loop builds it (its
`constrain_activations` setting), so the probe times the program the study runs.

It also records the measured peak device memory where JAX reports it (`peak_bytes_in_use`)
and, when unknown, the peak FLOP/s from a float32 matmul (`metrics.measure_peak_flops`).
"""

from __future__ import annotations

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


def time_sampler(rung: core.Rung, task: core.Task, params, compute_dtype: str,
                 calls: int) -> tuple[float, float]:
    """(median seconds per sample of one draw batch of full-length completions (no EOS),
    seconds of the first, compiling, call less one batch)."""
    import numpy as np

    from lmscale.eval import sampler as sampler_lib

    model = rung.model.replace(dtype=compute_dtype)
    sampler = sampler_lib.Sampler(params, model, None, num_slots=task.num_slots,
                                  max_new_tokens=task.generated_tokens, eos_id=None)
    # truncated as the evaluator does, so prompt + completion fit max_seq_len
    length = max(1, min(int(task.prompt_tokens), model.max_seq_len - task.generated_tokens - 1))
    prompt = (np.arange(length, dtype=np.int32) % (model.vocab_size - 1)) + 1
    state = sampler.prefill(prompt)
    n = task.draw_batch
    batch_s, first = _timed(lambda: sampler.sample(state, n, seed=0), calls)
    return batch_s / n, max(0.0, first - batch_s)


def time_plan(plan: core.Plan, optimizer=None, mesh_config=None, steps: int = 3,
              constrain_activations: bool = True) -> core.Plan:
    """Fills every rung's `train_seconds`, `eval_seconds` and `measured` from the probe.

    `constrain_activations`: as the study's `LoopConfig` sets it (the loop's default)."""
    import jax

    from lmscale.train import metrics as metrics_lib
    from lmscale.train import state as state_lib

    mesh_config = mesh_config or state_lib.MeshConfig()
    if plan.mesh.devices != jax.device_count():
        logging.warning("probe: the plan is for %d devices but %d are at hand; the probe "
                        "times the shapes on these, so its wall times are for this host",
                        plan.mesh.devices, jax.device_count())
    dtype = {4: "float32", 2: "bfloat16"}[plan.mesh.compute_bytes]
    gen = [t for t in plan.tasks if t.kind == core.PASSUNTIL]
    for rp in plan.rungs:
        r = rp.rung
        t_step, first, params = time_train_step(r, optimizer, mesh_config, dtype, steps,
                                                constrain_activations)
        compile_s = max(0.0, first - t_step)
        rp.train_seconds = (compile_s + t_step * r.num_steps) * r.seeds
        per_scored = t_step / (3.0 * r.tokens_per_step)
        seconds = sum(e.scored_tokens or 0.0 for e in rp.evals) * per_scored
        for task in gen:
            work = next(e for e in rp.evals if e.task == task.name)
            full_sample, sampler_compile = time_sampler(r, task, params, dtype, steps)
            per_sample = full_sample * (task.expected_generated_tokens
                                        / max(1, task.generated_tokens))
            seconds += sampler_compile * r.seeds  # compiled once per run and task
            samples = work.samples_expected if work.samples_expected is not None else (
                work.samples_worst)
            seconds += samples * per_sample
            rp.measured[f"sample_s:{task.name}"] = per_sample
        rp.eval_seconds = seconds
        rp.measured["step_s"] = t_step
        rp.measured["compile_s"] = compile_s
        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            rp.measured["peak_bytes"] = float(stats["peak_bytes_in_use"])
        logging.info("probe %s: %.4fs per step, %.1fs compile", r.name, t_step, compile_s)
    if plan.device.peak_flops is None:
        peak = metrics_lib.measure_peak_flops()
        if jax.default_backend() == "cpu":
            peak /= plan.mesh.devices  # CPU devices share one host's cores
        plan.device = dataclasses.replace(plan.device, peak_flops=peak)
    return plan
