"""Tests of lmscale.eval.runner: every checkpoint x task into rows, skip, resume after SIGKILL.

Runs and checkpoints come from a stand-in `CheckpointSource` (run.json files written here,
parameters from `init_params` seeded by run and step), so no training is needed; tasks are
small `EvalTask`s built here; the sampler, PassUntil driver, checkers and scorer are real.
"""

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from lmscale.data import registry
from lmscale.eval import results as R
from lmscale.eval import runner
from lmscale.eval import scorer as S
from lmscale.models import count_params, init_params
from lmscale.testing import tiny_config
from lmscale.train.record import RunRecord

pytestmark = pytest.mark.usefixtures("fast_compiles")

CONFIG = tiny_config(vocab_size=259, max_seq_len=64)
TOKENS_PER_STEP = 128


def _write_runs(workdir, names=("a", "b"), steps=(10, 20)):
    n = count_params(CONFIG)
    for name in names:
        d = pathlib.Path(workdir) / name
        d.mkdir(parents=True)
        RunRecord(run_name=name, model_config=dataclasses.asdict(CONFIG), num_params=n.total,
                  num_params_non_embedding=n.non_embedding,
                  num_tokens=steps[-1] * TOKENS_PER_STEP,
                  flops=6.0 * n.non_embedding * steps[-1] * TOKENS_PER_STEP,
                  token_multiplier=None, tokens_per_step=TOKENS_PER_STEP, batch_size=4,
                  seq_len=32, num_steps=steps[-1], vocab_spec="byte", loss_unit="nats/byte",
                  corpus="stand_in", seed=0, status="done",
                  checkpoints=list(steps)).save(d)


def _restore(run_dir, step, config):
    seed = sum(map(ord, pathlib.Path(run_dir).name)) * 1000 + step
    params = nn.unbox(init_params(config, jax.random.PRNGKey(seed)))["params"]
    return jax.tree_util.tree_map(lambda x: x * 3.0, params)  # sharper distributions


class _Source:
    def __init__(self):
        self.restored = []

    def as_source(self):
        def restore(run_dir, step, config, mesh=None):
            self.restored.append((pathlib.Path(run_dir).name, step))
            return _restore(run_dir, step, config)

        return runner.CheckpointSource(load_record=RunRecord.load,
                                       list_steps=lambda d: RunRecord.load(d).checkpoints,
                                       restore_params=restore)


def _stream(corpus, split, seq_len, batch_size, vocab_spec):
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 259, (2, batch_size, seq_len)).astype(np.int32)
    for t in tokens:
        yield {"decoder_target_tokens": t,
               "decoder_input_tokens": np.concatenate([np.zeros_like(t[:, :1]), t[:, :-1]], 1),
               "decoder_loss_weights": np.ones_like(t),
               "decoder_positions": np.broadcast_to(np.arange(seq_len), t.shape).copy(),
               "decoder_segment_ids": np.ones_like(t)}


def _tasks(num_gen=4):
    mc = [registry.Instance(f"m{i}", f"Q{i}: pick", choices=(" a", " bb", " ccc"), gold=i % 3)
          for i in range(3)]
    gen = [registry.Instance(f"g{i}", f"say {i}:", target=t)
           for i, t in enumerate("aeiou"[:num_gen])]
    return [
        registry.EvalTask("stand_in_mc", registry.MULTIPLE_CHOICE, None, 1 / 3, (), 1,
                          loader=lambda split: mc),
        registry.EvalTask("stand_in_gen", registry.GENERATIVE, "contains", 0.0, ("\n",), 4,
                          loader=lambda split: gen),
    ]


PU = runner.PassUntilConfig(r=2, k_max=48, batch_size=16, num_slots=8, seed=5)
ONE_DEVICE = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"), devices=jax.devices()[:1],
                           axis_types=(jax.sharding.AxisType.Auto,) * 3)


def _evaluate(workdir, source, **kw):
    kw.setdefault("validation", runner.ValidationConfig(batch_size=2))
    kw.setdefault("mesh", ONE_DEVICE)  # the 8-device mesh: tests/eval/test_mesh_eval.py
    return runner.evaluate(str(workdir), _tasks(), source=source.as_source(),
                           passuntil_config=PU, stream_factory=_stream, **kw)


def _key(row):
    return (row.run, row.step, row.task, row.metric, row.instance)


