"""Tests of lmscale.eval.results: row schema, JSONL durability and resume bookkeeping."""

import json

import pytest

from lmscale.eval import results as R

POINT = R.RunPoint(run="r1", step=100, tokens=6400, num_params=1000,
                   num_params_non_embedding=800, num_tokens=12800, flops=6 * 800 * 6400)


def _inst(i, task="t"):
    return R.ResultRow.make(POINT, task, R.INSTANCE, 0.5, instance=f"i{i}",
                            detail={"num_samples": 3, "num_passes": 2})


def test_rows_round_trip_and_units(tmp_path):
    path = tmp_path / "sub" / "results.jsonl"
    f = R.ResultsFile(path)
    f.append([_inst(0), _inst(1)])
    assert not f.is_complete("r1", 100, "t")
    f.append([R.ResultRow.make(POINT, "t", R.PASSUNTIL, 0.25),
              R.ResultRow.make(POINT, "t", R.UNIT_COMPLETE, 2)])
    g = R.ResultsFile(path)
    assert g.rows == f.rows
    assert g.is_complete("r1", 100, "t") and not g.is_complete("r1", 200, "t")
    assert set(g.instance_rows("r1", 100, "t")) == {"i0", "i1"}
    assert g.instance_rows("r1", 100, "t")["i1"].detail == {"num_samples": 3, "num_passes": 2}
    first = json.loads(path.read_text().splitlines()[0])
    assert first["flops"] == 6 * 800 * 6400 and first["num_params_non_embedding"] == 800
    assert first["instance"] == "i0" and first["metric"] == R.INSTANCE


def test_torn_last_line_is_dropped_and_truncated(tmp_path):
    path = tmp_path / "results.jsonl"
    f = R.ResultsFile(path)
    f.append([_inst(0)])
    good = path.read_bytes()
    path.write_bytes(good + _inst(1).to_json().encode()[:25])  # killed mid-write
    g = R.ResultsFile(path)
    assert [r.instance for r in g.rows] == ["i0"]
    assert path.read_bytes() == good
    g.append([_inst(2)])
    assert [r.instance for r in R.read_rows(path)] == ["i0", "i2"]


def test_corrupt_line_names_file_and_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(_inst(0).to_json() + "\n{not json\n" + _inst(1).to_json() + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl:2: not a JSON row"):
        R.ResultsFile(path)
    d = json.loads(_inst(0).to_json())
    del d["task"]
    path.write_text(json.dumps(d) + "\n")
    with pytest.raises(ValueError, match=r"results.jsonl:1: .*lacks field\(s\) \['task'\]"):
        R.read_rows(path)


def test_unknown_metric_rejected():
    with pytest.raises(ValueError, match="metric='acc'"):
        R.ResultRow.make(POINT, "t", "acc", 1.0)


def test_read_only_file_does_not_write(tmp_path):
    path = tmp_path / "results.jsonl"
    R.ResultsFile(path).append([_inst(0)])
    before = path.read_bytes()
    f = R.ResultsFile(path, writable=False)
    f.append([_inst(1)])
    assert path.read_bytes() == before
    assert len(f.rows) == 2


def test_read_rows_on_a_cut_last_line_says_how_to_repair(tmp_path):
    path = tmp_path / "results.jsonl"
    R.ResultsFile(path).append([_inst(0)])
    path.write_bytes(path.read_bytes() + _inst(1).to_json().encode()[:25])  # cut mid-write
    with pytest.raises(ValueError, match=r"results.jsonl:2: not a JSON row \(.*\); the line is "
                       r"cut or corrupt: delete line 2 and the other rows of its \(run, step, "
                       r"task\) unit .*then rerun the evaluator: it redoes every unit that has "
                       r"no unit_complete row"):
        R.read_rows(path)
