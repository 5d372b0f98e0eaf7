"""Jitted sampler with a shared prompt cache and a fixed number of refilled slots.

Stage: eval. Consumes a `Decoder` (config + unboxed params) and prompt token ids; produces
completions (token ids, lengths, per-token log-probabilities) and, through `make_draw`,
pass/fail outcomes in sampling order for the PassUntil driver (`lmscale.eval.passuntil`).

How it runs. A prompt is prefilled once (`Decoder.apply(..., return_kv=True)`) into a
`Prefix`; every slot reads it through `prefix`/`prefix_index`, so no slot holds a copy of
the prompt's keys and values. Each slot owns a small KV cache for its generated tokens only
(`init_cache(config, num_slots, max_new_tokens)`). One `lax.while_loop` inside one jit runs
until `num_samples` completions are recorded: each iteration (1) refills free slots with the
next sample indices, sampling their first token from the prompt's last logits, (2) decodes
one token for every active slot, (3) records finished slots (EOS, a stop sequence, or
`max_new_tokens`) into a fixed-shape output buffer and frees them. Refilling a slot only
rewrites its rows (length back to 0, position back to the prompt length): shapes never
change, nothing recompiles, and nothing crosses to the host until the call returns.

Determinism. The key of token t of sample i of a prompt is
`fold_in(fold_in(PRNGKey(seed), i), t)`. So sample i depends only on (params, prompt,
method, seed, i): not on `num_slots`, on which slot ran it, on the prompt's length bucket,
on how many samples a call asked for, or on the `start` offset of the call. The guarantee is
exact for a fixed `num_slots`; across slot counts XLA may pick different matmul reductions,
so a sample can differ only where two candidate tokens tie to float32 rounding.

Einsum/shape letters as in `lmscale.models`: B slots, S = max_new_tokens, P prompt bucket,
L layers, K kv heads, H head dim, V vocab, C output capacity of one call, R prompts.
"""

from __future__ import annotations

import functools
import time
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lmscale.data.checkers import cut_at_stop
from lmscale.eval.methods import Greedy, Method, Temperature, TopK, TopP  # noqa: F401
from lmscale.eval.sample_loop import (  # noqa: F401  (re-exported)
    LoopInputs, LoopSpec, SamplerOutput, SamplerState, make_prefill, make_sampler)
from lmscale.models.config import ModelConfig
from lmscale.models.decoder import Prefix

Array = jax.Array


# ---------------------------------------------------------------------------------------
# Host-side API.
# ---------------------------------------------------------------------------------------


def bucket(n: int, minimum: int = 1) -> int:
    """Smallest power of two >= max(n, minimum): the padded size of a dynamic length."""
    n = max(int(n), int(minimum), 1)
    return 1 << (n - 1).bit_length()


class Completions(NamedTuple):
    """Sampled completions, one row per sample index.

    tokens: [num_samples, max_new_tokens] int32, 0 past each length; lengths:
    [num_samples] int32 (a final EOS or stop sequence is included); logprobs: [num_samples,
    max_new_tokens] float32 log-softmax of the untempered logits at each token, 0 past the
    length.
    """

    tokens: np.ndarray
    lengths: np.ndarray
    logprobs: np.ndarray


class Pending(NamedTuple):
    """A `Sampler.dispatch`ed call: per chunk, (samples, device output arrays)."""
    outputs: tuple


class PendingMany(NamedTuple):
    """A `Sampler.dispatch_many`ed call: how many prompts, and per jitted call (positions
    of its prompts, their sample counts, device output)."""
    num_prompts: int
    calls: tuple


class PromptState(NamedTuple):
    """A prefilled prompt: its `Prefix` (one row) and the logits after its last token."""

    prefix: Prefix
    first_logits: Array
    length: int


