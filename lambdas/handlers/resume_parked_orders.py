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

import json
import os
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

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
from throttling.circuit_breaker import BreakerPolicy
from throttling.core import names
from throttling.dynamodb_limits import DynamoDbCircuitBreaker

QUEUE_URL = os.environ[names.ENV_PARKED_ORDERS_QUEUE_URL]
DEAD_LETTER_QUEUE_URL = os.environ[names.ENV_PARKED_ORDERS_DLQ_URL]
ORDERS_TABLE_NAME = os.environ[names.ENV_ORDERS_TABLE_NAME]
STATE_MACHINE_ARN = os.environ[names.ENV_PAYMENT_STATE_MACHINE_ARN]
BREAKER_NAME = os.environ[names.ENV_BREAKER_NAME]
RESUMES_PER_RUN = int(os.environ[names.ENV_RESUMES_PER_RUN])
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
sqs = boto3.client("sqs")
dynamodb = boto3.client("dynamodb")
stepfunctions = boto3.client("stepfunctions")
# Only `state()` is used: one consistent read of the item the authorizer and the workflow share.
breaker = DynamoDbCircuitBreaker(os.environ[names.ENV_BREAKER_TABLE_NAME], client=dynamodb, policy=BreakerPolicy())
EXECUTION_ARN_PREFIX = STATE_MACHINE_ARN.replace(":stateMachine:", ":execution:", 1)


class InvalidRun(ValueError):
    """The operator's event asks for something a run cannot do; the message says what it may ask."""


def requested_per_run(event: Any) -> int:
    """How many orders this run may resume: `RESUMES_PER_RUN`, or fewer when an operator asks for `max_orders`."""
    if not isinstance(event, dict) or "max_orders" not in event:
        return RESUMES_PER_RUN
    value = event["max_orders"]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= RESUMES_PER_RUN:
        raise InvalidRun(f"max_orders must be a whole number from 1 to {RESUMES_PER_RUN} (the scheduled share of the"
                         f" gateway's rate), got {value!r}; leave it out to resume the scheduled share")
    return value


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    per_run = requested_per_run(event)
    counts: Counter[str] = Counter()
    allowed, breaker_says = 0, "open"
    failure: Exception | None = None
    while failure is None and context.get_remaining_time_in_millis() / 1000 > FINISHING_RESERVE_SEC:
        allowed, breaker_says = resumes_allowed(breaker.state(BREAKER_NAME), time.time(), per_run)
        if counts["resumed"] >= allowed:
            break
        # A second's long poll asks every SQS server; a short poll may answer empty while messages wait.
        messages = sqs.receive_message(
            QueueUrl=QUEUE_URL, MaxNumberOfMessages=min(RECEIVE_BATCH_MAX, allowed - counts["resumed"]),
            WaitTimeSeconds=RECEIVE_WAIT_SEC, AttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        if not messages:
            break
        counts["received"] += len(messages)
        for message in messages:
            try:
                counts[handle(message)] += 1
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


def handle(message: dict[str, Any]) -> str:
    """Decide one message and act on it; the outcome (one of `OUTCOMES`)."""
    logger.set_correlation_id(message["MessageId"])
    try:
        parked = parse_parked_message(message.get("Body"))
    except InvalidParkedMessage as error:
        return dead_letter(message, "unreadable", str(error))
    logger.set_correlation_id(parked.order.order_id)
    record = read_order(parked.order.order_id)
    decision = decide(parked, record)
    if decision.action is Action.CHECK_PARKER:
        decision = decide(parked, record, parker_running=is_running(parked.parked_by))
    context = {"parked_by": parked.parked_by, "parked_at": parked.parked_at, "reason": decision.reason,
               "status": record.status if record else None,
               "receive_count": int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))}
    if decision.action is Action.RESUME:
        return resume(message, parked, record, decision, context)
    if decision.action is Action.DROP:
        delete(message)
        logger.info("parked message dropped: nothing to resume", extra=context)
        return "dropped"
    if decision.action is Action.WAIT:
        logger.info("parked order not marked parked yet: left for a later run", extra=context)
        return "waiting"
    return dead_letter(message, decision.reason, f"no automatic resumption: {decision.reason}", context)


def resume(message: dict[str, Any], parked: ParkedOrder, record: OrderRecord | None, decision: Decision,
           context: dict[str, Any]) -> str:
    name = decision.execution_name
    assert name is not None  # every RESUME decision names its execution
    context = {**context, "execution_name": name}
    if record is not None and record.resume_execution == name and exists(name):
        delete(message)
        logger.info("parked message dropped: a copy of it already resumed the order", extra=context)
        return "dropped"
    try:
        claim(parked, name)
    except dynamodb.exceptions.ConditionalCheckFailedException:
        logger.info("the order changed while it was decided: left for the next run", extra=context)
        return "waiting"
    try:
        started = stepfunctions.start_execution(
            stateMachineArn=STATE_MACHINE_ARN, name=name, input=json.dumps(resume_input(parked), sort_keys=True))
    except stepfunctions.exceptions.ExecutionAlreadyExists:
        delete(message)
        logger.info("parked message dropped: a copy of it already resumed the order", extra=context)
        return "dropped"
    delete(message)
    logger.info("parked order resumed", extra={**context, "execution_arn": started["executionArn"]})
    return "resumed"


def read_order(order_id: str) -> OrderRecord | None:
    item = dynamodb.get_item(
        TableName=ORDERS_TABLE_NAME, Key={"pk": {"S": order_id}}, ConsistentRead=True,
        ProjectionExpression="#status, #execution, resume_execution",
        ExpressionAttributeNames={"#status": "status", "#execution": "execution"},
    ).get("Item")
    if item is None:
        return None
    return OrderRecord.from_item({name: next(iter(value.values())) for name, value in item.items()})


def claim(parked: ParkedOrder, name: str) -> None:
    """Mark the order parked and due to be taken up by `name`, while the execution that parked it still holds it."""
    dynamodb.update_item(
        TableName=ORDERS_TABLE_NAME,
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


def is_running(execution_name: str) -> bool:
    try:
        description = stepfunctions.describe_execution(executionArn=f"{EXECUTION_ARN_PREFIX}:{execution_name}")
    except stepfunctions.exceptions.ExecutionDoesNotExist:
        return False
    return description["status"] == "RUNNING"


def exists(execution_name: str) -> bool:
    try:
        stepfunctions.describe_execution(executionArn=f"{EXECUTION_ARN_PREFIX}:{execution_name}")
    except stepfunctions.exceptions.ExecutionDoesNotExist:
        return False
    return True


def delete(message: dict[str, Any]) -> None:
    sqs.delete_message(QueueUrl=QUEUE_URL, ReceiptHandle=message["ReceiptHandle"])


def dead_letter(message: dict[str, Any], reason: str, error: str, context: dict[str, Any] | None = None) -> str:
    """To the dead-letter queue as it came, the reason beside it, then off the parked-orders queue."""
    sqs.send_message(
        QueueUrl=DEAD_LETTER_QUEUE_URL,
        MessageBody=message.get("Body") or "",
        MessageAttributes={
            "error": {"DataType": "String", "StringValue": error[:1000]},
            "source_message_id": {"DataType": "String", "StringValue": message["MessageId"]},
        },
    )
    delete(message)
    logger.error("parked message moved to the dead-letter queue: a person must decide",
                 extra={**(context or {}), "reason": reason, "error": error})
    return "dead_lettered"
