"""Optimizer: AdamW (0.9, 0.95), global-norm clipping, warmup + cosine to the last step.

Stage: train. Consumes an `OptimizerConfig` and the run's step count; produces an optax
`GradientTransformation` and its learning-rate schedule. The cosine reaches its minimum
exactly at the run's last step (index num_steps - 1), as Hoffmann et al. (Chinchilla), Hu
et al. and Du et al. require: a schedule longer than the run biases small-M runs' loss.

Optional muP-style width transfer (Yang et al.; Hu et al. use it so one peak learning rate
serves the whole ladder): with `mup_base_width` set, matrices inside the blocks ("hidden"
weights: every kernel except the embedding table) get init std scaled by 1/sqrt(m) and an
Adam learning rate scaled by 1/m, where m = d_model / mup_base_width. Embeddings, norms and
biases keep the base init and learning rate.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from lmscale.config_check import check_fields
from lmscale.models.config import ConfigError


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """AdamW and its schedule (the z-loss weight lives in `ModelConfig.z_loss_weight`).

    Attributes:
      lr_peak: learning rate after warmup (for the base width under muP).
      lr_min_ratio: the cosine's final value as a fraction of `lr_peak` (Chinchilla: 0.1).
      warmup_steps: linear warmup length from 0; when set it wins over `warmup_fraction`.
      warmup_fraction: warmup as a fraction of the run's steps (rounded down), so one
        setting serves a whole ladder.
      b1, b2, eps: Adam moments (Du et al.: 0.9, 0.95).
      weight_decay: decoupled decay (scaled by the learning rate, as optax/PyTorch AdamW),
        applied to matrices only (rank >= 2), not to norms and biases.
      clip_norm: global gradient-norm clip; 0 disables.
      mup_base_width: d_model at which hidden-weight init and learning rate are the base
        values; None disables the muP-style parametrisation.
    """

    lr_peak: float = 3e-3
    lr_min_ratio: float = 0.1
    warmup_steps: int | None = None
    warmup_fraction: float | None = 0.05
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    clip_norm: float = 1.0
    mup_base_width: int | None = None

    def __post_init__(self):
        check_fields(self, ConfigError)
        if not self.lr_peak > 0:
            raise ConfigError(f"OptimizerConfig.lr_peak={self.lr_peak!r}: must be > 0")
        if not 0 <= self.lr_min_ratio <= 1:
            raise ConfigError(
                f"OptimizerConfig.lr_min_ratio={self.lr_min_ratio!r}: must lie in [0, 1]")
        if self.warmup_steps is not None and (not isinstance(self.warmup_steps, int)
                                              or self.warmup_steps < 0):
            raise ConfigError(
                f"OptimizerConfig.warmup_steps={self.warmup_steps!r}: must be an int >= 0")
        if self.warmup_fraction is not None and not 0 <= self.warmup_fraction < 1:
            raise ConfigError(
                f"OptimizerConfig.warmup_fraction={self.warmup_fraction!r}: must lie in [0, 1)")
        for field in ("b1", "b2"):
            if not 0 <= getattr(self, field) < 1:
                raise ConfigError(f"OptimizerConfig.{field}={getattr(self, field)!r}: must "
                                  f"lie in [0, 1)")
        for field in ("eps", "weight_decay", "clip_norm"):
            if getattr(self, field) < 0:
                raise ConfigError(f"OptimizerConfig.{field}={getattr(self, field)!r}: must "
                                  f"be >= 0")
        if self.mup_base_width is not None and self.mup_base_width < 1:
            raise ConfigError(f"OptimizerConfig.mup_base_width={self.mup_base_width!r}: must "
                              f"be a positive int or None")

    def warmup_for(self, num_steps: int) -> int:
        """Warmup steps for a run of `num_steps`.

        Raises:
          ConfigError: warmup does not end before the last step (naming the field).
        """
        if self.warmup_steps is not None:
            warmup, field = self.warmup_steps, f"warmup_steps={self.warmup_steps}"
        else:
            fraction = self.warmup_fraction or 0.0
            warmup, field = int(fraction * num_steps), f"warmup_fraction={fraction}"
        if num_steps < 2 or warmup >= num_steps - 1:
            raise ConfigError(
                f"OptimizerConfig.{field} gives {warmup} warmup steps but the run has "
                f"num_steps={num_steps}: warmup must end before the last step "
                f"(warmup < num_steps - 1)")
        return warmup

    def width_multiplier(self, d_model: int) -> float:
        """m = d_model / mup_base_width (1 without muP)."""
        return 1.0 if self.mup_base_width is None else d_model / self.mup_base_width


def make_schedule(config: OptimizerConfig, num_steps: int) -> optax.Schedule:
    """Learning rate of step s (0-based): 0 -> lr_peak linearly over warmup, then cosine to
    lr_peak * lr_min_ratio, reached exactly at s = num_steps - 1 and held after."""
    warmup = config.warmup_for(num_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=config.lr_peak, warmup_steps=warmup,
        decay_steps=num_steps - 1, end_value=config.lr_peak * config.lr_min_ratio)


def _path_names(path) -> tuple[str, ...]:
    return tuple(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def param_labels(params) -> dict:
    """'hidden' for block matrices (muP-scaled), 'base' for embeddings, norms, biases."""
    def label(path, leaf):
        names = _path_names(path)
        return "hidden" if leaf.ndim >= 2 and "embed" not in names else "base"
    return jax.tree_util.tree_map_with_path(label, params)


def _decay_mask(params):
    return jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: OptimizerConfig, num_steps: int,
                   d_model: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The run's optimizer and its (base) learning-rate schedule.

    Args:
      config: optimizer settings.
      num_steps: the run's step count (the cosine ends at its last step).
      d_model: the model width (muP learning-rate scaling).

    Returns:
      (tx, schedule): tx expects unboxed float32 parameter pytrees.
    """
    schedule = make_schedule(config, num_steps)

    def adamw(scale: float) -> optax.GradientTransformation:
        lr = schedule if scale == 1.0 else (lambda step: schedule(step) * scale)
        return optax.adamw(lr, b1=config.b1, b2=config.b2, eps=config.eps,
                           weight_decay=config.weight_decay, mask=_decay_mask)

    if config.mup_base_width is None:
        tx = adamw(1.0)
    else:
        m = config.width_multiplier(d_model)
        tx = optax.multi_transform({"hidden": adamw(1.0 / m), "base": adamw(1.0)},
                                   param_labels)
    if config.clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(config.clip_norm), tx)
    return tx, schedule


def scale_init(config: OptimizerConfig, d_model: int, params):
    """muP-style init: hidden matrices' values scaled by 1/sqrt(m); identity without muP."""
    if config.mup_base_width is None:
        return params
    factor = 1.0 / jnp.sqrt(config.width_multiplier(d_model))
    labels = param_labels(params)
    return jax.tree_util.tree_map(lambda p, lab: p * factor if lab == "hidden" else p,
                                  params, labels)
