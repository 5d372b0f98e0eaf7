"""Run specification: what one training run trains, and the step count that follows.

Stage: train. A `RunSpec` is built by gin (or code) from a `ModelConfig`, a token budget
(a token multiplier M = D / N or a token count D), the global batch and sequence length.
It derives the number of optimizer steps and the quantities every report needs: N (total
and non-embedding), D (tokens actually trained on, a whole number of steps) and the
compute C = 6 N D (N non-embedding, Kaplan et al.; Gadre et al. eq. 1's C = 6ND).
"""

from __future__ import annotations

import dataclasses
import math

from lmscale.config_check import check_fields
from lmscale.models.config import ConfigError, ModelConfig, count_params
from lmscale.train import record


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run of the ladder.

    Attributes:
      model: the decoder's shape.
      seq_len: tokens per training row T.
      batch_size: rows per optimizer step B, global over all hosts and devices.
      token_multiplier: M = D / N with N the non-embedding parameter count (Gadre et al.'s
        M; Chinchilla-optimal is ~20). Exactly one of `token_multiplier`, `num_tokens`.
      num_tokens: D, the token budget, when not given through M.
      corpus: seqio corpus task name the training stream reads (see `lmscale.data`).
      vocab_spec: vocabulary spec of the corpus (`lmscale.data.vocab.get_vocabulary`).
      seed: seeds parameter init and the data order.
      name: run name (the run directory's name); default `<model.name>_M<M>` or
        `<model.name>_D<D>`.
    """

    model: ModelConfig
    seq_len: int = 128
    batch_size: int = 16
    token_multiplier: float | None = None
    num_tokens: int | None = None
    corpus: str = "lmscale_stdlib_py"
    vocab_spec: str = "byte"
    seed: int = 0
    name: str = ""

    def __post_init__(self):
        check_fields(self, ConfigError, ranges={"seed": {"min": 0}})
        if not isinstance(self.model, ModelConfig):
            raise ConfigError(f"RunSpec.model={self.model!r}: must be a ModelConfig")
        for field in ("seq_len", "batch_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"RunSpec.{field}={value!r}: must be a positive integer")
        if self.seq_len < 2:
            raise ConfigError(f"RunSpec.seq_len={self.seq_len}: must be >= 2")
        if (self.token_multiplier is None) == (self.num_tokens is None):
            raise ConfigError(
                f"RunSpec.token_multiplier={self.token_multiplier!r} and "
                f"RunSpec.num_tokens={self.num_tokens!r}: set exactly one of them")
        if self.token_multiplier is not None and not self.token_multiplier > 0:
            raise ConfigError(
                f"RunSpec.token_multiplier={self.token_multiplier!r}: must be > 0")
        if self.num_tokens is not None and (not isinstance(self.num_tokens, int)
                                            or self.num_tokens < 1):
            raise ConfigError(f"RunSpec.num_tokens={self.num_tokens!r}: must be a positive int")
        if self.seq_len > self.model.max_seq_len:
            raise ConfigError(
                f"RunSpec.seq_len={self.seq_len} exceeds ModelConfig.max_seq_len="
                f"{self.model.max_seq_len} (model {self.model.name or '?'}): lower "
                f"RunSpec.seq_len or raise the model's max_seq_len")
        if not self.name:
            label = self.model.name or f"d{self.model.d_model}l{self.model.n_layers}"
            budget = (f"M{self.token_multiplier:g}" if self.token_multiplier is not None
                      else f"D{self.num_tokens}")
            object.__setattr__(self, "name", f"{label}_{budget}")

    @property
    def num_params(self) -> int:
        """All parameters (unpadded vocabulary)."""
        return count_params(self.model).total

    @property
    def num_params_non_embedding(self) -> int:
        """Kaplan et al.'s N: parameters outside the embedding / unembedding tables."""
        return count_params(self.model).non_embedding

    @property
    def tokens_per_step(self) -> int:
        """Tokens per optimizer step, B * T (padding included: the stream is packed)."""
        return self.batch_size * self.seq_len

    @property
    def num_steps(self) -> int:
        """Optimizer steps: the token budget rounded up to whole steps."""
        budget = (self.token_multiplier * self.num_params_non_embedding
                  if self.token_multiplier is not None else self.num_tokens)
        return max(1, math.ceil(budget / self.tokens_per_step))

    @property
    def total_tokens(self) -> int:
        """D actually trained on: num_steps * tokens_per_step."""
        return self.num_steps * self.tokens_per_step

    @property
    def flops(self) -> float:
        """C = 6 N D with N non-embedding and D = `total_tokens` (`record.flops`)."""
        return record.flops(self.num_params_non_embedding, self.total_tokens)

    @property
    def flops_per_step(self) -> float:
        """Model FLOPs of one step, attention and unembedding included (for MFU)."""
        return self.model.flops_per_token(self.seq_len) * self.tokens_per_step
