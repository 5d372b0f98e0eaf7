"""Tests of greedy-decoding units (lmscale.eval.greedy) through the evaluator.

Runs come from stand-in run records and `init_params` weights (no training). The unit's
completions are checked against an independent greedy loop (one full forward per token,
argmax, cut at the stop strings) and the task's checker; the papers' TFDS tasks (under
`tfds.testing.mock_data`) go through the unit with scripted completions, so that their
aliases, answer extraction and last-word checks decide known passes and failures.
"""

import dataclasses
import functools
import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest

from lmscale.data import checkers as kinds
from lmscale.data import registry
from lmscale.data import vocab as vocab_lib
from lmscale.eval import greedy as greedy_lib
from lmscale.eval import greedy_stats
from lmscale.eval import plan as plan_lib
from lmscale.eval import results as R
from lmscale.eval import runner
from lmscale.fit import passuntil as fit_pu
from lmscale.models import Decoder, count_params, init_params
from lmscale import testing
from lmscale.testing import tiny_config
from lmscale.train.record import RunRecord

pytestmark = pytest.mark.usefixtures("fast_compiles")

CONFIG = tiny_config(vocab_size=259, max_seq_len=64)
VOCAB = vocab_lib.get_vocabulary(vocab_lib.BYTE)
ONE_DEVICE = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"), devices=jax.devices()[:1],
                           axis_types=(jax.sharding.AxisType.Auto,) * 3)
NEW_TOKENS = 6
STOPS = ("\n", "q")


def _write_run(workdir, config, name="a", step=10):
    n = count_params(config)
    d = pathlib.Path(workdir) / name
    d.mkdir(parents=True)
    RunRecord(run_name=name, model_config=dataclasses.asdict(config), num_params=n.total,
              num_params_non_embedding=n.non_embedding, num_tokens=step * 128,
              flops=6.0 * n.non_embedding * step * 128, token_multiplier=None,
              tokens_per_step=128, batch_size=4, seq_len=32, num_steps=step,
              vocab_spec="byte", loss_unit="nats/byte", corpus="stand_in", seed=0,
              status="done", checkpoints=[step]).save(d)


def _params(config, seed=11):
    params = nn.unbox(init_params(config, jax.random.PRNGKey(seed)))["params"]
    return jax.tree_util.tree_map(lambda x: x * 3.0, params)  # sharper distributions


def _source(config):
    return runner.CheckpointSource(
        load_record=RunRecord.load, list_steps=lambda d: RunRecord.load(d).checkpoints,
        restore_params=lambda run_dir, step, cfg, mesh=None: _params(config))


def _evaluate(workdir, config, greedy_tasks, num_slots=4, **kw):
    return runner.evaluate(
        str(workdir), kw.pop("tasks", ()), source=_source(config), greedy_tasks=greedy_tasks,
        passuntil_config=runner.PassUntilConfig(num_slots=num_slots),
        validation=runner.ValidationConfig(enabled=False), mesh=ONE_DEVICE, **kw)


@functools.lru_cache(maxsize=None)
def _forward(config):
    return jax.jit(lambda params, tokens: Decoder(config).apply({"params": params}, tokens))


def _direct_greedy(config, params, prompt: str) -> str:
    """Argmax of a full forward per new token, EOS dropped, cut at the stop strings."""
    seq = [0] + list(VOCAB.encode(prompt))
    new = []
    for _ in range(NEW_TOKENS):
        padded = np.zeros((1, config.max_seq_len), np.int32)  # causal: padding is inert
        padded[0, :len(seq)] = seq
        token = int(np.argmax(np.asarray(_forward(config)(params, padded))[0, len(seq) - 1]))
        if token == VOCAB.eos_id:
            break
        seq.append(token)
        new.append(token)
    return kinds.cut_at_stop(VOCAB.decode(new), STOPS)


def _task(name, prompts, targets, checker="exact"):
    insts = [registry.Instance(f"i{k}", p, target=t) for k, (p, t) in
             enumerate(zip(prompts, targets))]
    return registry.EvalTask(name, registry.GENERATIVE, checker, 0.0, STOPS, NEW_TOKENS,
                             loader=lambda split: insts)


