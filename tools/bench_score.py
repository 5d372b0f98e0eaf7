r"""Benchmark: shared-context scorer vs one full forward per choice (choices/s and ratio).

The reference is what lm-evaluation-harness does per loglikelihood request: run the whole
[bos] + context + choice through the model, in batches, and sum the choice tokens' log-probs.
The scorer (`lmscale.eval.scorer.Scorer`) runs each batch's contexts once, with every
question's choices packed after its context in the same row (one forward a batch; on CPU
each block of choice tokens reads the context and a band of choice keys around it).
Setting: 4 choices per question, context 4x the choice length.

The reference's forward is lmscale's decoder, whose CPU attention cuts the queries into
blocks that skip the keys after them (`ops.causal_masked_attention`); its rule gives the
reference's 81-token rows one block, where two or three were faster in a scratch run, so
the reference is timed at every count in `--ref_blocks`; the scorer runs with the
library's rule. Both sides are timed at every batch size in `--batch_questions` (the
reference at 4 rows a question, so both read the same questions a call), and the ratio
that counts compares each side at its best setting (the strongest form of that peer).

  python tools/bench_score.py --repeats=10          # two small sizes, CPU
  python tools/bench_score.py --choice_len=32 --questions=64
  python tools/bench_score.py --repeats=10 --ablate_band   # + the scorer without its band

Prints, per size and batch size, both throughputs (the reference's at each block count)
and their ratio, then the best of each side and their ratio (goal >= 2.2x, issue 18),
and the largest absolute difference of the log-likelihoods (the two must agree).
"""

import argparse
import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmscale import runtime
from lmscale.eval import runner
from lmscale.eval import scorer as scorer_lib
from lmscale.models import Decoder, ModelConfig, count_params, init_params, ops

SIZES = {
    "d128_l4": dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, d_ff=320),
    "d256_l6": dict(d_model=256, n_layers=6, n_heads=8, n_kv_heads=4, d_ff=640),
}


def _questions(rng, n, context_len, choice_len, vocab):
    return [scorer_lib.Question(
        id=str(i), context_ids=rng.integers(3, vocab, context_len).astype(np.int32),
        choice_ids=tuple(rng.integers(3, vocab, choice_len).astype(np.int32)
                         for _ in range(4)),
        choice_texts=tuple("x" * choice_len for _ in range(4)), gold=0)
        for i in range(n)]


def _full_forward_fn(config):
    model = Decoder(config)

    @jax.jit
    def fn(params, tokens, start, length):
        # tokens [B, T] = bos + context + choice (+ padding); choice tokens at [start, start+len).
        logits = model.apply({"params": params}, tokens[:, :-1])
        logp = jax.nn.log_softmax(logits)
        tok = jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
        pos = jnp.arange(tokens.shape[1] - 1)[None, :] + 1
        mask = (pos >= start[:, None]) & (pos < (start + length)[:, None])
        return jnp.sum(jnp.where(mask, tok, 0.0), axis=1)

    return fn


def _full_forward(fn, params, questions, batch_rows):
    rows = [(np.concatenate([[0], q.context_ids, c]), 1 + len(q.context_ids), len(c))
            for q in questions for c in q.choice_ids]
    width = max(len(r[0]) for r in rows)  # exact: the reference's best case, no bucketing
    out = []
    for i in range(0, len(rows), batch_rows):
        chunk = rows[i:i + batch_rows]
        tokens = np.zeros((batch_rows, width), np.int32)
        start = np.zeros((batch_rows,), np.int32)
        length = np.zeros((batch_rows,), np.int32)
        for j, (seq, s, n) in enumerate(chunk):
            tokens[j, :len(seq)], start[j], length[j] = seq, s, n
        out.append(np.asarray(fn(params, tokens, start, length))[:len(chunk)])
    return np.concatenate(out)


