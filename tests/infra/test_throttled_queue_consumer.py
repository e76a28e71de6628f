"""`ThrottledQueueConsumer` on its own: the settings it derives, the ones it refuses, its grants and metrics."""

from __future__ import annotations

import re

import pytest
from aws_cdk import App, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk.assertions import Template

from stacks.app_assets import lambda_code
from stacks.patterns import ThrottledQueueConsumer

REQUIRED = {
    "handler": "handlers.legacy_consumer.handler",
    "service": "probe-consumer",
    "description": "probe",
    "log_retention": logs.RetentionDays.TWO_WEEKS,
    "removal_policy": RemovalPolicy.DESTROY,
}


def build(**props) -> tuple[Stack, ThrottledQueueConsumer]:
    stack = Stack(App(), "Probe")
    return stack, ThrottledQueueConsumer(stack, "Consumer", code=lambda_code(), **REQUIRED, **props)


def test_defaults_reserve_the_mapping_concurrency_and_derive_six_timeouts_of_visibility():
    # WHEN only the function timeout is given
    stack, _ = build(function_timeout_sec=40)
    template = Template.from_stack(stack)
    # THEN reserved concurrency equals the mapping's (2), and the queue's visibility is 6 x 40 s
    template.has_resource_properties("AWS::Lambda::Function", {"Timeout": 40, "ReservedConcurrentExecutions": 2})
    template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "BatchSize": 10, "ScalingConfig": {"MaximumConcurrency": 2},
        "FunctionResponseTypes": ["ReportBatchItemFailures"]})
    template.has_resource_properties("AWS::SQS::Queue", {"VisibilityTimeout": 240,
                                                         "RedrivePolicy": {"maxReceiveCount": 10}})


def test_every_resource_is_a_public_attribute():
    _, consumer = build()
    assert {type(consumer.queue).__name__, type(consumer.dead_letter_queue).__name__} == {"Queue"}
    assert type(consumer.function).__name__ == "Function"
    assert type(consumer.event_source).__name__ == "SqsEventSource"


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"max_concurrency": 1}, "max_concurrency must be >= 2 (lambda's minimum for an sqs mapping), got 1; hold a"
                                 " lower rate with the shared limiter"),
        ({"max_concurrency": 3, "reserved_concurrency": 2},
         "reserved_concurrency must be >= max_concurrency, got 2 < 3"),
        ({"function_timeout_sec": 60, "visibility_timeout_sec": 300},
         "visibility_timeout_sec must be >= 6 x function_timeout_sec (360), got 300"),
        ({"batch_size": 20}, "batch_size above 10 needs max_batching_window_sec >= 1"),
        ({"batch_size": 0}, "batch_size must be a whole number from 1 to 10000, got 0"),
        ({"max_receive_count": 0}, "max_receive_count must be a whole number from 1 to 1000, got 0"),
        ({"retention_days": 15}, "retention_days must be a whole number from 1 to 14, got 15"),
        ({"function_timeout_sec": 901}, "function_timeout_sec must be a whole number from 1 to 900, got 901"),
        ({"max_batching_window_sec": 301}, "max_batching_window_sec must be a whole number from 0 to 300, got 301"),
    ],
)
def test_settings_that_would_be_refused_or_lose_messages_fail_at_synth_saying_what_to_do(props, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build(**props)


def test_a_reserved_concurrency_above_the_mapping_is_accepted():
    stack, _ = build(max_concurrency=2, reserved_concurrency=4)
    Template.from_stack(stack).has_resource_properties("AWS::Lambda::Function", {"ReservedConcurrentExecutions": 4})


def test_grant_redrive_lets_an_operator_move_dead_letters_back_and_nothing_else():
    # GIVEN an operator role
    stack, consumer = build()
    role = iam.Role(stack, "Operator", assumed_by=iam.AccountRootPrincipal())
    # WHEN it is granted the redrive
    consumer.grant_redrive(role)
    # THEN it may run message move tasks from the dead-letter queue and send to the queue
    template = Template.from_stack(stack)
    (policy,) = [p for p in template.find_resources("AWS::IAM::Policy").values()
                 if {"Ref": stack.get_logical_id(role.node.default_child)} in p["Properties"]["Roles"]]
    actions = {action for statement in policy["Properties"]["PolicyDocument"]["Statement"]
               for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])}
    assert {"sqs:StartMessageMoveTask", "sqs:ListMessageMoveTasks", "sqs:CancelMessageMoveTask",
            "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:SendMessage"} <= actions
    assert not any(action in actions for action in ("sqs:*", "sqs:PurgeQueue", "sqs:DeleteQueue"))


def test_the_handler_may_send_to_its_dead_letter_queue_and_knows_where_it_is():
    # GIVEN a consumer on its own
    stack, consumer = build()
    template = Template.from_stack(stack).to_json()
    dead_letter_id = stack.get_logical_id(consumer.dead_letter_queue.node.default_child)
    (function,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    # THEN its environment names the dead-letter queue's URL
    assert function["Properties"]["Environment"]["Variables"]["DEAD_LETTER_QUEUE_URL"] == {"Ref": dead_letter_id}
    # AND its role may send there, and do nothing else there: no receive, no delete, no move task
    statements = [s for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Policy"
                  for s in r["Properties"]["PolicyDocument"]["Statement"]]
    on_dead_letters = [s for s in statements if s["Resource"] == {"Fn::GetAtt": [dead_letter_id, "Arn"]}]
    assert [sorted(s["Action"]) for s in on_dead_letters] == [
        ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"]]


def test_metrics_watch_the_backlog_its_age_and_the_dead_letters():
    _, consumer = build()
    assert consumer.metric_backlog().metric_name == "ApproximateNumberOfMessagesVisible"
    assert consumer.metric_backlog().statistic == "Maximum"
    assert consumer.metric_oldest_message_age().metric_name == "ApproximateAgeOfOldestMessage"
    dead = consumer.metric_dead_letters(statistic="Sum")
    assert (dead.metric_name, dead.statistic) == ("ApproximateNumberOfMessagesVisible", "Sum")


def test_without_a_reservation_the_mapping_still_caps_the_batches_in_flight():
    # WHEN the consumer is built for an account with nothing to reserve
    stack, _ = build(reserve_concurrency=False)
    template = Template.from_stack(stack)
    # THEN the function reserves nothing, and the mapping still takes at most 2 batches at once
    (function,) = template.find_resources("AWS::Lambda::Function").values()
    assert "ReservedConcurrentExecutions" not in function["Properties"]
    template.has_resource_properties("AWS::Lambda::EventSourceMapping", {"ScalingConfig": {"MaximumConcurrency": 2}})


def test_a_reservation_given_with_reservations_off_is_refused():
    with pytest.raises(ValueError, match="reserved_concurrency 4 was given with reserve_concurrency=False"):
        build(reserve_concurrency=False, reserved_concurrency=4)
