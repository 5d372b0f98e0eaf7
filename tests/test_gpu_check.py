"""tools/gpu_check.py --dry_run: the GPU check's code runs end to end on CPU, tiny shapes."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_dry_run_prints_every_figure():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gpu_check.py"),
                          "--dry_run"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    assert "attention xla" in text
    mfu = float(re.search(r"^train: .* MFU ([\d.]+)% of", text, re.M).group(1))
    assert 0.0 < mfu < 100.0
    frac = float(re.search(r"^decode: .* tokens/s = ([\d.]+)% of the roofline", text,
                           re.M).group(1))
    assert frac > 0.0
    score = re.search(r"^score: .* ratio ([\d.]+)x \| max \|dLL\| ([\d.e+-]+)", text, re.M)
    assert float(score.group(1)) > 0.0
    assert float(score.group(2)) < 1e-3  # the scorer and the reference agree
