"""Use case 2, parked orders: resumed once the gateway's breaker lets calls through, and charged exactly once.

The deployed payment workflow parks an order while the breaker is open; the deployed resumer
(`handlers.resume_parked_orders`, started here as its minute schedule would start it) reads the
breaker, takes the parked messages back and starts one resumption per park episode. The gateway
simulator records every `POST /authorize` with its Idempotency-Key: it is the referee of "charged
once". Each test says what becomes of every message it queues.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from localcloud import moto_patches
from localcloud.demo_workflows import (
    discard_messages,
    drain_queue,
    payment_execution_name,
    payment_orders,
    payment_outputs,
    queue_depth,
    record_statuses,
    resume_parked_orders,
    seed_inventory,
    start_payments,
    wait_for_executions,
)

pytestmark = pytest.mark.emulator

BREAKER = "payment_gateway"


@pytest.fixture(scope="module")
def payments(deployed) -> dict[str, str]:
    return payment_outputs(deployed)


@pytest.fixture
def gateway(fresh_simulators):
    return fresh_simulators["payment_gateway"]


@pytest.fixture
def skus(cloud, payments) -> list[str]:
    names = [f"sku-{uuid.uuid4().hex[:8]}"]
    seed_inventory(cloud, payments["inventory_table"], {name: 100 for name in names})
    return names


@pytest.fixture
def breaker(cloud, payments) -> Iterator[Any]:
    """The gateway's breaker as an alarm or an operator moves it; closed again (its item deleted) afterwards."""
    from throttling.circuit_breaker import BreakerPolicy
    from throttling.dynamodb_limits import DynamoDbCircuitBreaker

    dynamodb = cloud.client("dynamodb")
    dynamodb.delete_item(TableName=payments["breaker_table"], Key={"pk": {"S": BREAKER}})
    yield DynamoDbCircuitBreaker(payments["breaker_table"], client=dynamodb, policy=BreakerPolicy())
    dynamodb.delete_item(TableName=payments["breaker_table"], Key={"pk": {"S": BREAKER}})
    # Warm authorizers remember an open breaker until its open_until; start them afresh, as a redeploy would.
    cloud.lambda_runtime.shutdown()


@pytest.fixture
def queues(cloud, payments) -> Iterator[tuple[str, str]]:
    """The parked-orders queue and its dead-letter queue, empty before and after the test."""
    urls = payments["parked_queue_url"], payments["parked_dlq_url"]
    for url in urls:
        discard_messages(cloud, url)
    yield urls
    for url in urls:
        discard_messages(cloud, url)


def close(cloud, payments) -> None:
    """An operator's force-close: no item is a closed breaker."""
    cloud.client("dynamodb").delete_item(TableName=payments["breaker_table"], Key={"pk": {"S": BREAKER}})


def park(cloud, payments, breaker, orders: list[dict[str, Any]]) -> list[str]:
    """Place the orders while the breaker is open; every one ends parked. The parked messages' bodies, as queued."""
    breaker.force_open(BREAKER, reason="gateway failing", duration_sec=300)
    start_payments(cloud, payments["starter_name"], orders)
    results = wait_for_executions(cloud, payments["state_machine_arn"],
                                  [payment_execution_name(o["order_id"]) for o in orders], timeout_sec=60)
    assert {(r.status, r.output["status"]) for r in results.values()} == {("SUCCEEDED", "parked")}
    return peek_bodies(cloud, payments["parked_queue_url"])


def peek_bodies(cloud, queue_url: str) -> list[str]:
    """The bodies of the visible messages, made visible again at once (the receives are counted, as on AWS)."""
    sqs = cloud.client("sqs")
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0)["Messages"]
    return [m["Body"] for m in messages]


def executions_of(cloud, payments, order_id: str) -> list[str]:
    sfn = cloud.client("stepfunctions")
    return sorted(e["name"] for page in sfn.get_paginator("list_executions").paginate(
        stateMachineArn=payments["state_machine_arn"]) for e in page["executions"] if e["name"].endswith(order_id))


def authorizations(gateway) -> Counter:
    """Order id -> `POST /authorize` requests the gateway accepted for it (their Idempotency-Key)."""
    return Counter(r.headers.get("Idempotency-Key") for r in gateway.requests
                   if r.method == "POST" and r.path == "/authorize" and 200 <= r.status < 300)