PROMPTS = [f"say {w}:" for w in ("ab", "cd", "efg", "h", "ijkl", "m", "no")]


def _greedy_rows(path, task):
    rows = R.read_rows(path)
    return ({r.instance: r for r in rows if r.task == R.greedy_task(task)
             and r.metric == R.INSTANCE},
            {r.metric: r for r in rows if r.task == R.greedy_task(task) and r.instance is None})


def test_greedy_unit_equals_a_direct_greedy_loop_and_checker(tmp_path):
    params = _params(CONFIG)
    direct = [_direct_greedy(CONFIG, params, p) for p in PROMPTS]
    assert len(set(direct)) > 1  # the prompts lead to different completions
    # Targets: the direct completion for even instances, something else for odd ones, so the
    # exact match is known (4 of 7) and a wrong decode fails it.
    targets = [d.strip() if k % 2 == 0 else "\u00a7never" for k, d in enumerate(direct)]
    assert all(t for t in targets[::2]), direct  # no empty completion among the passes
    task = _task("stand_in_greedy", PROMPTS, targets)
    _write_run(tmp_path, CONFIG)
    # 4 slots: two sampler calls, the second padded.
    _evaluate(tmp_path, CONFIG, [task], num_slots=4)
    inst, agg = _greedy_rows(tmp_path / runner.RESULTS_FILE, task.name)
    assert sorted(inst) == [f"i{k}" for k in range(len(PROMPTS))]
    for k, want in enumerate(direct):
        row = inst[f"i{k}"]
        assert row.detail["text"] == want
        passed = kinds.passes("exact", want, targets[k], STOPS)
        assert row.detail["passed"] == passed and row.value == float(passed)
        assert passed == (k % 2 == 0)
    em = agg[R.GREEDY_EXACT_MATCH]
    assert em.value == pytest.approx(4 / 7)
    assert em.detail["num_passed"] == 4 and em.detail["num_instances"] == 7
    assert em.detail["interval"] == pytest.approx(list(fit_pu.interval(7, 4, True, 0.95)))
    assert agg[R.NUM_INSTANCES].value == 7
    # The slot count changes only how prompts are batched, not the completions.
    other = tmp_path / "slots"
    _write_run(other, CONFIG)
    _evaluate(other, CONFIG, [task], num_slots=8)
    again, _ = _greedy_rows(other / runner.RESULTS_FILE, task.name)
    assert {i: r.detail["text"] for i, r in again.items()} == \
        {i: r.detail["text"] for i, r in inst.items()}


def test_interrupted_greedy_unit_decodes_only_what_is_missing(tmp_path, monkeypatch):
    task = _task("stand_in_resume", PROMPTS, ["x"] * len(PROMPTS), checker="contains")
    clean, cut = tmp_path / "clean", tmp_path / "cut"
    for d in (clean, cut):
        _write_run(d, CONFIG)
    _evaluate(clean, CONFIG, [task], num_slots=2)
    full = R.read_rows(clean / runner.RESULTS_FILE)
    # The file as a kill after the first sampler call leaves it: two instance rows.
    kept = [r for r in full if r.metric == R.INSTANCE][:2]
    R.ResultsFile(cut / runner.RESULTS_FILE).append(kept)
    decoded = []
    real = greedy_lib.decode

    def counting(sampler, prompts, rows):
        decoded.extend(VOCAB.decode([int(t) for t in p[1:]]) for p in prompts)
        return real(sampler, prompts, rows)

    monkeypatch.setattr(greedy_lib, "decode", counting)
    _evaluate(cut, CONFIG, [task], num_slots=2)
    assert decoded == PROMPTS[2:]
    assert R.read_rows(cut / runner.RESULTS_FILE) == full
    decoded.clear()
    _evaluate(cut, CONFIG, [task], num_slots=2)  # complete: nothing decoded or written
    assert decoded == [] and R.read_rows(cut / runner.RESULTS_FILE) == full


