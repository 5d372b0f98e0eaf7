"""Data stage: the papers' benchmark datasets, defined on TFDS (run when the data is present).

Du et al. (Table 1): TriviaQA (closed book, few-shot, EM), HellaSwag (zero-shot), RACE
(few-shot), WinoGrande (zero-shot), GSM8K (few-shot chain-of-thought, EM on the final
number). Gadre et al. (17-task subset, shots from its App. D): ARC-Easy, BoolQ, PIQA,
SQuAD and HellaSwag 10-shot; COPA, CoQA, HellaSwag, LAMBADA and Winograd (WSC273)
zero-shot. Winograd and WinoGrande are partially scored, as LLM-foundry's schema tasks and
lm-evaluation-harness do (each candidate completes the context, the rest of the sentence
is scored); `winograd_full` and `winogrande_full` keep full-sentence scoring. MMLU is
not in the TFDS catalogue; `make_mmlu_task` reads the original CSV folder instead. None
of Du et al.'s Chinese sets is in TFDS. docs/tasks.md lists every task, its format and
checker, and what is missing.

Data are read with `tfds.load(..., download=False)` from $TFDS_DATA_DIR (or
$LMSCALE_TFDS_DIR), so nothing is fetched at run time; tests use tfds.testing.mock_data.
Demonstrations come from the training split (seeded), never from the evaluated split.
"""
from __future__ import annotations

import csv
import dataclasses
import glob
import os
import random
import re
from typing import Any, Callable, NamedTuple

from lmscale.data import checkers
from lmscale.data import errors
from lmscale.data import evaltask

GSM8K_ANSWER = r"The answer is (-?[\d,]*\.?\d+)"


class Gen(NamedTuple):
    """An open answer: `demo` follows the query in a demonstration (with its leading
    space; chain of thought for GSM8K), `target` is what the checker compares, `aliases`
    are further accepted answers."""

    demo: str
    target: str
    aliases: tuple[str, ...] = ()


class Partial(NamedTuple):
    """A Winograd-style question for partial scoring: the `contexts` differ (the sentence
    up to the blank with each candidate), the `continuation` (the rest of the sentence,
    with its leading space) is shared, `gold` indexes the right context."""

    contexts: tuple[str, ...]
    continuation: str
    gold: int


def _s(x: Any) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


@dataclasses.dataclass(frozen=True)
class TfdsDef:
    """How one TFDS dataset becomes instances.

    `convert(example) -> list[(query, answer)]` gives, per example, the query text and
    either (choices, gold index) (multiple choice) or a `Gen` (open answer, checked by
    `checker`).
    """

    name: str
    tfds_name: str
    eval_split: str
    shots_split: str | None
    shots: int
    convert: Callable[[dict], list[tuple[str, Any]]]
    num_choices: int = 0
    checker: str | None = None
    separator: str = "\n\n"
    stop_strings: tuple[str, ...] = ("\n",)
    max_new_tokens: int = 32
    answer_pattern: str | None = None
    description: str = ""
    partial: bool = False  # `convert` gives `Partial` answers (scorer.score_partial)


def load_examples(tfds_name: str, split: str) -> list[dict]:
    import tensorflow_datasets as tfds

    data_dir = os.environ.get("LMSCALE_TFDS_DIR") or None
    try:
        ds = tfds.load(tfds_name, split=split, data_dir=data_dir, download=False)
    except AssertionError as e:  # TFDS's way of saying "not prepared"
        raise errors.DataError(f"TFDS dataset not prepared ({e}); prepare it with "
                               "`tfds build` and set TFDS_DATA_DIR or LMSCALE_TFDS_DIR",
                               path=f"{tfds_name}:{split}") from None
    return list(tfds.as_numpy(ds))


def _mc(query: str, choices, gold: int, field: str, tfds_name: str):
    choices = tuple(choices)
    if not 0 <= gold < len(choices):
        raise errors.DataError(f"gold index {gold} outside {len(choices)} choices",
                               path=tfds_name, field=field)
    return query, (choices, gold)


def _hellaswag(ex):
    ctx = f"{_s(ex['activity_label'])}: {_s(ex['context'])}"
    return [_mc(ctx, [" " + _s(e) for e in ex["endings"]], int(ex["label"]), "label",
                "hellaswag")]


def _winogrande_full(ex):
    # Full-sentence scoring: the options differ before the blank, so no shared prefix.
    sent = _s(ex["sentence"])
    opts = [sent.replace("_", _s(ex[k]), 1) for k in ("option1", "option2")]
    return [_mc("", opts, int(ex["label"]), "label", "winogrande")]