@pytest.mark.slow
def test_every_checkpoint_and_task_gets_rows(tmp_path):
    _write_runs(tmp_path)
    results = _evaluate(tmp_path, _Source(), steps=[20])
    rows = R.read_rows(tmp_path / runner.RESULTS_FILE)
    assert rows == results.rows
    units = {r.unit for r in rows if r.metric == R.UNIT_COMPLETE}
    assert units == {(run, 20, t) for run in "ab"
                     for t in (R.VALIDATION_TASK, "stand_in_mc", "stand_in_gen")}
    n_non_emb = count_params(CONFIG).non_embedding
    for r in rows:
        assert r.tokens == 20 * TOKENS_PER_STEP and r.num_tokens == 20 * TOKENS_PER_STEP
        assert r.flops == 6.0 * n_non_emb * r.tokens
    by_key = {_key(r): r for r in rows}
    for run in "ab":
        # Multiple choice: aggregates are means of the per-instance metrics.
        inst = [r for r in rows if r.run == run and r.task == "stand_in_mc"
                and r.metric == R.INSTANCE]
        assert [r.instance for r in inst] == ["m0", "m1", "m2"]
        per = [S.QuestionScore.from_detail(r.instance, r.detail).metrics() for r in inst]
        for metric in R.MC_METRICS:
            assert by_key[(run, 20, "stand_in_mc", metric, None)].value == pytest.approx(
                np.mean([m[metric] for m in per]))
        # PassUntil: K and passes are consistent, and the aggregate is the mean estimate.
        gen = [r for r in rows if r.run == run and r.task == "stand_in_gen"
               and r.metric == R.INSTANCE]
        assert len(gen) == 4
        for r in gen:
            d = r.detail
            assert 2 <= d["num_samples"] <= PU.k_max
            assert d["capped"] == (d["num_passes"] < 2)
            if not d["capped"]:
                assert d["estimate"] == pytest.approx(1 / (d["num_samples"] - 1))
            assert d[R.ANSWER_LOSS] > 0
        assert by_key[(run, 20, "stand_in_gen", R.PASSUNTIL, None)].value == pytest.approx(
            np.mean([r.detail["estimate"] for r in gen]))
        assert by_key[(run, 20, "stand_in_gen", R.NUM_INSTANCES, None)].value == 4
        assert by_key[(run, 20, R.VALIDATION_TASK, R.VALIDATION_LOSS, None)].value > 0
    # Different checkpoints give different numbers (the rows are not constants).
    assert (by_key[("a", 20, R.VALIDATION_TASK, R.VALIDATION_LOSS, None)].value
            != by_key[("b", 20, R.VALIDATION_TASK, R.VALIDATION_LOSS, None)].value)


def test_passuntil_k_is_position_of_rth_pass_with_stand_in_draw(tmp_path):
    _write_runs(tmp_path, names=("a",), steps=(10,))

    def outcomes(seed):
        return np.random.default_rng(seed).random(PU.k_max) < 0.15

    def draw_factory(sampler, prompt, checker_fn, seed):
        seq, pos = outcomes(seed), [0]

        def draw(n):
            out = seq[pos[0]:pos[0] + n]
            pos[0] += n
            return out

        return draw

    _evaluate(tmp_path, _Source(), draw_factory=draw_factory,
              validation=runner.ValidationConfig(enabled=False))
    gen = [r for r in R.read_rows(tmp_path / runner.RESULTS_FILE)
           if r.task == "stand_in_gen" and r.metric == R.INSTANCE]
    for r in gen:
        seq = outcomes(runner.instance_seed(PU.seed, "stand_in_gen", r.instance))
        hits = np.flatnonzero(seq)
        want_k = int(hits[1]) + 1 if len(hits) >= 2 else PU.k_max
        assert r.detail["num_samples"] == want_k
        assert r.detail["seed"] == runner.instance_seed(PU.seed, "stand_in_gen", r.instance)


def test_second_call_skips_completed_units(tmp_path):
    _write_runs(tmp_path, names=("a",), steps=(10, 20))
    source = _Source()
    _evaluate(tmp_path, source)
    assert sorted(source.restored) == [("a", 10), ("a", 20)]
    before = (tmp_path / runner.RESULTS_FILE).read_bytes()
    again = _Source()
    _evaluate(tmp_path, again)
    assert again.restored == []  # no checkpoint even loaded
    assert (tmp_path / runner.RESULTS_FILE).read_bytes() == before


