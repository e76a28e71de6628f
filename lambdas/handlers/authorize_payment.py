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

import functools
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
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
from throttling.adapters.dynamodb_circuit_breaker import DynamoDbCircuitBreaker
from throttling.adapters.dynamodb_rate_limiter import DynamoDbRateLimiter
from throttling.adapters.ssm_tunables import TunablesReader, downstream_tunables_reader
from throttling.core import names
from throttling.core.adaptive_rate import AdaptiveRatePolicy
from throttling.core.hierarchical_rate import TenantShares
from throttling.core.circuit_breaker import BreakerPolicy
from throttling.core.rate_limiter import RatePolicy, stale_token_after_sec
from throttling.core.tunables import DownstreamTunables, parse_breaker_policy
from throttling.runtime.call_metrics import record_call
from throttling.runtime.downstream_client import (
    DownstreamClient,
    DownstreamError,
    DownstreamRejected,
    DownstreamResponse,
    DownstreamThrottled,
    DownstreamUnavailable,
    RateLimited,
)
from throttling.runtime.token_gate import GateKnobs, GateOutcome, TokenGate

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient
    from types_boto3_ssm import SSMClient

IDEMPOTENCY_KEY_PREFIX = "authorize_payment"
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


def _replayed(response: Any, record: DataRecord) -> Any:
    """Powertools calls this when it answers from the idempotency record instead of running the authorization."""
    logger.info("duplicate authorization answered from the idempotency record",
                extra={"idempotency_key": record.idempotency_key})
    metrics.add_metric(name="AuthorizationReplayed", unit=MetricUnit.Count, value=1)
    return response


@dataclass
class Dependencies:
    """What the function talks to and its settings, built once per execution environment: the SSM
    caches, the breaker's view of an open state and the limiter's last-seen TAT live as long as it does."""

    downstream: str
    # The gateway's own limits, which the tunables in force must leave room under.
    contract: RatePolicy
    # How long the gateway keeps an Idempotency-Key for certain (Stripe prunes keys once they are 24 h old).
    gateway_key_kept_sec: float
    tunables: TunablesReader[DownstreamTunables]
    breaker_policies: TunablesReader[BreakerPolicy]
    breaker_table_name: str
    dynamodb: DynamoDBClient
    gate: TokenGate
    client: DownstreamClient
    unanswered: UnansweredAuthorizations
    idempotency_config: IdempotencyConfig
    # `authorize` under Powertools' idempotency, on this environment's persistence layer.
    authorize_once: Callable[..., dict[str, Any]] = field(init=False)
    _breakers: dict[BreakerPolicy, DynamoDbCircuitBreaker] = field(default_factory=dict)

    @property
    def breaker_name(self) -> str:
        return self.downstream  # one breaker per downstream; the workflow reads the same item

    def breaker(self) -> DynamoDbCircuitBreaker:
        """The breaker under the policy in force; one instance per policy, so its cache of an open state survives calls."""
        policy = self.breaker_policies.get()
        breaker = self._breakers.get(policy)
        if breaker is None:
            self._breakers.clear()
            breaker = self._breakers[policy] = DynamoDbCircuitBreaker(self.breaker_table_name, client=self.dynamodb,
                                                                      policy=policy)
        return breaker