def _partial(head: str, options, tail: str, gold: int, field: str, tfds_name: str):
    """('', Partial) of a schema: contexts `head + option`, continuation `tail` with one
    leading space (lm-evaluation-harness's WinoGrande: `" " + rest.strip()`)."""
    tail = tail.strip()
    if not tail:
        raise errors.DataError("nothing follows the blank, so partial scoring has no "
                               "continuation", path=tfds_name, field=field)
    contexts = tuple(head + _s(o) for o in options)
    if not 0 <= gold < len(contexts):
        raise errors.DataError(f"gold index {gold} outside {len(contexts)} options",
                               path=tfds_name, field="label")
    return "", Partial(contexts, " " + tail, gold)


def _winogrande(ex):
    sent = _s(ex["sentence"])
    blank = sent.find("_")
    if blank < 0:
        raise errors.DataError("sentence has no '_' blank", path="winogrande",
                               field="sentence")
    return [_partial(sent[:blank], [ex["option1"], ex["option2"]], sent[blank + 1:],
                     int(ex["label"]), "sentence", "winogrande")]


def _trivia_qa(ex):
    answer = ex["answer"]
    value = _s(answer["value"])
    aliases = tuple(dict.fromkeys(_s(a) for a in list(answer["aliases"]) +
                                  list(answer["normalized_aliases"])))
    return [(f"Question: {_s(ex['question'])}\nAnswer:", Gen(" " + value, value, aliases))]


def _race(ex):
    out = []
    for q, opts, ans in zip(ex["questions"], ex["options"], ex["answers"]):
        query = f"Article: {_s(ex['article'])}\n\nQuestion: {_s(q)}\nAnswer:"
        out.append(_mc(query, [" " + _s(o) for o in opts], "ABCD".find(_s(ans)), "answers",
                       "race"))
    return out


def gsm8k_cot(answer: str) -> tuple[str, str]:
    """GSM8K's worked answer as chain of thought: drop <<calc>> notes; '#### 72' becomes
    'The answer is 72.'. Returns (reasoning with the final sentence, final number)."""
    text, _, final = answer.rpartition("####")
    final = final.strip().replace(",", "")
    text = re.sub(r"<<[^>]*>>", "", text).strip().replace("\n", " ")
    return f"{text} The answer is {final}.", final


def _gsm8k(ex):
    reasoning, final = gsm8k_cot(_s(ex["answer"]))
    return [(f"Question: {_s(ex['question'])}\nAnswer:", Gen(" " + reasoning, final))]


def _arc(ex):
    labels = [int(l) for l in ex["choices"]["label"]]
    gold = labels.index(int(ex["answerKey"])) if int(ex["answerKey"]) in labels else -1
    return [_mc(f"Question: {_s(ex['question'])}\nAnswer:",
                [" " + _s(t) for t in ex["choices"]["text"]], gold, "answerKey", "ai2_arc")]


def _piqa(ex):
    return [_mc(f"Question: {_s(ex['goal'])}\nAnswer:", [" " + _s(ex["sol1"]),
                                                        " " + _s(ex["sol2"])],
                int(ex["label"]), "label", "piqa")]


def _boolq(ex):
    q = _s(ex["question"]).rstrip("?")
    return [_mc(f"{_s(ex['passage'])}\nQuestion: {q}?\nAnswer:", [" no", " yes"],
                int(bool(ex["answer"])), "answer", "bool_q")]


def _copa(ex):
    link = {"cause": " because", "effect": " therefore"}.get(_s(ex["question"]), " and")
    premise = _s(ex["premise"]).rstrip(".")

    def low(c):
        c = _s(c)
        return " " + c[:1].lower() + c[1:]

    return [_mc(premise + link, [low(ex["choice1"]), low(ex["choice2"])], int(ex["label"]),
                "label", "super_glue/copa")]


def _lambada(ex):
    passage = _s(ex["passage"]).rstrip()
    head, _, last = passage.rpartition(" ")
    return [(head, Gen(" " + last, last))]


def _wsc273_full(ex):
    # Full-sentence scoring, as for WinoGrande: the pronoun replaced by each candidate.
    text, start, end = _s(ex["text"]), int(ex["pronoun_start"]), int(ex["pronoun_end"])
    opts = [text[:start] + _s(ex[k]) + text[end:] for k in ("option1", "option2")]
    return [_mc("", opts, int(ex["label"]), "label", "wsc273")]


def _wsc273(ex):
    # LLM-foundry's schema form: the text before the pronoun with each candidate, then the
    # shared rest of the sentence.
    text, start, end = _s(ex["text"]), int(ex["pronoun_start"]), int(ex["pronoun_end"])
    return [_partial(text[:start], [ex["option1"], ex["option2"]], text[end:],
                     int(ex["label"]), "pronoun_end", "wsc273")]


