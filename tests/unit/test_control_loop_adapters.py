"""The control loop's adapters and its run, against moto in process (CloudWatch, SSM, DynamoDB, Lambda, SQS)."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
from botocore.stub import Stubber
from moto import mock_aws

from handlers import controller
from localcloud.emulator import patches
from throttling.adapters.cloudwatch_period_reader import CloudWatchPeriodReader, MetricsUnavailable
from throttling.adapters.dynamodb_controller_state import ControllerStateStore
from throttling.adapters.lambda_event_source_mappings import EventSourceMappingReconciler, mapping_concurrency
from throttling.adapters.ssm_controller_parameters import PlanReader, TunablesDocumentStore
from throttling.adapters.stepfunctions_map_runs import MapRunReconciler
from throttling.core.controller import AlarmSignal, Bounds, ControllerPolicy, ControllerState, Setting
from throttling.core.controller.plan import (
    DownstreamPlan,
    PlansUnavailable,
    parse_alarm_routes,
    parse_plan_documents,
    parse_plans,
)
from throttling.runtime.control_loop import ControlLoop

REGION = "us-east-1"
PARAMETER = "/throttling/test/downstreams/crm"
STATE_TABLE = "controller-state"
PLANS_PATH = "/throttling-controller/test/plans"
NOW = 1_800_000_050.0  # judged at :50 of a minute: the period [-1:20, -0:20) rounded is the minute before
PERIOD = (1_799_999_940.0, 1_800_000_000.0)

PLAN = DownstreamPlan(
    name="crm",
    parameter_name=PARAMETER,
    services=("crm-caller", "crm-consumer"),
    bounds=Bounds(1, 8, 0.9, 9.0, max_burst=9, expected_latency_ms=200),
    contract_rate_per_sec=10.0,
)


@pytest.fixture
def aws() -> Iterator[None]:
    undo = patches.apply("cloudwatch_percentiles")
    try:
        with mock_aws():
            yield
    finally:
        undo()


def client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)


def put_period(service: str, *, calls: float, throttled: float = 0, unavailable: float = 0, down: float = 0,
               latencies: list[float] | None = None, at: float = PERIOD[0] + 10) -> None:
    dims = [{"Name": "Downstream", "Value": "crm"}, {"Name": "service", "Value": service}]
    stamp = datetime.fromtimestamp(at, tz=timezone.utc)
    data = [{"MetricName": "DownstreamCalls", "Dimensions": dims, "Timestamp": stamp, "Value": calls, "Unit": "Count"}]
    if throttled:
        data.append({"MetricName": "DownstreamThrottled", "Dimensions": dims, "Timestamp": stamp, "Value": throttled,
                     "Unit": "Count"})
    if unavailable:
        data.append({"MetricName": "DownstreamUnavailable", "Dimensions": dims, "Timestamp": stamp,
                     "Value": unavailable, "Unit": "Count"})
    if down:
        data.append({"MetricName": "DownstreamDown", "Dimensions": dims, "Timestamp": stamp, "Value": down,
                     "Unit": "Count"})
    if latencies:
        data.append({"MetricName": "DownstreamLatency", "Dimensions": dims, "Timestamp": stamp, "Values": latencies,
                     "Unit": "Milliseconds"})
    client("cloudwatch").put_metric_data(Namespace="Throttling", MetricData=data)


def seed_tunables(document: dict[str, Any]) -> None:
    client("ssm").put_parameter(Name=PARAMETER, Value=json.dumps(document), Type="String", Overwrite=True)


def tunables() -> dict[str, Any]:
    return json.loads(client("ssm").get_parameter(Name=PARAMETER)["Parameter"]["Value"])


def create_state_table() -> None:
    client("dynamodb").create_table(
        TableName=STATE_TABLE, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])


def control_loop(plan: DownstreamPlan = PLAN, mappings: EventSourceMappingReconciler | None = None,
                 metrics: CloudWatchPeriodReader | None = None, map_runs: MapRunReconciler | None = None) -> ControlLoop:
    return ControlLoop(
        plans={plan.name: plan},
        policy=ControllerPolicy(),
        metrics=metrics or CloudWatchPeriodReader(client("cloudwatch")),
        tunables=TunablesDocumentStore(client("ssm")),
        states=ControllerStateStore(STATE_TABLE, client("dynamodb")),
        mappings=mappings,
        map_runs=map_runs,
    )


# -- reading a period ----------------------------------------------------------------------------


def test_a_period_sums_the_services_of_a_downstream_and_keeps_the_worst_p99(aws):
    # GIVEN a caller and a consumer of the CRM, each with its own calls and latencies
    put_period("crm-caller", calls=90, throttled=9, latencies=[100.0] * 90 + [900.0] * 10)
    put_period("crm-consumer", calls=10, unavailable=1, latencies=[300.0] * 10)
    # WHEN the period is read
    (metrics,) = CloudWatchPeriodReader(client("cloudwatch")).read([PLAN], *PERIOD).values()
    # THEN counts are summed, the p99 is the worse one, and the mean is weighted by samples
    assert (metrics.calls, metrics.throttled, metrics.server_errors) == (100, 9, 1)
    assert metrics.latency_p99_ms == 900
    assert metrics.latency_mean_ms == pytest.approx((90 * 100 + 10 * 900 + 10 * 300) / 110)
    assert metrics.latency_p50_ms == pytest.approx((100 * 100 + 300 * 10) / 110)


def test_answers_of_a_downstream_that_said_it_is_down_are_read_apart_from_its_errors(aws):
    # GIVEN a minute where 40 of 42 unavailable answers came with a Retry-After (the callers count them twice)
    put_period("crm-caller", calls=60, unavailable=32, down=30, latencies=[200.0] * 28)
    put_period("crm-consumer", calls=40, unavailable=10, down=10, latencies=[200.0] * 30)
    # WHEN the period is read
    (metrics,) = CloudWatchPeriodReader(client("cloudwatch")).read([PLAN], *PERIOD).values()
    # THEN the "down" answers are their own count, and only the other 2 are errors
    assert (metrics.calls, metrics.down, metrics.server_errors) == (100, 40, 2)
    assert metrics.error_rate == pytest.approx(0.02)


def test_a_down_period_holds_the_document(aws):
    # GIVEN the CRM's document and a minute the CRM answered mostly 503 with a Retry-After
    create_state_table()
    seed_tunables({"rate_per_sec": 9.0, "burst": 9, "max_concurrency": 4, "mode": "auto"})
    put_period("crm-caller", calls=600, unavailable=300, down=300, latencies=[200.0] * 300)
    # WHEN the controller runs
    (outcome,) = control_loop().run(NOW)
    # THEN it holds: an outage is not overload
    assert (outcome.action, outcome.written) == ("hold", False)
    assert "answered 300 calls with 5xx + Retry-After" in outcome.reason
    assert tunables()["max_concurrency"] == 4


def test_a_period_without_calls_is_no_data(aws):
    put_period("crm-caller", calls=50, at=PERIOD[0] - 120)  # an older minute only
    assert CloudWatchPeriodReader(client("cloudwatch")).read([PLAN], *PERIOD) == {"crm": None}


def test_a_cloudwatch_failure_is_told_apart_as_metrics_unavailable_and_the_run_holds(aws):
    # GIVEN CloudWatch refusing the period's query (throttled)
    create_state_table()
    seed_tunables({"rate_per_sec": 9.0, "burst": 9, "max_concurrency": 4, "mode": "auto"})
    cloudwatch = client("cloudwatch")
    stubber = Stubber(cloudwatch)
    stubber.add_client_error("get_metric_data", service_error_code="Throttling", http_status_code=400)
    stubber.add_client_error("get_metric_data", service_error_code="Throttling", http_status_code=400)
    with stubber:
        # WHEN the reader reads it THEN the AWS error arrives as the domain's MetricsUnavailable
        with pytest.raises(MetricsUnavailable, match="could not read the period's metrics from CloudWatch"):
            CloudWatchPeriodReader(cloudwatch).read([PLAN], *PERIOD)
        # AND a run holds every downstream on no data, saying why, and leaves the document alone
        (outcome,) = control_loop(metrics=CloudWatchPeriodReader(cloudwatch)).run(NOW)
    assert (outcome.action, outcome.written) == ("hold", False)
    assert outcome.error is not None and outcome.error.startswith("metrics unavailable: MetricsUnavailable(")
    assert tunables()["max_concurrency"] == 4


# -- one run -------------------------------------------------------------------------------------


def test_a_429_heavy_period_lowers_the_document_and_keeps_its_other_fields(aws):
    # GIVEN the CRM's document (with a field the controller does not own) and a minute of 12 % 429s
    create_state_table()
    seed_tunables({"rate_per_sec": 9.0, "burst": 9, "max_concurrency": 4, "mode": "auto", "note": "keep me"})
    put_period("crm-caller", calls=600, throttled=72, latencies=[200.0] * 528)
    # WHEN the controller runs
    (outcome,) = control_loop().run(NOW)
    # THEN it halved concurrency and rate, scaled the burst with the rate, and kept the rest
    assert (outcome.action, outcome.written) == ("decrease", True)
    assert outcome.reason.startswith("429 rate 12.0% > 1.0%: multiplicative decrease x0.5")
    assert tunables() == {"rate_per_sec": 4.5, "burst": 4, "max_concurrency": 2, "mode": "auto", "note": "keep me"}
    # AND its state (the decrease time, what it wrote) is in DynamoDB for the next run
    state, version = ControllerStateStore(STATE_TABLE, client("dynamodb")).load("crm")
    assert (state.last_decrease_at, state.written, version) == (NOW, Setting(2, 4.5), 1)


def test_a_pinned_document_is_read_and_never_written(aws):
    create_state_table()
    seed_tunables({"rate_per_sec": 9.0, "burst": 9, "max_concurrency": 4, "mode": "manual"})
    put_period("crm-caller", calls=600, throttled=300, latencies=[200.0] * 300)
    (outcome,) = control_loop().run(NOW)
    assert (outcome.action, outcome.reason, outcome.written) == ("hold", "hold: mode manual (pinned by an operator)",
                                                                 False)
    assert client("ssm").get_parameter(Name=PARAMETER)["Parameter"]["Version"] == 1
    assert "Item" not in client("dynamodb").get_item(TableName=STATE_TABLE, Key={"pk": {"S": "crm"}})


def test_an_unusable_document_is_reported_and_left_alone(aws):
    create_state_table()
    client("ssm").put_parameter(Name=PARAMETER, Value="{not json", Type="String")
    (outcome,) = control_loop().run(NOW)
    assert outcome.action == "error" and "refused the tunables document" in outcome.reason
    assert client("ssm").get_parameter(Name=PARAMETER)["Parameter"]["Value"] == "{not json"


def test_an_operator_write_between_read_and_write_wins(aws):
    # GIVEN a document read by the controller
    seed_tunables({"rate_per_sec": 9.0, "burst": 9, "max_concurrency": 4, "mode": "auto"})
    store = TunablesDocumentStore(client("ssm"))
    read = store.read(PARAMETER)
    # WHEN an operator writes it before the controller does
    seed_tunables({"rate_per_sec": 9.0, "burst": 9, "max_concurrency": 6, "mode": "auto"})
    # THEN the controller's write is dropped
    assert store.write(read, {"max_concurrency": 2}) is False
    assert tunables()["max_concurrency"] == 6


def test_state_writes_are_guarded_by_their_version(aws):
    create_state_table()
    store = ControllerStateStore(STATE_TABLE, client("dynamodb"))
    assert store.save("crm", ControllerState(clean_periods=1), None, NOW) is True
    assert store.save("crm", ControllerState(clean_periods=2), None, NOW) is False  # someone created it first
    _, version = store.load("crm")
    assert store.save("crm", ControllerState(clean_periods=3), version, NOW) is True
    assert store.save("crm", ControllerState(clean_periods=4), version, NOW) is False  # stale version
    assert store.load("crm")[0].clean_periods == 3


# -- event-source mappings -----------------------------------------------------------------------


@pytest.mark.parametrize(("max_concurrency", "reserved", "expected"),
                         [(1, None, 2), (5, None, 5), (5, 3, 3), (5, 1, 2), (2_000, None, 1_000)])
def test_mapping_concurrency_is_at_least_2_and_never_above_the_reserved_concurrency(max_concurrency, reserved,
                                                                                    expected):
    assert mapping_concurrency(max_concurrency, reserved) == expected


def create_consumer(reserved: int | None) -> str:
    role = client("iam").create_role(RoleName="consumer", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return {}\n")
    client("lambda").create_function(FunctionName="consumer", Runtime="python3.13", Role=role,
                                     Handler="handler.handler", Code={"ZipFile": code.getvalue()})
    if reserved is not None:
        client("lambda").put_function_concurrency(FunctionName="consumer", ReservedConcurrentExecutions=reserved)
    queue_arn = client("sqs").get_queue_attributes(
        QueueUrl=client("sqs").create_queue(QueueName="buffer")["QueueUrl"], AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    client("lambda").create_event_source_mapping(FunctionName="consumer", EventSourceArn=queue_arn, BatchSize=5,
                                                 ScalingConfig={"MaximumConcurrency": 2})
    return "consumer"


def maximum_concurrency(function_name: str) -> int:
    (mapping,) = client("lambda").list_event_source_mappings(FunctionName=function_name)["EventSourceMappings"]
    return mapping["ScalingConfig"]["MaximumConcurrency"]


def test_the_mapping_follows_the_document_within_the_reserved_concurrency(aws):
    # GIVEN a consumer with 4 reserved and a mapping at 2
    function_name = create_consumer(reserved=4)
    reconciler = EventSourceMappingReconciler(client("lambda"))
    # WHEN the tunables say 3, then 6, then 1
    first = reconciler.reconcile(function_name, 3)
    assert maximum_concurrency(function_name) == 3
    reconciler.reconcile(function_name, 6)
    assert maximum_concurrency(function_name) == 4  # capped at the reserved concurrency
    reconciler.reconcile(function_name, 1)
    assert maximum_concurrency(function_name) == 2  # Lambda's minimum
    # THEN each change is reported, and an agreeing mapping is left alone
    assert first == [{"uuid": first[0]["uuid"], "function": "consumer", "from": 2, "to": 3, "reserved_concurrency": 4}]
    assert reconciler.reconcile(function_name, 1) == []


def test_a_run_reconciles_the_consumers_of_a_downstream_even_when_pinned(aws):
    create_state_table()
    function_name = create_consumer(reserved=10)
    seed_tunables({"rate_per_sec": 9.0, "burst": 9, "max_concurrency": 5, "mode": "manual"})
    plan = DownstreamPlan(**{**PLAN.__dict__, "consumer_functions": (function_name,)})
    (outcome,) = control_loop(plan, EventSourceMappingReconciler(client("lambda"))).run(NOW)
    assert [(c["from"], c["to"]) for c in outcome.mapping_changes] == [(2, 5)]
    assert maximum_concurrency(function_name) == 5


MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:CrmSegmentLarge"
EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:CrmSegmentLarge:segment-1"
MAP_RUN = "arn:aws:states:us-east-1:123456789012:mapRun:CrmSegmentLarge/EmailUsers:1a2b"


def stub_running_map_run(stubber: Stubber, max_concurrency: int) -> None:
    """One running execution of MACHINE with one running Map Run at `max_concurrency`."""
    started = datetime(2027, 1, 15, 8, 0, tzinfo=timezone.utc)
    stubber.add_response("list_executions", {"executions": [
        {"executionArn": EXECUTION, "stateMachineArn": MACHINE, "name": "segment-1", "status": "RUNNING",
         "startDate": started}]}, {"stateMachineArn": MACHINE, "statusFilter": "RUNNING"})
    stubber.add_response("list_map_runs", {"mapRuns": [
        {"executionArn": EXECUTION, "mapRunArn": MAP_RUN, "stateMachineArn": f"{MACHINE}/EmailUsers",
         "startDate": started}]}, {"executionArn": EXECUTION})
    counts = dict.fromkeys(("pending", "running", "succeeded", "failed", "timedOut", "aborted", "total",
                            "resultsWritten"), 0)
    stubber.add_response("describe_map_run", {
        "mapRunArn": MAP_RUN, "executionArn": EXECUTION, "status": "RUNNING", "startDate": started,
        "maxConcurrency": max_concurrency, "toleratedFailurePercentage": 10.0, "toleratedFailureCount": 0,
        "itemCounts": counts, "executionCounts": counts}, {"mapRunArn": MAP_RUN})


def test_a_decrease_retunes_the_running_map_runs_of_the_downstreams_workflows(aws):
    # GIVEN the CRM at 4 calls in flight, a segment workflow whose running Map Run started with 4, and 12 % 429s
    create_state_table()
    seed_tunables({"rate_per_sec": 9.0, "burst": 9, "max_concurrency": 4, "mode": "auto"})
    put_period("crm-caller", calls=600, throttled=72, latencies=[200.0] * 528)
    sfn = client("stepfunctions")
    with Stubber(sfn) as stubber:
        stub_running_map_run(stubber, max_concurrency=4)
        stubber.add_response("update_map_run", {}, {"mapRunArn": MAP_RUN, "maxConcurrency": 2})
        plan = DownstreamPlan(**{**PLAN.__dict__, "map_run_workflows": (MACHINE,)})
        # WHEN the controller runs
        (outcome,) = control_loop(plan, map_runs=MapRunReconciler(sfn)).run(NOW)
        # THEN the document went to 2, and so did the running Map Run, in the same run
        stubber.assert_no_pending_responses()
    assert (outcome.action, tunables()["max_concurrency"]) == ("decrease", 2)
    assert outcome.map_run_changes == [{"map_run": MAP_RUN, "execution": EXECUTION, "from": 4, "to": 2}]
    assert outcome.summary()["map_run_changes"] == outcome.map_run_changes and outcome.error is None


def test_a_map_run_the_controller_cannot_retune_is_reported_and_the_decision_stands(aws):
    # GIVEN the same overload, and Step Functions refusing the update
    create_state_table()
    seed_tunables({"rate_per_sec": 9.0, "burst": 9, "max_concurrency": 4, "mode": "auto"})
    put_period("crm-caller", calls=600, throttled=72, latencies=[200.0] * 528)
    sfn = client("stepfunctions")
    with Stubber(sfn) as stubber:
        stub_running_map_run(stubber, max_concurrency=4)
        stubber.add_client_error("update_map_run", "AccessDeniedException", "not authorized", 400)
        plan = DownstreamPlan(**{**PLAN.__dict__, "map_run_workflows": (MACHINE,)})
        # WHEN the controller runs
        (outcome,) = control_loop(plan, map_runs=MapRunReconciler(sfn)).run(NOW)
    # THEN the decrease is written and kept in the state, and the outcome carries the error for the run to fail on
    assert (outcome.action, outcome.written, tunables()["max_concurrency"]) == ("decrease", True, 2)
    assert outcome.error is not None and "AccessDeniedException" in outcome.error and MACHINE in outcome.error
    state, _ = ControllerStateStore(STATE_TABLE, client("dynamodb")).load("crm")
    assert state.written == Setting(2, 4.5)


# -- plans and routes as the CDK app writes them -------------------------------------------------

CRM_PLAN = {"parameter_name": PARAMETER, "services": ["crm-caller"], "contract_rate_per_sec": 10,
            "bounds": {"min_concurrency": 1, "max_concurrency": 8, "min_rate_per_sec": 0.9, "max_rate_per_sec": 9,
                       "max_burst": 9},
            "alarms": {"Throttling-test-crm-ThrottleRate": "throttled",
                       "Throttling-test-crm-ErrorRateSustained": "breaker"}}


def test_plans_and_routes_parse_and_refuse_unknown_fields():
    plans = parse_plans(json.dumps({"crm": {
        "parameter_name": PARAMETER, "services": ["crm-caller"], "contract_rate_per_sec": 10,
        "bounds": {"min_concurrency": 1, "max_concurrency": 8, "min_rate_per_sec": 0.9, "max_rate_per_sec": 9}}}))
    assert plans["crm"].bounds.max_concurrency == 8
    with pytest.raises(ValueError, match=r"unknown plan fields \['service'\]"):
        parse_plans(json.dumps({"crm": {"service": "x"}}))
    routes = parse_alarm_routes(json.dumps({"A": {"downstream": "crm", "kind": "breaker"}}))
    assert (routes["A"].downstream, routes["A"].signal_kind) == ("crm", "errors")
    with pytest.raises(ValueError, match="alarm route kind must be one of"):
        parse_alarm_routes(json.dumps({"A": {"downstream": "crm", "kind": "panic"}}))


def test_each_plan_document_declares_its_alarms_and_a_bad_one_is_refused_alone():
    # GIVEN the CRM's plan, and documents that are not JSON, not an object, or route an alarm to a kind that does not exist
    documents = {"crm": json.dumps(CRM_PLAN), "ai_model": "{not json", "legacy": "[]",
                 "payments": json.dumps({**CRM_PLAN, "alarms": {"A": "panic"}})}
    # WHEN they are parsed
    plans = parse_plan_documents(documents)
    # THEN the CRM's plan is in force with its routes, and each bad document is refused with its reason
    assert set(plans.downstreams) == {"crm"}
    assert {name: (route.downstream, route.kind) for name, route in plans.alarms.items()} == {
        "Throttling-test-crm-ThrottleRate": ("crm", "throttled"),
        "Throttling-test-crm-ErrorRateSustained": ("crm", "breaker")}
    assert set(plans.refused) == {"ai_model", "legacy", "payments"}
    assert "JSONDecodeError" in plans.refused["ai_model"] and "kind 'panic'" in plans.refused["payments"]


def test_the_plan_reader_keeps_the_last_good_plans_through_a_bad_read_or_a_bad_document():
    answers: list[Any] = [{"crm": json.dumps(CRM_PLAN)}, GetParameterError("ThrottlingException"),
                          {"crm": "{broken"}, {"crm": json.dumps({**CRM_PLAN, "contract_rate_per_sec": 5})}]

    def fetch(path: str) -> dict[str, str]:
        assert path == PLANS_PATH
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    reader = PlanReader(PLANS_PATH, fetch)
    # WHEN the first read succeeds THEN its plan is in force
    assert reader.get().downstreams["crm"].contract_rate_per_sec == 10
    # WHEN a read fails THEN the last good plan stays
    assert reader.get().downstreams["crm"].contract_rate_per_sec == 10
    # WHEN the document is broken THEN it is refused (reported) and the last good plan stays
    plans = reader.get()
    assert plans.downstreams["crm"].contract_rate_per_sec == 10 and "crm" in plans.refused
    # WHEN a good document comes back THEN it is adopted
    assert reader.get().downstreams["crm"].contract_rate_per_sec == 5


def test_the_plan_reader_raises_when_no_plan_was_ever_usable():
    with pytest.raises(PlansUnavailable, match="could not read the controller's plans"):
        PlanReader(PLANS_PATH, lambda path: (_ for _ in ()).throw(GetParameterError("AccessDenied"))).get()
    with pytest.raises(PlansUnavailable, match="no usable plan"):
        PlanReader(PLANS_PATH, lambda path: {}).get()


# -- the handler ---------------------------------------------------------------------------------


@dataclass
class Context:
    function_name: str = "controller"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:controller"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 50_000


# The environment the CDK app gives the controller (the tables and the plans path of this module).
CONTROLLER_ENVIRONMENT = {
    "CONTROLLER_PLANS_PATH": PLANS_PATH,
    "CONTROLLER_STATE_TABLE_NAME": STATE_TABLE,
    "BREAKER_TABLE_NAME": "breakers",
    "SEMAPHORE_TABLE_NAME": "semaphores",
    "CONTROLLER_LEASE_WAIT_SEC": "0",
    "POWERTOOLS_SERVICE_NAME": "throttling-controller",
    "POWERTOOLS_METRICS_NAMESPACE": "Throttling",
}


@dataclass
class ControllerUnderTest:
    """The handler with dependencies built from the CDK app's environment and moto's clients."""

    deps: controller.Dependencies

    def handler(self, event: dict[str, Any], context: Context) -> dict[str, Any]:
        return controller.handle(event, context, self.deps)  # type: ignore[arg-type]


def build_dependencies() -> controller.Dependencies:
    return controller.build_dependencies(
        CONTROLLER_ENVIRONMENT, ssm=client("ssm"), dynamodb=client("dynamodb"), cloudwatch=client("cloudwatch"),
        lambda_client=client("lambda"))


@pytest.fixture
def controller_handler(aws) -> ControllerUnderTest:
    """The controller's tables and plan as the CDK app deploys them, in moto."""
    create_state_table()
    for table in ("breakers", "semaphores"):
        client("dynamodb").create_table(
            TableName=table, BillingMode="PAY_PER_REQUEST", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    seed_tunables({"rate_per_sec": 9.0, "burst": 9, "max_concurrency": 4, "mode": "auto"})
    # The plan as the stack writes it: one parameter per downstream under the plans path.
    client("ssm").put_parameter(Name=f"{PLANS_PATH}/crm", Value=json.dumps(CRM_PLAN), Type="String")
    return ControllerUnderTest(build_dependencies())


def alarm_event(name: str, state: str, time: str) -> dict[str, Any]:
    return {"version": "0", "id": "e-1", "detail-type": "CloudWatch Alarm State Change", "source": "aws.cloudwatch",
            "account": "123456789012", "time": time, "region": REGION,
            "resources": [f"arn:aws:cloudwatch:{REGION}:123456789012:alarm:{name}"],
            "detail": {"alarmName": name, "state": {"value": state, "reason": "Threshold Crossed",
                                                    "timestamp": time}}}


def iso(epoch_sec: float) -> str:
    return datetime.fromtimestamp(epoch_sec, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def test_the_handler_slows_down_on_a_429_alarm_and_opens_the_breaker_on_a_sustained_error_alarm(controller_handler):
    now = controller_handler.deps.clock.now()
    # WHEN the 429-rate alarm goes to ALARM
    result = controller_handler.handler(alarm_event("Throttling-test-crm-ThrottleRate", "ALARM", iso(now)), Context())
    # THEN the CRM's limits are halved on the alarm's word, without opening its breaker
    assert result["decisions"][0]["action"] == "decrease"
    assert (tunables()["max_concurrency"], tunables()["rate_per_sec"]) == (2, 4.5)
    assert result["breaker_opened"] is None
    # WHEN the sustained error-rate alarm goes to ALARM
    result = controller_handler.handler(alarm_event("Throttling-test-crm-ErrorRateSustained", "ALARM", iso(now + 5)),
                                        Context())
    # THEN the breaker is open for its policy's duration, and the limits stay (cooldown)
    assert result["breaker_opened"]["status"] == "open"
    assert result["breaker_opened"]["reason"].startswith("alarm Throttling-test-crm-ErrorRateSustained")
    assert "cooling down" in result["decisions"][0]["reason"]


def test_the_handler_ignores_alarms_it_does_not_route_and_oks_change_nothing(controller_handler):
    now = controller_handler.deps.clock.now()
    assert controller_handler.handler(alarm_event("Someone-elses", "ALARM", iso(now)), Context()) == {
        "ignored_alarm": "Someone-elses"}
    result = controller_handler.handler(alarm_event("Throttling-test-crm-ThrottleRate", "OK", iso(now)), Context())
    assert result["decisions"][0]["action"] == "hold"
    assert tunables()["max_concurrency"] == 4


def test_the_handler_judges_at_the_event_time_unless_it_is_far_from_the_clock():
    assert controller.judged_at({"time": "2026-11-01T12:00:00Z"}, 1_793_534_410.0) == 1_793_534_400.0
    assert controller.judged_at({"time": "2020-01-01T00:00:00Z"}, 1_793_534_410.0) == 1_793_534_410.0
    assert controller.judged_at({}, 5.0) == 5.0


def test_a_downstream_the_run_cannot_handle_fails_the_invocation_after_the_others(controller_handler):
    client("ssm").put_parameter(Name=PARAMETER, Value="[]", Type="String", Overwrite=True)
    with pytest.raises(controller.ControlLoopFailed, match="refused the tunables document"):
        controller_handler.handler({"detail-type": "Scheduled Event", "time": iso(controller_handler.deps.clock.now())},
                                   Context())


def test_a_refused_plan_document_fails_the_invocation_after_the_downstreams_it_could_run(controller_handler):
    # GIVEN a second downstream whose plan document is broken
    client("ssm").put_parameter(Name=f"{PLANS_PATH}/ai_model", Value="{broken", Type="String")
    # WHEN the schedule runs THEN the CRM is judged and the invocation fails naming the refused plan
    with pytest.raises(controller.ControlLoopFailed, match="ai_model.*refused its plan document"):
        controller_handler.handler({"detail-type": "Scheduled Event", "time": iso(controller_handler.deps.clock.now())},
                                   Context())
    assert client("dynamodb").get_item(TableName=STATE_TABLE, Key={"pk": {"S": "crm"}}).get("Item")


def test_one_run_decides_at_a_time_without_reserved_concurrency(controller_handler):
    # GIVEN another run holding the controller's lease (reserved concurrency off: both were started)
    from throttling.adapters.dynamodb_semaphore import DynamoDbSemaphore

    other = DynamoDbSemaphore("semaphores", client=client("dynamodb"))
    assert other.acquire("throttling-controller", "req-other", limit=1, lease_sec=50)
    now = controller_handler.deps.clock.now()
    # WHEN the schedule's run comes THEN it skips and writes nothing (the next minute judges)
    assert controller_handler.handler({"detail-type": "Scheduled Event", "time": iso(now)}, Context()) == {
        "skipped": "another controller run holds the lease"}
    assert tunables()["max_concurrency"] == 4
    # AND an alarm's run fails, so Lambda delivers the alarm again
    with pytest.raises(controller.ControllerBusy):
        controller_handler.handler(alarm_event("Throttling-test-crm-ThrottleRate", "ALARM", iso(now)), Context())
    # WHEN the other run is done THEN the alarm's run decides, and gives the lease back
    other.release("throttling-controller", "req-other")
    result = controller_handler.handler(alarm_event("Throttling-test-crm-ThrottleRate", "ALARM", iso(now)), Context())
    assert result["decisions"][0]["action"] == "decrease"
    assert other.acquire("throttling-controller", "req-after", limit=1, lease_sec=50)


def test_an_alarm_signal_reaches_the_controller_as_its_kind():
    assert AlarmSignal("x", "latency").kind == "latency"


def test_the_lambda_entry_builds_its_dependencies_once_per_environment(controller_handler, monkeypatch):
    # GIVEN the environment the CDK app gives the controller (and no dependencies built at import)
    for name, value in CONTROLLER_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    controller._dependencies_for.cache_clear()
    try:
        # WHEN the entry point runs the schedule's event THEN it judges the CRM with dependencies built from it
        result = controller.handler({"detail-type": "Scheduled Event", "time": iso(NOW)}, Context())
        assert [decision["downstream"] for decision in result["decisions"]] == ["crm"]
        # AND they are built once per environment: the same ones until a variable changes
        first = controller.dependencies()
        assert controller.dependencies() is first
        monkeypatch.setenv("CONTROLLER_LEASE_WAIT_SEC", "2")
        assert controller.dependencies().lease_wait_sec == 2.0
    finally:
        controller._dependencies_for.cache_clear()
