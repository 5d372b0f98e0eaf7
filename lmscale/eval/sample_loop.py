"""The jitted sampling loop of `lmscale.eval.sampler` (its docstring explains the algorithm).

Stage: eval. `make_sampler` compiles one `lax.while_loop` per set of static shapes over a
`SamplerState`; each step is a module-level function of the static `LoopSpec` and the
call's traced `LoopInputs`. `make_prefill` encodes prompts into a shared `Prefix`.
Letters as in `lmscale.models`: B slots, S = max_new_tokens, P prompt bucket, L layers,
K kv heads, H head dim, V vocab, C output capacity of one call, R prompts.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from lmscale.eval.methods import Method
from lmscale.models.config import ModelConfig
from lmscale.models.decoder import Decoder, KVCache, Prefix, init_cache

Array = jax.Array




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
      next_sample: [] int32 next sample index to hand to a free slot; with slot groups
        (`_groups`), [R] int32 the next index of each prompt's samples.
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
    return _start(spec, inputs, state, assign, new_id, prompt, key_index,
                  state.next_sample + jnp.sum(assign.astype(jnp.int32)))


def _start(spec: LoopSpec, inputs: LoopInputs, state: SamplerState, assign, sample, prompt,
           key_index, next_sample) -> SamplerState:
    """Starts sample `sample[b]` of prompt `prompt[b]` in every slot b with `assign[b]`
    (emptied first) and draws its first token."""
    state = state.replace(
        sample=jnp.where(assign, sample, state.sample),
        prompt=jnp.where(assign, prompt, state.prompt),
        key_index=jnp.where(assign, key_index, state.key_index),
        length=jnp.where(assign, 0, state.length),
        tokens=jnp.where(assign[:, None], 0, state.tokens),
        logprobs=jnp.where(assign[:, None], 0.0, state.logprobs),
        done=jnp.where(assign, False, state.done),
        next_sample=next_sample)
    # The first token comes from the prompt's own last logits: no model call.
    keys_b = _token_keys(inputs.keys, state.prompt, state.key_index,
                         jnp.zeros_like(state.key_index))
    new, logp = _pick(spec.method, inputs.first_logits[state.prompt], keys_b)
    return _append(spec, state, assign, new, logp)


def _groups(spec: LoopSpec, inputs: LoopInputs) -> int:
    """Slot groups (static): with R > 1 prompts and B a multiple of R, slots come in R
    consecutive groups of B / R, group r sampling prompt r only, so a decode step reads
    each prompt's prefix with one contraction per group instead of gathering a copy per
    slot (`lmscale.models.layers._grouped_prefix_part`); else 1 (any slot, any prompt)."""
    r = inputs.counts.shape[0]
    return r if r > 1 and spec.num_slots % r == 0 else 1


def _refill_grouped(spec: LoopSpec, inputs: LoopInputs, state: SamplerState) -> SamplerState:
    """`_refill` with slot groups: a free slot of group r takes prompt r's next sample
    (`next_sample` [R] counts each prompt's handed-out samples)."""
    counts, cum = inputs.counts, inputs.cum
    r = counts.shape[0]
    per = spec.num_slots // r
    group = jnp.arange(spec.num_slots, dtype=jnp.int32) // per  # [B] its prompt
    free = state.sample < 0
    rank = (jnp.cumsum(free.reshape(r, per).astype(jnp.int32), axis=1) - 1).reshape(-1)
    index = state.next_sample[group] + rank  # the sample's index among its prompt's
    assign = free & (index < counts[group])
    return _start(spec, inputs, state.replace(prompt=group), assign,
                  cum[group] - counts[group] + index, group, inputs.starts[group] + index,
                  state.next_sample + jnp.sum(assign.reshape(r, per).astype(jnp.int32), axis=1))


def _decode(spec: LoopSpec, inputs: LoopInputs, state: SamplerState) -> SamplerState:
    """One decode step: feeds every active slot's last token, draws the next one."""
    active = (state.sample >= 0) & ~state.done
    index = jnp.maximum(state.length - 1, 0)
    last = jnp.take_along_axis(state.tokens, index[:, None], axis=1)  # [B, 1]
    positions = (inputs.prefix.lengths[state.prompt] + index)[:, None]
    logits, cache = Decoder(spec.config).apply(
        {"params": inputs.params}, last, positions, cache=state.cache, cache_index=index,
        prefix=inputs.prefix, prefix_index=None if _groups(spec, inputs) > 1 else state.prompt)
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
    groups = _groups(spec, inputs)
    if groups > 1:
        per = spec.num_slots // groups
        left = jnp.repeat(state.next_sample < inputs.counts, per)  # [B] its prompt has more
        any_free = jnp.any((state.sample < 0) & left)
        refill = _refill_grouped
    else:
        any_free = jnp.any(state.sample < 0) & (state.next_sample < inputs.num_samples)
        refill = _refill
    # The conditional refill carries only the slots' bookkeeping: with the cache or the
    # output buffers among its operands XLA copies them (every step, tens of MB on the
    # benchmark model) to keep the branches' buffers apart.
    big = dict(cache=state.cache, out_tokens=state.out_tokens,
               out_logprobs=state.out_logprobs, out_lengths=state.out_lengths)
    slots = state.replace(**{name: None for name in big})
    slots = jax.lax.cond(any_free, functools.partial(refill, spec, inputs),
                         lambda st: st, slots)
    # Decoding is unconditional for the same reason. A step with no active slot (rare:
    # every refilled sample ended on its first token) changes no output and is not
    # counted in num_steps.
    return _record(spec, _decode(spec, inputs, slots.replace(**big)))


def _initial_state(spec: LoopSpec, groups: int = 1) -> SamplerState:
    """Every slot free, nothing recorded, zeroed caches and output buffers (`next_sample`
    [groups] with slot groups, else [])."""
    b, s, capacity = spec.num_slots, spec.max_new_tokens, spec.capacity
    return SamplerState(
        cache=init_cache(spec.config, b, s), tokens=jnp.zeros((b, s), jnp.int32),
        logprobs=jnp.zeros((b, s), jnp.float32), length=jnp.zeros((b,), jnp.int32),
        sample=jnp.full((b,), -1, jnp.int32), prompt=jnp.zeros((b,), jnp.int32),
        key_index=jnp.zeros((b,), jnp.int32), done=jnp.zeros((b,), jnp.bool_),
        next_sample=jnp.zeros((groups,) if groups > 1 else (), jnp.int32),
        num_recorded=jnp.zeros((), jnp.int32),
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
                               functools.partial(_step, spec, inputs),
                               _initial_state(spec, _groups(spec, inputs)))
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
