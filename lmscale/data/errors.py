"""Data stage: the one error type for bad input, and strict readers for text files.

Every reader here fails loudly with the file, the 1-based line and the field that is wrong,
so a malformed JSONL line or a non-UTF-8 byte never turns into a silently skipped example or
a crash deep inside a TensorFlow op. Consumed by `corpora.py` and `tasks/*.py`.
"""
from __future__ import annotations

import glob as glob_lib
import json
import os
from typing import Any, Iterator, Sequence


class DataError(ValueError):
    """Bad input data; the message names the file, line and field where known."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        prefix = ", ".join(where) + ": " if where else ""
        super().__init__(prefix + message)
        self.path, self.line, self.field = path, line, field


def expand_glob(pattern: str) -> list[str]:
    """Files matching `pattern`, sorted so the order never depends on the file system.

    Raises:
      DataError: nothing matches, or a match is an empty file.
    """
    paths = sorted(p for p in glob_lib.glob(os.path.expanduser(pattern), recursive=True)
                   if os.path.isfile(p))
    if not paths:
        raise DataError(f"glob {pattern!r} matches no files")
    for p in paths:
        if os.path.getsize(p) == 0:
            raise DataError("file is empty", path=p)
    return paths


def read_text(path: str) -> str:
    """Whole file as UTF-8 text; non-UTF-8 bytes raise with their line number."""
    with open(path, "rb") as f:
        raw = f.read()
    if not raw:
        raise DataError("file is empty", path=path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})",
                        path=path, line=line) from None


def iter_jsonl(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields (line number, object) for each non-blank line of a JSONL file.

    Raises:
      DataError: a line is not UTF-8, not JSON, or not a JSON object; the file holds no
        records.
    """
    text = read_text(path)
    count = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"malformed JSON ({e.msg}, column {e.colno})", path=path,
                            line=number) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected a JSON object, got {type(obj).__name__}", path=path,
                            line=number)
        count += 1
        yield number, obj
    if count == 0:
        raise DataError("no JSON records (only blank lines)", path=path)


def read_json(path: str) -> Any:
    """A whole JSON file; a syntax error names its line."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON ({e.msg}, column {e.colno})", path=path,
                        line=e.lineno) from None


def require_field(obj: dict[str, Any], field: str, types: type | Sequence[type], path: str,
                  line: int | None = None) -> Any:
    """`obj[field]` checked for presence and type, else a DataError naming the field."""
    if field not in obj:
        raise DataError(f"missing field (present: {sorted(obj)})", path=path, line=line,
                        field=field)
    value = obj[field]
    types = tuple(types) if isinstance(types, (list, tuple)) else (types,)
    if not isinstance(value, types):
        raise DataError(f"expected {'/'.join(t.__name__ for t in types)}, got "
                        f"{type(value).__name__}", path=path, line=line, field=field)
    return value
