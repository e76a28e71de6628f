"""Scheduled sweep: remove semaphore leases whose owners died, so their permits return to the pool.

A Lambda's acquire (the adapter) also reclaims expired leases when a semaphore is full; this sweep
covers semaphores nobody is contending for, so their counts are right when someone comes back, and
the leases workflows take from ASL (the moderation workflow's model slots), whose acquire cannot
read the item: for those, this sweep is what frees a dead holder's slot.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from throttling.adapters.dynamodb_semaphore import DynamoDbSemaphore
from throttling.core import names

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient

logger = Logger()
metrics = Metrics()
# Patches boto3 and http.client, so every AWS call and every downstream call is a subsegment of the trace.
tracer = Tracer()


def build_semaphores(environ: Mapping[str, str], *, dynamodb: DynamoDBClient | None = None) -> DynamoDbSemaphore:
    """The semaphores table this function sweeps, from its environment; the client defaults to boto3's."""
    return DynamoDbSemaphore(environ[names.ENV_SEMAPHORE_TABLE_NAME], client=dynamodb or boto3.client("dynamodb"))


@functools.cache
def semaphores() -> DynamoDbSemaphore:
    """This execution environment's semaphores table, built once (on Lambda, at import: see the end of the module)."""
    return build_semaphores(os.environ)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    reclaimed = semaphores().reclaim_all_expired()
    total = sum(len(owners) for owners in reclaimed.values())
    metrics.add_metric(name="LeasesReclaimed", unit=MetricUnit.Count, value=total)
    if total:
        logger.warning("reclaimed leases of owners that died", extra={"reclaimed": reclaimed})
    return {"reclaimed": reclaimed}


if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
    # On Lambda, built in the init phase as before, outside the first invocation's time and timeout.
    semaphores()
