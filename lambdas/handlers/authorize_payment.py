"""Authorize one order's payment at the payment gateway, at most once per order whatever the retries.

Event (from `statemachines/payment_authorization.asl.json`, or anything retrying it): an order
`{"order_id", "customer_id", "amount", "currency", "items": [{"sku", "quantity"}]}`.
Answer: `{"order_id", "authorized": bool, "authorization_id": str | None, "decline_reason": str | None}`.
A declined card is an answer (`authorized: false`), not an error.

At most one charge per order, in two layers and a limit to the second:
- Powertools idempotency on DynamoDB, keyed by `order_id` (`key_prefix` fixed, so a renamed or
  redeployed function still recognises an order) for `IDEMPOTENCY_EXPIRY_SEC` (a day): a second
  call for an order that was answered gets the stored answer and never reaches the gateway; one
  arriving while the first still runs gets `IdempotencyAlreadyInProgressError` (retried by the
  workflow); the same order id with another customer, amount or currency gets
  `IdempotencyValidationError`. An error deletes the record, so a retry after a refusal or a
  failure authorizes afresh.
- `Idempotency-Key: <order_id>` on the request, so the gateway itself drops a repeat of a request
  whose answer we lost (a timeout after it charged).
- Only while the gateway keeps that key (`GATEWAY_IDEMPOTENCY_KEY_KEPT_SEC`): the first
  authorization of an order that went unanswered (`DownstreamUnavailable`) is noted, and once it is
  older than that, the order is not sent again but refused with `AuthorizationOutcomeUnknown` (the
  workflow cancels it). A parked order is resumed when the breaker closes, possibly days later.

Inside the idempotent section, in this order: the fleet-wide circuit breaker (refused:
`BreakerOpen`, and the workflow parks the order), then one token from the limiter shared by every
caller of the gateway (bucket `payment_gateway`, with `call_downstream`'s voids; a refusal is waited
out up to `LIMITER_MAX_WAIT_SEC`, longer ones raise `RateLimited` with the wait), then the call,
whose outcome the breaker records. The token comes last so that nothing stands between it and its
request: the gateway sees the requests spaced as the limiter admitted them, where a store read in
between would let a slow one bunch up with the next. A half-open probe is not starved by it (while
half-open the breaker refuses every other authorization, so only voids compete for tokens), and a
probe that still ends in `RateLimited` holds its lease until it expires, then the next caller probes.
Before all three comes the check of an unanswered authorization (above), which sends nothing.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from payments.orders import Order, interpret_gateway_answer, parse_order
from payments.unanswered import UnansweredAuthorizations, may_repeat_authorization
from throttling.circuit_breaker import BreakerPolicy
from throttling.core import names
from throttling.downstream_client import (
    DownstreamClient,
    DownstreamError,
    DownstreamRejected,
    DownstreamThrottled,
    DownstreamUnavailable,
    RateLimited,
)
from throttling.call_metrics import record_call
from throttling.dynamodb_limits import DynamoDbCircuitBreaker, DynamoDbRateLimiter
from throttling.rate_limiter import RatePolicy, stale_token_after_sec
from throttling.tunables import (
    DownstreamTunables,
    TunablesReader,
    defaults_from_environment,
    parse_breaker_policy,
    powertools_ssm_fetch,
)

DOWNSTREAM = os.environ[names.ENV_DOWNSTREAM_NAME]
BREAKER_NAME = DOWNSTREAM  # one breaker per downstream; the workflow reads the same item
BREAKER_TABLE_NAME = os.environ[names.ENV_BREAKER_TABLE_NAME]
LIMITER_MAX_WAIT_SEC = float(os.environ.get(names.ENV_LIMITER_MAX_WAIT_SEC, "2"))
# The gateway's own limits, which the tunables in force must leave room under.
CONTRACT = RatePolicy(rate_per_sec=float(os.environ[names.ENV_DOWNSTREAM_RATE_LIMIT_PER_SEC]),
                      burst=int(os.environ[names.ENV_DOWNSTREAM_BURST]))
IDEMPOTENCY_KEY_PREFIX = "authorize_payment"
# How long the gateway keeps an Idempotency-Key for certain (Stripe prunes keys once they are 24 h old).
GATEWAY_IDEMPOTENCY_KEY_KEPT_SEC = float(os.environ.get(names.ENV_GATEWAY_IDEMPOTENCY_KEY_KEPT_SEC, "82800"))
# Waiters woken by the same refusal would all retry at the same instant; a few ms apart, one wins
# and the others learn the next slot without a burst of conditional writes.
WAKE_UP_JITTER_SEC = 0.05

logger = Logger()
metrics = Metrics()
# Patches boto3 and http.client, so every AWS call and every downstream call is a subsegment of the trace.
tracer = Tracer()


class BreakerOpen(DownstreamError):
    """The gateway's circuit breaker refused the call (open, or half-open with the probe taken); nothing was sent."""


class AuthorizationOutcomeUnknown(DownstreamError):
    """An authorization of the order went unanswered longer ago than the gateway keeps its key; nothing was sent."""


