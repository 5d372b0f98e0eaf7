"""Type and range checks of config dataclasses against their annotations, for any stage.

Top-level and free of lmscale imports, so every stage's configs can call it from
`__post_init__`:

    @dataclasses.dataclass(frozen=True)
    class StudyConfig:
        token_multiplier: float = 20.0
        eval_checkpoints: int = dataclasses.field(default=4, metadata={"min": 1})

        def __post_init__(self):
            check_fields(self, error=ConfigError)

A wrong value raises naming the class, the field, the value and what was expected:
`LadderConfig.token_multipliers=['abc']: entry 0 ('abc'): expected float, got str`. Understood annotations:
int (bools rejected), float (ints accepted), str, bool, None, classes, `X | None` /
`Optional[X]`, `tuple[X, ...]`, `tuple[X, Y]`, bare `tuple` and `list[X]` (a list is accepted for a
tuple: gin writes lists). Integers and reals are `numbers.Integral` / `numbers.Real`
(numpy scalars pass). Others (`Any`, callables, forward references that do not resolve)
are not checked. Ranges come from field metadata, or from the `ranges` argument (for a
class whose fields are declared without metadata): `min`, `max` (inclusive), `choices`;
a range applies to every entry of a sequence value.

Nested dataclasses (a field holding a config, or a sequence of them) are checked too, and
a bad nested field is named with its path:
`LadderConfig.seeds=(0, 'a'): entry 1 ('a'): expected int, got str (in StudyConfig.ladder)`.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import types
import typing
from typing import Any


def _name(tp) -> str:
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _problem(value: Any, tp) -> str | None:
    """Why `value` does not fit annotation `tp`, or None when it fits (or is unchecked)."""
    if tp is Any or tp is None:
        return None if tp is Any or value is None else f"expected None"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if all(_problem(value, a) for a in args):
            return f"expected {' or '.join(_name(a) for a in args)}, got " \
                   f"{type(value).__name__}"
        return None
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return f"expected a sequence of {_name(args[0]) if args else 'values'}, got " \
                   f"{type(value).__name__}"
        if origin is tuple and args and args[-1] is not Ellipsis and len(args) != len(value):
            return f"expected {len(args)} entries, got {len(value)}"
        element_types = args[:1] * len(value) if (origin is list or args[-1:] == (Ellipsis,)) \
            else args
        for i, (v, t) in enumerate(zip(value, element_types)):
            why = _problem(v, t)
            if why:
                return f"entry {i} ({v!r}): {why}"
        return None
    if origin is not None or not isinstance(tp, type):
        return None  # dict[...], Callable[...], Literal, ...: not checked here
    if tp is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif tp is tuple:
        ok = isinstance(value, (tuple, list))
    else:
        ok = isinstance(value, tp)
    return None if ok else f"expected {_name(tp)}, got {type(value).__name__}"


def _range_problem(value: Any, meta: typing.Mapping) -> str | None:
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            why = _range_problem(v, meta)
            if why:
                return f"entry {i} ({v!r}): {why}"
        return None
    if "choices" in meta and value not in meta["choices"]:
        return f"expected one of {list(meta['choices'])}"
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return None
    if "min" in meta and value < meta["min"]:
        return f"expected >= {meta['min']}"
    if "max" in meta and value > meta["max"]:
        return f"expected <= {meta['max']}"
    return None


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        return {}


def check_fields(obj: Any, error: type[Exception] = ValueError,
                 ranges: typing.Mapping[str, typing.Mapping] | None = None,
                 nested: bool = True) -> None:
    """Checks every field of dataclass instance `obj` against its annotation and range.

    Args:
      obj: a dataclass instance.
      error: the exception class raised.
      ranges: field name -> {"min": .., "max": .., "choices": ..}, merged over the field's
        metadata.
      nested: also check the fields of dataclass instances held by a field (recursively);
        their failures name the path from `obj`.
    Raises:
      error (a ValueError subclass by default): naming `Class.field=value: expected ...`
        for the first field that does not fit.
    """
    _check(obj, error, ranges or {}, nested, "")


def _check(obj: Any, error: type[Exception], ranges: typing.Mapping[str, typing.Mapping],
           nested: bool, path: str) -> None:
    cls = type(obj)
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"check_fields needs a dataclass instance, got {cls.__name__}")
    hints = _hints(cls)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        why = _problem(value, hints[f.name]) if f.name in hints else None
        why = why or _range_problem(value, {**f.metadata, **ranges.get(f.name, {})})
        if why:
            raise error(f"{cls.__name__}.{f.name}={value!r}: {why}" +
                        (f" (in {path})" if path else ""))
        if nested:
            where = f"{path}.{f.name}" if path else f"{cls.__name__}.{f.name}"
            entries = enumerate(value) if isinstance(value, (tuple, list)) else [(None, value)]
            for i, inner in entries:
                if dataclasses.is_dataclass(inner) and not isinstance(inner, type):
                    _check(inner, error, {}, nested, where if i is None else f"{where}[{i}]")
