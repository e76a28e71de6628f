"""The payment authorizer's rules without AWS: waiting for a token, what the breaker counts, and a refusal.

The handler builds its dependencies from its environment once per execution environment, as on Lambda;
`deps` builds them from a test environment (boto3 clients are created, never called) and each test
swaps the limiter, the gateway client and the breaker for fakes. Idempotency itself runs on the
emulator (`tests/e2e/test_payment_workflow.py`), where the gateway counts the charges.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from throttling.core.circuit_breaker import Admission, BreakerPolicy, BreakerStatus
from throttling.core.rate_limit_headers import RateLimitInfo
from throttling.core.rate_limiter import RateDecision, RatePolicy
from throttling.core.tunables import DownstreamTunables
from throttling.runtime.downstream_client import (
    DownstreamRejected,
    DownstreamResponse,
    DownstreamThrottled,
    DownstreamUnavailable,
    RateLimited,
)

ENVIRONMENT = {
    "DOWNSTREAM_NAME": "payment_gateway",
    "DOWNSTREAM_BASE_URL": "http://127.0.0.1:9",
    "DOWNSTREAM_TIMEOUT_SEC": "10",
    "DOWNSTREAM_RATE_LIMIT_PER_SEC": "2",
    "DOWNSTREAM_BURST": "2",
    "TUNABLES_PARAMETER_NAME": "/throttling/test/downstreams/payment_gateway",
    "BREAKER_TUNABLES_PARAMETER_NAME": "/throttling/test/breakers/payment_gateway",
    "RATE_LIMITER_TABLE_NAME": "limiter",
    "BREAKER_TABLE_NAME": "breakers",
    "IDEMPOTENCY_TABLE_NAME": "idempotency",
    "LIMITER_MAX_WAIT_SEC": "0.5",
    "POWERTOOLS_SERVICE_NAME": "payment-authorizer",
    "POWERTOOLS_METRICS_NAMESPACE": "Test",
}
ALLOW = RateDecision(allowed=True, retry_after_sec=0.0, remaining=0, reset_after_sec=1.0, new_tat=1.0, based_on_tat=0.0)
ORDER = {"order_id": "o-1", "customer_id": "c-1", "amount": "12.50", "currency": "EUR",
         "items": [{"sku": "sku-1", "quantity": 1}]}


def deny(retry_after_sec: float) -> RateDecision:
    return RateDecision(allowed=False, retry_after_sec=retry_after_sec, remaining=0, reset_after_sec=retry_after_sec,
                        new_tat=None, based_on_tat=0.0)


@dataclass
class Context:
    remaining_ms: int = 17_000
    aws_request_id: str = "request-1"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Limiter:
    decisions: list[RateDecision]
    asked: int = 0
    answer_after_sec: list[float] = field(default_factory=list)

    reported: list[dict[str, Any]] = field(default_factory=list)
    published: list[dict[str, Any]] = field(default_factory=list)

    def try_acquire(self, bucket: str, policy: RatePolicy, cost: int = 1, adaptive: Any = None) -> RateDecision:
        self.asked += 1
        if self.answer_after_sec:
            time.sleep(self.answer_after_sec.pop(0))
        return self.decisions.pop(0)

    def report_signal(self, bucket: str, policy: RatePolicy, adaptive: Any, *, admitted_at: float,
                      retry_after_sec: float | None) -> None:
        self.reported.append({"bucket": bucket, "admitted_at": admitted_at, "retry_after_sec": retry_after_sec})

    def report_published(self, bucket: str, policy: RatePolicy, adaptive: Any, *, admitted_at: float,
                         published_per_sec: float | None) -> None:
        self.published.append({"bucket": bucket, "admitted_at": admitted_at, "published_per_sec": published_per_sec})


@dataclass
class Breaker:
    admission: Admission = field(default_factory=lambda: Admission(True, False, 0.0, BreakerStatus.CLOSED))
    recorded: list[bool] = field(default_factory=list)

    def allow(self, name: str, caller_id: str) -> Admission:
        return self.admission

    def record(self, name: str, caller_id: str, *, success: bool, duration_sec: float) -> None:
        self.recorded.append(success)


@dataclass
class Gateway:
    outcome: Any
    timeout_sec: float = 10.0
    calls: list[dict[str, Any]] = field(default_factory=list)
    # What the gateway's 2xx headers say of its limit (nothing, unless a test says otherwise).
    rate_limit: RateLimitInfo = field(default_factory=RateLimitInfo)

    def call(self, method: str, path: str, *, body: Any = None, headers: Any = None) -> DownstreamResponse:
        self.calls.append({"method": method, "path": path, "body": body, "headers": headers})
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return DownstreamResponse(status=200, body=self.outcome, latency_ms=300.0, rate_limit=self.rate_limit)


@dataclass
class Unanswered:
    """The notes of unanswered authorizations: order id -> when the first went unanswered."""

    first: dict[str, float] = field(default_factory=dict)

    def first_at(self, order_id: str) -> float | None:
        return self.first.get(order_id)

    def note(self, order_id: str, now: float) -> None:
        self.first.setdefault(order_id, now)


@pytest.fixture(scope="module")
def authorizer(import_handler):
    # Only Powertools' own variables: its logger and metrics read their service and namespace at import.
    return import_handler("handlers.authorize_payment", {name: value for name, value in ENVIRONMENT.items()
                                                         if name.startswith("POWERTOOLS_")})


@pytest.fixture
def deps(authorizer):
    """The authorizer's dependencies in the test environment (boto3 clients are created, never called)."""
    return authorizer.build_dependencies(ENVIRONMENT)


