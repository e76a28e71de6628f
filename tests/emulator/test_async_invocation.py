"""Asynchronous invocation on the emulator: what Lambda does with an event a function failed, as deployed.

EventBridge invokes its Lambda targets asynchronously (`InvocationType=Event`); moto's EventBridge
cannot deliver to Lambda, so the tests hand the deployed function the event as the rule would, in
the same invocation type. With the `lambda_asynchronous_invocation` fix the emulator retries a failed
event as the function's deployed `EventInvokeConfig` says and hands the invocation record to its
on-failure destination, as Lambda does; without it, moto runs the function once and the event is
gone. Each test says what becomes of every order it places.
"""

from __future__ import annotations

import json

import pytest

from localcloud.emulator import patches
from localcloud.drivers.common import drain_queue, layer_stack
from localcloud.drivers.payments import order_placed_event, payment_execution_name, payment_orders, payment_outputs

pytestmark = pytest.mark.emulator


@pytest.fixture(scope="module")
def starter(deployed) -> dict[str, str]:
    workflows = layer_stack(deployed, "Workflows")
    return {**payment_outputs(deployed), "failed_queue_url": workflows.outputs["OrderStartFailedQueueUrl"]}


def invoke_as_eventbridge(cloud, function_name: str, event: dict) -> int:
    response = cloud.client("lambda").invoke(FunctionName=function_name, InvocationType="Event",
                                             Payload=json.dumps(event))
    return response["StatusCode"]


def starter_invocations(cloud, starter) -> int:
    return sum(1 for record in cloud.lambda_runtime.invocations if record.function_name == starter["starter_name"])


def executions_named(cloud, state_machine_arn: str, name: str) -> list[dict]:
    return [e for e in cloud.client("stepfunctions").list_executions(stateMachineArn=state_machine_arn)["executions"]
            if e["name"] == name]


def test_the_deployed_async_settings_are_lambdas(cloud, deployed, starter):
    lambda_client = cloud.client("lambda")
    config = lambda_client.get_function_event_invoke_config(FunctionName=starter["starter_name"])
    assert config["MaximumRetryAttempts"] == 2
    assert config["DestinationConfig"]["OnFailure"]["Destination"].endswith(":" + starter["failed_queue_url"]
                                                                            .rsplit("/", 1)[-1])
    (controller,) = [s.outputs["ControllerName"] for n, s in deployed.items() if n.endswith("-ControlLoop")]
    assert lambda_client.get_function_event_invoke_config(FunctionName=controller)["MaximumRetryAttempts"] == 0


def test_an_order_whose_workflow_cannot_start_lands_in_the_on_failure_queue_after_lambdas_retries(cloud, starter):
    # GIVEN Step Functions refusing the starter (its role broken by a bad deploy), and an order
    (order,) = payment_orders(1)
    event = order_placed_event(order, account=cloud.account_id, region=cloud.region)
    before = starter_invocations(cloud, starter)
    # WHEN EventBridge hands the starter the order's event
    with cloud.faults.inject("states", "StartExecution", code="AccessDeniedException",
                             message="not authorized to perform: states:StartExecution"):
        assert invoke_as_eventbridge(cloud, starter["starter_name"], event) == 202
    # THEN Lambda ran it three times (once, then its two retries) and started nothing
    assert starter_invocations(cloud, starter) - before == 3
    assert executions_named(cloud, starter["state_machine_arn"], payment_execution_name(order["order_id"])) == []
    # AND the order is not lost: its event is in the on-failure queue, with the error, for an operator to redrive
    (record,) = drain_queue(cloud, starter["failed_queue_url"])
    assert record["requestPayload"] == event
    assert (record["requestContext"]["condition"], record["requestContext"]["approximateInvokeCount"]) == (
        "RetriesExhausted", 3)
    assert "StartExecution" in json.dumps(record["responsePayload"])


def test_an_order_that_starts_leaves_nothing_in_the_on_failure_queue(cloud, starter):
    (order,) = payment_orders(1)
    before = starter_invocations(cloud, starter)
    invoke_as_eventbridge(cloud, starter["starter_name"],
                          order_placed_event(order, account=cloud.account_id, region=cloud.region))
    assert starter_invocations(cloud, starter) - before == 1
    assert len(executions_named(cloud, starter["state_machine_arn"], payment_execution_name(order["order_id"]))) == 1
    assert drain_queue(cloud, starter["failed_queue_url"]) == []


def test_without_the_fix_the_failed_order_vanishes(cloud, starter):
    # GIVEN moto alone: one run of an Event invocation, its result forgotten
    (order,) = payment_orders(1)
    before = starter_invocations(cloud, starter)
    patches.remove("lambda_asynchronous_invocation")
    try:
        with cloud.faults.inject("states", "StartExecution", code="AccessDeniedException"):
            invoke_as_eventbridge(cloud, starter["starter_name"],
                                  order_placed_event(order, account=cloud.account_id, region=cloud.region))
    finally:
        patches.apply("lambda_asynchronous_invocation")
    # THEN the starter ran once and the order is nowhere: no workflow, no record
    assert starter_invocations(cloud, starter) - before == 1
    assert drain_queue(cloud, starter["failed_queue_url"]) == []
