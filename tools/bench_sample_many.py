"""Benchmark: samples/s of one prompt per sampler call vs several (`Sampler.sample_many`).

The study's PassUntil shapes (issue #14): the study-row model of tools/bench_sample.py
(byte vocabulary 259, d_model 64, 2 layers, random weights), 64-token prompts, 8 new
tokens, `--per_prompt` samples per prompt per call (PassUntil's batch_size, 64), for
`--num_prompts` distinct prompts. Side "1": one `sample` call per prompt (today's runner);
side "R": `sample_many` with R prompts per call. Best of --repeats (first call compiles).

Usage:
  .venv/bin/python tools/bench_sample_many.py [--num_prompts=32 --per_prompt=64
      --prompts_per_call=1,8,32 --num_slots=64,256]
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("num_prompts", 32, "distinct prompts (PassUntil instances)")
flags.DEFINE_integer("per_prompt", 64, "samples per prompt per call (PassUntil batch_size)")
flags.DEFINE_list("prompts_per_call", ["1", "8", "32"], "R values to time")
flags.DEFINE_list("num_slots", ["64", "256"], "sampler slot counts to time")
flags.DEFINE_integer("repeats", 3, "timed repeats (best kept)")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from lmscale import runtime
    runtime.tune_host_allocator()
    import numpy as np

    from lmscale.eval import sampler as sampler_lib
    from lmscale import testing
    from lmscale.testing import tiny_params

    new_tokens = testing.STUDY_ROW_NEW_TOKENS
    config = testing.study_row_config()
    params = tiny_params(config)
    prompts = testing.random_prompts(FLAGS.num_prompts)
    n, total = FLAGS.per_prompt, FLAGS.per_prompt * FLAGS.num_prompts
    for slots in map(int, FLAGS.num_slots):
        sampler = sampler_lib.Sampler(params, config, num_slots=slots,
                                      max_new_tokens=new_tokens, eos_id=None)
        states = [sampler.prefill(p) for p in prompts]
        for r in map(int, FLAGS.prompts_per_call):
            best = float("inf")
            for _ in range(FLAGS.repeats + 1):  # the first one compiles
                start = time.perf_counter()
                for i in range(0, len(states), r):
                    group = states[i:i + r]
                    if r == 1:
                        sampler.sample(group[0], n, seed=i)
                    else:
                        sampler.sample_many(group, [n] * len(group),
                                            list(range(i, i + len(group))))
                best = min(best, time.perf_counter() - start)
            print(f"slots {slots:4d}  prompts/call {r:3d}: {total / best:9.0f} samples/s "
                  f"({total} samples, {len(states) // r} calls, {best * 1e3:.1f} ms)")


if __name__ == "__main__":
    app.run(main)