@pytest.fixture
def fakes(authorizer, deps, monkeypatch):
    """Fakes for everything the authorization talks to; returns (limiter, breaker, gateway) to script."""
    limiter, breaker, gateway = Limiter([ALLOW]), Breaker(), Gateway({"request_id": "req-000001"})
    deps.gate.limiter = limiter
    deps.client = gateway
    deps.breaker = lambda: breaker
    monkeypatch.setattr(deps.tunables, "get", lambda: DownstreamTunables(1.8, 1, 1))
    deps.unanswered = Unanswered()
    monkeypatch.setattr(authorizer, "dependencies", lambda: deps)
    return limiter, breaker, gateway


def test_short_refusals_are_waited_out_in_the_function(authorizer, deps, fakes):
    # GIVEN a limiter that refuses twice, each time for 10 ms
    limiter, _, _ = fakes
    limiter.decisions[:] = [deny(0.01), deny(0.01), ALLOW]
    # WHEN a token is taken THEN it waits and gets one, asking three times
    authorizer.take_token(deps, RatePolicy(1.8, 1), Context())
    assert limiter.asked == 3


def test_a_refusal_longer_than_the_function_may_wait_is_handed_to_the_workflow(authorizer, deps, fakes):
    # GIVEN a refusal of 5 s, beyond LIMITER_MAX_WAIT_SEC (0.5 s here)
    limiter, _, _ = fakes
    limiter.decisions[:] = [deny(5.0)]
    # WHEN a token is taken THEN RateLimited carries the wait for the workflow, without waiting here
    with pytest.raises(RateLimited) as raised:
        authorizer.take_token(deps, RatePolicy(1.8, 1), Context())
    assert json.loads(str(raised.value)) == {"downstream": "payment_gateway", "retry_after_sec": 5.0}


def test_a_token_that_comes_back_too_late_is_not_spent_and_another_is_taken(authorizer, deps, fakes):
    # GIVEN a first admission slower than the room the gateway's 2 at 2/s leaves over 1 at 1.8/s allows
    limiter, _, _ = fakes
    limiter.decisions[:] = [ALLOW, ALLOW]
    limiter.answer_after_sec[:] = [authorizer.stale_token_after_sec(RatePolicy(1.8, 1), RatePolicy(2.0, 2)) + 0.05]
    # WHEN a token is taken THEN the late one is dropped and a second one asked for
    authorizer.take_token(deps, RatePolicy(1.8, 1), Context())
    assert limiter.asked == 2


def test_no_wait_when_the_invocation_has_no_time_left_for_the_call(authorizer, deps, fakes):
    limiter, _, _ = fakes
    limiter.decisions[:] = [deny(0.01)]
    with pytest.raises(RateLimited):
        authorizer.take_token(deps, RatePolicy(1.8, 1), Context(remaining_ms=10_500))  # the call needs its 10 s


@pytest.mark.parametrize(
    ("outcome", "counted_as_success"),
    [
        (DownstreamUnavailable({"status": 503}), False),  # 5xx, timeouts: the gateway is failing
        (DownstreamThrottled({"status": 429}), True),  # up and answering: the limiter's business
        (DownstreamRejected({"status": 400}), True),  # up and answering: our request is wrong
    ],
)
def test_only_failures_of_the_gateway_count_against_the_breaker(authorizer, deps, fakes, outcome, counted_as_success):
    _, breaker, gateway = fakes
    gateway.outcome = outcome
    with pytest.raises(type(outcome)):
        authorizer.authorize(deps, order=ORDER, context=Context())
    assert breaker.recorded == [counted_as_success]


