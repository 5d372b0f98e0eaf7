"""Sampling methods of the eval sampler: small frozen (hashable) dataclasses.

Stage: eval. Each method maps [B, V] logits and one PRNG key per row to [B] int32 tokens;
`lmscale.eval.sampler` passes them to jit as static arguments (re-exported there).
"""

from __future__ import annotations

import dataclasses
from typing import Union

import jax
import jax.numpy as jnp

Array = jax.Array



def _check_temperature(cls: str, temperature: float):
    if not temperature > 0:
        raise ValueError(f"{cls}.temperature={temperature!r}: must be > 0 (use Greedy() for "
                         f"temperature 0)")


@dataclasses.dataclass(frozen=True)
class Greedy:
    """Argmax decoding (lowest token id among exact ties, as `jnp.argmax`)."""

    def __call__(self, logits_bv: Array, keys_b: Array) -> Array:
        del keys_b
        return argmax(logits_bv)


@dataclasses.dataclass(frozen=True)
class Temperature:
    """Sampling from softmax(logits / temperature) over the whole vocabulary."""

    temperature: float = 1.0

    def __post_init__(self):
        _check_temperature("Temperature", self.temperature)

    def filter(self, logits_bv: Array) -> Array:
        return logits_bv / self.temperature

    def __call__(self, logits_bv: Array, keys_b: Array) -> Array:
        return categorical(keys_b, self.filter(logits_bv))


@dataclasses.dataclass(frozen=True)
class TopK:
    """Sampling from softmax(logits / temperature) restricted to the k largest logits.

    Tokens tied with the k-th largest logit are kept too (the support can exceed k only on
    exact float ties).
    """

    k: int
    temperature: float = 1.0

    def __post_init__(self):
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"TopK.k={self.k!r}: must be a positive integer")
        _check_temperature("TopK", self.temperature)

    def filter(self, logits_bv: Array) -> Array:
        scaled = logits_bv / self.temperature
        k = min(self.k, scaled.shape[-1])
        kth = jax.lax.top_k(scaled, k)[0][..., -1:]
        return jnp.where(scaled >= kth, scaled, -jnp.inf)

    def __call__(self, logits_bv: Array, keys_b: Array) -> Array:
        return categorical(keys_b, self.filter(logits_bv))


@dataclasses.dataclass(frozen=True)
class TopP:
    """Nucleus sampling: the smallest set of most likely tokens whose mass reaches p.

    Probabilities are those of softmax(logits / temperature); the kept set is renormalised.
    A token is kept when the mass of the tokens strictly more likely than it is < p (so the
    most likely token is always kept; ties with the last kept logit are kept too).
    """

    p: float
    temperature: float = 1.0

    def __post_init__(self):
        if not 0 < self.p <= 1:
            raise ValueError(f"TopP.p={self.p!r}: must lie in (0, 1]")
        _check_temperature("TopP", self.temperature)

    def filter(self, logits_bv: Array) -> Array:
        scaled = logits_bv / self.temperature
        sorted_desc = -jnp.sort(-scaled, axis=-1)
        probs = jax.nn.softmax(sorted_desc, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        kept = jnp.where(mass_before < self.p, sorted_desc, jnp.inf)
        threshold = jnp.min(kept, axis=-1, keepdims=True)
        return jnp.where(scaled >= threshold, scaled, -jnp.inf)

    def __call__(self, logits_bv: Array, keys_b: Array) -> Array:
        return categorical(keys_b, self.filter(logits_bv))


Method = Union[Greedy, Temperature, TopK, TopP]


def argmax(x_bv: Array) -> Array:
    """[B] int32 `jnp.argmax(x_bv, -1)` (lowest index among ties) as two plain reductions.

    XLA's CPU backend lowers argmax to a (value, index) tuple reduction that it does not
    vectorise; a max followed by a min over the indices attaining it gives the same index
    several times faster (it was the largest single op of a decode step).
    """
    best = jnp.max(x_bv, axis=-1, keepdims=True)
    index = jnp.arange(x_bv.shape[-1], dtype=jnp.int32)
    return jnp.min(jnp.where(x_bv == best, index, x_bv.shape[-1]), axis=-1)


def categorical(keys_b: Array, logits_bv: Array) -> Array:
    """[B] int32 draws from softmax(logits_bv), row b with its own key keys_b[b].

    The Gumbel-max draw of `jax.random.categorical` (same uniforms, same tie rule, so the
    same tokens for the same keys) with the faster `argmax`. One key per row: a row's draw
    does not depend on the other rows (determinism).
    """
    tiny = jnp.finfo(jnp.float32).tiny
    uniform = jax.vmap(lambda key: jax.random.uniform(key, logits_bv.shape[1:], jnp.float32,
                                                      minval=tiny, maxval=1.0))(keys_b)
    return argmax(logits_bv - jnp.log(-jnp.log(uniform)))
