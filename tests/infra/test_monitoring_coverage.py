"""Nothing in the app goes unwatched: every workflow, queue and dead-letter queue has its alarms.

The control loop watches what the registered use cases own (`workflows_in`, `queues_in`) and refuses
an app with a state machine or queue outside them; this check does not trust that: it reads the
synthesized templates of every stack and, for each state machine and queue, looks for the alarms
that watch it, by metric and by the resource its dimension resolves to (through a cross-stack export
when the alarm lives in another stack):

- a state machine: `ExecutionThrottled`, and `ExecutionsFailed` (or `ExecutionsTimedOut`, for one
  whose `Fail` states are business outcomes);
- a dead-letter queue (no dead-letter queue of its own, or named as one by a queue's redrive
  policy, a rule target or a Lambda on-failure destination): `ApproximateNumberOfMessagesVisible`
  above 0, so any message at all is seen;
- any other queue: `ApproximateAgeOfOldestMessage`.

Each such alarm must also have an action (its delivery is checked in `test_alarm_actions.py`).
"""

from __future__ import annotations

import copy
import re
from dataclasses import replace
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_sqs as sqs
from aws_cdk.assertions import Template

from tests.infra.cloudformation import resolved_ids, resources_of


def _watching(templates: dict[str, dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(metric name, logical id of the resource its dimension names) -> the alarms reading it."""
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _, _, alarm in resources_of(templates, "AWS::CloudWatch::Alarm"):
        properties = alarm["Properties"]
        metrics = [properties] if "MetricName" in properties else [
            q["MetricStat"]["Metric"] for q in properties.get("Metrics", []) if "MetricStat" in q]
        for metric in metrics:
            for dimension in metric.get("Dimensions", []):
                for logical_id in resolved_ids(dimension["Value"], templates):
                    found.setdefault((metric["MetricName"], logical_id), []).append(properties)
    return found


def dead_letter_queue_ids(templates: dict[str, dict[str, Any]]) -> set[str]:
    """Queues that receive what failed elsewhere, or that have no dead-letter queue of their own."""
    queues = {logical_id: queue for _, logical_id, queue in resources_of(templates, "AWS::SQS::Queue")}
    named = set()
    for queue in queues.values():
        named |= resolved_ids(queue.get("Properties", {}).get("RedrivePolicy", {}).get("deadLetterTargetArn"),
                              templates)
    for _, _, rule in resources_of(templates, "AWS::Events::Rule"):
        for target in rule["Properties"].get("Targets", []):
            named |= resolved_ids(target.get("DeadLetterConfig", {}).get("Arn"), templates)
    for _, _, config in resources_of(templates, "AWS::Lambda::EventInvokeConfig"):
        named |= resolved_ids(config["Properties"].get("DestinationConfig", {}).get("OnFailure"), templates)
    return (named & set(queues)) | {i for i, q in queues.items() if "RedrivePolicy" not in q.get("Properties", {})}


def coverage_problems(templates: dict[str, dict[str, Any]]) -> list[str]:
    watching = _watching(templates)

    def alarmed(metric: str, logical_id: str, *, any_message: bool = False) -> bool:
        return any(alarm.get("AlarmActions") and (not any_message or (
            alarm.get("Threshold") == 0 and alarm.get("ComparisonOperator") == "GreaterThanThreshold"))
            for alarm in watching.get((metric, logical_id), []))

    problems = []
    for _, machine_id, _ in resources_of(templates, "AWS::StepFunctions::StateMachine"):
        if not alarmed("ExecutionThrottled", machine_id):
            problems.append(f"state machine {machine_id} has no alarm on its throttled executions")
        if not (alarmed("ExecutionsFailed", machine_id) or alarmed("ExecutionsTimedOut", machine_id)):
            problems.append(f"state machine {machine_id} has no alarm on its failed (or timed-out) executions")
    dead_letter_queues = dead_letter_queue_ids(templates)
    for _, queue_id, _ in resources_of(templates, "AWS::SQS::Queue"):
        if queue_id in dead_letter_queues:
            if not alarmed("ApproximateNumberOfMessagesVisible", queue_id, any_message=True):
                problems.append(f"dead-letter queue {queue_id} has no alarm on any message at all")
        elif not alarmed("ApproximateAgeOfOldestMessage", queue_id):
            problems.append(f"queue {queue_id} has no alarm on the age of its oldest message")
    return problems


def test_every_workflow_queue_and_dead_letter_queue_of_the_app_has_its_alarms(templates):
    # GIVEN every state machine and queue of every stack
    assert len(resources_of(templates, "AWS::StepFunctions::StateMachine")) == 5
    assert len(resources_of(templates, "AWS::SQS::Queue")) == 7
    # THEN each is watched as its kind requires
    assert coverage_problems(templates) == []


def test_the_dead_letter_queues_are_told_apart_from_the_queues_they_back(templates):
    names = {queue_id.rstrip("0123456789ABCDEF") for queue_id in dead_letter_queue_ids(templates)}
    assert names == {"CrmBatchEmailDeadLetterQueue", "ParkedOrdersDeadLetterQueue", "OrderStartFailedQueue",
                     "OrderPlacedUndeliveredQueue", "LegacyConsumerDeadLetterQueue"}


def test_the_workflows_whose_failures_are_outcomes_alarm_on_timeouts_and_the_others_on_failures(dev_assembly):
    stacks, _ = dev_assembly
    kinds = {w.name: w.fail_states_are_outcomes for w in stacks["control_loop"].workflows}
    assert kinds == {"CrmBatchEmail": False, "CrmSegmentLarge": False, "PaymentAuthorization": True,
                     "UgcModeration": False, "LegacyPublish": False}


# -- the check is live ----------------------------------------------------------------------------
def test_a_dead_letter_queue_a_state_machine_or_a_queue_without_its_alarm_is_caught(templates):
    # GIVEN the app without the alarms of the parked orders' dead-letter queue, the large-segment workflow's
    # failures and the parked orders' age
    dropped = ("ParkedOrdersDeadLetterQueueDeadLetters", "CrmSegmentLargeExecutionsFailed",
               "ParkedOrdersQueueOldestMessage")
    without = copy.deepcopy(templates)
    resources = without["control_loop"]["Resources"]
    for logical_id in [i for i in resources if i.rstrip("0123456789ABCDEF") in dropped]:
        del resources[logical_id]
    # WHEN checked THEN exactly those three are reported
    problems = coverage_problems(without)
    assert sorted(re.sub(r"[0-9A-F]{8} ", " ", p) for p in problems) == [
        "dead-letter queue ParkedOrdersDeadLetterQueue has no alarm on any message at all",
        "queue ParkedOrdersQueue has no alarm on the age of its oldest message",
        "state machine CrmSegmentLargeStateMachine has no alarm on its failed (or timed-out) executions",
    ]


def test_a_dead_letter_alarm_that_tolerates_some_messages_is_caught(templates):
    without = copy.deepcopy(templates)
    for logical_id, resource in without["control_loop"]["Resources"].items():
        if logical_id.startswith("OrderStartFailedQueueDeadLetters"):
            resource["Properties"]["Threshold"] = 5
    (problem,) = coverage_problems(without)
    assert problem.startswith("dead-letter queue OrderStartFailedQueue")


def test_a_queue_added_outside_every_registered_use_case_refuses_to_synthesize(cdk_context, dev_config, tmp_path):
    from stacks.app_stacks import add_stacks

    # GIVEN an app with one more stack holding a queue and its dead-letter queue, in no use case
    app = App(outdir=str(tmp_path), context=dict(cdk_context))
    config = replace(dev_config, nag=False)
    later = Stack(app, f"{config.stack_prefix}-LaterUseCase", env=_env(config))
    dead = sqs.Queue(later, "LaterDeadLetters")
    sqs.Queue(later, "LaterQueue", dead_letter_queue=sqs.DeadLetterQueue(queue=dead, max_receive_count=3))
    # WHEN the stage's stacks are added after it
    # THEN the control loop refuses to build, naming both queues and where they belong
    with pytest.raises(ValueError, match=r"no registered use case owns \['Throttling-dev-LaterUseCase/LaterDeadLetters"
                       r"', 'Throttling-dev-LaterUseCase/LaterQueue'\].*add that use case to registry.USE_CASES"):
        add_stacks(app, config)


def test_a_use_case_added_to_the_registry_brings_its_alarms_and_dashboard_rows(cdk_context, dev_config, tmp_path):
    from stacks.app_stacks import add_stacks
    from stacks.app_assets import statemachine_file
    from stacks.patterns import AslStateMachine
    from stacks.use_cases import USE_CASES, Layer, Registered, UseCase

    from tests.infra.cloudformation import json_body

    # GIVEN a later use case: one class building a queue, its dead-letter queue and a workflow that publishes to it
    class LaterUseCase(UseCase[None]):
        layer = Layer.BUFFERS

        def build(self, scope, context, props) -> None:
            dead = sqs.Queue(scope, "LaterDeadLetters")
            queue = sqs.Queue(scope, "LaterQueue",
                              dead_letter_queue=sqs.DeadLetterQueue(queue=dead, max_receive_count=3))
            publish = AslStateMachine(scope, "LaterPublish", definition_file=statemachine_file("legacy_publish.asl.json"),
                                      definition_substitutions={"LegacyQueueUrl": queue.queue_url,
                                                                "DefaultTenant": "default"},
                                      log_retention=context.log_retention,
                                      removal_policy=context.removal_policy)
            queue.grant_send_messages(publish.role)

    app = App(outdir=str(tmp_path), context=dict(cdk_context))
    config = replace(dev_config, nag=False)
    # WHEN the stage is built with one more registry line
    stacks = add_stacks(app, config, use_cases=[*USE_CASES, Registered(LaterUseCase, None)])
    app.synth()
    # THEN the control loop alarms on all three as their kinds require, and graphs them
    control_loop = Template.from_stack(stacks["control_loop"])
    names = {a["Properties"]["AlarmName"] for a in control_loop.find_resources("AWS::CloudWatch::Alarm").values()}
    assert {"Throttling-dev-LaterQueue-OldestMessageAge", "Throttling-dev-LaterDeadLetters-DeadLetters",
            "Throttling-dev-LaterPublish-ExecutionsFailed", "Throttling-dev-LaterPublish-ExecutionsThrottled"} <= names
    (dashboard,) = control_loop.find_resources("AWS::CloudWatch::Dashboard").values()
    labels = {metric[-1].get("label") for widget in json_body(dashboard["Properties"]["DashboardBody"])["widgets"]
              for metric in widget["properties"].get("metrics", []) if isinstance(metric[-1], dict)}
    assert {"LaterPublish started", "LaterQueue oldest (s)", "LaterDeadLetters dead letters"} <= labels
    # AND the whole app passes the check
    templates = {key: Template.from_stack(stack).to_json() for key, stack in stacks.items()}
    assert coverage_problems(templates) == []


def _env(config):
    from aws_cdk import Environment

    return Environment(account=config.account, region=config.region)


def test_a_queues_own_threshold_is_refused_outside_what_sqs_keeps_without_a_reason_or_twice():
    from stacks.patterns.monitoring import alarm_on_oldest_message_after, oldest_message_alarm

    queue = sqs.Queue(Stack(App(), "Probe"), "Queue")
    for after_sec, reason, message in ((30, "r", r"from 60 to 1209600 .* got 30"),
                                       (15 * 24 * 3600, "r", r"got 1296000"),
                                       (600.5, "r", r"got 600.5"),
                                       (600, " ", r"reason must say why")):
        with pytest.raises(ValueError, match=message):
            alarm_on_oldest_message_after(queue, after_sec=after_sec, reason=reason)
    assert oldest_message_alarm(queue) is None
    alarm_on_oldest_message_after(queue, after_sec=600, reason="a nightly batch")
    with pytest.raises(ValueError, match="already has its own"):
        alarm_on_oldest_message_after(queue, after_sec=700, reason="again")
    assert (oldest_message_alarm(queue).after_sec, oldest_message_alarm(queue).reason) == (600, "a nightly batch")


def test_two_queues_that_would_share_alarm_names_are_refused():
    from stacks.control_loop_stack import queues_in

    app = App()
    for stack_id in ("One", "Two"):
        sqs.Queue(Stack(app, stack_id), "Orders")
    with pytest.raises(ValueError, match=r"queues must have distinct names for their alarms, got \{'Orders'"):
        queues_in(app.node.find_all())


def test_the_functions_whose_failures_nothing_else_shows_alarm_on_any_error(templates):
    # GIVEN the functions marked with alarm_on_errors: the moderation decider (its failure becomes "needs
    # review") and the parked-order resumer (scheduled, nobody waits for it)
    watching = _watching(templates)
    functions = {logical_id: function for _, logical_id, function in resources_of(templates, "AWS::Lambda::Function")}
    by_handler = {function["Properties"]["Handler"]: logical_id for logical_id, function in functions.items()}
    for handler in ("handlers.decide_moderation.handler", "handlers.resume_parked_orders.handler"):
        # THEN an alarm with an action fires on its first error
        alarms = watching.get(("Errors", by_handler[handler]), [])
        assert [(a["Threshold"], a["ComparisonOperator"], bool(a.get("AlarmActions"))) for a in alarms] == [
            (0, "GreaterThanThreshold", True)], handler


def test_a_function_is_alarmed_on_errors_once_and_only_with_a_reason():
    from aws_cdk import aws_lambda as lambda_

    from stacks.patterns.monitoring import alarm_on_errors, errors_alarm_reason

    function = lambda_.Function(Stack(App(), "Probe"), "Fn", runtime=lambda_.Runtime.PYTHON_3_13, handler="x.y",
                                code=lambda_.Code.from_inline("def y(e, c): pass"))
    with pytest.raises(ValueError, match="reason must say what"):
        alarm_on_errors(function, reason="  ")
    assert errors_alarm_reason(function) is None
    alarm_on_errors(function, reason="uploads go to review")
    with pytest.raises(ValueError, match="already alarms on its errors"):
        alarm_on_errors(function, reason="again")
    assert errors_alarm_reason(function) == "uploads go to review"
