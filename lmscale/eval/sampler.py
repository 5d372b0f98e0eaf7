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

import dataclasses
import functools
from typing import Callable, NamedTuple, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from lmscale.data.checkers import cut_at_stop
from lmscale.eval.methods import Greedy, Method, Temperature, TopK, TopP  # noqa: F401
from lmscale.models.config import ModelConfig
from lmscale.models.decoder import Decoder, KVCache, Prefix, init_cache

Array = jax.Array


# ---------------------------------------------------------------------------------------
# The jitted loop.
# ---------------------------------------------------------------------------------------


@flax.struct.dataclass
class SamplerState:
    """Everything the sampling loop carries (one jitted `lax.while_loop`).

    Attributes:
      cache: `KVCache` of generated tokens, k and v [L, B, S, K, H]; slot b's valid rows are
        [0, length[b] - 1) (the last sampled token is fed on the next step).
      tokens: [B, S] int32 the current completion of each slot; 0 past `length`.
      logprobs: [B, S] float32 log-softmax of the untempered model logits at each token.
      length: [B] int32 tokens generated so far for the slot's current sample.
      sample: [B] int32 index of the slot's sample within this call, -1 for a free slot.
      prompt: [B] int32 which prompt (prefix row) the slot's sample continues.
      key_index: [B] int32 the sample's index within its prompt (keys derive from it).
      done: [B] bool the slot's sample has finished and awaits recording.
      next_sample: [] int32 next sample index to hand to a free slot.
      num_recorded: [] int32 completions written to the output buffer.
      num_steps: [] int32 decode steps run (one token for every active slot per step).
      out_tokens: [C, S] int32 finished completions, row = sample index.
      out_logprobs: [C, S] float32 their token log-probabilities.
      out_lengths: [C] int32 their lengths (including a final EOS or stop sequence).
    """

    cache: KVCache
    tokens: Array
    logprobs: Array
    length: Array
    sample: Array
    prompt: Array
    key_index: Array
    done: Array
    next_sample: Array
    num_recorded: Array
    num_steps: Array
    out_tokens: Array
    out_logprobs: Array
    out_lengths: Array


class SamplerOutput(NamedTuple):
    """Result of one jitted call: first `num_samples` rows are valid.

    tokens: [C, S] int32; logprobs: [C, S] float32; lengths: [C] int32; num_steps: []
    int32 decode steps the loop ran.
    """

    tokens: Array
    logprobs: Array
    lengths: Array
    num_steps: Array


def _stop_table(stop_sequences: tuple[tuple[int, ...], ...]):
    """Right-aligned stop sequences [n, M] with a validity mask (left padding is wildcard)."""
    width = max(len(s) for s in stop_sequences)
    table = np.zeros((len(stop_sequences), width), np.int32)
    valid = np.zeros((len(stop_sequences), width), bool)
    for i, seq in enumerate(stop_sequences):
        table[i, width - len(seq):] = seq
        valid[i, width - len(seq):] = True
    return table, valid, np.array([len(s) for s in stop_sequences], np.int32)


def _finished(tokens_bs: Array, length_b: Array, last_b: Array, max_new_tokens: int,
              eos_id: int | None, stop_sequences) -> Array:
    """[B] bool: a completion of `length` tokens ending with `last` has to stop."""
    done = length_b >= max_new_tokens
    if eos_id is not None:
        done = done | (last_b == eos_id)
    if stop_sequences:
        table, valid, lens = _stop_table(stop_sequences)
        width = table.shape[1]
        idx = length_b[:, None] - width + jnp.arange(width)[None, :]  # [B, M]
        window = jnp.take_along_axis(tokens_bs, jnp.clip(idx, 0), axis=1)
        equal = (window[:, None, :] == table[None]) | ~valid[None]  # [B, n, M]
        hit = jnp.all(equal, axis=-1) & (length_b[:, None] >= lens[None])
        done = done | jnp.any(hit, axis=-1)
    return done


@dataclasses.dataclass(frozen=True)
class LoopSpec:
    """The static (hashable) settings of one compiled sampling loop (see `make_sampler`)."""

    config: ModelConfig
    method: Method
    num_slots: int
    max_new_tokens: int
    capacity: int
    eos_id: int | None
    stop_sequences: tuple[tuple[int, ...], ...]


