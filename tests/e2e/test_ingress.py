"""The API's routes end to end: validated, rendered by their own mapping templates, and run on the emulator.

moto executes neither API Gateway's validation nor its mapping templates nor its AWS integrations,
so `localcloud.emulator.api_gateway.LocalRestApi` does those steps with the deployed API's own definition
(see its docstring). What runs behind it is real: the payment workflow from its ASL file with its
handlers against the gateway simulator, the legacy queue drained by its consumer into the
mainframe simulator. Each test says what becomes of every request it sends.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid

import pytest

from localcloud.demo import run_ingress
from localcloud.drivers.common import discard_messages, queue_depth, wait_for_executions
from localcloud.drivers.ingress import DEMO_CLIENT, api_key, local_api
from localcloud.drivers.legacy import legacy_outputs, wait_for_delivery
from localcloud.drivers.payments import payment_execution_name, payment_orders, seed_inventory
from throttling.core import names

pytestmark = pytest.mark.emulator



@pytest.fixture(scope="module")
def key(cloud, deployed) -> dict[str, str]:
    """The header of a client's real key: the emulated API knows keys by value, as API Gateway does."""
    return {"x-api-key": api_key(cloud, deployed)}


@pytest.fixture(scope="module")
def api(cloud, deployed):
    return local_api(cloud, deployed)


@pytest.fixture(scope="module")
def legacy(deployed) -> dict[str, str]:
    return legacy_outputs(deployed)


@pytest.fixture
def order(cloud, payments) -> dict:
    sku = f"sku-{uuid.uuid4().hex[:8]}"
    seed_inventory(cloud, payments["inventory_table"], {sku: 10})
    (placed,) = payment_orders(1, prefix=f"api-{uuid.uuid4().hex[:8]}", skus=(sku,))
    return placed


def executions_named(cloud, state_machine_arn: str, prefix: str) -> list[str]:
    sfn = cloud.client("stepfunctions")
    return [e["name"] for page in sfn.get_paginator("list_executions").paginate(stateMachineArn=state_machine_arn)
            for e in page["executions"] if e["name"].startswith(prefix)]


def test_a_payment_posted_runs_the_workflow_once_and_its_state_is_readable(key, cloud, api, payments, order,
                                                                         fresh_simulators):
    gateway = fresh_simulators["payment_gateway"]
    # WHEN a client posts an order
    accepted = api.request("POST", "/payments", body=order, headers=key)
    # THEN the gateway answers 202, having started the execution named after the order with the body as input
    assert accepted.status == 202, accepted.body
    assert accepted.json()["status"] == "accepted"
    name = payment_execution_name(order["order_id"])
    assert accepted.json()["execution_arn"].endswith(f":{name}")
    result = wait_for_executions(cloud, payments["state_machine_arn"], [name], timeout_sec=60)[name]
    assert (result.status, result.output["status"]) == ("SUCCEEDED", "paid")
    # AND GET /payments/{id} reports it paid, with its authorization
    state = api.request("GET", f"/payments/{order['order_id']}", headers=key)
    assert state.status == 200
    body = state.json()
    assert (body["order_id"], body["status"], body["currency"]) == (order["order_id"], "paid", "EUR")
    # AND the amount is the client's decimal string throughout, its trailing zeros kept: in the order's
    # state and in the one authorization the gateway saw (which takes money only as such a string)
    assert body["amount"] == order["amount"] == "10.00"
    assert body["authorization_id"] and body["cancel_reason"] is None
    # WHEN the client repeats the same request (a retry after a timeout, a double click)
    repeated = api.request("POST", "/payments", body=order, headers=key)
    # THEN it is told the payment was accepted before, and nothing starts twice or is charged twice
    assert (repeated.status, repeated.json()["status"]) == (200, "already_accepted")
    assert executions_named(cloud, payments["state_machine_arn"], name) == [name]
    authorizations = [r for r in gateway.requests
                      if r.path == "/authorize" and r.body.get("order_id") == order["order_id"] and r.status < 300]
    assert len(authorizations) == 1
    assert authorizations[0].body["amount"] == "10.00"


