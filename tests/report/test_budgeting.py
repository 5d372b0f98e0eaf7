"""The study's PassUntil budget wiring: caps of the next rung from the rungs below."""
import dataclasses

import numpy as np

from lmscale.eval import budget
from lmscale.eval import results as R
from lmscale.report import budgeting
from lmscale.train.record import RunRecord

SIZES = [20_000, 40_000, 80_000]
STEPS = 10


def _record(name, n):
    return RunRecord(run_name=name, model_config={}, num_params=n, num_params_non_embedding=n,
                     num_tokens=10 * n, flops=60.0 * n * n, token_multiplier=10.0,
                     tokens_per_step=n, batch_size=1, seq_len=1, num_steps=STEPS,
                     vocab_spec="byte", loss_unit="nats/byte", corpus="c", seed=0,
                     status="done")


def _rows(records, pus, rng, r=4, k_max=1000, task="t"):
    """Per-instance final rows: PassUntil counts drawn from each instance's true PU."""
    rows = []
    for rec, pu in zip(records, pus):
        point = R.RunPoint(run=rec.run_name, step=STEPS, tokens=rec.D, num_params=rec.N,
                           num_params_non_embedding=rec.N, num_tokens=rec.D, flops=rec.flops)
        for i, p in enumerate(pu):
            K = min(k_max, r + int(rng.negative_binomial(r, p)))
            passes = r if K < k_max else int(rng.binomial(k_max, p))
            rows.append(R.ResultRow.make(point, task, R.INSTANCE, passes / K, f"i{i}", {
                "num_samples": K, "num_passes": passes, "capped": K >= k_max,
                R.ANSWER_LOSS_SUM: -np.log(p)}))
        # a non-final row that must be ignored
        rows.append(R.ResultRow.make(dataclasses.replace(point, step=STEPS // 2), task, R.INSTANCE, 0.0,
                                     "i0", {"num_samples": 1, "num_passes": 0}))
    return rows


def test_caps_fund_instances_the_rungs_below_predict_and_respect_the_budget():
    rng = np.random.default_rng(0)
    # PU rising with N per instance: easy ones near 0.3, hard ones near 1e-5.
    base = np.array([0.3, 0.1, 0.03, 0.01, 1e-3, 1e-5])
    pus = [np.clip(base * (n / SIZES[-1]) ** 0.5, 1e-7, 0.9) for n in SIZES]
    records = [_record(f"m{i}", n) for i, n in enumerate(SIZES)]
    rows = _rows(records[:2], pus[:2], rng)
    caps, flagged = budgeting.next_rung_caps(rows, records[:2], SIZES[2], ["t", "absent"],
                                             r=4, k_max=1000, per_instance=300)
    assert set(caps) == {"t"}  # a task with no rows below runs with the flat cap
    assert set(caps["t"]) == {f"i{i}" for i in range(6)}
    assert sum(caps["t"].values()) <= 300 * 6  # the budget is a hard bound
    assert min(caps["t"].values()) >= 4
    # The easiest instance needs few samples; the hardest cannot be funded and is flagged.
    need_easy = budget.samples_needed(pus[2][0], r=4)
    assert caps["t"]["i0"] >= need_easy * 0.5
    assert "i5" in flagged["t"] and "i0" not in flagged["t"]


def test_no_rows_below_means_the_flat_cap():
    caps, flagged = budgeting.next_rung_caps([], [_record("m0", SIZES[0])], SIZES[1], ["t"],
                                             r=4, k_max=1000, per_instance=300)
    assert caps == {} and flagged == {}