def test_greedy_units_are_planned_per_checkpoint_and_bad_tasks_named():
    gen = _task("g", PROMPTS[:2], ["a", "b"])
    mc = registry.EvalTask("m", registry.MULTIPLE_CHOICE, None, 0.5, (), 1,
                           loader=lambda split: [])
    rec = RunRecord(run_name="a", model_config=dataclasses.asdict(CONFIG), num_params=1,
                    num_params_non_embedding=1, num_tokens=1, flops=1.0,
                    token_multiplier=None, tokens_per_step=1, batch_size=1, seq_len=8,
                    num_steps=20, vocab_spec="byte", loss_unit="nats/byte", corpus="c",
                    seed=0, status="done", checkpoints=[10, 20])
    run = plan_lib.RunCheckpoints("/r/a", rec, (10, 20))
    plan = plan_lib.plan_evaluation([run], [mc], greedy_tasks=[gen],
                                    done=lambda r, s, t: (s, t) == (10, "g/greedy"))
    greedy = [u for u in plan.units if u.kind == plan_lib.GREEDY]
    assert [(u.step, u.task_name, u.complete) for u in greedy] == [
        (10, "g/greedy", True), (20, "g/greedy", False)]
    assert greedy[0].source_task == "g" and plan.tasks["g"] is gen
    assert {u.kind for u in plan.units} == {plan_lib.VALIDATION, plan_lib.MULTIPLE_CHOICE,
                                            plan_lib.GREEDY}
    with pytest.raises(ValueError, match="greedy_tasks: task 'm' is not a generative"):
        plan_lib.plan_evaluation([run], [], greedy_tasks=[mc])


def test_binomial_interval_by_hand_and_bad_input_named():
    # Clopper-Pearson is the capped-instance interval of lmscale.fit.passuntil.
    for k, n in ((0, 5), (3, 10), (10, 10)):
        assert greedy_stats.binomial_interval(k, n, 0.9) == pytest.approx(
            fit_pu.interval(n, k, True, 0.9))
    # Wilson score interval, written out: center +- half-width over 1 + z^2 / n.
    k, n, z = 3, 10, 1.959963984540054
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert greedy_stats.binomial_interval(k, n, 0.95, "wilson") == pytest.approx(
        (center - half, center + half))
    s = greedy_stats.summarize([True, False, False, True])
    assert s["exact_match"] == 0.5 and s["num_passed"] == 2 and s["level"] == 0.95
    with pytest.raises(ValueError, match="num_passed=4 must lie in"):
        greedy_stats.binomial_interval(4, 3)
    with pytest.raises(ValueError, match="method='jeffreys'"):
        greedy_stats.binomial_interval(1, 3, method="jeffreys")


# ---------------------------------------------------------------------------------------
# The papers' TFDS tasks through the greedy unit, with scripted completions.

BIG = tiny_config(vocab_size=259, max_seq_len=512)


_fixed = testing.mock_tfds_records


def _scripted(monkeypatch, script):
    """Replaces the decode step: a prompt's completion is that of the first key its text
    ends with."""
    seen = []

    def decode(sampler, prompts, rows):
        out = []
        for p in prompts:
            text = VOCAB.decode([int(t) for t in p[1:]])
            completion = next(c for end, c in script.items() if text.endswith(end))
            seen.append(text)
            out.append((kinds.cut_at_stop(completion, sampler.stop_strings), 3))
        return out

    monkeypatch.setattr(greedy_lib, "decode", decode)
    return seen


def _trivia(i):
    return {"question": f"Who sang {i}?", "question_id": str(i), "question_source": "",
            "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
            "search_results": {"description": [], "filename": [], "rank": [], "title": [],
                               "url": [], "search_context": []},
            "answer": {"aliases": ["The Beatles", "Fab Four"],
                       "normalized_aliases": ["the beatles", "fab four"],
                       "matched_wiki_entity_name": "",
                       "normalized_matched_wiki_entity_name": "",
                       "normalized_value": "the beatles", "type": "", "value": "The Beatles"}}