def test_a_repeat_while_the_payment_runs_is_answered_with_that_execution_and_starts_nothing(key, cloud, api, payments,
                                                                                          order, fresh_simulators):
    gateway = fresh_simulators["payment_gateway"]
    name = payment_execution_name(order["order_id"])
    # GIVEN a gateway that takes 6 s to answer (within the authorizer's 10 s timeout), so the payment
    # is still running when its client repeats the request
    usual = gateway.profile
    gateway.set_profile(usual.merged_with({"latency": {"kind": "fixed", "median_ms": 6000}}))
    try:
        first = api.request("POST", "/payments", body=order, headers=key)
        # WHEN the client repeats it at once (a retry after a timeout, a double click)
        repeat = api.request("POST", "/payments", body=order, headers=key)
        still_running = cloud.client("stepfunctions").describe_execution(
            executionArn=first.json()["execution_arn"])["status"] == "RUNNING"
        # THEN both are 202 naming the one execution: Step Functions answers the same name and the same
        # input (the same bytes) with the running execution
        assert still_running, "the premise failed: the first execution ended before the repeat was answered"
        assert (first.status, repeat.status) == (202, 202), repeat.body
        assert repeat.json()["execution_arn"] == first.json()["execution_arn"]
        result = wait_for_executions(cloud, payments["state_machine_arn"], [name], timeout_sec=60)[name]
    finally:
        gateway.set_profile(usual)
    assert (result.status, result.output["status"]) == ("SUCCEEDED", "paid")
    # AND a repeat after it ended is told it was accepted before
    late = api.request("POST", "/payments", body=order, headers=key)
    assert (late.status, late.json()["status"]) == (200, "already_accepted")
    # AND whatever the timing, one execution ran and the gateway authorized once
    assert executions_named(cloud, payments["state_machine_arn"], name) == [name]
    assert len([r for r in gateway.requests if r.path == "/authorize" and r.body.get("order_id") == order["order_id"]
                and r.status < 300]) == 1


@pytest.mark.parametrize(
    ("change", "expected_in_message"),
    [
        (lambda o: o.pop("amount"), "'amount' is a required property"),
        (lambda o: o.update(amount="10.005"), "amount: '10.005' does not match"),
        (lambda o: o.update(amount="0.00"), "amount: '0.00' does not match"),
        (lambda o: o.update(amount=19.99), "is not of type 'string'"),
        (lambda o: o.update(currency="euro"), "does not match '^[A-Z]{3}$'"),
        (lambda o: o.update(order_id="has space"), "does not match"),
        # ECMA-262's `$` (API Gateway's validator) matches only at the very end, unlike Python's re
        (lambda o: o.update(order_id=o["order_id"] + "\n"), "does not match '^[A-Za-z0-9_-]{1,74}$'"),
        (lambda o: o.update(currency="EUR\n"), "does not match '^[A-Z]{3}$'"),
        (lambda o: o["items"][0].update(quantity=0), "items/0/quantity"),
        (lambda o: o.update(items=[]), "items: [] should be non-empty"),
        (lambda o: o.update(coupon="FREE"), "Additional properties are not allowed ('coupon' was unexpected)"),
    ],
    ids=["no-amount", "three-decimals", "zero-amount", "amount-as-a-number", "bad-currency", "bad-order-id",
         "order-id-newline", "currency-newline", "zero-quantity",
         "no-items", "unknown-key"],
)
def test_a_malformed_payment_gets_400_with_the_reason_and_starts_nothing(key, cloud, api, payments, order, change,
                                                                        expected_in_message):
    calls_before = len(api.calls)
    change(order)
    refused = api.request("POST", "/payments", body=order, headers=key)
    assert refused.status == 400
    body = refused.json()
    assert body["type"] == "BAD_REQUEST_BODY"
    assert expected_in_message in body["validation_errors"]
    # Nothing reached Step Functions
    assert len(api.calls) == calls_before
    assert executions_named(cloud, payments["state_machine_arn"], payment_execution_name(order["order_id"])) == []


def test_what_is_not_json_or_not_keyed_is_refused_before_validation(key, api, order):
    assert api.request("POST", "/payments", body="{not json", headers=key).status == 400
    wrong_type = api.request("POST", "/payments", body="order_id=1",
                             headers={**key, "content-type": "application/x-www-form-urlencoded"})
    assert wrong_type.status == 415
    missing_key = api.request("POST", "/payments", body=order)
    assert missing_key.status == 403
    assert missing_key.json()["type"] == "INVALID_API_KEY"


