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

from localcloud.emulator import patches
from localcloud.drivers.common import discard_messages, queue_depth, record_statuses, wait_for_executions
from localcloud.drivers.payments import (
    payment_execution_name,
    payment_orders,
    resume_parked_orders,
    seed_inventory,
    start_payments,
)

pytestmark = pytest.mark.emulator

BREAKER = "payment_gateway"


@pytest.fixture
def skus(cloud, payments) -> list[str]:
    names = [f"sku-{uuid.uuid4().hex[:8]}"]
    seed_inventory(cloud, payments["inventory_table"], {name: 100 for name in names})
    return names



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
        patches.remove("execution_name_rules")
    try:
        # WHEN an execution is started under it
        try:
            sfn.start_execution(stateMachineArn=payments["state_machine_arn"], name=name, input="{}")
            refused = None
        except sfn.exceptions.ClientError as error:
            refused = error.response["Error"]["Code"]
    finally:
        patches.apply("execution_name_rules")
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
                    "dead_lettered": 0, "failed": 0}
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
    assert emitted_metrics(cloud, payments) - metrics_before == Counter(
        {"ParkedOrdersHeldByBreaker": 1, "ParkedOrdersResumed": 1, "ParkedOrdersDropped": 2})


def test_an_order_its_workflow_could_not_mark_parked_is_resumed_once_that_workflow_ended(
    cloud, payments, gateway, skus, breaker, queues
):
    parked_queue, _ = queues
    # GIVEN an order parked while the orders table refuses every write that marks an order parked: its message
    # is queued, but the order stays pending under the execution that parked it
    (order,) = payment_orders(1, skus=skus)
    order_id = order["order_id"]

    def marks_parked(parameters) -> bool:
        return (parameters.get("TableName") == payments["orders_table"]
                and ":parked" in parameters.get("ExpressionAttributeValues", {}))

    with cloud.faults.inject("dynamodb", "UpdateItem", code="ProvisionedThroughputExceededException",
                             matches=marks_parked):
        park(cloud, payments, breaker, [order])
    item = order_of(cloud, payments, order_id)
    assert (item["status"], item["execution"]) == ("pending", f"order-{order_id}")
    # WHEN the breaker closes and the resumer runs
    close(cloud, payments)
    run = resume_parked_orders(cloud, payments["resumer_name"])
    # THEN the parker has ended, so its mark will never land: the order is resumed all the same, and paid once
    assert (run["received"], run["resumed"]) == (1, 1), run
    result = wait_for_executions(cloud, payments["state_machine_arn"], [f"r1-{order_id}"], timeout_sec=60)
    assert result[f"r1-{order_id}"].output["status"] == "paid"
    assert order_of(cloud, payments, order_id)["status"] == "paid"
    assert authorizations(gateway) == Counter({order_id: 1})
    assert queue_depth(cloud, parked_queue) == 0
    (resumed,) = [r for r in resumer_logs(cloud, payments, order_id) if r["message"] == "parked order resumed"]
    assert resumed["reason"] == "parker_ended_before_marking_it_parked"


def test_what_cannot_be_resumed_goes_to_the_dead_letter_queue_with_its_reason_and_a_paid_order_is_dropped(
    cloud, payments, gateway, skus, breaker, queues
):
    parked_queue, dead_letters = queues
    # GIVEN an order paid with the breaker closed, then three messages: a copy of the paid order's parked message
    # (as a retried ParkOrder could leave), one for an order the orders table does not know, and one that is not JSON
    (paid,) = payment_orders(1, skus=skus)
    start_payments(cloud, payments["starter_name"], [paid])
    wait_for_executions(cloud, payments["state_machine_arn"], [payment_execution_name(paid["order_id"])],
                        timeout_sec=60)
    (unknown,) = payment_orders(1, skus=skus)

    def parked_message(order: dict[str, Any]) -> str:
        return json.dumps({**order, "reason": "circuit_breaker_open", "execution": f"order-{order['order_id']}",
                           "parked_at": "2026-12-01T10:00:00.000Z"})

    sqs = cloud.client("sqs")
    for body in (parked_message(paid), parked_message(unknown), "not json"):
        sqs.send_message(QueueUrl=parked_queue, MessageBody=body)
    # WHEN the resumer runs with the breaker closed
    run = resume_parked_orders(cloud, payments["resumer_name"])
    # THEN the paid order's message is dropped, and the two others are in the dead-letter queue, each as it came
    # with its reason; nothing was started or charged, and the parked-orders queue is empty
    assert (run["received"], run["resumed"], run["dropped"], run["dead_lettered"]) == (3, 0, 1, 2), run
    messages = sqs.receive_message(QueueUrl=dead_letters, MaxNumberOfMessages=10,
                                   MessageAttributeNames=["All"])["Messages"]
    for message in messages:
        sqs.delete_message(QueueUrl=dead_letters, ReceiptHandle=message["ReceiptHandle"])
    errors = {m["Body"]: m["MessageAttributes"]["error"]["StringValue"] for m in messages}
    assert errors[parked_message(unknown)] == "no automatic resumption: unknown_order"
    assert errors["not json"].startswith("the body is not JSON")
    assert len(errors) == 2
    assert queue_depth(cloud, parked_queue) == 0
    assert executions_of(cloud, payments, paid["order_id"]) == [f"order-{paid['order_id']}"]
    assert executions_of(cloud, payments, unknown["order_id"]) == []
    assert authorizations(gateway) == Counter({paid["order_id"]: 1})


