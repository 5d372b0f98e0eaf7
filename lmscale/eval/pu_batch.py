"""PassUntil over the instances of a unit: one prompt per sampler call, or several at once.

Stage: eval. Consumes a `Sampler` and one `PassUntilJob` per instance (prompt ids, seed,
sample cap, pass checker); produces each instance's `passuntil.PassUntilResult` in job
order. `run_sequential` drives `passuntil.run` with one `draw` per instance (one prompt
per sampler call); `run_pipelined` makes the same calls with the next one dispatched
before the last one is checked. `run_batched` keeps up to `prompts_per_call` instances in
flight and draws the next batch of every one of them in one `Sampler.dispatch_many` call
(the per-call overhead is paid once per call instead of once per instance); an instance
that reaches r passes or its cap leaves and the next one takes its row.

All give the same results: sample i of an instance depends only on (params, prompt,
seed, i) (`lmscale.eval.sampler`), each instance draws `min(batch_size, cap - drawn)`
samples per round as `passuntil.run` asks (its first round may be larger:
`PassUntilJob.first_draw`), and its recorded outcomes are replayed through
`passuntil.run`, so K, passes and the statistics come from the one driver.
Results are yielded in job order, so the rows a unit writes (and what an interrupted unit
leaves) do not depend on the driver.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Iterator, Sequence

import numpy as np

from lmscale.eval import passuntil
from lmscale.eval import results as R
from lmscale.eval import sampler as sampler_lib


def prompt_room(task, max_seq_len: int, caller: str = "evaluate") -> int:
    """Prompt tokens a generative `task` may use in a model of `max_seq_len`: what the
    start id and `task.max_new_tokens` leave; raises ValueError naming the task if none."""
    room = max_seq_len - task.max_new_tokens - 1
    if room < 1:
        raise ValueError(f"{caller}: task {task.name!r}: max_new_tokens={task.max_new_tokens} "
                         f"leaves no room for a prompt in max_seq_len={max_seq_len}")
    return room


def prompt_ids(vocab, prompt: str, start_id: int, room: int) -> tuple[np.ndarray, int]:
    """[start id] + the prompt's ids, left-truncated to `room` prompt tokens (as the scorer
    truncates contexts), and how many tokens were dropped. The start id is 0 for lmscale's
    own models (the feature converter's shift) or an imported checkpoint's BOS."""
    ids = np.asarray(vocab.encode(prompt), np.int32).reshape(-1)
    dropped = max(0, ids.size - room)
    return np.concatenate([[start_id], ids[dropped:]]).astype(np.int32), int(dropped)


@dataclasses.dataclass(frozen=True)
class PassUntilJob:
    """One instance to sample: prompt ids [T] int32 (bos first), the seed of its samples,
    its sample cap, its pass checker, and how many prompt tokens were cut to fit.

    `first_draw`: samples of the instance's first draw in `run_pipelined` and
    `run_batched` (at most the cap; None: a batch, as `passuntil.run` asks). The runner
    sets it to the cap where the instance's answer loss says a batch will not hold its r
    passes (`first_draw_for`), so such an instance takes one sampler call instead of
    several, each ending on idle slots. Speed only, never results: `passuntil.run` keeps
    outcomes up to the r-th pass only, so its batches are replayed from what was drawn.
    """

    instance_id: str
    prompt: np.ndarray
    seed: int
    cap: int
    checker: Callable[[str], bool]
    truncated: int = 0
    first_draw: int | None = None


def first_draw_for(answer_loss_sum: float, r: int, batch_size: int, cap: int) -> int | None:
    """The cap when sampling the target itself (probability exp(-answer_loss_sum), the
    target's summed NLL in nats) would take more than a batch to give r passes,
    r * exp(answer_loss_sum) > batch_size; else None (a batch first).

    For an exact-match checker the target's probability is the pass probability up to
    other token paths to the same text, so an instance above the line draws past the
    batch anyway: on the default study's final checkpoints every such instance did
    (w32..w96: 102, 93, 80, 63, 56 of 120, none ending inside the first batch), and 3-7
    below it did too."""
    if cap <= batch_size or not np.isfinite(answer_loss_sum):
        return None
    return cap if np.log(r) + answer_loss_sum > np.log(batch_size) else None


@dataclasses.dataclass(frozen=True)
class PassUntilInstance:
    """One instance's PassUntil outcome, as its result row's detail holds it.

    Attributes:
      instance_id: the instance.
      num_samples: K, samples up to and including the r-th pass (or the cap).
      num_passes: passes among them (= r unless capped).
      capped: the cap was reached before r passes.
      estimate, naive_estimate, interval: `passuntil.PassUntilResult`'s.
      r: passes required.
      cap: the sample cap used (the row's "k_max").
      seed: the instance's sample seed.
      truncated: prompt tokens cut from the left to fit the model.
      answer_loss, answer_loss_sum: target NLL per token and summed (nats).
      isolation: sandbox isolation level of a "code" checker (None: not code).
    """

    instance_id: str
    num_samples: int
    num_passes: int
    capped: bool
    estimate: float
    naive_estimate: float
    interval: tuple[float, float]
    r: int
    cap: int
    seed: int
    truncated: int
    answer_loss: float
    answer_loss_sum: float
    isolation: str | None = None

    @classmethod
    def make(cls, job: PassUntilJob, result: passuntil.PassUntilResult,
             losses: dict[str, float]) -> "PassUntilInstance":
        return cls(instance_id=job.instance_id, num_samples=result.num_samples,
                   num_passes=result.num_passes, capped=result.capped,
                   estimate=result.estimate, naive_estimate=result.naive_estimate,
                   interval=tuple(result.interval), r=result.r, cap=result.k_max,
                   seed=job.seed, truncated=int(job.truncated),
                   answer_loss=losses[R.ANSWER_LOSS],
                   answer_loss_sum=losses[R.ANSWER_LOSS_SUM],
                   isolation=getattr(job.checker, "isolation", None) or None)

    def detail(self) -> dict:
        """The row's detail (the results file's format)."""
        out = {"num_samples": self.num_samples, "num_passes": self.num_passes,
               "capped": self.capped, "estimate": self.estimate,
               "naive_estimate": self.naive_estimate, "interval": list(self.interval),
               "r": self.r, "k_max": self.cap, "seed": self.seed,
               "truncated": self.truncated, R.ANSWER_LOSS: self.answer_loss,
               R.ANSWER_LOSS_SUM: self.answer_loss_sum}
        if self.isolation:  # code execution: the sandbox level used
            out["isolation"] = self.isolation
        return out

    @classmethod
    def from_detail(cls, instance_id: str, detail: dict) -> "PassUntilInstance":
        return cls(instance_id=instance_id, num_samples=int(detail["num_samples"]),
                   num_passes=int(detail["num_passes"]), capped=bool(detail["capped"]),
                   estimate=float(detail["estimate"]),
                   naive_estimate=float(detail["naive_estimate"]),
                   interval=tuple(detail["interval"]), r=int(detail["r"]),
                   cap=int(detail["k_max"]), seed=int(detail["seed"]),
                   truncated=int(detail.get("truncated", 0)),
                   answer_loss=float(detail[R.ANSWER_LOSS]),
                   answer_loss_sum=float(detail[R.ANSWER_LOSS_SUM]),
                   isolation=detail.get("isolation"))


Outcome = tuple[PassUntilJob, passuntil.PassUntilResult, int]  # (job, result, drawn)


def run_sequential(jobs: Sequence[PassUntilJob], make_draw: Callable, r: int,
                   batch_size: int) -> Iterator[Outcome]:
    """`passuntil.run` per job with `make_draw(job) -> draw(n)`; yields in job order."""
    for job in jobs:
        draw, drawn = make_draw(job), [0]

        def counted(n, draw=draw):
            drawn[0] += n
            return draw(n)

        yield job, passuntil.run(counted, r, job.cap, batch_size), drawn[0]


class _InFlight:
    """One instance being sampled by `run_batched`: what it drew and whether it is done."""

    def __init__(self, index: int, job: PassUntilJob, state):
        self.index, self.job, self.state = index, job, state
        self.outcomes: list[np.ndarray] = []
        self.drawn = self.passes = 0
        self.done = False

    def want(self, batch_size: int) -> int:
        if self.drawn == 0 and self.job.first_draw:
            return min(self.job.first_draw, self.job.cap)
        return min(batch_size, self.job.cap - self.drawn)

    def add(self, outcomes: np.ndarray, r: int) -> None:
        self.outcomes.append(outcomes)
        self.drawn += len(outcomes)
        self.passes += int(outcomes.sum())
        self.done = self.passes >= r or self.drawn >= self.job.cap

    def result(self, r: int, batch_size: int) -> passuntil.PassUntilResult:
        """`passuntil.run` over the recorded outcomes, its batches cut from them in order.

        Drawing stopped at r passes or the cap, so every outcome `passuntil.run` keeps
        (those up to the r-th pass) was recorded; a batch reaching past the record (a
        first draw larger than a batch ended inside passuntil's next one) is filled with
        fails it discards."""
        flat = np.concatenate(self.outcomes) if self.outcomes else np.zeros((0,), bool)
        at = [0]

        def replay(n):
            out = np.zeros((n,), bool)
            got = flat[at[0]:at[0] + n]
            out[:len(got)] = got
            at[0] += n
            return out

        result = passuntil.run(replay, r, self.job.cap, batch_size)
        if result.num_samples > len(flat):
            raise AssertionError(f"replay: K={result.num_samples} past the {len(flat)} "
                                 f"outcomes drawn")
        return result


def largest_draw(jobs: Sequence[PassUntilJob], batch_size: int) -> int:
    """The most samples one instance's draw asks for (a batch, a larger first draw, or a
    cap below both): every call's output capacity, so a unit compiles one loop."""
    return max((min(max(batch_size, j.first_draw or 0), j.cap) for j in jobs), default=1)


def _check_caps(jobs: Sequence[PassUntilJob], r: int) -> None:
    for job in jobs:
        if job.cap < r:
            raise ValueError(f"instance {job.instance_id!r}: cap {job.cap} < r={r}")


def run_pipelined(sampler, jobs: Sequence[PassUntilJob], r: int, batch_size: int,
                  depth: int = 2) -> Iterator[Outcome]:
    """One prompt per sampler call, like `run_sequential`, with up to `depth` instances
    in flight: the next call is dispatched (`Sampler.dispatch`) before the last one's
    completions are checked, so the host's decoding and checking overlap the device's
    sampling instead of leaving it idle. Every call has the output capacity of the
    unit's largest draw (one compiled loop). Same draws, same results; yields in job
    order."""
    _check_caps(jobs, r)
    capacity = largest_draw(jobs, batch_size)
    pending = collections.deque(enumerate(jobs))
    active: collections.deque = collections.deque()  # (_InFlight, its dispatched call)
    finished: dict[int, Outcome] = {}
    next_out = 0

    def launch(a: _InFlight):
        active.append((a, sampler.dispatch(a.state, a.want(batch_size), a.job.seed, a.drawn,
                                           min_capacity=capacity)))

    while pending or active:
        while len(active) < max(1, depth) and pending:
            index, job = pending.popleft()
            launch(_InFlight(index, job, sampler.prefill(job.prompt)))
        a, call = active.popleft()
        a.add(sampler_lib.check(sampler, sampler.collect(call), a.job.checker)[1], r)
        if a.done:
            finished[a.index] = (a.job, a.result(r, batch_size), a.drawn)
        else:
            launch(a)
        while next_out in finished:
            yield finished.pop(next_out)
            next_out += 1


def run_batched(sampler, jobs: Sequence[PassUntilJob], r: int, batch_size: int,
                prompts_per_call: int) -> Iterator[Outcome]:
    """PassUntil for every job, the next batch of up to `prompts_per_call` instances per
    `Sampler.dispatch_many` call; yields (job, result, samples drawn) in job order.

    Every call has the same shapes (rows padded to `prompts_per_call`, output capacity
    `prompts_per_call` draws), so a unit compiles the sampling loop once. When every
    instance of a call ends with it (its draw reaches its cap, as on the study's
    intermediate checkpoints, whose cap is below a batch), the next call holds new
    instances only and is dispatched before this one is checked, so prefilling and
    checking overlap the sampling; otherwise the next call waits for this one's outcomes.
    """
    _check_caps(jobs, r)
    capacity = prompts_per_call * largest_draw(jobs, batch_size)
    pending = collections.deque(enumerate(jobs))
    calls: collections.deque = collections.deque()  # (instances, their draws, the call)
    carry: list[_InFlight] = []  # instances going on into the next call
    finished: dict[int, Outcome] = {}
    next_out = 0

    def dispatch(members: list[_InFlight]) -> None:
        while len(members) < prompts_per_call and pending:
            index, job = pending.popleft()
            members.append(_InFlight(index, job, sampler.prefill(job.prompt)))
        wants = [a.want(batch_size) for a in members]
        calls.append((members, wants, sampler.dispatch_many(
            [a.state for a in members], wants, [a.job.seed for a in members],
            [a.drawn for a in members], min_rows=prompts_per_call, min_capacity=capacity)))

    while pending or carry or calls:
        if not calls:
            dispatch(carry)
            carry = []
        members, wants, _ = calls[-1]
        if len(calls) == 1 and pending and all(
                a.drawn + w >= a.job.cap for a, w in zip(members, wants)):
            dispatch([])  # the newest call's instances all end with it
        members, _, call = calls.popleft()
        for a, got in zip(members, sampler.collect_many(call)):
            a.add(sampler_lib.check(sampler, got, a.job.checker)[1], r)
            if a.done:
                finished[a.index] = (a.job, a.result(r, batch_size), a.drawn)
            else:
                carry.append(a)
        while next_out in finished:
            yield finished.pop(next_out)
            next_out += 1
