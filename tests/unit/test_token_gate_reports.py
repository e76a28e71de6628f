"""`TokenGate.report`: what a downstream's answer tells the shared limiter, and in which order."""

from __future__ import annotations

import logging

import pytest

from throttling.core.adaptive_rate import AdaptiveRatePolicy
from throttling.core.rate_limit_headers import RateLimitInfo
from throttling.core.rate_limiter import RatePolicy
from throttling.runtime.downstream_client import (
    DownstreamRejected,
    DownstreamResponse,
    DownstreamThrottled,
    DownstreamUnavailable,
)
from throttling.runtime.token_gate import GateKnobs, GateOutcome, TokenGate

POLICY = RatePolicy(rate_per_sec=10.0, burst=10)
LOOP = AdaptiveRatePolicy()
TOKEN = GateOutcome(True, 0.0, 0.0, 0, 0, admitted_at=1_000.0)
PUBLISHING = RateLimitInfo(limit=5, published_per_sec=5.0, window_sec=1.0)


class RecordingLimiter:
    """Records every report, in order."""

    def __init__(self, *, failing: bool = False) -> None:
        self.reports: list[tuple[str, float | None]] = []
        self.failing = failing

    def report_published(self, bucket, policy, adaptive, *, admitted_at, published_per_sec):
        assert (bucket, admitted_at) == ("crm", TOKEN.admitted_at)
        if self.failing:
            raise RuntimeError("ProvisionedThroughputExceededException")
        self.reports.append(("published", published_per_sec))

    def report_signal(self, bucket, policy, adaptive, *, admitted_at, retry_after_sec):
        assert (bucket, admitted_at) == ("crm", TOKEN.admitted_at)
        self.reports.append(("signal", retry_after_sec))


def response(rate_limit: RateLimitInfo = RateLimitInfo()) -> DownstreamResponse:
    return DownstreamResponse(status=200, body={}, latency_ms=12.0, rate_limit=rate_limit)


@pytest.mark.parametrize(("answer", "signal", "reports"), [
    (response(PUBLISHING), False, [("published", 5.0)]),
    (response(), False, []),
    (DownstreamThrottled({"status": 429, "retry_after_sec": 2.0}, rate_limit=PUBLISHING), True,
     [("published", 5.0), ("signal", 2.0)]),
    (DownstreamThrottled({"status": 429, "retry_after_sec": None}), True, [("signal", None)]),
    (DownstreamUnavailable({"status": 503, "retry_after_sec": 3.0}, rate_limit=PUBLISHING), True,
     [("published", 5.0), ("signal", 3.0)]),
    (DownstreamUnavailable({"status": 500, "retry_after_sec": None}, rate_limit=PUBLISHING), False,
     [("published", 5.0)]),
    (DownstreamRejected({"status": 404}, rate_limit=PUBLISHING), False, [("published", 5.0)]),
    (DownstreamUnavailable({"reason": "timeout", "timed_out": True}), False, []),
], ids=["200 publishing", "200 silent", "429 publishing", "429 silent", "503 shedding, publishing", "500 publishing",
        "404 publishing", "timeout"])
def test_an_answers_published_limit_goes_first_then_its_throttling_signal(answer, signal, reports):
    # GIVEN a gate over a limiter with the inner loop
    limiter = RecordingLimiter()
    gate = TokenGate(limiter, GateKnobs())

    # WHEN the answer to the call TOKEN paid for is reported
    was_signal = gate.report("crm", POLICY, LOOP, TOKEN, answer)

    # THEN the published rate (in any answer that has one) reaches the limiter before the signal, so a 429 under a
    # lowered limit cuts from the lowered rate; only a 429 or a shedding 503 is a signal
    assert was_signal is signal
    assert limiter.reports == reports


def test_without_the_inner_loop_or_an_admission_nothing_is_reported():
    # GIVEN a limiter, a publishing 429, and a bucket without the loop / a token never admitted
    limiter = RecordingLimiter()
    gate = TokenGate(limiter, GateKnobs())
    throttled = DownstreamThrottled({"status": 429, "retry_after_sec": 1.0}, rate_limit=PUBLISHING)
    refused = GateOutcome(False, 1.0, 0.0, 0, 0)

    # WHEN / THEN neither reaches the limiter
    assert gate.report("crm", POLICY, None, TOKEN, throttled) is False
    assert gate.report("crm", POLICY, LOOP, refused, throttled) is False
    assert limiter.reports == []


def test_a_publication_the_limiter_cannot_take_is_logged_and_the_signal_still_reported(caplog):
    # GIVEN a limiter whose table refuses the publication's write
    limiter = RecordingLimiter(failing=True)
    gate = TokenGate(limiter, GateKnobs())

    # WHEN a 429 that publishes a limit is reported
    with caplog.at_level(logging.WARNING):
        was_signal = gate.report("crm", POLICY, LOOP, TOKEN,
                                 DownstreamThrottled({"status": 429, "retry_after_sec": 2.0}, rate_limit=PUBLISHING))

    # THEN nothing is raised (the caller's own error is what its workflow needs), the failure is logged, and the
    # signal still slows the fleet
    assert was_signal is True
    assert limiter.reports == [("signal", 2.0)]
    assert "could not report a published rate limit" in caplog.text
