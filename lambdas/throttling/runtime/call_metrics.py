"""The metrics of one downstream call, named once for every caller.

The callers (`call_downstream`, the payment authorizer, the legacy consumer) emit the same names
under their own `service` and a `Downstream` dimension, so the control loop's alarms, the
controller's `GetMetricData` queries and the dashboard read one vocabulary (`throttling.core.names`):

| metric | when |
|---|---|
| `DownstreamCalls` | a call was sent (its token taken) |
| `DownstreamSucceeded` | it answered 2xx/3xx |
| `DownstreamThrottled` | it answered 429 |
| `DownstreamUnavailable` | 5xx, a timeout or a refused connection |
| `DownstreamTimeouts` | of those, the timeouts (a slow downstream, not a failing one) |
| `DownstreamDown` | of those, the 5xx with a Retry-After: down until a time (an outage, not overload) |
| `DownstreamRejected` | another 4xx (our request was wrong) |
| `DownstreamLatency` | milliseconds to an answer (successes), for p50/p99 |
"""

from __future__ import annotations

from typing import Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit

from throttling.core import names
from throttling.runtime.downstream_client import (
    DownstreamError,
    DownstreamRejected,
    DownstreamResponse,
    DownstreamThrottled,
    DownstreamUnavailable,
)

__all__ = ["record_call"]


class MetricsSink(Protocol):
    def add_metric(self, name: str, unit: Any, value: float) -> None: ...


def record_call(metrics: MetricsSink, *, response: DownstreamResponse | None = None,
                error: DownstreamError | None = None) -> None:
    """Count one call: its outcome from `response` (an answer) or `error` (what the client raised)."""
    metrics.add_metric(name=names.DOWNSTREAM_CALLS, unit=MetricUnit.Count, value=1)
    if error is None:
        if response is None:
            raise ValueError("record_call needs the response of a call or the error it raised, got neither")
        metrics.add_metric(name=names.DOWNSTREAM_SUCCEEDED, unit=MetricUnit.Count, value=1)
        metrics.add_metric(name=names.DOWNSTREAM_LATENCY, unit=MetricUnit.Milliseconds, value=response.latency_ms)
        return
    for kind, metric in ((DownstreamThrottled, names.DOWNSTREAM_THROTTLED),
                         (DownstreamUnavailable, names.DOWNSTREAM_UNAVAILABLE),
                         (DownstreamRejected, names.DOWNSTREAM_REJECTED)):
        if isinstance(error, kind):
            metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    if isinstance(error, DownstreamUnavailable) and error.details.get("timed_out"):
        metrics.add_metric(name=names.DOWNSTREAM_TIMEOUTS, unit=MetricUnit.Count, value=1)
    if isinstance(error, DownstreamUnavailable) and error.details.get("retry_after_sec") is not None:
        metrics.add_metric(name=names.DOWNSTREAM_DOWN, unit=MetricUnit.Count, value=1)
