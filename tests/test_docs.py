"""Every ```python block of docs/*.md and README.md runs as pasted.

Blocks of one page run in order in one fresh interpreter (a page is a notebook: later cells
use earlier names), with the repository root as the working directory, as the docs assume.
A block is skipped only when the markdown says why, on the line before its fence:

    <!-- docs-test: skip (needs a TPU pod) -->

and the skipped blocks are reported (pytest -ra shows the reasons). A page whose blocks
read ../shared/data skips when that folder is absent (a fresh clone).
"""
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted(ROOT.glob("docs/*.md")) + [ROOT / "README.md"]
_FENCE = re.compile(r"^```python\s*\n(.*?)^```\s*$", re.S | re.M)
_SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s*\((.+?)\)\s*-->\s*$")


def python_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line, code, skip reason or None) of each ```python block of a markdown text."""
    blocks = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = _SKIP.search(before)
        blocks.append((line, m.group(1), skip.group(1) if skip else None))
    return blocks


def test_block_extraction_and_skip_markers():
    text = ("intro\n```python\nx = 1\n```\n<!-- docs-test: skip (needs a TPU) -->\n"
            "```python\ny = 2\n```\n```\nnot python\n```\n")
    assert python_blocks(text) == [(2, "x = 1\n", None), (6, "y = 2\n", "needs a TPU")]


_PAGES_WITH_BLOCKS = [p for p in PAGES if python_blocks(p.read_text())]


@pytest.mark.parametrize("page", _PAGES_WITH_BLOCKS, ids=lambda p: p.name)
def test_doc_blocks_run_as_pasted(page, tmp_path):
    blocks = python_blocks(page.read_text())
    skipped = [(line, why) for line, _, why in blocks if why]
    to_run = [(line, code) for line, code, why in blocks if not why]
    if any("../shared/data" in code for _, code in to_run) and \
            not (ROOT.parent / "shared" / "data").is_dir():
        pytest.skip(f"{page.name}: its blocks read ../shared/data, absent here")
    # One script, each block preceded by a marker so a failure names its block's line.
    script = "".join(f"print('docs-test: block at line {line}', flush=True)\n{code}\n"
                     for line, code in to_run)
    path = tmp_path / f"{page.stem}_blocks.py"
    path.write_text(script)
    before = set(os.listdir(ROOT))
    try:
        proc = subprocess.run([sys.executable, str(path)], cwd=ROOT, capture_output=True,
                              text=True, timeout=900, env={**os.environ, "MPLBACKEND": "Agg"})
    finally:  # outputs the blocks write (e.g. figs/) leave the checkout as it was
        for name in set(os.listdir(ROOT)) - before:
            target = ROOT / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    ran = re.findall(r"docs-test: block at line (\d+)", proc.stdout)
    where = f"{page.relative_to(ROOT)}, block at line {ran[-1]}" if ran else page.name
    assert proc.returncode == 0, f"{where} failed:\n{proc.stderr[-3000:]}"
    if skipped:
        pytest.skip(f"{page.name}: ran {len(to_run)} block(s); skipped "
                    + "; ".join(f"line {line} ({why})" for line, why in skipped))
