"""Data stage: graded evaluation tasks on held-out Python code, for a CPU scaling ladder.

The tasks of `python_code` either sit near chance along a ladder of 24k-212k parameter
byte-level models (`py_next_line_mc`) or leave most instances at the PassUntil cap
(`py_import_completion`). These vary the difficulty per instance, so that each rung has
instances it passes often and instances it passes rarely, and the task's PU spans
decades inside the ladder (Hu et al.'s emergence, measured rather than capped):

  py_identifier_tail  an identifier already seen in the context, cut `t` characters
                      before its end (t = 1..8, cycled over the instances so every
                      difficulty is equally represented) -> the last t characters (exact)
  py_identifier_mc    which of 4 identifiers of the same length comes next, where only
                      the gold one occurs in the context (copying it is what a larger
                      model learns; 1/4 baseline)

Both use the validation split of the embedded corpus (never trained on) and prompts of at
most `:c<chars>` characters (default 96, so prompt and answer fit a 128-byte model).
Instances are a seeded sample; names accept `:n<instances>:s<seed>:c<chars>`.
"""
from __future__ import annotations

import random
import re

from lmscale.data import evaltask
from lmscale.data.tasks import python_code

DEFAULT_NUM = 120
CONTEXT_CHARS = 96
MAX_TAIL = 8
# Any character that cannot continue an identifier ends the answer.
TAIL_STOPS = python_code.IDENTIFIER_STOPS + (
    "+", "-", "*", "/", "%", "<", ">", "!", "#", "{", "}", ";", "\t", "|", "&", "@")
_IDENT = re.compile(r"[A-Za-z_]\w{4,}")
_WORD = re.compile(r"[A-Za-z_]\w*")


def _seen_before(files, context_chars):
    """(file name, position, context, word) where `word` occurs earlier in the context."""
    for path, text in files:
        for m in _IDENT.finditer(text):
            context = python_code._context_before(text, m.start(), context_chars)
            if len(context) > context_chars // 2 and re.search(rf"\b{m.group()}\b", context):
                yield path.rsplit("/", 1)[-1], m.start(), context, m.group()


def identifier_tail(rng: random.Random, num: int, context_chars: int = CONTEXT_CHARS
                    ) -> list[evaltask.Instance]:
    """`num` instances whose tail length t cycles through 1..MAX_TAIL (meta["tail"])."""
    cands = list(_seen_before(python_code._files(), context_chars))
    rng.shuffle(cands)
    out, used = [], set()
    for t in list(range(1, MAX_TAIL + 1)) * (num // MAX_TAIL + 1):
        if len(out) == num:
            break
        for j, (name, pos, context, word) in enumerate(cands):
            if j not in used and len(word) > t and len(context) + len(word) - t <= context_chars:
                used.add(j)
                prompt = context + word[:-t]
                out.append(evaltask.Instance(f"{name}:{pos}:t{t}", prompt, word[-t:],
                                             meta={"input": prompt, "tail": t}))
                break
    return out


def identifier_mc(rng: random.Random, num: int, context_chars: int = CONTEXT_CHARS,
                  num_choices: int = 4) -> list[evaltask.Instance]:
    """`num` 4-way questions: the gold identifier occurs in the context, the 3 distractors
    (identifiers of the same length from other files) do not."""
    files = python_code._files()
    by_len: dict[int, list[str]] = {}
    for _, text in files:
        for w in set(_IDENT.findall(text)):
            by_len.setdefault(len(w), []).append(w)
    for words in by_len.values():
        words.sort()
    cands = list(_seen_before(files, context_chars))
    rng.shuffle(cands)
    out = []
    for name, pos, context, word in cands:
        if len(out) == num:
            break
        present = set(_WORD.findall(context))
        pool = [w for w in by_len.get(len(word), ()) if w not in present and w != word]
        if len(set(pool)) < num_choices - 1:
            continue
        choices = [word]
        while len(choices) < num_choices:
            w = rng.choice(pool)
            if w not in choices:
                choices.append(w)
        rng.shuffle(choices)
        out.append(evaltask.Instance(f"{name}:{pos}", context, None, tuple(choices),
                                     choices.index(word), {"input": context}))
    return out


def _register() -> None:
    def tail_factory(name, num=None, seed=None, shots=None, context=None):
        del shots
        return python_code.code_task(
            name, evaltask.GENERATIVE, identifier_tail, seed=seed, num=num or DEFAULT_NUM,
            context=context, min_context=32, default_context=CONTEXT_CHARS, stops=TAIL_STOPS,
            max_new_tokens=MAX_TAIL + 4,
            description="finish an identifier seen earlier in the context (1-8 chars left)")

    def mc_factory(name, num=None, seed=None, shots=None, context=None):
        del shots
        return python_code.code_task(
            name, evaltask.MULTIPLE_CHOICE, identifier_mc, seed=seed,
            num=num or 2 * DEFAULT_NUM, context=context, min_context=32,
            default_context=CONTEXT_CHARS, stops=("\n",), max_new_tokens=32,
            random_baseline=0.25,
            description="choose the identifier of the context among 4 of the same length")

    for base, factory in (("py_identifier_tail", tail_factory),
                          ("py_identifier_mc", mc_factory)):
        evaltask.register_factory(base, factory)
        evaltask.register_eval_task(factory(base))

_register()
