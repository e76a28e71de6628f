"""Call one rate-limited downstream on behalf of a workflow task or an operator's smoke test.

Event: `{"method": "GET", "path": "/users/42", "body": {...}?, "correlation_id": "..."?, "tenant": "..."?,
"priority": "critical" | "standard" | "batch"?}`.
Answer: the downstream's status and JSON body, its latency, and the tunables in force for it.

Every call first takes a token from the shared limiter (one logical bucket per downstream, shared
by every execution and environment), so the downstream's limit holds whatever the concurrency and
latency. A refusal shorter than `LIMITER_MAX_WAIT_SEC` is waited out here (cheaper than a workflow
round trip); a longer one raises `RateLimited` with the wait for the workflow. A token that comes
back later than `stale_token_after_sec` allows is not spent on the call: sent now, it could reach
the downstream too close to calls decided after it. A 429, 5xx or timeout raises the error a
workflow retries on (see `throttling.runtime.downstream_client`); a 429, or a 503 with Retry-After,
is first reported to the shared limiter (its inner loop), which blocks every caller for the
Retry-After and cuts the bucket's rate. Every answer's published rate limit (`RateLimit-Policy` and
its kin, in a 2xx or a 429 alike) is reported before that: the bucket believes it as its ceiling
for a while, at the cost of a write only when it is news (`TokenGate.report`).

A call for a `tenant` takes its token from that tenant's share of the bucket (what it may borrow
beyond it, the shares in the downstream's tunables: `throttling.core.hierarchical_rate`), and one of
a `priority` class only as deep into the bucket as its class may reach, so a campaign's batch calls
are refused before a payment's. Every log line of the invocation carries both, and a refusal is
logged with them (what the per-tenant Contributor Insights rule counts). A call naming neither
takes from the bucket as a whole, as before tenants. A priority that is not a class is refused
before any token is taken (`InvalidShareRequest`): it is the workflow's mistake, which no retry fixes.

A downstream configured with `auth` gets its credentials on every call (`throttling.runtime.credentials`,
from its secret in Secrets Manager). A 401 renews them once (the secret read again, a new token) and
the call is made once more, with a new limiter token; a second 401 raises `DownstreamUnauthorized`
naming the secret, which no retry fixes. No credential is ever logged.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from throttling.adapters.dynamodb_rate_limiter import DynamoDbRateLimiter
from throttling.adapters.secrets import SecretReader
from throttling.adapters.ssm_tunables import TunablesReader, downstream_tunables_reader
from throttling.core import names
from throttling.core.adaptive_rate import AdaptiveRatePolicy
from throttling.core.credentials import AuthSettings
from throttling.core.hierarchical_rate import TenantShares
from throttling.core.rate_limiter import RatePolicy, stale_token_after_sec
from throttling.core.tunables import DownstreamTunables
from throttling.runtime.call_metrics import record_call
from throttling.runtime.credentials import Credentials, DownstreamCredentials
from throttling.runtime.downstream_client import (
    DownstreamClient,
    DownstreamError,
    DownstreamRejected,
    DownstreamResponse,
    DownstreamUnauthorized,
    RateLimited,
)
from throttling.runtime.token_gate import GateKnobs, GateOutcome, TokenGate

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient
    from types_boto3_secretsmanager import SecretsManagerClient
    from types_boto3_ssm import SSMClient

# Stale tokens before the wait goes to the workflow: the limiter is that slow right now.
MAX_STALE_TOKENS = 3
logger = Logger()
metrics = Metrics()
# Patches boto3 and http.client, so every AWS call and every downstream call is a subsegment of the trace.
tracer = Tracer()


@dataclass
class Dependencies:
    """What the function talks to, built once per execution environment (the SSM cache and the last
    good tunables live as long as it does)."""

    downstream: str
    # The downstream's own limits, which the tunables in force must leave room under.
    contract: RatePolicy
    tunables: TunablesReader[DownstreamTunables]
    gate: TokenGate
    client: DownstreamClient
    # None: the downstream takes no credentials.
    credentials: Credentials | None = None


def build_dependencies(
    environ: Mapping[str, str], *, dynamodb: DynamoDBClient | None = None, ssm: SSMClient | None = None,
    secretsmanager: SecretsManagerClient | None = None,
) -> Dependencies:
    """The function's dependencies from its environment variables; clients default to boto3's."""
    contract = RatePolicy(rate_per_sec=float(environ[names.ENV_DOWNSTREAM_RATE_LIMIT_PER_SEC]),
                          burst=int(environ[names.ENV_DOWNSTREAM_BURST]))
    limiter = DynamoDbRateLimiter(environ[names.ENV_RATE_LIMITER_TABLE_NAME], client=dynamodb or boto3.client("dynamodb"))
    timeout_sec = float(environ.get(names.ENV_DOWNSTREAM_TIMEOUT_SEC, "5"))
    credentials = None
    # Both set for a downstream configured with `auth`, neither for one without.
    auth_document, secret_id = environ.get(names.ENV_DOWNSTREAM_AUTH), environ.get(names.ENV_DOWNSTREAM_SECRET_ID)
    if auth_document:
        if not secret_id:
            raise KeyError(f"{names.ENV_DOWNSTREAM_AUTH} is set but {names.ENV_DOWNSTREAM_SECRET_ID} is not; redeploy")
        settings = AuthSettings.from_document(auth_document)
        credentials = DownstreamCredentials(
            environ[names.ENV_DOWNSTREAM_NAME], environ[names.ENV_DOWNSTREAM_BASE_URL], settings,
            SecretReader(secret_id, max_age_sec=settings.secret_cache_sec, client=secretsmanager),
            timeout_sec=timeout_sec)
    return Dependencies(
        downstream=environ[names.ENV_DOWNSTREAM_NAME],
        contract=contract,
        tunables=downstream_tunables_reader(environ, contract, ssm=ssm),
        # One short refusal is waited out here (cheaper than a workflow round trip); a longer one goes to the workflow.
        gate=TokenGate(limiter, GateKnobs(max_wait_sec=float(environ.get(names.ENV_LIMITER_MAX_WAIT_SEC, "1")), max_waits=1,
                                          max_stale_tokens=MAX_STALE_TOKENS), logger=logger),
        client=DownstreamClient(environ[names.ENV_DOWNSTREAM_NAME], environ[names.ENV_DOWNSTREAM_BASE_URL],
                                timeout_sec=timeout_sec),
        credentials=credentials,
    )


@functools.cache
def dependencies() -> Dependencies:
    """This execution environment's dependencies, built once (on Lambda, at import: see the end of the module)."""
    return build_dependencies(os.environ)


