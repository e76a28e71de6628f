"""Use case 2 end to end: the deployed payment workflow against the payment gateway simulator.

The real state machine (from its ASL file, through CloudFormation) runs in moto's interpreter; the
real starter and authorizer run from the deployed zip. The authorizer takes a token from the shared
DynamoDB limiter, asks the breaker, and calls the simulator, which is the referee: it enforces the
gateway's 2 req/s (burst 2), answers 429 with an HTTP-date Retry-After, and records every request
with its `Idempotency-Key`, so a double charge would show there as two `POST /authorize` for one order.

Orders reach the starter as EventBridge would hand them over (moto's EventBridge cannot deliver to a
Lambda target; see `start_payments`). Each test says what becomes of every order it places.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.config import Config

from localcloud.emulator import patches

from localcloud.demo import run_payments
from localcloud.drivers.common import discard_messages, drain_queue, record_statuses, wait_for_executions
from localcloud.drivers.payments import (
    DECLINED_TEST_AMOUNT,
    ORDER_EVENT_SOURCE,
    ORDER_PLACED_DETAIL_TYPE,
    order_placed_event,
    payment_execution_name,
    payment_orders,
    read_stock,
    seed_inventory,
    start_payments,
)

pytestmark = pytest.mark.emulator

GATEWAY_LIMIT_PER_SEC = 2
GATEWAY_BURST = 2
BREAKER = "payment_gateway"
STOCK = 1_000


@pytest.fixture
def skus(cloud, payments) -> list[str]:
    """Two SKUs of this test, with plenty of stock."""
    names = [f"sku-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    seed_inventory(cloud, payments["inventory_table"], {name: STOCK for name in names})
    return names



@pytest.fixture
def parked_queue(cloud, payments) -> Iterator[str]:
    discard_messages(cloud, payments["parked_queue_url"])
    yield payments["parked_queue_url"]
    discard_messages(cloud, payments["parked_queue_url"])


def run_orders(cloud, payments, orders: list[dict[str, Any]], timeout_sec: float = 90) -> dict[str, Any]:
    """Place the orders through the starter and wait for their workflows; order id -> execution result."""
    answers = start_payments(cloud, payments["starter_name"], orders)
    assert [a["status"] for a in answers] == ["started"] * len(orders), answers
    results = wait_for_executions(cloud, payments["state_machine_arn"],
                                  [payment_execution_name(o["order_id"]) for o in orders], timeout_sec=timeout_sec)
    return {order["order_id"]: results[payment_execution_name(order["order_id"])] for order in orders}


def authorizations_by_order(gateway) -> Counter:
    """Order id -> `POST /authorize` requests the gateway accepted for it (by their Idempotency-Key)."""
    return Counter(r.headers.get("Idempotency-Key") for r in gateway.requests
                   if r.method == "POST" and r.path == "/authorize" and 200 <= r.status < 300)


def orders_table(cloud, payments, orders) -> dict[str, dict[str, Any]]:
    return record_statuses(cloud, payments["orders_table"], [o["order_id"] for o in orders])


# -- the emulator covers what the workflow relies on ----------------------------------------------------


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_choice_timestamps_with_fractions_need_the_patch(cloud, deployed, patched):
    # GIVEN a Choice comparing a breaker's open_until_utc (milliseconds, Z) with the time the state was entered
    later = datetime.now(timezone.utc) + timedelta(minutes=5)
    later = later.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    definition = {"StartAt": "Now", "States": {
        "Now": {"Type": "Pass", "Parameters": {"at.$": "$$.State.EnteredTime"}, "ResultPath": "$.clock",
                "Next": "Check"},
        "Check": {"Type": "Choice", "Default": "Earlier", "Choices": [
            {"Variable": "$.open_until_utc", "TimestampGreaterThanPath": "$.clock.at", "Next": "Later"}]},
        "Later": {"Type": "Succeed"}, "Earlier": {"Type": "Succeed"}}}
    sfn = cloud.client("stepfunctions")
    arn = sfn.create_state_machine(name=f"timestamps-{uuid.uuid4().hex[:6]}", definition=json.dumps(definition),
                                   roleArn=f"arn:aws:iam::{cloud.account_id}:role/any")["stateMachineArn"]
    if not patched:
        patches.remove("rfc3339_timestamps_in_choice")
    try:
        # WHEN it runs
        execution = sfn.start_execution(stateMachineArn=arn, name="run", input=json.dumps({"open_until_utc": later}))
        while (description := sfn.describe_execution(executionArn=execution["executionArn"]))["status"] == "RUNNING":
            time.sleep(0.05)
    finally:
        patches.apply("rfc3339_timestamps_in_choice")
    history = sfn.get_execution_history(executionArn=execution["executionArn"])["events"]
    entered = [e["stateEnteredEventDetails"]["name"] for e in history if "stateEnteredEventDetails" in e]
    # THEN only with the patch does it see the later timestamp as later: moto alone reads it as no timestamp,
    # so an open breaker would never park an order
    assert (description["status"], entered[-1]) == ("SUCCEEDED", "Later" if patched else "Earlier")


def test_the_order_placed_rule_takes_the_events_the_starter_is_given(cloud, payments):
    # GIVEN the deployed rule that targets the starter
    events = cloud.client("events")
    (rule,) = [r for r in events.list_rules()["Rules"] if "OrderPlacedRule" in r["Name"]]
    (target,) = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
    assert target["Arn"].endswith(f":function:{payments['starter_name']}")
    assert json.loads(rule["EventPattern"]) == {"source": [ORDER_EVENT_SOURCE],
                                                "detail-type": [ORDER_PLACED_DETAIL_TYPE]}
    # THEN its pattern matches the event the tests hand the starter, and not another detail type. (moto's
    # TestEventPattern API answers nothing, so the matcher its PutEvents uses decides.)
    from moto.events.models import EventPattern

    pattern = EventPattern.load(rule["EventPattern"])
    event = order_placed_event(payment_orders(1)[0])
    assert pattern.matches_event(event)
    assert not pattern.matches_event({**event, "detail-type": "OrderShipped"})


# -- use case 2 ------------------------------------------------------------------------------------------


def test_thirty_orders_at_once_are_all_paid_without_a_single_429(cloud, payments, gateway, skus):
    # GIVEN 30 orders placed at once: 15 times what the gateway admits in a second
    orders = payment_orders(30, skus=skus)
    # WHEN each order's event reaches the starter
    results = run_orders(cloud, payments, orders)
    # THEN every one of the 30 orders is paid, with the gateway's authorization id on the order
    assert {r.status for r in results.values()} == {"SUCCEEDED"}, [(r.name, r.error, r.cause) for r in results.values()
                                                                   if r.status != "SUCCEEDED"]
    table = orders_table(cloud, payments, orders)
    for order in orders:
        output = results[order["order_id"]].output
        assert output["status"] == "paid"
        assert table[order["order_id"]]["status"] == "paid"
        assert table[order["order_id"]]["authorization_id"] == output["authorization_id"]
    # AND the gateway authorized each order exactly once, never had to answer 429, and never saw more
    # in any 1 s window than its limit plus its burst: the limiter held the rate across all executions
    assert authorizations_by_order(gateway) == Counter({o["order_id"]: 1 for o in orders})
    stats = gateway.stats()
    assert 429 not in stats["by_status"], stats
    assert stats["total_requests"] == 30, stats
    assert stats["max_in_1s_window_all"] <= GATEWAY_LIMIT_PER_SEC + GATEWAY_BURST, stats
    # AND the stock went down by exactly what was ordered
    ordered = Counter()
    for order in orders:
        ordered[order["items"][0]["sku"]] += order["items"][0]["quantity"]
    assert read_stock(cloud, payments["inventory_table"], skus) == {sku: STOCK - ordered[sku] for sku in skus}


def test_duplicated_orders_and_retried_authorizations_charge_each_order_once(cloud, payments, gateway, skus):
    # GIVEN 10 orders whose events arrive twice (EventBridge delivers at least once)
    orders = payment_orders(10, skus=skus)
    first = start_payments(cloud, payments["starter_name"], orders)
    second = start_payments(cloud, payments["starter_name"], orders)
    # THEN each second start is refused, or (same name and input while the first runs, as on AWS) it is the first
    for one, two in zip(first, second, strict=True):
        assert one["status"] == "started"
        assert two["status"] == "duplicate" or two.get("execution_arn") == one["execution_arn"], (one, two)
    # WHEN, while the workflows run, the authorizer is also invoked directly for every order, as a caller
    # retrying after a timeout would (and, like any caller, retrying Lambda's own 429 while the
    # authorizer's reserved environments are all busy with the workflows), and once more after they all ended
    lambda_client = cloud.client("lambda", config=Config(retries={"mode": "standard", "max_attempts": 20}))

    def authorize(order: dict[str, Any]) -> dict[str, Any]:
        response = lambda_client.invoke(FunctionName=payments["authorizer_name"], Payload=json.dumps(order))
        return json.loads(response["Payload"].read())

    with ThreadPoolExecutor(max_workers=3) as pool:
        during = list(pool.map(authorize, orders))
    results = wait_for_executions(cloud, payments["state_machine_arn"],
                                  [payment_execution_name(o["order_id"]) for o in orders], timeout_sec=90)
    after = [authorize(order) for order in orders]
    late = start_payments(cloud, payments["starter_name"], orders)  # a third delivery, after the workflows ended
    # THEN a delivery after the workflow ended is always refused, one execution per order ran, and every order is paid
    assert {answer["status"] for answer in late} == {"duplicate"}
    sfn = cloud.client("stepfunctions")
    names = [e["name"] for e in sfn.list_executions(stateMachineArn=payments["state_machine_arn"],
                                                    maxResults=1000)["executions"]]
    assert all(names.count(payment_execution_name(o["order_id"])) == 1 for o in orders)
    assert {r.status for r in results.values()} == {"SUCCEEDED"}, [(r.name, r.error, r.cause) for r in results.values()]
    table = orders_table(cloud, payments, orders)
    assert {item["status"] for item in table.values()} == {"paid"}
    # AND the direct calls got either the workflow's answer, or a retryable refusal (in progress, rate limited),
    # never a second authorization; afterwards every one gets the order's recorded answer
    for order, answer in zip(orders, during, strict=True):
        if "errorType" in answer:
            assert answer["errorType"] in {"IdempotencyAlreadyInProgressError", "RateLimited"}, answer
        else:
            assert answer["authorization_id"] == table[order["order_id"]]["authorization_id"]
    assert [a["authorization_id"] for a in after] == [table[o["order_id"]]["authorization_id"] for o in orders]
    # AND, counted at the gateway: exactly one authorization per order, zero double charges
    assert authorizations_by_order(gateway) == Counter({o["order_id"]: 1 for o in orders})


def test_an_open_breaker_parks_orders_and_a_closed_one_lets_them_through(
    cloud, payments, gateway, skus, breaker, parked_queue
):
    # GIVEN the gateway's breaker forced open, as its alarm would
    breaker.force_open(BREAKER, reason="gateway failing", duration_sec=120)
    parked_orders = payment_orders(3, skus=skus)
    # WHEN 3 orders are placed
    parked = run_orders(cloud, payments, parked_orders)
    # THEN all 3 are parked, which is a success: queued with their order, marked parked, and the gateway saw nothing
    assert {r.status for r in parked.values()} == {"SUCCEEDED"}
    assert {r.output["status"] for r in parked.values()} == {"parked"}
    queued = drain_queue(cloud, parked_queue)
    assert sorted(m["order_id"] for m in queued) == sorted(o["order_id"] for o in parked_orders)
    assert all(m["reason"] == "circuit_breaker_open" and m["items"] for m in queued)
    assert {item["status"] for item in orders_table(cloud, payments, parked_orders).values()} == {"parked"}
    assert gateway.requests == []
    # WHEN the breaker closes (no item is a closed breaker) and 3 more orders are placed
    cloud.client("dynamodb").delete_item(TableName=payments["breaker_table"], Key={"pk": {"S": BREAKER}})
    through_orders = payment_orders(3, skus=skus)
    through = run_orders(cloud, payments, through_orders)
    # THEN those 3 are paid, one authorization each, and nothing more is parked
    assert {r.output["status"] for r in through.values()} == {"paid"}
    assert authorizations_by_order(gateway) == Counter({o["order_id"]: 1 for o in through_orders})
    assert drain_queue(cloud, parked_queue) == []


def test_a_breaker_that_refuses_at_the_authorizer_parks_the_order_too(cloud, payments, gateway, skus, breaker,
                                                                     parked_queue):
    # GIVEN a half-open breaker whose single probe another caller holds: not "open", so the workflow's
    # own read lets the order through, but the authorizer's breaker refuses it
    from throttling.core.circuit_breaker import BreakerState, BreakerStatus

    now = time.time()
    state = BreakerState(status=BreakerStatus.HALF_OPEN, version=7, opened_at=now - 60, open_until=now - 30,
                         reason="probing", probe_owner="another-caller", probe_expires_at=now + 120)
    item = {"pk": {"S": BREAKER}, **{k: {"S": v} if isinstance(v, str) else {"N": str(v)}
                                      for k, v in state.to_item().items()}}
    cloud.client("dynamodb").put_item(TableName=payments["breaker_table"], Item=item)
    order = payment_orders(1, skus=skus)
    # WHEN the order is placed
    (result,) = run_orders(cloud, payments, order).values()
    # THEN the authorizer's BreakerOpen parks it like an open breaker does, and the gateway saw nothing
    assert (result.status, result.output["status"]) == ("SUCCEEDED", "parked")
    assert [m["order_id"] for m in drain_queue(cloud, parked_queue)] == [order[0]["order_id"]]
    assert gateway.requests == []


def test_a_declined_card_cancels_the_order_keeps_the_stock_and_tells_the_customer(
    cloud, payments, gateway, skus, notifications
):
    # GIVEN an order for an amount the sandbox gateway declines
    (order,) = payment_orders(1, skus=skus)
    order["amount"] = DECLINED_TEST_AMOUNT
    # WHEN it is placed
    (result,) = run_orders(cloud, payments, [order]).values()
    # THEN the workflow ends in the named Fail PaymentDeclined, after the compensation:
    assert (result.status, result.error) == ("FAILED", "PaymentDeclined"), (result.error, result.cause)
    # the order is cancelled with the gateway's reason,
    item = orders_table(cloud, payments, [order])[order["order_id"]]
    assert (item["status"], item["failure"], item["cancel_reason"]) == ("cancelled", "PaymentDeclined",
                                                                        "processor_declined")
    assert "authorization_id" not in item
    # no stock was taken, the gateway was asked once and nothing was voided,
    assert read_stock(cloud, payments["inventory_table"], skus) == {sku: STOCK for sku in skus}
    assert [(r.method, r.path) for r in gateway.requests] == [("POST", "/authorize")]
    # and the customer was told
    (notice,) = drain_queue(cloud, notifications)
    assert notice == {"event": "OrderCancelled", "order_id": order["order_id"], "customer_id": order["customer_id"],
                      "failure": "PaymentDeclined", "reason": "processor_declined"}


def test_an_order_out_of_stock_after_authorization_is_voided_given_back_and_cancelled(
    cloud, payments, gateway, skus, notifications
):
    # GIVEN an order for one unit of a SKU in stock and one of a SKU sold out
    sold_out = f"sku-{uuid.uuid4().hex[:8]}"
    seed_inventory(cloud, payments["inventory_table"], {sold_out: 0})
    (order,) = payment_orders(1, skus=skus)
    order["items"] = [{"sku": skus[0], "quantity": 1}, {"sku": sold_out, "quantity": 1}]
    # WHEN it is placed
    (result,) = run_orders(cloud, payments, [order]).values()
    # THEN it ends in OutOfStock after the compensation: the unit taken is back, nothing went below zero,
    assert (result.status, result.error) == ("FAILED", "OutOfStock"), (result.error, result.cause)
    assert read_stock(cloud, payments["inventory_table"], [skus[0], sold_out]) == {skus[0]: STOCK, sold_out: 0}
    # the authorization was voided at the gateway (through the same limiter),
    authorize, void = gateway.requests
    assert (authorize.path, void.path) == ("/authorize", "/void")
    assert void.body == {"order_id": order["order_id"], "authorization_id": authorize.request_id}
    assert void.headers["Idempotency-Key"] == f"void-{order['order_id']}"
    # the order is cancelled and the customer told
    item = orders_table(cloud, payments, [order])[order["order_id"]]
    assert (item["status"], item["failure"], item["cancel_reason"]) == ("cancelled", "OutOfStock", "out_of_stock")
    assert [n["failure"] for n in drain_queue(cloud, notifications)] == ["OutOfStock"]


def test_the_demo_line(cloud, deployed, fresh_simulators):
    line = run_payments(cloud, deployed, fresh_simulators, orders=6, declined=1, parked=2)
    assert line.startswith(
        "payments: 6 orders, 5 paid, 1 declined (2 parked while the breaker was open, 2 resumed once it closed), peak "), line
    assert line.endswith(" in a 1 s window at the gateway (its 2/s bucket with burst 2 allows 4), 0 answered 429"), line
    assert int(line.split("peak ")[1].split(" ")[0]) <= GATEWAY_LIMIT_PER_SEC + GATEWAY_BURST
