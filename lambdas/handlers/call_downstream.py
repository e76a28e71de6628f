"""Call one rate-limited downstream on behalf of a workflow task or an operator's smoke test.

Event: `{"method": "GET", "path": "/users/42", "body": {...}?, "correlation_id": "..."?}`.
Answer: the downstream's status and JSON body, its latency, and the tunables in force for it.

Every call first takes a token from the shared limiter (one logical bucket per downstream, shared
by every execution and environment), so the downstream's limit holds whatever the concurrency and
latency. A refusal shorter than `LIMITER_MAX_WAIT_SEC` is waited out here (cheaper than a workflow
round trip); a longer one raises `RateLimited` with the wait for the workflow. A token that comes
back later than `stale_token_after_sec` allows is not spent on the call: sent now, it could reach
the downstream too close to calls decided after it. A 429, 5xx or timeout raises the error a
workflow retries on (see `throttling.downstream_client`).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from throttling.call_metrics import record_call
from throttling.core import names
from throttling.downstream_client import DownstreamClient, DownstreamError, RateLimited
from throttling.dynamodb_limits import DynamoDbRateLimiter
from throttling.rate_limiter import RatePolicy, stale_token_after_sec
from throttling.tunables import DownstreamTunables, TunablesReader, defaults_from_environment, powertools_ssm_fetch

DOWNSTREAM = os.environ[names.ENV_DOWNSTREAM_NAME]
LIMITER_MAX_WAIT_SEC = float(os.environ.get(names.ENV_LIMITER_MAX_WAIT_SEC, "1"))
# The downstream's own limits, which the tunables in force must leave room under.
CONTRACT = RatePolicy(rate_per_sec=float(os.environ[names.ENV_DOWNSTREAM_RATE_LIMIT_PER_SEC]),
                      burst=int(os.environ[names.ENV_DOWNSTREAM_BURST]))
# Stale tokens in a row before the wait goes to the workflow: the limiter is that slow right now.
MAX_STALE_TOKENS = 3
logger = Logger()
metrics = Metrics()
# Patches boto3 and http.client, so every AWS call and every downstream call is a subsegment of the trace.
tracer = Tracer()

# Built once per execution environment: the SSM cache and the last good value live as long as it does.
tunables = TunablesReader(
    os.environ[names.ENV_TUNABLES_PARAMETER_NAME],
    defaults=defaults_from_environment(
        os.environ.get(names.ENV_TUNABLES_DEFAULTS),
        fallback=DownstreamTunables(rate_per_sec=1, burst=1, max_concurrency=1),
    ),
    fetch=powertools_ssm_fetch(max_age_sec=int(os.environ.get(names.ENV_TUNABLES_CACHE_SEC, "5"))),
    ceiling_rate_per_sec=CONTRACT.rate_per_sec,
    ceiling_burst=CONTRACT.burst,
)
limiter = DynamoDbRateLimiter(os.environ[names.ENV_RATE_LIMITER_TABLE_NAME], client=boto3.client("dynamodb"))
client = DownstreamClient(
    DOWNSTREAM,
    os.environ[names.ENV_DOWNSTREAM_BASE_URL],
    timeout_sec=float(os.environ.get(names.ENV_DOWNSTREAM_TIMEOUT_SEC, "5")),
)


@logger.inject_lambda_context(correlation_id_path="correlation_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_dimension(name=names.DOWNSTREAM_DIMENSION, value=DOWNSTREAM)
    in_force = tunables.get()
    take_token(RatePolicy(rate_per_sec=in_force.rate_per_sec, burst=in_force.burst), context)
    headers = {"X-Correlation-Id": logger.get_correlation_id() or context.aws_request_id}
    if event.get("idempotency_key"):
        headers["Idempotency-Key"] = str(event["idempotency_key"])
    try:
        response = client.call(event.get("method", "GET"), event["path"], body=event.get("body"), headers=headers)
    except DownstreamError as error:
        record_call(metrics, error=error)
        raise
    record_call(metrics, response=response)
    logger.info("downstream answered", extra={"status": response.status, "latency_ms": round(response.latency_ms, 1)})
    return {
        "downstream": DOWNSTREAM,
        "status": response.status,
        "body": response.body,
        "latency_ms": round(response.latency_ms, 1),
        "tunables_in_force": json.loads(in_force.to_document()),
    }


def take_token(policy: RatePolicy, context: LambdaContext) -> None:
    """Take one fresh token, waiting out one short refusal; raise `RateLimited` for a long one, or for
    `MAX_STALE_TOKENS` tokens in a row that came back too late to use."""
    stale_after_sec = stale_token_after_sec(policy, CONTRACT)
    waited, stale = False, 0
    while True:
        asked_at = time.monotonic()
        decision = limiter.try_acquire(DOWNSTREAM, policy)
        if decision.allowed:
            late_sec = time.monotonic() - asked_at
            if late_sec <= stale_after_sec:
                metrics.add_metric(name=names.LIMITER_ADMITTED, unit=MetricUnit.Count, value=1)
                return
            stale += 1
            metrics.add_metric(name="LimiterStaleTokens", unit=MetricUnit.Count, value=1)
            logger.warning("a token came back too late to use; taking another",
                           extra={"late_sec": round(late_sec, 3), "stale_after_sec": round(stale_after_sec, 3)})
            if stale < MAX_STALE_TOKENS:
                continue
            retry_after_sec = 0.0  # the next token is due at once; the workflow's own retry spaces it out
        elif not waited and decision.retry_after_sec <= _affordable_wait_sec(context):
            metrics.add_metric(name="LimiterWaitedMs", unit=MetricUnit.Milliseconds,
                               value=decision.retry_after_sec * 1000)
            time.sleep(decision.retry_after_sec)
            waited = True
            continue
        else:
            retry_after_sec = decision.retry_after_sec
        metrics.add_metric(name=names.RATE_LIMITED, unit=MetricUnit.Count, value=1)
        raise RateLimited({"downstream": DOWNSTREAM, "retry_after_sec": round(retry_after_sec, 3)})


def _affordable_wait_sec(context: LambdaContext) -> float:
    """Wait in the function only while it leaves time for the call itself."""
    remaining_sec = context.get_remaining_time_in_millis() / 1000 - client.timeout_sec
    return max(0.0, min(LIMITER_MAX_WAIT_SEC, remaining_sec))
