"""The deployed controller closing the loop: metrics and alarm events in, SSM tunables and mappings out.

moto runs no alarm actions and the handlers' EMF lines never reach its CloudWatch, so each test
puts the callers' metrics itself and invokes the controller with the event AWS would send (a
`CloudWatch Alarm State Change`, or the minute schedule's `Scheduled Event`), with an event time
that names the period the metrics were put in.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from localcloud.drivers.control_loop import (
    alarm_state_change as alarm_event,
    decision_for as decision,
    invoke_controller as invoke,
    put_caller_minute as put_period,
    scheduled_event,
    tunables_parameter,
)
from localcloud.drivers.common import layer_stack, run_execution
from localcloud.drivers.crm_batch import crm_batch_outputs, seed_segment
from localcloud.drivers.crm_segment_large import crm_segment_large_outputs, seed_segment_object
from localcloud.referee.downstream_simulator import PROFILES

pytestmark = pytest.mark.emulator

@pytest.fixture(scope="module")
def controller(deployed) -> str:
    stack = layer_stack(deployed, "ControlLoop")
    return stack.outputs["ControllerName"]


@pytest.fixture
def tunables(cloud, deployed, controller, dev_config) -> Iterator[Any]:
    """Write a downstream's document as an operator would; every seed and the controller's state are restored after."""
    ssm = cloud.client("ssm")
    loop = layer_stack(deployed, "ControlLoop")
    seeds = {d.name: ssm.get_parameter(Name=parameter(d.name))["Parameter"]["Value"] for d in dev_config.downstreams}

    def write(downstream: str, **document: Any) -> None:
        ssm.put_parameter(Name=parameter(downstream), Value=json.dumps(document), Type="String", Overwrite=True)

    yield write
    for name, seed in seeds.items():
        ssm.put_parameter(Name=parameter(name), Value=seed, Type="String", Overwrite=True)
        cloud.client("dynamodb").delete_item(TableName=loop.outputs["ControllerStateTableName"],
                                             Key={"pk": {"S": name}})


def parameter(downstream: str) -> str:
    return tunables_parameter(downstream)


def document(cloud, downstream: str) -> dict[str, Any]:
    return json.loads(cloud.client("ssm").get_parameter(Name=parameter(downstream))["Parameter"]["Value"])


def run_crm_segment(cloud, deployed, users: int) -> Any:
    batch = crm_batch_outputs(deployed)
    segment_id = f"control-{uuid.uuid4().hex[:8]}"
    seed_segment(cloud, batch["segments_table"], segment_id, [f"user-{i:03d}" for i in range(users)])
    result = run_execution(cloud, batch["state_machine_arn"], {"segment_id": segment_id})
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    return result


def test_the_deployed_alarms_exist_and_tell_people(cloud, deployed, dev_config):
    topic = deployed["Throttling-dev-ControlLoop"].outputs["AlarmTopicArn"]
    alarms = {a["AlarmName"]: a for page in cloud.client("cloudwatch").get_paginator("describe_alarms").paginate()
              for a in page["MetricAlarms"]}
    crm = alarms["Throttling-dev-crm-ThrottleRate"]
    # (above the 429s the callers' inner loop draws itself, 2 of 3 minutes: the stage leaves it the rate)
    assert dev_config.control_loop.adjust_rate is False
    assert (crm["Threshold"], crm["EvaluationPeriods"], crm["DatapointsToAlarm"]) == (5.0, 3, 2)
    assert (crm["AlarmActions"], crm["OKActions"]) == ([topic], [topic])
    assert {f"Throttling-dev-{d.name}-{kind}" for d in dev_config.downstreams
            for kind in ("ThrottleRate", "ErrorRate", "ErrorRateSustained", "LatencyP99")} <= set(alarms)


def test_the_deployed_tenant_rules_exist_over_the_callers_log_groups(cloud, deployed, dev_config):
    # GIVEN the deployed stage's Contributor Insights rules (moto stores them; nothing evaluates them)
    rules = {r["Name"]: r for r in cloud.client("cloudwatch").describe_insight_rules()["InsightRules"]}
    groups = {g["logGroupName"] for page in cloud.client("logs").get_paginator("describe_log_groups").paginate()
              for g in page["logGroups"]}
    # THEN each downstream has both, enabled, each reading log groups the stage created, by exact name
    for d in dev_config.downstreams:
        for kind in ("Refused", "Answered"):
            rule = rules[f"Throttling-dev-{d.name}-TopTenants{kind}"]
            names = json.loads(rule["Definition"])["LogGroupNames"]
            assert rule["State"] == "ENABLED" and names and set(names) <= groups, (names, sorted(groups)[:5])


def test_a_429_alarm_lowers_the_crm_concurrency_and_the_next_batch_runs_with_it(
    cloud, deployed, controller, tunables, fresh_simulators
):
    crm = fresh_simulators["crm"]
    # GIVEN the controller in charge of the CRM (mode auto) at 6 calls in flight, and a batch that used them
    tunables("crm", rate_per_sec=9.9, burst=5, max_concurrency=6, mode="auto")
    before = run_crm_segment(cloud, deployed, users=18)
    peak_before = crm.stats()["max_in_flight"]
    assert before.output["max_concurrency"] == 6
    # WHEN a minute of 20 % 429s lands in CloudWatch and the 429-rate alarm's state change is delivered
    now = time.time()
    put_period(cloud, "crm", now, calls=600, throttled=120)
    result = invoke(cloud, controller, alarm_event("Throttling-dev-crm-ThrottleRate", "ALARM", now))
    # THEN the controller halved the CRM's concurrency in SSM and left its rate (the inner loop's, which cut the
    # bucket at the first 429 already), and said why: the alarm, not the minute's 429s, which the inner loop
    # answered (the alarm is sustained, 2 of 3 minutes, where the rate is the inner loop's)
    crm_decision = decision(result, "crm")
    assert (crm_decision["action"], crm_decision["written"]) == ("decrease", True)
    assert crm_decision["reason"] == ("429 rate 20.0% > 1.0%: the limiter's inner loop answered them; alarm"
                                      " Throttling-dev-crm-ThrottleRate in ALARM: multiplicative decrease x0.5"
                                      " (max_concurrency 6 -> 3)")
    assert document(cloud, "crm") == {"rate_per_sec": 9.9, "burst": 5, "max_concurrency": 3, "mode": "auto"}
    # AND the next batch reads it and never has more than 3 calls in flight at the CRM
    crm.reset()
    after = run_crm_segment(cloud, deployed, users=12)
    peak_after = crm.stats()["max_in_flight"]
    assert after.output == {**after.output, "max_concurrency": 3, "succeeded": 12, "failed": 0}
    assert peak_after <= 3 < peak_before, (peak_before, peak_after)


def test_a_pinned_document_is_left_alone_by_the_alarm(cloud, controller, tunables):
    # GIVEN an operator who pinned the AI model's limits
    tunables("ai_model", rate_per_sec=4.5, burst=4, max_concurrency=6, mode="manual")
    version = cloud.client("ssm").get_parameter(Name=parameter("ai_model"))["Parameter"]["Version"]
    # WHEN it answers 50 % 429s and its alarm fires
    now = time.time()
    put_period(cloud, "ai_model", now, calls=100, throttled=50, latency_ms=800)
    result = invoke(cloud, controller, alarm_event("Throttling-dev-ai_model-ThrottleRate", "ALARM", now))
    # THEN the controller held, and the document was not even rewritten
    assert decision(result, "ai_model")["reason"] == "hold: mode manual (pinned by an operator)"
    assert cloud.client("ssm").get_parameter(Name=parameter("ai_model"))["Parameter"]["Version"] == version


def test_after_a_decrease_clean_minutes_raise_the_limits_again_within_bounds(cloud, controller, tunables):
    # GIVEN the payment gateway cut to its floor by a 429 minute, nine minutes ago
    tunables("payment_gateway", rate_per_sec=1.98, burst=1, max_concurrency=2, mode="auto")
    start = (time.time() // 60) * 60 - 9 * 60
    put_period(cloud, "payment_gateway", start + 35, calls=120, throttled=30, latency_ms=500)
    cut = invoke(cloud, controller, alarm_event("Throttling-dev-payment_gateway-ThrottleRate", "ALARM", start + 35))
    assert decision(cut, "payment_gateway")["action"] == "decrease"
    settings = [(document(cloud, "payment_gateway")["max_concurrency"], document(cloud, "payment_gateway")["rate_per_sec"])]
    assert settings == [(1, 1.98)]
    # WHEN six clean minutes follow (2 calls/s at 1 s: 2 in flight, so both limits are used), each
    # judged by the schedule
    for minute in range(1, 7):
        at = start + 35 + 60 * minute
        put_period(cloud, "payment_gateway", at, calls=120, latency_ms=1000)
        result = invoke(cloud, controller, scheduled_event(at))
        assert decision(result, "payment_gateway")["action"] in ("hold", "increase")
        settings.append((document(cloud, "payment_gateway")["max_concurrency"],
                         document(cloud, "payment_gateway")["rate_per_sec"]))
    # THEN the first minute, which began before the cut reached the callers, is no evidence of it; after
    # three clean minutes of the new setting and the cooldown (120 s from when the cut could show in the
    # metrics, 90 s after it) it steps up, and the two minutes that began before that step are no evidence
    # of it either: never past the bounds (1-4 in flight) and never down; the rate is the inner loop's throughout
    assert settings == [(1, 1.98), (1, 1.98), (1, 1.98), (1, 1.98), (2, 1.98), (2, 1.98), (2, 1.98)]


def test_a_sustained_error_alarm_opens_the_downstreams_breaker(cloud, deployed, controller, tunables):
    # WHEN the AI model's sustained error-rate alarm fires
    now = time.time()
    result = invoke(cloud, controller, alarm_event("Throttling-dev-ai_model-ErrorRateSustained", "ALARM", now))
    # THEN its breaker is open for the policy's 30 s, as the breakers table shows every caller
    assert result["breaker_opened"]["status"] == "open"
    shared = deployed["Throttling-dev-SharedLimits"].outputs
    item = cloud.client("dynamodb").get_item(TableName=shared["CircuitBreakerTableName"],
                                             Key={"pk": {"S": "ai_model"}}, ConsistentRead=True)["Item"]
    assert item["status"] == {"S": "open"}
    assert 25 <= float(item["open_until"]["N"]) - now <= 35


def test_the_consumers_mapping_follows_ssm_within_the_reserved_concurrency_if_any(cloud, deployed, controller,
                                                                                  tunables):
    lambda_client = cloud.client("lambda")
    consumer = deployed["Throttling-dev-Buffers"].outputs["LegacyConsumerName"]
    (mapping,) = lambda_client.list_event_source_mappings(FunctionName=consumer)["EventSourceMappings"]
    # GIVEN a mapping someone changed by hand to 5, while SSM says 1 call in flight for the mainframe
    lambda_client.update_event_source_mapping(UUID=mapping["UUID"], ScalingConfig={"MaximumConcurrency": 5})
    tunables("legacy_mainframe", rate_per_sec=0.8, burst=1, max_concurrency=1, mode="manual")
    # WHEN the controller runs THEN the mapping is back at what SSM says (Lambda's minimum of 2)
    result = invoke(cloud, controller, scheduled_event(time.time()))
    assert [(c["from"], c["to"]) for c in decision(result, "legacy_mainframe")["mapping_changes"]] == [(5, 2)]
    # WHEN SSM allows 3 and the consumer reserves nothing (dev reserves no concurrency) THEN the mapping takes 3
    tunables("legacy_mainframe", rate_per_sec=0.8, burst=1, max_concurrency=3, mode="manual")
    result = invoke(cloud, controller, scheduled_event(time.time()))
    assert [(c["from"], c["to"]) for c in decision(result, "legacy_mainframe")["mapping_changes"]] == [(2, 3)]
    try:
        # WHEN the consumer reserves only 2 (as in a stage that reserves) THEN the mapping keeps to 2 (no throttled
        # batches)
        lambda_client.put_function_concurrency(FunctionName=consumer, ReservedConcurrentExecutions=2)
        result = invoke(cloud, controller, scheduled_event(time.time()))
        assert [(c["from"], c["to"]) for c in decision(result, "legacy_mainframe")["mapping_changes"]] == [(3, 2)]
        # AND once 4 are reserved, the mapping takes the 3
        lambda_client.put_function_concurrency(FunctionName=consumer, ReservedConcurrentExecutions=4)
        result = invoke(cloud, controller, scheduled_event(time.time()))
    finally:
        lambda_client.delete_function_concurrency(FunctionName=consumer)
    assert [(c["from"], c["to"]) for c in decision(result, "legacy_mainframe")["mapping_changes"]] == [(2, 3)]
    assert lambda_client.get_event_source_mapping(UUID=mapping["UUID"])["ScalingConfig"] == {"MaximumConcurrency": 3}
    tunables("legacy_mainframe", rate_per_sec=0.8, burst=1, max_concurrency=1, mode="manual")
    invoke(cloud, controller, scheduled_event(time.time()))  # back to 2, as deployed


def test_a_decrease_slows_a_running_segment_within_the_same_controller_run(
    cloud, deployed, controller, tunables, fresh_simulators, crm_dead_letters
):
    crm = fresh_simulators["crm"]
    sfn = cloud.client("stepfunctions")
    large = crm_segment_large_outputs(deployed)
    # GIVEN the controller in charge of the CRM at 6 calls in flight, and a CRM that answers in 2 s
    tunables("crm", rate_per_sec=9.9, burst=5, max_concurrency=6, mode="auto")
    crm.set_profile(PROFILES["crm"].merged_with({"latency": {"kind": "fixed", "median_ms": 2000, "jitter_ms": 0}}))
    # AND a large segment of 30 batches running, its Map Run with 6 children (one batch each) in flight
    batch_size = PROFILES["crm"].max_batch_size
    key = seed_segment_object(cloud, large["bucket"], [f"user-{i:04d}" for i in range(30 * batch_size)])
    execution = sfn.start_execution(stateMachineArn=large["state_machine_arn"], name=f"slowed-{uuid.uuid4().hex[:8]}",
                                    input=json.dumps({"segment_key": key}))["executionArn"]
    deadline = time.monotonic() + 120
    while not (runs := sfn.list_map_runs(executionArn=execution)["mapRuns"]):
        assert time.monotonic() < deadline, "the segment's Map Run never started"
        time.sleep(0.1)
    (map_run,) = runs

    def in_flight() -> int:
        return sfn.describe_map_run(mapRunArn=map_run["mapRunArn"])["itemCounts"]["running"]

    peak_before = 0
    while peak_before < 6:
        assert time.monotonic() < deadline, f"never 6 children in flight (seen {peak_before})"
        peak_before = max(peak_before, in_flight())
        time.sleep(0.05)
    # WHEN a minute of 20 % 429s reaches CloudWatch and the 429-rate alarm runs the controller once
    now = time.time()
    put_period(cloud, "crm", now, calls=600, throttled=120)
    result = invoke(cloud, controller, alarm_event("Throttling-dev-crm-ThrottleRate", "ALARM", now))
    # THEN that run halved the CRM's concurrency in SSM and, in the same run, the running Map Run's
    crm_decision = decision(result, "crm")
    assert (crm_decision["action"], crm_decision["max_concurrency"]) == ("decrease", 3)
    assert [(c["map_run"], c["from"], c["to"]) for c in crm_decision["map_run_changes"]] == [
        (map_run["mapRunArn"], 6, 3)]
    assert sfn.describe_map_run(mapRunArn=map_run["mapRunArn"])["maxConcurrency"] == 3
    # AND once the children already running end, never more than 3 are in flight until the segment is done
    while in_flight() > 3:
        assert time.monotonic() < deadline, "the running children never dropped to 3"
        time.sleep(0.05)
    peak_after = 0
    while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the segment still RUNNING after 120 s"
        peak_after = max(peak_after, in_flight())
        time.sleep(0.05)
    assert peak_after <= 3 < peak_before, (peak_before, peak_after)
    # AND every user is e-mailed: slowing down loses nobody
    assert described["status"] == "SUCCEEDED", described.get("cause")
    assert json.loads(described["output"]) | {"batches": 30, "batches_succeeded": 30, "batches_failed": 0} == json.loads(
        described["output"])
    crm.set_profile(PROFILES["crm"])