class Sampler:
    """Samples many completions of a prompt from one decoder.

    Args:
      params: unboxed parameter pytree of `Decoder(config)`.
      config: the `ModelConfig`.
      vocab: optional tokenizer with `encode(str) -> ids`, `decode(ids) -> str` and
        `eos_id` (a `seqio.Vocabulary`); needed for string prompts, stop strings and text.
      method: a sampling method (default `Temperature(1.0)`).
      num_slots: completions decoded in parallel (B).
      max_new_tokens: the longest completion (S).
      eos_id: ends a completion; default `vocab.eos_id` when a vocab is given, else None.
      stop_strings: texts that end a completion. In the loop each stops on its token ids
        (`vocab.encode`); `text` additionally cuts at the first occurrence in the decoded
        text, which catches tokenisations the id match misses.
      max_samples_per_call: output rows of one jitted call; larger requests run in chunks.
      min_prompt_bucket: prompts are padded to a power of two at least this long.

    Raises:
      ValueError: on bad arguments (named).
    """

    def __init__(self, params, config: ModelConfig, vocab=None, *,
                 method: Method = Temperature(1.0), num_slots: int = 64,
                 max_new_tokens: int = 32, eos_id: int | None = -1,
                 stop_strings: Sequence[str] = (), max_samples_per_call: int = 4096,
                 min_prompt_bucket: int = 16):
        if not isinstance(config, ModelConfig):
            raise ValueError(f"Sampler config={config!r}: must be a ModelConfig")
        if stop_strings and vocab is None:
            raise ValueError(f"Sampler stop_strings={tuple(stop_strings)!r} need a vocab")
        if isinstance(stop_strings, str):
            raise ValueError(f"Sampler stop_strings={stop_strings!r}: pass a sequence of "
                             f"strings, not one string")
        self.params = params
        self.config = config
        self.vocab = vocab
        self.method = method
        self.num_slots = int(num_slots)
        self.max_new_tokens = int(max_new_tokens)
        if eos_id == -1:
            eos_id = getattr(vocab, "eos_id", None) if vocab is not None else None
        self.eos_id = eos_id
        self.stop_strings = tuple(stop_strings)
        self.stop_sequences = tuple(tuple(int(t) for t in vocab.encode(x))
                                    for x in self.stop_strings)
        if any(not seq for seq in self.stop_sequences):
            raise ValueError(f"Sampler stop_strings={self.stop_strings!r}: one encodes to no "
                             f"tokens")
        self.max_samples_per_call = int(max_samples_per_call)
        self.min_prompt_bucket = int(min_prompt_bucket)
        # Tokens generated by every call so far (completion lengths summed).
        self.drawn_tokens = 0
        self._last = None  # device output of the newest dispatched call (`wait`)
        # Validates the static arguments once, here, rather than at the first call.
        make_sampler(config, method, self.num_slots, self.max_new_tokens,
                     bucket(self.num_slots), self.eos_id, self.stop_sequences)

    def encode(self, prompt) -> np.ndarray:
        """Prompt ids [T] int32 from a string (through the vocab) or a sequence of ids."""
        if isinstance(prompt, str):
            if self.vocab is None:
                raise ValueError("Sampler: a string prompt needs a vocab")
            prompt = self.vocab.encode(prompt)
        ids = np.asarray(prompt, np.int32).reshape(-1)
        if ids.size == 0:
            raise ValueError("Sampler: empty prompt (at least one token is needed)")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise ValueError(f"Sampler: prompt ids must lie in [0, {self.config.vocab_size}), "
                             f"got range [{ids.min()}, {ids.max()}]")
        if ids.size + self.max_new_tokens > self.config.max_seq_len:
            raise ValueError(
                f"Sampler: prompt length {ids.size} + max_new_tokens {self.max_new_tokens} "
                f"exceeds ModelConfig.max_seq_len={self.config.max_seq_len}")
        return ids

    def prefill(self, prompt) -> PromptState:
        """Encodes the prompt once (padded to its length bucket)."""
        ids = self.encode(prompt)
        width = bucket(ids.size, self.min_prompt_bucket)
        padded = np.zeros((1, width), np.int32)
        padded[0, :ids.size] = ids
        prefix, first = make_prefill(self.config)(self.params, jnp.asarray(padded),
                                                  jnp.asarray([ids.size], jnp.int32))
        return PromptState(prefix, first, int(ids.size))

    def sample(self, prompt, num_samples: int, seed: int, start: int = 0) -> Completions:
        """Samples completions `start .. start + num_samples - 1` of one prompt.

        Args:
          prompt: a string (needs a vocab), a sequence of ids, or a `PromptState`.
          num_samples: how many completions.
          seed: PRNG seed; with `start`, fixes every sample (see the module docstring).
          start: index of the first sample (draw(3) then draw(5) equals draw(8)).

        Returns:
          `Completions` with `num_samples` rows, in sample-index order.
        """
        return self.collect(self.dispatch(prompt, num_samples, seed, start))

    def dispatch(self, prompt, num_samples: int, seed: int, start: int = 0, *,
                 min_capacity: int = 0) -> "Pending":
        """`sample`'s device work, started and not waited for (JAX dispatches
        asynchronously): the host may check other completions meanwhile. `collect` waits
        and returns the `Completions`. `min_capacity`: output rows of every call at least
        this many (up to `max_samples_per_call`), so calls of different sizes share one
        compiled loop."""
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 0:
            raise ValueError(f"Sampler.sample num_samples={num_samples!r}: must be an int >= 0")
        state = prompt if isinstance(prompt, PromptState) else self.prefill(prompt)
        # Host-side arguments and one device_get per call: a PassUntil draw of 64 samples
        # of a small model takes ~10 ms, and per-array dispatches (key, device slices)
        # added ~2.5 ms of it.
        key = _seed_key(int(seed))
        outs = []
        done = 0
        while done < num_samples:
            n = min(num_samples - done, self.max_samples_per_call)
            capacity = bucket(n, max(self.num_slots,
                                     min(int(min_capacity), self.max_samples_per_call)))
            fn = make_sampler(self.config, self.method, self.num_slots, self.max_new_tokens,
                              capacity, self.eos_id, self.stop_sequences)
            out = fn(self.params, state.prefix, state.first_logits, key,
                     np.asarray([n], np.int32), np.asarray([start + done], np.int32),
                     np.asarray(n, np.int32))
            outs.append((n, (out.tokens, out.lengths, out.logprobs)))
            self._last = out
            done += n
        return Pending(tuple(outs))

    def wait(self) -> None:
        """Blocks until every dispatched call has finished on the device."""
        if self._last is not None:
            jax.block_until_ready(self._last)

    def collect(self, pending: "Pending") -> Completions:
        """The `Completions` of a `dispatch`ed call (waits for its device work)."""
        tokens, lengths, logprobs = [], [], []
        for n, arrays in pending.outputs:
            out_tokens, out_lengths, out_logprobs = jax.device_get(arrays)
            tokens.append(out_tokens[:n])
            lengths.append(out_lengths[:n])
            logprobs.append(out_logprobs[:n])
            self.drawn_tokens += int(out_lengths[:n].sum())
        s = self.max_new_tokens
        if not tokens:
            return Completions(np.zeros((0, s), np.int32), np.zeros((0,), np.int32),
                               np.zeros((0, s), np.float32))
        return Completions(np.concatenate(tokens), np.concatenate(lengths),
                           np.concatenate(logprobs))

    def sample_many(self, prompts: Sequence, num_samples: Sequence[int],
                    seeds: Sequence[int], starts: Sequence[int] | None = None, *,
                    min_rows: int = 1, min_capacity: int = 0) -> list[Completions]:
        """Samples several prompts, those of one length bucket together in one call.

        Prompt i gets samples `starts[i] .. starts[i] + num_samples[i] - 1` at `seeds[i]`:
        the same samples as `sample(prompts[i], num_samples[i], seeds[i], starts[i])`
        (the key of a sample depends only on its seed and index), but prompts whose
        prefills share a length bucket share the jitted loop's slots, so the per-call
        overhead is paid once per bucket instead of once per prompt. The number of prompts
        of a call is padded to a power of two (rows with no samples), so it compiles once
        per (prompt bucket, prompt-count bucket, capacity bucket).

        Args:
          prompts: strings, id sequences or `PromptState`s.
          num_samples, seeds: one per prompt; starts: one per prompt (default 0).
          min_rows, min_capacity: pad every call to at least this many prompt rows and
            output rows, so that calls with fewer prompts or samples (the tail of a
            PassUntil unit) reuse one compiled loop.

        Returns:
          One `Completions` per prompt, in the order given.
        """
        return self.collect_many(self.dispatch_many(
            prompts, num_samples, seeds, starts, min_rows=min_rows, min_capacity=min_capacity))

    def dispatch_many(self, prompts: Sequence, num_samples: Sequence[int],
                      seeds: Sequence[int], starts: Sequence[int] | None = None, *,
                      min_rows: int = 1, min_capacity: int = 0) -> "PendingMany":
        """`sample_many`'s device work, started and not waited for (as `dispatch`);
        `collect_many` waits and returns one `Completions` per prompt."""
        starts = [0] * len(prompts) if starts is None else list(starts)
        if not len(prompts) == len(num_samples) == len(seeds) == len(starts):
            raise ValueError(f"Sampler.sample_many: {len(prompts)} prompts need as many "
                             f"num_samples ({len(num_samples)}), seeds ({len(seeds)}) and "
                             f"starts ({len(starts)})")
        states = [p if isinstance(p, PromptState) else self.prefill(p) for p in prompts]
        groups: dict[int, list[int]] = {}
        for i, state in enumerate(states):
            groups.setdefault(int(state.prefix.k.shape[2]), []).append(i)
        calls = []
        for members in groups.values():
            for chunk, counts, arrays in self._dispatch_group(
                    [states[i] for i in members], [int(num_samples[i]) for i in members],
                    [int(seeds[i]) for i in members], [int(starts[i]) for i in members],
                    int(min_rows), int(min_capacity)):
                calls.append(([members[j] for j in chunk], counts, arrays))
        return PendingMany(len(states), tuple(calls))

    def collect_many(self, pending: "PendingMany") -> list[Completions]:
        """The `Completions` of a `dispatch_many`ed call, one per prompt in order."""
        out: list[Completions | None] = [None] * pending.num_prompts
        for members, counts, arrays in pending.calls:
            got = jax.device_get(arrays)
            offsets = np.concatenate([[0], np.cumsum(counts)])
            self.drawn_tokens += int(got.lengths[:offsets[-1]].sum())
            for j, i in enumerate(members):
                a, b = offsets[j], offsets[j + 1]
                out[i] = Completions(got.tokens[a:b], got.lengths[a:b], got.logprobs[a:b])
        return out

    def _dispatch_group(self, states, counts, seeds, starts, min_rows=1, min_capacity=0):
        """One jitted call per at most `max_samples_per_call` samples of same-bucket
        prompts: (member positions, their counts, the call's device output) per call."""
        calls = []
        chunk: list[int] = []

        def flush():
            if not chunk:
                return
            rows = bucket(len(chunk), min_rows)
            pad = [chunk[0]] * (rows - len(chunk))  # extra rows ask for no samples
            take = chunk + pad
            prefix = Prefix(*(jnp.concatenate([states[i].prefix[f] for i in take], axis=1)
                              for f in range(2)),
                            jnp.concatenate([states[i].prefix.lengths for i in take]))
            first = jnp.concatenate([states[i].first_logits for i in take])
            keys = np.concatenate([_seed_key(seeds[i]) for i in take])
            n_r = np.asarray([counts[i] for i in chunk] + [0] * len(pad), np.int32)
            total = int(n_r.sum())
            fn = make_sampler(self.config, self.method, self.num_slots, self.max_new_tokens,
                              bucket(total, max(self.num_slots, min_capacity)), self.eos_id,
                              self.stop_sequences)
            self._last = fn(self.params, prefix, first, keys, n_r,
                            np.asarray([starts[i] for i in take], np.int32),
                            np.asarray(total, np.int32))
            calls.append((list(chunk), n_r[:len(chunk)], self._last))
            chunk.clear()

        for i, n in enumerate(counts):
            if n > self.max_samples_per_call:
                raise ValueError(f"Sampler.sample_many: num_samples={n} exceeds "
                                 f"max_samples_per_call={self.max_samples_per_call}")
            if sum(counts[j] for j in chunk) + n > self.max_samples_per_call:
                flush()
            chunk.append(i)
        flush()
        return calls

    def text(self, completions: Completions) -> list[str]:
        """Decoded completions, without a final EOS and cut before the first stop string."""
        if self.vocab is None:
            raise ValueError("Sampler.text needs a vocab")
        texts = []
        for row, n in zip(completions.tokens, completions.lengths):
            ids = [int(t) for t in row[:n]]
            if ids and self.eos_id is not None and ids[-1] == self.eos_id:
                ids = ids[:-1]
            texts.append(cut_at_stop(self.vocab.decode(ids), self.stop_strings))
        return texts