def build_dependencies(
    environ: Mapping[str, str], *, dynamodb: DynamoDBClient | None = None, ssm: SSMClient | None = None
) -> Dependencies:
    """The function's dependencies from its environment variables; clients default to boto3's."""
    contract = RatePolicy(rate_per_sec=float(environ[names.ENV_DOWNSTREAM_RATE_LIMIT_PER_SEC]),
                          burst=int(environ[names.ENV_DOWNSTREAM_BURST]))
    dynamodb = dynamodb or boto3.client("dynamodb")
    tunables = downstream_tunables_reader(environ, contract, ssm=ssm)
    limiter = DynamoDbRateLimiter(environ[names.ENV_RATE_LIMITER_TABLE_NAME], client=dynamodb)
    idempotency_config = IdempotencyConfig(
        event_key_jmespath="order_id",
        # The same order id with another customer, amount or currency is a bug upstream, not a retry.
        payload_validation_jmespath="[customer_id, amount, currency]",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=int(environ.get(names.ENV_IDEMPOTENCY_EXPIRY_SEC, "86400")),
        response_hook=_replayed,
    )
    deps = Dependencies(
        downstream=environ[names.ENV_DOWNSTREAM_NAME],
        contract=contract,
        gateway_key_kept_sec=float(environ.get(names.ENV_GATEWAY_IDEMPOTENCY_KEY_KEPT_SEC, "82800")),
        tunables=tunables,
        breaker_policies=TunablesReader(
            environ[names.ENV_BREAKER_TUNABLES_PARAMETER_NAME],
            defaults=parse_breaker_policy(environ.get(names.ENV_BREAKER_TUNABLES_DEFAULTS) or "{}").tunables,
            fetch=tunables.fetch,  # one SSM provider and cache for both documents
            parse=parse_breaker_policy,
        ),
        breaker_table_name=environ[names.ENV_BREAKER_TABLE_NAME],
        dynamodb=dynamodb,
        # Refusals are waited out (with jitter) and stale tokens replaced, as long as LIMITER_MAX_WAIT_SEC allows.
        gate=TokenGate(limiter, GateKnobs(max_wait_sec=float(environ.get(names.ENV_LIMITER_MAX_WAIT_SEC, "2")),
                                          wake_up_jitter_sec=WAKE_UP_JITTER_SEC, max_stale_tokens=None), logger=logger),
        client=DownstreamClient(environ[names.ENV_DOWNSTREAM_NAME], environ[names.ENV_DOWNSTREAM_BASE_URL],
                                timeout_sec=float(environ.get(names.ENV_DOWNSTREAM_TIMEOUT_SEC, "10"))),
        unanswered=UnansweredAuthorizations(environ[names.ENV_IDEMPOTENCY_TABLE_NAME], client=dynamodb),
        idempotency_config=idempotency_config,
    )

    @idempotent_function(
        data_keyword_argument="order",
        persistence_store=DynamoDBPersistenceLayer(table_name=environ[names.ENV_IDEMPOTENCY_TABLE_NAME], boto3_client=dynamodb),
        config=idempotency_config,
        key_prefix=IDEMPOTENCY_KEY_PREFIX,
    )
    def authorize_once(order: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return authorize(deps, order=order, context=context)

    deps.authorize_once = authorize_once
    return deps


@functools.cache
def dependencies() -> Dependencies:
    """This execution environment's dependencies, built once (on Lambda, at import: see the end of the module)."""
    return build_dependencies(os.environ)


@logger.inject_lambda_context(correlation_id_path="order_id", clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = dependencies()
    metrics.add_dimension(name=names.DOWNSTREAM_DIMENSION, value=deps.downstream)
    order = parse_order(event)  # InvalidOrder before anything is recorded or sent
    # In-progress records then expire with this invocation, so a duplicate after a crash is not blocked for a day.
    deps.idempotency_config.register_lambda_context(context)
    return deps.authorize_once(order=order.to_input(), context=context)


def authorize(deps: Dependencies, order: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Breaker, token, `POST /authorize`; under `deps.authorize_once`, runs at most once per order id while its
    record lives."""
    parsed = parse_order(order)
    refuse_a_repeat_the_gateway_may_not_recognise(deps, parsed.order_id)
    in_force = deps.tunables.get()
    breaker = deps.breaker()
    caller_id = context.aws_request_id
    admission = breaker.allow(deps.breaker_name, caller_id)
    if not admission.allowed:
        metrics.add_metric(name="BreakerRefused", unit=MetricUnit.Count, value=1)
        raise BreakerOpen({"downstream": deps.downstream, "breaker": admission.status.value,
                           "retry_after_sec": round(admission.retry_after_sec, 3)})

    policy = RatePolicy(rate_per_sec=in_force.rate_per_sec, burst=in_force.burst)
    tenant, priority = order.get("tenant") or None, order.get("priority") or None
    logger.append_keys(tenant=tenant, priority=priority)
    token = take_token(deps, policy, context, in_force.adaptive, tenant=tenant, priority=priority,
                       shares=in_force.shares)
    answer = call_gateway(deps, parsed, breaker, caller_id, Signalled(policy, in_force.adaptive, token))
    authorization = interpret_gateway_answer(answer, parsed)
    metrics.add_metric(name="PaymentsAuthorized" if authorization.authorized else "PaymentsDeclined",
                       unit=MetricUnit.Count, value=1)
    logger.info("payment authorization decided", extra={"authorized": authorization.authorized,
                                                        "decline_reason": authorization.decline_reason})
    return authorization.to_answer(parsed.order_id)


@dataclass(frozen=True)
class Signalled:
    """What a report of the gateway's answer names: the bucket's policy and loop, and the token's admission."""

    policy: RatePolicy
    adaptive: AdaptiveRatePolicy
    token: GateOutcome

    def report(self, deps: Dependencies, answer: DownstreamError | DownstreamResponse) -> None:
        """The gateway's answer, an error or a response: its published limit, then its throttling signal."""
        if deps.gate.report(deps.downstream, self.policy, self.adaptive, self.token, answer):
            metrics.add_metric(name=names.LIMITER_SIGNALS_REPORTED, unit=MetricUnit.Count, value=1)


def call_gateway(deps: Dependencies, order: Order, breaker: DynamoDbCircuitBreaker, caller_id: str,
                 signalled: Signalled | None = None) -> Any:
    """`POST /authorize`, with its outcome recorded in the breaker.

    Only 5xx, timeouts and refused connections count as failures: a 429 or another 4xx means the
    gateway is up and answering, and a throttled gateway is the limiter's business, not the breaker's:
    a 429, or a 503 with Retry-After, is reported to the shared limiter's inner loop (`signalled`), and
    so is the rate limit any answer publishes.
    """
    headers = {"Idempotency-Key": order.order_id, "X-Correlation-Id": order.order_id}
    started = time.monotonic()
    try:
        response = deps.client.call("POST", "/authorize", body=order.gateway_request(), headers=headers)
    except DownstreamUnavailable as error:
        breaker.record(deps.breaker_name, caller_id, success=False, duration_sec=time.monotonic() - started)
        record_call(metrics, error=error)
        note_unanswered(deps, order.order_id)
        if signalled is not None:
            signalled.report(deps, error)
        raise
    except (DownstreamThrottled, DownstreamRejected) as error:
        breaker.record(deps.breaker_name, caller_id, success=True, duration_sec=time.monotonic() - started)
        record_call(metrics, error=error)
        if signalled is not None:
            signalled.report(deps, error)
        raise
    breaker.record(deps.breaker_name, caller_id, success=True, duration_sec=time.monotonic() - started)
    record_call(metrics, response=response)
    if signalled is not None:
        signalled.report(deps, response)
    return response.body


def refuse_a_repeat_the_gateway_may_not_recognise(deps: Dependencies, order_id: str) -> None:
    """`AuthorizationOutcomeUnknown` when an unanswered authorization of the order is older than the gateway's key."""
    first_unanswered_at = deps.unanswered.first_at(order_id)
    if may_repeat_authorization(first_unanswered_at, time.time(), deps.gateway_key_kept_sec):
        return
    assert first_unanswered_at is not None  # may_repeat_authorization allows every order without one
    metrics.add_metric(name="AuthorizationsNotRepeated", unit=MetricUnit.Count, value=1)
    details = {"downstream": deps.downstream, "first_unanswered_at": round(first_unanswered_at, 3),
               "key_kept_sec": deps.gateway_key_kept_sec}
    logger.error("an unanswered authorization is older than the gateway keeps its Idempotency-Key: not sending"
                 " another, the order is cancelled and any authorization made lapses uncaptured", extra=details)
    raise AuthorizationOutcomeUnknown(details)


def note_unanswered(deps: Dependencies, order_id: str) -> None:
    """Remember that this authorization may have been made; a failure to is logged, the call's own error stands."""
    try:
        deps.unanswered.note(order_id, time.time())
    except (ClientError, BotoCoreError):  # the caller re-raises the gateway's error, which is what the workflow needs
        metrics.add_metric(name="UnansweredNotNoted", unit=MetricUnit.Count, value=1)
        logger.exception("could not note an unanswered authorization; a resumption days from now could repeat it")


def take_token(deps: Dependencies, policy: RatePolicy, context: LambdaContext,
               adaptive: AdaptiveRatePolicy | None = None, *, tenant: str | None = None, priority: str | None = None,
               shares: TenantShares | None = None) -> GateOutcome:
    """Take one token of the gateway's bucket, waiting refusals out while the invocation can afford it.

    For the order's `tenant` and `priority` class (the workflow names the payment critical): the
    tenant's share of the bucket, and the depth only critical may fill, which lower classes leave free.

    A refusal says exactly when the next token is due; the gate waits for it (plus a little jitter)
    and competes again, until the wait would pass `LIMITER_MAX_WAIT_SEC` or leave too little time
    for the call. Then `RateLimited` carries the wait for the workflow, which waits for free. A token
    that comes back later than `stale_token_after_sec` allows is not spent: sent now, the call could
    reach the gateway too close to calls decided after it.
    """
    outcome = deps.gate.take(deps.downstream, policy, time_left_sec=_affordable_wait_sec(deps, context),
                             stale_after_sec=stale_token_after_sec(policy, deps.contract), adaptive=adaptive,
                             tenant=tenant, priority=priority if priority in names.PRIORITY_CLASSES else None,
                             shares=shares)
    if outcome.stale_tokens:
        metrics.add_metric(name="LimiterStaleTokens", unit=MetricUnit.Count, value=outcome.stale_tokens)
    if outcome.admitted:
        metrics.add_metric(name=names.LIMITER_ADMITTED, unit=MetricUnit.Count, value=1)
        if outcome.waited_sec:
            metrics.add_metric(name="LimiterWaitedMs", unit=MetricUnit.Milliseconds, value=outcome.waited_sec * 1000)
        return outcome
    metrics.add_metric(name=names.RATE_LIMITED, unit=MetricUnit.Count, value=1)
    logger.info(names.LIMITER_REFUSED_LOG_MESSAGE, extra={"retry_after_sec": round(outcome.retry_after_sec, 3)})
    raise RateLimited({"downstream": deps.downstream, "retry_after_sec": round(outcome.retry_after_sec, 3)})


def _affordable_wait_sec(deps: Dependencies, context: LambdaContext) -> float:
    """Wait in the function only while it leaves time for the call itself."""
    remaining_sec = context.get_remaining_time_in_millis() / 1000 - deps.client.timeout_sec - 1
    return max(0.0, remaining_sec)


if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
    # On Lambda, built in the init phase as before, outside the first invocation's time and timeout.
    dependencies()
