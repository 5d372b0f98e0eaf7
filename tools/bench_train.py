"""Benchmark: tokens/s and MFU of the lmscale train step vs PyTorch (eager and compiled).

Needs the `bench` extra (torch). Every side trains the same architecture (RMSNorm, rotary,
gated GeLU, tied embeddings, causal MHA) with the same batch, sequence length and AdamW
(0.9, 0.95, weight decay 0.1, clip 1.0) on this machine's CPU, from the SAME initial
weights (lmscale's, copied into the PyTorch model): before anything is timed, the first
step's loss and gradient norm of every side must agree with lmscale's to 1e-4 (relative),
or the benchmark stops. Sides:

  lmscale        the jitted, donated train step of `lmscale.train.step`;
  torch          PyTorch eager, AdamW foreach;
  torch.compile  the model compiled by `torch.compile` (inductor, CPU) and fused AdamW:
                 the peer a PyTorch user would pick.

MFU is measured against this host's float32 matmul peak, taken in the same run.

  python tools/bench_train.py [--d_models=64,128,256] [--batch=8] [--seq=128] [--steps=10]
      [--rounds=5] [--sides=lmscale,torch,torch.compile] [--default_allocator]
      [--attention_impl=default|xla] [--no_explicit_vjp]
      [--variant=NAME[:KEY=VALUE]...]... [--profile=DIR]

Ablations: --default_allocator (glibc's allocator as it is), --no_explicit_vjp (plain
autodiff for every product and attention: `ops.set_explicit_vjp(False)`),
--attention_impl=xla (`jax.nn.dot_product_attention` instead of lmscale's attention).

In-process A/B of lmscale variants: each `--variant` is one more lmscale side, timed in
the same alternating blocks; the first is the baseline the others' ratios refer to, e.g.

  --sides=lmscale --variant=base --variant=onednn:xla_cpu_use_onednn=true
      --variant=noynn:xla_cpu_experimental_ynn_fusion_type= --variant=autodiff:explicit_vjp=0

KEY `explicit_vjp` (0/1), `fused_projections` (0/1: queries/keys/values and gate/up each
one matmul, `layers.fused_projections`; off by default), `attention_blocks` (N: query
blocks of the CPU attention, `ops.attention_block_count`; 1 = one product) and
`attention_impl` change the traced program; any other KEY is an XLA debug option for that
executable alone (`jax.jit(compiler_options=)`: true/false and integers are converted).
Every variant must start with the baseline's loss and gradient norm (1e-4).

--profile=DIR traces 5 steps of each width's first lmscale side with `jax.profiler` and
prints the time per step in each traced XLA operation (library calls: YNNPACK/oneDNN
fusions, by HLO name), summed over XLA's threads, and the step's wall time.

Prints one row per width: tokens/s of each side (best of `rounds` alternating blocks of
`steps` steps), the ratio lmscale / each PyTorch side, and MFU.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from lmscale import runtime  # noqa: E402
from lmscale.models import ops  # noqa: E402
from lmscale.models.config import ModelConfig  # noqa: E402
from lmscale.train import metrics, optim  # noqa: E402
from lmscale.train import spec as spec_lib  # noqa: E402
from lmscale.train import step as step_lib  # noqa: E402

N_LAYERS, HEAD_DIM, VOCAB = 4, 32, 256


def model_config(d_model: int, attention_impl: str = "default") -> ModelConfig:
    return ModelConfig(vocab_size=VOCAB, d_model=d_model, n_layers=N_LAYERS,
                       n_heads=d_model // HEAD_DIM, d_ff=int(2.5 * d_model), mlp="gated",
                       activation="gelu", tie_embeddings=True, rotary_fraction=1.0,
                       max_seq_len=2048, attention_impl=attention_impl,
                       name=f"bench_d{d_model}")


def synthetic_batch(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    toks = rng.integers(1, VOCAB, (batch, seq + 1)).astype(np.int32)
    return {"decoder_input_tokens": toks[:, :-1], "decoder_target_tokens": toks[:, 1:],
            "decoder_loss_weights": np.ones((batch, seq), np.int32),
            "decoder_segment_ids": np.ones((batch, seq), np.int32),
            "decoder_positions": np.tile(np.arange(seq, dtype=np.int32), (batch, 1))}


def parse_variant(text: str) -> tuple[str, dict]:
    """'NAME:KEY=VALUE:...' -> (NAME, {KEY: value}); true/false/integers converted."""
    name, *items = text.split(":")
    options = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not key or not eq:
            raise SystemExit(f"--variant {text!r}: {item!r} is not KEY=VALUE")
        low = value.lower()
        options[key] = (low == "true" if low in ("true", "false")
                        else int(value) if value.lstrip("-").isdigit() else value)
    return name, options


def lmscale_stepper(config: ModelConfig, batch: int, seq: int, total_steps: int,
                    options: dict | None = None):
    """`run(n)`: n steps of the jitted, donated lmscale train step on one device, synced.

    options: a `--variant`'s settings (`explicit_vjp`, `attention_impl`, XLA options).
    """
    options = dict(options or {})
    vjp = options.pop("explicit_vjp", None)
    vjp = ops.explicit_vjp_enabled() if vjp is None else bool(vjp)
    from lmscale.models import layers  # pylint: disable=g-import-not-at-top
    blocks = options.pop("attention_blocks", None)
    fuse = options.pop("fused_projections", None)
    fuse = None if fuse is None else bool(fuse)
    if "attention_impl" in options:
        config = config.replace(attention_impl=options.pop("attention_impl"))
    spec = spec_lib.RunSpec(config, seq_len=seq, batch_size=batch,
                            num_tokens=(total_steps + 10) * batch * seq)
    state, train_step, batch_sharding = step_lib.one_device_train_step(
        spec, optim.OptimizerConfig(warmup_steps=1), compiler_options=options or None)
    data = jax.device_put(synthetic_batch(batch, seq), batch_sharding)
    params0 = jax.device_get(state.params)
    with ops.explicit_vjp(vjp), layers.fused_projections(fuse), \
            ops.attention_block_count(blocks):
        probe = jax.jit(jax.value_and_grad(lambda p: _mean_loss(config, p, data)),
                        compiler_options=options or None)
        loss0, grads0 = probe(state.params)
    first = (float(loss0), float(np.sqrt(sum(np.sum(np.square(g)) for g in
                                             jax.tree_util.tree_leaves(grads0)))))
    box = [state]

    def run(n: int) -> None:
        state = box[0]
        # read while the step is traced (first call)
        with ops.explicit_vjp(vjp), layers.fused_projections(fuse), \
                ops.attention_block_count(blocks):
            for _ in range(n):
                state, m = train_step(state, data)
        jax.block_until_ready((state, m))
        box[0] = state
    run.params0, run.first = params0, first
    return run


_NOT_OPS = ("ThreadpoolListener", "ThunkExecutor", "SlinkyThreadPool", "end: ")


def profile(run, directory: str, steps: int = 5, top: int = 25) -> None:
    """Traces `steps` steps of `run` and prints thread time per step of each XLA op."""
    run(2)
    options = jax.profiler.ProfileOptions()
    options.host_tracer_level = 3
    start = time.perf_counter()
    with jax.profiler.trace(directory, create_perfetto_trace=True, profiler_options=options):
        run(steps)
    wall = (time.perf_counter() - start) / steps
    path = max(glob.glob(os.path.join(directory, "plugins/profile/*/*.trace.json.gz")),
               key=os.path.getmtime)
    with gzip.open(path) as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    threads = {e["tid"]: e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    per_op, calls = collections.Counter(), collections.Counter()
    for e in events:
        if (e.get("ph") == "X" and threads.get(e.get("tid"), "").startswith("tf_XLA")
                and not e["name"].startswith(_NOT_OPS)):
            per_op[e["name"]] += e["dur"] / 1e3 / steps
            calls[e["name"]] += 1
    total = sum(per_op.values())
    print(f"  profile ({path}): wall {1e3 * wall:.2f} ms/step (traced), traced XLA ops "
          f"{total:.2f} ms/step of thread time in {sum(calls.values()) // steps} calls")
    kinds, kind_calls = collections.Counter(), collections.Counter()
    for name, ms in per_op.items():
        kind = name.rsplit(".", 1)[0] if name.rsplit(".", 1)[-1].isdigit() else name
        kinds[kind] += ms
        kind_calls[kind] += calls[name] // steps
    print("   by kind: " + ", ".join(f"{k} {ms:.2f} ms x{kind_calls[k]}"
                                     for k, ms in kinds.most_common(12)))
    for name, ms in per_op.most_common(top):
        print(f"    {ms:8.3f} ms  {100 * ms / total:5.1f}%  x{calls[name] // steps:<4} {name}")


def _mean_loss(config: ModelConfig, params, data):
    _, (nll_sum, _, weight_sum) = step_lib.loss_sums(config, params, data, with_z_loss=False)
    return nll_sum / weight_sum


class TorchDecoder(torch.nn.Module):
    """The same decoder in PyTorch eager (reference only)."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.c = c
        d, f = c.d_model, c.d_ff
        self.embed = torch.nn.Embedding(c.vocab_size, d)
        torch.nn.init.normal_(self.embed.weight, std=c.init_std)
        self.blocks = torch.nn.ModuleList()
        for _ in range(c.n_layers):
            blk = torch.nn.ModuleDict({
                "ln1": torch.nn.RMSNorm(d, eps=c.norm_eps), "ln2": torch.nn.RMSNorm(d, eps=c.norm_eps),
                "qkv": torch.nn.Linear(d, 3 * d, bias=False), "out": torch.nn.Linear(d, d, bias=False),
                "gate": torch.nn.Linear(d, f, bias=False), "up": torch.nn.Linear(d, f, bias=False),
                "down": torch.nn.Linear(f, d, bias=False)})
            self.blocks.append(blk)
        self.ln_f = torch.nn.RMSNorm(d, eps=c.norm_eps)
        half = c.head_dim // 2
        inv = 1.0 / (c.rope_theta ** (torch.arange(half, dtype=torch.float32) * 2 / c.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def rotary(self, x, pos):  # x [B, N, T, H]
        ang = pos[:, None, :, None].float() * self.inv_freq
        sin, cos = ang.sin(), ang.cos()
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def forward(self, tokens, pos):
        c = self.c
        b, t = tokens.shape
        x = self.embed(tokens)
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["ln1"](x)).view(b, t, 3, c.n_heads, c.head_dim).unbind(2)
            q, k, v = (z.transpose(1, 2) for z in (q, k, v))
            q, k = self.rotary(q, pos), self.rotary(k, pos)
            a = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + blk["out"](a.transpose(1, 2).reshape(b, t, -1))
            h = blk["ln2"](x)
            x = x + blk["down"](torch.nn.functional.gelu(blk["gate"](h)) * blk["up"](h))
        return self.ln_f(x) @ self.embed.weight.T

    @torch.no_grad()
    def load_lmscale(self, params) -> None:
        """Copies lmscale's parameter tree (`Decoder` layout) into this module."""
        t = lambda a: torch.from_numpy(np.array(a, np.float32))  # noqa: E731 (a writable copy)
        d = self.c.d_model
        self.embed.weight.copy_(t(params["embed"]["embedding"]))
        self.ln_f.weight.copy_(t(params["ln_final"]["scale"]))
        for i, blk in enumerate(self.blocks):
            p = params[f"block_{i}"]
            a = p["attn"]
            qkv = [np.asarray(a[n]["kernel"]).reshape(d, -1).T for n in ("query", "key", "value")]
            blk["qkv"].weight.copy_(t(np.concatenate(qkv, axis=0)))
            blk["out"].weight.copy_(t(np.asarray(a["out"]["kernel"]).reshape(-1, d).T))
            blk["ln1"].weight.copy_(t(p["ln_attn"]["scale"]))
            blk["ln2"].weight.copy_(t(p["ln_mlp"]["scale"]))
            blk["gate"].weight.copy_(t(np.asarray(p["mlp"]["wi_gate"]["kernel"]).T))
            blk["up"].weight.copy_(t(np.asarray(p["mlp"]["wi_up"]["kernel"]).T))
            blk["down"].weight.copy_(t(np.asarray(p["mlp"]["wo"]["kernel"]).T))


def torch_stepper(config: ModelConfig, batch: int, seq: int, params0, compiled: bool = False):
    """`run(n)`: n PyTorch AdamW steps on the same shapes from lmscale's initial `params0`.

    compiled: `torch.compile` the model (inductor) and use fused AdamW; else eager with
    foreach AdamW. `run.first` holds the first step's (loss, gradient norm before
    clipping), computed before any update.
    """
    torch.manual_seed(0)
    model = TorchDecoder(config)
    model.load_lmscale(params0)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": other, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
                            **({"fused": True} if compiled else {"foreach": True}))
    forward = torch.compile(model) if compiled else model
    data = synthetic_batch(batch, seq)
    tokens = torch.from_numpy(data["decoder_input_tokens"]).long()
    targets = torch.from_numpy(data["decoder_target_tokens"]).long()
    pos = torch.from_numpy(data["decoder_positions"]).long()

    def loss_and_grads():
        logits = forward(tokens, pos)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, config.vocab_size),
                                                 targets.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    def one_step():
        loss_and_grads()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    loss = loss_and_grads()
    grad_norm = torch.sqrt(sum(torch.sum(p.grad ** 2) for p in model.parameters()))
    first = (float(loss.detach()), float(grad_norm.detach()))
    opt.zero_grad(set_to_none=True)

    def run(n: int) -> None:
        for _ in range(n):
            one_step()
    run.first = first
    return run


