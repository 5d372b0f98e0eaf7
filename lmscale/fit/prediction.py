"""A prediction: a point, a central interval at a stated level, its method and its caveats.

Stage: fit. The product's output type (DESIGN.md, "predictions"): every predicted number
that lmscale reports (loss, accuracy or error, dataset- and instance-level PU, pass@k, loss
threshold) is a `Prediction`. Its interval is predictive (parameter uncertainty carried
through the chain of laws, plus the noise of measuring the target), and it is clipped to
the quantity's range (`bounds`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One predicted quantity.

    Attributes:
      quantity: what is predicted ("loss", "accuracy", "error", "pu", ...).
      point: the point prediction.
      low, high: the central interval at `level` (low <= point <= high is not required:
        a skewed predictive distribution may put the point near an edge).
      level: nominal coverage of [low, high], in (0, 1).
      method: the law or chain that made it (e.g. "L(N) kaplan-floor -> Err(L)").
      reasons: why it may be unreliable (a parameter at its bound, failed bootstrap
        refits, extrapolation far outside the fitted range, ...); empty when none is known.
      bounds: the quantity's range; the interval never leaves it.
      details: method-specific extras (bootstrap size and failures, inputs, ...).
    """
    quantity: str
    point: float
    low: float
    high: float
    level: float = 0.9
    method: str = ""
    reasons: tuple[str, ...] = ()
    bounds: tuple[float, float] = (-math.inf, math.inf)
    details: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self):
        if not 0 < self.level < 1:
            raise ValueError(f"Prediction.level={self.level} must lie in (0, 1)")
        lo_b, hi_b = self.bounds
        clip = lambda v: float(min(max(float(v), lo_b), hi_b))  # noqa: E731
        object.__setattr__(self, "point", clip(self.point))
        object.__setattr__(self, "low", clip(self.low))
        object.__setattr__(self, "high", clip(self.high))
        object.__setattr__(self, "reasons", tuple(self.reasons))
        if self.low > self.high:
            raise ValueError(f"Prediction interval [{self.low}, {self.high}] is reversed")

    @property
    def reliable(self) -> bool:
        return not self.reasons

    @property
    def interval(self) -> tuple[float, float]:
        return (self.low, self.high)

    def covers(self, value: float) -> bool:
        """Whether the measured `value` lies in [low, high]."""
        return self.low <= float(value) <= self.high

    def relative_error(self, value: float) -> float:
        """|point - value| / |value|; raises ValueError for value 0."""
        if float(value) == 0:
            raise ValueError("relative error is undefined for a measured value of 0")
        return abs(self.point - float(value)) / abs(float(value))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: `predicted`, `interval`, `level`, `method`, `reasons`."""
        return {"quantity": self.quantity, "predicted": self.point,
                "interval": [self.low, self.high], "level": self.level,
                "method": self.method, "reasons": list(self.reasons)}