def resumer_logs(cloud, payments, order_id: str) -> list[dict[str, Any]]:
    """The resumer's JSON log lines about one order (its id is their correlation id), in order."""
    lines = cloud.lambda_runtime.log_path(payments["resumer_name"]).read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{") and '"_aws"' not in line]
    return [r for r in records if r.get("correlation_id") == order_id]


def emitted_metrics(cloud, payments) -> Counter:
    """Sum of each metric the resumer emitted since the module deployed (Powertools' embedded metric format)."""
    totals: Counter = Counter()
    log = cloud.lambda_runtime.log_path(payments["resumer_name"])
    for line in (log.read_text() if log.exists() else "").splitlines():
        if '"_aws"' in line:
            document = json.loads(line)
            for definition in document["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
                value = document[definition["Name"]]
                totals[definition["Name"]] += sum(value) if isinstance(value, list) else value
    return totals


def order_of(cloud, payments, order_id: str) -> dict[str, Any]:
    return record_statuses(cloud, payments["orders_table"], [order_id])[order_id]


# -- the emulator enforces the rule the resumption names live by ---------------------------------------------


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_an_execution_name_past_80_characters_is_refused_only_with_the_patch(cloud, payments, patched):
    # GIVEN a name Step Functions refuses: the resumption `r10-<id>` of a 74-character order id, 81 characters
    name = "r10-" + "x" * 77
    sfn = cloud.client("stepfunctions")
    if not patched:
        moto_patches.remove_execution_name_rules()
    try:
        # WHEN an execution is started under it
        try:
            sfn.start_execution(stateMachineArn=payments["state_machine_arn"], name=name, input="{}")
            refused = None
        except sfn.exceptions.ClientError as error:
            refused = error.response["Error"]["Code"]
    finally:
        moto_patches.apply_execution_name_rules()
    # THEN only with the patch is it refused, with AWS's error; moto alone would run it
    assert refused == ("ValidationException" if patched else None)
    with pytest.raises(sfn.exceptions.InvalidName):
        sfn.start_execution(stateMachineArn=payments["state_machine_arn"], name="has space", input="{}")


# -- use case 2: parked, then resumed ---------------------------------------------------------------------


def test_a_parked_order_waits_out_the_open_breaker_and_is_paid_exactly_once_after_it_closes(
    cloud, payments, gateway, skus, breaker, queues
):
    parked_queue, _ = queues
    metrics_before = emitted_metrics(cloud, payments)
    # GIVEN an order parked while the gateway's breaker is open, and a copy of its parked message (SQS
    # delivers at least once)
    (order,) = payment_orders(1, skus=skus)
    order_id = order["order_id"]
    (body,) = park(cloud, payments, breaker, [order])
    cloud.client("sqs").send_message(QueueUrl=parked_queue, MessageBody=body)
    assert order_of(cloud, payments, order_id)["status"] == "parked"
    # WHEN the resumer runs while the breaker stays open
    held = resume_parked_orders(cloud, payments["resumer_name"])
    # THEN it receives nothing: both messages wait, and the gateway saw nothing
    assert held == {"breaker": "open", "allowed": 0, "received": 0, "resumed": 0, "dropped": 0, "waiting": 0,
                    "dead_lettered": 0}
    assert queue_depth(cloud, parked_queue) == 2
    assert gateway.requests == []
    # WHEN the breaker closes and the resumer runs
    close(cloud, payments)
    run = resume_parked_orders(cloud, payments["resumer_name"])
    # THEN one message resumes the order and its copy is dropped: the copy names the same resumption
    assert (run["breaker"], run["received"], run["resumed"], run["dropped"]) == ("closed", 2, 1, 0 + 1)
    assert queue_depth(cloud, parked_queue) == 0
    results = wait_for_executions(cloud, payments["state_machine_arn"], [f"r1-{order_id}"], timeout_sec=60)
    # AND the resumption pays the order: one execution per episode, one authorization at the gateway
    assert results[f"r1-{order_id}"].output["status"] == "paid", results
    assert executions_of(cloud, payments, order_id) == [f"order-{order_id}", f"r1-{order_id}"]
    item = order_of(cloud, payments, order_id)
    assert (item["status"], item["execution"]) == ("paid", f"r1-{order_id}")
    assert authorizations(gateway) == Counter({order_id: 1})
    # WHEN a late copy of the parked message arrives and the resumer runs again
    cloud.client("sqs").send_message(QueueUrl=parked_queue, MessageBody=body)
    late = resume_parked_orders(cloud, payments["resumer_name"])
    # THEN it is dropped: the order is paid; nothing starts and nothing is charged again
    assert (late["received"], late["resumed"], late["dropped"]) == (1, 0, 1)
    assert executions_of(cloud, payments, order_id) == [f"order-{order_id}", f"r1-{order_id}"]
    assert authorizations(gateway) == Counter({order_id: 1})
    assert queue_depth(cloud, parked_queue) == 0
    # AND each step is in the resumer's logs under the order id: the resumption, the copy and the late copy. The
    # original message was received twice (the peek above, then the run), the copy once: no receive was spent
    # while the breaker was open
    logged = [(r["message"], r.get("reason"), r.get("receive_count"))
              for r in resumer_logs(cloud, payments, order_id)]
    assert logged[0] == ("parked order resumed", "parked", 2), logged
    assert logged[1][0].startswith("parked message dropped") and logged[1][2] == 1, logged
    assert logged[2] == ("parked message dropped: nothing to resume", "already_paid", 1), logged
    assert len(logged) == 3, logged
    # AND the three runs' metrics say the same: held by the breaker once, one resumed, two dropped
    assert emitted_metrics(cloud, payments) - metrics_before == Counter({"ParkedOrdersHeldByBreaker": 1, "ParkedOrdersResumed": 1,
                                                        "ParkedOrdersDropped": 2})
