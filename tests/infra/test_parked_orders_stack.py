"""Use case 2, parked orders, in the synthesized app: the resumer, its schedule, its grants; and the guard that every
queue with a dead-letter queue has something receiving from it (the parked-orders queue once had nothing)."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from tests.infra.cloudformation import referenced_ids


@pytest.fixture(scope="module")
def workflows(templates) -> dict[str, Any]:
    return templates["workflows"]


def by_prefix(template: dict[str, Any], resource_type: str, prefix: str) -> tuple[str, dict[str, Any]]:
    (found,) = [(i, r) for i, r in template["Resources"].items() if r["Type"] == resource_type and i.startswith(prefix)]
    return found


@pytest.fixture(scope="module")
def resumer(workflows) -> tuple[str, dict[str, Any]]:
    return by_prefix(workflows, "AWS::Lambda::Function", "ParkedOrderResumer")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def described(resource: Any) -> str:
    """A granted resource as text: logical ids without their hash, an import as the exported resource."""
    if isinstance(resource, dict) and "Fn::Join" in resource:
        return "".join(described(part) for part in resource["Fn::Join"][1])
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        return re.sub(r"[0-9A-F]{8}$", "", resource["Fn::GetAtt"][0])
    if isinstance(resource, dict) and "Ref" in resource:
        return "" if resource["Ref"].startswith("AWS::") else re.sub(r"[0-9A-F]{8}$", "", resource["Ref"])
    if isinstance(resource, dict) and "Fn::ImportValue" in resource:
        return re.search(r"ExportsOutput(?:Ref|FnGetAtt)([A-Za-z]+?)[0-9A-F]{8}", resource["Fn::ImportValue"]).group(1)
    if isinstance(resource, dict) and "Fn::Select" in resource:
        return described(resource["Fn::Select"][1])
    if isinstance(resource, dict) and "Fn::Split" in resource:
        return described(resource["Fn::Split"][1])
    return str(resource)


def granted(template: dict[str, Any], role_id: str) -> dict[str, list[str]]:
    """What the role may do: resource (as `described` prints it) -> actions; X-Ray's `*` left out."""
    found: dict[str, list[str]] = {}
    for resource in template["Resources"].values():
        if resource["Type"] != "AWS::IAM::Policy" or {"Ref": role_id} not in resource["Properties"]["Roles"]:
            continue
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
            for target in _list(statement["Resource"]):
                if target != "*":
                    found[described(target)] = sorted(_list(statement["Action"]))
    return found


def test_the_resumer_runs_every_minute_without_retries_of_its_own_and_reserves_no_concurrency(workflows, resumer):
    resumer_id, function = resumer
    _, rule = by_prefix(workflows, "AWS::Events::Rule", "ParkedOrderResumeSchedule")
    (target,) = rule["Properties"]["Targets"]
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    assert referenced_ids(target["Arn"]) == {resumer_id}
    # A failed run is not worth repeating: the next one starts within a minute, with fresh state. EventBridge's
    # retry and Lambda's own asynchronous retries (two, over up to six hours, unless told) are both off.
    assert target["RetryPolicy"] == {"MaximumEventAgeInSeconds": 60, "MaximumRetryAttempts": 0}
    _, invoke_config = by_prefix(workflows, "AWS::Lambda::EventInvokeConfig", "ParkedOrderResumer")
    assert referenced_ids(invoke_config["Properties"]["FunctionName"]) == {resumer_id}
    assert (invoke_config["Properties"]["MaximumRetryAttempts"],
            invoke_config["Properties"]["MaximumEventAgeInSeconds"]) == (0, 60)
    assert "ReservedConcurrentExecutions" not in function["Properties"]


def test_the_resumer_is_wired_to_the_parked_orders_the_breaker_and_the_payment_workflow(workflows, resumer):
    _, function = resumer
    properties = function["Properties"]
    assert properties["Handler"] == "handlers.resume_parked_orders.handler"
    variables = {name: described(value) for name, value in properties["Environment"]["Variables"].items()}
    assert {k: variables[k] for k in ("PARKED_ORDERS_QUEUE_URL", "PARKED_ORDERS_DLQ_URL", "ORDERS_TABLE_NAME",
                                      "BREAKER_TABLE_NAME", "BREAKER_NAME", "PAYMENT_STATE_MACHINE_ARN",
                                      "RESUMES_PER_RUN")} == {
        "PARKED_ORDERS_QUEUE_URL": "ParkedOrdersQueue", "PARKED_ORDERS_DLQ_URL": "ParkedOrdersDeadLetterQueue",
        "ORDERS_TABLE_NAME": "OrdersTable", "BREAKER_TABLE_NAME": "CircuitBreakersTable",
        "BREAKER_NAME": "payment_gateway", "PAYMENT_STATE_MACHINE_ARN": "PaymentAuthorizationStateMachine",
        "RESUMES_PER_RUN": "29"}
    # A message a run holds stays invisible as long as the run may act on it
    _, queue = by_prefix(workflows, "AWS::SQS::Queue", "ParkedOrdersQueue")
    assert queue["Properties"]["VisibilityTimeout"] == properties["Timeout"] == 60


