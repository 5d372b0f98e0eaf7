"""`EvalSummary`'s PassUntil rates: compile seconds excluded from one, kept in the other."""

import pytest

from lmscale.eval.runner import EvalSummary


def test_samples_per_s_excludes_compile_and_wall_rate_keeps_it():
    s = EvalSummary(units_run=1, units_skipped=0, wall_s=20.0, compile_s=6.0, programs=3,
                    cache_hits=0, cache_misses=3, pu_samples=1000, pu_sample_s=10.0,
                    pu_compile_s=5.0)
    assert s.samples_per_s == 200.0 and s.wall_samples_per_s == 100.0
    line = s.line()
    assert "at 200 samples/s excluding 5.0 s compiling (100 wall" in line
    assert EvalSummary(1, 0, 1.0, 0.0, 0, 0, 0, 0, 0.0).samples_per_s == 0.0


def test_the_study_line_sums_the_evaluator_calls_with_the_same_rate_definition():
    from lmscale.report import study  # pylint: disable=import-outside-toplevel
    calls = [EvalSummary(units_run=3, units_skipped=0, wall_s=40.0, compile_s=10.0,
                                programs=4, cache_hits=1, cache_misses=3, pu_samples=6000,
                                pu_sample_s=4.0, pu_compile_s=1.0),
             EvalSummary(units_run=2, units_skipped=1, wall_s=20.0, compile_s=5.0,
                                programs=2, cache_hits=0, cache_misses=2, pu_samples=2000,
                                pu_sample_s=2.0, pu_compile_s=1.0)]
    line = study.evaluation_summary(calls)
    # 8,000 samples in 6 s of drivers less 2 s compiling: 2,000/s; 1,333/s on the wall clock
    assert "5 units in 60 s, compile 15 s (25%), 1 persistent-cache hits" in line
    assert "8000 samples at 2000 samples/s excluding 2.0 s compiling (1333 wall" in line


def test_the_study_reference_weights_each_rung_by_its_work_and_is_all_or_nothing():
    from lmscale.report import study  # pylint: disable=import-outside-toplevel

    def call(samples, run_s, alone, tokens=0, alone_length=0.0):
        return EvalSummary(units_run=1, units_skipped=0, wall_s=run_s + 1.0, compile_s=1.0,
                           programs=1, cache_hits=0, cache_misses=1, pu_samples=samples,
                           pu_sample_s=run_s, pu_compile_s=0.0, pu_alone_per_s=alone,
                           pu_alone_length=alone_length, pu_tokens=tokens,
                           pu_alone_samples=4096)
    # Samples only. Rung a: 6,000 samples in 3 s (2,000/s) against 3,000/s alone; rung b:
    # 2,000 in 2 s against 2,000/s. Alone the work takes 2 s + 1 s = 3 s, the study 5 s.
    rungs = {"a": call(6000, 3.0, 3000.0), "b": call(2000, 2.0, 2000.0)}
    line = study.evaluation_summary(list(rungs.values()))
    assert "1600 samples/s" in line and ", 60% of the sampler alone on the same shapes " \
        "(alone: 2667 samples/s, 4096 per call" in line, line
    assert study.passuntil_rates(rungs) == ("a 2,000 samples/s vs 3,000 samples/s alone "
                                            "(67%), b 1,000 samples/s vs 2,000 samples/s "
                                            "alone (50%)")
    # Tokens counted, each sample's first one (no decode step) left out. a: 24,000 tokens
    # of 6,000 samples, 18,000 decode tokens in 3 s (6,000/s), against 3,000 samples/s of
    # length 5 alone (12,000 decode tokens/s: 1.5 s for a's work); b: 2,000 decode tokens
    # in 2 s (1,000/s) against 2,000 x (3 - 1) (0.5 s). Alone 2 s of the study's 5 s: 40%.
    # By generated tokens a would read 53%, by samples 67%: its reference prompt's
    # completions are shorter than the unit's, and their free first tokens count more.
    rungs = {"a": call(6000, 3.0, 3000.0, 24000, 5.0), "b": call(2000, 2.0, 2000.0, 4000, 3.0)}
    assert rungs["a"].alone_share == pytest.approx(6000 / 12000)
    assert rungs["a"].decode_tokens_per_s == 6000 and rungs["b"].alone_share == 0.25
    line = study.evaluation_summary(list(rungs.values()))
    assert ", 40% of the sampler alone on the same shapes by decode tokens/s (4000 vs " \
        "10000; the tokens after each sample's first, which needs no decode step)" in line, line
    assert study.passuntil_rates(rungs) == (
        "a 2,000 samples/s = 6,000 decode tokens/s vs 12,000 alone (50%), b 1,000 "
        "samples/s = 1,000 decode tokens/s vs 4,000 alone (25%)")
    # One rung without a reference: no study-wide share (it would compare unlike work).
    rungs["c"] = call(1000, 1.0, 0.0)
    assert "sampler alone" not in study.evaluation_summary(list(rungs.values()))
    assert study.passuntil_rates({"c": rungs["c"]}) is None
