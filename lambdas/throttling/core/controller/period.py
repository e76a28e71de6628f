"""What the controller judges: one period's metrics of one downstream, and the alarms in ALARM with it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from throttling.core import planning
from throttling.core.controller._checks import require_non_negative
from throttling.core.names import ALARM_KINDS, ALARM_THROTTLED
from throttling.core.validation import is_finite_number

__all__ = ["ALARM_KINDS", "AlarmSignal", "PeriodMetrics", "evaluated_period"]

# What a slow-down alarm watches (`ALARM_KINDS`): 429s and errors also lower the rate; latency only the concurrency.


def evaluated_period(now: float, period_sec: float = float(planning.DEFAULT_PERIOD_SEC),
                     delay_sec: float = float(planning.DEFAULT_METRICS_DELAY_SEC)) -> tuple[float, float]:
    """The last whole period whose metrics are complete at `now`: `(start, end)` in epoch seconds.

    Metrics land in CloudWatch some time after the calls (EMF is shipped from the logs), so the
    period ends at or before `now - delay_sec`, on a multiple of `period_sec`.
    """
    if not (is_finite_number(period_sec) and period_sec > 0) or not (is_finite_number(delay_sec) and delay_sec >= 0):
        raise ValueError(f"period_sec must be > 0 and delay_sec >= 0, got {period_sec!r} and {delay_sec!r}")
    end = math.floor((now - delay_sec) / period_sec) * period_sec
    return end - period_sec, end


@dataclass(frozen=True)
class PeriodMetrics:
    """What one period showed for one downstream, summed over every function that calls it.

    `calls` is None when CloudWatch had no datapoint (nobody called). `server_errors` are 5xx and
    refused connections, `timeouts` calls that got no answer in time (the callers here count both
    as `DownstreamUnavailable`, so `timeouts` may stay 0). `down` are 5xx that came with a
    Retry-After (`DownstreamDown`): the downstream said it is unavailable until a time; they are
    not in `server_errors`. `limiter_refused` counts calls our own limiter turned away
    (`RateLimited`): demand above the rate in force. Successes are what is left:
    `calls - throttled - server_errors - timeouts - down`. Latencies are of answered calls.
    """

    calls: float | None = None
    throttled: float = 0.0
    server_errors: float = 0.0
    timeouts: float = 0.0
    limiter_refused: float = 0.0
    down: float = 0.0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_mean_ms: float | None = None
    period_sec: float = float(planning.DEFAULT_PERIOD_SEC)

    def __post_init__(self) -> None:
        for name in ("throttled", "server_errors", "timeouts", "limiter_refused", "down"):
            require_non_negative(name, getattr(self, name))
        for name in ("calls", "latency_p50_ms", "latency_p99_ms", "latency_mean_ms"):
            value = getattr(self, name)
            if value is not None:
                require_non_negative(name, value)
        if not (is_finite_number(self.period_sec) and self.period_sec > 0):
            raise ValueError(f"period_sec must be a number > 0, got {self.period_sec!r}")

    @property
    def has_calls(self) -> bool:
        return self.calls is not None and self.calls > 0

    @property
    def call_count(self) -> float:
        """The calls of the period, 0 when CloudWatch had no datapoint."""
        return self.calls or 0.0

    @property
    def throttle_rate(self) -> float:
        """429s per call (capped at 1: counters come from separate metrics and may disagree)."""
        return self._per_call(self.throttled)

    @property
    def error_rate(self) -> float:
        """5xx and timeouts per call, answers of a downstream that said it is down left out."""
        return self._per_call(self.server_errors + self.timeouts)

    @property
    def successes(self) -> float:
        return max(0.0, (self.calls or 0.0) - self.throttled - self.server_errors - self.timeouts - self.down)

    @property
    def down_rate(self) -> float:
        """Answers "down until a time" (5xx with a Retry-After) per call."""
        return self._per_call(self.down)

    @property
    def call_rate_per_sec(self) -> float:
        return (self.calls or 0.0) / self.period_sec

    @property
    def typical_latency_ms(self) -> float | None:
        """The median if known, else the mean: the "short RTT" of the gradient."""
        return self.latency_p50_ms if self.latency_p50_ms is not None else self.latency_mean_ms

    @property
    def mean_in_flight(self) -> float | None:
        """Calls in flight on average, by Little's law (rate x mean latency); None without a latency."""
        latency_ms = self.latency_mean_ms if self.latency_mean_ms is not None else self.latency_p50_ms
        if latency_ms is None:
            return None
        return self.call_rate_per_sec * latency_ms / 1000

    def _per_call(self, count: float) -> float:
        return min(1.0, count / self.call_count) if self.has_calls else 0.0


@dataclass(frozen=True)
class AlarmSignal:
    """A slow-down alarm of this downstream that is in ALARM (delivered by its state-change event)."""

    name: str
    kind: str = ALARM_THROTTLED

    def __post_init__(self) -> None:
        if self.kind not in ALARM_KINDS:
            raise ValueError(f"alarm kind must be one of {list(ALARM_KINDS)}, got {self.kind!r}")
