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

With --run_dir (a trained run directory, e.g. a default-study workdir's runs/w96_M9_s0),
it times the evaluator itself instead: `runner.evaluate` on that run's checkpoint --step
(default: its last) for --task only, once per --prompts_per_call, each into its own results
file under --out_dir (the run directory is only read), and prints each call's
`runner.EvalSummary` line (the study's "PassUntil ... samples/s excluding ... compiling"
figure, the same count as the study log) and whether every setting wrote the same
per-instance rows as the first. --warmup evaluates each setting once before the timed call,
as a study's second and later units of a rung find their programs compiled. --first_draw
times each --prompts_per_call with the instances' first draws sized by their answer loss
('loss', the default) and by the batch ('batch'), e.g. --prompts_per_call=1
--first_draw=loss,batch,loss,batch for an alternating A/B.

Usage:
  .venv/bin/python tools/bench_pu_unit.py [--num_instances=16 --prompts_per_call=1,4,8
      --pass_rate=0.01,0 --k_max=1000 --batch_size=512 --num_slots=256]
  .venv/bin/python tools/bench_pu_unit.py --run_dir=WORKDIR/runs/w96_M9_s0 \
      --out_dir=/tmp/pu_unit --prompts_per_call=1,8 [--task=py_identifier_tail:n120:c96]
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
flags.DEFINE_string("run_dir", None, "a trained run: time runner.evaluate on it instead")
flags.DEFINE_integer("step", None, "--run_dir's checkpoint (default: the last)")
flags.DEFINE_string("task", "py_identifier_tail:n120:c96", "--run_dir: the PassUntil task")
flags.DEFINE_string("out_dir", "/tmp/bench_pu_unit", "--run_dir: results files go here")
flags.DEFINE_list("first_draw", ["loss"], "--run_dir: first draw of each instance, per "
                  "setting: 'loss' (its cap where the answer loss says a batch is too "
                  "few, `PassUntilConfig.loss_sized_first_draw`) or 'batch'; every "
                  "--prompts_per_call runs with each, in the order given")
flags.DEFINE_bool("warmup", False, "--run_dir: evaluate each setting once untimed first (as "
                  "a study's later units find their programs compiled)")
FLAGS = flags.FLAGS


def _checker(rate: float):
    threshold = int(rate * 2**32)
    return lambda text: zlib.crc32(text.encode("utf-8", "replace")) < threshold


def evaluate_run():
    """--run_dir: the evaluator's PassUntil unit per --prompts_per_call; rows compared."""
    import pathlib

    from lmscale.eval import results as R
    from lmscale.eval import runner
    from lmscale.train import checkpoints

    step = FLAGS.step or max(checkpoints.list_eval_checkpoints(FLAGS.run_dir))
    baseline = None
    bad = [first for first in FLAGS.first_draw if first not in ("loss", "batch")]
    if bad:  # before any setting runs
        raise app.UsageError(f"--first_draw={','.join(FLAGS.first_draw)}: {bad[0]!r} is "
                             f"neither 'loss' nor 'batch'")
    settings = [(int(per_call), first) for per_call in FLAGS.prompts_per_call
                for first in FLAGS.first_draw]
    for index, (per_call, first) in enumerate(settings):
        name = f"{index}_ppc{per_call}_{first}"
        path = pathlib.Path(FLAGS.out_dir) / f"results_{name}.jsonl"
        if path.exists():
            path.unlink()
        pu = runner.PassUntilConfig(r=FLAGS.r, k_max=FLAGS.k_max, batch_size=FLAGS.batch_size,
                                    num_slots=FLAGS.num_slots, prompts_per_call=per_call,
                                    loss_sized_first_draw=first == "loss")
        if FLAGS.warmup:  # the same unit once, untimed, so the timed one finds it compiled
            warm = pathlib.Path(FLAGS.out_dir) / f"warmup_{name}.jsonl"
            if warm.exists():
                warm.unlink()
            runner.evaluate([FLAGS.run_dir], [FLAGS.task], results_path=str(warm),
                            passuntil_config=pu, steps=[step],
                            validation=runner.ValidationConfig(enabled=False))
        res = runner.evaluate([FLAGS.run_dir], [FLAGS.task], results_path=str(path),
                              passuntil_config=pu, steps=[step],
                              validation=runner.ValidationConfig(enabled=False))
        rows = sorted((r.instance, r.value, repr(sorted(r.detail.items())))
                      for r in res.rows if r.metric == R.INSTANCE)
        same = "" if baseline is None else "; rows " + (
            "identical to" if rows == baseline else "DIFFER FROM") + " the first setting's"
        baseline = rows if baseline is None else baseline
        print(f"{pathlib.Path(FLAGS.run_dir).name}@{step} prompts/call {per_call}, "
              f"first draw {first}: "
              f"{res.summary.line()}{same}", flush=True)
    sampler_alone(step)


def sampler_alone(step: int) -> None:
    """The same-shape reference of --run_dir: `Sampler.sample` alone on the checkpoint,
    the unit's first prompt, the task's stops and prompt bucket, --batch_size and 4096
    samples per call (`sampler.alone_rate`: best of --repeats after a compiling call)."""
    from lmscale.data import registry
    from lmscale.eval import pu_batch
    from lmscale.eval import runner
    from lmscale.eval import sampler as sampler_lib
    from lmscale.models import ModelConfig

    source = runner.train_source()
    record = source.load_record(FLAGS.run_dir)
    config = ModelConfig(**record.model_config)
    params = source.restore_params(FLAGS.run_dir, step, config,
                                   runner._device_mesh(record, None))  # pylint: disable=protected-access
    task, vocab = registry.get_eval_task(FLAGS.task), runner._vocab(record.vocab_spec)  # pylint: disable=protected-access
    room = pu_batch.prompt_room(task, config.max_seq_len)
    prompts = [pu_batch.prompt_ids(vocab, i.prompt, 0, room)[0]
               for i in task.instances(split="test")]
    sampler = sampler_lib.Sampler(
        params, config, vocab, num_slots=FLAGS.num_slots, max_new_tokens=task.max_new_tokens,
        stop_strings=task.stop_strings, max_samples_per_call=4096,
        min_prompt_bucket=sampler_lib.bucket(max(p.size for p in prompts)))
    state = sampler.prefill(prompts[0])
    for n in (FLAGS.batch_size, sampler_lib.REFERENCE_SAMPLES):
        rate, length = sampler_lib.alone_rate(sampler, state, n, FLAGS.repeats)
        print(f"sampler alone, same shapes (prompt bucket {state.prefix.k.shape[2]}, "
              f"{task.max_new_tokens} new tokens, mean length {length:.2f}): "
              f"{n} samples per call: {rate:.0f} samples/s", flush=True)
    # The machine's drift: --repeats calls of 4096 one after another, each timed alone.
    import time

    import numpy as np
    rates = []
    for rep in range(max(3, FLAGS.repeats)):
        start = time.perf_counter()
        sampler.sample(state, sampler_lib.REFERENCE_SAMPLES, seed=100 + rep)
        rates.append(sampler_lib.REFERENCE_SAMPLES / (time.perf_counter() - start))
    print(f"sampler alone, {len(rates)} calls of {sampler_lib.REFERENCE_SAMPLES} in a row: "
          f"{min(rates):.0f} / {np.median(rates):.0f} / {max(rates):.0f} samples/s "
          f"(min / median / max)", flush=True)


def main(argv):
    del argv
    from lmscale import runtime
    runtime.tune_host_allocator()
    if FLAGS.run_dir:
        return evaluate_run()
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
