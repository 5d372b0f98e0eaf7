"""Benchmark: completed samples/s of lmscale's sampler vs transformers' generate (issue #7).

One instance: a prompt of --prompt_len random tokens, --num_samples completions of exactly
--max_new_tokens tokens each (no EOS, so both decoders do the same work), on the same
weights: a small random `transformers` LlamaForCausalLM built locally (no download) whose
weights are imported into lmscale params here. Two references: `generate(do_sample=True,
num_return_sequences=...)` with its default dynamic cache (eager), and the same with a static
cache and the forward compiled by `torch.compile`; both re-encode the prompt for every
returned sequence. Every side is timed alike: a first call (compilation) apart, then
--repeats calls alternating between the sides, each side's best call reported.

Prints samples/s of every side, the ratio to the stronger reference (goal >= 5x), decode
tokens/s, a roofline line (decode tokens/s as a fraction of this host's memory-bandwidth
bound, the bandwidth measured in the same run), and the KV-cache bytes per slot with the
shared prompt (generated tokens only) and without it.

A second row (--study_row) times lmscale alone on a model typical of the CPU study ladder:
byte vocabulary (259 ids), d_model 64, 2 layers, a 64-token prompt, 8 new tokens, 4096
samples (random weights; the rate does not depend on them).

Usage:
  .venv/bin/python tools/bench_sample.py [--num_samples=1024 --prompt_len=256
      --max_new_tokens=32 --num_slots=128 --hf_batch=128 --hf_num_samples=1024]
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import app, flags  # noqa: E402

flags.DEFINE_integer("num_samples", 1024, "completions of the one instance")
flags.DEFINE_integer("prompt_len", 256, "prompt tokens")
flags.DEFINE_integer("max_new_tokens", 32, "tokens per completion")
flags.DEFINE_integer("num_slots", 128, "lmscale sampler slots")
flags.DEFINE_integer("hf_batch", 128, "num_return_sequences per transformers generate call")
flags.DEFINE_integer("hf_num_samples", 1024, "completions timed for transformers "
                     "(fewer than num_samples saves time; the rate is what is compared)")
flags.DEFINE_integer("vocab_size", 1024, "model vocabulary")
flags.DEFINE_integer("d_model", 256, "model width")
flags.DEFINE_integer("n_layers", 4, "layers")
flags.DEFINE_integer("n_heads", 4, "query heads")
flags.DEFINE_integer("n_kv_heads", 4, "key/value heads")
flags.DEFINE_integer("d_ff", 688, "MLP hidden width")
flags.DEFINE_integer("threads", 0, "torch threads (0: torch default)")
flags.DEFINE_integer("repeats", 3, "timed calls per side after the first, alternating "
                     "between the sides (each side's best is reported)")
flags.DEFINE_string("hf_sides", "hf_dynamic,hf_static_compiled",
                    "transformers references: hf_dynamic (default dynamic cache, eager), "
                    "hf_static_compiled (static cache, torch.compile'd forward)")
flags.DEFINE_bool("study_row", True, "also time the study-ladder-sized model")
flags.DEFINE_integer("study_num_samples", 4096, "study row: completions")
flags.DEFINE_integer("study_slots", 256, "study row: sampler slots")
FLAGS = flags.FLAGS


def build_models():
    """A random LlamaForCausalLM and the lmscale (config, params) carrying its weights."""
    import numpy as np
    import torch
    import transformers

    from lmscale.models import ModelConfig

    torch.manual_seed(0)
    hf_config = transformers.LlamaConfig(
        vocab_size=FLAGS.vocab_size, hidden_size=FLAGS.d_model,
        intermediate_size=FLAGS.d_ff, num_hidden_layers=FLAGS.n_layers,
        num_attention_heads=FLAGS.n_heads, num_key_value_heads=FLAGS.n_kv_heads,
        max_position_embeddings=FLAGS.prompt_len + FLAGS.max_new_tokens,
        rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=False,
        hidden_act="silu", attention_bias=False, mlp_bias=False, initializer_range=0.1)
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    config = ModelConfig(
        vocab_size=FLAGS.vocab_size, d_model=FLAGS.d_model, n_layers=FLAGS.n_layers,
        n_heads=FLAGS.n_heads, n_kv_heads=FLAGS.n_kv_heads, d_ff=FLAGS.d_ff, mlp="gated",
        activation="silu", norm="rms", norm_eps=1e-6, rotary_fraction=1.0,
        rope_theta=10000.0, tie_embeddings=False,
        max_seq_len=FLAGS.prompt_len + FLAGS.max_new_tokens, name="bench-llama")
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in hf.state_dict().items()}
    d, n, k = config.d_model, config.n_heads, config.n_kv_heads
    h = config.head_dim
    params = {"embed": {"embedding": sd["model.embed_tokens.weight"]},
              "ln_final": {"scale": sd["model.norm.weight"]},
              "unembed": {"kernel": sd["lm_head.weight"].T}}
    for i in range(config.n_layers):
        p = f"model.layers.{i}."
        # torch Linear stores [out, in]; lmscale kernels are [in, heads, head_dim] etc.
        params[f"block_{i}"] = {
            "attn": {
                "query": {"kernel": sd[p + "self_attn.q_proj.weight"].T.reshape(d, n, h)},
                "key": {"kernel": sd[p + "self_attn.k_proj.weight"].T.reshape(d, k, h)},
                "value": {"kernel": sd[p + "self_attn.v_proj.weight"].T.reshape(d, k, h)},
                "out": {"kernel": sd[p + "self_attn.o_proj.weight"].T.reshape(n, h, d)}},
            "ln_attn": {"scale": sd[p + "input_layernorm.weight"]},
            "ln_mlp": {"scale": sd[p + "post_attention_layernorm.weight"]},
            "mlp": {"wi_gate": {"kernel": sd[p + "mlp.gate_proj.weight"].T},
                    "wi_up": {"kernel": sd[p + "mlp.up_proj.weight"].T},
                    "wo": {"kernel": sd[p + "mlp.down_proj.weight"].T}}}
    return hf, config, params


def main(argv):
    del argv
    from lmscale import runtime
    runtime.tune_host_allocator()  # as the binaries do, before JAX starts its CPU client
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from lmscale.eval import sampler as sampler_lib
    from lmscale.models import Decoder, cache_bytes_per_slot

    if FLAGS.threads:
        torch.set_num_threads(FLAGS.threads)
    hf, config, params = build_models()
    params = jax.tree.map(jnp.asarray, params)
    prompt = np.random.default_rng(0).integers(3, FLAGS.vocab_size, FLAGS.prompt_len)

    # Same weights: the two models' logits on the prompt agree.
    ours = np.asarray(Decoder(config).apply({"params": params}, jnp.asarray(prompt[None])))
    with torch.no_grad():
        theirs = hf(torch.as_tensor(prompt[None])).logits.numpy()
    max_diff = float(np.abs(ours - theirs).max())
    print(f"weights imported: max |logits lmscale - transformers| = {max_diff:.2e} "
          f"(logit std {ours.std():.2f})")
    if max_diff > 1e-3 * max(1.0, float(np.abs(theirs).max())):
        raise SystemExit("weight import mismatch: the comparison would not be fair")

    s, n = FLAGS.max_new_tokens, FLAGS.num_samples
    sampler = sampler_lib.Sampler(params, config, method=sampler_lib.Temperature(1.0),
                                  num_slots=FLAGS.num_slots, max_new_tokens=s, eos_id=None,
                                  max_samples_per_call=max(n, 1))
    state = sampler.prefill(prompt)
    sides = {"lmscale": (n, lmscale_side(sampler, state, n, s))}
    for name in [x for x in FLAGS.hf_sides.split(",") if x]:
        sides[name] = (FLAGS.hf_num_samples,
                       hf_side(hf, prompt, s, FLAGS.hf_num_samples, FLAGS.hf_batch,
                               static=name == "hf_static_compiled"))
    warm = {name: _timed(run) for name, (_, run) in sides.items()}  # compiles
    best = {name: float("inf") for name in sides}
    for _ in range(max(FLAGS.repeats, 1)):  # alternating blocks; each side's best counts
        for name, (_, run) in sides.items():
            best[name] = min(best[name], _timed(run))
    rates = {name: count / best[name] for name, (count, _) in sides.items()}

    bandwidth = measure_bandwidth()
    shared = cache_bytes_per_slot(config, s)
    unshared = cache_bytes_per_slot(config, FLAGS.prompt_len + s)
    print(f"model: {config.n_layers} layers, d_model {config.d_model}, vocab "
          f"{config.vocab_size}, {config.num_params.total:,} params; prompt "
          f"{FLAGS.prompt_len}, {s} new tokens, {jax.devices()[0].platform} "
          f"({os.cpu_count()} cores), torch threads {torch.get_num_threads()}; every side "
          f"timed alike: first call (compile) apart, then best of {FLAGS.repeats} "
          f"alternating calls")
    for name, (count, _) in sides.items():
        print(f"  {name:<20} {count} samples in {best[name]:.2f} s = {rates[name]:8.1f} "
              f"samples/s, {count * s / best[name]:9.0f} decode tokens/s "
              f"(first call {warm[name]:.1f} s)")
    refs = {k: v for k, v in rates.items() if k != "lmscale"}
    if refs:
        strongest = max(refs, key=refs.get)
        print(f"ratio lmscale / {strongest} (the stronger reference): "
              f"{rates['lmscale'] / refs[strongest]:.2f}x (goal >= 5x); "
              + ", ".join(f"/ {k}: {rates['lmscale'] / v:.2f}x" for k, v in refs.items()))
    bound = decode_roofline(config, FLAGS.num_slots, FLAGS.prompt_len, s, bandwidth)
    print(f"roofline: host memory bandwidth {bandwidth / 1e9:.1f} GB/s (numpy copy, this run); "
          f"decode bound {bound:.0f} tokens/s at {FLAGS.num_slots} slots (weights + shared "
          f"prompt KV + mean generated KV read once per step); lmscale at "
          f"{100 * rates['lmscale'] * s / bound:.1f}% of it")
    print(f"KV cache bytes per slot: {shared:,} with the shared prompt, {unshared:,} without "
          f"({unshared / shared:.1f}x)")
    if FLAGS.study_row:
        study_row()


def _timed(run) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def lmscale_side(sampler, state, num_samples: int, new_tokens: int):
    """One timed unit of the lmscale side: `num_samples` completions of the prefilled prompt."""
    seeds = iter(range(1, 1 << 30))

    def run():
        out = sampler.sample(state, num_samples, seed=next(seeds))
        assert out.tokens.shape == (num_samples, new_tokens)
        assert (out.lengths == new_tokens).all()
    return run


def hf_side(hf, prompt, new_tokens: int, num_samples: int, batch: int, static: bool):
    """One timed unit of a transformers side: `num_samples` completions in calls of `batch`.

    static: a static KV cache (`cache_implementation="static"`) and the model's forward
    compiled by `torch.compile` (the fastest documented `generate` set-up); else the default
    dynamic cache, eager.
    """
    import torch
    inputs = torch.as_tensor(prompt[None])
    gen = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
               min_new_tokens=new_tokens, pad_token_id=0, eos_token_id=None)
    model = hf
    if static:
        import copy
        model = copy.deepcopy(hf)
        model.forward = torch.compile(model.forward, dynamic=False)
        gen["cache_implementation"] = "static"

    def run():
        with torch.no_grad():
            done = 0
            while done < num_samples:
                m = min(batch, num_samples - done)
                seqs = model.generate(inputs, num_return_sequences=m, **gen)
                assert seqs.shape == (m, len(prompt) + new_tokens)
                done += m
    return run


def measure_bandwidth(num_bytes: int = 1 << 28, repeats: int = 5) -> float:
    """Host memory bandwidth (bytes/s): best of `repeats` numpy copies (read + write)."""
    import numpy as np
    src = np.ones(num_bytes // 8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best


def decode_roofline(config, slots: int, prompt_len: int, new_tokens: int,
                    bandwidth: float) -> float:
    """Decode tokens/s if each step only had to read its bytes once at `bandwidth`.

    A step of `slots` sequences reads every weight once (float32), the shared prompt's K/V
    once, and each slot's own generated K/V (on average new_tokens / 2 positions).
    """
    from lmscale.models import cache_bytes_per_slot
    weights = 4 * config.num_params.total
    prompt_kv = cache_bytes_per_slot(config, prompt_len)
    own_kv = slots * cache_bytes_per_slot(config, max(new_tokens // 2, 1))
    return slots * bandwidth / (weights + prompt_kv + own_kv)


def time_sampler(sampler, prompt, num_samples):
    """(completions, compile + first call s, best of --repeats calls s) for one prompt."""
    state = sampler.prefill(prompt)
    t0 = time.perf_counter()
    sampler.sample(state, num_samples, seed=0)
    compile_s = time.perf_counter() - t0
    best, out = float("inf"), None
    for rep in range(max(FLAGS.repeats, 1)):
        t0 = time.perf_counter()
        out = sampler.sample(state, num_samples, seed=rep + 1)
        best = min(best, time.perf_counter() - t0)
    return out, compile_s, best


def study_row():
    """lmscale alone on a study-ladder-sized byte model (see the module docstring)."""
    import jax

    from lmscale.eval import sampler as sampler_lib
    from lmscale.models import cache_bytes_per_slot
    from lmscale import testing
    from lmscale.testing import tiny_params

    prompt_len, new_tokens = testing.STUDY_ROW_PROMPT_LEN, testing.STUDY_ROW_NEW_TOKENS
    n = FLAGS.study_num_samples
    config = testing.study_row_config()
    params = tiny_params(config)
    prompt, = testing.random_prompts(1)
    sampler = sampler_lib.Sampler(params, config, method=sampler_lib.Temperature(1.0),
                                  num_slots=FLAGS.study_slots, max_new_tokens=new_tokens,
                                  eos_id=None, max_samples_per_call=n)
    out, compile_s, best = time_sampler(sampler, prompt, n)
    assert out.tokens.shape == (n, new_tokens) and (out.lengths == new_tokens).all()
    print(f"study row: vocab 259, d_model 64, 2 layers, {config.num_params.total:,} params, "
          f"prompt {prompt_len}, {new_tokens} new tokens, {FLAGS.study_slots} slots, "
          f"{jax.devices()[0].platform}: {n} samples in {best:.2f} s = {n / best:.0f} "
          f"samples/s, {n * new_tokens / best:.0f} decode tokens/s (compile+first call "
          f"{compile_s:.1f} s); KV bytes per slot {cache_bytes_per_slot(config, new_tokens):,}"
          f" shared, {cache_bytes_per_slot(config, prompt_len + new_tokens):,} without")


if __name__ == "__main__":
    app.run(main)
