"""Drive the deployed workflows in the emulator: seed their inputs, run an execution, read what it left behind.

`make demo` prints one line per use case from here, and the emulator tests use the same helpers,
so what the demo shows is what the tests assert.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from localcloud.cloud import LocalCloud
from localcloud.deployer import DeployedStack
from localcloud.downstream_simulator import DownstreamSimulator

__all__ = [
    "ExecutionResult",
    "crm_batch_outputs",
    "crm_segment_large_outputs",
    "discard_messages",
    "drain_queue",
    "legacy_outputs",
    "legacy_records",
    "moderation_outputs",
    "moderation_results",
    "order_placed_event",
    "payment_execution_name",
    "payment_orders",
    "park_payments",
    "payment_outputs",
    "queue_depth",
    "record_statuses",
    "run_crm_batch",
    "run_crm_segment_large",
    "run_execution",
    "run_legacy",
    "run_moderation",
    "run_payments",
    "read_stock",
    "resume_parked_orders",
    "seed_inventory",
    "start_moderations",
    "start_payments",
    "seed_segment",
    "seed_segment_object",
    "upload_created_event",
    "wait_for_delivery",
    "wait_for_executions",
]

POLL_INTERVAL_SEC = 0.2


@dataclass(frozen=True)
class ExecutionResult:
    name: str
    status: str
    output: Any
    error: str | None
    cause: str | None
    duration_sec: float


def crm_batch_outputs(stacks: Mapping[str, DeployedStack]) -> dict[str, str]:
    """The workflow stack's outputs the CRM batch needs: state machine ARN, segments table, dead-letter queue URL."""
    (workflows,) = [stack for name, stack in stacks.items() if name.endswith("-Workflows")]
    return {
        "state_machine_arn": workflows.outputs["CrmBatchEmailStateMachineArn"],
        "segments_table": workflows.outputs["SegmentsTableName"],
        "dead_letter_queue_url": workflows.outputs["CrmBatchEmailDeadLetterQueueUrl"],
    }


def seed_segment(cloud: LocalCloud, table_name: str, segment_id: str, user_ids: Sequence[str]) -> None:
    """Write one segment item in the shape the workflow reads: `{pk: S, user_ids: L of S}`."""
    cloud.client("dynamodb").put_item(
        TableName=table_name,
        Item={"pk": {"S": segment_id}, "user_ids": {"L": [{"S": user_id} for user_id in user_ids]}},
    )


def run_execution(
    cloud: LocalCloud, state_machine_arn: str, execution_input: Mapping[str, Any], *, name: str | None = None,
    timeout_sec: float = 120,
) -> ExecutionResult:
    """Start an execution and poll it to the end.

    Always named: moto leaves an unnamed execution's `$$.Execution.Name` null (AWS generates a
    UUID), and the workflow builds its idempotency keys from that name.
    """
    name = name or f"run-{uuid.uuid4().hex[:12]}"
    sfn = cloud.client("stepfunctions")
    started = time.monotonic()
    arn = sfn.start_execution(stateMachineArn=state_machine_arn, name=name, input=json.dumps(execution_input))[
        "executionArn"
    ]
    while True:
        description = sfn.describe_execution(executionArn=arn)
        if description["status"] != "RUNNING":
            break
        if time.monotonic() - started > timeout_sec:
            raise TimeoutError(f"execution {name} still RUNNING after {timeout_sec} s")
        time.sleep(POLL_INTERVAL_SEC)
    output = description.get("output")
    return ExecutionResult(
        name=name,
        status=description["status"],
        output=json.loads(output) if output else None,
        error=description.get("error"),
        cause=description.get("cause"),
        duration_sec=time.monotonic() - started,
    )


