"""Data stage: print a few fully formatted instances of an evaluation task (or corpus).

  python -m lmscale.data.inspect --task=gen_uicl_dates --num=3
  python -m lmscale.data.inspect --list
  python -m lmscale.data.inspect --corpus=lmscale_stdlib_py --num=2
"""
from __future__ import annotations

import sys

from absl import app
from absl import flags

_TASK = flags.DEFINE_string("task", None, "Evaluation task name (see --list).")
_CORPUS = flags.DEFINE_string("corpus", None, "Corpus task: print decoded training rows.")
_NUM = flags.DEFINE_integer("num", 3, "How many instances or rows.")
_SPLIT = flags.DEFINE_string("split", "test", "Eval split (corpora: 'train'/'validation').")
_LIST = flags.DEFINE_bool("list", False, "List registered evaluation tasks.")


def format_instance(task, inst) -> str:
    """A readable block for one instance: prompt, then target or lettered choices."""
    lines = [f"--- {task.name} / {inst.id}", "[prompt]", inst.prompt]
    if inst.choices is not None:
        lines.append("[choices]")
        lines += [f"{'*' if j == inst.gold else ' '} {j}: {c!r}"
                  for j, c in enumerate(inst.choices)]
    if inst.target is not None:
        lines += ["[target]", repr(inst.target)]
    return "\n".join(lines)


def describe(task) -> str:
    return (f"{task.name}: kind={task.kind} checker={task.checker} "
            f"random_baseline={task.random_baseline:.3f} shots={task.num_shots} "
            f"stop={task.stop_strings!r} max_new_tokens={task.max_new_tokens}")


def main(argv) -> int:
    del argv
    from lmscale.data import registry

    if _LIST.value:
        for name in registry.list_eval_tasks():
            print(f"{name:60s} {registry.get_eval_task(name).description}")
        return 0
    if _CORPUS.value:
        from lmscale.data import pipeline
        from lmscale.data import vocab as vocab_lib

        split = "train" if _SPLIT.value == "test" else _SPLIT.value
        stream = pipeline.LMStream(_CORPUS.value, split, 256, _NUM.value, seed=0)
        vocab = vocab_lib.get_vocabulary("byte")
        for row in next(stream)["decoder_target_tokens"]:
            print("---", repr(vocab.decode(row.tolist())))
        return 0
    if not _TASK.value:
        raise app.UsageError("give --task=NAME, --corpus=NAME or --list")
    try:
        task = registry.get_eval_task(_TASK.value)
    except KeyError as e:
        print(e.args[0], file=sys.stderr)
        return 2
    items, reports = task.instances_with_reports(_SPLIT.value, limit=None)
    print(describe(task))
    for rep in reports:
        print(f"filter {rep.filter_name}: removed {rep.num_removed} of {rep.num_before} "
              f"({rep.reason})")
    print(f"{len(items)} instances")
    for inst in items[: _NUM.value]:
        print(format_instance(task, inst))
    return 0


if __name__ == "__main__":
    app.run(main)
