r"""Benchmark: shared-context scorer vs one full forward per choice (choices/s and ratio).

The reference is what lm-evaluation-harness does per loglikelihood request: run the whole
[bos] + context + choice through the model, in batches, and sum the choice tokens' log-probs.
The scorer (`lmscale.eval.scorer.Scorer`) prefills each context once and decodes its choices
against the shared prefix. Setting: 4 choices per question, context 4x the choice length.

  python tools/bench_score.py                       # two small sizes, CPU
  python tools/bench_score.py --choice_len=32 --questions=64

Prints, per size, both throughputs, their ratio (goal >= 2x), and the largest absolute
difference of the log-likelihoods (the two must agree).
"""

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmscale import runtime
from lmscale.eval import scorer as scorer_lib
from lmscale.models import Decoder, ModelConfig, count_params, init_params

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
    parser.add_argument("--batch_questions", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default=",".join(SIZES))
    args = parser.parse_args()
    runtime.tune_host_allocator()  # as the binaries do; both sides run in this process
    context_len = 4 * args.choice_len
    print(f"device={jax.devices()[0].platform} choices/question=4 "
          f"choice_len={args.choice_len} context_len={context_len} questions={args.questions}")
    for name in args.sizes.split(","):
        config = ModelConfig(vocab_size=259, max_seq_len=256, name=name, **SIZES[name])
        params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))["params"]
        qs = _questions(np.random.default_rng(0), args.questions, context_len,
                        args.choice_len, config.vocab_size)
        scorer = scorer_lib.Scorer(config, params, batch_questions=args.batch_questions)
        fn = _full_forward_fn(config)
        rows = 4 * args.batch_questions  # same number of choices per call for both
        shared = np.concatenate([s.loglik for s in scorer.score(qs)])
        full = _full_forward(fn, params, qs, rows)
        t_shared, t_full = _time([lambda: scorer.score(qs),
                                  lambda: _full_forward(fn, params, qs, rows)], args.repeats)
        n = 4 * len(qs)
        print(f"{name}: N={count_params(config).total:,} shared {n / t_shared:,.0f} choices/s"
              f" | full forward {n / t_full:,.0f} choices/s | ratio {t_full / t_shared:.2f}x"
              f" | max |dLL| {np.max(np.abs(shared - full)):.2e}")


if __name__ == "__main__":
    main()
