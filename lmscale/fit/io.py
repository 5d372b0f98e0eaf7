"""Reading fit inputs: CSV files, lmscale result files, dicts and pandas DataFrames.

Stage: fit. Produces `Table`, a dict of column name -> [n] numpy array (float where the
column parses as numbers, else str). pandas is never imported: a DataFrame is accepted
duck-typed through its `.columns` and `[...]`.
"""
from __future__ import annotations

import csv
import json
import os
import pathlib
from typing import Any, Mapping

import numpy as np

Table = dict  # column name -> [n] np.ndarray


def _column(values) -> np.ndarray:
    try:
        return np.array([float(v) if v not in ("", None) else np.nan for v in values], float)
    except (TypeError, ValueError):
        return np.array(["" if v is None else str(v) for v in values], dtype=object)


def read_csv(path: str | os.PathLike) -> Table:
    """Reads a CSV with a header row into a `Table`.

    Raises:
      ValueError: the file is empty or a row has the wrong number of fields (names the
        file and line).
    """
    path = pathlib.Path(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file, expected a header row") from None
        rows = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{reader.line_num}: {len(row)} fields, header has "
                                 f"{len(header)}")
            rows.append(row)
    return {name: _column([r[i] for r in rows]) for i, name in enumerate(header)}


def read_jsonl(path: str | os.PathLike) -> Table:
    """Reads lmscale result rows (one JSON object per line) into a `Table`.

    Columns are the union of keys; a row lacking a key gets NaN (numbers) or "".
    Nested values (per-instance detail) are kept as Python objects.

    Raises:
      ValueError: a line is not a JSON object (names the file and line).
    """
    path = pathlib.Path(path)
    rows: list[dict] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not JSON: {e.msg}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got "
                                 f"{type(row).__name__}")
            rows.append(row)
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    table = {}
    for k in keys:
        vals = [row.get(k) for row in rows]
        if any(isinstance(v, (dict, list)) for v in vals):
            table[k] = np.array(vals + [None], dtype=object)[:-1]
        else:
            table[k] = _column(vals)
    return table


def as_table(data: Any) -> Table:
    """Returns `data` as a `Table`: a path (.csv or .jsonl), a mapping, or a DataFrame."""
    if isinstance(data, (str, os.PathLike)):
        suffix = pathlib.Path(data).suffix
        if suffix == ".csv":
            return read_csv(data)
        if suffix in (".jsonl", ".json"):
            return read_jsonl(data)
        raise ValueError(f"{data}: unknown file type {suffix!r}; expected .csv or .jsonl")
    if hasattr(data, "columns") and hasattr(data, "__getitem__"):  # pandas DataFrame
        return {str(c): np.asarray(data[c].to_numpy()) for c in data.columns}
    if isinstance(data, Mapping):
        return {k: np.asarray(v) for k, v in data.items()}
    raise ValueError(f"cannot read a table from {type(data).__name__}; give a path, a "
                     "dict of columns or a pandas DataFrame")


def column(table: Table, name: str, where: str = "table") -> np.ndarray:
    """Returns `table[name]`; raises ValueError naming the missing column and what exists."""
    if name not in table:
        raise ValueError(f"{where}: no column {name!r}; columns are {sorted(table)}")
    return table[name]


def select(table: Table, mask: np.ndarray) -> Table:
    """Rows of `table` where `mask` [n] is true."""
    return {k: v[mask] for k, v in table.items()}


def load_gadre_testbed(path: str | os.PathLike) -> Table:
    """Reads ../shared/data/gadre2024/testbed.csv (one row per model; see its README)."""
    table = read_csv(path)
    for name in ("dataset", "table1_role", "N", "D", "M", "loss_c4_val", "err_avg17"):
        column(table, name, str(path))
    return table


def load_chinchilla(path: str | os.PathLike, drop_highest: int = 5) -> Table:
    """Reads Epoch AI's Chinchilla points: columns N, C, D = C / (6N), loss.

    Args:
      path: ../shared/data/chinchilla/svg_extracted_data.csv.
      drop_highest: Epoch's default drops the 5 highest-loss points (keeps loss below
        the 5th-largest), leaving 240 of 245.
    """
    raw = read_csv(path)
    N = column(raw, "Model Size", str(path))
    C = column(raw, "Training FLOP", str(path))
    loss = column(raw, "loss", str(path))
    keep = np.ones(len(loss), bool)
    if drop_highest:
        keep = loss < np.sort(loss)[-drop_highest]
    return dict(N=N[keep], C=C[keep], D=C[keep] / (6.0 * N[keep]), loss=loss[keep])