@pytest.mark.parametrize(
    ("outcome", "reported"),
    [
        (DownstreamThrottled({"status": 429, "retry_after_sec": 3.0}), {"retry_after_sec": 3.0}),
        (DownstreamThrottled({"status": 429, "retry_after_sec": None}), {"retry_after_sec": None}),
        (DownstreamUnavailable({"status": 503, "retry_after_sec": 7.0}), {"retry_after_sec": 7.0}),  # shedding load
        (DownstreamUnavailable({"status": 503, "retry_after_sec": None}), None),  # failing: the breaker's business
        (DownstreamUnavailable({"status": 503, "retry_after_sec": 3600.0}), None),  # down for an hour: the breaker's
        (DownstreamUnavailable({"reason": "timeout", "timed_out": True}), None),
        (DownstreamRejected({"status": 400}), None),
    ],
)
def test_a_throttling_answer_is_reported_to_the_shared_limiter_for_the_token_that_paid_for_the_call(
        authorizer, deps, fakes, outcome, reported):
    # GIVEN a token admitted at 1000.0, and a gateway answering `outcome`
    limiter, _, gateway = fakes
    limiter.decisions[:] = [replace(ALLOW, decided_at=1_000.0)]
    gateway.outcome = outcome
    # WHEN the order is authorized
    with pytest.raises(type(outcome)):
        authorizer.authorize(deps, order=ORDER, context=Context())
    # THEN a 429, or a 503 with Retry-After, reaches the limiter naming that admission; nothing else does
    expected = [] if reported is None else [{"bucket": "payment_gateway", "admitted_at": 1_000.0, **reported}]
    assert limiter.reported == expected


def test_a_limit_the_gateway_publishes_is_reported_from_a_2xx_and_from_a_429(authorizer, deps, fakes):
    # GIVEN a token admitted at 1000.0, and a gateway whose 200 publishes 1.5 req/s
    limiter, _, gateway = fakes
    limiter.decisions[:] = [replace(ALLOW, decided_at=1_000.0), replace(ALLOW, decided_at=1_001.0)]
    gateway.rate_limit = RateLimitInfo(limit=3, published_per_sec=1.5, window_sec=2.0)
    # WHEN an order is authorized
    authorizer.authorize(deps, order=ORDER, context=Context())
    # THEN the published rate reached the limiter for that admission, and no signal did
    assert limiter.published == [{"bucket": "payment_gateway", "admitted_at": 1_000.0, "published_per_sec": 1.5}]
    assert limiter.reported == []
    # WHEN the next answer is a 429 publishing 1 req/s
    gateway.outcome = DownstreamThrottled({"status": 429, "retry_after_sec": 2.0},
                                          rate_limit=RateLimitInfo(published_per_sec=1.0, window_sec=1.0))
    with pytest.raises(DownstreamThrottled):
        authorizer.authorize(deps, order=ORDER, context=Context())
    # THEN the publication and then the signal are reported, both for that call's admission
    assert limiter.published[-1] == {"bucket": "payment_gateway", "admitted_at": 1_001.0, "published_per_sec": 1.0}
    assert limiter.reported == [{"bucket": "payment_gateway", "admitted_at": 1_001.0, "retry_after_sec": 2.0}]


def test_a_report_the_limiter_cannot_take_leaves_the_gateways_error_to_the_workflow(authorizer, deps, fakes):
    # GIVEN a limiter whose table throttles the report
    limiter, _, gateway = fakes
    limiter.decisions[:] = [replace(ALLOW, decided_at=1_000.0)]
    gateway.outcome = DownstreamThrottled({"status": 429, "retry_after_sec": 1.0})

    def store_down(*args, **kwargs):
        raise RuntimeError("ProvisionedThroughputExceededException")

    limiter.report_signal = store_down
    # WHEN the order is authorized THEN the workflow still gets the 429, not the store's error
    with pytest.raises(DownstreamThrottled):
        authorizer.authorize(deps, order=ORDER, context=Context())


