"""GPU check: train-step MFU (~125M, bf16, cuDNN attention), decode vs HBM roofline, scorer.

One script for the first GPU a session is lent, sized to finish in under 8 minutes on one
H100/H200. It prints three lines:

  train:  tokens/s and MFU of lmscale's jitted, donated train step (AdamW) on the
          hu2023 size-4 shape-family model (133M parameters, d_model 768, 16 layers) with
          bfloat16 compute and `ModelConfig.attention_impl="cudnn"`
          (`jax.nn.dot_product_attention`'s cuDNN kernel); MFU against --peak_tflops.
  decode: the sampler's decode tokens/s (many completions of one prompt) and that as a
          fraction of the HBM roofline: every decode step reads the weights once, the
          shared prompt's K/V once and each slot's own K/V, at --hbm_gbps (or, with
          --measure_bandwidth, the best of a few big device copies).
  score:  the shared-context scorer against one full forward per choice
          (tools/bench_score.py's reference), choices/s and ratio.

  python tools/gpu_check.py                     # on the GPU (H200 defaults)
  python tools/gpu_check.py --peak_tflops=989 --hbm_gbps=3350   # H100 SXM
  python tools/gpu_check.py --dry_run           # CPU, tiny shapes, seconds (tested)

--dry_run runs the same code on the CPU with a tiny model, attention_impl="xla" (cuDNN
needs a GPU), the peak measured with a float32 matmul and the bandwidth with a device copy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_score  # noqa: E402  (the scorer benchmark's reference and timing)

from lmscale import runtime  # noqa: E402
from lmscale.eval import sampler as sampler_lib  # noqa: E402
from lmscale.eval import scorer as scorer_lib  # noqa: E402
from lmscale.models import ModelConfig, cache_bytes_per_slot, families, init_params  # noqa: E402
from lmscale.train import metrics, optim  # noqa: E402
from lmscale.train import spec as spec_lib  # noqa: E402
from lmscale.train import step as step_lib  # noqa: E402

# H100 and H200 (SXM): 989 dense bf16 TFLOP/s both; HBM 3.35 TB/s (H100), 4.8 TB/s (H200).
PEAK_TFLOPS = 989.0
HBM_GBPS = 4800.0


def train_config(dry_run: bool) -> ModelConfig:
    if dry_run:
        return ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, d_ff=160,
                           max_seq_len=256, attention_impl="xla", name="gpu_check_dry")
    return families.hu2023(4, dtype="bfloat16", attention_impl="cudnn")


def time_train(config: ModelConfig, batch: int, seq: int, steps: int) -> float:
    """Best seconds per step over two blocks of `steps` of the jitted, donated step."""
    spec = spec_lib.RunSpec(config, seq_len=seq, batch_size=batch,
                            num_tokens=(2 * steps + 10) * batch * seq)
    state, train_step, batch_sharding = step_lib.one_device_train_step(
        spec, optim.OptimizerConfig(warmup_steps=1))
    rng = np.random.default_rng(0)
    toks = rng.integers(1, config.vocab_size, (batch, seq + 1)).astype(np.int32)
    data = jax.device_put({
        "decoder_input_tokens": toks[:, :-1], "decoder_target_tokens": toks[:, 1:],
        "decoder_loss_weights": np.ones((batch, seq), np.int32),
        "decoder_segment_ids": np.ones((batch, seq), np.int32),
        "decoder_positions": np.tile(np.arange(seq, dtype=np.int32), (batch, 1))},
        batch_sharding)
    best = float("inf")
    for block in range(3):  # the first block compiles and warms up
        t0 = time.perf_counter()
        for _ in range(steps if block else 2):
            state, m = train_step(state, data)
        jax.block_until_ready((state, m))
        if block:
            best = min(best, (time.perf_counter() - t0) / steps)
    return best


def measure_device_bandwidth(num_bytes: int, repeats: int = 5) -> float:
    """Device memory bandwidth (bytes/s): best of `repeats` jitted copies (read + write)."""
    x = jnp.ones((num_bytes // 4,), jnp.float32)
    copy = jax.jit(lambda a: a + 1.0)
    copy(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        copy(x).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * x.nbytes / best


def decode_check(config: ModelConfig, slots: int, prompt_len: int, new_tokens: int,
                 num_samples: int, bandwidth: float) -> tuple[float, float]:
    """(decode tokens/s, roofline tokens/s) of `num_samples` completions of one prompt."""
    params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))["params"]
    sampler = sampler_lib.Sampler(params, config, num_slots=slots, max_new_tokens=new_tokens,
                                  eos_id=None)
    prompt = np.random.default_rng(0).integers(3, config.vocab_size, prompt_len)
    state = sampler.prefill(prompt.astype(np.int32))
    sampler.sample(state, num_samples, seed=0)  # compile and first call
    best = float("inf")
    for rep in range(3):
        t0 = time.perf_counter()
        sampler.sample(state, num_samples, seed=rep + 1)
        best = min(best, time.perf_counter() - t0)
    weight_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(params))
    step_bytes = (weight_bytes + cache_bytes_per_slot(config, prompt_len)
                  + slots * cache_bytes_per_slot(config, max(new_tokens // 2, 1)))
    return num_samples * new_tokens / best, slots * bandwidth / step_bytes


def score_check(config: ModelConfig, questions: int, choice_len: int, batch_questions: int):
    """(shared choices/s, full-forward choices/s) on tools/bench_score.py's setting."""
    params = nn.unbox(init_params(config, jax.random.PRNGKey(0)))["params"]
    qs = bench_score._questions(np.random.default_rng(0), questions, 4 * choice_len,
                                choice_len, config.vocab_size)
    scorer = scorer_lib.Scorer(config, params, batch_questions=batch_questions)
    fn = bench_score._full_forward_fn(config)
    rows = 4 * batch_questions
    shared = np.concatenate([s.loglik for s in scorer.score(qs)])
    full = bench_score._full_forward(fn, params, qs, rows)
    gap = float(np.max(np.abs(shared - full)))
    t_shared, t_full = bench_score._time([lambda: scorer.score(qs),
                                          lambda: bench_score._full_forward(fn, params, qs,
                                                                            rows)], 3)
    n = 4 * len(qs)
    return n / t_shared, n / t_full, gap


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry_run", action="store_true", help="CPU, tiny shapes, seconds")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--peak_tflops", type=float, default=PEAK_TFLOPS,
                        help="bf16 dense peak of the GPU (H100/H200 SXM: 989)")
    parser.add_argument("--hbm_gbps", type=float, default=HBM_GBPS,
                        help="HBM bandwidth GB/s (H200 4800, H100 SXM 3350)")
    parser.add_argument("--measure_bandwidth", action="store_true",
                        help="use the best of a few 1 GiB device copies instead of --hbm_gbps")
    args = parser.parse_args(argv)
    runtime.tune_host_allocator()
    t_start = time.perf_counter()
    config = train_config(args.dry_run)
    batch, seq, steps = (2, 64, 2) if args.dry_run else (args.batch, args.seq, args.steps)
    print(f"device {jax.devices()[0].device_kind} ({jax.default_backend()}); model "
          f"{config.name} N={config.num_params.total:,} dtype {config.dtype} attention "
          f"{config.attention_impl}", flush=True)
    sec = time_train(config, batch, seq, steps)
    if args.dry_run:
        peak = metrics.measure_peak_flops(size=256, repeats=3)
    else:
        peak = args.peak_tflops * 1e12
    flops = config.flops_per_token(seq) * batch * seq
    print(f"train: batch {batch} x seq {seq}: {batch * seq / sec:,.0f} tokens/s, "
          f"{sec * 1e3:.1f} ms/step, MFU {100 * flops / sec / peak:.1f}% of "
          f"{peak / 1e12:.3g} TFLOP/s", flush=True)

    if args.dry_run or args.measure_bandwidth:
        bandwidth = measure_device_bandwidth(1 << (24 if args.dry_run else 30))
        source = "measured device copy"
    else:
        bandwidth, source = args.hbm_gbps * 1e9, "--hbm_gbps"
    dconfig = (ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, d_ff=160,
                           max_seq_len=256) if args.dry_run else
               families.hu2023(4, dtype="bfloat16", max_seq_len=1024))
    slots, prompt_len, new_tokens, n = (8, 16, 8, 16) if args.dry_run else (256, 512, 128, 1024)
    tps, bound = decode_check(dconfig, slots, prompt_len, new_tokens, n, bandwidth)
    print(f"decode: {slots} slots, prompt {prompt_len}, {new_tokens} new tokens: "
          f"{tps:,.0f} tokens/s = {100 * tps / bound:.1f}% of the roofline {bound:,.0f} "
          f"tokens/s ({bandwidth / 1e9:,.0f} GB/s, {source})", flush=True)

    sconfig = ModelConfig(vocab_size=259, max_seq_len=256, name="d256_l6",
                          **bench_score.SIZES["d256_l6"])
    if args.dry_run:
        sconfig = ModelConfig(vocab_size=259, d_model=32, n_layers=1, n_heads=2, d_ff=64,
                              max_seq_len=256, name="dry_d32")
    shared, full, gap = score_check(sconfig, 8 if args.dry_run else 256, 16,
                                    2 if args.dry_run else 32)
    print(f"score: {sconfig.name} shared {shared:,.0f} choices/s | full forward "
          f"{full:,.0f} choices/s | ratio {full and shared / full:.2f}x | max |dLL| "
          f"{gap:.2e}")
    print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
