"""The public-ladder study: random `transformers` checkpoints -> evaluator -> fits -> report.

Checkpoints, tokenizer, corpus and MC task come from tests/eval/test_public.py's builders;
nothing is downloaded or trained.
"""

import json
import pathlib

import gin
import pytest

from lmscale.eval import public
from lmscale.eval import results as R
from lmscale.eval import runner
from lmscale.main import _cli
from lmscale.models import ConfigError
from lmscale.report import public as public_study
from tests.eval.test_public import (CORPUS, MC_TASK, SEQ_LEN, STEPS, TOKENS_PER_STEP,
                                    build_ladder, register_fixtures)

pytestmark = pytest.mark.usefixtures("fast_compiles")
pytest.importorskip("transformers")

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("public_report")
    register_fixtures(root)
    entries, _ = build_ladder(root / "hub", "llama")
    return root / "hub", entries


def _config(hub_dir, entries, **ladder):
    return public_study.PublicStudyConfig(
        ladder=public.PublicLadder(name="tiny public ladder", root=str(hub_dir),
                                   checkpoints=entries, corpus=CORPUS, seq_len=SEQ_LEN,
                                   **ladder),
        mc_tasks=(MC_TASK,), validation=runner.ValidationConfig(batch_size=4),
        targets=("name=big,N=200000,D=40000",))


def test_report_builds_from_public_checkpoints(hub, tmp_path):
    hub_dir, entries = hub
    config = _config(hub_dir, entries, per_checkpoint_runs=True)
    analysis = public_study.evaluate_public_ladder(config, tmp_path, config_text="# cfg\n")
    names = sorted(f"llama-{s}@{t}" for s in (0, 1) for t in STEPS)
    rows = R.read_rows(tmp_path / runner.RESULTS_FILE)
    loss = {r.run: r.value for r in rows if r.metric == R.VALIDATION_LOSS}
    assert sorted(loss) == names
    assert {r.run for r in rows if r.task == MC_TASK and r.metric == R.UNIT_COMPLETE} \
        == set(names)
    # One rung per checkpoint, (N, D) from config.json and the entries; the largest held out.
    rungs = analysis["rungs"]
    assert [(r["runs"][0], r["D"]) for r in rungs] == [
        (f"llama-{s}@{t}", t * TOKENS_PER_STEP) for s in (0, 1) for t in STEPS]
    assert [r["held_out"] for r in rungs] == [False, False, False, True]
    for r in rungs:
        assert r["validation_loss"] == pytest.approx(loss[r["runs"][0]])
    assert analysis["predictions"] and analysis["predictions"][0]["N"] == rungs[-1]["N"]
    assert [t["target"] for t in analysis["targets"]][:1] == ["big"]
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# tiny public ladder") and "one per checkpoint" in report
    saved = json.loads((tmp_path / "results.json").read_text())
    assert len(saved["rungs"]) == 4 and (tmp_path / "config.gin").read_text() == "# cfg\n"
    # Rerun: every unit is done, nothing is evaluated again.
    public_study.evaluate_public_ladder(config, tmp_path)
    assert len(R.read_rows(tmp_path / runner.RESULTS_FILE)) == len(rows)


def test_too_few_rungs_fail_before_evaluating(hub, tmp_path):
    hub_dir, entries = hub
    with pytest.raises(ConfigError, match="2 rung.*per_checkpoint_runs"):
        public_study.evaluate_public_ladder(_config(hub_dir, entries), tmp_path)
    assert not (tmp_path / runner.RESULTS_FILE).exists()


def test_config_errors_name_the_culprit(hub, tmp_path):
    hub_dir, entries = hub
    with pytest.raises(ConfigError, match="validation loss"):
        public_study.PublicStudyConfig(ladder=public.PublicLadder(checkpoints=entries))
    off_grid = [dict(e, tokens=e["tokens"] + 1) if e["step"] == STEPS[0] else e
                for e in entries]
    with pytest.raises(public.PublicLadderError, match="llama-0.*one grid"):
        public.build_runs(public.PublicLadder(root=str(hub_dir), checkpoints=off_grid))
    with pytest.raises(public.PublicLadderError, match="root is unset"):
        public.build_runs(public.PublicLadder(checkpoints=entries))
    with pytest.raises(public.PublicLadderError, match=r"checkpoints\[0\].*unknown.*'size'"):
        public.PublicLadder(checkpoints=[dict(entries[0], size=1)])
    missing = [dict(entries[0], path="nowhere")]
    with pytest.raises(public.PublicLadderError, match="nowhere/config.json"):
        public.build_runs(public.PublicLadder(root=str(hub_dir), checkpoints=missing))
    mixed = [dict(e, path="llama-1/step20") if e["path"] == "llama-0/step10" else e
             for e in entries]
    with pytest.raises(public.PublicLadderError, match="llama-1/step20/config.json: model "
                                                       "'llama-0' differs"):
        public.build_runs(public.PublicLadder(root=str(hub_dir), checkpoints=mixed))
    # Without steps a checkpoint's step is its token count.
    no_steps = [{k: v for k, v in e.items() if k != "step"} for e in entries]
    run = public.build_runs(public.PublicLadder(root=str(hub_dir), checkpoints=no_steps))
    assert run["llama-0"].record.checkpoints == [t * TOKENS_PER_STEP for t in STEPS]
    assert run["llama-0"].record.tokens_at(STEPS[0] * TOKENS_PER_STEP) == \
        STEPS[0] * TOKENS_PER_STEP


def test_example_gin_file_builds_the_study_config():
    gin.clear_config(clear_constants=True)
    try:
        _cli.parse_gin([str(ROOT / "experiments/public_ladder.gin")],
                       ["PUBLIC_ROOT = '/data/pythia'"])
        config = gin.get_configurable(public_study.PublicStudyConfig)()
    finally:
        gin.clear_config(clear_constants=True)
    ladder = config.ladder
    assert ladder.root == "/data/pythia" and len(ladder.checkpoints) == 8
    assert sorted(ladder.models()) == ["pythia-160m", "pythia-1b", "pythia-410m",
                                       "pythia-70m"]
    assert all(c.tokens == c.step * 2048 * 1024 for c in ladder.checkpoints)
    assert ladder.checkpoint_dir(ladder.checkpoints[0]) == pathlib.Path(
        "/data/pythia/pythia-70m/step71000")


def test_binary_names_an_unset_root(tmp_path, fast_compile_env):
    """The one command of docs/public_ladders.md, without PUBLIC_ROOT: one message, no
    traceback, before any checkpoint is read."""
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "lmscale.main.public_ladder",
         "--gin_file=experiments/public_ladder.gin", f"--workdir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, **fast_compile_env, "PYTHONPATH": str(ROOT)})
    assert proc.returncode != 0
    assert "FATAL PublicLadderError: PublicLadder.root is unset" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