def _squad(ex):
    answers = tuple(dict.fromkeys(_s(a) for a in ex["answers"]["text"]))
    if not answers:
        raise errors.DataError("question without an answer", path="squad",
                               field="answers.text")
    query = (f"Title: {_s(ex['title'])}\nBackground: {_s(ex['context'])}\n"
             f"Question: {_s(ex['question'])}\nAnswer:")
    return [(query, Gen(" " + answers[0], answers[0], answers[1:]))]


def _coqa(ex):
    # One instance per turn: the story, the earlier turns with their answers, then the turn.
    story, out, history = _s(ex["story"]), [], ""
    for q, a in zip(ex["questions"], ex["answers"]["input_text"]):
        q, a = _s(q), _s(a)
        out.append((f"{story}\n\n{history}Q: {q}\nA:", Gen(" " + a, a)))
        history += f"Q: {q}\nA: {a}\n\n"
    return out


_LAST_WORD_STOPS = ("\n",)

# Shot counts: Du et al. Table 1 and Gadre et al. App. D (data/gadre2024/tasks.csv).
DEFS = (
    TfdsDef("hellaswag", "hellaswag", "validation", None, 0, _hellaswag, 4,
            description="HellaSwag, zero-shot, 4 endings (Du; Gadre hellaswag_zeroshot)"),
    TfdsDef("hellaswag_10shot", "hellaswag", "validation", "train", 10, _hellaswag, 4,
            description="HellaSwag, 10-shot (Gadre et al.)"),
    TfdsDef("winogrande", "winogrande", "validation", None, 0, _winogrande, 2,
            partial=True,
            description="WinoGrande, zero-shot, partial scoring (Du et al.)"),
    TfdsDef("winogrande_full", "winogrande", "validation", None, 0, _winogrande_full, 2,
            description="WinoGrande, zero-shot, full-sentence scoring"),
    TfdsDef("winograd", "wsc273", "test", None, 0, _wsc273, 2, partial=True,
            description="Winograd WSC273, zero-shot, partial scoring (Gadre et al.)"),
    TfdsDef("winograd_full", "wsc273", "test", None, 0, _wsc273_full, 2,
            description="Winograd WSC273, zero-shot, full-sentence scoring"),
    TfdsDef("triviaqa_closed_book", "trivia_qa/rc.nocontext", "validation", "train", 5,
            _trivia_qa, checker=checkers.EXACT_NORM,
            description="TriviaQA closed book, 5-shot, normalised exact match with aliases"),
    TfdsDef("race_high", "race/high", "test", "train", 3, _race, 4,
            description="RACE-high, 3-shot"),
    TfdsDef("race_middle", "race/middle", "test", "train", 3, _race, 4,
            description="RACE-middle, 3-shot"),
    TfdsDef("gsm8k_cot", "gsm8k", "test", "train", 8, _gsm8k, separator="\n\n",
            checker=checkers.NUMBER, stop_strings=("\n\n", "\nQuestion:"),
            max_new_tokens=320,
            description="GSM8K, 8-shot chain of thought, the last number against '####'"),
    TfdsDef("arc_easy", "ai2_arc/ARC-Easy", "test", "train", 10, _arc, 4,
            description="ARC-Easy, 10-shot (Gadre et al.)"),
    TfdsDef("piqa", "piqa", "validation", "train", 10, _piqa, 2,
            description="PIQA, 10-shot (Gadre et al.)"),
    TfdsDef("boolq", "bool_q", "validation", "train", 10, _boolq, 2,
            description="BoolQ, 10-shot, no/yes (Gadre et al.)"),
    TfdsDef("copa", "super_glue/copa", "validation", None, 0, _copa, 2,
            description="COPA, zero-shot (Gadre et al.)"),
    TfdsDef("lambada", "lambada", "test", None, 0, _lambada, checker=checkers.LAST_WORD,
            stop_strings=_LAST_WORD_STOPS, max_new_tokens=16,
            description="LAMBADA, zero-shot, the generation's first word is the last word"),
    TfdsDef("squad", "squad/v1.1", "validation", "train", 10, _squad,
            checker=checkers.EXACT_NORM, max_new_tokens=48,
            description="SQuAD v1.1, 10-shot, normalised exact match with every answer"),
    TfdsDef("coqa", "coqa", "test", None, 0, _coqa, checker=checkers.EXACT_NORM,
            max_new_tokens=48,
            description="CoQA, zero-shot, each turn after its history, normalised EM"),
)


def _format(defn: TfdsDef, query: str, answer: Any) -> str:
    if isinstance(answer, Gen):
        return query + answer.demo
    if isinstance(answer, Partial):
        return query + answer.contexts[answer.gold] + answer.continuation
    choices, gold = answer
    return query + choices[gold]


