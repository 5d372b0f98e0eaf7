"""PassUntil sample budget (eval stage): per-instance caps that measure instead of capping.

PassUntil (Hu et al. 2024, Sec. 4.1) samples an instance until r passes or a cap. One cap
for every instance spends the budget badly on a ladder: an instance of PU 1e-5 eats its
whole cap and still ends capped (its PU bounded, never measured), while it could have
paid for measuring dozens of instances of PU 1e-2. This module sets the caps of the next
rung from what the smaller rungs predict:

  1. `predict_next_pu`: each instance's PU at the next size N from the rungs measured so
     far (Hu et al. eq. 5 per instance, loss-assisted where an instance has too few
     non-zero PU points, the largest rung's measurement where no law can be fitted);
  2. `plan_caps`: the samples each instance needs to reach r passes with probability
     `coverage` (r plus the `coverage` quantile of NegativeBinomial(r, p) failures,
     times a safety `margin`); instances are funded cheapest first while the task's
     budget lasts; those that need more than `k_ceiling` or than what is left get the
     floor cap `k_floor` and are flagged `loss_assisted`: their PU goes to loss-assisted
     PassUntil deliberately, not by hitting a cap. What the funded ones leave is shared
     equally by the flagged ones (up to `k_ceiling`: PU rises fast where a task
     emerges, so predictions from the rungs below run low, and an instance may pass
     anyway); only then does unspent budget raise every funded cap by one common factor.

The budget is a hard bound: the caps sum to at most `budget`, so the task never draws
more samples on the rung than that, whatever the true PUs are. Pure numpy/scipy.

How a study calls it (rungs evaluated smallest first): before the final checkpoint of
rung j, for each PassUntil task, take the per-instance rows of the final checkpoints of
rungs < j (their num_samples, num_passes and summed answer loss), then

    pred = budget.predict_next_pu(N[:j], K[:j], x[:j], r=r, N_next=N[j],
                                  answer_loss=loss[:j], ids=ids)
    plan = budget.plan_caps(pred, r=r, budget=per_task_budget, k_floor=20,
                            k_ceiling=5 * k_max)
    runner.evaluate(..., passuntil_caps={task: plan.caps})

and record `plan.loss_assisted` with the rung's rows, so the instance-level fit routes
those instances through their answer loss (`fit_pu_instances(..., answer_loss=...)`)
and the report counts them as deliberately loss-assisted, not capped. The first rung has
no prediction: every instance gets an equal share (budget / instances, <= k_ceiling).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import numpy as np
import scipy.stats

from lmscale.fit import passuntil as pu_fit


@dataclasses.dataclass(frozen=True)
class CapPlan:
    """Per-instance PassUntil caps for one task on one rung.

    Attributes:
      caps: instance id -> k_max (what `runner.evaluate(passuntil_caps={task: caps})` takes).
      loss_assisted: ids predicted to need more than the budget allows (they get the
        floor plus a share of the rest); fit them with loss assistance.
      predicted_pu: id -> the PU the plan assumed (NaN: unknown).
      needed: id -> samples wanted to reach r passes (math.inf for PU 0 or unknown).
      budget: the task's sample budget on this rung; spent: sum of caps (<= budget).
      expected: expected samples drawn if the predicted PUs are right.
    """

    caps: dict[str, int]
    loss_assisted: tuple[str, ...]
    predicted_pu: dict[str, float]
    needed: dict[str, float]
    budget: int
    spent: int
    expected: float

    @property
    def measured_fraction(self) -> float:
        """Share of instances funded to reach r passes (not flagged loss-assisted)."""
        return 1.0 - len(self.loss_assisted) / max(len(self.caps), 1)


def samples_needed(pu, r: int, coverage: float = 0.9, margin: float = 1.0) -> np.ndarray:
    """Samples for r passes with probability `coverage` at pass probability `pu` (any
    shape): r + the `coverage` quantile of NegativeBinomial(r, pu), times `margin`, as
    floats; inf where pu is 0 or NaN, r where pu is 1."""
    if r < 1:
        raise ValueError(f"samples_needed: r={r} must be >= 1")
    if not 0 < coverage < 1:
        raise ValueError(f"samples_needed: coverage={coverage} must lie in (0, 1)")
    if margin < 1:
        raise ValueError(f"samples_needed: margin={margin} must be >= 1")
    p = np.asarray(pu, float)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("samples_needed: pu must lie in [0, 1] (NaN for unknown)")
    ok = np.isfinite(p) & (p > 0)
    out = np.full(p.shape, np.inf)
    fails = scipy.stats.nbinom.ppf(coverage, r, np.where(ok, p, 0.5))
    out[ok] = np.ceil(margin * (r + fails[ok]))
    return out


def _expected_draws(p: float, r: int, cap: int) -> float:
    """E[min(K, cap)] for K = samples to the r-th pass at pass probability p."""
    if not np.isfinite(p) or p <= 0:
        return float(cap)
    k = np.arange(1, cap + 1)
    # P(K >= k) = P(fewer than r passes in the first k - 1 samples).
    return float(scipy.stats.binom.cdf(r - 1, k - 1, p).sum())


def plan_caps(predicted_pu: Mapping[str, float], *, r: int, budget: int, k_floor: int,
              k_ceiling: int, coverage: float = 0.9, margin: float = 1.5) -> CapPlan:
    """Caps for one task on one rung within `budget` samples in all (see module doc).

    Args:
      predicted_pu: instance id -> predicted PU (NaN or None: unknown; such instances
        share what the known ones leave, equally, up to `k_ceiling`, unflagged).
      r: PassUntil pass target.
      budget: most samples the task may draw on this rung (sum of the caps).
      k_floor: least cap of any instance (>= r); a flagged instance gets it plus an
        equal share of what the funded ones leave.
      k_ceiling: most samples any one instance may get.
      coverage, margin: see `samples_needed`.
    Raises:
      ValueError: bad arguments, naming them; a budget below len(instances) * k_floor.
    """
    if r < 1 or k_floor < r or k_ceiling < k_floor:
        raise ValueError(f"plan_caps: need 1 <= r={r} <= k_floor={k_floor} <= "
                         f"k_ceiling={k_ceiling}")
    ids = list(predicted_pu)
    if budget < len(ids) * k_floor:
        raise ValueError(f"plan_caps: budget={budget} < {len(ids)} instances x k_floor="
                         f"{k_floor}; raise the budget or lower k_floor")
    p = np.array([np.nan if predicted_pu[i] is None else float(predicted_pu[i]) for i in ids])
    need = samples_needed(p, r, coverage, margin)
    caps = {i: k_floor for i in ids}
    left = budget - len(ids) * k_floor
    funded = []
    known = [int(j) for j in np.argsort(need, kind="stable") if np.isfinite(p[j])]
    for j in known:
        if need[j] > k_ceiling:
            continue
        cap = int(max(need[j], k_floor))
        if cap - k_floor <= left:
            left -= cap - k_floor
            caps[ids[j]] = cap
            funded.append(j)
    unknown = [j for j in range(len(ids)) if not np.isfinite(p[j])]
    if unknown:  # no prediction: an equal share of what is left, up to k_ceiling
        share = min(k_ceiling - k_floor, left // len(unknown))
        for j in unknown:
            caps[ids[j]] += share
        left -= share * len(unknown)
        funded += unknown
    flagged = tuple(ids[j] for j in range(len(ids)) if j not in set(funded))
    if flagged:  # what is left: equal shares to the flagged, a chance to pass anyway
        share = min(k_ceiling - k_floor, left // len(flagged))
        for i in flagged:
            caps[i] += share
        left -= share * len(flagged)
    _spread(caps, [ids[j] for j in funded], left, k_ceiling)
    spent = sum(caps.values())
    expected = sum(_expected_draws(p[j], r, caps[ids[j]]) for j in range(len(ids)))
    return CapPlan(caps=caps, loss_assisted=flagged,
                   predicted_pu={i: float(x) for i, x in zip(ids, p)},
                   needed={i: float(x) for i, x in zip(ids, need)}, budget=int(budget),
                   spent=int(spent), expected=expected)


def _spread(caps: dict[str, int], funded: Sequence[str], left: int, k_ceiling: int) -> None:
    """Raises the funded caps by the largest common factor that `left` pays for."""
    if not funded or left <= 0:
        return
    base = {i: caps[i] for i in funded}

    def cost(f):
        return sum(min(k_ceiling, math.floor(f * c)) - c for c in base.values())

    lo, hi = 1.0, k_ceiling / min(base.values())
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cost(mid) <= left else (lo, mid)
    for i, c in base.items():
        caps[i] = min(k_ceiling, math.floor(lo * c))


def predict_next_pu(N, num_samples, num_passes, *, r: int, N_next: float,
                    answer_loss=None, ids: Sequence[str] | None = None) -> dict:
    """Each instance's PU at size `N_next` from the rungs measured so far.

    Args:
      N: [m] sizes of the measured rungs (m >= 1).
      num_samples, num_passes: [m, I] PassUntil counts per rung and instance.
      r: the pass target of those counts.
      N_next: the size to plan for.
      answer_loss: optional [m, I] summed answer loss (nats), for loss assistance.
      ids: the I instance ids (default "0".."I-1").
    Returns:
      {id: predicted PU}: Hu et al.'s per-instance law where an instance has >= 2 rungs
      with 0 < PU < 1; the loss-assisted law where it has not and answer losses are
      given; else the largest rung's measured PU (PU rises with N, so a lower bound);
      NaN when that is 0 and nothing else is known.
    """
    K = np.atleast_2d(np.asarray(num_samples, float))
    x = np.atleast_2d(np.asarray(num_passes, float))
    N = np.atleast_1d(np.asarray(N, float))
    if K.shape != x.shape or K.shape[0] != N.size:
        raise ValueError(f"predict_next_pu: num_samples {K.shape}, num_passes {x.shape} "
                         f"and N {N.shape} disagree (want [m, I] and [m])")
    ids = [str(i) for i in range(K.shape[1])] if ids is None else list(ids)
    if len(ids) != K.shape[1]:
        raise ValueError(f"predict_next_pu: {len(ids)} ids for {K.shape[1]} instances")
    pu = pu_fit.pu_from_counts(K, x, r)
    last = pu[int(np.argmax(N))]
    pred = np.where(last > 0, last, np.nan)
    if N.size >= 2:
        loss = None if answer_loss is None else np.asarray(answer_loss, float)
        try:
            fit = pu_fit.fit_pu_instances(N, pu, answer_loss=loss, r=r)
        except ValueError:  # e.g. no (instance, rung) pair to map loss to PU
            fit = pu_fit.fit_pu_instances(N, pu, r=r)
        inst = fit.predict_instances([N_next])[0]
        known = fit.status != "none"
        pred = np.where(known, np.maximum(inst, np.nan_to_num(pred, nan=0.0)), pred)
    return {i: float(v) for i, v in zip(ids, pred)}
