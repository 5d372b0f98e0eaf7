"""Data stage: each EvalTask as a seqio Task (`lmscale_eval.<name>`), for seqio tooling.

Features: "inputs" (the prompt) and "targets" (the open target, or the gold choice text),
byte vocabulary; postprocessing cuts a decoded sample at the task's stop strings (and
extracts the chain-of-thought answer); metric functions follow the task's checker.
Instances are built only when a split is first read.
"""
from __future__ import annotations

import functools

import seqio
import tensorflow as tf

from lmscale.data import checkers
from lmscale.data import vocab as vocab_lib


def _postprocess(output, kind=checkers.EXACT, stop_strings=(), answer_pattern=None,
                 example=None, is_target=False):
    del example
    text = output.decode("utf-8") if isinstance(output, bytes) else str(output)
    if is_target:
        return checkers.reference(kind, text) if kind != checkers.CONTAINS else text
    return checkers.prediction(kind, text, stop_strings, answer_pattern)


def register(task, name: str) -> seqio.Task:
    """Registers (or replaces) the seqio Task `name` for `task` (an `evaltask.EvalTask`)."""
    def dataset_fn(split, shuffle_files, seed=None):
        del shuffle_files, seed  # evaluation order is the instance order
        items = task.instances(split)
        targets = [i.target if i.target is not None else i.choices[i.gold] for i in items]
        # Partial scoring: the gold context is part of the input, the continuation the target.
        inputs = [i.prompt + i.choices[i.gold] if task.partial_scoring else i.prompt
                  for i in items]
        return tf.data.Dataset.from_tensor_slices({
            "inputs": tf.constant(inputs, tf.string),
            "targets": tf.constant(targets, tf.string),
            "id": tf.constant([i.id for i in items], tf.string),
        })

    vocab = vocab_lib.get_vocabulary(vocab_lib.BYTE)
    metric = (checkers.contains_metric if task.checker == checkers.CONTAINS
              else checkers.exact_match_metric)
    if name in seqio.TaskRegistry.names():
        seqio.TaskRegistry.remove(name)
    return seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(dataset_fn, splits=task.splits),
        output_features={
            "inputs": seqio.Feature(vocab, add_eos=False, dtype=tf.int32),
            "targets": seqio.Feature(vocab, add_eos=False, dtype=tf.int32),
        },
        preprocessors=[seqio.preprocessors.tokenize],
        postprocess_fn=functools.partial(_postprocess, kind=(
            task.checker if task.checker in checkers.STRING_CHECKS else checkers.EXACT),
                                         stop_strings=task.stop_strings,
                                         answer_pattern=task.answer_pattern),
        metric_fns=[metric],
        shuffle_buffer_size=None)