def _time(fns, repeats):
    """Best seconds of each function over `repeats` alternating calls (after a warm-up)."""
    for f in fns:
        f()  # compile
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--choice_len", type=int, default=16)
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--batch_questions", default="8,16,32",
                        help="questions per call (comma-separated): both sides are timed at "
                             "each (the reference at 4 rows a question) and compared at "
                             "their best")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--ablate_band", action="store_true",
                        help="also time the scorer reading every choice key "
                             "(Scorer(band=False))")
    parser.add_argument("--ref_blocks", default="1,2,3",
                        help="attention query-block counts the reference is timed at "
                             "(its best counts)")
    args = parser.parse_args()
    runtime.tune_host_allocator()  # as the binaries do; both sides run in this process
    context_len = 4 * args.choice_len
    batches = [int(x) for x in args.batch_questions.split(",")]
    counts = [int(x) for x in args.ref_blocks.split(",")]
    print(f"device={jax.devices()[0].platform} choices/question=4 "
          f"choice_len={args.choice_len} context_len={context_len} questions={args.questions}"
          f" questions/call={batches} reference blocks={counts}")
    for name in args.sizes.split(","):
        config = ModelConfig(vocab_size=259, max_seq_len=256, name=name, **SIZES[name])
        params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))["params"]
        qs = _questions(np.random.default_rng(0), args.questions, context_len,
                        args.choice_len, config.vocab_size)
        default = runner.score_batch(None, len(qs), config)  # what the study's evaluator uses
        shared_fns, ref_fns, ablated_fns, dll = [], [], [], 0.0
        for b in batches:
            scorer = scorer_lib.Scorer(config, params, batch_questions=b)
            shared = np.concatenate([s.loglik for s in scorer.score(qs)])
            shared_fns.append(functools.partial(scorer.score, qs))
            if args.ablate_band:
                ablated = scorer_lib.Scorer(config, params, batch_questions=b, band=False)
                dll = max(dll, float(np.max(np.abs(
                    shared - np.concatenate([s.loglik for s in ablated.score(qs)])))))
                ablated_fns.append(functools.partial(ablated.score, qs))
            for count in counts:
                with ops.attention_block_count(count):  # read while tracing (first call)
                    fn = _full_forward_fn(config)
                    full = _full_forward(fn, params, qs, 4 * b)
                dll = max(dll, float(np.max(np.abs(shared - full))))
                ref_fns.append(functools.partial(_full_forward, fn, params, qs, 4 * b))
        times = _time(shared_fns + ref_fns + ablated_fns, args.repeats)
        nb, nr = len(batches), len(ref_fns)
        t_shared, t_ref, t_ablated = times[:nb], times[nb:nb + nr], times[nb + nr:]
        n = 4 * len(qs)
        print(f"{name}: N={count_params(config).total:,} (the study's evaluator would take "
              f"{default} questions a call)")
        for i, b in enumerate(batches):
            row = t_ref[i * len(counts):(i + 1) * len(counts)]
            per_count = ", ".join(f"{c} block{'s' * (c > 1)} {n / t:,.0f}"
                                  for c, t in zip(counts, row))
            print(f"  {b} questions a call: shared {n / t_shared[i]:,.0f} choices/s | full "
                  f"forward {n / min(row):,.0f} ({per_count}) | ratio "
                  f"{min(row) / t_shared[i]:.2f}x"
                  + (f" | no band {n / t_ablated[i]:,.0f} choices/s (band "
                     f"{t_ablated[i] / t_shared[i]:.2f}x)" if t_ablated else ""))
        best_s, best_r = int(np.argmin(t_shared)), int(np.argmin(t_ref))
        print(f"{name}: best shared {n / t_shared[best_s]:,.0f} choices/s "
              f"({batches[best_s]} questions a call) | best full forward "
              f"{n / t_ref[best_r]:,.0f} choices/s ({batches[best_r // len(counts)]} "
              f"questions a call, {counts[best_r % len(counts)]} blocks) | ratio "
              f"{t_ref[best_r] / t_shared[best_s]:.2f}x | max |dLL| {dll:.2e}")


if __name__ == "__main__":
    main()
