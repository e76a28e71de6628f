"""Every function an EventBridge rule invokes says how Lambda retries it, and none loses an event it must not.

A rule invokes a Lambda function asynchronously. A rule target's `RetryPolicy` is EventBridge's
delivery retry only: once Lambda has queued the event, Lambda retries a failed invocation twice
over up to six hours, then drops it, unless an `AWS::Lambda::EventInvokeConfig` says otherwise. So
every function a rule targets must have one with both settings written out; and a function whose
events no schedule repeats (a lost `OrderPlaced` is a lost order, where a lost minute of the
controller is replaced by the next) must also send what Lambda gives up on to an on-failure
destination, and what EventBridge could not deliver to a dead-letter queue on the target.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import App, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Template

from tests.infra.cloudformation import resolve, resolved_ids, resources_of


def _targets_by_function(templates: dict[str, dict[str, Any]]) -> dict[str, list[tuple[str, dict, dict]]]:
    """Function logical id -> every (rule id, rule properties, target) that invokes it."""
    found: dict[str, list[tuple[str, dict, dict]]] = {}
    for _, rule_id, rule in resources_of(templates, "AWS::Events::Rule"):
        for target in rule["Properties"].get("Targets", []):
            for logical_id in resolved_ids(target["Arn"], templates):
                if resolve(logical_id, templates)[1]["Type"] == "AWS::Lambda::Function":
                    found.setdefault(logical_id, []).append((rule_id, rule["Properties"], target))
    return found


def invoke_configs(function_id: str, templates: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [config["Properties"] for _, _, config in resources_of(templates, "AWS::Lambda::EventInvokeConfig")
            if function_id in resolved_ids(config["Properties"]["FunctionName"], templates)
            and config["Properties"].get("Qualifier") == "$LATEST"]


def async_invocation_problems(templates: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    for function_id, invoked_by in sorted(_targets_by_function(templates).items()):
        configs = invoke_configs(function_id, templates)
        if not configs:
            problems.append(f"{function_id}: invoked by {sorted(r for r, _, _ in invoked_by)} but has no"
                            " EventInvokeConfig, so Lambda retries it twice over up to six hours, then drops the event")
            continue
        (config,) = configs
        for setting in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds"):
            if setting not in config:
                problems.append(f"{function_id}: its EventInvokeConfig leaves {setting} to Lambda's default")
        if any("ScheduleExpression" in rule for _, rule, _ in invoked_by):
            continue  # what a failed run would have done, the next scheduled run does
        on_failure = config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        if not on_failure or not resolved_ids(on_failure, templates):
            problems.append(f"{function_id}: no schedule repeats its events, but Lambda drops the ones it gives up on:"
                            " give it an on-failure destination in the app")
        elif not _alarmed(templates, "DestinationDeliveryFailures", function_id):
            problems.append(f"{function_id}: nothing alarms when its on-failure destination refuses an event"
                            " (DestinationDeliveryFailures)")
        for rule_id, _, target in invoked_by:
            if not resolved_ids(target.get("DeadLetterConfig", {}).get("Arn"), templates):
                problems.append(f"{function_id}: rule {rule_id} has no dead-letter queue for the events it cannot"
                                " deliver to it")
            elif not _alarmed(templates, "InvocationsFailedToBeSentToDlq", rule_id):
                problems.append(f"{function_id}: nothing alarms when rule {rule_id}'s dead-letter queue refuses an"
                                " event (InvocationsFailedToBeSentToDlq)")
    return problems


def _alarmed(templates: dict[str, dict[str, Any]], metric_name: str, logical_id: str) -> bool:
    """Whether an alarm with actions reads `metric_name` of the resource `logical_id` (its dimension's value)."""
    return any(alarm["Properties"].get("MetricName") == metric_name and alarm["Properties"].get("AlarmActions")
               and any(logical_id in resolved_ids(d["Value"], templates)
                       for d in alarm["Properties"].get("Dimensions", []))
               for _, _, alarm in resources_of(templates, "AWS::CloudWatch::Alarm"))


def test_every_function_a_rule_invokes_has_its_asynchronous_invocation_written_out(templates):
    # GIVEN the functions rules invoke: the controller, the lease reclaimer, the parked-order resumer and the
    # payment starter
    assert len(_targets_by_function(templates)) == 4
    # THEN each has its retries and event age set, and the one no schedule repeats loses no event
    assert async_invocation_problems(templates) == []


def test_the_scheduled_functions_are_not_retried_and_give_up_on_a_stale_event(templates):
    by_handler = {resolve(f, templates)[1]["Properties"]["Handler"]: invoke_configs(f, templates)
                  for f in _targets_by_function(templates)}
    for handler in ("handlers.controller.handler", "handlers.reclaim_leases.handler",
                    "handlers.resume_parked_orders.handler"):
        (config,) = by_handler[handler]
        assert (config["MaximumRetryAttempts"], config["MaximumEventAgeInSeconds"]) == (0, 60), handler
        assert "DestinationConfig" not in config


def test_a_failed_order_start_goes_to_an_alarmed_queue_and_an_undelivered_order_to_another(templates):
    # GIVEN the payment starter
    (starter_id,) = [f for f in _targets_by_function(templates)
                     if resolve(f, templates)[1]["Properties"]["Handler"] == "handlers.start_payment.handler"]
    (config,) = invoke_configs(starter_id, templates)
    # THEN Lambda retries a failed start twice (a repeat is refused by the execution name), then hands it over
    assert (config["MaximumRetryAttempts"], config["MaximumEventAgeInSeconds"]) == (2, 6 * 3600)
    (failed_id,) = resolved_ids(config["DestinationConfig"]["OnFailure"]["Destination"], templates)
    (_, _, target), = _targets_by_function(templates)[starter_id]
    (undelivered_id,) = resolved_ids(target["DeadLetterConfig"]["Arn"], templates)
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 24 * 3600}
    # AND both queues are encrypted, keep messages 14 days and are dead-letter queues (no queue of their own)
    for queue_id in (failed_id, undelivered_id):
        queue = resolve(queue_id, templates)[1]["Properties"]
        assert queue["SqsManagedSseEnabled"] is True and queue["MessageRetentionPeriod"] == 14 * 24 * 3600
        assert "RedrivePolicy" not in queue
    assert failed_id.startswith("OrderStartFailedQueue") and undelivered_id.startswith("OrderPlacedUndeliveredQueue")


