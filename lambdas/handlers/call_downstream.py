"""Call one rate-limited downstream on behalf of a workflow task or an operator's smoke test.

Event: `{"method": "GET", "path": "/users/42", "body": {...}?, "correlation_id": "..."?}`.
Answer: the downstream's status and JSON body, its latency, and the tunables in force for it.
A 429, 5xx or timeout raises the error a workflow retries on (see `throttling.downstream_client`).
"""

from __future__ import annotations

import json
import os
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from throttling.downstream_client import DownstreamClient, DownstreamThrottled, DownstreamUnavailable
from throttling.tunables import DownstreamTunables, TunablesReader, defaults_from_environment, powertools_ssm_fetch

DOWNSTREAM = os.environ["DOWNSTREAM_NAME"]
logger = Logger()
metrics = Metrics()

# Built once per execution environment: the SSM cache and the last good value live as long as it does.
tunables = TunablesReader(
    os.environ["TUNABLES_PARAMETER_NAME"],
    defaults=defaults_from_environment(
        os.environ.get("TUNABLES_DEFAULTS"), fallback=DownstreamTunables(rate_per_sec=1, burst=1, max_concurrency=1)
    ),
    fetch=powertools_ssm_fetch(max_age_sec=int(os.environ.get("TUNABLES_CACHE_SEC", "5"))),
    ceiling_rate_per_sec=float(os.environ["DOWNSTREAM_RATE_LIMIT_PER_SEC"]),
)
client = DownstreamClient(
    DOWNSTREAM,
    os.environ["DOWNSTREAM_BASE_URL"],
    timeout_sec=float(os.environ.get("DOWNSTREAM_TIMEOUT_SEC", "5")),
)


@logger.inject_lambda_context(correlation_id_path="correlation_id")
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_dimension(name="Downstream", value=DOWNSTREAM)
    in_force = tunables.get()
    headers = {"X-Correlation-Id": logger.get_correlation_id() or context.aws_request_id}
    metrics.add_metric(name="DownstreamCalls", unit=MetricUnit.Count, value=1)
    try:
        response = client.call(event.get("method", "GET"), event["path"], body=event.get("body"), headers=headers)
    except DownstreamThrottled:
        metrics.add_metric(name="DownstreamThrottled", unit=MetricUnit.Count, value=1)
        raise
    except DownstreamUnavailable:
        metrics.add_metric(name="DownstreamUnavailable", unit=MetricUnit.Count, value=1)
        raise
    metrics.add_metric(name="DownstreamLatency", unit=MetricUnit.Milliseconds, value=response.latency_ms)
    logger.info("downstream answered", extra={"status": response.status, "latency_ms": round(response.latency_ms, 1)})
    return {
        "downstream": DOWNSTREAM,
        "status": response.status,
        "body": response.body,
        "latency_ms": round(response.latency_ms, 1),
        "tunables_in_force": json.loads(in_force.to_document()),
    }
