"""Tests of the report's greedy exact-match section (lmscale.report.greedy)."""

import pytest

from lmscale.eval import greedy_stats
from lmscale.eval import results as R
from lmscale.report import greedy as G
from lmscale.report import markdown


def _row(run, step, n, task, metric, value, detail=None):
    point = R.RunPoint(run=run, step=step, tokens=step * 10, num_params=2 * n,
                       num_params_non_embedding=n, num_tokens=1000, flops=1.0)
    return R.ResultRow.make(point, task, metric, value, detail=detail)


def _rows():
    out = []
    for run, n, passed in (("big", 200, (7, 9)), ("small", 100, (1, 3))):
        for step, k in zip((50, 100), passed):
            out.append(_row(run, step, n, R.greedy_task("qa"), R.GREEDY_EXACT_MATCH, k / 20,
                            greedy_stats.summarize([True] * k + [False] * (20 - k))))
            out.append(_row(run, step, n, "qa", R.PASSUNTIL, k / 40))
    out.append(_row("small", 100, 100, "other", R.PASSUNTIL, 0.5))  # not a greedy task
    return out


def test_points_pair_greedy_with_passuntil_and_recompute_intervals():
    got = G.analyze(_rows(), ["qa", "absent"], level=0.8)
    assert got["tasks"]["absent"] == []
    points = got["tasks"]["qa"]
    assert [(p["run"], p["step"], p["final"]) for p in points] == [
        ("small", 50, False), ("small", 100, True), ("big", 50, False), ("big", 100, True)]
    final_small = points[1]
    assert final_small["exact_match"] == pytest.approx(3 / 20)
    assert final_small["num_passed"] == 3 and final_small["num_instances"] == 20
    assert final_small["passuntil"] == pytest.approx(3 / 40)
    # At the study's level (0.8), not the evaluator's 0.95.
    assert final_small["interval"] == pytest.approx(
        list(greedy_stats.binomial_interval(3, 20, 0.8)))
    assert final_small["interval"][1] < greedy_stats.binomial_interval(3, 20, 0.95)[1]


def test_section_lists_final_checkpoints_beside_passuntil():
    lines = G.section(G.analyze(_rows(), ["qa"], level=0.9))
    text = "\n".join(lines)
    assert "## Greedy exact match" in text and "90% Clopper-Pearson" in text
    lo, hi = greedy_stats.binomial_interval(9, 20, 0.9)
    assert f"| big | 200 | 100 | 0.45 [{lo:.4g}, {hi:.4g}] | 9 / 20 | 0.225 |" in lines
    assert not any("| 50 |" in line for line in lines)  # intermediate steps: JSON only
    assert G.section(None) == [] and G.section({"tasks": {}}) == []


def test_markdown_report_shows_the_greedy_section():
    analysis = {"held_out": 1, "predictions": [], "rungs": [], "tasks": {},
                "loss_law": {"error": "none"}, "greedy": G.analyze(_rows(), ["qa"])}
    text = markdown.render(analysis, {}, title="t", setup={})
    assert "### qa (greedy)" in text and "| small | 100 | 100 | 0.15 [" in text
