"""Resume parked payments once the gateway's breaker lets calls through: every minute, or when an operator asks.

Event: the schedule's event, or an operator's `{"max_orders": N}` to resume at most N orders in this
run (1 to `RESUMES_PER_RUN`). Answer: `{"breaker", "allowed", "received", "resumed", "dropped",
"waiting", "dead_lettered", "failed"}`, where `breaker` is `closed`, `open`, `probing` or `due_a_probe`.

1. The gateway's breaker, one consistent read before each batch. Open, or a probe in flight: the run
   receives nothing, so an outage of any length spends no receive count and sends no healthy order
   to the dead-letter queue. Due a probe (open past `open_until`) with nobody calling: one order is
   resumed, and its authorization is the probe. Closed: up to `RESUMES_PER_RUN` orders, a quarter
   of the gateway's planned tokens per minute; the shared limiter paces their authorizations.
2. Messages, at most ten at a time and never more than the resumptions left, until the queue is
   empty, the allowance spent or the invocation's time short.
3. Each message, its logs correlated by the order id, is decided by `payments.parked.decide` on the
   order's item (a strongly consistent read):
   - resume: the order is claimed for its episode's resumption (`resume_execution`, written only
     while the order is still held by the execution that parked it; the workflow's `RecordPending`
     lets only that execution take the order up), then the execution is started under that name.
     A name already started means a copy of this message got there first: dropped as a duplicate.
   - drop (paid, cancelled, superseded): deleted, with the reason logged.
   - wait (its parker has not marked it parked yet): left; it comes back after its visibility timeout.
   - dead-letter (unreadable, an unknown order, a name the workflow does not give, no name left):
     sent to the dead-letter queue with the reason in its `error` attribute, then deleted.
   An error (an AWS call failing) ends the run as an errored invocation, after the metrics; the
   message and the rest of its batch come back after their visibility timeout.

Metrics: ParkedOrdersResumed, ParkedOrdersDropped, ParkedOrdersWaiting, ParkedOrdersDeadLettered,
ParkedOrdersFailed, and ParkedOrdersHeldByBreaker (1 for a run that the breaker kept from receiving).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import boto3
from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from payments.parked import (
    Action,
    Decision,
    InvalidParkedMessage,
    OrderRecord,
    ParkedOrder,
    decide,
    parse_parked_message,
    resume_input,
    resumes_allowed,
)
from throttling.adapters.dynamodb_circuit_breaker import DynamoDbCircuitBreaker
from throttling.core import names
from throttling.core.circuit_breaker import BreakerPolicy

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient
    from types_boto3_sqs import SQSClient
    from types_boto3_stepfunctions import SFNClient

# SQS's largest receive, and a long poll short enough for a run that finds the queue empty.
RECEIVE_BATCH_MAX = 10
RECEIVE_WAIT_SEC = 1
# No new batch with less time left than this: a batch of ten takes a few seconds of AWS calls.
FINISHING_RESERVE_SEC = 10.0
OUTCOMES = ("resumed", "dropped", "waiting", "dead_lettered", "failed")

logger = Logger()
metrics = Metrics()
# Patches boto3, so every AWS call is a subsegment of the trace.
tracer = Tracer()


@dataclass(frozen=True)
class Dependencies:
    """What the function talks to and its settings, built once per execution environment."""

    queue_url: str
    dead_letter_queue_url: str
    orders_table_name: str
    state_machine_arn: str
    breaker_name: str
    resumes_per_run: int
    sqs: SQSClient
    dynamodb: DynamoDBClient
    stepfunctions: SFNClient
    # Only `state()` is used: one consistent read of the item the authorizer and the workflow share.
    breaker: DynamoDbCircuitBreaker

    @property
    def execution_arn_prefix(self) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:", 1)


def build_dependencies(
    environ: Mapping[str, str],
    *,
    sqs: SQSClient | None = None,
    dynamodb: DynamoDBClient | None = None,
    stepfunctions: SFNClient | None = None,
) -> Dependencies:
    """The function's dependencies from its environment variables; clients default to boto3's."""
    dynamodb = dynamodb or boto3.client("dynamodb")
    return Dependencies(
        queue_url=environ[names.ENV_PARKED_ORDERS_QUEUE_URL],
        dead_letter_queue_url=environ[names.ENV_PARKED_ORDERS_DLQ_URL],
        orders_table_name=environ[names.ENV_ORDERS_TABLE_NAME],
        state_machine_arn=environ[names.ENV_PAYMENT_STATE_MACHINE_ARN],
        breaker_name=environ[names.ENV_BREAKER_NAME],
        resumes_per_run=int(environ[names.ENV_RESUMES_PER_RUN]),
        sqs=sqs or boto3.client("sqs"),
        dynamodb=dynamodb,
        stepfunctions=stepfunctions or boto3.client("stepfunctions"),
        breaker=DynamoDbCircuitBreaker(environ[names.ENV_BREAKER_TABLE_NAME], client=dynamodb, policy=BreakerPolicy()),
    )


@functools.cache
def dependencies() -> Dependencies:
    """This execution environment's dependencies, built once (on Lambda, at import: see the end of the module)."""
    return build_dependencies(os.environ)


