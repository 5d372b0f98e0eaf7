"""Every ```python block of docs/*.md and README.md runs as pasted.

Blocks of one page run in order in one fresh interpreter (a page is a notebook: later cells
use earlier names), with the repository root as the working directory, as the docs assume.
A block is skipped only when the markdown says why, on the line before its fence:

    <!-- docs-test: skip (needs a TPU pod) -->

and the skipped blocks are reported (pytest -ra shows the reasons). A page whose blocks
read ../shared/data skips when that folder is absent (a fresh clone).

Figures quoted in a block are checked against what the block prints: a line

    print(loss_fit.params)   # -> {'E': 1.8366, 'a': 212.24, 'b': 366.69, 'eta': 0.1364}

fails the test unless every number after `# ->` equals, to the decimals written, the
corresponding number (in order) of what that `print` writes. The default study's run
time is stated once: README, docs/quickstart.md and experiments/default.gin quote the
same recorded figure.
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


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_QUOTED_PRINT = re.compile(r"^(\s*)print\((.*)\)\s*#\s*->\s*(.+?)\s*$")


def figures_match(expected: str, printed: str) -> bool:
    """Whether each number of `expected`, in order, equals (to the decimals written) a
    number of `printed`, taken in order (a subsequence: the printout may hold more)."""
    actual = [float(x) for x in _NUMBER.findall(printed)]
    i = 0
    for token in _NUMBER.findall(expected):
        mantissa, _, exponent = token.lower().partition("e")
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        scale = 10.0 ** int(exponent or 0)
        want = float(token)
        while i < len(actual) and abs(actual[i] - want) > 0.5 * 10.0 ** -decimals * scale \
                * (1 + 1e-9):
            i += 1
        if i == len(actual):
            return False
        i += 1
    return True


_CHECK_HELPER = '''
def __docs_print(where, expected, *args, **kwargs):
    import io
    buffer = io.StringIO()
    print(*args, **kwargs, file=buffer)
    print(buffer.getvalue(), end="")
    if not __docs_figures_match(expected, buffer.getvalue()):
        raise AssertionError(f"{where}: prints {buffer.getvalue().strip()!r} but the page "
                             f"quotes {expected!r}")
'''


def with_figure_checks(code: str, page: str, first_line: int) -> str:
    """`code` with each `print(...)  # -> figures` line checking its figures."""
    out = []
    for offset, line in enumerate(code.splitlines()):
        m = _QUOTED_PRINT.match(line)
        if m:
            where = f"{page}:{first_line + 1 + offset}"
            line = f"{m.group(1)}__docs_print({where!r}, {m.group(3)!r}, {m.group(2)})"
        out.append(line)
    return "\n".join(out) + "\n"


def test_figure_checks_catch_a_stale_figure():
    assert figures_match("{'E': 1.8366, 'eta': 0.1364}", "{'E': 1.83661234, 'x': 7, 'eta': "
                         "0.13638}")
    assert not figures_match("{'E': 1.8366}", "{'E': 1.8371}")
    assert figures_match("[0.7103 0.7320]", "[0.71034 0.73199]")
    assert not figures_match("[0.7320 0.7103]", "[0.71034 0.73199]")  # order matters
    assert figures_match("1.0182740e-03", "0.0010182740123")
    code = "x = 2\nprint(x * 1.5)  # -> 3.0\nprint(x)  # -> 5\n"
    checked = with_figure_checks(code, "p.md", 10)
    assert "__docs_print('p.md:12', '3.0', x * 1.5)" in checked
    script = (f"import re\n__docs_figures_match = None\n{_CHECK_HELPER}\n"
              f"__docs_figures_match = lambda e, p: {figures_match.__name__}(e, p)\n")
    namespace = {figures_match.__name__: figures_match}
    exec(script + checked.split("\n", 1)[0] + "\n", namespace)  # noqa: S102  x = 2
    exec("__docs_print('p.md:12', '3.0', x * 1.5)", namespace)  # noqa: S102
    with pytest.raises(AssertionError, match=r"p.md:13: prints '2' but the page quotes '5'"):
        exec("__docs_print('p.md:13', '5', x)", namespace)  # noqa: S102


def _script_prologue() -> str:
    """The figure-check helpers, defined in the page's interpreter."""
    import inspect
    return (f"import re as __docs_re\n_NUMBER = __docs_re.compile({_NUMBER.pattern!r})\n"
            f"{inspect.getsource(figures_match)}\n__docs_figures_match = figures_match\n"
            f"del figures_match\n{_CHECK_HELPER}\n")


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
    script = _script_prologue() + "".join(
        f"print('docs-test: block at line {line}', flush=True)\n"
        f"{with_figure_checks(code, page.name, line)}\n" for line, code in to_run)
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


_RUN_TIME = re.compile(r"(\d+)\s*min\s*(\d+)\s*s|(\d+)m(\d+)s")


def recorded_run_times(text: str) -> set[int]:
    """Seconds of every "N min M s" / "NmMs" figure in `text`."""
    return {int(m[0] or m[2]) * 60 + int(m[1] or m[3]) for m in _RUN_TIME.findall(text)}


def test_the_default_study_states_one_recorded_run_time():
    assert recorded_run_times("10 min 53 s, or 10m53s; 3m05s") == {653, 185}
    sources = {name: (ROOT / name).read_text() for name in
               ("README.md", "docs/quickstart.md", "experiments/default.gin")}
    found = {name: recorded_run_times(text) for name, text in sources.items()}
    readme = found["README.md"]
    assert len(readme) == 1, f"README.md states {len(readme)} run times: {readme}"
    for name, times in found.items():
        assert readme <= times, f"{name} does not quote README's recorded run time " \
                                f"({readme.pop()} s): it quotes {sorted(times)} s"
    header = sources["experiments/default.gin"].split("from __gin__")[0]
    assert recorded_run_times(header) == readme, "default.gin's header quotes another time"