def drain_queue(cloud: LocalCloud, queue_url: str) -> list[dict[str, Any]]:
    """Receive and delete every message on the queue; return their bodies parsed as JSON."""
    sqs = cloud.client("sqs")
    bodies: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def run_crm_batch(
    cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Mapping[str, DownstreamSimulator],
    *, users: int = 30,
) -> str:
    """Use case 1 once: seed a segment of `users` users, run the workflow, and say what the CRM saw.

    The peak is the most requests the CRM saw in any 1 s window, so it may exceed the limit by up to
    the burst (a full bucket at the start), which the CRM admits without a 429.
    """
    outputs = crm_batch_outputs(stacks)
    crm = simulators["crm"]
    segment_id = f"demo-{uuid.uuid4().hex[:8]}"
    seed_segment(cloud, outputs["segments_table"], segment_id, [f"user-{i:03d}" for i in range(users)])
    drain_queue(cloud, outputs["dead_letter_queue_url"])
    crm.reset()
    result = run_execution(cloud, outputs["state_machine_arn"], {"segment_id": segment_id})
    if result.status != "SUCCEEDED":
        return f"crm batch e-mail: execution {result.status} ({result.error}: {result.cause})"
    report = result.output
    stats = crm.stats()
    return (
        f"crm batch e-mail: {report['items']} items, {report['succeeded']} sent, {report['failed']} failed,"
        f" peak {stats['max_in_1s_window_all']} req/s at the CRM"
        f" (limit {_number(crm.profile.rate_per_sec)}, burst {crm.profile.burst}), {stats['by_status'].get(429, 0)}"
        " answered 429"
    )


def crm_segment_large_outputs(stacks: Mapping[str, DeployedStack]) -> dict[str, str]:
    """What the large-segment path needs: its state machine, the segments bucket, the CRM batch's dead-letter queue."""
    (workflows,) = [stack for name, stack in stacks.items() if name.endswith("-Workflows")]
    return {
        "state_machine_arn": workflows.outputs["CrmSegmentLargeStateMachineArn"],
        "bucket": workflows.outputs["SegmentsBucketName"],
        "dead_letter_queue_url": workflows.outputs["CrmBatchEmailDeadLetterQueueUrl"],
    }


def seed_segment_object(cloud: LocalCloud, bucket: str, user_ids: Sequence[str], *, name: str | None = None) -> str:
    """Write a segment export as the workflow reads it (CSV, header `user_id`) under `segments/`; return its key."""
    key = f"segments/{name or uuid.uuid4().hex[:8]}.csv"
    body = "\n".join(["user_id", *user_ids]) + "\n"
    cloud.client("s3").put_object(Bucket=bucket, Key=key, Body=body.encode(), ContentType="text/csv")
    return key


def run_crm_segment_large(
    cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Mapping[str, DownstreamSimulator],
    *, users: int = 40,
) -> str:
    """Use case 1 for a large segment once: a CSV export in S3, one child execution per user, what the CRM saw."""
    outputs = crm_segment_large_outputs(stacks)
    crm = simulators["crm"]
    key = seed_segment_object(cloud, outputs["bucket"], [f"user-{i:04d}" for i in range(users)],
                              name=f"demo-{uuid.uuid4().hex[:8]}")
    drain_queue(cloud, outputs["dead_letter_queue_url"])
    crm.reset()
    result = run_execution(cloud, outputs["state_machine_arn"], {"segment_key": key},
                           timeout_sec=60 + 3 * users / crm.profile.rate_per_sec)
    if result.status != "SUCCEEDED":
        return f"crm large segment: execution {result.status} ({result.error}: {result.cause})"
    report = result.output
    stats = crm.stats()
    return (
        f"crm large segment: {report['items']} users from s3, {report['succeeded']} sent, {report['failed']} failed,"
        f" peak {stats['max_in_1s_window_all']} req/s at the CRM (limit {_number(crm.profile.rate_per_sec)},"
        f" burst {crm.profile.burst}), {stats['by_status'].get(429, 0)} answered 429,"
        f" results in s3://{report['results']['Bucket']}/{report['results']['Key']}"
    )