def test_a_breaker_due_a_probe_with_nobody_calling_gets_one_resumed_order_as_its_probe(
    cloud, payments, gateway, skus, breaker, queues
):
    from throttling.core.circuit_breaker import BreakerState, BreakerStatus

    parked_queue, _ = queues
    # GIVEN two parked orders, and a breaker whose opening has run out (open past open_until) with no new order to
    # probe it: only an authorization can close it
    orders = payment_orders(2, skus=skus)
    park(cloud, payments, breaker, orders)
    now = time.time()
    lapsed = BreakerState(status=BreakerStatus.OPEN, version=7, opened_at=now - 60, open_until=now - 1,
                          reason="forced: gateway failing")
    cloud.client("dynamodb").put_item(TableName=payments["breaker_table"], Item={
        "pk": {"S": BREAKER},
        **{k: {"S": v} if isinstance(v, str) else {"N": str(v)} for k, v in lapsed.to_item().items()}})
    # WHEN the resumer runs
    probe = resume_parked_orders(cloud, payments["resumer_name"])
    # THEN it resumes exactly one order, whose authorization is the probe; the other waits
    assert (probe["breaker"], probe["allowed"], probe["received"], probe["resumed"]) == ("due_a_probe", 1, 1, 1)
    assert queue_depth(cloud, parked_queue) == 1
    (first,) = [o["order_id"] for o in orders if executions_of(cloud, payments, o["order_id"])[-1].startswith("r1-")]
    wait_for_executions(cloud, payments["state_machine_arn"], [f"r1-{first}"], timeout_sec=60)
    # AND the probe succeeded, so the breaker closed, and the next run resumes the other order
    assert breaker.state(BREAKER).status is BreakerStatus.CLOSED
    rest = resume_parked_orders(cloud, payments["resumer_name"])
    assert (rest["breaker"], rest["resumed"]) == ("closed", 1)
    wait_for_executions(cloud, payments["state_machine_arn"], [f"r1-{o['order_id']}" for o in orders], timeout_sec=60)
    assert {o["order_id"]: order_of(cloud, payments, o["order_id"])["status"] for o in orders} == {
        o["order_id"]: "paid" for o in orders}
    assert authorizations(gateway) == Counter({o["order_id"]: 1 for o in orders})


def test_a_parked_order_is_taken_up_only_by_the_resumption_it_was_claimed_for(
    cloud, payments, gateway, skus, breaker, queues
):
    # GIVEN a parked order, and the breaker closed
    (order,) = payment_orders(1, skus=skus)
    order_id = order["order_id"]
    park(cloud, payments, breaker, [order])
    close(cloud, payments)
    # WHEN an execution is started for it under a name the resumer did not claim it for (an operator, a stale copy)
    sfn = cloud.client("stepfunctions")
    sfn.start_execution(stateMachineArn=payments["state_machine_arn"], name=f"r2-{order_id}", input=json.dumps(order))
    stray = wait_for_executions(cloud, payments["state_machine_arn"], [f"r2-{order_id}"], timeout_sec=60)
    # THEN the workflow refuses to take the order up: nothing is charged and the order is still parked
    assert (stray[f"r2-{order_id}"].status, stray[f"r2-{order_id}"].error) == ("FAILED", "DuplicateOrder")
    assert order_of(cloud, payments, order_id)["status"] == "parked"
    assert gateway.requests == []
    # AND the resumer still resumes it, once, under its episode's name
    assert resume_parked_orders(cloud, payments["resumer_name"])["resumed"] == 1
    result = wait_for_executions(cloud, payments["state_machine_arn"], [f"r1-{order_id}"], timeout_sec=60)
    assert result[f"r1-{order_id}"].output["status"] == "paid"
    assert authorizations(gateway) == Counter({order_id: 1})


