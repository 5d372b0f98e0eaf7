"""Tests for lmscale.fit as a package: light import, plots, io, DataFrame-like input."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import lmscale.fit as fit
from lmscale.fit import io

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_import_pulls_in_numpy_and_scipy_only():
    code = ("import sys, lmscale.fit\n"
            "heavy = [m for m in ('jax', 'tensorflow', 'matplotlib', 'seqio', 'flax', 'pandas')"
            " if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == ""


def test_plots_write_pngs(tmp_path):
    N = np.array([1e7, 3e7, 1e8, 1e7, 3e7, 1e8])
    D = N * np.array([20, 20, 20, 320, 320, 320])
    loss = fit.overtrain(6 * N * D, D / N, 1.84, 212.0, 367.0, 0.136)
    lf = fit.fit_loss_law(N, D, loss, form="overtrain")
    paths = [
        fit.plot_loss_vs_compute(N, D, loss, tmp_path / "a.png", fit=lf),
        fit.plot_performance_vs_loss(loss, 0.9 - 0.1 * loss, tmp_path / "b.png",
                                     random_baseline=0.25),
        fit.plot_pu_scaling(N[:3], [0.01, 0.05, 0.2], tmp_path / "c.png",
                            fits={"dataset": fit.fit_pu_dataset(N[:3], [0.01, 0.05, 0.2])},
                            held_out=(3e8, 0.4)),
        fit.plot_prediction_vs_truth([2.1, 3.0], [2.0, 3.1], tmp_path / "d.png",
                                     labels=["x", "y"]),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


class _FakeFrame:
    """Duck-typed DataFrame: .columns and [name].to_numpy()."""

    class _Col:
        def __init__(self, v):
            self.v = v

        def to_numpy(self):
            return np.asarray(self.v)

    def __init__(self, data):
        self.data = data
        self.columns = list(data)

    def __getitem__(self, k):
        return self._Col(self.data[k])


def test_dataframe_like_and_jsonl_inputs(tmp_path):
    table = io.as_table(_FakeFrame({"N": [1.0, 2.0], "loss": [3.0, 2.5]}))
    np.testing.assert_array_equal(table["loss"], [3.0, 2.5])
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"N": 1e7, "task": "x"}) + "\n" +
                    json.dumps({"N": 2e7, "task": "y", "value": 0.5}) + "\n")
    rows = io.as_table(path)
    np.testing.assert_array_equal(rows["N"], [1e7, 2e7])
    assert np.isnan(rows["value"][0]) and rows["task"][1] == "y"
    path.write_text('{"N": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"rows.jsonl:2: expected a JSON object"):
        io.read_jsonl(path)


def test_csv_errors_name_file_and_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("a,b\n1,2\n3\n")
    with pytest.raises(ValueError, match=r"bad.csv:3: 1 fields"):
        io.read_csv(path)