def legacy_outputs(stacks: Mapping[str, DeployedStack]) -> dict[str, str]:
    """The buffers stack's outputs use case 4 needs: publishing workflow, queues, consumer, records table."""
    (buffers,) = [stack for name, stack in stacks.items() if name.endswith("-Buffers")]
    return {
        "state_machine_arn": buffers.outputs["LegacyPublishStateMachineArn"],
        "queue_url": buffers.outputs["LegacyQueueUrl"],
        "queue_arn": buffers.outputs["LegacyQueueArn"],
        "dead_letter_queue_url": buffers.outputs["LegacyDeadLetterQueueUrl"],
        "consumer_name": buffers.outputs["LegacyConsumerName"],
        "records_table": buffers.outputs["LegacyRecordsTableName"],
    }


def legacy_records(count: int, *, prefix: str | None = None) -> list[dict[str, Any]]:
    """`count` records in the shape the publishing workflow takes: `{record_id, payload}`."""
    prefix = prefix or f"rec-{uuid.uuid4().hex[:8]}"
    return [{"record_id": f"{prefix}-{i:03d}", "payload": {"account": f"ACC{i:05d}", "amount_cents": 100 * i}}
            for i in range(count)]


def record_statuses(cloud: LocalCloud, table_name: str, record_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """record id -> its status item (plain strings and numbers), for the ids that have one."""
    dynamodb = cloud.client("dynamodb")
    items: dict[str, dict[str, Any]] = {}
    for start in range(0, len(record_ids), 100):
        keys = [{"pk": {"S": record_id}} for record_id in record_ids[start : start + 100]]
        request: dict[str, Any] = {table_name: {"Keys": keys, "ConsistentRead": True}}
        while request:
            answer = dynamodb.batch_get_item(RequestItems=request)
            for item in answer["Responses"].get(table_name, []):
                items[item["pk"]["S"]] = {name: next(iter(value.values())) for name, value in item.items()}
            request = answer.get("UnprocessedKeys") or {}
    return items


def wait_for_delivery(
    cloud: LocalCloud, table_name: str, record_ids: Sequence[str], *, timeout_sec: float
) -> dict[str, dict[str, Any]]:
    """Poll the records table until every record is `delivered` or the time is up; return the statuses."""
    deadline = time.monotonic() + timeout_sec
    while True:
        statuses = record_statuses(cloud, table_name, record_ids)
        delivered = sum(1 for item in statuses.values() if item.get("status") == "delivered")
        if delivered == len(record_ids) or time.monotonic() > deadline:
            return statuses
        time.sleep(POLL_INTERVAL_SEC)


def discard_messages(cloud: LocalCloud, queue_url: str) -> int:
    """Receive and delete every visible message, whatever its body (PurgeQueue works once a minute); return how many."""
    sqs = cloud.client("sqs")
    discarded = 0
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
        discarded += len(messages)
    return discarded


def queue_depth(cloud: LocalCloud, queue_url: str) -> int:
    """Messages in a queue, visible or in flight."""
    attributes = cloud.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def run_legacy(
    cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Mapping[str, DownstreamSimulator],
    *, records: int = 10,
) -> str:
    """Use case 4 once: publish `records` records through the workflow and say what the mainframe saw."""
    outputs = legacy_outputs(stacks)
    mainframe = simulators["legacy_mainframe"]
    discard_messages(cloud, outputs["dead_letter_queue_url"])
    mainframe.reset()
    batch = legacy_records(records, prefix=f"demo-{uuid.uuid4().hex[:8]}")
    result = run_execution(cloud, outputs["state_machine_arn"], {"records": batch})
    if result.status != "SUCCEEDED":
        return f"legacy integration: execution {result.status} ({result.error}: {result.cause})"
    # The consumer delivers at the limiter's pace (0.8 req/s in dev): allow twice that, plus a cold start.
    statuses = wait_for_delivery(cloud, outputs["records_table"], [r["record_id"] for r in batch],
                                 timeout_sec=2.5 * records / max(0.1, mainframe.profile.rate_per_sec) + 15)
    delivered = sum(1 for item in statuses.values() if item.get("status") == "delivered")
    stats = mainframe.stats()
    return (
        f"legacy integration: {result.output['published']} records, {delivered} delivered,"
        f" {queue_depth(cloud, outputs['dead_letter_queue_url'])} in DLQ,"
        f" peak {stats['max_in_1s_window_all']} req/s at the mainframe"
        f" (limit {_number(mainframe.profile.rate_per_sec)})"
    )

def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# -- use case 2: payment authorization ---------------------------------------------------------

# What the order events that start a payment carry (`stacks.use_cases.payments` builds the rule from the same values).
ORDER_EVENT_SOURCE = "shop.orders"
ORDER_PLACED_DETAIL_TYPE = "OrderPlaced"
PAYMENT_EXECUTION_PREFIX = "order-"
# The gateway's breaker item, which the workflow reads and the authorizer moves.
PAYMENT_GATEWAY_BREAKER = "payment_gateway"
# An amount the sandbox gateway declines (`payments.orders.DECLINED_TEST_AMOUNTS`: 2000.00 to 2999.99).
# Money travels as a decimal string with two decimals (`payments.orders`), never as a JSON number.
DECLINED_TEST_AMOUNT = "2500.00"


def payment_outputs(stacks: Mapping[str, DeployedStack]) -> dict[str, str]:
    """What use case 2 needs from the workflow and shared-limits stacks' outputs."""
    (workflows,) = [stack for name, stack in stacks.items() if name.endswith("-Workflows")]
    (shared,) = [stack for name, stack in stacks.items() if name.endswith("-SharedLimits")]
    return {
        "state_machine_arn": workflows.outputs["PaymentAuthorizationStateMachineArn"],
        "orders_table": workflows.outputs["OrdersTableName"],
        "inventory_table": workflows.outputs["InventoryTableName"],
        "idempotency_table": workflows.outputs["PaymentIdempotencyTableName"],
        "parked_queue_url": workflows.outputs["ParkedOrdersQueueUrl"],
        "topic_arn": workflows.outputs["CustomerNotificationsTopicArn"],
        "starter_name": workflows.outputs["PaymentStarterName"],
        "authorizer_name": workflows.outputs["PaymentAuthorizerName"],
        "breaker_table": shared.outputs["CircuitBreakerTableName"],
        "parked_dlq_url": workflows.outputs["ParkedOrdersDeadLetterQueueUrl"],
        "resumer_name": workflows.outputs["ParkedOrderResumerName"],
    }


def payment_orders(
    count: int, *, prefix: str | None = None, skus: Sequence[str] = ("sku-widget",)
) -> list[dict[str, Any]]:
    """`count` orders in the workflow's input shape, ids unique to `prefix`, amounts the gateway authorizes."""
    prefix = prefix or f"ord-{uuid.uuid4().hex[:8]}"
    return [
        {
            "order_id": f"{prefix}-{i:03d}",
            "customer_id": f"customer-{i % 7:02d}",
            "amount": f"{10 + 1.25 * i:.2f}",
            "currency": "EUR",
            "items": [{"sku": skus[i % len(skus)], "quantity": 1 + i % 2}],
        }
        for i in range(count)
    ]


def payment_execution_name(order_id: str) -> str:
    return f"{PAYMENT_EXECUTION_PREFIX}{order_id}"


def order_placed_event(
    order: Mapping[str, Any], *, account: str = "123456789012", region: str = "us-east-1"
) -> dict[str, Any]:
    """An `OrderPlaced` event as EventBridge hands it to the starter."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": ORDER_PLACED_DETAIL_TYPE,
        "source": ORDER_EVENT_SOURCE,
        "account": account,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": region,
        "resources": [],
        "detail": dict(order),
    }


def seed_inventory(cloud: LocalCloud, table_name: str, stock: Mapping[str, int]) -> None:
    """Set each SKU's stock (`{pk: sku, stock: N}`)."""
    dynamodb = cloud.client("dynamodb")
    for sku, units in stock.items():
        dynamodb.put_item(TableName=table_name, Item={"pk": {"S": sku}, "stock": {"N": str(units)}})


def read_stock(cloud: LocalCloud, table_name: str, skus: Sequence[str]) -> dict[str, int]:
    """SKU -> units in stock, for the SKUs that have an item."""
    return {sku: int(item["stock"]) for sku, item in record_statuses(cloud, table_name, list(skus)).items()}


def start_payments(cloud: LocalCloud, starter_name: str, orders: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Hand each order's `OrderPlaced` event to the starter function, as the rule does; its answers, in order.

    moto's EventBridge delivers to log groups, SQS, event buses and API destinations only (a Lambda
    target raises NotImplementedError), so the event is given to the function the rule targets.
    """
    lambda_client = cloud.client("lambda")
    answers = []
    for order in orders:
        response = lambda_client.invoke(FunctionName=starter_name, Payload=json.dumps(
            order_placed_event(order, account=cloud.account_id, region=cloud.region)))
        answer = json.loads(response["Payload"].read())
        if response.get("FunctionError"):
            raise RuntimeError(f"the payment starter failed for order {order.get('order_id')!r}: {answer}")
        answers.append(answer)
    return answers


def resume_parked_orders(cloud: LocalCloud, resumer_name: str, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One run of the parked-order resumer, as its minute schedule (or an operator) starts it; its answer.

    moto's EventBridge does not deliver to Lambda targets, so the scheduled event is handed to the function.
    """
    scheduled = {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
                 "account": cloud.account_id, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "region": cloud.region, "resources": [], "detail": {}}
    response = cloud.client("lambda").invoke(FunctionName=resumer_name, Payload=json.dumps(
        scheduled if event is None else dict(event)))
    answer = json.loads(response["Payload"].read())
    if response.get("FunctionError"):
        raise RuntimeError(f"the parked-order resumer failed: {answer}")
    return answer


def wait_for_executions(
    cloud: LocalCloud, state_machine_arn: str, names: Sequence[str], *, timeout_sec: float,
) -> dict[str, ExecutionResult]:
    """Poll the named executions of a state machine until none is RUNNING; name -> result.

    One `ListExecutions` of the running ones per poll, and one `DescribeExecution` per execution
    once it ended: the emulator serves these in the process that also times the simulators' arrivals.
    """
    sfn = cloud.client("stepfunctions")
    execution_prefix = state_machine_arn.replace(":stateMachine:", ":execution:")
    deadline = time.monotonic() + timeout_sec
    results: dict[str, ExecutionResult] = {}
    while True:
        running = {
            execution["name"]
            for page in sfn.get_paginator("list_executions").paginate(
                stateMachineArn=state_machine_arn, statusFilter="RUNNING")
            for execution in page["executions"]
        }
        for name in [n for n in names if n not in results and n not in running]:
            description = sfn.describe_execution(executionArn=f"{execution_prefix}:{name}")
            if description["status"] == "RUNNING":
                continue
            output = description.get("output")
            results[name] = ExecutionResult(
                name=name,
                status=description["status"],
                output=json.loads(output) if output else None,
                error=description.get("error"),
                cause=description.get("cause"),
                duration_sec=(description["stopDate"] - description["startDate"]).total_seconds(),
            )
        if len(results) == len(names):
            return results
        if time.monotonic() > deadline:
            running = sorted(set(names) - set(results))
            late = sorted(set(names) - set(results))
            raise TimeoutError(f"{len(late)} executions still RUNNING after {timeout_sec} s: {late[:5]}")
        time.sleep(POLL_INTERVAL_SEC * 2)


def run_payments(
    cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Mapping[str, DownstreamSimulator],
    *, orders: int = 12, declined: int = 2, parked: int = 2,
) -> str:
    """Use case 2 once: place `orders` orders (`declined` of them for an amount the gateway declines, `parked` of
    them while the gateway's breaker is open).

    The parked orders are placed first, with the breaker forced open, as its alarm would; then the
    breaker is closed, as an operator would, the other orders are placed at once, and the resumer
    runs once, as its minute schedule would. Every workflow runs to its end (a parked order's in its
    resumption, `r1-<order_id>`), and the line says how the orders ended and the most requests the
    gateway saw in any 1 s window (its limit is 2 req/s with a burst of 2, so up to 4 is within its
    contract and answered without a 429).
    """
    outputs = payment_outputs(stacks)
    gateway = simulators["payment_gateway"]
    sku = f"demo-{uuid.uuid4().hex[:8]}"
    batch = payment_orders(orders, prefix=f"demo-{uuid.uuid4().hex[:8]}", skus=(sku,))
    for order in batch[:declined]:
        order["amount"] = DECLINED_TEST_AMOUNT
    to_park, placed = batch[declined:declined + parked], batch[:declined] + batch[declined + parked:]
    seed_inventory(cloud, outputs["inventory_table"], {sku: 2 * orders})
    gateway.reset()
    if to_park:
        park_payments(cloud, outputs, to_park)
    start_payments(cloud, outputs["starter_name"], placed)
    resumed = resume_parked_orders(cloud, outputs["resumer_name"])["resumed"] if to_park else 0
    names = [payment_execution_name(o["order_id"]) for o in placed] + [f"r1-{o['order_id']}" for o in to_park]
    results = wait_for_executions(cloud, outputs["state_machine_arn"], names,
                                  timeout_sec=60 + 2 * orders / gateway.profile.rate_per_sec)
    ended = [(r.status, (r.output or {}).get("status") if r.status == "SUCCEEDED" else r.error)
             for r in results.values()]
    paid, still_parked = ended.count(("SUCCEEDED", "paid")), ended.count(("SUCCEEDED", "parked"))
    declined_count = ended.count(("FAILED", "PaymentDeclined"))
    others = len(ended) - paid - still_parked - declined_count
    stats = gateway.stats()
    return (
        f"payments: {len(batch)} orders, {paid} paid, {declined_count} declined"
        + (f" ({len(to_park)} parked while the breaker was open, {resumed} resumed once it closed)" if to_park else "")
        + (f", {still_parked} still parked" if still_parked else "")
        + (f", {others} failed otherwise" if others else "")
        + f", peak {stats['max_in_1s_window_all']} req/s at the gateway (limit {_number(gateway.profile.rate_per_sec)},"
        f" burst {gateway.profile.burst}), {stats['by_status'].get(429, 0)} answered 429"
    )


def park_payments(cloud: LocalCloud, outputs: Mapping[str, str], orders: Sequence[Mapping[str, Any]]) -> None:
    """Place `orders` while the gateway's breaker is forced open, wait until each is parked, then close the breaker.

    Closing is an operator's force-close: the breaker's item deleted (no item is a closed breaker).
    """
    from throttling.adapters.dynamodb_circuit_breaker import DynamoDbCircuitBreaker
    from throttling.core.circuit_breaker import BreakerPolicy

    dynamodb = cloud.client("dynamodb")
    breaker = DynamoDbCircuitBreaker(outputs["breaker_table"], client=dynamodb, policy=BreakerPolicy())
    breaker.force_open(PAYMENT_GATEWAY_BREAKER, reason="demo: the gateway is failing", duration_sec=300)
    try:
        start_payments(cloud, outputs["starter_name"], orders)
        wait_for_executions(cloud, outputs["state_machine_arn"],
                            [payment_execution_name(o["order_id"]) for o in orders], timeout_sec=60)
    finally:
        dynamodb.delete_item(TableName=outputs["breaker_table"], Key={"pk": {"S": PAYMENT_GATEWAY_BREAKER}})


# -- use case 3: UGC moderation ----------------------------------------------------------------


def moderation_outputs(stacks: Mapping[str, DeployedStack]) -> dict[str, str]:
    """What use case 3 needs from the workflow stack's outputs."""
    (workflows,) = [stack for name, stack in stacks.items() if name.endswith("-Workflows")]
    return {
        "state_machine_arn": workflows.outputs["UgcModerationStateMachineArn"],
        "bucket": workflows.outputs["UploadsBucketName"],
        "results_table": workflows.outputs["ModerationResultsTableName"],
        "topic_arn": workflows.outputs["ModerationResultsTopicArn"],
        "decider_name": workflows.outputs["ModerationDeciderName"],
    }


def upload_created_event(
    bucket: str, key: str, *, account: str = "123456789012", region: str = "us-east-1"
) -> dict[str, Any]:
    """The `Object Created` event S3 sends to EventBridge for an upload, as the rule hands it to the workflow."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": account,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": region,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"version": "0", "bucket": {"name": bucket}, "object": {"key": key}, "reason": "PutObject"},
    }


def start_moderations(cloud: LocalCloud, outputs: Mapping[str, str], keys: Sequence[str]) -> list[str]:
    """Upload each key and start its moderation with the event the rule would send, all at once; the execution names.

    moto's EventBridge does not deliver to Step Functions targets, so the rule's delivery is done here
    (one execution per object, as the rule does), concurrently, as a burst of uploads would arrive.
    """
    s3 = cloud.client("s3")
    sfn = cloud.client("stepfunctions")
    for key in keys:
        s3.put_object(Bucket=outputs["bucket"], Key=key, Body=f"user content {key}".encode())
    names = [f"upload-{uuid.uuid4().hex[:12]}" for _ in keys]

    def start(name_key: tuple[str, str]) -> None:
        name, key = name_key
        event = upload_created_event(outputs["bucket"], key, account=cloud.account_id, region=cloud.region)
        sfn.start_execution(stateMachineArn=outputs["state_machine_arn"], name=name, input=json.dumps(event))

    with ThreadPoolExecutor(max_workers=max(1, len(keys))) as pool:
        list(pool.map(start, zip(names, keys)))
    return names


def moderation_results(cloud: LocalCloud, table_name: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """object key -> its stored result (decision, verdicts parsed from JSON, bucket, execution name)."""
    items = record_statuses(cloud, table_name, keys)
    return {key: {**item, "verdicts": json.loads(item["verdicts"])} for key, item in items.items()}


def run_moderation(
    cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Mapping[str, DownstreamSimulator],
    *, uploads: int = 10,
) -> str:
    """Use case 3 once: `uploads` objects arrive at once, each moderated by three models through the shared limiter.

    The first upload is one the toxicity model is sure is hateful (rejected), the second one the nudity
    model finds borderline (a human reviews it); the models score the others low (approved). The peak
    is the most requests the model API saw in any 1 s window (up to its limit plus its burst is within
    its contract).
    """
    outputs = moderation_outputs(stacks)
    model = simulators["ai_model"]
    model.reset()
    keys = [f"demo-{uuid.uuid4().hex[:8]}/upload-{i:03d}.jpg" for i in range(uploads)]
    chosen = ({"toxicity": {"hate": 0.97}}, {"nudity": {"suggestive": 0.55}})
    model.set_profile(model.profile.merged_with({"content_scores": dict(zip(keys, chosen))}))
    names = start_moderations(cloud, outputs, keys)
    results = wait_for_executions(cloud, outputs["state_machine_arn"], names,
                                  timeout_sec=60 + 3 * uploads / model.profile.rate_per_sec)
    decisions = [(r.output or {}).get("decision") for r in results.values() if r.status == "SUCCEEDED"]
    failed = len(results) - len(decisions)
    stats = model.stats()
    return (
        f"ugc moderation: {uploads} uploads, {decisions.count('approved')} approved,"
        f" {decisions.count('rejected')} rejected, {decisions.count('needs_review')} needs review"
        + (f", {failed} failed" if failed else "")
        + f", peak {stats['max_in_1s_window_all']} req/s at the AI model (limit {_number(model.profile.rate_per_sec)},"
        f" burst {model.profile.burst}), {stats['by_status'].get(429, 0)} answered 429"
    )
