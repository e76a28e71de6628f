"""What happened in a run: every request's fate, per-second counts, and each controller period's metrics.

Every request is in exactly one state at any time, and the ledger can say so at the end:
- `queued`: waiting to be taken (a Map's backlog, or a message in the queue, visible or not);
- `running`: taken by a Map iteration or a consumer invocation (calling, waiting for a token,
  waiting out a retry delay or a Retry-After: all of these hold the slot);
- `succeeded`: the downstream answered 2xx;
- `failed`: given up (retries and waits spent, a wait asked for beyond what a workflow holds an
  item, or the queue's receive count spent: the dead-letter queue).

The per-period figures are what the callers publish and the controller reads from CloudWatch in
production (calls, 429s, 5xx and timeouts, of those the 5xx with a Retry-After (`down`), our
limiter's refusals, latency percentiles of answered calls), so the controller gets the same kind
of evidence in the lab as in an account.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from throttling.core.controller import PeriodMetrics

__all__ = ["FAILED", "QUEUED", "RUNNING", "STATES", "SUCCEEDED", "Ledger", "Request", "percentile"]

QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED)


@dataclass(eq=False)
class Request:
    """One unit of work (an e-mail to send, an order to authorize) and what happened to it."""

    id: int
    arrived_at: float
    state: str = QUEUED
    finished_at: float | None = None
    why_failed: str | None = None
    calls: int = 0
    task_attempts: int = 0
    waits: int = 0
    receives: int = 0
    retries: dict[int, int] = field(default_factory=dict)


@dataclass
class _Period:
    calls: int = 0
    throttled: int = 0
    errors: int = 0
    down: int = 0
    refused: int = 0
    latencies_ms: list[float] = field(default_factory=list)


class Ledger:
    """Counts a run second by second; `period_sec` is the controller's period."""

    def __init__(self, duration_sec: float, period_sec: float = 60.0) -> None:
        self.duration_sec = duration_sec
        self.period_sec = period_sec
        seconds = math.ceil(duration_sec) + 1
        self.arrivals = [0] * seconds
        self.successes = [0] * seconds
        self.failures = [0] * seconds
        self.calls = [0] * seconds
        self.answered = [0] * seconds
        self.throttled = [0] * seconds
        self.errors = [0] * seconds
        self.limiter_refused = [0] * seconds
        self.limiter_decisions = 0
        self.requests: list[Request] = []
        self._by_state = dict.fromkeys(STATES, 0)
        self._periods: dict[int, _Period] = {}
        self.end_to_end_sec: list[float] = []
        # Sampled once a second by the run: what was in force and in use.
        self.running: list[int] = []
        self.in_flight: list[int] = []
        self.pending: list[int] = []
        self.concurrency_limit: list[float] = []
        self.rate_limit: list[float] = []
        self.capacity_rps: list[float] = []

    # -- requests ------------------------------------------------------------------------------

    def arrive(self, now: float) -> Request:
        request = Request(len(self.requests), now)
        self.requests.append(request)
        self._by_state[QUEUED] += 1
        self.arrivals[int(now)] += 1
        return request

    def move(self, request: Request, state: str) -> None:
        if request.state in (SUCCEEDED, FAILED):
            raise ValueError(f"request {request.id} already {request.state}; it cannot become {state}")
        self._by_state[request.state] -= 1
        self._by_state[state] += 1
        request.state = state

    def succeed(self, request: Request, now: float) -> None:
        self.move(request, SUCCEEDED)
        request.finished_at = now
        self.successes[int(now)] += 1
        self.end_to_end_sec.append(now - request.arrived_at)

    def fail(self, request: Request, now: float, why: str) -> None:
        self.move(request, FAILED)
        request.finished_at = now
        request.why_failed = why
        self.failures[int(now)] += 1

    def count(self, state: str) -> int:
        return self._by_state[state]

    # -- calls ---------------------------------------------------------------------------------

    def call_sent(self, now: float) -> None:
        self.calls[int(now)] += 1
        self._period(now).calls += 1

    def call_answered(self, now: float, status: int, latency_sec: float, retry_after: float | None = None) -> None:
        second = int(now)
        self.answered[second] += 1
        period = self._period(now)
        if status == 429:
            self.throttled[second] += 1
            period.throttled += 1
        elif status >= 500:
            self.errors[second] += 1
            # As the callers count it: a 5xx with a Retry-After is the downstream saying it is down.
            if retry_after is not None:
                period.down += 1
            else:
                period.errors += 1
        else:
            # As in the caller Lambda: the latency metric is put only for a call that returned.
            period.latencies_ms.append(latency_sec * 1000)

    def limiter_decided(self, now: float, allowed: bool) -> None:
        self.limiter_decisions += 1
        if not allowed:
            self.limiter_refused[int(now)] += 1

    def limiter_gave_up(self, now: float) -> None:
        """The caller raised RateLimited: the metric the controller reads as demand above the rate."""
        self._period(now).refused += 1

    def sample(self, *, running: int, in_flight: int, pending: int, concurrency_limit: float,
               rate_limit: float, capacity_rps: float) -> None:
        self.running.append(running)
        self.in_flight.append(in_flight)
        self.pending.append(pending)
        self.concurrency_limit.append(concurrency_limit)
        self.rate_limit.append(rate_limit)
        self.capacity_rps.append(capacity_rps)

    # -- the controller's view -----------------------------------------------------------------

    def period_metrics(self, start: float, end: float) -> PeriodMetrics | None:
        """What CloudWatch would answer for [start, end): None when nobody called."""
        period = self._periods.get(self._index(start))
        if period is None or period.calls == 0:
            return None
        latencies = sorted(period.latencies_ms)
        return PeriodMetrics(
            calls=float(period.calls),
            throttled=float(period.throttled),
            server_errors=float(period.errors),
            down=float(period.down),
            limiter_refused=float(period.refused),
            latency_p50_ms=percentile(latencies, 50) if latencies else None,
            latency_p99_ms=percentile(latencies, 99) if latencies else None,
            latency_mean_ms=sum(latencies) / len(latencies) if latencies else None,
            period_sec=end - start,
        )

    def _index(self, t: float) -> int:
        return int(t // self.period_sec)

    def _period(self, now: float) -> _Period:
        index = self._index(now)
        period = self._periods.get(index)
        if period is None:
            period = self._periods[index] = _Period()
        return period


def percentile(ordered: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (what CloudWatch's pNN statistic approximates)."""
    if not ordered:
        raise ValueError("a percentile of no values is undefined")
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]