@logger.inject_lambda_context(correlation_id_path="correlation_id", clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = dependencies()
    metrics.add_dimension(name=names.DOWNSTREAM_DIMENSION, value=deps.downstream)
    share = requested_share(event)
    logger.append_keys(tenant=share.tenant, priority=share.priority)
    in_force = deps.tunables.get()
    policy = RatePolicy(rate_per_sec=in_force.rate_per_sec, burst=in_force.burst)

    def take() -> GateOutcome:
        return take_token(deps, policy, context, in_force.adaptive, share=share, tenant_shares=in_force.shares)

    # The token of the last call made: a signal names the admission it answers (a 401's retry takes another).
    tokens = [take()]
    headers = {"X-Correlation-Id": logger.get_correlation_id() or context.aws_request_id}
    if event.get("idempotency_key"):
        headers["Idempotency-Key"] = str(event["idempotency_key"])
    try:
        response = call_authenticated(deps, event, headers, lambda: tokens.append(take()))
    except DownstreamError as error:
        record_call(metrics, error=error)
        if deps.gate.report(deps.downstream, policy, in_force.adaptive, tokens[-1], error):
            metrics.add_metric(name=names.LIMITER_SIGNALS_REPORTED, unit=MetricUnit.Count, value=1)
        raise
    record_call(metrics, response=response)
    # Not a signal, but it may publish the downstream's limit: a halved one is met by this answer, not by a 429.
    deps.gate.report(deps.downstream, policy, in_force.adaptive, tokens[-1], response)
    logger.info(names.CALL_ANSWERED_LOG_MESSAGE, extra={"status": response.status, "latency_ms": round(response.latency_ms, 1)})
    return {
        "downstream": deps.downstream,
        "status": response.status,
        "body": response.body,
        "latency_ms": round(response.latency_ms, 1),
        "tunables_in_force": json.loads(in_force.to_document()),
    }


def call_authenticated(deps: Dependencies, event: Mapping[str, Any], headers: Mapping[str, str],
                       take_another_token: Callable[[], None]) -> DownstreamResponse:
    """The call with the downstream's credentials; after a 401, once more with them renewed (and a new token).

    The renewal reads the secret past its cache, so a credential rotated since is in force at once; a
    second 401 means the secret holds a value the downstream does not take, which only an operator fixes.
    """
    def send() -> DownstreamResponse:
        auth = deps.credentials.headers() if deps.credentials is not None else {}
        return deps.client.call(event.get("method", "GET"), event["path"], body=event.get("body"),
                                headers={**headers, **auth})

    try:
        return send()
    except DownstreamRejected as error:
        if deps.credentials is None or error.details.get("status") != 401 or isinstance(error, DownstreamUnauthorized):
            raise
    secret_id = deps.credentials.secret_id
    logger.warning("the downstream refused our credentials (401): reading them again and retrying once",
                   extra={"secret_id": secret_id})
    metrics.add_metric(name=names.CREDENTIALS_RENEWED, unit=MetricUnit.Count, value=1)
    deps.credentials.renew()
    take_another_token()
    try:
        return send()
    except DownstreamRejected as error:
        if error.details.get("status") != 401:
            raise
        raise DownstreamUnauthorized({
            "downstream": deps.downstream, "status": 401, "secret_id": secret_id,
            "reason": "the downstream refused the credentials in the secret, read again after a first 401: put the"
                      f" value it issued with `aws secretsmanager put-secret-value --secret-id {secret_id}`"}) from None


@dataclass(frozen=True)
class RequestedShare:
    """Whose share of the bucket a call is taken from, and its class; None: the bucket as a whole."""

    tenant: str | None = None
    priority: str | None = None


class InvalidShareRequest(ValueError):
    """The event's tenant is not a string or its priority not a class; no token was taken."""


def requested_share(event: Mapping[str, Any]) -> RequestedShare:
    """The event's `tenant` and `priority`, checked; an empty tenant is no tenant (the bucket as a whole)."""
    tenant, priority = event.get("tenant") or None, event.get("priority") or None
    if tenant is not None and not isinstance(tenant, str):
        raise InvalidShareRequest(f"tenant must be a string, got {tenant!r}; pass the tenant's id or leave it out")
    if priority is not None and priority not in names.PRIORITY_CLASSES:
        raise InvalidShareRequest(f"priority must be one of {list(names.PRIORITY_CLASSES)} or left out, got {priority!r}")
    return RequestedShare(tenant, priority)


def take_token(deps: Dependencies, policy: RatePolicy, context: LambdaContext,
               adaptive: AdaptiveRatePolicy | None = None, *, share: RequestedShare = RequestedShare(),
               tenant_shares: TenantShares | None = None) -> GateOutcome:
    """Take one fresh token under the bucket's inner loop, for `share`'s tenant and class, waiting out one short
    refusal; raise `RateLimited` for a long one, or for `MAX_STALE_TOKENS` tokens that came back too late to use."""
    outcome = deps.gate.take(deps.downstream, policy, time_left_sec=_affordable_wait_sec(deps, context),
                             stale_after_sec=stale_token_after_sec(policy, deps.contract), adaptive=adaptive,
                             tenant=share.tenant, priority=share.priority, shares=tenant_shares)
    if outcome.stale_tokens:
        metrics.add_metric(name="LimiterStaleTokens", unit=MetricUnit.Count, value=outcome.stale_tokens)
    if outcome.waited_sec:
        metrics.add_metric(name="LimiterWaitedMs", unit=MetricUnit.Milliseconds, value=outcome.waited_sec * 1000)
    if outcome.admitted:
        metrics.add_metric(name=names.LIMITER_ADMITTED, unit=MetricUnit.Count, value=1)
        return outcome
    metrics.add_metric(name=names.RATE_LIMITED, unit=MetricUnit.Count, value=1)
    # One line per refusal, with the tenant and class the invocation's keys add: the per-tenant count.
    logger.info(names.LIMITER_REFUSED_LOG_MESSAGE, extra={"retry_after_sec": round(outcome.retry_after_sec, 3)})
    raise RateLimited({"downstream": deps.downstream, "retry_after_sec": round(outcome.retry_after_sec, 3)})


def _affordable_wait_sec(deps: Dependencies, context: LambdaContext) -> float:
    """Wait in the function only while it leaves time for the call itself."""
    remaining_sec = context.get_remaining_time_in_millis() / 1000 - deps.client.timeout_sec
    return max(0.0, remaining_sec)


if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
    # On Lambda, built in the init phase as before, outside the first invocation's time and timeout.
    dependencies()
