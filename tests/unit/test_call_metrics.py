"""One vocabulary of call metrics: what each outcome counts, and that the control loop reads only those names."""

from __future__ import annotations

import re
import socket
import urllib.error
from pathlib import Path

import pytest

from throttling.core import names
from throttling.runtime.call_metrics import record_call
from throttling.runtime.downstream_client import (
    DownstreamClient,
    DownstreamRejected,
    DownstreamResponse,
    DownstreamThrottled,
    DownstreamUnavailable,
)

ROOT = Path(__file__).resolve().parents[2]


class Sink:
    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def add_metric(self, name: str, unit, value: float) -> None:
        self.metrics[name] = self.metrics.get(name, 0) + value


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (DownstreamResponse(status=200, body={}, latency_ms=42.0),
         {"DownstreamCalls": 1, "DownstreamSucceeded": 1, "DownstreamLatency": 42.0}),
        (DownstreamThrottled({"status": 429}), {"DownstreamCalls": 1, "DownstreamThrottled": 1}),
        (DownstreamUnavailable({"status": 503}), {"DownstreamCalls": 1, "DownstreamUnavailable": 1}),
        (DownstreamUnavailable({"status": 503, "retry_after_sec": 30}),
         {"DownstreamCalls": 1, "DownstreamUnavailable": 1, "DownstreamDown": 1}),
        (DownstreamUnavailable({"status": 503, "retry_after_sec": None}),
         {"DownstreamCalls": 1, "DownstreamUnavailable": 1}),
        (DownstreamUnavailable({"reason": "timed out", "timed_out": True}),
         {"DownstreamCalls": 1, "DownstreamUnavailable": 1, "DownstreamTimeouts": 1}),
        (DownstreamRejected({"status": 404}), {"DownstreamCalls": 1, "DownstreamRejected": 1}),
    ],
    ids=["2xx", "429", "5xx", "5xx-retry-after", "5xx-no-retry-after", "timeout", "4xx"],
)
def test_each_outcome_counts_the_call_and_its_kind(outcome, expected):
    sink = Sink()
    if isinstance(outcome, DownstreamResponse):
        record_call(sink, response=outcome)
    else:
        record_call(sink, error=outcome)
    assert sink.metrics == expected


def test_an_outcome_is_required():
    with pytest.raises(ValueError, match="needs the response of a call or the error it raised"):
        record_call(Sink())


@pytest.mark.parametrize(
    ("raised", "timed_out"),
    [(socket.timeout("timed out"), True), (urllib.error.URLError(TimeoutError("timed out")), True),
     (urllib.error.URLError(ConnectionRefusedError(111, "refused")), False), (ConnectionResetError(), False)],
    ids=["socket-timeout", "url-timeout", "refused", "reset"],
)
def test_the_client_says_whether_an_unavailable_downstream_timed_out(raised, timed_out):
    def opener(request, timeout):
        raise raised

    client = DownstreamClient("crm", "https://crm.example.com", timeout_sec=1, opener=opener)
    with pytest.raises(DownstreamUnavailable) as error:
        client.call("GET", "/users/1")
    assert error.value.details["timed_out"] is timed_out


def test_the_control_loop_reads_only_metrics_the_callers_emit():
    # Every outcome once: the names a caller can emit
    emitted: set[str] = set()
    for outcome in (DownstreamThrottled({}), DownstreamUnavailable({"timed_out": True}),
                    DownstreamUnavailable({"retry_after_sec": 30}), DownstreamRejected({})):
        sink = Sink()
        record_call(sink, error=outcome)
        emitted |= set(sink.metrics)
    sink = Sink()
    record_call(sink, response=DownstreamResponse(status=200, body={}, latency_ms=1.0))
    emitted |= set(sink.metrics)
    # ... and the names the alarms (the stack) and the controller (its GetMetricData queries) read
    from throttling.adapters import cloudwatch_period_reader as control_loop

    source = (ROOT / "stacks" / "control_loop_stack.py").read_text()
    read = set(re.findall(r'"(Downstream[A-Z][A-Za-z]+)"', source))
    read |= {getattr(names, constant) for constant in re.findall(r"\bnames\.(DOWNSTREAM_[A-Z_]+)\b", source)
             if constant != "DOWNSTREAM_DIMENSION"}
    read |= {name for name in control_loop._SUMS.values() if name.startswith("Downstream")} | {control_loop._LATENCY}
    assert {"DownstreamCalls", "DownstreamThrottled", "DownstreamUnavailable", "DownstreamLatency", "DownstreamDown",
            "DownstreamSucceeded", "DownstreamTimeouts", "DownstreamRejected"} <= read
    assert read <= emitted, read - emitted