KILL_SCRIPT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("runner_test", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
mod._killed_run(sys.argv[2], int(sys.argv[3]))
"""


def _killed_run(workdir, kill_at_instance):
    """Evaluates with the real sampler and SIGKILLs itself inside a PassUntil instance."""
    from lmscale.eval import sampler as sampler_lib

    made = [0]

    def draw_factory(sampler, prompt, checker_fn, seed):
        made[0] += 1
        draw = sampler_lib.make_draw(sampler, prompt, checker_fn, seed)
        if made[0] < kill_at_instance:
            return draw

        def dying_draw(n):
            draw(n)  # mid-instance: samples drawn, nothing written yet
            os.kill(os.getpid(), signal.SIGKILL)

        return dying_draw

    _evaluate(workdir, _Source(), draw_factory=draw_factory)


@pytest.mark.slow
def test_resume_after_sigkill_equals_uninterrupted(tmp_path, fast_compile_env):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    for d in (clean, killed):
        _write_runs(d, names=("a",), steps=(10,))
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, __file__, str(killed), "3"],
                          env={**os.environ, **fast_compile_env}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    partial = R.read_rows(killed / runner.RESULTS_FILE)
    done = {r.unit for r in partial if r.metric == R.UNIT_COMPLETE}
    assert ("a", 10, "stand_in_gen") not in done
    assert [r.instance for r in partial if r.task == "stand_in_gen"] == ["g0", "g1"]

    resumed_source = _Source()
    _evaluate(killed, resumed_source)
    _evaluate(clean, _Source())
    resumed = R.read_rows(killed / runner.RESULTS_FILE)
    assert resumed == R.read_rows(clean / runner.RESULTS_FILE)
    # Exactly one row per (unit, metric, instance): nothing was redone.
    assert len({_key(r) for r in resumed}) == len(resumed)


def test_missing_run_json_field_is_named(tmp_path):
    _write_runs(tmp_path, names=("a",), steps=(10,))
    info = RunRecord.load(tmp_path / "a").to_dict()
    del info["tokens_per_step"]
    with pytest.raises(ValueError, match=r"run.json: lacks field.*'tokens_per_step'"):
        runner.run_point(str(tmp_path / "a"), info, 10)
    (tmp_path / "a" / "run.json").unlink()
    with pytest.raises(FileNotFoundError, match="no run directory"):
        runner.find_runs(str(tmp_path), None)
    with pytest.raises(ValueError, match="k_max=1 < r=2"):
        runner.PassUntilConfig(r=2, k_max=1)


def test_evaluate_gin_configures_the_binary_entry(tmp_path):
    import gin

    gin_file = pathlib.Path(__file__).resolve().parents[2] / "experiments/runs/evaluate.gin"
    _write_runs(tmp_path, names=("a",), steps=(10,))
    with gin.unlock_config():
        gin.clear_config()
        with pytest.raises(ValueError, match="TASKS"):
            gin.parse_config_files_and_bindings([str(gin_file)], [])
            gin.get_configurable(runner.evaluate)(str(tmp_path))
        gin.clear_config()
        gin.parse_config_files_and_bindings(
            [str(gin_file)], ["TASKS = []", "runner.PassUntilConfig.r = 3",
                              "runner.ValidationConfig.enabled = False"])
    try:
        assert gin.query_parameter("runner.PassUntilConfig.k_max") == 1000
        source = _Source()
        results = gin.get_configurable(runner.evaluate)(str(tmp_path),
                                                        source=source.as_source())
        assert results.rows == [] and source.restored == []
        assert results.path == str(tmp_path / runner.RESULTS_FILE)
    finally:
        gin.clear_config()


def test_passuntil_rows_carry_the_summed_answer_loss(tmp_path):
    """Loss-assisted PU (`fit_pu_instances(answer_loss=...)`) takes the answer's NLL summed
    over its tokens; the per-token mean stays the unit aggregate."""
    _write_runs(tmp_path, names=("a",), steps=(10,))
    gen = [registry.Instance(f"g{i}", f"say {i}:", target=t)
           for i, t in enumerate(["abc", "hello", "xy"])]
    task = registry.EvalTask("stand_in_gen", registry.GENERATIVE, "contains", 0.0, ("\n",), 4,
                             loader=lambda split: gen)
    runner.evaluate(str(tmp_path), [task], source=_Source().as_source(), passuntil_config=PU,
                    draw_factory=lambda s, p, c, seed: (lambda n: np.ones(n, bool)),
                    validation=runner.ValidationConfig(enabled=False), mesh=ONE_DEVICE)
    rows = {r.instance: r for r in R.read_rows(tmp_path / runner.RESULTS_FILE)
            if r.metric == R.INSTANCE}
    params = _restore(str(tmp_path / "a"), 10, CONFIG)
    vocab = runner._vocab("byte")
    scores = {s.id: s for s in S.Scorer(CONFIG, params).score(
        [S.encode_question(vocab, i.id, i.prompt, [i.target], 0) for i in gen])}
    for i in gen:
        total, n = -float(scores[i.id].loglik[0]), int(scores[i.id].num_tokens[0])
        assert n == len(i.target) > 1
        assert rows[i.id].detail[R.ANSWER_LOSS_SUM] == pytest.approx(total, rel=1e-5)
        assert rows[i.id].detail[R.ANSWER_LOSS] == pytest.approx(total / n, rel=1e-5)


def test_batched_prompts_write_the_rows_of_one_prompt_per_call(tmp_path):
    """PassUntil with several prompts per `sample_many` call (5 instances, 2 per call: a
    half-empty last call) gives exactly the rows of one prompt per call."""
    rows = {}
    for per_call in (1, 2):
        workdir = tmp_path / f"per_call_{per_call}"
        _write_runs(workdir, names=("a",), steps=(10,))
        gen = [registry.Instance(f"g{i}", f"say {i}:", target=t)
               for i, t in enumerate("*}C9k")]  # characters these params often sample
        tasks = [registry.EvalTask("stand_in_gen", registry.GENERATIVE, "contains", 0.0,
                                   ("\n",), 4, loader=lambda split: gen)]
        results = runner.evaluate(
            str(workdir), tasks, source=_Source().as_source(), mesh=ONE_DEVICE,
            passuntil_config=dataclasses.replace(PU, prompts_per_call=per_call),
            validation=runner.ValidationConfig(enabled=False))
        rows[per_call] = R.read_rows(workdir / runner.RESULTS_FILE)
        assert results.summary.units_run == 1 and results.summary.pu_samples > 0
    assert rows[1] == rows[2]
    gen = [r for r in rows[2] if r.metric == R.INSTANCE]
    assert [r.instance for r in gen] == ["g0", "g1", "g2", "g3", "g4"]
    ks = [r.detail["num_samples"] for r in gen]
    assert len(set(ks)) > 1 and min(ks) < PU.k_max  # instances finish at different rounds


def test_batched_calls_whose_instances_all_end_are_dispatched_ahead(tmp_path, monkeypatch):
    """Caps below a batch (the study's intermediate checkpoints): every instance of a call
    ends with it, so `run_batched` dispatches the next call before checking this one
    (dispatch, dispatch, collect, ...), and the rows are those of one prompt per call."""
    from lmscale.eval import sampler as sampler_lib

    events = []
    for name in ("dispatch_many", "collect_many"):
        real = getattr(sampler_lib.Sampler, name)
        monkeypatch.setattr(sampler_lib.Sampler, name,
                            lambda self, *a, _real=real, _name=name, **k:
                            events.append(_name) or _real(self, *a, **k))
    gen = [registry.Instance(f"g{i}", f"say {i}:", target=t) for i, t in enumerate("*}C9k")]
    tasks = [registry.EvalTask("stand_in_gen", registry.GENERATIVE, "contains", 0.0, ("\n",),
                               4, loader=lambda split: gen)]
    rows = {}
    for per_call, k_max in ((1, 12), (2, 12), (2, 48)):
        workdir = tmp_path / f"per_call_{per_call}_{k_max}"
        _write_runs(workdir, names=("a",), steps=(10,))
        events.clear()
        runner.evaluate(str(workdir), tasks, source=_Source().as_source(), mesh=ONE_DEVICE,
                        passuntil_config=dataclasses.replace(PU, k_max=k_max,
                                                             prompts_per_call=per_call),
                        validation=runner.ValidationConfig(enabled=False))
        rows[per_call, k_max] = R.read_rows(workdir / runner.RESULTS_FILE)
        if per_call == 2 and k_max == 12:  # 3 calls (2 + 2 + 1 instances), each one ahead
            assert events == ["dispatch_many"] * 2 + ["collect_many", "dispatch_many"] + [
                "collect_many"] * 2
        elif per_call == 2:  # instances go on into the next call: it waits for the outcomes
            assert events[:2] == ["dispatch_many", "collect_many"]
            assert all(a != b for a, b in zip(events, events[1:]))
    assert rows[1, 12] == rows[2, 12]
    ks = [r.detail["num_samples"] for r in rows[2, 12] if r.metric == R.INSTANCE]
    assert len(ks) == 5 and max(ks) <= 12


def test_per_instance_caps_are_used_and_recorded(tmp_path):
    _write_runs(tmp_path, names=("a",), steps=(10,))
    caps = {"stand_in_gen": {"g0": 5, "g2": 30}}
    results = _evaluate(tmp_path, _Source(), passuntil_caps=caps,
                        draw_factory=lambda s, p, c, seed: (lambda n: np.zeros(n, bool)),
                        validation=runner.ValidationConfig(enabled=False))
    gen = {r.instance: r.detail for r in results.rows
           if r.task == "stand_in_gen" and r.metric == R.INSTANCE}
    for inst, cap in {"g0": 5, "g1": PU.k_max, "g2": 30, "g3": PU.k_max}.items():
        assert gen[inst]["k_max"] == cap and gen[inst]["num_samples"] == cap
        assert gen[inst]["capped"]
    with pytest.raises(ValueError, match=r"passuntil_caps\['stand_in_gen'\]\['g0'\]=1"):
        _evaluate(tmp_path, _Source(), passuntil_caps={"stand_in_gen": {"g0": 1}})
    with pytest.raises(ValueError, match="task 'nope' is not evaluated"):
        _evaluate(tmp_path, _Source(), passuntil_caps={"nope": {"g0": 9}})


def test_summary_reports_compile_share_and_skips(tmp_path):
    _write_runs(tmp_path, names=("a",), steps=(10,))
    first = _evaluate(tmp_path, _Source(),
                      draw_factory=lambda s, p, c, seed: (lambda n: np.ones(n, bool))).summary
    assert (first.units_run, first.units_skipped) == (3, 0)
    assert 0 <= first.compile_s <= first.wall_s and 0 <= first.compile_share <= 1
    assert first.pu_samples == 4 * PU.batch_size  # 4 instances, one batch each (r passes)
    assert "compile" in first.line() and "samples/s" in first.line()
    again = _evaluate(tmp_path, _Source()).summary
    assert (again.units_run, again.units_skipped, again.pu_samples) == (0, 3, 0)


def test_score_batch_default_takes_whole_task_under_token_cap():
    """None: one scorer call per task (one compiled shape), capped by rows x max_seq_len."""
    short, long_ = tiny_config(max_seq_len=128), tiny_config(max_seq_len=4096)
    assert runner.score_batch(None, 200, short) == 200
    assert runner.score_batch(None, 10_000, short) == runner.SCORE_ROW_TOKENS // 128
    assert runner.score_batch(None, 200, long_) == runner.SCORE_ROW_TOKENS // 4096
    assert runner.score_batch(8, 200, short) == 8
    assert runner.score_batch(None, 3, tiny_config(max_seq_len=10 ** 6)) == 1


def test_pu_reference_times_the_sampler_alone_on_the_largest_units_shapes(tmp_path):
    """`pu_reference=True`: the summary holds the sampler-alone rate on the shapes of the
    unit that drew the most samples, its line sets the in-study rate against it, and the
    rows are those of a call without it."""
    from lmscale.eval import sampler as sampler_lib

    gen_only = [t for t in _tasks() if t.kind == registry.GENERATIVE]
    rows, summaries = {}, {}
    for reference in (False, True):
        workdir = tmp_path / f"reference_{reference}"
        _write_runs(workdir, names=("a",), steps=(10, 20))
        results = runner.evaluate(str(workdir), gen_only, source=_Source().as_source(),
                                  mesh=ONE_DEVICE, passuntil_config=PU, pu_reference=reference,
                                  validation=runner.ValidationConfig(enabled=False))
        rows[reference] = [(r.run, r.step, r.instance, r.value, r.detail)
                           for r in R.read_rows(workdir / runner.RESULTS_FILE)]
        summaries[reference] = results.summary
    assert rows[False] == rows[True]
    off, on = summaries[False], summaries[True]
    assert off.pu_alone_per_s == 0.0 and "sampler alone" not in off.line()
    assert on.pu_alone_per_s > 0 and 1.0 <= on.pu_alone_length <= 4  # max_new_tokens 4
    # Every sample generates 1 .. max_new_tokens (4) tokens; both calls counted the same.
    assert on.pu_samples <= on.pu_tokens <= 4 * on.pu_samples and on.pu_tokens == off.pu_tokens
    assert on.alone_share == pytest.approx(
        (on.pu_tokens - on.pu_samples) / (on.pu_sample_s - on.pu_compile_s)
        / (on.pu_alone_per_s * (on.pu_alone_length - 1)))
    assert f"% of the sampler alone on the same shapes by decode tokens/s " \
           f"({on.decode_tokens_per_s:.0f} vs {on.alone_decode_tokens_per_s:.0f}; the " \
           f"tokens after each sample's first, which needs no decode step) (alone: " \
           f"{on.pu_alone_per_s:.0f} samples/s of mean length {on.pu_alone_length:.2f}, " \
           f"{on.pu_alone_samples} per call" in on.line()
    # At most a third of the largest unit's samples a call (the reference makes three
    # calls): these units draw at most 4 x 48, so far fewer than the default 4096.
    assert 0 < on.pu_alone_samples <= on.pu_samples // 3 < sampler_lib.REFERENCE_SAMPLES


def test_pu_reference_is_spread_over_a_unit_large_enough_to_afford_it(tmp_path, monkeypatch):
    """Where the reference costs at most a third of a unit's fewest samples, it is timed
    between the unit's instances (`InterleavedReference`: median of REFERENCE_CALLS
    calls), left out of the unit's time and tokens, and the rows do not change."""
    from lmscale.eval import sampler as sampler_lib

    gen_only = [t for t in _tasks() if t.kind == registry.GENERATIVE]
    made = []
    real = sampler_lib.InterleavedReference
    monkeypatch.setattr(sampler_lib, "InterleavedReference",
                        lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    rows, summaries = {}, {}
    for reference, per_call in ((False, 4), (True, 4), (True, 64)):
        monkeypatch.setattr(sampler_lib, "REFERENCE_SAMPLES", per_call)
        workdir = tmp_path / f"reference_{reference}_{per_call}"
        _write_runs(workdir, names=("a",), steps=(10,))
        made.clear()
        results = runner.evaluate(str(workdir), gen_only, source=_Source().as_source(),
                                  mesh=ONE_DEVICE, passuntil_config=PU, pu_reference=reference,
                                  validation=runner.ValidationConfig(enabled=False))
        rows[reference, per_call] = [(r.run, r.step, r.instance, r.value, r.detail)
                                     for r in R.read_rows(workdir / runner.RESULTS_FILE)]
        summaries[reference, per_call] = (results.summary, list(made))
    assert rows[False, 4] == rows[True, 4] == rows[True, 64]
    off = summaries[False, 4][0]
    spread, made = summaries[True, 4]
    # 4 instances of >= 16 samples each (one batch): (3 + 1) x 4 x 3 = 48 <= 64.
    assert len(made) == 1 and made[0].points == [1, 2, 3] and len(made[0].seconds) == 3
    assert spread.pu_alone_how == "median of 3 calls spread over the unit"
    assert spread.pu_alone_samples == 4 and spread.pu_alone_per_s == pytest.approx(
        4 / float(np.median(made[0].seconds)))
    assert spread.pu_tokens == off.pu_tokens and spread.pu_samples == off.pu_samples
    assert "median of 3 calls spread over the unit" in spread.line()
    # 64 a call would cost more than a third of the unit: the reference after the units.
    after, made = summaries[True, 64]
    assert made == [] and after.pu_alone_how == "best of 2 calls after the units"


def test_interleaved_reference_times_at_its_points_and_keeps_the_units_tokens():
    from lmscale.eval import sampler as sampler_lib
    from lmscale.data.vocab import get_vocabulary

    params = _restore("a", 10, CONFIG)
    sampler = sampler_lib.Sampler(params, CONFIG, get_vocabulary("byte"), num_slots=8,
                                  max_new_tokens=4, stop_strings=("\n",),
                                  max_samples_per_call=64)
    ref = sampler_lib.InterleavedReference(sampler, "say 1:", 100, num_instances=10)
    assert ref.points == [2, 5, 8] and ref.num_samples == 64 and ref.rate == (0.0, 0.0)
    sampler.drawn_tokens = 7
    for done in range(1, 11):
        ref.after(done)
        assert len(ref.seconds) == sum(p <= done for p in ref.points)
    assert sampler.drawn_tokens == 7  # the reference's samples are not the unit's
    again = [sampler.sample("say 1:", 64, seed=s).lengths.mean() for s in (1, 2, 3)]
    rate, length = ref.rate
    assert rate == pytest.approx(64 / np.median(ref.seconds))
    assert length == pytest.approx(float(np.mean(again)))
    assert ref.spent_s >= sum(ref.seconds)


def test_alone_rate_samples_the_requested_count_of_one_prompt():
    from lmscale.eval import sampler as sampler_lib
    from lmscale.data.vocab import get_vocabulary

    params = _restore("a", 10, CONFIG)
    sampler = sampler_lib.Sampler(params, CONFIG, get_vocabulary("byte"), num_slots=8,
                                  max_new_tokens=4, stop_strings=("\n",),
                                  max_samples_per_call=64)
    rate, mean_length = sampler_lib.alone_rate(sampler, "say 1:", num_samples=100, repeats=2)
    # Capped at max_samples_per_call; the last timed call is seed 2.
    again = sampler.sample("say 1:", 64, seed=2)
    assert rate > 0 and mean_length == pytest.approx(float(np.mean(again.lengths)))


def test_pipelined_driver_writes_the_rows_of_the_sequential_one(tmp_path, monkeypatch):
    """One prompt per call: the default driver (`pu_batch.run_pipelined`, the next call
    dispatched before the last is checked) against `run_sequential` through
    `sampler.make_draw`: the same rows, instances finishing at different rounds."""
    from lmscale.eval import pu_batch
    from lmscale.eval import sampler as sampler_lib

    used, real = [], pu_batch.run_pipelined
    monkeypatch.setattr(pu_batch, "run_pipelined",
                        lambda *a, **k: used.append(1) or real(*a, **k))
    gen = [registry.Instance(f"g{i}", f"say {i}:", target=t) for i, t in enumerate("*}C9k")]
    tasks = [registry.EvalTask("stand_in_gen", registry.GENERATIVE, "contains", 0.0, ("\n",),
                               4, loader=lambda split: gen)]
    rows = {}
    for name, factory in (("pipelined", None), ("sequential", sampler_lib.make_draw)):
        workdir = tmp_path / name
        _write_runs(workdir, names=("a",), steps=(10,))
        runner.evaluate(str(workdir), tasks, source=_Source().as_source(), mesh=ONE_DEVICE,
                        passuntil_config=dataclasses.replace(PU, prompts_per_call=1),
                        draw_factory=factory, validation=runner.ValidationConfig(enabled=False))
        rows[name] = R.read_rows(workdir / runner.RESULTS_FILE)
    assert rows["pipelined"] == rows["sequential"] and used == [1]  # the default's unit only
    ks = [r.detail["num_samples"] for r in rows["pipelined"] if r.metric == R.INSTANCE]
    assert len(ks) == 5 and len(set(ks)) > 1 and min(ks) < PU.k_max


def test_first_draw_for_sizes_by_the_targets_own_probability():
    from lmscale.eval import pu_batch

    # r * exp(loss) against the batch: 4 * e^5 = 594 > 512, 4 * e^4.8 = 486 < 512.
    assert pu_batch.first_draw_for(5.0, 4, 512, 1000) == 1000
    assert pu_batch.first_draw_for(4.8, 4, 512, 1000) is None
    assert pu_batch.first_draw_for(50.0, 4, 512, 512) is None  # the cap fits a batch
    assert pu_batch.first_draw_for(float("nan"), 4, 512, 1000) is None


def test_first_draws_past_a_batch_give_the_results_of_batched_draws(tmp_path):
    """`PassUntilJob.first_draw` = the cap (or any size): the pipelined driver makes one
    call of that size first and replays `passuntil.run`'s batches from it, K falling
    inside or past its first batch; results equal those of batch-sized draws."""
    from lmscale.data.vocab import get_vocabulary
    from lmscale.eval import checkers as checkers_lib
    from lmscale.eval import pu_batch
    from lmscale.eval import sampler as sampler_lib

    _write_runs(tmp_path, names=("a",), steps=(10,))
    vocab = get_vocabulary("byte")
    sampler = sampler_lib.Sampler(_restore("a", 10, CONFIG), CONFIG, vocab, num_slots=8,
                                  max_new_tokens=4, stop_strings=("\n",))
    task = registry.EvalTask("stand_in_gen", registry.GENERATIVE, "contains", 0.0, ("\n",), 4,
                             loader=lambda split: [])
    jobs = [pu_batch.PassUntilJob(
        f"g{i}", pu_batch.prompt_ids(vocab, f"say {i}:", 0, 40)[0], seed=i, cap=48,
        checker=checkers_lib.make_checker(task, registry.Instance(f"g{i}", "", target=t)))
        for i, t in enumerate("*}C9ke")]
    calls, real = [], sampler.dispatch

    def dispatch(state, n, seed, start=0, **kw):
        calls.append((seed, n, start))
        return real(state, n, seed, start, **kw)

    sampler.dispatch = dispatch
    plain = list(pu_batch.run_pipelined(sampler, jobs, 2, 16))
    for first in (48, 40, 20):
        calls.clear()
        sized = list(pu_batch.run_pipelined(
            sampler, [dataclasses.replace(j, first_draw=first) for j in jobs], 2, 16))
        assert [res for _, res, _ in sized] == [res for _, res, _ in plain]
        assert all(n == first for seed, n, start in calls if start == 0)
        assert all(n == min(16, 48 - start) for seed, n, start in calls if start > 0)
        for _, res, drawn in sized:
            assert res.num_samples <= drawn <= 48
    ks = [res.num_samples for _, res, _ in plain]
    assert min(ks) <= 16 < max(ks)  # K inside the first batch and past it


def test_exact_match_instances_draw_their_cap_first_where_the_loss_says(tmp_path, monkeypatch):
    """An exact-match task on the random stand-in model: every target is improbable (its
    summed loss ~ 11 nats), so each instance's first call asks its cap; with
    `loss_sized_first_draw=False` it asks a batch; the rows are the same."""
    from lmscale.eval import sampler as sampler_lib

    sizes, real = [], sampler_lib.Sampler.dispatch
    monkeypatch.setattr(sampler_lib.Sampler, "dispatch",
                        lambda self, p, n, seed, start=0, **kw: sizes.append((n, start))
                        or real(self, p, n, seed, start, **kw))
    gen = [registry.Instance(f"g{i}", f"say {i}:", target=t) for i, t in enumerate(["ab", "c"])]
    tasks = [registry.EvalTask("stand_in_exact", registry.GENERATIVE, "exact", 0.0, ("\n",),
                               4, loader=lambda split: gen)]
    rows = {}
    for sized in (True, False):
        workdir = tmp_path / str(sized)
        _write_runs(workdir, names=("a",), steps=(10,))
        sizes.clear()
        runner.evaluate(str(workdir), tasks, source=_Source().as_source(), mesh=ONE_DEVICE,
                        passuntil_config=dataclasses.replace(
                            PU, prompts_per_call=1, loss_sized_first_draw=sized),
                        validation=runner.ValidationConfig(enabled=False))
        rows[sized] = [(r.instance, r.value, r.detail) for r in
                       R.read_rows(workdir / runner.RESULTS_FILE) if r.metric == R.INSTANCE]
        firsts = [n for n, start in sizes if start == 0]
        assert firsts == ([PU.k_max] * 2 if sized else [PU.batch_size] * 2)
        losses = [d[R.ANSWER_LOSS_SUM] for _, _, d in rows[sized]]
        assert min(losses) > np.log(PU.batch_size / PU.r)  # why the cap was drawn first
    assert rows[True] == rows[False]


def test_cap_sized_first_draws_of_several_prompts_fit_one_call(tmp_path):
    """Two exact-match instances with caps of 4,500, two prompts a call: each first draw
    asks its whole cap, above the sampler's default 4,096 samples a call, so the unit's
    sampler is sized to the largest draw; each instance ends at r passes or its cap."""
    gen = [registry.Instance(f"g{i}", f"say {i}:", target=t) for i, t in enumerate(["ab", "c"])]
    tasks = [registry.EvalTask("stand_in_exact", registry.GENERATIVE, "exact", 0.0, ("\n",),
                               4, loader=lambda split: gen)]
    _write_runs(tmp_path, names=("a",), steps=(10,))
    runner.evaluate(str(tmp_path), tasks, source=_Source().as_source(), mesh=ONE_DEVICE,
                    passuntil_config=dataclasses.replace(PU, prompts_per_call=2),
                    passuntil_caps={"stand_in_exact": {"g0": 4500, "g1": 4500}},
                    validation=runner.ValidationConfig(enabled=False))
    got = [r.detail for r in R.read_rows(tmp_path / runner.RESULTS_FILE)
           if r.metric == R.INSTANCE]
    assert len(got) == 2
    for d in got:
        assert d["k_max"] == 4500
        assert (d["capped"] and d["num_samples"] == 4500) or (
            not d["capped"] and d["num_passes"] == PU.r and d["num_samples"] <= 4500)