@functools.lru_cache(maxsize=4096)
def _seed_key(seed: int) -> np.ndarray:
    """[1, 2] uint32 host copy of `PRNGKey(seed)` (cached: PassUntil reuses a seed per call)."""
    key = np.asarray(jax.random.PRNGKey(seed))[None]
    key.setflags(write=False)
    return key


def make_draw(sampler: Sampler, prompt, checker_fn: Callable[[str], bool],
              seed: int) -> Callable[[int], np.ndarray]:
    """A `draw(n)` for `lmscale.eval.passuntil.run`: pass/fail of the next n samples.

    The prompt is prefilled once; successive calls continue the sample indices, so the
    outcomes of draw(a) then draw(b) equal those of draw(a + b) at the same seed.

    Args:
      sampler: a `Sampler` with a vocab.
      prompt: the instance's prompt (string or ids).
      checker_fn: decoded completion text (EOS dropped, cut at stop strings) -> passed.
      seed: PRNG seed of this instance's samples.

    Returns:
      draw(n) -> [n] bool numpy array, in sampling order. `draw.texts` holds the texts of
      the last call (for debugging and logging).
    """
    state = sampler.prefill(prompt)
    position = 0

    def draw(n: int) -> np.ndarray:
        nonlocal position
        completions = sampler.sample(state, n, seed, start=position)
        position += n
        texts, passed = check(sampler, completions, checker_fn)
        draw.texts = texts
        return passed

    draw.texts = []
    return draw


