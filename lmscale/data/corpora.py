"""Data stage: training corpora registered as seqio Tasks.

Corpora (each a seqio Task with one output feature, "targets"):
  lmscale_stdlib_py   the running interpreter's standard-library `*.py` files: a real code
                      corpus on every machine, no download (Hu et al. train a code-only series).
  lmscale_c4_en       TFDS `c4/en` (Gadre et al.'s corpus) for real runs.
  register_corpus_task(name, glob, ...) for local text or JSONL files.

Pipeline per task: text -> tokenize -> append EOS -> split each document into pieces of at
most `sequence_length["targets"]` tokens, so long files are not truncated by seqio's trim.
Packing happens later, in `pipeline.LMStream`, with seqio's DecoderFeatureConverter.

A task's vocabulary is part of its name: the byte vocabulary gets the bare name, any other
vocabulary spec `s` gets `<name>.<vocab_key(s)>`, registered on first use by
`get_corpus_task(name, s)`.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import sysconfig
from typing import Callable

import seqio
import tensorflow as tf

from lmscale.data import errors
from lmscale.data import vocab as vocab_lib

STDLIB_TASK = "lmscale_stdlib_py"
C4_TASK = "lmscale_c4_en"
C4_TFDS_NAME = "c4/en:3.1.0"

# Directories left out of the stdlib corpus: third-party code, test suites (a few are not
# UTF-8), data tables (encodings, pydoc topics) and legacy/GUI packages. What remains is
# ~8-9 MB of ordinary library code on CPython 3.11, capped to STDLIB_MAX_BYTES.
STDLIB_EXCLUDED_DIRS = frozenset({
    "site-packages", "dist-packages", "test", "tests", "idlelib", "pydoc_data", "encodings",
    "turtledemo", "lib2to3", "distutils", "tkinter", "__phello__", "ensurepip",
})
STDLIB_MAX_BYTES = 7_000_000
STDLIB_VALIDATION_FRACTION = 0.06
SPLITS = ("train", "validation")

# seqio's default is 1000; pieces of one file are consecutive, so mix wider.
SHUFFLE_BUFFER_PIECES = 4096

# Factories: base task name -> function(vocab_spec) registering that variant.
_CORPORA: dict[str, Callable[[str], seqio.Task]] = {}


def stable_unit(key: str) -> float:
    """A number in [0, 1) from sha1(key): the same on every machine and Python run."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:15], 16) / float(16 ** 15)


def split_of(key: str, validation_fraction: float) -> str:
    """'validation' for a fixed `validation_fraction` of keys (by stable hash), else 'train'."""
    return "validation" if stable_unit("split:" + key) < validation_fraction else "train"


@functools.lru_cache(maxsize=None)
def stdlib_files(max_bytes: int = STDLIB_MAX_BYTES,
                 validation_fraction: float = STDLIB_VALIDATION_FRACTION
                 ) -> dict[str, tuple[str, ...]]:
    """The stdlib corpus files per split, as absolute paths in a fixed order.

    Files are ranked by a stable hash of their path relative to the stdlib root, kept
    until `max_bytes` is reached, then split by another stable hash of the relative path,
    so the split never depends on the file system's listing order.

    Returns:
      {"train": paths, "validation": paths}.
    """
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    candidates = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(p in STDLIB_EXCLUDED_DIRS or p.startswith("config-") for p in rel.parts[:-1]):
            continue
        if path.is_file() and path.stat().st_size > 0:
            candidates.append((stable_unit("rank:" + rel.as_posix()), rel.as_posix(), path))
    candidates.sort()
    chosen, total = [], 0
    for _, rel, path in candidates:
        size = path.stat().st_size
        if total + size > max_bytes:
            continue
        chosen.append((rel, str(path)))
        total += size
    out = {s: [] for s in SPLITS}
    for rel, path in sorted(chosen):
        out[split_of(rel, validation_fraction)].append(path)
    return {s: tuple(v) for s, v in out.items()}