@flax.struct.dataclass
class LoopInputs:
    """The traced arguments of one call (shapes as in `make_sampler`; cum = cumsum(counts))."""

    params: dict
    prefix: Prefix
    first_logits: Array
    keys: Array
    counts: Array
    starts: Array
    num_samples: Array
    cum: Array


def _token_keys(keys_r2: Array, prompt_b: Array, key_index_b: Array, step_b: Array) -> Array:
    """[B, 2] keys fold_in(fold_in(keys[prompt], key_index), step) (module docstring)."""
    fold = jax.vmap(jax.random.fold_in)
    return fold(fold(keys_r2[prompt_b], key_index_b), step_b)


def _pick(method: Method, logits_bv: Array, keys_b: Array) -> tuple[Array, Array]:
    """The drawn tokens [B] and their untempered log-softmax [B]."""
    new = method(logits_bv, keys_b)
    # log_softmax at the drawn token only (same formula, no [B, V] output).
    shifted = logits_bv - jnp.max(logits_bv, axis=-1, keepdims=True)
    logp = (jnp.take_along_axis(shifted, new[:, None], axis=1)[:, 0]
            - jnp.log(jnp.sum(jnp.exp(shifted), axis=-1)))
    return new, logp


def _append(spec: LoopSpec, state: SamplerState, active: Array, new_b: Array,
            logp_b: Array) -> SamplerState:
    """Writes token new_b at position `length` of active slots and checks stops."""
    s = spec.max_new_tokens
    onehot = jax.nn.one_hot(state.length, s, dtype=jnp.bool_) & active[:, None]
    tokens = jnp.where(onehot, new_b[:, None], state.tokens)
    logprobs = jnp.where(onehot, logp_b[:, None], state.logprobs)
    length = state.length + active.astype(jnp.int32)
    done = state.done | (active & _finished(tokens, length, new_b, s, spec.eos_id,
                                            spec.stop_sequences))
    return state.replace(tokens=tokens, logprobs=logprobs, length=length, done=done)


def _refill(spec: LoopSpec, inputs: LoopInputs, state: SamplerState) -> SamplerState:
    """Hands the next sample indices to free slots and draws their first tokens."""
    counts, cum = inputs.counts, inputs.cum
    free = state.sample < 0
    rank = jnp.cumsum(free.astype(jnp.int32)) - 1
    new_id = state.next_sample + rank
    assign = free & (new_id < inputs.num_samples)
    prompt = jnp.searchsorted(cum, new_id, side="right").astype(jnp.int32)
    prompt = jnp.clip(prompt, 0, counts.shape[0] - 1)
    key_index = inputs.starts[prompt] + new_id - (cum[prompt] - counts[prompt])
    state = state.replace(
        sample=jnp.where(assign, new_id, state.sample),
        prompt=jnp.where(assign, prompt, state.prompt),
        key_index=jnp.where(assign, key_index, state.key_index),
        length=jnp.where(assign, 0, state.length),
        tokens=jnp.where(assign[:, None], 0, state.tokens),
        logprobs=jnp.where(assign[:, None], 0.0, state.logprobs),
        done=jnp.where(assign, False, state.done),
        next_sample=state.next_sample + jnp.sum(assign.astype(jnp.int32)))
    # The first token comes from the prompt's own last logits: no model call.
    keys_b = _token_keys(inputs.keys, state.prompt, state.key_index, jnp.zeros_like(new_id))
    new, logp = _pick(spec.method, inputs.first_logits[state.prompt], keys_b)
    return _append(spec, state, assign, new, logp)


def _decode(spec: LoopSpec, inputs: LoopInputs, state: SamplerState) -> SamplerState:
    """One decode step: feeds every active slot's last token, draws the next one."""
    active = (state.sample >= 0) & ~state.done
    index = jnp.maximum(state.length - 1, 0)
    last = jnp.take_along_axis(state.tokens, index[:, None], axis=1)  # [B, 1]
    positions = (inputs.prefix.lengths[state.prompt] + index)[:, None]
    logits, cache = Decoder(spec.config).apply(
        {"params": inputs.params}, last, positions, cache=state.cache, cache_index=index,
        prefix=inputs.prefix, prefix_index=state.prompt)
    keys_b = _token_keys(inputs.keys, state.prompt, state.key_index, state.length)
    new, logp = _pick(spec.method, logits[:, 0], keys_b)
    state = state.replace(cache=cache,
                          num_steps=state.num_steps + jnp.any(active).astype(jnp.int32))
    return _append(spec, state, active, new, logp)