@pytest.mark.parametrize("name, records, script, passed, predictions", [
    ("triviaqa_closed_book", [_trivia(i) for i in range(8)],
     # An alias (normalised), the value without its article, a wrong band, then the rest.
     {"Who sang 0?\nAnswer:": " fab four.\nQuestion: x", "Who sang 1?\nAnswer:": " Beatles",
      "Who sang 2?\nAnswer:": " The Rolling Stones", "?\nAnswer:": " no idea"},
     [True, True, False] + [False] * 5, ["fab four", "beatles", "rolling stones"]),
    ("gsm8k_cot", [{"question": f"Q{i}?", "answer": f"so 2 + {i} = {i + 2}\n#### {i + 2:,}000",
                    "annotation": "", "short_answer": ""} for i in range(10)],
     # The final number after chain of thought (commas dropped); a right number that is
     # not the last one fails; text after the stop string is never read.
     {"Q3?\nAnswer:": " 2 + 3 is 5, times 1,000. The answer is 5,000.\n\nQuestion: 9",
      "Q0?\nAnswer:": " The answer is 2000 or 7", "?\nAnswer:": " The answer is 1."},
     [False, False, False, True] + [False] * 6, ["7", "1", "1", "5000"]),
    ("lambada", [{"passage": "He patted the old dog"}, {"passage": "She read the book"},
                 {"passage": "They sailed the sea"}],
     {"the old": " dog. Then he", "read the": " cat", "sailed the": "\nsea"},
     [True, False, False], ["dog", "cat", ""]),
])
def test_papers_tasks_through_the_greedy_unit(tmp_path, monkeypatch, name, records, script,
                                              passed, predictions):
    seen = _scripted(monkeypatch, script)
    _write_run(tmp_path, BIG)
    with _fixed(records):
        task = registry.get_eval_task(name)
        _evaluate(tmp_path, BIG, [name], num_slots=4)
    assert len(seen) == len(passed)
    inst, agg = _greedy_rows(tmp_path / runner.RESULTS_FILE, name)
    got = [inst[str(i)] for i in range(len(passed))]
    assert [r.detail["passed"] for r in got] == passed
    assert [r.detail["prediction"] for r in got[:len(predictions)]] == predictions
    assert agg[R.GREEDY_EXACT_MATCH].value == pytest.approx(np.mean(passed))
    assert agg[R.GREEDY_EXACT_MATCH].detail["num_passed"] == sum(passed)
    assert task.checker in kinds.STRING_CHECKS


def test_partial_scoring_task_through_the_evaluator(tmp_path):
    """A partial-scoring task's rows are `Scorer.score_partial`'s (not full sentences)."""
    from lmscale.eval import scorer as S

    insts = [registry.Instance(f"w{k}", "Q: ", target=" was red.",
                               choices=(f"the cup {k}", f"the table {k}"), gold=k % 2)
             for k in range(3)]
    task = registry.EvalTask("stand_in_schema", registry.MULTIPLE_CHOICE, None, 0.5, (), 1,
                             loader=lambda split: insts, partial_scoring=True)
    _write_run(tmp_path, CONFIG)
    _evaluate(tmp_path, CONFIG, [], tasks=[task])
    rows = {r.instance: r for r in R.read_rows(tmp_path / runner.RESULTS_FILE)
            if r.task == task.name and r.metric == R.INSTANCE}
    want = S.Scorer(CONFIG, _params(CONFIG)).score_partial(
        [S.encode_partial_question(VOCAB, i.id, i.prompt, i.choices, i.target, i.gold)
         for i in insts])
    for w in want:
        assert rows[w.id].detail["loglik"] == pytest.approx(list(w.loglik), abs=1e-5)
        assert rows[w.id].detail["num_tokens"] == [len(" was red.")] * 2
    with pytest.raises(ValueError, match="partial scoring needs the shared continuation"):
        dataclasses.replace(task, loader=lambda split: [dataclasses.replace(
            insts[0], target=None)]).instances()
