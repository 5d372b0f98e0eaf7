"""A study plan from primitive inputs: rungs, evaluation tasks, mesh and device.

Stage: report. `build_plan(rungs, tasks, mesh, device)` turns what a study will run into
what it will cost: per rung N, D, steps, FLOPs, memory per device and the evaluation work
of every task on every evaluated checkpoint, with totals and warnings. The inputs are
plain dataclasses (a `ModelConfig` is the only library type), so any orchestration (today's
`StudyConfig`, a ladder config) reaches it through a thin adapter (`adapter.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from lmscale.models.config import ConfigError, ModelConfig, count_params
from lmscale.report.plan import costs

from lmscale.report.plan.costs import DECODE, KINDS, MULTIPLE_CHOICE, PASSUNTIL, VALIDATION  # noqa: E402,F401
ALL_RUNGS = "*"


@dataclasses.dataclass(frozen=True)
class Rung:
    """One rung of the ladder (all its seeds).

    Attributes:
      name: label (the model's name).
      model: its shape.
      seq_len, batch_size: tokens per row and rows per step (global).
      num_steps: optimizer steps of one run.
      seeds: runs of this shape.
      checkpoints: checkpoints evaluated per run, the final one included.
      warmup_steps: the schedule's warmup (0 if none).
      token_multiplier: M = D / N, when the budget is set that way.
    """

    name: str
    model: ModelConfig
    seq_len: int
    batch_size: int
    num_steps: int
    seeds: int = 1
    checkpoints: int = 1
    warmup_steps: int = 0
    token_multiplier: float | None = None

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.batch_size

    @property
    def tokens(self) -> int:
        """D of one run."""
        return self.num_steps * self.tokens_per_step


@dataclasses.dataclass(frozen=True)
class Task:
    """One evaluation task as the plan needs it.

    Attributes:
      name: task name (`results.VALIDATION_TASK` style for validation).
      kind: "validation", "multiple_choice", "passuntil" or "decode" (greedy decoding or
        beam search: `decodes` sequences per instance, no sampling until a pass).
      instances: instances evaluated (1 for validation).
      scored_tokens: tokens scored by the likelihood pass per instance (validation: all of
        them; multiple choice: prompt + every choice; PassUntil: prompt + target, the
        answer loss). None: unknown (the plan says so).
      prompt_tokens: mean prompt length (PassUntil; sets the decode attention context).
      generated_tokens: the most tokens one sample generates (max_new_tokens).
      r, k_max: PassUntil passes waited for and cap on final checkpoints.
      k_max_intermediate: the cap on the other checkpoints (None: k_max).
      draw_batch: samples per PassUntil draw call (`PassUntilConfig.batch_size`).
      num_slots: sampler slots decoded in parallel.
      prior_pu: per-instance prior PU by rung name (key "*" for every rung), for the
        expected budget; None: worst case only.
      score_shapes: the padded shape of every scorer call one checkpoint makes
        (`lmscale.eval.scorer.Scorer.batch_shapes`: choices, or PassUntil answers); the
        distinct ones are the programs compiled per rung; () when unknown.
      batches: validation batches per checkpoint (validation only; 0 when unknown).
      decodes: sequences decoded per instance and evaluated checkpoint (kind "decode":
        1 greedy, W for a beam of width W).
      final_only: decoded on each run's final checkpoint only (beam search).
    """

    name: str
    kind: str
    instances: int = 1
    scored_tokens: float | None = None
    prompt_tokens: float = 0.0
    generated_tokens: int = 0
    r: int = 1
    k_max: int = 1
    k_max_intermediate: int | None = None
    draw_batch: int = 1
    num_slots: int = 1
    prior_pu: Mapping[str, Sequence[float]] | None = None
    score_shapes: tuple[tuple[int, ...], ...] = ()
    batches: int = 0
    decodes: int = 0
    final_only: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"plan Task {self.name!r}: kind={self.kind!r}, allowed {KINDS}")
        if self.instances < 1:
            raise ConfigError(f"plan Task {self.name!r}: instances={self.instances}: >= 1")

    @property
    def expected_generated_tokens(self) -> float:
        """Tokens one PassUntil sample is expected to generate: the mean answer (scored minus
        prompt tokens) plus one that stops it, at most `generated_tokens` (the sampler
        refills a slot as soon as its completion stops)."""
        if self.scored_tokens is None or self.scored_tokens <= self.prompt_tokens:
            return float(self.generated_tokens)
        return float(min(self.generated_tokens, self.scored_tokens - self.prompt_tokens + 1))

    def prior_for(self, rung: str) -> np.ndarray | None:
        if not self.prior_pu:
            return None
        values = self.prior_pu.get(rung, self.prior_pu.get(ALL_RUNGS))
        return None if values is None else np.asarray(values, np.float64)


@dataclasses.dataclass(frozen=True)
class Mesh:
    """Resolved mesh sizes (data x fsdp x tensor = devices) and the compute dtype's bytes."""

    data: int = 1
    fsdp: int = 1
    tensor: int = 1
    compute_bytes: int = 4

    @property
    def devices(self) -> int:
        return self.data * self.fsdp * self.tensor


@dataclasses.dataclass(frozen=True)
class Device:
    """The devices in use: platform, memory per device (None: unknown) and where it came
    from ("memory_stats" or "stated"), peak FLOP/s per device (None: unknown)."""

    platform: str = "unknown"
    bytes_limit: float | None = None
    bytes_source: str = "none"
    peak_flops: float | None = None


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """When the plan warns.

    Attributes:
      eval_fraction: evaluation FLOPs above this fraction of training FLOPs.
      unmeasurable_share: share of instances with r / PU > k_max at or above this.
      min_decay_steps: fewer steps than warmup + this after warmup.
      memory_headroom: warn above this fraction of device memory; error above 1.
      fitted_token_multipliers: (low, high) range of M the laws were fitted on, or None.
    """

    eval_fraction: float = 0.5
    unmeasurable_share: float = 0.5
    min_decay_steps: int = 100
    memory_headroom: float = 0.8
    fitted_token_multipliers: tuple[float, float] | None = None


@dataclasses.dataclass
class EvalWork:
    """One task on one rung: work per evaluated checkpoint and over all of them."""

    task: str
    kind: str
    scored_tokens: float | None
    samples_worst: float = 0.0
    samples_expected: float | None = None
    decode_tokens_worst: float = 0.0
    decode_tokens_expected: float | None = None
    flops_worst: float = 0.0
    flops_expected: float | None = None
    unmeasurable_share: float | None = None
    capped_expected: float | None = None
    checkpoints: int = 1


@dataclasses.dataclass
class RungPlan:
    rung: Rung
    n_non_embedding: int
    n_total: int
    flops_6nd: float
    flops_model: float
    train_memory: dict[str, float]
    sampler_memory: dict[str, float]
    evals: list[EvalWork]
    train_seconds: float | None = None
    eval_seconds: float | None = None
    eval_breakdown: dict = dataclasses.field(default_factory=dict)
    measured: dict = dataclasses.field(default_factory=dict)

    @property
    def train_bytes(self) -> float:
        return sum(self.train_memory.values())

    @property
    def sampler_total_bytes(self) -> float:
        return sum(self.sampler_memory.values())

    def eval_flops(self, expected: bool) -> float:
        return sum((e.flops_expected if expected and e.flops_expected is not None
                    else e.flops_worst) for e in self.evals)


@dataclasses.dataclass
class Plan:
    name: str
    rungs: list[RungPlan]
    mesh: Mesh
    device: Device
    thresholds: Thresholds
    warnings: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    tasks: list[Task] = dataclasses.field(default_factory=list)
    probe_seconds: float | None = None
    report_seconds: float | None = None

    @property
    def train_flops(self) -> float:
        return sum(r.flops_model for r in self.rungs)

    @property
    def train_flops_6nd(self) -> float:
        return sum(r.flops_6nd for r in self.rungs)

    def eval_flops(self, expected: bool) -> float:
        return sum(r.eval_flops(expected) for r in self.rungs)

    @property
    def has_prior(self) -> bool:
        return any(e.flops_expected is not None for r in self.rungs for e in r.evals
                   if e.kind == PASSUNTIL)


def _passuntil_work(task: Task, rung: Rung, work: EvalWork) -> None:
    """Fills the sample budget of a PassUntil task over the rung's evaluated checkpoints."""
    caps = [task.k_max] + [task.k_max_intermediate or task.k_max] * (rung.checkpoints - 1)
    runs = rung.seeds
    per_token = costs.forward_flops_per_token(
        rung.model, task.prompt_tokens + task.generated_tokens / 2.0)
    work.samples_worst = runs * task.instances * float(sum(caps))
    work.decode_tokens_worst = work.samples_worst * task.generated_tokens
    work.flops_worst += work.decode_tokens_worst * per_token
    prior = task.prior_for(rung.name)
    if prior is None:
        return
    if prior.size not in (1, task.instances):
        raise ConfigError(f"plan Task {task.name!r}: prior PU for rung {rung.name!r} has "
                          f"{prior.size} values for {task.instances} instances")
    prior = np.broadcast_to(prior, (task.instances,))
    drawn = sum(float(np.sum(costs.expected_drawn_samples(prior, task.r, k, task.draw_batch)))
                for k in caps)
    work.samples_expected = runs * drawn
    work.decode_tokens_expected = work.samples_expected * task.generated_tokens
    work.flops_expected = work.flops_worst - work.decode_tokens_worst * per_token + (
        work.decode_tokens_expected * per_token)
    work.unmeasurable_share = costs.share_unmeasurable(prior, task.r, task.k_max)
    work.capped_expected = float(np.mean(costs.capped_probability(prior, task.r, task.k_max)))


def _decode_work(task: Task, rung: Rung, work: EvalWork) -> None:
    """Greedy / beam work: `decodes` sequences of up to `generated_tokens` per instance on
    every evaluated checkpoint (or the finals only); deterministic, so expected = worst."""
    checkpoints = rung.seeds * (1 if task.final_only else rung.checkpoints)
    per_token = costs.forward_flops_per_token(
        rung.model, task.prompt_tokens + task.generated_tokens / 2.0)
    work.checkpoints = checkpoints
    work.samples_worst = work.samples_expected = float(
        checkpoints * task.instances * task.decodes)
    work.decode_tokens_worst = work.decode_tokens_expected = (
        work.samples_worst * task.generated_tokens)
    work.flops_worst += work.decode_tokens_worst * per_token
    work.flops_expected = work.flops_worst


def eval_work(task: Task, rung: Rung) -> EvalWork:
    """The evaluation work of `task` over every evaluated checkpoint of `rung`'s runs.

    Likelihood scoring: scored tokens x forward FLOPs at half the row (validation: the
    training row; otherwise prompt + answer). PassUntil adds its samples x generated tokens
    x forward FLOPs at context prompt + generated / 2, worst case k_max samples per
    instance, expected value from the prior PU with the batched draws of `passuntil.run`.
    """
    checkpoints = rung.seeds * rung.checkpoints
    scored = None if task.scored_tokens is None or task.kind == DECODE else (
        task.scored_tokens * task.instances * checkpoints)
    work = EvalWork(task=task.name, kind=task.kind, scored_tokens=scored,
                    checkpoints=checkpoints)
    if scored is not None:
        row = rung.seq_len if task.kind == VALIDATION else task.scored_tokens
        work.flops_worst = scored * costs.forward_flops_per_token(rung.model, row / 2.0)
    if task.kind == PASSUNTIL:
        _passuntil_work(task, rung, work)
    elif task.kind == DECODE:
        _decode_work(task, rung, work)
    elif scored is not None:
        work.flops_expected = work.flops_worst
    return work


def rung_plan(rung: Rung, tasks: Sequence[Task], mesh: Mesh) -> RungPlan:
    """FLOPs, memory per device and evaluation work of one rung."""
    counts = count_params(rung.model)
    six_nd, model_flops = costs.training_flops(rung.model, rung.tokens, rung.seq_len)
    rows = -(-rung.batch_size // (mesh.data * mesh.fsdp))
    memory = costs.param_bytes(rung.model, mesh.fsdp, mesh.tensor)
    memory["activations"] = costs.activation_bytes(rung.model, rows, rung.seq_len,
                                                   mesh.compute_bytes, mesh.tensor)
    gen = [t for t in tasks if t.kind == PASSUNTIL]
    sampler = {}
    if gen:
        widest = max(gen, key=lambda t: t.generated_tokens * t.num_slots)
        capacity = costs.bucket(max(widest.draw_batch, widest.num_slots))
        sampler = costs.sampler_bytes(rung.model, widest.num_slots, widest.generated_tokens,
                                      int(max(t.prompt_tokens for t in gen)) + 1, capacity,
                                      mesh.compute_bytes)
    return RungPlan(rung=rung, n_non_embedding=counts.non_embedding, n_total=counts.total,
                    flops_6nd=six_nd * rung.seeds, flops_model=model_flops * rung.seeds,
                    train_memory=memory, sampler_memory=sampler,
                    evals=[eval_work(t, rung) for t in tasks])


def build_plan(name: str, rungs: Sequence[Rung], tasks: Sequence[Task], mesh: Mesh = Mesh(),
               device: Device = Device(), thresholds: Thresholds = Thresholds()) -> Plan:
    """The plan of a study: one `RungPlan` per rung plus warnings and errors.

    Raises:
      ConfigError: no rungs, or a prior PU of the wrong length (naming the task).
    """
    from lmscale.report.plan import checks  # the warnings read a finished plan

    if not rungs:
        raise ConfigError("plan: no rungs to plan")
    plan = Plan(name=name, rungs=[rung_plan(r, tasks, mesh) for r in rungs], mesh=mesh,
                device=device, thresholds=thresholds, tasks=list(tasks))
    checks.check(plan)
    return plan
