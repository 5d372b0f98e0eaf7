"""The plan of a paper-sized Hu et al. study, from stated numbers (docs/planning.md).

Stage: report. Shapes i = 3..9 of `lmscale.models.families.hu2023` (Table 4), trained at
M = 20 on 4096-token rows, 4 checkpoints evaluated per run, PassUntil on HumanEval (164
instances, prompts of ~150 tokens, 200 generated tokens, r = 8, k_max = 1e5; the paper's
largest budget). The batch grows with size as in Table 4 (rows of 4096 tokens: 0.25M to
4M tokens per step). Nothing is loaded: every input is stated here.
"""

from __future__ import annotations

import dataclasses

from lmscale.models import families
from lmscale.report.plan import adapter, core

HUMANEVAL_INSTANCES = 164
PROMPT_TOKENS = 150.0
GENERATED_TOKENS = 200
SEQ_LEN = 4096
TOKEN_MULTIPLIER = 20.0
BATCH_ROWS = {3: 64, 4: 64, 5: 128, 6: 128, 7: 256, 8: 512, 9: 1024}


def paper_rungs(checkpoints: int = 4) -> list[core.Rung]:
    rungs = []
    for i in families.HU2023_TABLE4_INDICES:
        model = families.hu2023(i)
        rows = BATCH_ROWS[i]
        n = model.num_params.non_embedding
        steps = max(1, -(-int(TOKEN_MULTIPLIER * n) // (rows * SEQ_LEN)))
        rungs.append(core.Rung(name=model.name, model=model, seq_len=SEQ_LEN,
                               batch_size=rows, num_steps=steps, checkpoints=checkpoints,
                               warmup_steps=int(0.05 * steps),
                               token_multiplier=TOKEN_MULTIPLIER))
    return rungs


def humaneval_task(prior_pu=None, r: int = 8, k_max: int = 100_000,
                   k_max_intermediate: int | None = 10_000) -> core.Task:
    return core.Task(name="humaneval", kind=core.PASSUNTIL, instances=HUMANEVAL_INSTANCES,
                     scored_tokens=PROMPT_TOKENS + GENERATED_TOKENS, prompt_tokens=PROMPT_TOKENS,
                     generated_tokens=GENERATED_TOKENS, r=r, k_max=k_max,
                     k_max_intermediate=k_max_intermediate, draw_batch=1024, num_slots=1024,
                     prior_pu=prior_pu)


def paper_plan(num_devices=None, device_bytes=None, compute_dtype=None, peak_flops=None,
               prior_pu=None, thresholds=core.Thresholds(), use_jax=False) -> core.Plan:
    """The Hu et al.-sized plan on `num_devices` devices (default 32, all on fsdp)."""
    from lmscale.train.state import MeshConfig

    mesh, device = adapter.mesh_and_device(MeshConfig(), num_devices or 32, device_bytes,
                                           compute_dtype or "bfloat16", peak_flops,
                                           use_jax=False)
    device = dataclasses.replace(device, platform="stated")
    task = humaneval_task((prior_pu or {}).get("humaneval"))
    return core.build_plan("Hu et al.-sized study (shapes i=3..9, HumanEval PassUntil)",
                           paper_rungs(), [task], mesh, device, thresholds)