class InvalidRun(ValueError):
    """The operator's event asks for something a run cannot do; the message says what it may ask."""


def requested_per_run(event: Any, resumes_per_run: int) -> int:
    """How many orders this run may resume: `resumes_per_run` (`RESUMES_PER_RUN`), or fewer when an operator
    asks for `max_orders`."""
    if not isinstance(event, dict) or "max_orders" not in event:
        return resumes_per_run
    value = event["max_orders"]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= resumes_per_run:
        raise InvalidRun(f"max_orders must be a whole number from 1 to {resumes_per_run} (the scheduled share of the"
                         f" gateway's rate), got {value!r}; leave it out to resume the scheduled share")
    return value


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    deps = dependencies()
    per_run = requested_per_run(event, deps.resumes_per_run)
    counts: Counter[str] = Counter()
    allowed, breaker_says = 0, "open"
    failure: Exception | None = None
    while failure is None and context.get_remaining_time_in_millis() / 1000 > FINISHING_RESERVE_SEC:
        allowed, breaker_says = resumes_allowed(deps.breaker.state(deps.breaker_name), time.time(), per_run)
        if counts["resumed"] >= allowed:
            break
        # A second's long poll asks every SQS server; a short poll may answer empty while messages wait.
        messages = deps.sqs.receive_message(
            QueueUrl=deps.queue_url, MaxNumberOfMessages=min(RECEIVE_BATCH_MAX, allowed - counts["resumed"]),
            WaitTimeSeconds=RECEIVE_WAIT_SEC, AttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        if not messages:
            break
        counts["received"] += len(messages)
        for message in messages:
            try:
                counts[handle(deps, message)] += 1
            except Exception as error:  # noqa: BLE001 - reported below; the run stops rather than hammer a failing AWS
                logger.exception("a parked message could not be handled: it comes back after its visibility timeout",
                                 extra={"message_id": message["MessageId"]})
                counts["failed"] += 1
                failure = error
                break
    logger.set_correlation_id(None)
    if not counts["received"] and allowed == 0:
        metrics.add_metric(name="ParkedOrdersHeldByBreaker", unit=MetricUnit.Count, value=1)
        logger.info("the gateway's breaker holds the parked orders: nothing received", extra={"breaker": breaker_says})
    for outcome in OUTCOMES:
        metrics.add_metric(name=f"ParkedOrders{outcome.title().replace('_', '')}", unit=MetricUnit.Count,
                           value=counts[outcome])
    summary = {"breaker": breaker_says, "allowed": allowed, "received": counts["received"],
               **{outcome: counts[outcome] for outcome in OUTCOMES}}
    logger.info("parked orders run done", extra=summary)
    if failure is not None:
        raise failure  # an errored invocation is what Lambda's Errors metric and its alarms count
    return summary


def handle(deps: Dependencies, message: dict[str, Any]) -> str:
    """Decide one message and act on it; the outcome (one of `OUTCOMES`)."""
    logger.set_correlation_id(message["MessageId"])
    try:
        parked = parse_parked_message(message.get("Body"))
    except InvalidParkedMessage as error:
        return dead_letter(deps, message, "unreadable", str(error))
    logger.set_correlation_id(parked.order.order_id)
    record = read_order(deps, parked.order.order_id)
    decision = decide(parked, record)
    if decision.action is Action.CHECK_PARKER:
        decision = decide(parked, record, parker_running=is_running(deps, parked.parked_by))
    context = {"parked_by": parked.parked_by, "parked_at": parked.parked_at, "reason": decision.reason,
               "status": record.status if record else None,
               "receive_count": int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))}
    if decision.action is Action.RESUME:
        return resume(deps, message, parked, record, decision, context)
    if decision.action is Action.DROP:
        delete(deps, message)
        logger.info("parked message dropped: nothing to resume", extra=context)
        return "dropped"
    if decision.action is Action.WAIT:
        logger.info("parked order not marked parked yet: left for a later run", extra=context)
        return "waiting"
    return dead_letter(deps, message, decision.reason, f"no automatic resumption: {decision.reason}", context)