def test_an_authorization_sends_the_order_id_as_idempotency_key_and_answers_the_decision(authorizer, deps, fakes):
    _, breaker, gateway = fakes
    answer = authorizer.authorize(deps, order=ORDER, context=Context())
    assert answer == {"order_id": "o-1", "authorized": True, "authorization_id": "req-000001", "decline_reason": None}
    (call,) = gateway.calls
    assert (call["method"], call["path"], call["headers"]["Idempotency-Key"]) == ("POST", "/authorize", "o-1")
    assert call["body"] == {"order_id": "o-1", "customer_id": "c-1", "amount": "12.50", "currency": "EUR"}
    assert breaker.recorded == [True]


def test_a_refusing_breaker_raises_breaker_open_before_the_token_and_sends_nothing(authorizer, deps, fakes):
    # GIVEN a breaker that is open for 12 s more
    limiter, breaker, gateway = fakes
    breaker.admission = Admission(False, False, 12.0, BreakerStatus.OPEN)
    # WHEN the order is authorized THEN BreakerOpen (the workflow parks the order) says for how long
    with pytest.raises(authorizer.BreakerOpen) as raised:
        authorizer.authorize(deps, order=ORDER, context=Context())
    assert json.loads(str(raised.value)) == {"downstream": "payment_gateway", "breaker": "open",
                                             "retry_after_sec": 12.0}
    assert (limiter.asked, gateway.calls, breaker.recorded) == (0, [], [])


def test_an_unanswered_authorization_is_noted_once_with_its_first_time(authorizer, deps, fakes):
    # GIVEN a gateway that times out (the authorization may have been made) twice
    limiter, _, gateway = fakes
    limiter.decisions[:] = [ALLOW, ALLOW]
    gateway.outcome = DownstreamUnavailable({"reason": "timeout"})
    # WHEN the order is authorized twice THEN each attempt fails as before, and the first one is noted
    before = time.time()
    for _ in range(2):
        with pytest.raises(DownstreamUnavailable):
            authorizer.authorize(deps, order=ORDER, context=Context())
    assert list(deps.unanswered.first) == ["o-1"]
    assert before <= deps.unanswered.first["o-1"] <= before + 5


@pytest.mark.parametrize("outcome", [DownstreamThrottled({"status": 429}), DownstreamRejected({"status": 400})])
def test_an_answered_refusal_is_not_noted(authorizer, deps, fakes, outcome):
    _, _, gateway = fakes
    gateway.outcome = outcome
    with pytest.raises(type(outcome)):
        authorizer.authorize(deps, order=ORDER, context=Context())
    assert deps.unanswered.first == {}


def test_an_order_unanswered_for_longer_than_the_gateway_keeps_its_key_is_not_sent_again(authorizer, deps, fakes):
    # GIVEN an order whose authorization went unanswered two days ago, then was parked, and is resumed now
    limiter, breaker, gateway = fakes
    two_days_ago = time.time() - 2 * 86_400
    deps.unanswered.first["o-1"] = two_days_ago
    # WHEN it is authorized THEN nothing is sent (not even the breaker or the limiter asked): the workflow cancels it
    with pytest.raises(authorizer.AuthorizationOutcomeUnknown) as raised:
        authorizer.authorize(deps, order=ORDER, context=Context())
    assert json.loads(str(raised.value)) == {
        "downstream": "payment_gateway", "first_unanswered_at": round(two_days_ago, 3), "key_kept_sec": 23 * 3600}
    assert (limiter.asked, gateway.calls, breaker.recorded) == (0, [], [])


def test_an_order_unanswered_an_hour_ago_is_sent_again_under_the_same_key(authorizer, deps, fakes):
    # GIVEN an order resumed an hour after its authorization went unanswered: the gateway still has the key
    _, _, gateway = fakes
    deps.unanswered.first["o-1"] = time.time() - 3600
    # WHEN it is authorized THEN it is sent, with the order id as Idempotency-Key (the gateway answers the first)
    assert authorizer.authorize(deps, order=ORDER, context=Context())["authorized"] is True
    assert [call["headers"]["Idempotency-Key"] for call in gateway.calls] == ["o-1"]


def test_the_breaker_follows_its_tunables(deps, monkeypatch):
    # GIVEN an operator's breaker policy WHEN the breaker is asked for THEN it runs under that policy,
    # and the same instance (with its cache of an open state) serves while the policy stays
    policy = BreakerPolicy(open_duration_sec=90)
    monkeypatch.setattr(deps.breaker_policies, "get", lambda: policy)
    first = deps.breaker()
    assert first.policy == policy and deps.breaker() is first