# -- the check is live ----------------------------------------------------------------------------
def _probe(configure) -> dict[str, dict[str, Any]]:
    stack = Stack(App(), "Probe")
    function = lambda_.Function(stack, "Function", runtime=lambda_.Runtime.PYTHON_3_13, handler="index.handler",
                                code=lambda_.Code.from_inline("def handler(event, context): pass"))
    target = configure(function)
    events.Rule(stack, "Rule", event_pattern=events.EventPattern(source=["shop.orders"]), targets=[target])
    return {"probe": Template.from_stack(stack).to_json()}


def test_a_target_with_only_eventbridge_retries_is_caught():
    # GIVEN the mistake: retry_attempts=0 on the target, taken to mean "no retries"
    problems = async_invocation_problems(_probe(lambda f: targets.LambdaFunction(f, retry_attempts=0)))
    # THEN the missing EventInvokeConfig is reported
    assert len(problems) == 1 and "has no EventInvokeConfig" in problems[0]


def test_a_hand_over_nothing_alarms_on_is_caught(templates):
    # GIVEN the app without the alarms on the starter's hand-overs of failed events
    import copy

    without = copy.deepcopy(templates)
    resources = without["control_loop"]["Resources"]
    for logical_id in [i for i in resources if "DeliveryFailures" in i]:
        del resources[logical_id]
    # THEN both hand-overs are reported
    problems = async_invocation_problems(without)
    assert len(problems) == 2
    assert "(DestinationDeliveryFailures)" in problems[0] and "(InvocationsFailedToBeSentToDlq)" in problems[1]


def test_an_event_no_schedule_repeats_without_a_destination_or_a_dead_letter_queue_is_caught():
    def without_destination(function):
        function.configure_async_invoke(retry_attempts=2, max_event_age=Duration.hours(6))
        return targets.LambdaFunction(function)

    problems = async_invocation_problems(_probe(without_destination))
    assert len(problems) == 2
    assert "give it an on-failure destination" in problems[0] and "has no dead-letter queue" in problems[1]


def test_a_config_that_leaves_a_setting_to_lambdas_default_is_caught():
    def half_configured(function):
        function.configure_async_invoke(retry_attempts=0)
        return targets.LambdaFunction(function)

    problems = async_invocation_problems(_probe(half_configured))
    assert any("leaves MaximumEventAgeInSeconds to Lambda's default" in p for p in problems)