def _record(spec: LoopSpec, state: SamplerState) -> SamplerState:
    """Copies finished slots into the output buffer (row = sample index) and frees them."""
    rec = (state.sample >= 0) & state.done
    row = jnp.where(rec, state.sample, spec.capacity)  # out of range: dropped
    return state.replace(
        out_tokens=state.out_tokens.at[row].set(state.tokens, mode="drop"),
        out_logprobs=state.out_logprobs.at[row].set(state.logprobs, mode="drop"),
        out_lengths=state.out_lengths.at[row].set(state.length, mode="drop"),
        sample=jnp.where(rec, -1, state.sample),
        done=jnp.where(rec, False, state.done),
        num_recorded=state.num_recorded + jnp.sum(rec.astype(jnp.int32)))


def _step(spec: LoopSpec, inputs: LoopInputs, state: SamplerState) -> SamplerState:
    """One loop iteration: refill free slots (if any), decode, record."""
    any_free = jnp.any(state.sample < 0) & (state.next_sample < inputs.num_samples)
    # The conditional refill carries only the slots' bookkeeping: with the cache or the
    # output buffers among its operands XLA copies them (every step, tens of MB on the
    # benchmark model) to keep the branches' buffers apart.
    big = dict(cache=state.cache, out_tokens=state.out_tokens,
               out_logprobs=state.out_logprobs, out_lengths=state.out_lengths)
    slots = state.replace(**{name: None for name in big})
    slots = jax.lax.cond(any_free, functools.partial(_refill, spec, inputs),
                         lambda st: st, slots)
    # Decoding is unconditional for the same reason. A step with no active slot (rare:
    # every refilled sample ended on its first token) changes no output and is not
    # counted in num_steps.
    return _record(spec, _decode(spec, inputs, slots.replace(**big)))


def _initial_state(spec: LoopSpec) -> SamplerState:
    """Every slot free, nothing recorded, zeroed caches and output buffers."""
    b, s, capacity = spec.num_slots, spec.max_new_tokens, spec.capacity
    return SamplerState(
        cache=init_cache(spec.config, b, s), tokens=jnp.zeros((b, s), jnp.int32),
        logprobs=jnp.zeros((b, s), jnp.float32), length=jnp.zeros((b,), jnp.int32),
        sample=jnp.full((b,), -1, jnp.int32), prompt=jnp.zeros((b,), jnp.int32),
        key_index=jnp.zeros((b,), jnp.int32), done=jnp.zeros((b,), jnp.bool_),
        next_sample=jnp.zeros((), jnp.int32), num_recorded=jnp.zeros((), jnp.int32),
        num_steps=jnp.zeros((), jnp.int32),
        out_tokens=jnp.zeros((capacity, s), jnp.int32),
        out_logprobs=jnp.zeros((capacity, s), jnp.float32),
        out_lengths=jnp.zeros((capacity,), jnp.int32))


def sample_loop(spec: LoopSpec, params, prefix: Prefix, first_logits: Array, keys: Array,
                counts: Array, starts: Array, num_samples: Array) -> SamplerOutput:
    """The sampling loop of `make_sampler` (traceable; `spec` static)."""
    inputs = LoopInputs(params=params, prefix=prefix, first_logits=first_logits, keys=keys,
                        counts=counts, starts=starts, num_samples=num_samples,
                        cum=jnp.cumsum(counts))
    state = jax.lax.while_loop(lambda st: st.num_recorded < num_samples,
                               functools.partial(_step, spec, inputs), _initial_state(spec))
    return SamplerOutput(state.out_tokens, state.out_logprobs, state.out_lengths,
                         state.num_steps)


