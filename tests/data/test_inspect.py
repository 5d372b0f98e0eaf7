"""Tests for `python -m lmscale.data.inspect` (run in-process through its absl main)."""
from absl import flags

from lmscale.data import inspect as inspect_lib
from lmscale.data import registry


def _run(capsys, *args):
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["inspect", *args])
    code = inspect_lib.main([])
    return code, capsys.readouterr()


def test_inspect_prints_prompt_and_target(capsys):
    code, out = _run(capsys, "--task=gen_uicl_identity", "--num=2")
    first = registry.get_eval_task("gen_uicl_identity").instances(limit=1)[0]
    assert code == 0
    assert first.prompt in out.out and repr(first.target) in out.out
    assert out.out.count("--- gen_uicl_identity /") == 2


def test_inspect_marks_gold_choice(capsys):
    code, out = _run(capsys, "--task=gen_date_understanding_mc", "--num=1")
    inst = registry.get_eval_task("gen_date_understanding_mc").instances(limit=1)[0]
    assert code == 0 and f"* {inst.gold}: {inst.choices[inst.gold]!r}" in out.out


def test_inspect_unknown_task_exits_2(capsys):
    code, out = _run(capsys, "--task=gen_uicl_idenity")
    assert code == 2 and "gen_uicl_identity" in out.err
