"""Data stage: BIG-bench JSON tasks (`task.json`) by path, including subtask folders.

A task with `target_scores` becomes a multiple-choice EvalTask (choices in file order,
gold = highest score) and also a generative one (`<name>_gen`, target = gold choice,
checker CONTAINS as Hu et al. use for Emoji Movie and Date Understanding); a task with only
`target` becomes generative (checker EXACT, BIG-bench's exact_str_match). Prompts follow the
file's `task_prefix`, `example_input_prefix`, `example_output_prefix`,
`few_shot_example_separator` and `append_choices_to_input`; k demonstrations come from a
seeded pool disjoint from the test instances.

The shared copies used by Hu et al. are registered as `bb_<task>[.<subtask>]` when the
folder is found: $LMSCALE_BIGBENCH_DIR, else ../shared/data/bigbench beside the checkout.
"""
from __future__ import annotations

import functools
import os
import pathlib
import random
from typing import Mapping, Sequence

from lmscale.data import checkers
from lmscale.data import errors
from lmscale.data import evaltask
from lmscale.data.tasks import filters as filters_lib

DEFAULT_SHOTS = 4
# lmscale's defaults where a task.json sets no prefixes.
INPUT_PREFIX, OUTPUT_PREFIX, SEPARATOR = "Q: ", "\nA: ", "\n\n"
CHOICE_PREFIX = "\n  choice: "


@functools.lru_cache(maxsize=None)
def read_task_json(path: str) -> dict:
    """The task.json at `path`, with every example checked (file, example index, field)."""
    data = errors.read_json(path)
    if not isinstance(data, dict):
        raise errors.DataError("task.json must hold a JSON object", path=path)
    examples = data.get("examples")
    if examples is None:
        raise errors.DataError("no 'examples' (a folder of subtasks? pass the folder)",
                               path=path, field="examples")
    if not isinstance(examples, list) or not examples:
        raise errors.DataError("'examples' must be a non-empty list", path=path,
                               field="examples")
    for i, ex in enumerate(examples):
        where = f"examples[{i}]"
        if not isinstance(ex, dict):
            raise errors.DataError(f"{where} is not an object", path=path)
        if not isinstance(ex.get("input"), str):
            raise errors.DataError(f"{where}: missing or non-string", path=path,
                                   field="input")
        scores = ex.get("target_scores")
        target = ex.get("target")
        if scores is None and target is None:
            raise errors.DataError(f"{where}: needs 'target' or 'target_scores'", path=path,
                                   field="target")
        if scores is not None and (not isinstance(scores, dict) or not scores or
                                   not all(isinstance(v, (int, float))
                                           for v in scores.values())):
            raise errors.DataError(f"{where}: must map choices to numbers", path=path,
                                   field="target_scores")
        if target is not None and not isinstance(target, (str, list)):
            raise errors.DataError(f"{where}: must be a string or list", path=path,
                                   field="target")
    return data


def _gold_text(ex: dict) -> str:
    if "target_scores" in ex:
        scores = ex["target_scores"]
        return max(scores, key=lambda k: scores[k])
    target = ex["target"]
    return target if isinstance(target, str) else target[0]


def _demo_answer(ex: dict, rationales: Mapping[str, str] | None, path: str) -> str:
    gold = _gold_text(ex)
    if rationales is None:
        return gold
    if gold not in rationales:
        raise errors.DataError(f"demonstration {gold!r} has no chain-of-thought rationale "
                               f"(have {sorted(rationales)})", path=path)
    return f"{rationales[gold]} So the answer is {gold}."