def test_a_parked_order_whose_authorization_went_unanswered_days_ago_is_cancelled_not_authorized_again(
    cloud, payments, gateway, skus, breaker, queues
):
    from dataclasses import replace

    # GIVEN an order whose authorization the gateway answered with a 500: it may have authorized it
    (order,) = payment_orders(1, skus=skus)
    order_id = order["order_id"]
    gateway.set_profile(replace(gateway.profile, error_rate_5xx=1.0))
    response = cloud.client("lambda").invoke(FunctionName=payments["authorizer_name"], Payload=json.dumps(order))
    assert json.loads(response["Payload"].read())["errorType"] == "DownstreamUnavailable"
    gateway.reset()
    # THEN the authorizer noted when, beside its idempotency records
    dynamodb = cloud.client("dynamodb")
    key = {"id": {"S": f"authorize_payment.unanswered#{order_id}"}}
    note = dynamodb.get_item(TableName=payments["idempotency_table"], Key=key)["Item"]
    noted = float(note["first_unanswered_at"]["N"])
    assert abs(noted - time.time()) < 60
    # GIVEN the order was then parked, and the breaker stayed open two days: longer than the gateway keeps its key
    park(cloud, payments, breaker, [order])
    dynamodb.update_item(TableName=payments["idempotency_table"], Key=key,
                         UpdateExpression="SET first_unanswered_at = :then",
                         ExpressionAttributeValues={":then": {"N": str(noted - 2 * 86_400)}})
    # WHEN the breaker closes and the resumer runs
    close(cloud, payments)
    assert resume_parked_orders(cloud, payments["resumer_name"])["resumed"] == 1
    result = wait_for_executions(cloud, payments["state_machine_arn"], [f"r1-{order_id}"], timeout_sec=60)
    # THEN the resumption is cancelled instead of sending a second authorization the gateway may not recognise:
    # the gateway saw nothing, and the order says why (an authorization made two days ago lapses uncaptured)
    assert (result[f"r1-{order_id}"].status, result[f"r1-{order_id}"].error) == ("FAILED", "PaymentFailed")
    item = order_of(cloud, payments, order_id)
    assert (item["status"], item["cancel_reason"]) == ("cancelled", "AuthorizationOutcomeUnknown")
    assert gateway.requests == []


def test_a_run_that_cannot_start_a_resumption_fails_loudly_and_loses_nothing(
    cloud, payments, gateway, skus, breaker, queues
):
    parked_queue, dead_letters = queues
    # GIVEN a parked order, the breaker closed, and Step Functions refusing every StartExecution (throttled)
    (order,) = payment_orders(1, skus=skus)
    order_id = order["order_id"]
    park(cloud, payments, breaker, [order])
    close(cloud, payments)
    metrics_before = emitted_metrics(cloud, payments)
    # WHEN the resumer runs
    with cloud.faults.inject("states", "StartExecution", code="ThrottlingException", message="Rate exceeded"):
        with pytest.raises(RuntimeError, match="ThrottlingException"):
            resume_parked_orders(cloud, payments["resumer_name"])
    # THEN the run is an errored invocation that still counted the failure, and nothing is lost: the message is
    # still in the queue (back after its visibility timeout), not in the dead-letter queue, and the order is
    # parked, claimed for its resumption, with nothing started or charged
    assert emitted_metrics(cloud, payments) - metrics_before == Counter({"ParkedOrdersFailed": 1})
    assert (queue_depth(cloud, parked_queue), queue_depth(cloud, dead_letters)) == (1, 0)
    item = order_of(cloud, payments, order_id)
    assert (item["status"], item["resume_execution"]) == ("parked", f"r1-{order_id}")
    assert executions_of(cloud, payments, order_id) == [f"order-{order_id}"]
    assert gateway.requests == []
