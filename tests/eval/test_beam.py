"""lmscale.eval.beam on a tiny random model: the rows hold what beam search and the task's
checker give when called directly, and the report's table counts them."""

import dataclasses
import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest

from lmscale.data import registry
from lmscale.data.checkers import cut_at_stop
from lmscale.data.vocab import get_vocabulary
from lmscale.eval import beam
from lmscale.eval import results as R
from lmscale.eval import runner, search
from lmscale.models import count_params, init_params
from lmscale.testing import tiny_config
from lmscale.train.record import RunRecord

pytestmark = pytest.mark.usefixtures("fast_compiles")

CONFIG = tiny_config(vocab_size=259, max_seq_len=64)
STEPS = 20
W, NEW = 4, 6
ONE_DEVICE = jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"), devices=jax.devices()[:1],
                           axis_types=(jax.sharding.AxisType.Auto,) * 3)


def _params():
    params = nn.unbox(init_params(CONFIG, jax.random.PRNGKey(3)))["params"]
    return jax.tree_util.tree_map(lambda x: x * 3.0, params)


def _source():
    return runner.CheckpointSource(load_record=RunRecord.load,
                                   list_steps=lambda d: [STEPS],
                                   restore_params=lambda d, s, c, mesh=None: _params())


def _write_run(workdir):
    n = count_params(CONFIG)
    d = pathlib.Path(workdir) / "a"
    d.mkdir(parents=True)
    RunRecord(run_name="a", model_config=dataclasses.asdict(CONFIG), num_params=n.total,
              num_params_non_embedding=n.non_embedding, num_tokens=STEPS * 128, flops=0.0,
              token_multiplier=None, tokens_per_step=128, batch_size=4, seq_len=32,
              num_steps=STEPS, vocab_spec="byte", loss_unit="nats/byte", corpus="c", seed=0,
              status="done", checkpoints=[STEPS]).save(d)
    return d


def _direct(prompt_text):
    """Beam texts computed here: start id 0, the prompt's bytes, beam search, cut."""
    vocab = get_vocabulary("byte")
    ids = np.concatenate([[0], np.asarray(vocab.encode(prompt_text), np.int32)]).astype(np.int32)
    res = search.beam_search(_params(), CONFIG, ids, W, NEW,
                             eos_id=getattr(vocab, "eos_id", None))
    texts = []
    for row, n in zip(res.tokens, res.lengths):
        toks = [int(t) for t in row[:n]]
        if toks and toks[-1] == getattr(vocab, "eos_id", None):
            toks = toks[:-1]
        texts.append(cut_at_stop(vocab.decode(toks), ("\n",)))
    return texts


def test_beam_rows_and_table_match_a_direct_computation(tmp_path):
    run_dir = _write_run(tmp_path)
    prompts = [f"say {i}:" for i in range(6)]
    direct = [_direct(p) for p in prompts]
    # Targets that make the counts non-trivial: the top beam's text for even instances
    # (passes), a later beam's text not in the top one where there is one, else none.
    targets, expect = [], []
    for i, texts in enumerate(direct):
        later = [t for t in texts[1:] if t and t not in texts[0]]
        if i % 2 == 0 and texts[0]:
            targets.append(texts[0])
        elif later:
            targets.append(later[0])
        else:
            targets.append("\x7f never \x7f")
        t = targets[-1]
        expect.append((t in texts[0], any(t in x for x in texts)))
    insts = [registry.Instance(f"g{i}", p, target=t)
             for i, (p, t) in enumerate(zip(prompts, targets))]
    task = registry.EvalTask("beam_gen", registry.GENERATIVE, "contains", 0.0, ("\n",), NEW,
                             loader=lambda split: insts)
    path = str(tmp_path / "results.jsonl")
    beam.evaluate_beam(str(run_dir), [task], [W], results_path=path, source=_source(),
                       mesh=ONE_DEVICE)
    rows = R.read_rows(path)
    name = beam.beam_task_name("beam_gen", W)
    inst = {r.instance: r for r in rows if r.task == name and r.metric == R.INSTANCE}
    got = [(inst[f"g{i}"].detail["top_passed"], inst[f"g{i}"].detail["any_passed"])
           for i in range(len(prompts))]
    assert got == expect
    assert [inst[f"g{i}"].detail["top_text"] for i in range(6)] == [d[0] for d in direct]
    assert sum(a for a, _ in expect) >= 1  # the counts are not all zero
    # A rerun skips the finished unit.
    beam.evaluate_beam(str(run_dir), [task], [W], results_path=path, source=_source(),
                       mesh=ONE_DEVICE)
    assert len(R.read_rows(path)) == len(rows)
    # The report's table counts these rows (beside PassUntil rows of the same instances).
    from lmscale.report import analysis, hu

    pu_rows = [dataclasses.asdict(r) for r in rows]
    point = {k: v for k, v in pu_rows[0].items() if k in (
        "run", "step", "tokens", "num_params", "num_params_non_embedding", "num_tokens",
        "flops")}
    for i in range(6):
        pu_rows.append(dict(point, task="beam_gen", metric="instance", value=0.5,
                            instance=f"g{i}", detail=dict(num_samples=8, num_passes=4,
                                                          capped=False, k_max=48)))
    index = analysis._Index(pu_rows)
    rung = analysis._Rung(1, 1, 1, ["a"], {"a": STEPS})
    table = hu.beam_table(index, [rung], "beam_gen", r=4)
    assert table[0]["beam_top"] == sum(a for a, _ in expect)
    assert table[0]["beam_any"] == sum(b for _, b in expect)
    assert table[0]["passuntil_solved"] == 6 and table[0]["num_instances"] == 6
