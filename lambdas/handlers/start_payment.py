"""Start the payment workflow for one `OrderPlaced` event, under the one execution name its order may have.

Event: an EventBridge event whose `detail` is the order `{"order_id", "customer_id", "amount",
"currency", "items": [{"sku", "quantity"}]}` (a bare order is accepted too, for operators).
Answer: `{"order_id", "execution_name", "status": "started" | "duplicate", "execution_arn"?}`.

The execution is named `order-<order_id>`, and Step Functions keeps a Standard execution's name for
90 days after it ends, so EventBridge's at-least-once delivery (and any other repeat of the event)
cannot start a second workflow: the second start is refused with `ExecutionAlreadyExists`, which is
logged as a duplicate, not raised (a retry of it could never succeed). One exception is AWS's own
idempotency: the same name *and the same input* while the first execution still runs returns that
execution instead of an error; the input here is the parsed order in a stable shape, so a repeat
lands there or in the refusal, never in a second execution. A malformed order raises `InvalidOrder`.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from payments.orders import execution_name, parse_order
from throttling.core import names

if TYPE_CHECKING:
    from types_boto3_stepfunctions import SFNClient

logger = Logger()
metrics = Metrics()
# Patches boto3 and http.client, so every AWS call and every downstream call is a subsegment of the trace.
tracer = Tracer()


@dataclass(frozen=True)
class Dependencies:
    """The workflow this function starts and the client it starts it with, built once per execution environment."""

    state_machine_arn: str
    stepfunctions: SFNClient


def build_dependencies(environ: Mapping[str, str], *, stepfunctions: SFNClient | None = None) -> Dependencies:
    """The function's dependencies from its environment variables; the client defaults to boto3's."""
    return Dependencies(state_machine_arn=environ[names.ENV_PAYMENT_STATE_MACHINE_ARN],
                        stepfunctions=stepfunctions or boto3.client("stepfunctions"))


@functools.cache
def dependencies() -> Dependencies:
    """This execution environment's dependencies, built once (on Lambda, at import: see the end of the module)."""
    return build_dependencies(os.environ)


@logger.inject_lambda_context(correlation_id_path="detail.order_id")
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = dependencies()
    order = parse_order(event["detail"] if isinstance(event, dict) and "detail" in event else event)
    name = execution_name(order.order_id)
    answer: dict[str, Any] = {"order_id": order.order_id, "execution_name": name}
    try:
        started = deps.stepfunctions.start_execution(
            stateMachineArn=deps.state_machine_arn, name=name, input=json.dumps(order.to_input(), sort_keys=True)
        )
    except deps.stepfunctions.exceptions.ExecutionAlreadyExists:
        logger.info("duplicate order event: its workflow was already started", extra={"execution_name": name})
        metrics.add_metric(name="DuplicateOrderEvents", unit=MetricUnit.Count, value=1)
        return {**answer, "status": "duplicate"}
    metrics.add_metric(name="PaymentWorkflowsStarted", unit=MetricUnit.Count, value=1)
    logger.info("payment workflow started", extra={"execution_arn": started["executionArn"]})
    return {**answer, "status": "started", "execution_arn": started["executionArn"]}


if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
    # On Lambda, built in the init phase as before, outside the first invocation's time and timeout.
    dependencies()