def check(sampler: Sampler, completions: Completions,
          checker_fn: Callable[[str], bool]) -> tuple[list[str], np.ndarray]:
    """(texts, [n] bool pass/fail) of `completions`, each distinct completion decoded once.

    A trained model repeats itself (the study's identifier tails: a few dozen distinct
    completions per 512 samples), so decoding and checking are done per distinct (tokens,
    length) row and broadcast back. The checker is called once per distinct text when it
    says it is a pure function of the text (`checker_fn.pure`, set by the string checkers
    of `lmscale.eval.checkers`), else once per sample, in sampling order.
    """
    n = len(completions.lengths)
    if n == 0:
        return [], np.zeros((0,), bool)
    width = completions.tokens.shape[1]
    mask = np.arange(width)[None, :] < completions.lengths[:, None]
    keyed = np.concatenate([np.where(mask, completions.tokens, -1),
                            completions.lengths[:, None]], axis=1)
    _, first, inverse = np.unique(keyed, axis=0, return_index=True,
                                       return_inverse=True)
    inverse = inverse.reshape(-1)
    distinct = sampler.text(Completions(completions.tokens[first], completions.lengths[first],
                                        completions.logprobs[first]))
    texts = [distinct[j] for j in inverse]
    if getattr(checker_fn, "pure", False):
        passed = np.array([bool(checker_fn(t)) for t in distinct], bool)[inverse]
    else:
        passed = np.array([bool(checker_fn(t)) for t in texts], bool)
    return texts, passed


