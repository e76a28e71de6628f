"""Scheduled sweep: remove semaphore leases whose owners died, so their permits return to the pool.

Acquires also reclaim expired leases when a semaphore is full; this sweep covers semaphores nobody
is contending for, so their counts are right when someone comes back.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from throttling.core import names
from throttling.dynamodb_limits import DynamoDbSemaphore

logger = Logger()
metrics = Metrics()
# Patches boto3 and http.client, so every AWS call and every downstream call is a subsegment of the trace.
tracer = Tracer()
semaphores = DynamoDbSemaphore(os.environ[names.ENV_SEMAPHORE_TABLE_NAME], client=boto3.client("dynamodb"))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    reclaimed = semaphores.reclaim_all_expired()
    total = sum(len(owners) for owners in reclaimed.values())
    metrics.add_metric(name="LeasesReclaimed", unit=MetricUnit.Count, value=total)
    if total:
        logger.warning("reclaimed leases of owners that died", extra={"reclaimed": reclaimed})
    return {"reclaimed": reclaimed}