def make_bigbench_task(path: str, name: str, generative: bool | None = None,
                       shots: int = DEFAULT_SHOTS, num_test: int | None = None,
                       seed: int = 0,
                       task_filters: Sequence[evaltask.InstanceFilter] = (),
                       rationales: Mapping[str, str] | None = None,
                       max_new_tokens: int = 64) -> evaltask.EvalTask:
    """An EvalTask from one BIG-bench task.json.

    Args:
      path: the task.json file.
      name: registry name.
      generative: None = multiple choice when the file has target_scores.
      shots: demonstrations per prompt, drawn once (seeded) from the non-test pool.
      num_test: test instances kept after filtering (None = all not in the pool).
      seed: selects the pool, the demonstrations and the test order.
      task_filters: distracting-instance filters (see tasks/filters.py).
      rationales: chain of thought per demonstration, keyed by its gold answer: each
        demonstration answers "<rationale> So the answer is <gold>." (Hu et al.'s
        Emoji Movie); every drawn demonstration needs one.
      max_new_tokens: generation budget.
    """
    data = read_task_json(path)
    has_scores = all("target_scores" in ex for ex in data["examples"])
    generative = (not has_scores) if generative is None else generative
    in_pfx = data.get("example_input_prefix", INPUT_PREFIX)
    out_pfx = data.get("example_output_prefix", OUTPUT_PREFIX)
    sep = data.get("few_shot_example_separator", SEPARATOR)
    task_prefix = data.get("task_prefix", "")
    append_choices = data.get("append_choices_to_input", True) and not generative

    def query(ex):
        text = ex["input"]
        if append_choices and "target_scores" in ex:
            text += "".join(CHOICE_PREFIX + c for c in ex["target_scores"])
        return text

    def loader(split):
        del split
        order = list(range(len(data["examples"])))
        # Seeded by the task (folder and JSON name), not the registry name or the absolute
        # path: the multiple-choice and generative forms share demonstrations and order,
        # on every machine.
        rng = random.Random(f"{pathlib.Path(path).parent.name}/{data.get('name', '')}/{seed}")
        rng.shuffle(order)
        demo_idx, test_idx = order[:shots], order[shots:]
        demos = [(query(data["examples"][i]), _demo_answer(data["examples"][i], rationales,
                                                           path)) for i in demo_idx]
        out = []
        for i in test_idx:
            ex = data["examples"][i]
            prompt = evaltask.format_demonstrations(demos, query(ex), in_pfx, out_pfx, sep,
                                                    task_prefix)
            meta = {"input": ex["input"], "index": i}
            if generative:
                out.append(evaltask.Instance(str(i), prompt, _gold_text(ex), meta=meta))
            else:
                choices = tuple(ex["target_scores"])
                out.append(evaltask.Instance(str(i), prompt, None, choices,
                                             choices.index(_gold_text(ex)), meta))
        return out

    # Choice counts vary within a task (date_understanding has 5 or 6): the baseline is
    # the mean chance of a uniform guess over the file's examples.
    chance = sum(1.0 / max(len(ex.get("target_scores", {})), 1)
                 for ex in data["examples"]) / len(data["examples"])
    stop = data.get("stop_string")
    return evaltask.EvalTask(
        name=name, kind=evaltask.GENERATIVE if generative else evaltask.MULTIPLE_CHOICE,
        checker=(checkers.CONTAINS if has_scores else checkers.EXACT) if generative else None,
        random_baseline=0.0 if generative else chance,
        stop_strings=(stop,) if stop else ("\n",), max_new_tokens=max_new_tokens,
        loader=loader,
        family="bigbench", description=str(data.get("description", ""))[:100],
        num_shots=shots, filters=tuple(task_filters), num_test=num_test)


def task_files(folder: str) -> dict[str, str]:
    """{"<task>" or "<task>.<subtask>": task.json path} for a task folder with or without
    subtask folders.

    Raises:
      errors.DataError: the folder holds no task.json with examples.
    """
    root = pathlib.Path(folder)
    top = root / "task.json"
    if top.is_file() and "examples" in errors.read_json(str(top)):
        return {root.name: str(top)}
    subs = {f"{root.name}.{p.parent.name}": str(p) for p in sorted(root.glob("*/task.json"))}
    if not subs:
        raise errors.DataError("no task.json with examples here or in subfolders",
                               path=str(root))
    return subs