def check_same_start(sides: dict, base: str = "lmscale", tol: float = 1e-4) -> None:
    """Raises unless every side's first loss and gradient norm equal `base`'s (relative)."""
    ref_loss, ref_norm = sides[base].first
    for name, run in sides.items():
        loss, norm = run.first
        if abs(loss - ref_loss) > tol * abs(ref_loss) or abs(norm - ref_norm) > tol * ref_norm:
            raise SystemExit(f"{name}: first loss {loss:.6f} / grad norm {norm:.6f} differ from "
                             f"{base}'s {ref_loss:.6f} / {ref_norm:.6f} by more than {tol}: "
                             f"the sides do not compute the same step")


def interleaved(runners: dict, steps: int, rounds: int) -> dict[str, float]:
    """Best seconds per step of each runner over `rounds` alternating blocks of `steps`.

    Alternating the sides and keeping each side's best block makes the ratio robust to the
    load swings of a shared machine (a one-off block per side is not).
    """
    for run in runners.values():
        run(3)  # compile / warm up
    best = {name: math.inf for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            start = time.perf_counter()
            run(steps)
            best[name] = min(best[name], (time.perf_counter() - start) / steps)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d_models", default="64,128,256")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed block")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating timed blocks per side; the best block counts")
    parser.add_argument("--sides", default="lmscale,torch,torch.compile",
                        help="comma-separated sides to time (lmscale is always included)")
    parser.add_argument("--default_allocator", action="store_true",
                        help="leave glibc's allocator as it is (lmscale.runtime not applied)")
    parser.add_argument("--attention_impl", default="default", choices=("default", "xla"),
                        help="ModelConfig.attention_impl of the lmscale side (ablation)")
    parser.add_argument("--no_explicit_vjp", action="store_true",
                        help="plain autodiff backward for every product (ablation)")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME[:KEY=VALUE]...: one more lmscale side (repeatable; the "
                             "first is the baseline of the variants' ratios)")
    parser.add_argument("--profile", default="",
                        help="directory: trace and print per-op times of each width's "
                             "first lmscale side")
    args = parser.parse_args()
    if args.no_explicit_vjp:
        ops.set_explicit_vjp(False)
    # Before JAX starts its CPU client; the PyTorch side runs in the same process.
    tuned = False if args.default_allocator else runtime.tune_host_allocator()
    variants = [parse_variant(v) for v in args.variant] or [("lmscale", {})]
    torch_names = [s for s in args.sides.split(",") if s and s != "lmscale"]
    unknown = set(torch_names) - {"torch", "torch.compile"}
    if unknown:
        parser.error(f"--sides: unknown {sorted(unknown)}")
    if len({n for n, _ in variants} | set(torch_names)) != len(variants) + len(torch_names):
        parser.error("--variant: names must differ from each other and from --sides")
    names = [n for n, _ in variants] + torch_names
    base = names[0]
    rows = []
    for d in (int(x) for x in args.d_models.split(",")):
        config = model_config(d, args.attention_impl)
        sides = {name: lmscale_stepper(config, args.batch, args.seq,
                                       args.steps * args.rounds + 10, options)
                 for name, options in variants}
        params0 = sides[base].params0
        for name in torch_names:
            sides[name] = torch_stepper(config, args.batch, args.seq, params0,
                                        compiled=name == "torch.compile")
        check_same_start(sides, base)
        print(f"d{d}: same start on every side (first loss {sides[base].first[0]:.5f}, "
              f"grad norm {sides[base].first[1]:.5f})", flush=True)
        rows.append((d, config, interleaved(sides, args.steps, args.rounds)))
        if args.profile:
            profile(sides[base], os.path.join(args.profile, f"d{d}"))
    # The peak is the best of 10 dots taken at the end, after the machine has settled
    # (one taken at start-up once read 102 GFLOP/s where 166-184 is typical).
    peak = metrics.measure_peak_flops(size=2048, repeats=10)
    print(f"host float32 matmul peak (jnp.dot 2048^2): {peak / 1e9:.1f} GFLOP/s; "
          f"torch threads {torch.get_num_threads()}; jax devices {jax.device_count()}; "
          f"host allocator {'tuned' if tuned else 'default'}")
    tokens = args.batch * args.seq
    head = f"{'d_model':>7} {'params':>9}" + "".join(f" {n + ' tok/s':>19}" for n in names)
    head += "".join(f" {'vs ' + n:>17}" for n in names[1:])
    head += "".join(f" {n + ' MFU':>17}" for n in names)
    print(head)
    for d, config, best in rows:
        flops = config.flops_per_token(args.seq) * tokens
        line = f"{d:>7} {config.num_params.total:>9}"
        line += "".join(f" {tokens / best[n]:>19.0f}" for n in names)
        line += "".join(f" {best[n] / best[base]:>16.2f}x" for n in names[1:])
        line += "".join(f" {100 * flops / best[n] / peak:>16.1f}%" for n in names)
        print(line)


if __name__ == "__main__":
    main()
