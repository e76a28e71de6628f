"""Time sources for the throttling cores, injected so decisions can be tested and replayed.

The pure cores never read the time themselves: callers pass `now` in, taken from a `Clock`.
Production uses `SystemClock`; unit tests, property tests and the lab use `FakeClock`.
"""

from __future__ import annotations

import math
import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    """Anything that tells the time in seconds since the Unix epoch."""

    def now(self) -> float: ...


class SystemClock:
    """Wall-clock time (`time.time`).

    Wall time and not `time.monotonic`: the limiter, semaphore and breaker states live in DynamoDB
    and are read and written by many Lambda execution environments (and by Step Functions). A
    monotonic reading counts from an arbitrary per-host origin, so a TAT or a lease expiry written
    by one environment would mean nothing to the next. Wall clocks on Lambda hosts are kept in sync
    by NTP (typically within milliseconds), which is well inside the precision these decisions need.
    """

    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that only moves when told to; starts at `start_sec` (default 0.0)."""

    def __init__(self, start_sec: float = 0.0) -> None:
        self._now = _finite("start_sec", start_sec)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by `seconds` and return the new time."""
        if _finite("seconds", seconds) < 0:
            raise ValueError(f"advance() takes seconds >= 0, got {seconds}; use set() to move the clock backwards")
        self._now += seconds
        return self._now

    def set(self, t: float) -> None:
        """Jump to `t`, backwards included: the lab uses it to show what clock skew between hosts does."""
        self._now = _finite("t", t)


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value}")
    return float(value)