def make_tfds_task(defn: TfdsDef, seed: int = 0) -> evaltask.EvalTask:
    """The EvalTask for one definition (data read on first `instances` call)."""
    def loader(split):
        del split
        examples = load_examples(defn.tfds_name, defn.eval_split)  # names it if unprepared
        demos = []
        if defn.shots:
            pool = [qa for ex in load_examples(defn.tfds_name, defn.shots_split)[:2000]
                    for qa in defn.convert(ex)]
            if len(pool) < defn.shots:
                raise errors.DataError(f"{len(pool)} examples for {defn.shots} "
                                       "demonstrations", path=f"{defn.tfds_name}:"
                                       f"{defn.shots_split}")
            demos = random.Random(f"{defn.name}/{seed}").sample(pool, defn.shots)
        prefix = "".join(_format(defn, q, a) + defn.separator for q, a in demos)
        out = []
        for i, ex in enumerate(examples):
            for j, (query, answer) in enumerate(defn.convert(ex)):
                iid = f"{i}" if j == 0 else f"{i}.{j}"
                meta = {"input": query}
                if defn.partial:
                    out.append(evaltask.Instance(iid, prefix + query, answer.continuation,
                                                 answer.contexts, answer.gold, meta))
                elif defn.num_choices:
                    choices, gold = answer
                    out.append(evaltask.Instance(iid, prefix + query, None, choices, gold,
                                                 meta))
                else:
                    if answer.aliases:
                        meta["aliases"] = answer.aliases
                    out.append(evaltask.Instance(iid, prefix + query, answer.target,
                                                 meta=meta))
        return out

    mc = bool(defn.num_choices)
    return evaltask.EvalTask(
        name=defn.name, kind=evaltask.MULTIPLE_CHOICE if mc else evaltask.GENERATIVE,
        checker=None if mc else (defn.checker or checkers.EXACT),
        random_baseline=1.0 / defn.num_choices if mc else 0.0,
        stop_strings=defn.stop_strings, max_new_tokens=defn.max_new_tokens, loader=loader,
        family="tfds", description=defn.description, num_shots=defn.shots,
        answer_pattern=defn.answer_pattern, partial_scoring=defn.partial)


def make_mmlu_task(data_dir: str, name: str = "mmlu", shots: int = 5) -> evaltask.EvalTask:
    """MMLU (Hendrycks et al.) from its CSV release: `<data_dir>/{dev,test}/<subject>_*.csv`
    with rows (question, A, B, C, D, answer letter); `shots` demonstrations per subject
    from dev, as in the original evaluation."""
    def read(split):
        files = errors.expand_glob(os.path.join(data_dir, split, "*.csv"))
        rows = {}
        for path in files:
            subject = re.sub(r"_(dev|test|val)$", "", os.path.basename(path)[:-4])
            with open(path, newline="", encoding="utf-8") as f:
                for line, row in enumerate(csv.reader(f), start=1):
                    if len(row) != 6 or row[5].strip() not in ("A", "B", "C", "D"):
                        raise errors.DataError("expected 6 columns ending in A/B/C/D",
                                               path=path, line=line)
                    rows.setdefault(subject, []).append((path, line, row))
        return rows

    def loader(split):
        del split
        dev, test = read("dev"), read("test")
        out = []
        for subject, items in sorted(test.items()):
            head = f"The following are multiple choice questions about " \
                   f"{subject.replace('_', ' ')}.\n\n"

            def q(row):
                return row[0] + "".join(f"\n{l}. {row[1 + k]}" for k, l in
                                        enumerate("ABCD")) + "\nAnswer:"

            demos = "".join(f"{q(r)} {r[5].strip()}\n\n" for _, _, r in
                            dev.get(subject, [])[:shots])
            for path, line, row in items:
                out.append(evaltask.Instance(f"{subject}:{line}", head + demos + q(row),
                                             None, (" A", " B", " C", " D"),
                                             "ABCD".index(row[5].strip()),
                                             {"input": row[0], "subject": subject}))
        return out

    return evaltask.EvalTask(name=name, kind=evaltask.MULTIPLE_CHOICE, checker=None,
                             random_baseline=0.25, stop_strings=("\n",), max_new_tokens=2,
                             loader=loader, family="mmlu", num_shots=shots,
                             description="MMLU, 5-shot per subject, from the CSV release")


def _register() -> None:
    for defn in DEFS:
        evaltask.register_eval_task(make_tfds_task(defn))
    mmlu_dir = os.environ.get("LMSCALE_MMLU_DIR")
    if mmlu_dir and glob.glob(os.path.join(mmlu_dir, "test", "*.csv")):
        evaltask.register_eval_task(make_mmlu_task(mmlu_dir))


_register()