def test_an_unknown_order_is_404_with_its_id(key, api):
    missing = api.request("GET", "/payments/no-such-order", headers=key)
    assert missing.status == 404
    assert missing.json()["order_id"] == "no-such-order"


def test_an_order_id_outside_the_basic_multilingual_plane_is_looked_up_under_its_own_key(key, cloud, api, payments):
    # GIVEN an order whose id holds an emoji and accents, written straight into the orders table (the
    # model refuses such ids at POST; this pins down which key GET reads, as API Gateway escapes it)
    order_id = f"emoji-\U0001F600-\u00e9-{uuid.uuid4().hex[:6]}"
    cloud.client("dynamodb").put_item(TableName=payments["orders_table"], Item={
        "pk": {"S": order_id}, "status": {"S": "paid"}, "currency": {"S": "EUR"},
        "created_at": {"S": "2026-12-01T00:00:00Z"}, "updated_at": {"S": "2026-12-01T00:00:01Z"}})
    # WHEN a client reads it, percent-encoding the id in the path as HTTP requires
    found = api.request("GET", f"/payments/{urllib.parse.quote(order_id, safe='')}", headers=key)
    # THEN the id reaches DynamoDB as the same string (escaped as UTF-16 surrogate pairs, which JSON
    # reads back as the emoji) and the order is found, its id intact in the answer
    assert found.status == 200, found.body
    assert (found.json()["order_id"], found.json()["status"]) == (order_id, "paid")
    assert "\\uD83D\\uDE00" in api.calls[-1].body


def test_a_stored_reason_with_an_apostrophe_or_quotes_is_read_back_as_valid_json(key, cloud, api, payments):
    # GIVEN a cancelled order whose reason holds an apostrophe, quotes, a backslash and a line break
    order_id = f"reason-{uuid.uuid4().hex[:8]}"
    reason = 'the card\'s issuer declined: "do not honor" \\ call\nthe bank'
    cloud.client("dynamodb").put_item(TableName=payments["orders_table"], Item={
        "pk": {"S": order_id}, "status": {"S": "cancelled"}, "cancel_reason": {"S": reason}, "currency": {"S": "EUR"},
        "created_at": {"S": "2026-12-01T00:00:00Z"}, "updated_at": {"S": "2026-12-01T00:00:01Z"}})
    # WHEN a client reads it, twice
    answers = [api.request("GET", f"/payments/{order_id}", headers=key) for _ in range(2)]
    # THEN each answer is JSON with the reason as stored
    for answer in answers:
        assert answer.status == 200, answer.body
        assert answer.json()["cancel_reason"] == reason


THROTTLED = "throttled"
# (error code AWS answers with HTTP 400, what the client must get): throttling is ours to absorb (503 with
# Retry-After), anything else is our mistake (500), and an order is never reported missing (404).
DYNAMODB_ERRORS = [("ProvisionedThroughputExceededException", THROTTLED), ("ThrottlingException", THROTTLED),
                   ("RequestLimitExceeded", THROTTLED), ("AccessDeniedException", 500), ("ValidationException", 500),
                   ("ResourceNotFoundException", 500)]


@pytest.mark.parametrize(("code", "expected"), DYNAMODB_ERRORS, ids=[code for code, _ in DYNAMODB_ERRORS])
def test_a_dynamodb_error_behind_get_is_never_a_missing_order(key, cloud, api, payments, code, expected):
    # GIVEN an order that exists
    order_id = f"exists-{uuid.uuid4().hex[:8]}"
    cloud.client("dynamodb").put_item(TableName=payments["orders_table"], Item={
        "pk": {"S": order_id}, "status": {"S": "paid"}, "currency": {"S": "EUR"}})
    # WHEN DynamoDB answers the route's GetItem with an error (HTTP 400, as it answers them all)
    with cloud.faults.inject("dynamodb", "GetItem", code=code, message="injected",
                             matches=lambda call: call.get("TableName") == payments["orders_table"]) as fault:
        answer = api.request("GET", f"/payments/{order_id}", headers=key)
    # THEN the client is told to come back (throttling) or that the fault is ours, never that there is no order
    assert fault.hits == 1
    assert answer.status != 404 and "order_id" not in answer.json()
    if expected == THROTTLED:
        assert (answer.status, answer.headers.get("Retry-After"), answer.json()["retry_after_sec"]) == (503, "1", 1)
    else:
        assert answer.status == expected and "Retry-After" not in answer.headers
    assert answer.json()["request_id"]
    # AND once DynamoDB answers again, the order is there
    assert api.request("GET", f"/payments/{order_id}", headers=key).json()["status"] == "paid"