@functools.lru_cache(maxsize=64)
def make_sampler(config: ModelConfig, method: Method, num_slots: int, max_new_tokens: int,
                 capacity: int, eos_id: int | None = None,
                 stop_sequences: tuple[tuple[int, ...], ...] = ()) -> Callable:
    """Builds the jitted sampling loop for one set of static shapes (cached).

    Args:
      config: the decoder's configuration.
      method: a `Greedy`, `Temperature`, `TopK` or `TopP`.
      num_slots: B, completions decoded in parallel.
      max_new_tokens: S, the longest completion (and each slot's cache length).
      capacity: C, rows of the output buffer: the most samples one call can return.
      eos_id: token that ends a completion (kept as its last token), or None.
      stop_sequences: token-id tuples; a completion ending with one stops (kept in it).

    Returns:
      `fn(params, prefix, first_logits, keys, counts, starts, num_samples) -> SamplerOutput`
      where prefix is a `Prefix` with k, v [L, R, P, K, H] and lengths [R]; first_logits
      [R, V] float32 the logits after each prompt's last token; keys [R, 2] uint32 one PRNG
      key per prompt; counts [R] int32 samples wanted per prompt (samples are numbered
      prompt by prompt); starts [R] int32 index of each prompt's first sample (for keys);
      num_samples [] int32 = sum(counts) <= C. Shapes of the arguments may vary between
      calls (jit re-traces per shape; bucket them to avoid it).
    """
    for name, value in (("num_slots", num_slots), ("max_new_tokens", max_new_tokens),
                        ("capacity", capacity)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"make_sampler {name}={value!r}: must be a positive integer")
    stop_sequences = tuple(tuple(int(t) for t in s) for s in stop_sequences)
    if any(len(s) == 0 for s in stop_sequences):
        raise ValueError(f"make_sampler stop_sequences={stop_sequences!r}: empty sequence")
    spec = LoopSpec(config, method, num_slots, max_new_tokens, capacity, eos_id,
                    stop_sequences)
    return jax.jit(functools.partial(sample_loop, spec))


@functools.lru_cache(maxsize=16)
def make_prefill(config: ModelConfig) -> Callable:
    """Jitted `fn(params, tokens [R, P], lengths [R]) -> (Prefix, first_logits [R, V])`.

    Prompts are right-padded to P; pad positions lie after every real token, so the causal
    mask keeps them out of real tokens' attention and `Prefix.lengths` masks them for slots.
    """
    model = Decoder(config)

    def fn(params, tokens, lengths):
        logits, kv = model.apply({"params": params}, tokens, return_kv=True)
        first = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
        return Prefix(kv.k, kv.v, lengths.astype(jnp.int32)), first

    return jax.jit(fn)


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
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 0:
            raise ValueError(f"Sampler.sample num_samples={num_samples!r}: must be an int >= 0")
        state = prompt if isinstance(prompt, PromptState) else self.prefill(prompt)
        # Host-side arguments and one device_get per call: a PassUntil draw of 64 samples
        # of a small model takes ~10 ms, and per-array dispatches (key, device slices)
        # added ~2.5 ms of it.
        key = _seed_key(int(seed))
        tokens, lengths, logprobs = [], [], []
        done = 0
        while done < num_samples:
            n = min(num_samples - done, self.max_samples_per_call)
            capacity = bucket(n, self.num_slots)
            fn = make_sampler(self.config, self.method, self.num_slots, self.max_new_tokens,
                              capacity, self.eos_id, self.stop_sequences)
            out = fn(self.params, state.prefix, state.first_logits, key,
                     np.asarray([n], np.int32), np.asarray([start + done], np.int32),
                     np.asarray(n, np.int32))
            out_tokens, out_lengths, out_logprobs = jax.device_get(
                (out.tokens, out.lengths, out.logprobs))
            tokens.append(out_tokens[:n])
            lengths.append(out_lengths[:n])
            logprobs.append(out_logprobs[:n])
            done += n
        s = self.max_new_tokens
        if not tokens:
            return Completions(np.zeros((0, s), np.int32), np.zeros((0,), np.int32),
                               np.zeros((0, s), np.float32))
        return Completions(np.concatenate(tokens), np.concatenate(lengths),
                           np.concatenate(logprobs))

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
        texts = sampler.text(completions)
        draw.texts = texts
        return np.array([bool(checker_fn(t)) for t in texts], dtype=bool)

    draw.texts = []
    return draw
