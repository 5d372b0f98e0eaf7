"""Greedy and beam search, for comparison with random sampling (Hu et al., Table 1).

Stage: eval. Consumes a `Decoder` (config + unboxed params) and one prompt's token ids;
produces the highest-scoring completions. Scores are sums of token log-probabilities
(natural log) of the untempered model, with no length penalty; a beam that emits EOS
stops and keeps its score, competing with longer beams on equal terms.

Beam search prefills the prompt once into a `Prefix` shared by every beam; each beam owns
a KV cache of its generated tokens, reordered to follow its parent at every step. Greedy
decoding runs the sampler's loop with `Greedy()` (one slot, one sample), so comparing it to
beam search with one beam checks two independent decoders against each other.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lmscale.eval import sampler as sampler_lib
from lmscale.models.config import ModelConfig
from lmscale.models.decoder import Decoder, init_cache


class BeamResult(NamedTuple):
    """Beams sorted best first.

    tokens: [W, S] int32, 0 past each length; lengths: [W] int32 (a final EOS included);
    scores: [W] float32 summed log-probabilities (nats); -inf for a beam that never held
    a real hypothesis (W larger than the number of distinct continuations).
    """

    tokens: np.ndarray
    lengths: np.ndarray
    scores: np.ndarray


@functools.lru_cache(maxsize=32)
def make_beam_search(config: ModelConfig, beam_size: int, max_new_tokens: int,
                     eos_id: int | None = None) -> Callable:
    """Jitted `fn(params, prefix, first_logits [1, V]) -> (tokens [W, S], lengths, scores)`.

    Args:
      config: the decoder's configuration.
      beam_size: W, hypotheses kept per step.
      max_new_tokens: S, the longest completion.
      eos_id: token that finishes a beam, or None.
    """
    for name, value in (("beam_size", beam_size), ("max_new_tokens", max_new_tokens)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"make_beam_search {name}={value!r}: must be a positive integer")
    model = Decoder(config)
    w, s, v = beam_size, max_new_tokens, config.vocab_size

    def expand(carry, logp_wv, step):
        tokens, lengths, scores, finished, cache = carry
        # A finished beam has exactly one continuation, of log-prob 0, that writes nothing:
        # it survives unchanged as long as its score ranks in the top W.
        stay = jnp.where(jnp.arange(v) == 0, 0.0, -jnp.inf)
        logp_wv = jnp.where(finished[:, None], stay[None], logp_wv)
        cand = (scores[:, None] + logp_wv).reshape(-1)
        top_scores, top = jax.lax.top_k(cand, w)
        parent, token = top // v, (top % v).astype(jnp.int32)
        tokens, lengths = tokens[parent], lengths[parent]
        finished = finished[parent]
        cache = jax.tree.map(lambda x: x[:, parent], cache)
        tokens = tokens.at[:, step].set(jnp.where(finished, tokens[:, step], token))
        lengths = jnp.where(finished, lengths, step + 1)
        if eos_id is not None:
            finished = finished | (token == eos_id)
        return tokens, lengths, top_scores, finished, cache

    def fn(params, prefix, first_logits):
        logp0 = jax.nn.log_softmax(first_logits[0])
        # All beams start from the prompt; only beam 0 is live, so step 0 gives W distinct
        # first tokens instead of W copies of the best one.
        scores = jnp.where(jnp.arange(w) == 0, 0.0, -jnp.inf)
        carry = (jnp.zeros((w, s), jnp.int32), jnp.zeros((w,), jnp.int32), scores,
                 jnp.zeros((w,), jnp.bool_), init_cache(config, w, s))
        carry = expand(carry, jnp.broadcast_to(logp0, (w, v)), 0)

        def body(step, carry):
            tokens, lengths, scores, finished, cache = carry
            index = jnp.full((w,), step - 1, jnp.int32)
            last = tokens[:, step - 1][:, None]
            positions = (prefix.lengths[0] + index)[:, None]
            logits, cache = model.apply({"params": params}, last, positions, cache=cache,
                                        cache_index=index, prefix=prefix,
                                        prefix_index=jnp.zeros((w,), jnp.int32))
            carry = (tokens, lengths, scores, finished, cache)
            return expand(carry, jax.nn.log_softmax(logits[:, 0], axis=-1), step)

        tokens, lengths, scores, _, _ = jax.lax.fori_loop(1, s, body, carry)
        return tokens, lengths, scores

    return jax.jit(fn)


def beam_search(params, config: ModelConfig, prompt, beam_size: int, max_new_tokens: int,
                eos_id: int | None = None, min_prompt_bucket: int = 16) -> BeamResult:
    """The `beam_size` best completions of `prompt` found by beam search.

    Args:
      params: unboxed parameters of `Decoder(config)`.
      config: the `ModelConfig`.
      prompt: [T] token ids (T >= 1).
      beam_size: W.
      max_new_tokens: S.
      eos_id: token that finishes a beam, or None.
      min_prompt_bucket: the prompt is padded to a power of two at least this long.

    Returns:
      `BeamResult`, best first.
    """
    helper = sampler_lib.Sampler(params, config, method=sampler_lib.Greedy(), num_slots=1,
                                 max_new_tokens=max_new_tokens, eos_id=eos_id,
                                 min_prompt_bucket=min_prompt_bucket)
    state = helper.prefill(prompt)
    fn = make_beam_search(config, int(beam_size), int(max_new_tokens), eos_id)
    tokens, lengths, scores = fn(params, state.prefix, state.first_logits)
    return BeamResult(np.asarray(tokens), np.asarray(lengths), np.asarray(scores))


def greedy(params, config: ModelConfig, prompt, max_new_tokens: int,
           eos_id: int | None = None) -> tuple[np.ndarray, int]:
    """Greedy completion of `prompt`: ([S] int32 tokens, 0 past the length; length)."""
    helper = sampler_lib.Sampler(params, config, method=sampler_lib.Greedy(), num_slots=1,
                                 max_new_tokens=max_new_tokens, eos_id=eos_id)
    out = helper.sample(prompt, 1, seed=0)
    return out.tokens[0], int(out.lengths[0])
