"""Data stage: generated evaluation tasks (seeded, any number of instances).

The formats are those of the BIG-bench tasks Hu et al. evaluate with PassUntil (App.
D.4.4, Table 7): unnatural in-context learning ("Input: 2015-10-22\\nOutput: !10!22!2015!",
4-shot, exact match, stop at newline), plus modified/modular arithmetic and
date-understanding questions answered in MM/DD/YYYY.

Every task draws its test instances and a disjoint demonstration pool from one seeded
generator; the k demonstrations are fixed per task (Hu et al.: "Four instances are
randomly selected from the remaining dataset to provide context"). Names accept
`:n<instances>:s<seed>:k<shots>` (see `lmscale.data.registry.get_eval_task`).
"""
from __future__ import annotations

import datetime
import random
from typing import Callable

from lmscale.data import checkers
from lmscale.data import evaltask
from lmscale.data.tasks import wordlists

DEFAULT_NUM = 100
DEFAULT_SEED = 0
DEFAULT_SHOTS = 4
LETTERS = "abcdefgh"
_FIRST_DAY = datetime.date(1900, 1, 1)
_NUM_DAYS = (datetime.date(2099, 12, 31) - _FIRST_DAY).days

# An example generator draws one (input, target) pair from rng.
Example = tuple[str, str]


def _date(rng: random.Random) -> datetime.date:
    return _FIRST_DAY + datetime.timedelta(days=rng.randrange(_NUM_DAYS))


def dates_example(rng: random.Random) -> Example:
    """`YYYY-MM-DD` -> `!MM!DD!YYYY!` (BIG-bench unnatural_in_context_learning/dates)."""
    d = _date(rng)
    return d.isoformat(), f"!{d.month:02d}!{d.day:02d}!{d.year:04d}!"


def dates_unnatural_form_example(rng: random.Random) -> Example:
    """`!MM!DD!YYYY!` -> `YYYY-MM-DD` (.../dates_unnatural_form)."""
    x, y = dates_example(rng)
    return y, x


def identity_example(rng: random.Random) -> Example:
    """5 distinct letters of a-h, comma separated, repeated (.../identity)."""
    s = ", ".join(rng.sample(LETTERS, 5))
    return s, s


def reverse_natural_content_example(rng: random.Random) -> Example:
    """A real 5-letter word's letters, comma separated, reversed (.../reverse_natural_content)."""
    word = rng.choice(wordlists.FIVE_LETTER_WORDS)
    return ", ".join(word), ", ".join(reversed(word))


def modular_arithmetic_example(rng: random.Random) -> Example:
    """`a + b mod m` or `a * b mod m` with a, b < 100 and 2 <= m <= 19."""
    a, b, m = rng.randrange(100), rng.randrange(100), rng.randrange(2, 20)
    if rng.random() < 0.5:
        return f"{a} + {b} mod {m}", str((a + b) % m)
    return f"{a} * {b} mod {m}", str((a * b) % m)


_DU_QUESTIONS = (  # (phrase about the known day, its offset from today)
    ("Today is", 0), ("Yesterday was", -1), ("Tomorrow will be", 1),
    ("One week ago was", -7), ("One week from today will be", 7), ("10 days ago was", -10),
)
_DU_ASKED = (("today", 0), ("yesterday", -1), ("tomorrow", 1), ("one week from today", 7),
             ("one week ago", -7), ("10 days ago", -10), ("one year ago", None))


def date_understanding_example(rng: random.Random) -> Example:
    """A date-reasoning question with the answer in MM/DD/YYYY (BIG-bench date_understanding)."""
    phrase, known_offset = rng.choice(_DU_QUESTIONS)
    asked, asked_offset = rng.choice(_DU_ASKED)
    known = _date(rng)
    today = known - datetime.timedelta(days=known_offset)
    if asked_offset is None:
        year = today.year - 1
        answer = today.replace(year=year, day=min(today.day, 28 if today.month == 2 else 31))
    else:
        answer = today + datetime.timedelta(days=asked_offset)
    question = (f"{phrase} {known.strftime('%B')} {known.day}, {known.year}. "
                f"What is the date {asked} in MM/DD/YYYY?")
    return question, answer.strftime("%m/%d/%Y")


def date_distractors(target: str, rng: random.Random, count: int) -> list[str]:
    """Plausible wrong MM/DD/YYYY answers: off by days, months or years."""
    d = datetime.datetime.strptime(target, "%m/%d/%Y").date()
    out = []
    while len(out) < count:
        kind = rng.randrange(3)
        if kind == 0:
            cand = d + datetime.timedelta(days=rng.choice([-8, -2, -1, 1, 2, 8, 30]))
        elif kind == 1:
            cand = d.replace(month=rng.randrange(1, 13), day=min(d.day, 28))
        else:
            cand = d.replace(year=d.year + rng.choice([-10, -1, 1, 10]), day=min(d.day, 28))
        text = cand.strftime("%m/%d/%Y")
        if text != target and text not in out:
            out.append(text)
    return out


