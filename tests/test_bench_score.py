"""tools/bench_score.py on tiny settings: every batch size and block count is timed, the
band ablation runs, and the scorer agrees with the per-choice forwards."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_score_times_every_setting_and_agrees():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu")
    # choice_len 2: four choices pack to 8 with the longest 2, so the band is taken.
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench_score.py"),
                          "--sizes=d128_l4", "--questions=4", "--choice_len=2",
                          "--batch_questions=2,4", "--ref_blocks=1,2", "--repeats=1",
                          "--ablate_band"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    rows = re.findall(r"^  (\d+) questions a call: shared ([\d,]+) choices/s \| full forward "
                      r"([\d,]+) \(1 block [\d,]+, 2 blocks [\d,]+\) \| ratio ([\d.]+)x \| "
                      r"no band ([\d,]+) choices/s", text, re.M)
    assert [r[0] for r in rows] == ["2", "4"], text
    best = re.search(r"^d128_l4: best shared ([\d,]+) choices/s \((\d+) questions a call\) "
                     r"\| best full forward ([\d,]+) choices/s \((\d+) questions a call, "
                     r"(\d) blocks\) \| ratio ([\d.]+)x \| max \|dLL\| ([\d.e+-]+)", text, re.M)
    assert best, text
    assert best.group(1) in {r[1] for r in rows} and best.group(2) in {"2", "4"}
    assert float(best.group(6)) > 0.0
    assert float(best.group(7)) < 1e-4  # the scorer (with and without band) == the reference