def test_the_resumer_may_read_the_breaker_take_parked_orders_claim_them_and_start_their_resumptions_only(
    workflows, resumer
):
    _, function = resumer
    (role,) = referenced_ids(function["Properties"]["Role"])
    assert granted(workflows, role) == {
        "ParkedOrderResumerLogGroup": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "CircuitBreakersTable": ["dynamodb:GetItem"],
        "ParkedOrdersQueue": ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                              "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
        "ParkedOrdersDeadLetterQueue": ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"],
        "OrdersTable": ["dynamodb:GetItem", "dynamodb:UpdateItem"],
        "PaymentAuthorizationStateMachine": ["states:StartExecution"],
        # the payment workflow's own executions: arn:<partition>:states:<region>:<account>:execution:<its name>:*
        "arn::states:us-east-1::execution:PaymentAuthorizationStateMachine:*": ["states:DescribeExecution"],
    }


def test_operators_find_the_resumer_and_the_dead_letter_queue_in_the_outputs(workflows):
    assert {"ParkedOrdersQueueUrl", "ParkedOrdersDeadLetterQueueUrl", "ParkedOrderResumerName"} <= set(
        workflows["Outputs"])


def test_a_resumption_takes_a_quarter_of_the_gateways_planned_tokens_per_minute(dev_config):
    from dataclasses import replace

    from stacks.use_cases.payments import parked_order_resumes_per_run

    gateway = dev_config.downstream("payment_gateway")
    assert gateway.planned_rate_per_sec == 1.98
    assert parked_order_resumes_per_run(gateway) == 29  # floor(1.98 x 60 x 0.25)
    assert parked_order_resumes_per_run(replace(gateway, rate_limit_per_sec=0.01)) == 1  # never none


def test_the_note_of_an_unanswered_authorization_outlives_every_way_a_parked_order_comes_back(workflows):
    from payments.unanswered import UNANSWERED_RECORD_TTL_SEC

    # GIVEN the deployed retentions: parked orders, then their dead-letter queue (SQS keeps a message's first
    # enqueue time when it moves it, so the two add up at most)
    _, queue = by_prefix(workflows, "AWS::SQS::Queue", "ParkedOrdersQueue")
    _, dead_letters = by_prefix(workflows, "AWS::SQS::Queue", "ParkedOrdersDeadLetterQueue")
    longest_sec = queue["Properties"]["MessageRetentionPeriod"] + dead_letters["Properties"]["MessageRetentionPeriod"]
    # THEN a note lives longer, and the authorizer repeats an unanswered authorization only within a day
    assert UNANSWERED_RECORD_TTL_SEC > longest_sec
    _, authorizer = by_prefix(workflows, "AWS::Lambda::Function", "PaymentAuthorizer")
    kept_sec = float(authorizer["Properties"]["Environment"]["Variables"]["GATEWAY_IDEMPOTENCY_KEY_KEPT_SEC"])
    assert 0 < kept_sec < 24 * 3600


# -- guard: a queue with a dead-letter queue is there to be consumed --------------------------------------


def unconsumed_queues(templates: dict[str, dict[str, Any]]) -> list[str]:
    """Queues with a redrive policy (so messages are meant to be received) that nothing receives from.

    Something receives from a queue when an event-source mapping reads it, or a role may `sqs:ReceiveMessage` on it.
    """
    consumed: set[str] = set()
    for template in templates.values():
        for resource in template["Resources"].values():
            if resource["Type"] == "AWS::Lambda::EventSourceMapping":
                consumed |= referenced_ids(resource["Properties"]["EventSourceArn"])
            if resource["Type"] == "AWS::IAM::Policy":
                for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                    if statement["Effect"] == "Allow" and "sqs:ReceiveMessage" in _list(statement["Action"]):
                        consumed |= referenced_ids(statement["Resource"])
    return sorted(
        logical_id
        for template in templates.values()
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in resource["Properties"]
        and logical_id not in consumed
    )


def test_every_queue_with_a_dead_letter_queue_has_something_receiving_from_it(templates):
    assert unconsumed_queues(templates) == []


def test_the_guard_catches_a_queue_that_nothing_receives_from(templates, workflows, resumer):
    # GIVEN the app as it was: the parked-orders queue with its dead-letter queue, and no resumer's grant on it
    _, function = resumer
    (role,) = referenced_ids(function["Properties"]["Role"])
    without_resumer = copy.deepcopy(templates)
    for resource in without_resumer["workflows"]["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role} in resource["Properties"]["Roles"]:
            resource["Properties"]["PolicyDocument"]["Statement"] = []
    # THEN the guard names it
    (queue_id, _) = by_prefix(workflows, "AWS::SQS::Queue", "ParkedOrdersQueue")
    assert unconsumed_queues(without_resumer) == [queue_id]
