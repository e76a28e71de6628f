"""Use case 2, payment authorization: place orders as the order events would, park some, resume them, await the outcome."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from localcloud.drivers.common import ExecutionResult, layer_stack, record_statuses, wait_for_executions
from localcloud.emulator.cloud import LocalCloud
from localcloud.emulator.deployer import DeployedStack
from localcloud.referee.downstream_simulator import DownstreamSimulator

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
    workflows = layer_stack(stacks, "Workflows")
    shared = layer_stack(stacks, "SharedLimits")
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


@dataclass(frozen=True)
class PaymentsRun:
    """One run of orders: how many were placed and parked, how many the resumer resumed, how each workflow ended,
    and what the gateway's referee saw."""

    orders: int
    parked: int
    resumed: int
    results: dict[str, ExecutionResult]
    gateway_stats: dict[str, Any]


def run(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], gateway: DownstreamSimulator, *,
        orders: int = 12, declined: int = 2, parked: int = 2) -> PaymentsRun:
    """Place `orders` orders (`declined` of them for an amount the gateway declines, `parked` of them while the
    gateway's breaker is open) and await every workflow to its end.

    The parked orders are placed first, with the breaker forced open, as its alarm would; then the
    breaker is closed, as an operator would, the other orders are placed at once, and the resumer
    runs once, as its minute schedule would. A parked order's workflow ends in its resumption,
    `r1-<order_id>`.
    """
    outputs = payment_outputs(stacks)
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
    return PaymentsRun(len(batch), len(to_park), resumed, results, gateway.stats())


# -- the follow-ups: the warehouse, the customer's confirmation and the ledger, in the workflow's Parallel --

# The follow-up each downstream serves, in the Parallel's branch order, as the execution's output names them.
FOLLOW_UPS: Mapping[str, str] = {"warehouse": "inventory", "messaging": "confirmation", "ledger": "ledger"}


def follow_up_requests(simulator: DownstreamSimulator, order_id: str) -> list[tuple[str, int]]:
    """(path, status) of every request a follow-up's downstream received for one order (its correlation id)."""
    return [(r.path, r.status) for r in simulator.requests if r.headers.get("X-Correlation-Id") == order_id]


@dataclass(frozen=True)
class FollowUpsRun:
    """Orders paid with every follow-up done, then one order placed while a follow-up's downstream was down.

    `peaks` is the most requests each follow-up's downstream saw in any 1 s window, `answered_429` how many
    it answered 429; `failed_order` is how the order placed during the outage ended and what each downstream
    and the gateway received for it.
    """

    paid: int
    orders: int
    peaks: dict[str, int]
    answered_429: int
    down: str
    failed_result: ExecutionResult
    failed_requests: dict[str, list[tuple[str, int]]]
    gateway_requests: list[tuple[str, int]]


def run_follow_ups(cloud: LocalCloud, stacks: Mapping[str, DeployedStack],
                   simulators: Mapping[str, DownstreamSimulator], *, orders: int = 6,
                   down: str = "ledger") -> FollowUpsRun:
    """Place `orders` orders and await them, then one more while the `down` downstream answers 503 for good.

    Every simulator is reset first and the `down` one put back as it was afterwards.
    """
    outputs = payment_outputs(stacks)
    sku = f"fan-{uuid.uuid4().hex[:8]}"
    seed_inventory(cloud, outputs["inventory_table"], {sku: 10 * (orders + 1)})
    gateway = simulators["payment_gateway"]
    for simulator in (gateway, *(simulators[name] for name in FOLLOW_UPS)):
        simulator.reset()
    batch = payment_orders(orders + 1, prefix=f"fan-{uuid.uuid4().hex[:8]}", skus=(sku,))
    placed, during_outage = batch[:orders], batch[orders]
    start_payments(cloud, outputs["starter_name"], placed)
    results = wait_for_executions(cloud, outputs["state_machine_arn"],
                                  [payment_execution_name(o["order_id"]) for o in placed], timeout_sec=120)
    paid = sum(1 for r in results.values() if r.status == "SUCCEEDED" and (r.output or {}).get("status") == "paid")
    stats = {name: simulators[name].stats() for name in FOLLOW_UPS}
    broken = simulators[down]
    broken.set_profile(broken.profile.merged_with({"outage_windows_sec": [(0, 24 * 3600)]}))
    try:
        start_payments(cloud, outputs["starter_name"], [during_outage])
        (failed,) = wait_for_executions(cloud, outputs["state_machine_arn"],
                                        [payment_execution_name(during_outage["order_id"])],
                                        timeout_sec=120).values()
    finally:
        broken.reset()
    order_id = during_outage["order_id"]
    return FollowUpsRun(
        paid=paid, orders=orders,
        peaks={name: s["max_in_1s_window_all"] for name, s in stats.items()},
        answered_429=sum(s["by_status"].get(429, 0) for s in stats.values()),
        down=down, failed_result=failed,
        failed_requests={name: follow_up_requests(simulators[name], order_id) for name in FOLLOW_UPS},
        gateway_requests=[(r.path, r.status) for r in gateway.requests
                          if order_id in (r.headers.get("Idempotency-Key") or "")],
    )
