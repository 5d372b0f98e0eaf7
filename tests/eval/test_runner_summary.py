"""`EvalSummary`'s PassUntil rates: compile seconds excluded from one, kept in the other."""

from lmscale.eval.runner import EvalSummary


def test_samples_per_s_excludes_compile_and_wall_rate_keeps_it():
    s = EvalSummary(units_run=1, units_skipped=0, wall_s=20.0, compile_s=6.0, programs=3,
                    cache_hits=0, cache_misses=3, pu_samples=1000, pu_sample_s=10.0,
                    pu_compile_s=5.0)
    assert s.samples_per_s == 200.0 and s.wall_samples_per_s == 100.0
    line = s.line()
    assert "at 200 samples/s excluding 5.0 s compiling (100 wall" in line
    assert EvalSummary(1, 0, 1.0, 0.0, 0, 0, 0, 0, 0.0).samples_per_s == 0.0