REFERENCE_SAMPLES = 4096  # tools/bench_sample.py's study row: 4096 samples in one call


def alone_rate(sampler: Sampler, prompt, num_samples: int = REFERENCE_SAMPLES,
               repeats: int = 2) -> tuple[float, float]:
    """(samples/s, mean completion length) of `sampler.sample` alone on one prompt.

    The same-shape reference of a PassUntil unit: the unit's model, parameters, slots,
    stops and prompt bucket, `num_samples` samples of one prompt per call (what
    tools/bench_sample.py's study row times), no checking; the best of `repeats` calls
    after one that compiles, and the last call's mean length. Seeds 1 .. repeats (the
    compiling call uses 0).
    """
    state = prompt if isinstance(prompt, PromptState) else sampler.prefill(prompt)
    num_samples = min(int(num_samples), sampler.max_samples_per_call)
    _timed_call(sampler, state, num_samples, seed=0)
    calls = [_timed_call(sampler, state, num_samples, seed=rep + 1)
             for rep in range(max(1, int(repeats)))]
    return num_samples / min(seconds for seconds, _ in calls), calls[-1][1]


def _timed_call(sampler: Sampler, state: PromptState, num_samples: int,
                seed: int) -> tuple[float, float]:
    """(seconds, mean completion length) of one `sampler.sample` call, whose tokens are
    left out of `sampler.drawn_tokens` (a reference's samples are not a unit's)."""
    tokens = sampler.drawn_tokens
    start = time.perf_counter()
    lengths = sampler.sample(state, num_samples, seed=seed).lengths
    seconds = time.perf_counter() - start
    sampler.drawn_tokens = tokens
    return seconds, float(np.mean(lengths))


