"""The controllers the lab compares, each fed the same period metrics on the same schedule.

Each implements `Controller` (`decide(metrics, *, now, period_end) -> Adjustment`), the one
interface the lab's control loop (`lab.mechanisms.ControlLoop`) holds them through, without
knowing which.

- `ProjectController`: the project's controller (`throttling.core.controller.decide`, whichever
  algorithm its policy names), unchanged, with its state carried between periods as the controller
  Lambda carries it in DynamoDB. It moves both the concurrency and the shared limiter's rate.
- `PlainAimd`: the textbook baseline: +1 concurrency after a period without 429s, x0.5 after a
  period with any; no guard of any kind.
- `Gradient2`: Netflix concurrency-limits' Gradient2 from its formulas: a long-term RTT (an
  exponential average of the short-term RTTs, pulled down by 5 % when it is more than twice the
  short one), `gradient = max(0.5, min(1, tolerance x long_rtt / short_rtt))`,
  `new = limit x gradient + queue_size`, smoothed as `limit x (1 - smoothing) + new x smoothing`,
  and no change while less than half the limit is in use. Its defaults: tolerance 1.5, queue size
  4, smoothing 0.2. It ignores drops (429s) by design, as the published algorithm does.

Both baselines move only the concurrency (that is what they were published for); the period,
the bounds and the starting point are the project's, so the comparison is on the same terms.
The short RTT they read is the period's mean latency of answered calls, the same evidence the
project's controller reads in CloudWatch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from throttling.core.controller import (
    AlarmSignal,
    Bounds,
    ControllerPolicy,
    ControllerState,
    PeriodMetrics,
    Setting,
    decide,
)

__all__ = ["Adjustment", "Controller", "Gradient2", "PlainAimd", "ProjectController"]


@dataclass(frozen=True)
class Adjustment:
    """What a controller wants in force: the concurrency, and the limiter's rate (None: no limiter
    or unchanged) with its burst."""

    max_concurrency: int
    rate_per_sec: float | None = None
    burst: int | None = None
    action: str = "hold"
    reason: str = ""


class Controller(Protocol):
    """The one interface of the controllers the lab compares: one decision per period, on the
    period's metrics (None: CloudWatch had nothing) and the downstream's alarms in ALARM (the
    baselines, as published, read none)."""

    def decide(self, metrics: PeriodMetrics | None, *, now: float, period_end: float,
               alarms: Sequence[AlarmSignal] = ()) -> Adjustment: ...


class ProjectController:
    """`throttling.core.controller.decide`, with its state kept between periods; the policy's algorithm is
    whichever the caller chose (this class, like the control loop, does not know which)."""

    def __init__(self, policy: ControllerPolicy, bounds: Bounds, initial: Setting) -> None:
        self.policy = policy
        self.bounds = bounds
        self.setting = initial
        self.state = ControllerState()

    def decide(self, metrics: PeriodMetrics | None, *, now: float, period_end: float,
               alarms: Sequence[AlarmSignal] = ()) -> Adjustment:
        decision = decide(metrics, self.setting, self.bounds, self.state, self.policy, now=now, period_end=period_end,
                          alarms=alarms)
        rate_changed = decision.setting.rate_per_sec != self.setting.rate_per_sec
        self.setting, self.state = decision.setting, decision.state
        return Adjustment(
            max_concurrency=decision.setting.max_concurrency,
            rate_per_sec=decision.setting.rate_per_sec,
            # As the control loop writes it: the burst follows the rate, and only when the rate moved.
            burst=self.bounds.burst_for(decision.setting.rate_per_sec) if rate_changed else None,
            action=decision.action,
            reason=decision.reason,
        )


class PlainAimd:
    """+1 per clean period, x0.5 on any 429, within [min_limit, max_limit]."""

    def __init__(self, initial: int, *, min_limit: int = 1, max_limit: int = 8, decrease_factor: float = 0.5) -> None:
        self.limit = initial
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.decrease_factor = decrease_factor

    def decide(self, metrics: PeriodMetrics | None, *, now: float, period_end: float,
               alarms: Sequence[AlarmSignal] = ()) -> Adjustment:
        if metrics is None or not metrics.has_calls:
            return Adjustment(self.limit, reason="no calls")
        before = self.limit
        if metrics.throttled > 0:
            self.limit = max(self.min_limit, math.floor(self.limit * self.decrease_factor))
        else:
            self.limit = min(self.max_limit, self.limit + 1)
        action = "hold" if self.limit == before else ("decrease" if self.limit < before else "increase")
        return Adjustment(self.limit, action=action, reason=f"{before} -> {self.limit}")


class Gradient2:
    """Netflix's Gradient2Limit, one update per period."""

    def __init__(self, initial: int, *, min_limit: int = 1, max_limit: int = 8, tolerance: float = 1.5,
                 queue_size: float = 4.0, smoothing: float = 0.2, long_window_periods: int = 10) -> None:
        self.estimated_limit = float(initial)
        self.min_limit = min_limit
        self.max_limit = max_limit
        self.tolerance = tolerance
        self.queue_size = queue_size
        self.smoothing = smoothing
        # Netflix keeps 600 samples in the long average, at about one update a second: ten minutes.
        self.long_weight = 2.0 / (long_window_periods + 1)
        self.long_rtt_ms: float | None = None

    @property
    def limit(self) -> int:
        return max(self.min_limit, math.floor(self.estimated_limit))

    def decide(self, metrics: PeriodMetrics | None, *, now: float, period_end: float,
               alarms: Sequence[AlarmSignal] = ()) -> Adjustment:
        before = self.limit
        short = None if metrics is None else metrics.latency_mean_ms
        if short is None or short <= 0:
            return Adjustment(before, reason="no latency sample")
        assert metrics is not None
        if self.long_rtt_ms is None:
            self.long_rtt_ms = short
        else:
            self.long_rtt_ms += (short - self.long_rtt_ms) * self.long_weight
        if self.long_rtt_ms / short > 2:
            # Gradient2's recovery from a long RTT that drifted up during an overload.
            self.long_rtt_ms *= 0.95
        in_flight = metrics.mean_in_flight or 0.0
        if in_flight < self.estimated_limit / 2:
            return Adjustment(before, reason=f"app-limited: {in_flight:.2f} in flight < half of {self.estimated_limit:.2f}")
        gradient = max(0.5, min(1.0, self.tolerance * self.long_rtt_ms / short))
        new_limit = self.estimated_limit * gradient + self.queue_size
        new_limit = self.estimated_limit * (1 - self.smoothing) + new_limit * self.smoothing
        self.estimated_limit = max(float(self.min_limit), min(float(self.max_limit), new_limit))
        after = self.limit
        action = "hold" if after == before else ("decrease" if after < before else "increase")
        return Adjustment(after, action=action, reason=f"gradient {gradient:.2f}: {before} -> {after}")
