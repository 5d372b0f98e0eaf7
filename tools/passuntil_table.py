"""Hu et al.'s pilot table (Table 1) for any model and generative task.

For each test instance: does the top beam of beam search pass, and does any of the first
K random samples pass, for K in --samples (default 1, 100, 10,000)? Printed as "A/B"
(A of B instances passed), as in the paper. Random samples of an instance form one
stream (sample i has the key of (seed, i)), so RS-K checks the first K of it: sampling
stops at the first pass, and an instance that passes at sample j counts for every K > j.

Usage:
  .venv/bin/python tools/passuntil_table.py --task=<eval task> --run_dir=<workdir>/<run>
      [--step=<checkpoint step, default the last>] [--limit=20]
  .venv/bin/python tools/passuntil_table.py --task=<eval task> --random_init --limit=3
      --samples=1,10                       # smoke run on a random tiny model
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags  # noqa: E402

flags.DEFINE_string("task", None, "eval task name (lmscale.data.registry)")
flags.DEFINE_string("run_dir", None, "a training run directory (run.json + checkpoints)")
flags.DEFINE_integer("step", None, "checkpoint step (default: the last kept for evaluation)")
flags.DEFINE_bool("random_init", False, "use a random-init tiny model instead of a run")
flags.DEFINE_string("vocab", None, "vocabulary spec (default: the run's, else 'byte')")
flags.DEFINE_integer("limit", None, "at most this many test instances")
flags.DEFINE_string("split", "test", "task split")
flags.DEFINE_list("samples", ["1", "100", "10000"], "random-sampling budgets K")
flags.DEFINE_integer("beam_size", 4, "beam search width (the top beam is checked)")
flags.DEFINE_integer("num_slots", 64, "sampler slots")
flags.DEFINE_integer("batch_size", 256, "samples drawn between checks for a first pass")
flags.DEFINE_float("temperature", 1.0, "random sampling temperature")
flags.DEFINE_integer("top_k", 0, "top-k truncation (0: none)")
flags.DEFINE_float("top_p", 1.0, "nucleus truncation (1: none)")
flags.DEFINE_integer("max_new_tokens", None, "default: the task's")
flags.DEFINE_integer("seed", 0, "sampling seed (instance i uses seed + i)")
flags.DEFINE_string("output_json", None, "also write per-instance results here")
FLAGS = flags.FLAGS


def load_model(vocab_size: int):
    """(config, params, label) from --run_dir/--step or a random tiny model."""
    import flax.linen as nn
    import jax

    from lmscale.models import ModelConfig, init_params

    if FLAGS.random_init:
        from lmscale.testing import tiny_config

        config = tiny_config(vocab_size=vocab_size, max_seq_len=8192)
        params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))["params"]
        return config, params, "random-init tiny"
    from lmscale.train import checkpoints, run_info

    info = run_info(FLAGS.run_dir)
    config = ModelConfig(**info["model_config"])
    step = FLAGS.step
    if step is None:
        steps = checkpoints.list_eval_checkpoints(FLAGS.run_dir)
        if not steps:
            raise SystemExit(f"--run_dir={FLAGS.run_dir}: no checkpoints kept for evaluation")
        step = steps[-1]
    params = checkpoints.restore_params(FLAGS.run_dir, step, config=config)
    return config, params, f"{info.get('run_name', FLAGS.run_dir)} step {step}"


def sampling_method():
    from lmscale.eval import sampler as sampler_lib

    if FLAGS.top_k and FLAGS.top_p < 1.0:
        raise SystemExit("--top_k and --top_p: set at most one")
    if FLAGS.top_k:
        return sampler_lib.TopK(FLAGS.top_k, FLAGS.temperature)
    if FLAGS.top_p < 1.0:
        return sampler_lib.TopP(FLAGS.top_p, FLAGS.temperature)
    return sampler_lib.Temperature(FLAGS.temperature)


def first_pass(draw, budget: int, batch_size: int) -> int | None:
    """Index of the first passing sample among the first `budget`, or None."""
    drawn = 0
    while drawn < budget:
        n = min(batch_size, budget - drawn) if drawn else 1  # RS-1 costs one sample
        outcomes = draw(n)
        if outcomes.any():
            return drawn + int(outcomes.argmax())
        drawn += n
    return None


def main(argv):
    del argv
    import numpy as np

    from lmscale.data import registry
    from lmscale.data.vocab import get_vocabulary
    from lmscale.eval import checkers, search
    from lmscale.eval import sampler as sampler_lib

    if FLAGS.task is None or (FLAGS.run_dir is None) == (not FLAGS.random_init):
        raise SystemExit("give --task and exactly one of --run_dir / --random_init")
    budgets = sorted(int(k) for k in FLAGS.samples)
    if not budgets or budgets[0] < 1:
        raise SystemExit(f"--samples={FLAGS.samples}: positive integers")
    task = registry.get_eval_task(FLAGS.task)
    if task.kind != registry.GENERATIVE or task.checker is None:
        raise SystemExit(f"task {task.name!r} is {task.kind} with checker {task.checker}: "
                         f"the table needs a generative task with a pass checker")
    vocab_spec = FLAGS.vocab
    if vocab_spec is None and FLAGS.run_dir:
        from lmscale.train import run_info

        vocab_spec = run_info(FLAGS.run_dir).get("vocab_spec")
    vocab = get_vocabulary(vocab_spec or "byte")
    config, params, label = load_model(vocab.vocab_size)
    max_new = FLAGS.max_new_tokens or task.max_new_tokens
    sampler = sampler_lib.Sampler(params, config, vocab, method=sampling_method(),
                                  num_slots=FLAGS.num_slots, max_new_tokens=max_new,
                                  stop_strings=task.stop_strings)
    instances = task.instances(FLAGS.split, limit=FLAGS.limit)
    rows, t0 = [], time.perf_counter()
    for i, inst in enumerate(instances):
        check = checkers.make_checker(task, inst)
        beams = search.beam_search(params, config, vocab.encode(inst.prompt),
                                   FLAGS.beam_size, max_new, eos_id=sampler.eos_id)
        top = sampler_lib.Completions(beams.tokens[:1], beams.lengths[:1],
                                      np.zeros(beams.tokens[:1].shape, np.float32))
        beam_pass = bool(check(sampler.text(top)[0]))
        draw = sampler_lib.make_draw(sampler, inst.prompt, check, seed=FLAGS.seed + i)
        j = first_pass(draw, budgets[-1], FLAGS.batch_size)
        rows.append({"id": inst.id, "beam_search": beam_pass, "first_pass_index": j,
                     **{f"rs_{k}": j is not None and j < k for k in budgets}})
        print(f"[{i + 1}/{len(instances)}] {inst.id}: beam {'pass' if beam_pass else 'fail'}"
              f", first random pass at sample {j} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    total = len(rows)
    head = ["model", "BS"] + [f"RS-{k}" for k in budgets]
    cells = [label, f"{sum(r['beam_search'] for r in rows)}/{total}"] + [
        f"{sum(r[f'rs_{k}'] for r in rows)}/{total}" for k in budgets]
    print(f"\nTask {task.name} ({FLAGS.split}), beam size {FLAGS.beam_size}, "
          f"{sampling_method()}, seed {FLAGS.seed}")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    print("| " + " | ".join(cells) + " |")
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump({"task": task.name, "model": label, "budgets": budgets,
                       "beam_size": FLAGS.beam_size, "instances": rows}, f, indent=1,
                      default=lambda x: x.item() if isinstance(x, np.generic) else str(x))


if __name__ == "__main__":
    app.run(main)