def unique_examples(gen: Callable[[random.Random], Example], rng: random.Random,
                    count: int) -> list[Example]:
    """`count` examples with distinct inputs (raises if the space is too small)."""
    seen, out = set(), []
    for _ in range(count * 50):
        x, y = gen(rng)
        if x not in seen:
            seen.add(x)
            out.append((x, y))
            if len(out) == count:
                return out
    raise ValueError(f"{gen.__name__}: could not draw {count} distinct examples")


def make_icl_task(name: str, gen: Callable[[random.Random], Example], num: int | None,
                  seed: int | None, shots: int | None, description: str,
                  input_prefix: str = "Input: ", output_prefix: str = "\nOutput: ",
                  separator: str = "\n", multiple_choice: bool = False,
                  checker: str = checkers.EXACT, num_choices: int = 4) -> evaltask.EvalTask:
    """A generated k-shot task in BIG-bench's JSON prompt format.

    Args:
      name: registry name.
      gen: draws one (input, target) example.
      num: test instances (default 100); seed: generator seed (default 0); shots: k
        demonstrations from a pool disjoint from the test inputs (default 4).
      multiple_choice: build choices (gold + date distractors) and score them instead.
    """
    num = DEFAULT_NUM if num is None else num
    seed = DEFAULT_SEED if seed is None else seed
    shots = DEFAULT_SHOTS if shots is None else shots

    def loader(split):
        del split
        rng = random.Random(f"{name.split(':')[0]}/{seed}")
        pool_size = max(8 * shots, 32)
        examples = unique_examples(gen, rng, num + pool_size)
        tests, pool = examples[:num], examples[num:]
        demos = rng.sample(pool, shots)
        out = []
        for i, (x, y) in enumerate(tests):
            prompt = evaltask.format_demonstrations(demos, x, input_prefix, output_prefix,
                                                    separator)
            meta = {"input": x, "demonstrations": demos}
            if multiple_choice:
                choices = [y] + date_distractors(y, rng, num_choices - 1)
                rng.shuffle(choices)
                out.append(evaltask.Instance(f"{i}", prompt, None, tuple(choices),
                                             choices.index(y), meta))
            else:
                out.append(evaltask.Instance(f"{i}", prompt, y, meta=meta))
        return out

    return evaltask.EvalTask(
        name=name, kind=evaltask.MULTIPLE_CHOICE if multiple_choice else evaltask.GENERATIVE,
        checker=None if multiple_choice else checker,
        random_baseline=1.0 / num_choices if multiple_choice else 0.0,
        stop_strings=("\n",), max_new_tokens=24, loader=loader, family="generated",
        description=description, num_shots=shots)


_SPECS = {
    "gen_uicl_dates": (dates_example, "reformat YYYY-MM-DD to !MM!DD!YYYY!", {}),
    "gen_uicl_dates_unnatural_form": (dates_unnatural_form_example,
                                      "reformat !MM!DD!YYYY! to YYYY-MM-DD", {}),
    "gen_uicl_identity": (identity_example, "repeat 5 distinct letters of a-h", {}),
    "gen_uicl_reverse_natural_content": (reverse_natural_content_example,
                                         "reverse the letters of a 5-letter word", {}),
    "gen_modular_arithmetic": (modular_arithmetic_example, "a + b or a * b modulo m", {}),
    "gen_date_understanding": (date_understanding_example,
                               "date reasoning, answer in MM/DD/YYYY (output contains target)",
                               {"input_prefix": "Q: ", "output_prefix": "\nA: ",
                                "separator": "\n\n", "checker": checkers.CONTAINS}),
    "gen_date_understanding_mc": (date_understanding_example,
                                  "date reasoning, choose among 4 MM/DD/YYYY answers",
                                  {"input_prefix": "Q: ", "output_prefix": "\nA:",
                                   "separator": "\n\n", "multiple_choice": True}),
}


def _modified_addition_example(rng: random.Random) -> Example:
    """BIG-bench modified_arithmetic/three_digit_addition_plus_one: 5 worked lines inside
    the input, then `a + b ->`; the answer is a + b + 1."""
    lines = ["In the following lines, the symbol -> represents a simple mathematical "
             "operation."]
    for _ in range(5):
        a, b = rng.randrange(1000), rng.randrange(1000)
        lines.append(f"{a} + {b} -> {a + b + 1}")
    a, b = rng.randrange(1000), rng.randrange(1000)
    lines.append(f"{a} + {b} ->")
    return "\n".join(lines), str(a + b + 1)


def _register() -> None:
    for base, (gen, desc, kw) in _SPECS.items():
        def factory(name, num=None, seed=None, shots=None, _gen=gen, _desc=desc, _kw=kw):
            return make_icl_task(name, _gen, num, seed, shots, _desc, **_kw)

        evaltask.register_factory(base, factory)
        evaltask.register_eval_task(factory(base))

    def arith_factory(name, num=None, seed=None, shots=None):
        # The demonstrations live inside each input, as in BIG-bench: zero extra shots.
        return make_icl_task(name, _modified_addition_example, num, seed, shots or 0,
                             "three-digit addition plus one (5 worked lines inside)",
                             input_prefix="", output_prefix=" ", separator="\n\n")

    evaltask.register_factory("gen_modified_addition_plus_one", arith_factory)
    evaltask.register_eval_task(arith_factory("gen_modified_addition_plus_one"))


_register()