# Built once per execution environment: the SSM caches, the breaker's view of an open state, and
# the limiter's last-seen TAT live as long as it does.
_fetch = powertools_ssm_fetch(max_age_sec=int(os.environ.get(names.ENV_TUNABLES_CACHE_SEC, "5")))
tunables = TunablesReader(
    os.environ[names.ENV_TUNABLES_PARAMETER_NAME],
    defaults=defaults_from_environment(
        os.environ.get(names.ENV_TUNABLES_DEFAULTS),
        fallback=DownstreamTunables(rate_per_sec=1, burst=1, max_concurrency=1),
    ),
    fetch=_fetch,
    ceiling_rate_per_sec=CONTRACT.rate_per_sec,
    ceiling_burst=CONTRACT.burst,
)
breaker_policies = TunablesReader(
    os.environ[names.ENV_BREAKER_TUNABLES_PARAMETER_NAME],
    defaults=parse_breaker_policy(os.environ.get(names.ENV_BREAKER_TUNABLES_DEFAULTS) or "{}").tunables,
    fetch=_fetch,
    parse=parse_breaker_policy,
)
_dynamodb = boto3.client("dynamodb")
limiter = DynamoDbRateLimiter(os.environ[names.ENV_RATE_LIMITER_TABLE_NAME], client=_dynamodb)
_breakers: dict[BreakerPolicy, DynamoDbCircuitBreaker] = {}
client = DownstreamClient(
    DOWNSTREAM,
    os.environ[names.ENV_DOWNSTREAM_BASE_URL],
    timeout_sec=float(os.environ.get(names.ENV_DOWNSTREAM_TIMEOUT_SEC, "10")),
)
_rng = random.Random()


def _replayed(response: Any, record: DataRecord) -> Any:
    """Powertools calls this when it answers from the idempotency record instead of running the authorization."""
    logger.info("duplicate authorization answered from the idempotency record",
                extra={"idempotency_key": record.idempotency_key})
    metrics.add_metric(name="AuthorizationReplayed", unit=MetricUnit.Count, value=1)
    return response


idempotency_config = IdempotencyConfig(
    event_key_jmespath="order_id",
    # The same order id with another customer, amount or currency is a bug upstream, not a retry.
    payload_validation_jmespath="[customer_id, amount, currency]",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=int(os.environ.get(names.ENV_IDEMPOTENCY_EXPIRY_SEC, "86400")),
    response_hook=_replayed,
)
persistence = DynamoDBPersistenceLayer(table_name=os.environ[names.ENV_IDEMPOTENCY_TABLE_NAME], boto3_client=_dynamodb)
unanswered = UnansweredAuthorizations(os.environ[names.ENV_IDEMPOTENCY_TABLE_NAME], client=_dynamodb)