STEP_FUNCTIONS_ERRORS = [("ThrottlingException", THROTTLED), ("ExecutionLimitExceeded", THROTTLED),
                         ("KmsThrottlingException", THROTTLED), ("AccessDeniedException", 500),
                         ("KmsAccessDeniedException", 500), ("InvalidExecutionInput", 500)]


@pytest.mark.parametrize(("code", "expected"), STEP_FUNCTIONS_ERRORS, ids=[code for code, _ in STEP_FUNCTIONS_ERRORS])
def test_a_step_functions_refusal_behind_post_starts_nothing_and_says_what_to_do(key, cloud, api, payments, order, code,
                                                                                expected):
    # WHEN Step Functions refuses the route's StartExecution
    with cloud.faults.inject("states", "StartExecution", code=code, times=1) as fault:
        answer = api.request("POST", "/payments", body=order, headers=key)
    # THEN the client is asked to retry after a pause (throttling, quotas) or told the fault is ours,
    # and nothing was started
    assert fault.hits == 1
    if expected == THROTTLED:
        assert (answer.status, answer.headers.get("Retry-After")) == (503, "1")
    else:
        assert answer.status == expected and "Retry-After" not in answer.headers
    assert executions_named(cloud, payments["state_machine_arn"], payment_execution_name(order["order_id"])) == []


SQS_ERRORS = [("RequestThrottled", THROTTLED), ("KmsThrottled", THROTTLED), ("KMS.ThrottlingException", THROTTLED),
              ("OverLimit", THROTTLED), ("InvalidMessageContents", 400), ("InvalidParameterValue", 400),
              ("KmsAccessDenied", 500), ("AWS.SimpleQueueService.NonExistentQueue", 500)]


@pytest.mark.parametrize(("code", "expected"), SQS_ERRORS, ids=[code for code, _ in SQS_ERRORS])
def test_an_sqs_refusal_behind_post_legacy_records_queues_nothing_and_says_why(key, cloud, api, legacy, code, expected):
    record = {"record_id": f"refused-{uuid.uuid4().hex[:8]}", "payload": {"account": "ACC00001"}}
    depth_before = queue_depth(cloud, legacy["queue_url"])
    # WHEN SQS refuses the route's SendMessage (query protocol: the code comes in an XML body)
    with cloud.faults.inject("sqs", "SendMessage", code=code, times=1) as fault:
        answer = api.request("POST", "/legacy-records", body=record, headers=key)
    # THEN a throttle is a 503 with Retry-After, contents SQS cannot carry a 400, anything else a 500;
    # never "is it larger than 1 MiB?" for a KMS or throttling error, and nothing is queued
    assert fault.hits == 1
    if expected == THROTTLED:
        assert (answer.status, answer.headers.get("Retry-After")) == (503, "1")
        assert "busy" in answer.json()["message"]
    else:
        assert answer.status == expected and "Retry-After" not in answer.headers
        assert ("1 MiB" in answer.json()["message"]) == (expected == 400)
    assert queue_depth(cloud, legacy["queue_url"]) == depth_before


