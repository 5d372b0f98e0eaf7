"""Data stage: the packed training / validation token stream fed to the trainer.

`LMStream` turns a registered corpus Task into fixed-shape numpy batches with seqio's
`DecoderFeatureConverter` (packing several documents' pieces per row). The order is a pure
function of (task, split, seed, sequence length, batch size, shard), so a resumed run that
skips the batches it already consumed sees exactly the tokens it would have seen.
"""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import seqio
import tensorflow as tf

from lmscale.data import corpora
from lmscale.data import vocab as vocab_lib

FEATURES = ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights",
            "decoder_segment_ids", "decoder_positions")


class LMStream:
    """An iterator of packed LM batches from a seqio corpus task.

    Each batch is a dict of numpy int32 arrays of shape [B, T] (B = batch_size, T =
    sequence_length): `decoder_input_tokens`, `decoder_target_tokens`,
    `decoder_loss_weights` (1 on real target tokens, 0 on padding), `decoder_segment_ids`
    (1, 2, ... per packed document piece; 0 on padding) and `decoder_positions` (0-based
    position within each piece).

    Args:
      task_name: a corpus base name from `corpora` (e.g. "lmscale_stdlib_py") or any
        registered seqio Task/Mixture with a "targets" feature.
      split: "train" or "validation".
      sequence_length: T, tokens per row.
      batch_size: B, rows per batch on this host.
      seed: shuffling seed; the same seed gives the same stream.
      vocab_spec: vocabulary (see `vocab.get_vocabulary`); "byte" by default.
      pack: pack several pieces per row (DecoderFeatureConverter(pack=True)).
      repeat: cycle forever (training). With False the stream is one finite pass; the
        last batch is padded with all-zero rows (loss weight 0) to keep the shape, so a
        token-weighted validation loss over it is exact.
      shard_index, num_shards: this host's part of the stream; every host must use the
        same seed. Shards hold disjoint documents.
      start_batch: number of batches to skip (resume); see also `state` / `restore`.
      shuffle: shuffle documents and pieces (default: only when `repeat`).
    """

    def __init__(self, task_name: str, split: str, sequence_length: int, batch_size: int,
                 seed: int, vocab_spec: str = vocab_lib.BYTE, pack: bool = True,
                 repeat: bool = True, shard_index: int = 0, num_shards: int = 1,
                 start_batch: int = 0, shuffle: bool | None = None):
        if sequence_length < 2:
            raise ValueError(f"sequence_length must be >= 2, got {sequence_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= shard_index < num_shards:
            raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.task_name, self.split, self.seed = task_name, split, int(seed)
        self.sequence_length, self.batch_size = int(sequence_length), int(batch_size)
        self.vocab_spec, self.pack, self.repeat = vocab_spec, pack, repeat
        self.shard_index, self.num_shards = shard_index, num_shards
        self.shuffle = repeat if shuffle is None else shuffle
        self._provider = _provider(task_name, vocab_spec)
        self._batches_consumed = int(start_batch)
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def _dataset(self) -> tf.data.Dataset:
        lengths = {"targets": self.sequence_length}
        extra = {}
        if isinstance(self._provider, seqio.Task):
            # No in-memory cache: it would ask TFDS for split sizes and freeze epoch order.
            extra["try_in_mem_cache"] = False
        ds = self._provider.get_dataset(
            sequence_length=lengths, split=self.split, shuffle=self.shuffle, seed=self.seed,
            shard_info=(seqio.ShardInfo(self.shard_index, self.num_shards)
                        if self.num_shards > 1 else None),
            num_epochs=None if self.repeat else 1, use_cached=False, **extra)
        ds = seqio.DecoderFeatureConverter(pack=self.pack)(ds, lengths)
        ds = ds.batch(self.batch_size, drop_remainder=self.repeat)
        # Resume by skipping: the pipeline is deterministic, so batch n is the same
        # whether reached by iterating or by skipping n batches.
        return ds.skip(self._batches_consumed)

    def __iter__(self) -> "LMStream":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iter is None:
            self._iter = self._dataset().as_numpy_iterator()
        raw = next(self._iter)
        self._batches_consumed += 1
        return self._finish(raw)

    def _finish(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {k: np.asarray(v, np.int32) for k, v in raw.items() if k in FEATURES}
        if not self.pack:
            # Unpacked rows hold one piece each: segment 1 on real tokens, positions 0..n-1.
            real = (out["decoder_target_tokens"] != 0).astype(np.int32)
            out["decoder_segment_ids"] = real
            out["decoder_positions"] = (np.cumsum(real, axis=1) - 1).clip(0) * real
        rows = out["decoder_target_tokens"].shape[0]
        if rows < self.batch_size:
            pad = self.batch_size - rows
            out = {k: np.pad(v, ((0, pad), (0, 0))) for k, v in out.items()}
        return out

    @property
    def batches_consumed(self) -> int:
        return self._batches_consumed

    def state(self) -> dict[str, Any]:
        """JSON-serialisable position: enough, with the constructor args, to resume."""
        return {"batches_consumed": self._batches_consumed, "seed": self.seed,
                "task_name": self.task_name, "split": self.split,
                "sequence_length": self.sequence_length, "batch_size": self.batch_size,
                "shard_index": self.shard_index, "num_shards": self.num_shards}

    def restore(self, state: dict[str, Any]) -> "LMStream":
        """Continues from `state` (from `state()` of an identically built stream).

        Raises:
          ValueError: `state` was taken from a stream with other settings.
        """
        mine = self.state()
        for key, value in state.items():
            if key != "batches_consumed" and key in mine and mine[key] != value:
                raise ValueError(f"stream state field {key!r} is {value!r} but this stream "
                                 f"has {mine[key]!r}")
        self._batches_consumed = int(state["batches_consumed"])
        self._iter = None
        return self


def _provider(task_name: str, vocab_spec: str) -> seqio.DatasetProviderBase:
    if task_name in corpora._CORPORA:  # pylint: disable=protected-access
        return corpora.get_corpus_task(task_name, vocab_spec)
    known = seqio.TaskRegistry.names() | seqio.MixtureRegistry.names()
    if task_name not in known:
        raise ValueError(f"unknown corpus task {task_name!r}; corpora: "
                         f"{sorted(corpora._CORPORA)}")  # pylint: disable=protected-access
    return seqio.get_mixture_or_task(task_name)


def with_start_id(batches, start_id: int):
    """`batches` with `start_id` as the input token at every packed piece's first position.

    seqio's decoder converter shifts each piece right and puts id 0 first; lmscale's own
    models are trained that way. An imported checkpoint (LLaMA) expects its tokenizer's BOS
    there instead, so its validation loss is measured on `<s> t0 t1 ...` as `transformers`
    would see the text. `start_id` 0 returns the batches unchanged.
    """
    for batch in batches:
        if start_id:
            batch = dict(batch)
            inputs = np.array(batch["decoder_input_tokens"], copy=True)
            first = (batch["decoder_positions"] == 0) & (batch["decoder_segment_ids"] > 0)
            inputs[first] = start_id
            batch["decoder_input_tokens"] = inputs
        yield batch
