"""Tests of lmscale.eval.plan: the units of an evaluation and the settings each gets."""

import dataclasses
import types

import pytest

from lmscale.data import registry
from lmscale.eval import plan as P
from lmscale.eval import results as R
from lmscale.eval import runner


def _run(name, steps, num_steps):
    record = types.SimpleNamespace(run_name=name, num_steps=num_steps)
    return P.RunCheckpoints(f"/w/{name}", record, tuple(steps))


def _tasks():
    load = lambda split: []  # noqa: E731  (never loaded by the planner)
    return [registry.EvalTask("mc", registry.MULTIPLE_CHOICE, None, 0.25, (), 1, loader=load),
            registry.EvalTask("pu", registry.GENERATIVE, "contains", 0.0, ("\n",), 4,
                              loader=load),
            registry.EvalTask("al", registry.GENERATIVE, None, 0.0, ("\n",), 4, loader=load)]


PU = runner.PassUntilConfig(r=2, k_max=100)


def test_every_unit_listed_with_its_kind_and_completion():
    runs = [_run("a", (5, 10), 10), _run("b", (10, 20), 20)]
    plan = P.plan_evaluation(runs, _tasks(), passuntil=PU,
                             done=lambda run, step, task: (run, step) == ("a", 5))
    assert [u.key for u in plan.units] == [
        (run, step, task) for run, steps in (("a", (5, 10)), ("b", (10, 20)))
        for step in steps for task in (R.VALIDATION_TASK, "mc", "pu", "al")]
    kinds = {u.task_name: u.kind for u in plan.units}
    assert kinds == {R.VALIDATION_TASK: P.VALIDATION, "mc": P.MULTIPLE_CHOICE,
                     "pu": P.PASSUNTIL, "al": P.ANSWER_LOSS}
    assert {u.key for u in plan.units if u.complete} == {
        ("a", 5, t) for t in (R.VALIDATION_TASK, "mc", "pu", "al")}
    assert [u.final for u in plan.units if u.task_name == "mc"] == [False, True, False, True]
    # Execution order: one entry per checkpoint with work left, its units in task order.
    assert [(r.run_name, s, [u.task_name for u in us]) for r, s, us in plan.checkpoints()] \
        == [(n, s, [R.VALIDATION_TASK, "mc", "pu", "al"]) for n, s in
            (("a", 10), ("b", 10), ("b", 20))]
    assert plan.describe() == "2 runs, 4 checkpoints, 16 units (4 done earlier, 12 to run)"


def test_final_only_steps_and_intermediate_settings():
    runs = [_run("a", (5, 10), 10)]
    low = dataclasses.replace(PU, k_max=7)
    caps = {"pu": {"i1": 50}}
    plan = P.plan_evaluation(runs, _tasks(), passuntil=PU, intermediate_passuntil=low,
                             caps=caps, validation=False)
    pu = {u.step: u for u in plan.units if u.kind == P.PASSUNTIL}
    assert pu[10].passuntil is PU and pu[10].cap("i1") == 50 and pu[10].cap("i2") == 100
    assert pu[5].passuntil is low and pu[5].caps is None and pu[5].cap("i1") == 7
    assert all(u.passuntil is None for u in plan.units if u.kind != P.PASSUNTIL)
    final = P.plan_evaluation(runs, _tasks(), passuntil=PU, final_only=True)
    assert {u.step for u in final.units} == {10}
    only5 = P.plan_evaluation(runs, _tasks(), passuntil=PU, steps=[5])
    assert {u.step for u in only5.units} == {5}


def test_bad_plans_are_named():
    runs = [_run("a", (10,), 10)]
    with pytest.raises(ValueError, match="need `passuntil`"):
        P.plan_evaluation(runs, _tasks())
    with pytest.raises(ValueError, match="'mc' is not a PassUntil task"):
        P.plan_evaluation(runs, _tasks(), passuntil=PU, caps={"mc": {"x": 5}})
    with pytest.raises(ValueError, match=r"\['pu'\]\['x'\]=1: must be an int >= r=2"):
        P.plan_evaluation(runs, _tasks(), passuntil=PU, caps={"pu": {"x": 1}})
    with pytest.raises(ValueError, match="'mc' given twice"):
        P.plan_evaluation(runs, _tasks() + _tasks()[:1], passuntil=PU)


def test_prompts_per_call_default_asks_a_batch_per_call_and_fills_the_slots():
    final = runner.PassUntilConfig(r=4, k_max=1000, batch_size=512, num_slots=256)
    assert final.per_call() == 1  # one draw of 512 is a batch and fills the slots
    # Draws of 50: 11 make a batch of 512, rounded down to a power of two (slot groups).
    assert dataclasses.replace(final, k_max=50).per_call() == 8
    assert dataclasses.replace(final, k_max=50, num_slots=64).per_call() == 8
    assert dataclasses.replace(final, k_max=50, num_slots=4).per_call() == 4  # <= slots
    assert final.per_call(k_max=64) == 8  # per-instance caps: the largest one
    # More slots than a batch: enough prompts to fill them.
    assert dataclasses.replace(final, num_slots=2048).per_call() == 4
    assert dataclasses.replace(final, prompts_per_call=3).per_call() == 3
    with pytest.raises(ValueError, match="prompts_per_call=0"):
        runner.PassUntilConfig(prompts_per_call=0)