def resume(deps: Dependencies, message: dict[str, Any], parked: ParkedOrder, record: OrderRecord | None,
           decision: Decision, context: dict[str, Any]) -> str:
    name = decision.execution_name
    assert name is not None  # every RESUME decision names its execution
    context = {**context, "execution_name": name}
    if record is not None and record.resume_execution == name and exists(deps, name):
        delete(deps, message)
        logger.info("parked message dropped: a copy of it already resumed the order", extra=context)
        return "dropped"
    try:
        claim(deps, parked, name)
    except deps.dynamodb.exceptions.ConditionalCheckFailedException:
        logger.info("the order changed while it was decided: left for the next run", extra=context)
        return "waiting"
    try:
        started = deps.stepfunctions.start_execution(
            stateMachineArn=deps.state_machine_arn, name=name, input=json.dumps(resume_input(parked), sort_keys=True))
    except deps.stepfunctions.exceptions.ExecutionAlreadyExists:
        delete(deps, message)
        logger.info("parked message dropped: a copy of it already resumed the order", extra=context)
        return "dropped"
    delete(deps, message)
    logger.info("parked order resumed", extra={**context, "execution_arn": started["executionArn"]})
    return "resumed"


def read_order(deps: Dependencies, order_id: str) -> OrderRecord | None:
    item = deps.dynamodb.get_item(
        TableName=deps.orders_table_name, Key={"pk": {"S": order_id}}, ConsistentRead=True,
        ProjectionExpression="#status, #execution, resume_execution",
        ExpressionAttributeNames={"#status": "status", "#execution": "execution"},
    ).get("Item")
    if item is None:
        return None
    return OrderRecord.from_item({name: next(iter(value.values())) for name, value in item.items()})


def claim(deps: Dependencies, parked: ParkedOrder, name: str) -> None:
    """Mark the order parked and due to be taken up by `name`, while the execution that parked it still holds it."""
    deps.dynamodb.update_item(
        TableName=deps.orders_table_name,
        Key={"pk": {"S": parked.order.order_id}},
        UpdateExpression=("SET #status = :parked, #resume_execution = :name, #updated_at = :now,"
                          " #parked_reason = if_not_exists(#parked_reason, :reason)"),
        ConditionExpression="#execution = :parked_by AND (#status = :parked OR #status = :pending)",
        ExpressionAttributeNames={"#status": "status", "#resume_execution": "resume_execution",
                                  "#updated_at": "updated_at", "#parked_reason": "parked_reason",
                                  "#execution": "execution"},
        ExpressionAttributeValues={
            ":parked": {"S": "parked"}, ":pending": {"S": "pending"}, ":name": {"S": name},
            ":now": {"S": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")},
            ":reason": {"S": parked.reason or "circuit_breaker_open"}, ":parked_by": {"S": parked.parked_by},
        },
    )


def is_running(deps: Dependencies, execution_name: str) -> bool:
    try:
        description = deps.stepfunctions.describe_execution(executionArn=f"{deps.execution_arn_prefix}:{execution_name}")
    except deps.stepfunctions.exceptions.ExecutionDoesNotExist:
        return False
    return description["status"] == "RUNNING"


def exists(deps: Dependencies, execution_name: str) -> bool:
    try:
        deps.stepfunctions.describe_execution(executionArn=f"{deps.execution_arn_prefix}:{execution_name}")
    except deps.stepfunctions.exceptions.ExecutionDoesNotExist:
        return False
    return True


def delete(deps: Dependencies, message: dict[str, Any]) -> None:
    deps.sqs.delete_message(QueueUrl=deps.queue_url, ReceiptHandle=message["ReceiptHandle"])


def dead_letter(deps: Dependencies, message: dict[str, Any], reason: str, error: str,
                context: dict[str, Any] | None = None) -> str:
    """To the dead-letter queue as it came, the reason beside it, then off the parked-orders queue."""
    deps.sqs.send_message(
        QueueUrl=deps.dead_letter_queue_url,
        MessageBody=message.get("Body") or "",
        MessageAttributes={
            "error": {"DataType": "String", "StringValue": error[:1000]},
            "source_message_id": {"DataType": "String", "StringValue": message["MessageId"]},
        },
    )
    delete(deps, message)
    logger.error("parked message moved to the dead-letter queue: a person must decide",
                 extra={**(context or {}), "reason": reason, "error": error})
    return "dead_lettered"


if "AWS_LAMBDA_FUNCTION_NAME" in os.environ:
    # On Lambda, built in the init phase as before, outside the first invocation's time and timeout.
    dependencies()
