"""Benchmark: PassUntil samples/s inside one evaluator unit, one prompt per call vs several.

Runs the evaluator's own drivers (`lmscale.eval.pu_batch.run_sequential` with
`sampler.make_draw`, i.e. one prompt per sampler call, and `run_batched` with
`--prompts_per_call` prompts per `Sampler.sample_many` call) over `--num_instances`
instances of the study-row model of tools/bench_sample.py (byte vocabulary 259, d_model
64, 2 layers, random weights; 64-token prompts, 8 new tokens). PassUntil settings default
to the study's (experiments/default.gin: r 4, k_max 1000, batch_size 512, num_slots 256).
The checker passes a sample with probability about `--pass_rate` (a hash of its text),
so instances stop at different rounds; 0 makes every instance run to its cap. Each side
runs once to compile, then `--repeats` timed times (best kept).

Usage:
  .venv/bin/python tools/bench_pu_unit.py [--num_instances=16 --prompts_per_call=1,4,8
      --pass_rate=0.01,0 --k_max=1000 --batch_size=512 --num_slots=256]
"""

from __future__ import annotations

import os
import time
import zlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("num_instances", 16, "PassUntil instances in the unit")
flags.DEFINE_list("prompts_per_call", ["1", "4", "8"], "prompts per call (1: sequential)")
flags.DEFINE_list("pass_rate", ["0.01", "0"], "checker pass probabilities to time")
flags.DEFINE_integer("r", 4, "passes per instance")
flags.DEFINE_integer("k_max", 1000, "sample cap per instance")
flags.DEFINE_integer("batch_size", 512, "samples per instance per draw")
flags.DEFINE_integer("num_slots", 256, "sampler slots")
flags.DEFINE_integer("repeats", 2, "timed repeats (best kept)")
FLAGS = flags.FLAGS


def _checker(rate: float):
    threshold = int(rate * 2**32)
    return lambda text: zlib.crc32(text.encode("utf-8", "replace")) < threshold


def main(argv):
    del argv
    from lmscale import runtime
    runtime.tune_host_allocator()
    import numpy as np

    from lmscale.eval import pu_batch
    from lmscale.data.vocab import get_vocabulary
    from lmscale.eval import sampler as sampler_lib
    from lmscale import testing
    from lmscale.testing import tiny_params

    prompt_len, new_tokens = testing.STUDY_ROW_PROMPT_LEN, testing.STUDY_ROW_NEW_TOKENS
    config = testing.study_row_config()
    params = tiny_params(config)
    prompts = testing.random_prompts(FLAGS.num_instances)
    r, batch = FLAGS.r, FLAGS.batch_size
    for rate in map(float, FLAGS.pass_rate):
        jobs = [pu_batch.PassUntilJob(f"i{i}", p, seed=i, cap=FLAGS.k_max,
                                      checker=_checker(rate)) for i, p in enumerate(prompts)]
        for per_call in map(int, FLAGS.prompts_per_call):
            sampler = sampler_lib.Sampler(
                params, config, get_vocabulary("byte"), num_slots=FLAGS.num_slots, max_new_tokens=new_tokens,
                eos_id=None, min_prompt_bucket=prompt_len,
                max_samples_per_call=max(4096, per_call * batch))
            if per_call == 1:
                def drive(sampler=sampler):
                    return pu_batch.run_sequential(
                        jobs, lambda j: sampler_lib.make_draw(sampler, j.prompt, j.checker,
                                                              j.seed), r, batch)
            else:
                def drive(sampler=sampler, per_call=per_call):
                    return pu_batch.run_batched(sampler, jobs, r, batch, per_call)
            best, ks, drawn = float("inf"), None, 0
            for _ in range(FLAGS.repeats + 1):  # the first one compiles
                start = time.perf_counter()
                out = list(drive())
                best = min(best, time.perf_counter() - start)
                ks = [res.num_samples for _, res, _ in out]
                drawn = sum(d for _, _, d in out)
            print(f"pass_rate {rate:<5g} prompts/call {per_call:2d}: {drawn / best:9.0f} "
                  f"samples/s ({drawn} samples drawn, {len(jobs)} instances, mean K "
                  f"{np.mean(ks):.0f}, {best:.2f} s)", flush=True)


if __name__ == "__main__":
    app.run(main)
