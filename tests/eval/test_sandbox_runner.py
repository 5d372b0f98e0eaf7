"""The sandbox isolation level, end to end: runner rows -> report and results.json.

A tiny "code" task runs through `lmscale.eval.runner.evaluate` with the real checker and
sandbox (the draw stands in for the sampler with fixed completions, so every sample is a
real sandboxed program); the rows must carry the level, and the report built from them
must name it.
"""
import dataclasses
import json
import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest

from lmscale.data import registry
from lmscale.eval import results as R
from lmscale.eval import runner, sandbox
from lmscale.models import count_params, init_params
from lmscale.report import analysis, markdown
from lmscale.testing import tiny_config
from lmscale.train.record import RunRecord

pytestmark = pytest.mark.usefixtures("fast_compiles")

CONFIG = tiny_config(vocab_size=259, max_seq_len=64)
GOOD, BAD = "    return a + b\n", "    return a - b\n"


def _write_run(workdir):
    n = count_params(CONFIG)
    d = pathlib.Path(workdir) / "a"
    d.mkdir(parents=True)
    RunRecord(run_name="a", model_config=dataclasses.asdict(CONFIG), num_params=n.total,
              num_params_non_embedding=n.non_embedding, num_tokens=1280,
              flops=6.0 * n.non_embedding * 1280, token_multiplier=None,
              tokens_per_step=128, batch_size=4, seq_len=32, num_steps=10,
              vocab_spec="byte", loss_unit="nats/byte", corpus="stand_in", seed=0,
              status="done", checkpoints=[10]).save(d)


def _source():
    def restore(run_dir, step, config, mesh=None):
        return nn.unbox(init_params(config, jax.random.PRNGKey(step)))["params"]

    return runner.CheckpointSource(load_record=RunRecord.load,
                                   list_steps=lambda d: RunRecord.load(d).checkpoints,
                                   restore_params=restore)


def _code_task():
    test = "def check(f):\n    assert f(2, 3) == 5\n    assert f(-1, 1) == 0\n"
    instances = [registry.Instance(f"c{i}", "def add(a, b):\n", target=GOOD,
                                   meta={"test": test, "entry_point": "add"})
                 for i in range(2)]
    return registry.EvalTask("tiny_code", registry.GENERATIVE, "code", 0.0, ("\ndef",), 8,
                             loader=lambda split: instances)


def _draw_factory(sampler, prompt, checker_fn, seed):
    """Every sample is a sandboxed program: passes on even draws, fails on odd ones."""
    count = [0]

    def draw(n):
        out = []
        for _ in range(n):
            out.append(checker_fn(GOOD if count[0] % 2 == 0 else BAD))
            count[0] += 1
        return np.asarray(out, bool)

    return draw


def test_code_rows_and_report_carry_the_isolation_level(tmp_path):
    _write_run(tmp_path)
    level = sandbox.isolation_level()
    pu = runner.PassUntilConfig(r=2, k_max=6, batch_size=2, num_slots=2, seed=1)
    runner.evaluate(str(tmp_path), [_code_task()], source=_source(), passuntil_config=pu,
                    draw_factory=_draw_factory,
                    validation=runner.ValidationConfig(enabled=False))
    rows = R.read_rows(tmp_path / runner.RESULTS_FILE)
    inst = [r for r in rows if r.metric == R.INSTANCE]
    assert [r.instance for r in inst] == ["c0", "c1"]
    for r in inst:
        # Sandbox verdicts alternate pass/fail: the 2nd pass is the 3rd sample.
        assert (r.detail["num_passes"], r.detail["num_samples"]) == (2, 3), r.detail
        assert r.detail["isolation"] == level
    levels = markdown.isolation_levels(rows)
    assert levels == {"tiny_code": [level]}
    # The report and results.json of an analysis carrying them name the level.
    from tests.report.test_analysis import synthetic
    srows, runs = synthetic()
    out = analysis.analyze(srows, runs, mc_tasks=["mc"], passuntil_tasks=["gen"],
                           random_baselines={"mc": 0.25}, held_out=1, passuntil_r=2)
    out["isolation"] = levels
    report, results = markdown.write_report(out, {}, tmp_path / "report", title="t",
                                            setup={})
    text = report.read_text()
    assert "## Code execution isolation" in text and f"- tiny_code: {level}\n" in text
    assert json.loads(results.read_text())["isolation"] == {"tiny_code": [level]}


def test_isolation_section_flags_opt_in_and_mixed_levels():
    rows = [dict(task="t1", metric="instance", detail={"isolation": "rlimits"}),
            dict(task="t1", metric="instance", detail={"isolation": "unshare"}),
            dict(task="t2", metric="instance", detail={"isolation": "bwrap"}),
            dict(task="mc", metric="instance", detail={"loglik": [0.1]}),
            R.ResultRow(run="a", step=1, tokens=1, num_params=1, num_params_non_embedding=1,
                        num_tokens=1, flops=1.0, task="t3", metric="instance", value=0.5,
                        instance="x", detail={"isolation": "unshare"})]
    levels = markdown.isolation_levels(rows)
    assert levels == {"t1": ["rlimits", "unshare"], "t2": ["bwrap"], "t3": ["unshare"]}
    lines = markdown.isolation_section(levels)
    t1 = next(line for line in lines if line.startswith("- t1:"))
    assert "mixed" in t1 and "rlimits is below the default minimum 'unshare'" in t1
    assert next(line for line in lines if line.startswith("- t2:")) == "- t2: bwrap"
    assert markdown.isolation_section({}) == []