def stdlib_texts(split: str) -> list[str]:
    """UTF-8 texts of the stdlib corpus files of `split` (a non-UTF-8 file raises)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for {STDLIB_TASK}; known: {SPLITS}")
    return [errors.read_text(p) for p in stdlib_files()[split]]


def _documents_dataset(texts: list[str], shuffle_files: bool, seed: int | None
                       ) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices({"text": tf.constant(texts, tf.string)})
    if shuffle_files:
        # Same seed -> same file order on every host, so seqio's example-level sharding
        # gives each host a disjoint part of each epoch.
        ds = ds.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True)
    return ds


def split_to_length(dataset: tf.data.Dataset, sequence_length=None) -> tf.data.Dataset:
    """Cuts each example's "targets" [n] into consecutive pieces of <= L tokens.

    L is `sequence_length["targets"]`; without a sequence length the data pass unchanged.
    Keeps every token (seqio would otherwise trim a long document to its first L).
    """
    if not sequence_length or sequence_length.get("targets") is None:
        return dataset
    length = int(sequence_length["targets"])

    def split(ex):
        tokens = ex["targets"]
        n = tf.size(tokens, out_type=tf.int64)
        starts = tf.range(0, n, length, dtype=tf.int64)
        pieces = tf.RaggedTensor.from_row_lengths(tokens, tf.minimum(tf.constant(length, tf.int64), n - starts))
        return tf.data.Dataset.from_tensor_slices({"targets": pieces})

    return dataset.flat_map(split)


def _lm_preprocessors(text_key: str = "text") -> list:
    return [
        functools.partial(seqio.preprocessors.rekey, key_map={"targets": text_key}),
        functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
        seqio.preprocessors.append_eos,
        split_to_length,
    ]


def _output_features(vocab_spec: str) -> dict[str, seqio.Feature]:
    return {"targets": seqio.Feature(vocab_lib.get_vocabulary(vocab_spec), add_eos=True,
                                     dtype=tf.int32)}


def corpus_task_name(base: str, vocab_spec: str = vocab_lib.BYTE) -> str:
    """The seqio task name of corpus `base` under vocabulary `vocab_spec`."""
    key = vocab_lib.vocab_key(vocab_spec)
    return f"{base}.{key}" if key else base


def _register(name: str, source: seqio.DataSource, vocab_spec: str) -> seqio.Task:
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(
        name, source=source, output_features=_output_features(vocab_spec),
        preprocessors=_lm_preprocessors(), shuffle_buffer_size=SHUFFLE_BUFFER_PIECES)


def _stdlib_source() -> seqio.DataSource:
    def dataset_fn(split, shuffle_files, seed=None):
        return _documents_dataset(stdlib_texts(split), shuffle_files, seed)

    return seqio.FunctionDataSource(dataset_fn, splits=SPLITS)


def _c4_source() -> seqio.DataSource:
    return seqio.TfdsDataSource(tfds_name=C4_TFDS_NAME,
                                splits={"train": "train", "validation": "validation"})


def get_corpus_task(base: str, vocab_spec: str = vocab_lib.BYTE) -> seqio.Task:
    """The seqio Task for corpus `base` under `vocab_spec`, registering it on first use.

    Raises:
      ValueError: `base` is not a registered corpus (the message lists the known ones).
    """
    name = corpus_task_name(base, vocab_spec)
    if name in seqio.TaskRegistry.names():
        return seqio.get_mixture_or_task(name)
    if base not in _CORPORA:
        raise ValueError(f"unknown corpus {base!r}; known corpora: {sorted(_CORPORA)}")
    return _CORPORA[base](vocab_spec)


def register_corpus_task(name: str, files_glob: str, vocab_spec: str = vocab_lib.BYTE,
                         text_field: str | None = None,
                         validation_fraction: float = 0.05) -> seqio.Task:
    """Registers a corpus of local files: plain text, or JSONL when `text_field` is given.

    Each text file (or each JSONL record's `text_field`) is one document. Files go to
    train/validation by a stable hash of their path relative to the glob's fixed prefix
    (`validation_fraction` of them to validation). Files are read and checked when a split
    is first requested, in Python, so bad input fails before TensorFlow sees it.

    Args:
      name: base task name (letters, digits, '_' and '.').
      files_glob: e.g. "/data/corpus/**/*.txt" (recursive globs allowed).
      vocab_spec: see `vocab.get_vocabulary`.
      text_field: JSONL key holding the text; None for plain-text files.
      validation_fraction: share of files held out for validation.

    Returns:
      The registered seqio Task (for `vocab_spec`).

    Raises:
      errors.DataError: the glob matches nothing, or a file is empty (checked now); a line
        is malformed, lacks `text_field`, or is not UTF-8 (checked on first read).
    """
    paths = errors.expand_glob(files_glob)
    prefix = os.path.commonpath([os.path.dirname(p) for p in paths])

    def files_for(split):
        return [p for p in paths
                if split_of(os.path.relpath(p, prefix), validation_fraction) == split]

    def read_docs(split):
        files = files_for(split)
        if not files:
            raise errors.DataError(f"corpus {name!r} has no files in split {split!r} "
                                   f"({len(paths)} files matched {files_glob!r})")
        docs = []
        for p in files:
            if text_field is None:
                docs.append(errors.read_text(p))
                continue
            for line, rec in errors.iter_jsonl(p):
                text = errors.require_field(rec, text_field, str, p, line)
                if not text:
                    raise errors.DataError("empty text", path=p, line=line, field=text_field)
                docs.append(text)
        return docs

    def dataset_fn(split, shuffle_files, seed=None):
        return _documents_dataset(read_docs(split), shuffle_files, seed)

    def factory(spec):
        return _register(corpus_task_name(name, spec),
                         seqio.FunctionDataSource(dataset_fn, splits=SPLITS), spec)

    _CORPORA[name] = factory
    return factory(vocab_spec)


def _register_builtin() -> None:
    _CORPORA[STDLIB_TASK] = lambda spec: _register(corpus_task_name(STDLIB_TASK, spec),
                                                   _stdlib_source(), spec)
    _CORPORA[C4_TASK] = lambda spec: _register(corpus_task_name(C4_TASK, spec),
                                               _c4_source(), spec)
    # The byte variants exist as soon as the module is imported; nothing is read yet.
    for base in (STDLIB_TASK, C4_TASK):
        if base not in seqio.TaskRegistry.names():
            _CORPORA[base](vocab_lib.BYTE)


_register_builtin()