# Hu et al.'s settings: 4-shot; distracting instances removed (App. D.5).
_HU_FILTERS = {
    "emoji_movie": (filters_lib.common_word_targets(),),
    "date_understanding": (filters_lib.answerable_by_copying(),),
}


# Gadre et al.'s BIG-bench tasks (App. D; data/gadre2024/tasks.csv) run 10-shot; these
# folders are not shipped, so they register only when a user puts them in the folder.
GADRE_SHOTS = {"cs_algorithms": 10, "dyck_languages": 10, "novel_concepts": 10,
               "operators": 10, "qa_wikidata": 10}

# Hu et al. (App. D.4.2) prompt Emoji Movie with chain of thought written by GPT-4 for
# the 4 demonstrations; those prompts are not published, so these are lmscale's own,
# for the 4 demonstrations seed 0 draws.
EMOJI_MOVIE_RATIONALES = {
    "high school musical": "🏫 is a school, 👩‍🎓 a student, 🎶 music and 🏀 basketball: "
                           "a musical about students at a high school with a "
                           "basketball star.",
    "ghostbusters": "👻 is a ghost, 🚫 means stop and 👬 are two men: men who stop "
                    "ghosts, busting them.",
    "moana": "👧🏽 is a girl, 🏝 an island, ⛵️ a boat and 🌋 a volcano: an island girl who "
             "sails across the ocean in the Disney film.",
    "titanic": "👩‍❤️‍👨 is a couple in love, 🚢 a ship and 💥 a crash: a love story on a "
               "great ship that hits an iceberg and sinks.",
}


def register_bigbench_folder(folder: str, prefix: str = "bb_") -> list[str]:
    """Registers every task/subtask in `folder`; returns the registered names."""
    names = []
    for key, path in task_files(folder).items():
        base = prefix + key
        data = read_task_json(path)
        top = key.split(".")[0]
        flt = _HU_FILTERS.get(top, ())
        shots = GADRE_SHOTS.get(top, DEFAULT_SHOTS)
        if all("target_scores" in ex for ex in data["examples"]):
            evaltask.register_eval_task(make_bigbench_task(path, base, False, shots,
                                                           task_filters=flt))
            evaltask.register_eval_task(make_bigbench_task(path, base + "_gen", True, shots,
                                                           task_filters=flt))
            names += [base, base + "_gen"]
        else:
            evaltask.register_eval_task(make_bigbench_task(path, base, shots=shots,
                                                           task_filters=flt))
            names.append(base)
    return names


def register_emoji_movie_cot(folder: str, name: str = "bb_emoji_movie_gen_cot"
                             ) -> evaltask.EvalTask:
    """Hu et al.'s Emoji Movie setting: 4-shot chain of thought, distracting instances
    removed, passes when the output contains the film's name (App. D.4.2)."""
    path = task_files(folder)["emoji_movie"]
    return evaltask.register_eval_task(make_bigbench_task(
        path, name, True, task_filters=_HU_FILTERS["emoji_movie"],
        rationales=EMOJI_MOVIE_RATIONALES, max_new_tokens=128))


def default_folder() -> str | None:
    """$LMSCALE_BIGBENCH_DIR, else ../shared/data/bigbench beside the checkout, if present."""
    env = os.environ.get("LMSCALE_BIGBENCH_DIR")
    if env:
        return env
    guess = pathlib.Path(__file__).resolve().parents[4] / "shared" / "data" / "bigbench"
    return str(guess) if guess.is_dir() else None


def _register_shared() -> None:
    folder = default_folder()
    if folder is None:
        return
    for task_dir in sorted(pathlib.Path(folder).iterdir()):
        if task_dir.is_dir():
            register_bigbench_folder(str(task_dir))
            if task_dir.name == "emoji_movie":
                register_emoji_movie_cot(str(task_dir))


_register_shared()