@logger.inject_lambda_context(correlation_id_path="order_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_dimension(name=names.DOWNSTREAM_DIMENSION, value=DOWNSTREAM)
    order = parse_order(event)  # InvalidOrder before anything is recorded or sent
    # In-progress records then expire with this invocation, so a duplicate after a crash is not blocked for a day.
    idempotency_config.register_lambda_context(context)
    return authorize(order=order.to_input(), context=context)


@idempotent_function(
    data_keyword_argument="order",
    persistence_store=persistence,
    config=idempotency_config,
    key_prefix=IDEMPOTENCY_KEY_PREFIX,
)
def authorize(order: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Breaker, token, `POST /authorize`; runs at most once per order id while its record lives."""
    parsed = parse_order(order)
    refuse_a_repeat_the_gateway_may_not_recognise(parsed.order_id)
    in_force = tunables.get()
    breaker = _breaker()
    caller_id = context.aws_request_id
    admission = breaker.allow(BREAKER_NAME, caller_id)
    if not admission.allowed:
        metrics.add_metric(name="BreakerRefused", unit=MetricUnit.Count, value=1)
        raise BreakerOpen({"downstream": DOWNSTREAM, "breaker": admission.status.value,
                           "retry_after_sec": round(admission.retry_after_sec, 3)})

    take_token(RatePolicy(rate_per_sec=in_force.rate_per_sec, burst=in_force.burst), context)
    answer = call_gateway(parsed, breaker, caller_id)
    authorization = interpret_gateway_answer(answer, parsed)
    metrics.add_metric(name="PaymentsAuthorized" if authorization.authorized else "PaymentsDeclined",
                       unit=MetricUnit.Count, value=1)
    logger.info("payment authorization decided", extra={"authorized": authorization.authorized,
                                                        "decline_reason": authorization.decline_reason})
    return authorization.to_answer(parsed.order_id)


def call_gateway(order: Order, breaker: DynamoDbCircuitBreaker, caller_id: str) -> Any:
    """`POST /authorize`, with its outcome recorded in the breaker.

    Only 5xx, timeouts and refused connections count as failures: a 429 or another 4xx means the
    gateway is up and answering, and a throttled gateway is the limiter's business, not the breaker's.
    """
    headers = {"Idempotency-Key": order.order_id, "X-Correlation-Id": order.order_id}
    started = time.monotonic()
    try:
        response = client.call("POST", "/authorize", body=order.gateway_request(), headers=headers)
    except DownstreamUnavailable as error:
        breaker.record(BREAKER_NAME, caller_id, success=False, duration_sec=time.monotonic() - started)
        record_call(metrics, error=error)
        note_unanswered(order.order_id)
        raise
    except (DownstreamThrottled, DownstreamRejected) as error:
        breaker.record(BREAKER_NAME, caller_id, success=True, duration_sec=time.monotonic() - started)
        record_call(metrics, error=error)
        raise
    breaker.record(BREAKER_NAME, caller_id, success=True, duration_sec=time.monotonic() - started)
    record_call(metrics, response=response)
    return response.body


def refuse_a_repeat_the_gateway_may_not_recognise(order_id: str) -> None:
    """`AuthorizationOutcomeUnknown` when an unanswered authorization of the order is older than the gateway's key."""
    first_unanswered_at = unanswered.first_at(order_id)
    if may_repeat_authorization(first_unanswered_at, time.time(), GATEWAY_IDEMPOTENCY_KEY_KEPT_SEC):
        return
    assert first_unanswered_at is not None  # may_repeat_authorization allows every order without one
    metrics.add_metric(name="AuthorizationsNotRepeated", unit=MetricUnit.Count, value=1)
    details = {"downstream": DOWNSTREAM, "first_unanswered_at": round(first_unanswered_at, 3),
               "key_kept_sec": GATEWAY_IDEMPOTENCY_KEY_KEPT_SEC}
    logger.error("an unanswered authorization is older than the gateway keeps its Idempotency-Key: not sending"
                 " another, the order is cancelled and any authorization made lapses uncaptured", extra=details)
    raise AuthorizationOutcomeUnknown(details)


def note_unanswered(order_id: str) -> None:
    """Remember that this authorization may have been made; a failure to is logged, the call's own error stands."""
    try:
        unanswered.note(order_id, time.time())
    except Exception:  # noqa: BLE001 - the caller re-raises the gateway's error, which is what the workflow needs
        metrics.add_metric(name="UnansweredNotNoted", unit=MetricUnit.Count, value=1)
        logger.exception("could not note an unanswered authorization; a resumption days from now could repeat it")


def take_token(policy: RatePolicy, context: LambdaContext) -> None:
    """Take one token of the gateway's bucket, waiting refusals out while the invocation can afford it.

    A refusal says exactly when the next token is due; this waits for it (plus a little jitter)
    and competes again, until the wait would pass `LIMITER_MAX_WAIT_SEC` or leave too little time
    for the call. Then `RateLimited` carries the wait for the workflow, which waits for free. A token
    that comes back later than `stale_token_after_sec` allows is not spent: sent now, the call could
    reach the gateway too close to calls decided after it.
    """
    deadline = time.monotonic() + _affordable_wait_sec(context)
    stale_after_sec = stale_token_after_sec(policy, CONTRACT)
    waited_sec = 0.0
    while True:
        asked_at = time.monotonic()
        decision = limiter.try_acquire(DOWNSTREAM, policy)
        if decision.allowed:
            late_sec = time.monotonic() - asked_at
            if late_sec <= stale_after_sec:
                metrics.add_metric(name=names.LIMITER_ADMITTED, unit=MetricUnit.Count, value=1)
                if waited_sec:
                    metrics.add_metric(name="LimiterWaitedMs", unit=MetricUnit.Milliseconds, value=waited_sec * 1000)
                return
            metrics.add_metric(name="LimiterStaleTokens", unit=MetricUnit.Count, value=1)
            logger.warning("a token came back too late to use; taking another",
                           extra={"late_sec": round(late_sec, 3), "stale_after_sec": round(stale_after_sec, 3)})
            if time.monotonic() < deadline:
                continue
            metrics.add_metric(name=names.RATE_LIMITED, unit=MetricUnit.Count, value=1)
            raise RateLimited({"downstream": DOWNSTREAM, "retry_after_sec": 0.0})
        pause_sec = decision.retry_after_sec + _rng.uniform(0, WAKE_UP_JITTER_SEC)
        if time.monotonic() + pause_sec > deadline:
            metrics.add_metric(name=names.RATE_LIMITED, unit=MetricUnit.Count, value=1)
            raise RateLimited({"downstream": DOWNSTREAM, "retry_after_sec": round(decision.retry_after_sec, 3)})
        time.sleep(pause_sec)
        waited_sec += pause_sec


def _affordable_wait_sec(context: LambdaContext) -> float:
    """Wait in the function only while it leaves time for the call itself."""
    remaining_sec = context.get_remaining_time_in_millis() / 1000 - client.timeout_sec - 1
    return max(0.0, min(LIMITER_MAX_WAIT_SEC, remaining_sec))


def _breaker() -> DynamoDbCircuitBreaker:
    """The breaker under the policy in force; one instance per policy, so its cache of an open state survives calls."""
    policy = breaker_policies.get()
    breaker = _breakers.get(policy)
    if breaker is None:
        _breakers.clear()
        breaker = _breakers[policy] = DynamoDbCircuitBreaker(BREAKER_TABLE_NAME, client=_dynamodb, policy=policy)
    return breaker
