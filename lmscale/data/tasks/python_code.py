"""Data stage: easy evaluation tasks on held-out Python code, for tiny byte-level models.

Built from the validation split of the embedded corpus (`lmscale_stdlib_py`), which the
training stream never sees, so a model of ~0.1-1M parameters trained on a few MB of
Python can partly solve them and a scaling ladder shows a trend:

  py_import_completion   "...\\nimport " -> the imported module name (exact)
  py_identifier_copy     complete an identifier that already occurs in the context (exact)
  py_copy_line           a line, then its first half again -> the second half (exact)
  py_next_line_mc        the real next line among 3 lines from other files (1/4 baseline)

Instances are a seeded sample; names accept `:n<instances>:s<seed>`.
"""
from __future__ import annotations

import functools
import random
import re

from lmscale.data import checkers
from lmscale.data import corpora
from lmscale.data import evaltask

DEFAULT_NUM = 200
CONTEXT_CHARS = 384
IDENTIFIER_STOPS = ("\n", " ", "(", ")", ".", ",", ":", "[", "]", "=", "'", '"')
_IMPORT = re.compile(r"^(import|from) ([A-Za-z_]\w*)", re.M)
_IDENT = re.compile(r"[A-Za-z_]\w{4,}")


@functools.lru_cache(maxsize=1)
def _files() -> tuple[tuple[str, str], ...]:
    paths = corpora.stdlib_files()["validation"]
    return tuple(zip(paths, corpora.stdlib_texts("validation")))


def _context_before(text: str, pos: int, chars: int = CONTEXT_CHARS) -> str:
    """Up to `chars` characters before `pos`, starting at a line start."""
    start = max(0, pos - chars)
    if start > 0:
        nl = text.find("\n", start)
        start = nl + 1 if 0 <= nl < pos else start
    return text[start:pos]


def import_completion(rng: random.Random, num: int, context_chars: int = CONTEXT_CHARS
                      ) -> list[evaltask.Instance]:
    cands = []
    for path, text in _files():
        for m in _IMPORT.finditer(text):
            prompt = _context_before(text, m.start(2), context_chars)
            cands.append((path, m.start(), prompt, m.group(2)))
    return _sample(cands, rng, num)


def identifier_copy(rng: random.Random, num: int, context_chars: int = CONTEXT_CHARS
                    ) -> list[evaltask.Instance]:
    cands = []
    for path, text in _files():
        for m in _IDENT.finditer(text):
            context = _context_before(text, m.start(), context_chars)
            if len(context) > min(64, context_chars // 2) and re.search(rf"\b{m.group()}\b", context):
                # Keep the first character so the identifier is determined by the context.
                cands.append((path, m.start(), context + m.group()[0], m.group()[1:]))
    return _sample(cands, rng, num)


def copy_line(rng: random.Random, num: int, context_chars: int = CONTEXT_CHARS
              ) -> list[evaltask.Instance]:
    del context_chars  # the prompt is one line and its first half
    cands = []
    for path, text in _files():
        for number, line in enumerate(text.splitlines()):
            line = line.strip()
            if 24 <= len(line) <= 72:
                half = len(line) // 2
                cands.append((path, number, f"{line}\n{line[:half]}", line[half:]))
    return _sample(cands, rng, num)


def next_line_mc(rng: random.Random, num: int, num_choices: int = 4
                 ) -> list[evaltask.Instance]:
    per_file = [(path, [l for l in text.splitlines() if l.strip()]) for path, text in _files()]
    cands = []
    for fi, (path, lines) in enumerate(per_file):
        for j in range(6, len(lines)):
            if len(lines[j].strip()) >= 8:
                cands.append((fi, j))
    rng.shuffle(cands)
    out = []
    for fi, j in cands[:num]:
        path, lines = per_file[fi]
        gold_line = lines[j]
        choices = [gold_line]
        while len(choices) < num_choices:
            fo = rng.randrange(len(per_file))
            if fo == fi or not per_file[fo][1]:
                continue
            cand = rng.choice(per_file[fo][1])
            if len(cand.strip()) >= 8 and cand not in choices:
                choices.append(cand)
        rng.shuffle(choices)
        prompt = "\n".join(lines[j - 6:j]) + "\n"
        out.append(evaltask.Instance(f"{path.rsplit('/', 1)[-1]}:{j}", prompt, None,
                                     tuple(choices), choices.index(gold_line),
                                     {"input": prompt}))
    return out


def _sample(cands, rng, num):
    rng.shuffle(cands)
    return [evaltask.Instance(f"{path.rsplit('/', 1)[-1]}:{pos}", prompt, target,
                              meta={"input": prompt})
            for path, pos, prompt, target in cands[:num]]


_SPECS = {
    "py_import_completion": (import_completion, IDENTIFIER_STOPS,
                             "complete the module name after 'import '/'from '"),
    "py_identifier_copy": (identifier_copy, IDENTIFIER_STOPS,
                           "complete an identifier seen earlier in the context"),
    "py_copy_line": (copy_line, ("\n",), "repeat the second half of the previous line"),
}


def code_task(name: str, kind: str, build, *, seed, num: int, context: int | None,
              min_context: int, default_context: int | None, stops, max_new_tokens: int,
              description: str, random_baseline: float = 0.0) -> evaltask.EvalTask:
    """A task on the corpus's validation files: `build(rng, num[, context])` makes its
    instances, seeded by the name's base and `seed`; a `:c` context shorter than
    `min_context` characters is refused, naming the task."""
    if context is not None and context < min_context:
        raise ValueError(f"task {name!r}: context of {context} chars; need >= {min_context}")
    base = name.split(":")[0]
    extra = () if default_context is None else (context or default_context,)

    def loader(split):
        del split
        return build(random.Random(f"{base}/{seed or 0}"), num, *extra)
    checker = checkers.EXACT if kind == evaltask.GENERATIVE else None
    return evaltask.EvalTask(
        name=name, kind=kind, checker=checker, random_baseline=random_baseline,
        stop_strings=tuple(stops), max_new_tokens=max_new_tokens, loader=loader,
        family="python", description=description)


def _register() -> None:
    for base, (build, stops, desc) in _SPECS.items():
        def factory(name, num=None, seed=None, shots=None, context=None, _build=build,
                    _stops=stops, _desc=desc):
            del shots
            return code_task(name, evaltask.GENERATIVE, _build, seed=seed,
                             num=num or DEFAULT_NUM, context=context, min_context=16,
                             default_context=CONTEXT_CHARS, stops=_stops,
                             max_new_tokens=48, description=_desc)

        evaltask.register_factory(base, factory)
        evaltask.register_eval_task(factory(base))

    def mc_factory(name, num=None, seed=None, shots=None):
        del shots
        return code_task(name, evaltask.MULTIPLE_CHOICE, next_line_mc, seed=seed,
                         num=num or DEFAULT_NUM, context=None, min_context=0,
                         default_context=None, stops=("\n",), max_new_tokens=80,
                         random_baseline=0.25,
                         description="choose the real next line among lines from other files")

    evaltask.register_factory("py_next_line_mc", mc_factory)
    evaltask.register_eval_task(mc_factory("py_next_line_mc"))

_register()
