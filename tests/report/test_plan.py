"""Tests of lmscale.report.plan: FLOP, memory and PassUntil-budget arithmetic against hand
computations, the capped negative-binomial mean against Monte Carlo, warnings, printing."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from lmscale.models import families
from lmscale.models.config import ModelConfig
from lmscale.report import plan as plan_lib
from lmscale.report import study as study_lib
from lmscale.report.plan import core, costs

# Shape A: the default study's w32 (byte vocabulary, 2 layers, 2 heads of 16, d_ff 80).
W32 = ModelConfig(vocab_size=259, d_model=32, n_layers=2, n_heads=2, head_dim=16, d_ff=80,
                  mlp="gated", norm="rms", tie_embeddings=True, max_seq_len=128, name="w32")


def test_shape_a_counts_flops_and_memory_by_hand():
    # attention 4 * 32 * 32 = 4096; gated MLP 3 * 32 * 80 = 7680; two RMSNorm gains 64;
    # block 11840; 2 blocks + final norm 32 -> N = 23712; embedding 259 * 32 = 8288.
    rung = core.Rung("w32", W32, seq_len=128, batch_size=8, num_steps=209)
    rp = core.rung_plan(rung, [], core.Mesh(1, 1, 1, compute_bytes=4))
    assert rp.n_non_embedding == 23712 and rp.n_total == 23712 + 8288
    d = 209 * 8 * 128  # 214016 tokens
    assert rp.flops_6nd == 6 * 23712 * d
    # forward per token: 2 (N + V d) = 2 * 32000 = 64000; attention at mean context T/2:
    # 4 * L * 64 * (2 * 16) = 2 * 2 * 128 * 32 = 16384; training 3x.
    assert rp.flops_model == 3 * (64000 + 16384) * d
    assert rp.flops_model == W32.flops_per_token(128) * d
    # float32 params 32000 * 4; AdamW two moments; gradients.
    assert rp.train_memory["params"] == 128000
    assert rp.train_memory["optimizer"] == 256000
    assert rp.train_memory["gradients"] == 128000
    # per layer per token: 4 bytes * (4*32 + 2*(2+2)*16 + 4*80) = 2304, softmax 4*2*128 =
    # 1024 -> 3328; per token 2 * 3328 + logits and grad 8 * 259 = 8728; 8 rows x 128.
    assert rp.train_memory["activations"] == 8 * 128 * (2 * (4 * 576 + 1024) + 8 * 259)
    # sampler cache: 2 layers x (k, v) x 256 slots x 48 tokens x 2 kv heads x 16 x 4 bytes.
    assert costs.kv_cache_bytes(W32, 256, 48, 4) == 2 * 2 * 256 * 48 * 2 * 16 * 4 == 6 * 2**20


def test_shape_b_hu2023_i3_sharded_by_hand():
    model = families.hu2023(3)  # 8 heads of 64, d 512, 12 layers, d_ff 1280, V 32000
    # block: attention 4 * 512^2 = 1048576, MLP 3 * 512 * 1280 = 1966080, norms 1024.
    n = 12 * (1048576 + 1966080 + 1024) + 512
    assert n == 36188672
    rung = core.Rung("i3", model, seq_len=4096, batch_size=64, num_steps=100)
    mesh = core.Mesh(data=2, fsdp=4, tensor=2, compute_bytes=2)
    rp = core.rung_plan(rung, [], mesh)
    d = 100 * 64 * 4096
    assert rp.flops_6nd == 6 * n * d
    fwd = 2 * (n + 32000 * 512) + 2 * 12 * 4096 * 8 * 64  # 105145344 + 50331648
    assert fwd == 155476992
    assert rp.flops_model == 3 * fwd * d
    # fsdp 4 divides d 512, tensor 2 divides heads / d_ff / vocab: 8-way sharded.
    assert rp.train_memory["params"] == 4 * (n + 32000 * 512) / 8 == 26286336
    # 64 rows / (data 2 x fsdp 4) = 8 rows; per layer per token, bf16 and tensor 2:
    # 2 * (4*512 + 2*(8+8)*64/2 + 4*1280/2) + 4 * 8 * 4096 / 2 = 11264 + 65536 = 76800;
    # per token 12 * 76800 + 8 * 32000 / 2 = 1049600.
    assert rp.train_memory["activations"] == 8 * 4096 * 1049600 == 34393292800


def test_memory_error_when_a_rung_does_not_fit():
    rung = core.Rung("i3", families.hu2023(3), seq_len=4096, batch_size=64, num_steps=400)
    plan = core.build_plan("t", [rung], [], core.Mesh(2, 4, 2, 2),
                           core.Device(bytes_limit=16 * 2**30, bytes_source="stated"))
    assert any("does not fit" in e and "i3" in e for e in plan.errors)
    roomy = core.build_plan("t", [rung], [], core.Mesh(2, 4, 2, 2),
                            core.Device(bytes_limit=80 * 2**30, bytes_source="stated"))
    assert not roomy.errors


@pytest.mark.parametrize("p,r,k_max", [(0.01, 4, 300), (0.002, 2, 1000), (0.3, 4, 20)])
def test_capped_negative_binomial_mean_against_monte_carlo(p, r, k_max):
    rng = np.random.default_rng(0)
    k = r + rng.negative_binomial(r, p, size=400_000)  # draws until the r-th pass
    capped = np.minimum(k, k_max)
    exact = costs.expected_capped_samples(p, r, k_max)[0]
    assert abs(exact - capped.mean()) < 4 * capped.std() / np.sqrt(k.size)
    # and the tail-sum identity E[min(K, m)] = sum_{s<m} P(Bin(s, p) <= r - 1)
    from scipy import stats
    assert exact == pytest.approx(stats.binom.cdf(r - 1, np.arange(k_max), p).sum(), rel=1e-9)
    assert costs.capped_probability(p, r, k_max)[0] == pytest.approx(np.mean(k > k_max),
                                                                      abs=3e-3)
    # batched draws: whole batches of 64 until the r-th pass, the last one shortened.
    drawn = np.minimum(-(-k // 64) * 64, k_max)
    assert costs.expected_drawn_samples(p, r, k_max, 64)[0] == pytest.approx(
        drawn.mean(), abs=4 * drawn.std() / np.sqrt(k.size))


def test_capped_mean_limits():
    assert costs.expected_capped_samples(0.0, 4, 1000)[0] == 1000
    assert costs.expected_capped_samples(1.0, 4, 1000)[0] == pytest.approx(4)
    assert costs.expected_capped_samples(0.5, 3, 10**6)[0] == pytest.approx(6)  # r / p


def _pu_task(prior, k_max=1000):
    return core.Task("gen", core.PASSUNTIL, instances=24, scored_tokens=100.0,
                     prompt_tokens=80.0, generated_tokens=48, r=4, k_max=k_max,
                     k_max_intermediate=50, draw_batch=512, num_slots=256,
                     prior_pu={core.ALL_RUNGS: prior})


def test_passuntil_worst_case_and_budget_warning():
    rung = core.Rung("w32", W32, seq_len=128, batch_size=8, num_steps=400, checkpoints=3)
    plan = core.build_plan("t", [rung], [_pu_task([1e-4])], core.Mesh(),
                           core.Device(bytes_limit=2**30, bytes_source="stated"))
    work = plan.rungs[0].evals[0]
    assert work.samples_worst == 24 * (1000 + 50 + 50)
    assert work.decode_tokens_worst == 24 * 1100 * 48
    per_token = 2 * 32000 + 4 * 2 * (80 + 24) * 32  # context prompt + generated / 2
    assert work.flops_worst == pytest.approx(24 * 3 * 100 * (64000 + 4 * 2 * 50 * 32)
                                             + 24 * 1100 * 48 * per_token)
    assert work.unmeasurable_share == 1.0  # r / PU = 40000 > 1000 for every instance
    assert any("budget too small" in w and "every rung" in w for w in plan.warnings)
    easy = core.build_plan("t", [rung], [_pu_task([0.2])], core.Mesh(),
                           core.Device(bytes_limit=2**30, bytes_source="stated"))
    assert not any("budget too small" in w for w in easy.warnings)
    # an easy instance still costs one whole draw batch of 512 on the final checkpoint
    assert easy.rungs[0].evals[0].samples_expected == pytest.approx(24 * (512 + 50 + 50),
                                                                    rel=1e-6)


def test_step_and_multiplier_warnings():
    rung = core.Rung("w32", W32, seq_len=128, batch_size=8, num_steps=60, warmup_steps=3,
                     token_multiplier=9.0)
    th = core.Thresholds(fitted_token_multipliers=(20.0, 640.0))
    plan = core.build_plan("t", [rung], [], core.Mesh(), core.Device(), th)
    assert any("60 steps" in w for w in plan.warnings)
    assert any("M=9 outside" in w for w in plan.warnings)


def test_eval_fraction_warning_and_json():
    rung = core.Rung("w32", W32, seq_len=128, batch_size=8, num_steps=200, checkpoints=3)
    plan = core.build_plan("t", [rung], [_pu_task([1e-4], k_max=100_000)])
    assert any("x training" in w for w in plan.warnings)
    data = json.loads(json.dumps(plan_lib.plan_to_json(plan)))
    assert data["totals"]["eval_flops_worst"] > data["totals"]["train_flops_model"]
    assert data["rungs"][0]["n_non_embedding"] == 23712


def test_default_study_dry_run_prints_the_plan():
    import gin
    try:
        configs = study_lib.load_gin(["experiments/default.gin"], search_path=".")
        text = plan_lib.dry_run(configs["study_config"], configs["optimizer"],
                                configs["mesh_config"], use_jax=False,
                                prior_pu={"py_identifier_tail:n120:c96":
                                          {core.ALL_RUNGS: [1e-4]}})
    finally:
        gin.clear_config()
    for name in ("w32", "w96", "py_identifier_mc:n200:c96", "validation", "Totals"):
        assert name in text
    assert "py_identifier_tail:n120:c96: PassUntil budget too small" in text.replace(
        "task ", "")


def test_default_study_plan_counts_the_evaluators_programs_and_batches():
    import gin

    from lmscale.report.plan import evaltime
    try:
        configs = study_lib.load_gin(["experiments/default.gin"], search_path=".")
        plan = plan_lib.plan_study_config(configs["study_config"], use_jax=False)
    finally:
        gin.clear_config()
    tasks = {t.name: t for t in plan.tasks}
    mc, pu = tasks["py_identifier_mc:n200:c96"], tasks["py_identifier_tail:n120:c96"]
    # The evaluator's default batching (runner.score_batch): a task's questions in one
    # call up to 32,768 row tokens = 256 rows of 128: one scorer call per task.
    assert len(mc.score_shapes) == 1 and len(pu.score_shapes) == 1
    # four choices per question, one answer (padded to 2) per PassUntil instance
    assert {s[1] for s in mc.score_shapes} == {4} and {s[1] for s in pu.score_shapes} == {2}
    assert len(evaltime.scorer_shapes(plan.tasks)) == 2
    # An explicit batch of 8 (the evaluate binary's evaluate.gin): 25 calls, 16 shapes
    # (contexts bucketed without bos, which the scorer now reads as a one-row prefix).
    from lmscale.data import registry
    from lmscale.data.vocab import get_vocabulary
    from lmscale.eval import scorer
    from lmscale.report.plan import adapter
    vocab = get_vocabulary("byte")
    questions = [scorer.encode_question(vocab, i.id, i.prompt, i.choices, i.gold) for i in
                 registry.get_eval_task("py_identifier_mc:n200:c96").instances(split="test")]
    eights = adapter.score_shapes(plan.rungs[0].rung.model, questions, 8)
    assert len(eights) == 25 and len(set(eights)) == 16
    # validation: the 377 KB held-out split in batches of 64 rows x 128 bytes
    val = tasks["validation"]
    assert val.batches == -(-int(val.scored_tokens) // (64 * 128)) and 40 <= val.batches <= 50


def test_probe_fills_wall_times_from_real_steps(capsys):
    from lmscale.eval import runner
    from lmscale.report.plan import evalprobe, probe
    from lmscale.train.state import MeshConfig

    tiny = W32.replace(d_model=16, n_heads=1, n_kv_heads=1, d_ff=40, name="w16")
    rung = core.Rung("w16", tiny, seq_len=32, batch_size=8, num_steps=50, checkpoints=2)
    pu = runner.PassUntilConfig(r=2, k_max=8, batch_size=4, num_slots=4)
    validation = runner.ValidationConfig(batch_size=2, max_batches=2)
    from lmscale.report.plan import adapter
    tasks = [adapter.validation_task("lmscale_stdlib_py", "byte", validation, 32),
             adapter.task_from_registry("py_identifier_mc:n8:c48", "byte", None, pu,
                                                 4, None, model=tiny),
             adapter.task_from_registry("py_identifier_tail:n2:c48", "byte", None,
                                                 pu, 4, None, model=tiny)]
    plan = core.build_plan("t", [rung], tasks, core.Mesh(1, 1, 1, 4),
                           core.Device(peak_flops=1e12))
    setup = evalprobe.EvalSetup(
        mc_tasks=("py_identifier_mc:n8:c48",), passuntil_tasks=("py_identifier_tail:n2:c48",),
        passuntil=pu, intermediate_passuntil=dataclasses.replace(pu, k_max=4),
        validation=validation, corpus="lmscale_stdlib_py", vocab_spec="byte")
    capsys.readouterr()
    probe.time_plan(plan, mesh_config=MeshConfig(), steps=1, evaluation=setup)
    console = capsys.readouterr().err
    # one line for the probe's stage; the evaluator it runs draws none (logs.muted)
    assert "probe 1/1 parts" in console and "evaluate " not in console
    rp = plan.rungs[0]
    # compilation is paid once per run, the steps 50 times
    assert rp.measured["step_s"] > 0 and rp.measured["compile_s"] > 0
    assert rp.train_seconds == pytest.approx(
        rp.measured["compile_s"] + 50 * rp.measured["step_s"])
    # the evaluator ran on the stand-in: both sampler paths timed, samples drawn
    rates = rp.measured["eval_rates"]
    name = "py_identifier_tail:n2:c48"
    assert set(rates["sample_s"][name]) == {"final", "intermediate"}
    assert rates["sample_s"][name]["final"] > 0 and rates["score_compile_s"] > 0
    assert 1 <= rates["sample_tokens"][name] <= 12
    # worst case (no prior): 2 instances x (8 final + 4 intermediate) samples, each at the
    # measured time per sample scaled to the expected completion length
    length = tasks[2].expected_generated_tokens / rates["sample_tokens"][name]
    floor = 2 * length * (8 * rates["sample_s"][name]["final"]
                          + 4 * rates["sample_s"][name]["intermediate"])
    assert rp.eval_breakdown["passuntil_s"] >= floor > 0
    assert rp.eval_seconds == pytest.approx(sum(
        rp.eval_breakdown[k] for k in ("compile_s", "validation_s", "scoring_s",
                                       "passuntil_s")))
    assert plan.probe_seconds > 0
    assert "%" in plan_lib.format_plan(plan).split("Memory")[0]  # MFU printed


def _rates():
    from lmscale.report.plan import evaltime

    task = "gen"
    return evaltime.EvalRates(
        validation_compile_s=3.0, validation_fixed_s=0.5, validation_batch_s=0.1,
        score_compile_s=2.0, score_batch_s=0.01, score_fixed_s=0.2,
        sampler_compile_s={task: {"final": 4.0, "intermediate": 5.0}},
        sample_s={task: {"final": 1e-3, "intermediate": 2e-3}}, sample_tokens={task: 5.0},
        instance_s={task: {"final": 0.02, "intermediate": 0.01}})


def _eval_tasks(instances=10):
    mc_shapes = ((80, 4, 32),) * 3 + ((96, 4, 48),) * 2
    return [core.Task("validation", core.VALIDATION, scored_tokens=1e5, batches=40),
            core.Task("mc", core.MULTIPLE_CHOICE, instances=40, scored_tokens=100.0,
                      score_shapes=mc_shapes),
            core.Task("gen", core.PASSUNTIL, instances=instances, scored_tokens=90.0,
                      prompt_tokens=86.0, generated_tokens=12, r=2, k_max=100,
                      k_max_intermediate=10, draw_batch=50, num_slots=50,
                      score_shapes=((96, 2, 8), (80, 4, 32)))]


def test_evaluation_estimate_by_hand():
    from lmscale.report.plan import evaltime

    rung = core.Rung("w32", W32, seq_len=128, batch_size=8, num_steps=100, checkpoints=3)
    got = evaltime.evaluation_seconds(rung, _eval_tasks(), _rates())
    # compile: validation 3 + distinct scorer shapes {(80,4,32), (96,4,48), (96,2,8)} x 2
    # (the PassUntil answers share (80,4,32) with the choices) + sampler 4 + 5
    assert got["compile_s"] == pytest.approx(3 + 3 * 2 + 4 + 5)
    # validation: 3 checkpoints x (0.5 + 40 x 0.1); scoring: 3 x (0.2 + 5 batches x 0.01)
    assert got["validation_s"] == pytest.approx(3 * (0.5 + 4.0))
    assert got["scoring_s"] == pytest.approx(3 * (0.2 + 5 * 0.01))
    # PassUntil, worst case: final 10 instances x 100 samples, 2 intermediate checkpoints
    # x 10 x 10; a sample costs its time x expected length (90 - 86 + 1 = 5) / probe's 5
    pu = (10 * 0.02 + 1000 * 1e-3) + (2 * 10 * 0.01 + 200 * 2e-3)
    assert got["passuntil_s"] == pytest.approx(pu)
    assert got["total_s"] == pytest.approx(sum(got[k] for k in (
        "compile_s", "validation_s", "scoring_s", "passuntil_s")))


def test_evaluation_estimate_scales_runs_with_work_and_compiles_once_per_shape():
    from lmscale.report.plan import evaltime

    rung = core.Rung("w32", W32, seq_len=128, batch_size=8, num_steps=100, checkpoints=3)
    base = evaltime.evaluation_seconds(rung, _eval_tasks(), _rates())
    run = lambda e: e["total_s"] - e["compile_s"]  # noqa: E731
    # twice the seeds: every run term doubles, the compiles (one process) do not
    seeds = evaltime.evaluation_seconds(dataclasses.replace(rung, seeds=2), _eval_tasks(),
                                        _rates())
    assert seeds["compile_s"] == pytest.approx(base["compile_s"])
    assert run(seeds) == pytest.approx(2 * run(base))
    # more checkpoints: validation and scoring grow with them, compiles do not
    more = evaltime.evaluation_seconds(dataclasses.replace(rung, checkpoints=6), _eval_tasks(),
                                       _rates())
    assert more["compile_s"] == base["compile_s"]
    assert more["validation_s"] == pytest.approx(2 * base["validation_s"])
    # twice the PassUntil instances: twice its samples and instance costs
    wide = evaltime.evaluation_seconds(rung, _eval_tasks(instances=20), _rates())
    assert wide["passuntil_s"] == pytest.approx(2 * base["passuntil_s"])
    # one checkpoint: the intermediate path is neither compiled nor run
    final = evaltime.evaluation_seconds(dataclasses.replace(rung, checkpoints=1),
                                        _eval_tasks(), _rates())
    assert final["compile_s"] == pytest.approx(base["compile_s"] - 5.0)
    # repeated shapes compile once: five MC batches of two shapes are two programs
    assert evaltime.scorer_shapes(_eval_tasks()[1:2]) == {(80, 4, 32), (96, 4, 48)}
    # a prior PU lowers the expected samples below the caps
    prior = [dataclasses.replace(t, prior_pu={core.ALL_RUNGS: [0.5]}) if t.kind ==
             core.PASSUNTIL else t for t in _eval_tasks()]
    expected = evaltime.passuntil_samples(prior[2], rung)
    # final: PU 0.5, r 2: the first draw batch of 50 holds both passes almost surely;
    # intermediate: its cap 10 is below one draw batch, so all 10 are always drawn
    assert expected["final"] == pytest.approx(10 * 50)
    assert expected["intermediate"] == pytest.approx(2 * 10 * 10)
    assert evaltime.evaluation_seconds(rung, prior, _rates())["passuntil_s"] < base[
        "passuntil_s"]


def test_scorer_batch_shapes_are_the_shapes_it_calls():
    import jax

    from lmscale.data.vocab import get_vocabulary
    from lmscale.eval import scorer
    from lmscale.models.decoder import init_params

    tiny = W32.replace(d_model=16, n_heads=1, n_kv_heads=1, d_ff=40, max_seq_len=64)
    vocab = get_vocabulary("byte")
    questions = [scorer.encode_question(vocab, str(i), "x" * (3 + 7 * i), [" a" * (1 + i % 3),
                                                                          " b"], 0)
                 for i in range(11)]
    params = init_params(tiny, jax.random.PRNGKey(0))
    s = scorer.Scorer(tiny, params, batch_questions=4)
    seen = []
    fn = s._fn
    s._fn = lambda p, ctx, ctx_len, tokens, *rest, window: (  # noqa: E731
        seen.append((ctx.shape[1], rest[-1].size, tokens.shape[1], window)) or fn(
            p, ctx, ctx_len, tokens, *rest, window=window))
    s.score(questions)
    assert seen == scorer.Scorer(tiny, None, batch_questions=4).batch_shapes(questions)
    assert len(seen) == 3 and len(set(seen)) > 1
    assert sorted(i for g in s.batch_indices(questions) for i in g) == list(range(11))


def test_expected_completion_length_is_answer_plus_stop_capped():
    task = core.Task("gen", core.PASSUNTIL, instances=2, scored_tokens=20.0,
                     prompt_tokens=14.0, generated_tokens=48)
    assert task.expected_generated_tokens == 7.0  # 6 answer tokens + the stop
    long = dataclasses.replace(task, generated_tokens=4)
    assert long.expected_generated_tokens == 4.0
    unknown = dataclasses.replace(task, scored_tokens=None)
    assert unknown.expected_generated_tokens == 48.0


def test_plan_vs_measured_rows_and_report_section():
    from lmscale.report import markdown
    from lmscale.report.plan import render

    small = W32.replace(d_model=16, n_heads=1, n_kv_heads=1, d_ff=40, name="w16")
    rungs = [core.Rung("w16", small, seq_len=32, batch_size=8, num_steps=50),
             core.Rung("w32", W32, seq_len=32, batch_size=8, num_steps=50)]
    task = core.Task("validation", core.VALIDATION, scored_tokens=1000.0)
    plan = core.build_plan("t", rungs, [task])
    plan.rungs[0].train_seconds, plan.rungs[1].train_seconds = 10.0, 30.0
    plan.rungs[0].eval_seconds, plan.rungs[1].eval_seconds = 4.0, 6.0
    saved = json.loads(json.dumps(render.plan_to_json(plan)))
    rows = render.plan_vs_measured(saved, {"train": {"w16": 12.0, "w32": 27.0},
                                           "evaluate": {"w16": 5.0}})
    by = {(r["stage"], r["rung"]): r for r in rows}
    assert by[("train", "w16")]["ratio"] == pytest.approx(1.2)
    assert by[("train", "(all)")]["estimated_s"] == 40.0
    assert by[("train", "(all)")]["ratio"] == pytest.approx(39.0 / 40.0)
    assert by[("train", "w32")]["flops"] == plan.rungs[1].flops_model
    assert by[("evaluate", "w32")]["measured_s"] is None  # not measured: no ratio
    assert by[("evaluate", "w32")]["ratio"] is None
    assert by[("evaluate", "(all)")]["measured_s"] is None
    text = "\n".join(markdown.plan_section(rows))
    assert "## Plan vs measured" in text and "| train | w16 |" in text and "1.20" in text
    assert markdown.plan_section(None) == []
    fit = by[("fit/report", "(all)")]  # no probe: no estimate, not measured
    assert fit["estimated_s"] is None and fit["measured_s"] is None
    saved["report_seconds"] = 20.0
    rows = render.plan_vs_measured(saved, {"report": {"(all)": 26.0}})
    assert rows[-1]["stage"] == "fit/report" and rows[-1]["ratio"] == pytest.approx(1.3)
    assert "| fit/report | (all) | - | 20 | 26 | 1.30 |" in "\n".join(
        markdown.plan_section(rows))


def test_stages_file_keeps_fit_report_seconds(tmp_path):
    from lmscale.report import stages

    stages._save_stages(tmp_path, {"a": 3.0})
    assert stages._fit_report_seconds(tmp_path) is None
    stages._save_stages(tmp_path, {"a": 3.0}, 21.5)
    assert stages._eval_seconds(tmp_path) == {"a": 3.0}
    assert stages._fit_report_seconds(tmp_path) == 21.5


@pytest.mark.slow
def test_run_overhead_is_the_real_loop_less_its_steps_and_compile(tmp_path, monkeypatch):
    from lmscale.report.plan import probe
    from lmscale.testing import tiny_config
    from lmscale.train import loop as loop_lib
    from lmscale.train.spec import RunSpec
    from lmscale.train.state import MeshConfig

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    spec = RunSpec(model=tiny_config(vocab_size=259, max_seq_len=64), seq_len=32,
                   batch_size=8, num_tokens=8 * 32 * 200, name="tiny")
    calls = []
    real = loop_lib.train
    monkeypatch.setattr(loop_lib, "train", lambda s, *a, **k: calls.append(s) or real(
        s, *a, **k))
    loop = loop_lib.LoopConfig(noise_scale=False, eval_batches=1)
    whole = probe.time_run_overhead(spec, None, MeshConfig(), loop, 0.0, 0.0)
    # the real loop ran, cut to a few steps, and left nothing behind
    (short,) = calls
    assert short.num_steps == probe.OVERHEAD_STEPS and short.model == spec.model
    assert whole > 0
    assert not list(tmp_path.glob("lmscale_probe_run_*"))


def test_greedy_and_beam_units_are_counted_by_hand():
    from lmscale.report.plan import evaltime

    rung = core.Rung("w32", W32, seq_len=128, batch_size=8, num_steps=400, checkpoints=3)
    gen = _pu_task([0.2])
    greedy = dataclasses.replace(gen, name="gen (greedy)", kind=core.DECODE, decodes=1,
                                 prior_pu=None)
    beam = dataclasses.replace(gen, name="gen (beam 4)", kind=core.DECODE, decodes=4,
                               final_only=True, prior_pu=None)
    plan = core.build_plan("t", [rung], [greedy, beam], core.Mesh(),
                           core.Device(bytes_limit=2**30, bytes_source="stated"))
    g, b = plan.rungs[0].evals
    per_token = 2 * 32000 + 4 * 2 * (80 + 24) * 32  # context prompt + generated / 2
    # greedy: one sequence per instance on each of 3 checkpoints, no scoring pass
    assert (g.samples_worst, g.samples_expected) == (24 * 3, 24 * 3)
    assert g.flops_worst == g.flops_expected == pytest.approx(24 * 3 * 48 * per_token)
    # beam 4: four sequences per instance on the final checkpoint only
    assert b.checkpoints == 1 and b.samples_worst == 24 * 4
    assert b.flops_worst == pytest.approx(24 * 4 * 48 * per_token)
    assert "gen (beam 4)" in plan_lib.format_plan(plan)
    # time: per generated token at the PassUntil probe's final-path rate (1e-3 s a sample
    # of 5 tokens), times the expected completion (100 - 80 + 1 = 21 tokens)
    got = evaltime.evaluation_seconds(rung, [greedy, beam], _rates())
    assert got["passuntil_s"] == pytest.approx((24 * 3 + 24 * 4) * 21 * 1e-3 / 5)
    assert got["compile_s"] == 0.0  # its sampler programs are the PassUntil task's


def test_study_plan_lists_its_greedy_and_beam_units():
    import gin
    try:
        configs = study_lib.load_gin(["experiments/default.gin"], search_path=".")
        task = "py_identifier_tail:n120:c96"
        config = dataclasses.replace(configs["study_config"], greedy_tasks=(task,),
                                     beam_sizes=(2,))
        plan = plan_lib.plan_study_config(config, configs["optimizer"], use_jax=False)
    finally:
        gin.clear_config()
    evals = {e.task: e for e in plan.rungs[0].evals}
    pu = evals[task]
    # every PassUntil instance, once per evaluated checkpoint greedily, 2 beams at the final
    assert evals[f"{task} (greedy)"].samples_worst == pu.checkpoints * 120
    assert evals[f"{task} (beam 2)"].samples_worst == 2 * 120
