"""Benchmark: tokens/s and MFU of the lmscale train step vs a PyTorch eager reference.

Needs the `bench` extra (torch). Both sides train the same architecture (RMSNorm, rotary,
gated GeLU, tied embeddings, causal MHA) with the same batch, sequence length and AdamW
(0.9, 0.95, weight decay 0.1, clip 1.0) on this machine's CPU. MFU is measured against
this host's float32 matmul peak, taken in the same run with a big `jnp.dot`.

  python tools/bench_train.py [--d_models=64,128,256] [--batch=8] [--seq=128] [--steps=10]
      [--rounds=5] [--default_allocator]

Prints one row per width: tokens/s of each side (best of `rounds` alternating blocks of
`steps` steps), their ratio (lmscale / torch) and MFU.
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from jax.sharding import PartitionSpec  # noqa: E402

from lmscale import runtime  # noqa: E402
from lmscale.models.config import ModelConfig  # noqa: E402
from lmscale.train import metrics, optim  # noqa: E402
from lmscale.train import spec as spec_lib  # noqa: E402
from lmscale.train import state as state_lib  # noqa: E402
from lmscale.train import step as step_lib  # noqa: E402

N_LAYERS, HEAD_DIM, VOCAB = 4, 32, 256


def model_config(d_model: int) -> ModelConfig:
    return ModelConfig(vocab_size=VOCAB, d_model=d_model, n_layers=N_LAYERS,
                       n_heads=d_model // HEAD_DIM, d_ff=int(2.5 * d_model), mlp="gated",
                       activation="gelu", tie_embeddings=True, rotary_fraction=1.0,
                       max_seq_len=2048, name=f"bench_d{d_model}")


def synthetic_batch(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    toks = rng.integers(1, VOCAB, (batch, seq + 1)).astype(np.int32)
    return {"decoder_input_tokens": toks[:, :-1], "decoder_target_tokens": toks[:, 1:],
            "decoder_loss_weights": np.ones((batch, seq), np.int32),
            "decoder_segment_ids": np.ones((batch, seq), np.int32),
            "decoder_positions": np.tile(np.arange(seq, dtype=np.int32), (batch, 1))}


def lmscale_stepper(config: ModelConfig, batch: int, seq: int, total_steps: int):
    """`run(n)`: n steps of the jitted, donated lmscale train step on one device, synced."""
    spec = spec_lib.RunSpec(config, seq_len=seq, batch_size=batch,
                            num_tokens=(total_steps + 10) * batch * seq)
    opt = optim.OptimizerConfig(warmup_steps=1)
    tx, schedule = optim.make_optimizer(opt, spec.num_steps, config.d_model)
    mesh_config = state_lib.MeshConfig(data=1, fsdp=1, tensor=1)
    mesh = state_lib.make_mesh(mesh_config, jax.devices()[:1])
    rules = mesh_config.logical_rules()
    _, shardings = state_lib.state_shardings(spec, tx, mesh, rules)
    state = state_lib.create_train_state(spec, tx, opt, mesh, shardings)
    batch_sharding = nn.logical_to_mesh_sharding(PartitionSpec("batch", "length"), mesh, rules)
    train_step = step_lib.make_train_step(config, tx, schedule, mesh, rules, shardings,
                                          batch_sharding)
    data = jax.device_put(synthetic_batch(batch, seq), batch_sharding)
    box = [state]

    def run(n: int) -> None:
        state = box[0]
        for _ in range(n):
            state, m = train_step(state, data)
        jax.block_until_ready((state, m))
        box[0] = state
    return run


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


def torch_stepper(config: ModelConfig, batch: int, seq: int):
    """`run(n)`: n eager PyTorch AdamW steps on the same shapes."""
    torch.manual_seed(0)
    model = TorchDecoder(config)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": other, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    data = synthetic_batch(batch, seq)
    tokens = torch.from_numpy(data["decoder_input_tokens"]).long()
    targets = torch.from_numpy(data["decoder_target_tokens"]).long()
    pos = torch.from_numpy(data["decoder_positions"]).long()

    def one_step():
        logits = model(tokens, pos)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, config.vocab_size),
                                                 targets.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def run(n: int) -> None:
        for _ in range(n):
            one_step()
    return run


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
    parser.add_argument("--default_allocator", action="store_true",
                        help="leave glibc's allocator as it is (lmscale.runtime not applied)")
    args = parser.parse_args()
    # Before JAX starts its CPU client; the PyTorch side runs in the same process.
    tuned = False if args.default_allocator else runtime.tune_host_allocator()
    rows = []
    for d in (int(x) for x in args.d_models.split(",")):
        config = model_config(d)
        best = interleaved({"lmscale": lmscale_stepper(config, args.batch, args.seq,
                                                       args.steps * args.rounds + 3),
                            "torch": torch_stepper(config, args.batch, args.seq)},
                           args.steps, args.rounds)
        rows.append((d, config, best["lmscale"], best["torch"]))
    # The peak is the best of 10 dots taken at the end, after the machine has settled
    # (one taken at start-up once read 102 GFLOP/s where 166-184 is typical).
    peak = metrics.measure_peak_flops(size=2048, repeats=10)
    print(f"host float32 matmul peak (jnp.dot 2048^2): {peak / 1e9:.1f} GFLOP/s; "
          f"torch threads {torch.get_num_threads()}; jax devices {jax.device_count()}; "
          f"host allocator {'tuned' if tuned else 'default'}")
    print(f"{'d_model':>7} {'params':>9} {'lmscale tok/s':>14} {'torch tok/s':>12} "
          f"{'ratio':>6} {'lmscale MFU':>12} {'torch MFU':>10}")
    tokens = args.batch * args.seq
    for d, config, s_jax, s_torch in rows:
        flops = config.flops_per_token(args.seq) * tokens
        print(f"{d:>7} {config.num_params.total:>9} {tokens / s_jax:>14.0f} "
              f"{tokens / s_torch:>12.0f} {s_torch / s_jax:>6.2f} "
              f"{100 * flops / s_jax / peak:>11.1f}% {100 * flops / s_torch / peak:>9.1f}%")


if __name__ == "__main__":
    main()
