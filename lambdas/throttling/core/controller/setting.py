"""The setting the controller owns in a downstream's tunables document, and the bounds it moves it within."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from throttling.core.controller._checks import from_mapping, num
from throttling.core.validation import is_finite_number, is_int

__all__ = ["Bounds", "Setting"]


@dataclass(frozen=True)
class Setting:
    """The two values the controller owns in a downstream's tunables document."""

    max_concurrency: int
    rate_per_sec: float

    def __post_init__(self) -> None:
        if not is_int(self.max_concurrency) or self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an int >= 1, got {self.max_concurrency!r}")
        if not (is_finite_number(self.rate_per_sec) and self.rate_per_sec > 0):
            raise ValueError(f"rate_per_sec must be a number > 0, got {self.rate_per_sec!r}")

    def describe(self) -> str:
        return f"max_concurrency {self.max_concurrency}, rate_per_sec {num(self.rate_per_sec)}"


@dataclass(frozen=True)
class Bounds:
    """Where the controller may move a downstream's setting.

    `max_rate_per_sec` is the downstream's contract (less any headroom we keep); the controller
    never writes a rate above it. `max_concurrency` is typically a few times the Little's-law
    concurrency (rate x expected latency). `max_burst`, when given, is the burst at the rate
    ceiling: a rate change sets the burst in proportion (`burst_for`), so a lowered rate does not
    keep a burst sized for the full one; None leaves the burst alone. `expected_latency_ms` is the
    latency the plan assumes (Little's law); in gradient mode the latency baseline may rise above
    it only by a measurement at the floor concurrency. None: no such anchor.
    """

    min_concurrency: int
    max_concurrency: int
    min_rate_per_sec: float
    max_rate_per_sec: float
    max_burst: int | None = None
    expected_latency_ms: float | None = None

    def __post_init__(self) -> None:
        if not is_int(self.min_concurrency) or self.min_concurrency < 1:
            raise ValueError(f"min_concurrency must be an int >= 1, got {self.min_concurrency!r}")
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < self.min_concurrency:
            raise ValueError(
                f"max_concurrency must be an int >= min_concurrency, got {self.max_concurrency!r} < {self.min_concurrency}"
            )
        if not (is_finite_number(self.min_rate_per_sec) and self.min_rate_per_sec > 0):
            raise ValueError(f"min_rate_per_sec must be a number > 0, got {self.min_rate_per_sec!r}")
        if not (is_finite_number(self.max_rate_per_sec) and self.max_rate_per_sec >= self.min_rate_per_sec):
            raise ValueError(
                f"max_rate_per_sec must be a number >= min_rate_per_sec, got {self.max_rate_per_sec!r}"
                f" < {self.min_rate_per_sec!r}"
            )
        if self.max_burst is not None and (not isinstance(self.max_burst, int) or self.max_burst < 1):
            raise ValueError(f"max_burst must be an int >= 1 or None, got {self.max_burst!r}")
        if self.expected_latency_ms is not None and not (is_finite_number(self.expected_latency_ms) and self.expected_latency_ms > 0):
            raise ValueError(f"expected_latency_ms must be a number > 0 or None, got {self.expected_latency_ms!r}")

    def contains(self, setting: Setting) -> bool:
        return (
            self.min_concurrency <= setting.max_concurrency <= self.max_concurrency
            and self.min_rate_per_sec <= setting.rate_per_sec <= self.max_rate_per_sec
        )

    def clamp(self, setting: Setting) -> Setting:
        return Setting(
            max_concurrency=min(max(setting.max_concurrency, self.min_concurrency), self.max_concurrency),
            rate_per_sec=min(max(setting.rate_per_sec, self.min_rate_per_sec), self.max_rate_per_sec),
        )

    def burst_for(self, rate_per_sec: float) -> int | None:
        """The burst that goes with `rate_per_sec`: the ceiling's burst, scaled down with the rate."""
        if self.max_burst is None:
            return None
        return max(1, math.floor(self.max_burst * rate_per_sec / self.max_rate_per_sec + 1e-9))

    @classmethod
    def from_document(cls, raw: Mapping[str, Any]) -> Bounds:
        """The bounds from their JSON document (a plan's `bounds`); `ValueError` naming a bad or unknown field."""
        return from_mapping(cls, raw, "bounds")

    def to_document(self) -> dict[str, Any]:
        """The JSON document `from_document` reads back (every field, in declaration order)."""
        return dataclasses.asdict(self)