def test_legacy_records_posted_are_queued_and_delivered_and_bad_ones_are_not_queued(key, cloud, api, legacy,
                                                                                    fresh_simulators):
    mainframe = fresh_simulators["legacy_mainframe"]
    discard_messages(cloud, legacy["dead_letter_queue_url"])
    records = [{"record_id": f"api-{uuid.uuid4().hex[:8]}-{i}", "payload": {"account": f"ACC{i:05d}",
                                                                              "note": "it's \"quoted\" / ünïcode"}}
               for i in range(3)]
    # WHEN a malformed record (no payload) and one with an unknown key are posted
    for bad in ({"record_id": "no-payload"}, {"record_id": "extra", "payload": {}, "priority": 1}):
        refused = api.request("POST", "/legacy-records", body=bad, headers=key)
        # THEN each gets 400 and nothing is queued
        assert refused.status == 400, refused.body
    assert queue_depth(cloud, legacy["queue_url"]) == 0
    # WHEN three records are posted
    request_ids = {}
    for record in records:
        queued = api.request("POST", "/legacy-records", body=record, headers=key)
        assert (queued.status, queued.json()["status"]) == (202, "queued")
        request_ids[record["record_id"]] = queued.json()["request_id"]
    # THEN the consumer delivers each to the mainframe with its payload intact, and none reach the DLQ
    ids = [r["record_id"] for r in records]
    statuses = wait_for_delivery(cloud, legacy["records_table"], ids, timeout_sec=30)
    assert {record_id: statuses[record_id]["status"] for record_id in ids} == dict.fromkeys(ids, "delivered")
    delivered = {r.body["record_id"]: r.body["payload"] for r in mainframe.requests if r.path == "/records"}
    assert {record_id: delivered[record_id] for record_id in ids} == {r["record_id"]: r["payload"] for r in records}
    assert queue_depth(cloud, legacy["dead_letter_queue_url"]) == 0
    # AND the API's request id reached the mainframe as each call's X-Correlation-Id: one id from the
    # client's request through the queue and the consumer's logs to the downstream
    correlation = {r.body["record_id"]: r.headers.get("X-Correlation-Id") for r in mainframe.requests
                   if r.path == "/records"}
    assert {record_id: correlation[record_id] for record_id in ids} == request_ids
    # AND each record was its client's: the API key's client is the record's tenant, from the queue's
    # message group to its status item
    assert {record_id: statuses[record_id]["tenant"] for record_id in ids} == dict.fromkeys(ids, DEMO_CLIENT)


def test_the_tenant_is_the_api_key_s_client_and_any_other_key_s_is_the_default_tenant(cloud, deployed, api, payments):
    apigateway = cloud.client("apigateway")
    # GIVEN the free tier's client, and a key an operator made in the console and put in the partner plan
    free_key = {"x-api-key": api_key(cloud, deployed, "example-free-client")}
    made_by_hand = apigateway.create_api_key(name=f"by-hand-{uuid.uuid4().hex[:6]}", enabled=True)
    (partner_plan,) = [p for p in apigateway.get_usage_plans()["items"] if p["name"].endswith("-partner")]
    apigateway.create_usage_plan_key(usagePlanId=partner_plan["id"], keyId=made_by_hand["id"], keyType="API_KEY")
    sfn = cloud.client("stepfunctions")
    inputs, started = {}, []
    for label, headers in (("free", free_key), ("by-hand", {"x-api-key": made_by_hand["value"]})):
        order_id = f"tenant-{label}-{uuid.uuid4().hex[:8]}"
        order = {"order_id": order_id, "customer_id": "c-1", "amount": "1.00", "currency": "EUR",
                 "items": [{"sku": f"none-{uuid.uuid4().hex[:6]}", "quantity": 1}]}
        # WHEN each posts a payment
        accepted = api.request("POST", "/payments", body=order, headers=headers)
        assert accepted.status == 202, accepted.body
        execution = sfn.describe_execution(executionArn=accepted.json()["execution_arn"])
        inputs[label] = json.loads(execution["input"])
        started.append(execution["name"])
        # THEN the workflow's input is the order with its tenant
        assert {k: v for k, v in inputs[label].items() if k != "tenant"} == order
    # AND the tenant is the key's client, or the default tenant (never unlimited, never refused) for the other
    assert (inputs["free"]["tenant"], inputs["by-hand"]["tenant"]) == ("example-free-client", names.DEFAULT_TENANT)
    # AND both orders run to their end (cancelled: nothing of an unknown SKU is in stock)
    ended = wait_for_executions(cloud, payments["state_machine_arn"], started, timeout_sec=60)
    assert {name: result.status for name, result in ended.items()} == dict.fromkeys(started, "FAILED")


def test_the_demo_s_ingress_line_reports_what_the_api_answered(cloud, deployed, fresh_simulators):
    # WHEN the demo's ingress path runs: a payment (its amount a decimal string), its repeat once it ended,
    # a malformed payment, a legacy record
    line = run_ingress(cloud, deployed, fresh_simulators)
    # THEN its one line says each answer
    assert line == ("ingress: POST /payments 202 then paid at GET /payments/{id}, repeated 200 (already_accepted),"
                    " malformed 400; POST /legacy-records 202 then delivered"), line