class InterleavedReference:
    """The same-shape reference of a PassUntil unit, timed between its instances.

    A unit samples for seconds to minutes, and a shared machine's speed drifts over that
    time (on the 2-core host of docs/performance.md, `tools/bench_pu_unit.py`'s calls of
    4096 samples on one checkpoint had medians of 12,688, 9,136 and 6,871 samples/s in
    three runs within ten minutes). A reference timed once after the unit, best of two,
    catches a fast moment and sets a sustained rate against it. This one times `calls`
    calls of `num_samples` samples of one prompt (`alone_rate`'s measure) spread evenly
    over the unit's `num_instances` instances, each after the unit's in-flight calls have
    finished, and takes their median; a first, untimed call compiles. The caller leaves
    `spent_s` (all of it, the compiling call included) out of the unit's time.
    """

    def __init__(self, sampler: Sampler, prompt, num_samples: int, num_instances: int,
                 calls: int = 3):
        self.sampler = sampler
        self.state = prompt if isinstance(prompt, PromptState) else sampler.prefill(prompt)
        self.num_samples = min(int(num_samples), sampler.max_samples_per_call)
        self.points = sorted({max(1, round(num_instances * (i + 1) / (calls + 1)))
                              for i in range(calls)})
        self.seconds: list[float] = []
        self.lengths: list[float] = []
        self.spent_s = 0.0

    def after(self, done: int) -> None:
        """Times one call if `done` (instances finished so far) is one of the points."""
        if done not in self.points:
            return
        self.sampler.wait()  # the unit's own calls finish inside the unit's time
        begin = time.perf_counter()
        if not self.seconds:
            _timed_call(self.sampler, self.state, self.num_samples, seed=0)  # compiles
        seconds, length = _timed_call(self.sampler, self.state, self.num_samples,
                                      seed=len(self.seconds) + 1)
        self.seconds.append(seconds)
        self.lengths.append(length)
        self.spent_s += time.perf_counter() - begin

    @property
    def rate(self) -> tuple[float, float]:
        """(median samples/s of the timed calls, their mean completion length); (0, 0)
        before any."""
        if not self.seconds:
            return 0.0, 0.0
        return (self.num_samples / float(np.median(self.seconds)),
                float(np.mean(self.lengths)))
