"""Fine-grained assertions on the synthesized templates: these carry the meaning, snapshots only detect change."""

from __future__ import annotations

import json
import math
import re

import pytest
from aws_cdk import App
from aws_cdk.assertions import Match, Template

from tests.infra.cloudformation import referenced_ids
from throttling.core import names, planning


@pytest.fixture(scope="module")
def shared_limits(dev_assembly) -> Template:
    stacks, _ = dev_assembly
    return Template.from_stack(stacks["shared_limits"])


@pytest.fixture(scope="module")
def workflows(dev_assembly) -> Template:
    stacks, _ = dev_assembly
    return Template.from_stack(stacks["workflows"])


def test_one_tunables_document_per_downstream_under_the_stage_prefix(shared_limits, dev_config):
    # THEN each downstream has its parameter, seeded with its planned rate and the concurrency that spends it
    # (the CRM: 3 calls in flight at 300 ms a call)
    shared_limits.resource_count_is("AWS::SSM::Parameter", 2 * len(dev_config.downstreams))
    crm = shared_limits.find_resources(
        "AWS::SSM::Parameter", {"Properties": {"Name": "/throttling/dev/downstreams/crm"}}
    )
    (resource,) = crm.values()
    assert json.loads(resource["Properties"]["Value"]) == {
        "burst": 5, "max_concurrency": 3, "mode": "auto", "rate_per_sec": 9.9,
    }


def test_each_downstream_has_a_breaker_policy_whose_probe_outlives_its_slowest_call(shared_limits, dev_config):
    for downstream in dev_config.downstreams:
        (resource,) = shared_limits.find_resources(
            "AWS::SSM::Parameter", {"Properties": {"Name": f"/throttling/dev/breakers/{downstream.name}"}}
        ).values()
        policy = json.loads(resource["Properties"]["Value"])
        assert policy["probe_lease_sec"] > downstream.timeout_sec
        assert policy["slow_call_duration_sec"] <= downstream.timeout_sec


def test_limit_tables_are_on_demand_encrypted_recoverable_and_expire_idle_items(shared_limits):
    shared_limits.resource_count_is("AWS::DynamoDB::Table", 3)
    shared_limits.all_resources_properties(
        "AWS::DynamoDB::Table",
        {
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "SSESpecification": {"SSEEnabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        },
    )


def test_expired_leases_are_swept_every_minute_by_a_function_that_may_only_scan_and_update(shared_limits):
    shared_limits.has_resource_properties("AWS::Events::Rule", {"ScheduleExpression": "rate(1 minute)",
                                                                "State": "ENABLED"})
    (reclaimer,) = shared_limits.find_resources("AWS::Lambda::Function", {
        "Properties": {"Handler": "handlers.reclaim_leases.handler"}}).values()
    assert "ReservedConcurrentExecutions" not in reclaimer["Properties"]  # dev reserves nothing
    statements = [
        statement
        for policy in shared_limits.find_resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(str(a).startswith("dynamodb:") for a in _list(statement["Action"]))
    ]
    assert [sorted(_list(s["Action"])) for s in statements] == [
        ["dynamodb:GetItem", "dynamodb:Scan", "dynamodb:UpdateItem"]
    ]


def test_each_downstream_gets_its_own_caller(workflows, dev_config):
    callers = [f for f in workflows.find_resources("AWS::Lambda::Function").values()
               if f["Properties"]["Handler"] == "handlers.call_downstream.handler"]
    assert len(callers) == len(dev_config.downstreams)
    workflows.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "handlers.call_downstream.handler",
            "Runtime": "python3.13",
            "Timeout": 10,
            "TracingConfig": {"Mode": "Active"},
            "LoggingConfig": {"LogFormat": "JSON"},
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "DOWNSTREAM_NAME": "crm",
                        "DOWNSTREAM_BASE_URL": "https://crm.example.com",
                        "DOWNSTREAM_RATE_LIMIT_PER_SEC": "10.0",
                        "TUNABLES_PARAMETER_NAME": Match.any_value(),
                        "TUNABLES_CACHE_SEC": "5",
                        "POWERTOOLS_SERVICE_NAME": "crm-caller",
                        "POWERTOOLS_METRICS_NAMESPACE": "Throttling",
                    }
                )
            },
        },
    )


def test_logs_are_kept_for_the_configured_retention(workflows, dev_config):
    # one per function, one per state machine
    writers = len(workflows.find_resources("AWS::Lambda::Function")) + len(
        workflows.find_resources("AWS::StepFunctions::StateMachine"))
    workflows.resource_count_is("AWS::Logs::LogGroup", writers)
    workflows.all_resources_properties("AWS::Logs::LogGroup", {"RetentionInDays": 14})


def test_no_managed_policies_and_tunables_read_is_scoped_to_one_parameter(workflows, dev_config):
    # THEN the roles carry no AWS managed policy
    for role in workflows.find_resources("AWS::IAM::Role").values():
        assert "ManagedPolicyArns" not in role["Properties"]
    # AND each caller may read only its own downstream's parameter
    policies = workflows.find_resources("AWS::IAM::Policy")
    ssm_statements = [
        statement
        for policy in policies.values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(str(a).startswith("ssm:") for a in _list(statement["Action"]))
    ]
    assert len(ssm_statements) >= len(dev_config.downstreams)  # each caller, and workflows reading their tunables
    for statement in ssm_statements:
        assert set(_list(statement["Action"])) <= {"ssm:DescribeParameters", "ssm:GetParameter", "ssm:GetParameters",
                                                     "ssm:GetParameterHistory"}
        assert "*" not in json.dumps(statement["Resource"])


@pytest.fixture(scope="module")
def crm_batch(workflows) -> dict:
    (machine,) = [m for logical_id, m in workflows.find_resources("AWS::StepFunctions::StateMachine").items()
                  if logical_id.startswith("CrmBatchEmail")]
    return machine


def test_the_crm_batch_is_a_standard_workflow_from_its_asl_file_with_logs_and_tracing(crm_batch, workflows):
    properties = crm_batch["Properties"]
    assert properties["StateMachineType"] == "STANDARD"
    assert json.loads(properties["DefinitionString"])["StartAt"] == "CheckTenant"
    assert sorted(properties["DefinitionSubstitutions"]) == [
        "CampaignPriority", "CrmCallerFunctionArn", "CrmTunablesParameterName", "DeadLetterQueueUrl", "DefaultTenant",
        "SegmentsTableName"]
    # AND its calls take the campaign's tenant's share as the lowest class, shed first when the CRM is saturated
    assert (properties["DefinitionSubstitutions"]["CampaignPriority"],
            properties["DefinitionSubstitutions"]["DefaultTenant"]) == ("batch", "default")
    assert properties["TracingConfiguration"] == {"Enabled": True}
    assert properties["LoggingConfiguration"]["Level"] == "ALL"
    # AND it logs to a log group of its own
    (log_group_id,) = referenced_ids(properties["LoggingConfiguration"]["Destinations"])
    assert workflows.to_json()["Resources"][log_group_id]["Type"] == "AWS::Logs::LogGroup"


def test_the_crm_batch_reads_the_crm_caller_the_crm_tunables_and_the_segments_table(crm_batch, workflows):
    substitutions = crm_batch["Properties"]["DefinitionSubstitutions"]
    resources = workflows.to_json()["Resources"]
    (caller,) = referenced_ids(substitutions["CrmCallerFunctionArn"])
    assert resources[caller]["Properties"]["Environment"]["Variables"]["DOWNSTREAM_NAME"] == "crm"
    assert "TunablesDownstreamsCrm" in json.dumps(substitutions["CrmTunablesParameterName"])
    (table,) = referenced_ids(substitutions["SegmentsTableName"])
    (queue,) = referenced_ids(substitutions["DeadLetterQueueUrl"])
    assert (resources[table]["Type"], resources[queue]["Type"]) == ("AWS::DynamoDB::Table", "AWS::SQS::Queue")


def test_the_segments_table_is_on_demand_encrypted_and_recoverable(workflows):
    (table,) = [t for logical_id, t in workflows.find_resources("AWS::DynamoDB::Table").items()
                if logical_id.startswith("SegmentsTable")]
    assert {k: table["Properties"].get(k) for k in ("BillingMode", "KeySchema", "SSESpecification",
                                                    "PointInTimeRecoverySpecification")} == {
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "SSESpecification": {"SSEEnabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
    }


def test_the_dead_letter_queue_is_encrypted_refuses_plain_http_and_keeps_messages_14_days(crm_batch, workflows):
    (queue_id,) = referenced_ids(crm_batch["Properties"]["DefinitionSubstitutions"]["DeadLetterQueueUrl"])
    queue = workflows.to_json()["Resources"][queue_id]["Properties"]
    assert (queue["SqsManagedSseEnabled"], queue["MessageRetentionPeriod"]) == (True, 14 * 24 * 3600)
    (policy,) = [p for p in workflows.find_resources("AWS::SQS::QueuePolicy").values()
                 if {"Ref": queue_id} in p["Properties"]["Queues"]]
    assert any(s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
               for s in policy["Properties"]["PolicyDocument"]["Statement"])


def test_the_state_machine_role_may_do_exactly_what_the_file_does(crm_batch, workflows):
    (role,) = referenced_ids(crm_batch["Properties"]["RoleArn"])
    statements = [
        statement
        for policy in workflows.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Resource"] != "*"  # X-Ray and log delivery (no resource-level permissions)
    ]
    by_service = {sorted(_list(s["Action"]))[0].split(":")[0]: sorted(_list(s["Action"])) for s in statements}
    assert by_service == {
        "ssm": ["ssm:DescribeParameters", "ssm:GetParameter", "ssm:GetParameterHistory", "ssm:GetParameters"],
        "dynamodb": ["dynamodb:GetItem"],
        # the unqualified function only, not `<arn>:*` (every version and alias)
        "lambda": ["lambda:InvokeFunction"],
        "sqs": ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"],
    }
    (invoke,) = [s for s in statements if s["Action"] == "lambda:InvokeFunction"]
    assert isinstance(invoke["Resource"], dict)


def test_the_crm_batch_runs_daily_for_the_daily_segment(crm_batch, workflows):
    (machine_id,) = [i for i in workflows.find_resources("AWS::StepFunctions::StateMachine")
                     if i.startswith("CrmBatchEmail")]
    (rule,) = [r for r in workflows.find_resources("AWS::Events::Rule").values()
               if referenced_ids(r["Properties"]["Targets"]) & {machine_id}]
    assert rule["Properties"]["ScheduleExpression"] == "cron(0 6 * * ? *)"
    (target,) = rule["Properties"]["Targets"]
    assert json.loads(target["Input"]) == {"segment_id": "daily", "tenant": "default"}


def test_the_crm_batch_outputs_what_operators_and_the_demo_need(workflows):
    outputs = workflows.to_json()["Outputs"]
    assert {"CrmBatchEmailStateMachineArn", "SegmentsTableName", "CrmBatchEmailDeadLetterQueueUrl"} <= set(outputs)


def test_an_asl_file_and_its_substitutions_must_agree_at_synth():
    from aws_cdk import App, RemovalPolicy, Stack
    from aws_cdk import aws_logs as logs

    from stacks.app_assets import statemachine_file
    from stacks.patterns import AslStateMachine

    # GIVEN the CRM batch file, with one placeholder left out and one stray substitution
    stack = Stack(App(), "Probe")
    # WHEN the construct is built THEN it refuses, naming both
    with pytest.raises(ValueError, match=r"missing \['SegmentsTableName'\], unused \['Stray'\]"):
        AslStateMachine(stack, "Machine", definition_file=statemachine_file("crm_batch_email.asl.json"),
                        definition_substitutions={"CrmTunablesParameterName": "p", "CrmCallerFunctionArn": "f",
                                                  "DeadLetterQueueUrl": "q", "DefaultTenant": "d",
                                                  "CampaignPriority": "c", "Stray": "x"},
                        log_retention=logs.RetentionDays.TWO_WEEKS, removal_policy=RemovalPolicy.DESTROY)


def _list(value):
    return value if isinstance(value, list) else [value]


# -- use case 4: the legacy mainframe's buffer (Buffers stack) ------------------------------------


@pytest.fixture(scope="module")
def buffers(dev_assembly) -> Template:
    stacks, _ = dev_assembly
    return Template.from_stack(stacks["buffers"])


@pytest.fixture(scope="module")
def legacy_consumer(buffers) -> tuple[str, dict]:
    (item,) = buffers.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "handlers.legacy_consumer.handler"}}).items()
    return item


def _legacy_queues(buffers) -> tuple[tuple[str, dict], tuple[str, dict]]:
    queues = buffers.find_resources("AWS::SQS::Queue")
    (source,) = [(lid, q) for lid, q in queues.items() if "RedrivePolicy" in q["Properties"]]
    (dead,) = [(lid, q) for lid, q in queues.items() if "RedrivePolicy" not in q["Properties"]]
    return source, dead


def test_the_legacy_consumer_reserves_the_concurrency_its_mapping_may_use_and_reports_item_failures(
    buffers, legacy_consumer
):
    function_id, function = legacy_consumer
    # THEN the mapping runs batches of 5, at most 2 at once (Lambda's minimum), reporting partial failures
    buffers.resource_count_is("AWS::Lambda::EventSourceMapping", 1)
    (mapping,) = buffers.find_resources("AWS::Lambda::EventSourceMapping").values()
    assert mapping["Properties"]["BatchSize"] == 5
    assert mapping["Properties"]["ScalingConfig"] == {"MaximumConcurrency": 2}
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert "MaximumBatchingWindowInSeconds" not in mapping["Properties"]
    assert referenced_ids(mapping["Properties"]["FunctionName"]) == {function_id}
    # AND the function reserves nothing in dev (a stage that reserves gives it the mapping's 2: see
    # test_reserved_concurrency.py)
    assert "ReservedConcurrentExecutions" not in function["Properties"]
    # AND its timeout fits 5 records each waiting 2 turns at 0.8 req/s plus a 10 s call, and 3 s to finish
    assert function["Properties"]["Timeout"] == 66


def test_the_legacy_queue_redrives_to_its_dead_letter_queue_after_20_receives(buffers, legacy_consumer):
    (source_id, source), (dead_id, dead) = _legacy_queues(buffers)
    _, function = legacy_consumer
    assert source["Properties"]["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dead_id, "Arn"]},
                                                     "maxReceiveCount": 20}
    # AND a message stays invisible for six function timeouts while a batch holds it
    assert source["Properties"]["VisibilityTimeout"] == 6 * function["Properties"]["Timeout"] == 396
    # AND both keep messages 14 days (a dead message keeps its first enqueue time) and are encrypted
    for queue in (source, dead):
        assert queue["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
    # AND the consumer polls the source queue, not the dead-letter queue
    (mapping,) = buffers.find_resources("AWS::Lambda::EventSourceMapping").values()
    assert referenced_ids(mapping["Properties"]["EventSourceArn"]) == {source_id}


def test_both_legacy_queues_refuse_plain_http(buffers):
    (source_id, _), (dead_id, _) = _legacy_queues(buffers)
    policies = buffers.find_resources("AWS::SQS::QueuePolicy", {"Properties": {"PolicyDocument": {
        "Statement": Match.array_with([Match.object_like({
            "Effect": "Deny", "Action": "sqs:*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])}}})
    assert {queue for policy in policies.values() for queue in referenced_ids(policy["Properties"]["Queues"])} == {
        source_id, dead_id}


def test_the_legacy_consumer_is_wired_to_the_mainframe_its_limiter_bucket_and_its_queue(buffers, legacy_consumer):
    from throttling.core.tunables import parse_tunables

    (source_id, _), (dead_id, _) = _legacy_queues(buffers)
    _, function = legacy_consumer
    env = function["Properties"]["Environment"]["Variables"]
    names = ("DOWNSTREAM_NAME", "DOWNSTREAM_BASE_URL", "DOWNSTREAM_RATE_LIMIT_PER_SEC", "DOWNSTREAM_BURST",
             "DOWNSTREAM_TIMEOUT_SEC", "QUEUE_MAX_RECEIVE_COUNT", "TUNABLES_CACHE_SEC")
    assert {name: env[name] for name in names} == {
        "DOWNSTREAM_NAME": "legacy_mainframe",
        "DOWNSTREAM_BASE_URL": "https://mainframe.example.com",
        "DOWNSTREAM_RATE_LIMIT_PER_SEC": "1.0",
        "DOWNSTREAM_BURST": "1",
        "DOWNSTREAM_TIMEOUT_SEC": "10.0",
        "QUEUE_MAX_RECEIVE_COUNT": "20",
        "TUNABLES_CACHE_SEC": "5",
    }
    # AND it plans 0.8 req/s (the 1 req/s contract less 20 % headroom), burst 1, until SSM says otherwise
    defaults = parse_tunables(env["TUNABLES_DEFAULTS"]).tunables
    assert (defaults.rate_per_sec, defaults.burst) == (0.8, 1)
    assert "TunablesDownstreamsLegacyMainframe" in json.dumps(env["TUNABLES_PARAMETER_NAME"])
    assert "RateLimiterTable" in json.dumps(env["RATE_LIMITER_TABLE_NAME"])
    assert referenced_ids(env["QUEUE_URL"]) == {source_id}
    # AND it knows its dead-letter queue, where it sends a poison message itself
    assert referenced_ids(env["DEAD_LETTER_QUEUE_URL"]) == {dead_id}


def test_the_legacy_consumer_may_take_tokens_read_its_tunables_consume_its_queue_and_write_statuses(
    buffers, legacy_consumer
):
    function_id, function = legacy_consumer
    (role,) = referenced_ids(function["Properties"]["Role"])
    (source_id, _), (dead_id, _) = _legacy_queues(buffers)
    (records_table,) = buffers.find_resources("AWS::DynamoDB::Table")
    statements = [
        statement
        for policy in buffers.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Resource"] != "*"  # X-Ray (no resource-level permissions)
    ]
    sqs_statements = {frozenset(referenced_ids(s["Resource"])): s for s in statements
                      if _list(s["Action"])[0].startswith("sqs:")}
    by_service = {sorted(_list(s["Action"]))[0].split(":")[0]: s for s in statements}
    by_service["sqs"] = sqs_statements.pop(frozenset({source_id}))
    assert sorted(by_service) == ["dynamodb", "logs", "sqs", "ssm"]
    # one conditional UpdateItem on the limiter (imported) and on the records table; no read, no scan
    assert by_service["dynamodb"]["Action"] == "dynamodb:UpdateItem"
    assert referenced_ids(by_service["dynamodb"]["Resource"]) == {records_table}
    assert "RateLimiterTable" in json.dumps(by_service["dynamodb"]["Resource"])
    # its own queue, including ChangeMessageVisibility for postponements
    assert "sqs:ChangeMessageVisibility" in by_service["sqs"]["Action"]
    assert referenced_ids(by_service["sqs"]["Resource"]) == {source_id}
    # and its dead-letter queue, where it may send a poison message and nothing else (no receive, no delete)
    assert list(sqs_statements) == [frozenset({dead_id})]
    assert sorted(sqs_statements[frozenset({dead_id})]["Action"]) == [
        "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"]
    # the mainframe's tunables only
    assert "TunablesDownstreamsLegacyMainframe" in json.dumps(by_service["ssm"]["Resource"])
    assert "ssm:PutParameter" not in by_service["ssm"]["Action"]


def test_the_records_table_is_on_demand_encrypted_recoverable_and_forgets_old_statuses(buffers):
    buffers.resource_count_is("AWS::DynamoDB::Table", 1)
    buffers.has_resource_properties("AWS::DynamoDB::Table", {
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "SSESpecification": {"SSEEnabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
    })


def test_the_publishing_workflow_comes_from_its_file_and_may_only_send_to_the_legacy_queue(buffers):
    (source_id, _), _ = _legacy_queues(buffers)
    (machine,) = buffers.find_resources("AWS::StepFunctions::StateMachine").values()
    properties = machine["Properties"]
    assert properties["StateMachineType"] == "STANDARD"
    assert json.loads(properties["DefinitionString"])["StartAt"] == "PickTenant"
    assert referenced_ids(properties["DefinitionSubstitutions"]["LegacyQueueUrl"]) == {source_id}
    assert (properties["TracingConfiguration"], properties["LoggingConfiguration"]["Level"]) == ({"Enabled": True},
                                                                                                  "ALL")
    (role,) = referenced_ids(properties["RoleArn"])
    statements = [
        statement
        for policy in buffers.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Resource"] != "*"  # X-Ray and log delivery (no resource-level permissions)
    ]
    assert [(sorted(_list(s["Action"])), referenced_ids(s["Resource"])) for s in statements] == [
        (["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"], {source_id})]


def test_the_buffers_stack_outputs_what_operators_and_the_demo_need(buffers):
    assert set(buffers.to_json()["Outputs"]) >= {
        "LegacyPublishStateMachineArn", "LegacyQueueUrl", "LegacyQueueArn", "LegacyDeadLetterQueueUrl",
        "LegacyDeadLetterQueueArn", "LegacyConsumerName", "LegacyRecordsTableName"}


# -- control loop ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def control_loop(dev_assembly) -> Template:
    stacks, _ = dev_assembly
    return Template.from_stack(stacks["control_loop"])


def _alarm(template: Template, name: str) -> dict:
    (alarm,) = template.find_resources("AWS::CloudWatch::Alarm", {"Properties": {"AlarmName": name}}).values()
    return alarm["Properties"]


def _topic(template: Template) -> str:
    (topic,) = template.find_resources("AWS::SNS::Topic")
    return topic


def test_every_downstream_has_its_slow_down_alarms_with_the_configured_thresholds(control_loop, dev_config):
    loop = dev_config.control_loop
    for d in dev_config.downstreams:
        prefix = f"Throttling-dev-{d.name}"
        # THEN each alarm exists with its threshold and evaluation, and missing data is not breaching
        # (the 429 alarm is sustained where the rate is the callers' inner loop's, above the 429s the inner
        # loop draws itself: it answers a lone minute's)
        throttle_alarm = ((loop.throttle_rate_threshold, 1, None) if loop.adjust_rate else
                          (max(loop.throttle_rate_threshold, planning.INNER_LOOP_THROTTLE_ALARM_RATE), 3, 2))
        expected = {
            f"{prefix}-ThrottleRate": (throttle_alarm[0] * 100, *throttle_alarm[1:]),
            f"{prefix}-ErrorRate": (loop.error_rate_threshold * 100, 1, None),
            f"{prefix}-ErrorRateSustained": (loop.breaker_error_rate_threshold * 100, loop.breaker_alarm_periods, None),
            f"{prefix}-LatencyP99": (min(d.expected_latency_ms * loop.p99_latency_factor, d.timeout_sec * 1000), 3, 2),
        }
        for name, (threshold, periods, datapoints) in expected.items():
            alarm = _alarm(control_loop, name)
            assert (alarm["Threshold"], alarm["EvaluationPeriods"], alarm.get("DatapointsToAlarm")) == (
                pytest.approx(threshold), periods, datapoints), name
            assert (alarm["ComparisonOperator"], alarm["TreatMissingData"]) == ("GreaterThanThreshold", "notBreaching")
        # AND the rates only count periods with enough calls to mean something
        rate = _alarm(control_loop, f"{prefix}-ThrottleRate")["Metrics"][0]["Expression"]
        assert re.fullmatch(r"IF\((\(.+?\)) >= 10, 100 \* \(FILL\(downstreamthrottled0, 0\).*\) / \1, 0\)", rate), rate
        # AND the slow-down error rate leaves out the 5xx that said when to come back (an outage is the
        # breaker's business), while the sustained rate that opens the breaker counts them
        errors = _alarm(control_loop, f"{prefix}-ErrorRate")["Metrics"][0]["Expression"]
        assert "downstreamdown0" in errors and "downstreamunavailable0" in errors, errors
        sustained = _alarm(control_loop, f"{prefix}-ErrorRateSustained")["Metrics"][0]["Expression"]
        assert "downstreamdown" not in sustained, sustained
        p99 = _alarm(control_loop, f"{prefix}-LatencyP99")["Metrics"]
        assert {m["MetricStat"]["Stat"] for m in p99 if "MetricStat" in m} == {"p99"}


def test_the_429_alarm_is_one_minute_where_the_controller_moves_the_rate_and_2_of_3_where_the_inner_loop_does(
        dev_config, cdk_context, tmp_path):
    from dataclasses import replace

    from stacks.app_stacks import add_stacks

    # GIVEN the dev stage as shipped (adjust_rate false) and the same stage with the controller moving the rate
    assert dev_config.control_loop.adjust_rate is False
    for adjust_rate, evaluation in ((False, (5.0, 3, 2)), (True, (1.0, 1, None))):
        config = replace(dev_config, nag=False, control_loop=replace(dev_config.control_loop, adjust_rate=adjust_rate))
        app = App(outdir=str(tmp_path / str(adjust_rate)), context=dict(cdk_context))
        stacks = add_stacks(app, config)
        # WHEN it is synthesized
        alarm = _alarm(Template.from_stack(stacks["control_loop"]), "Throttling-dev-crm-ThrottleRate")
        # THEN the 429 alarm fires on one minute only where no inner loop answered those 429s first
        assert (alarm["Threshold"], alarm["EvaluationPeriods"], alarm.get("DatapointsToAlarm")) == evaluation, adjust_rate
        assert ("past what the limiter's inner loop contains" in alarm["AlarmDescription"]) is not adjust_rate


def test_the_legacy_mainframe_counts_its_caller_and_its_queue_consumer(control_loop):
    metrics = _alarm(control_loop, "Throttling-dev-legacy_mainframe-ThrottleRate")["Metrics"]
    services = {d["Value"] for m in metrics if "MetricStat" in m for d in m["MetricStat"]["Metric"]["Dimensions"]
                if d["Name"] == "service"}
    assert services == {"legacy_mainframe-caller", "legacy_mainframe-consumer"}


def test_every_layer_that_exists_has_its_alarms(control_loop, dev_config):
    names = {a["Properties"]["AlarmName"] for a in control_loop.find_resources("AWS::CloudWatch::Alarm").values()}
    layers = {
        "Throttling-dev-RateLimiterTable-Throttled", "Throttling-dev-SemaphoresTable-Throttled",
        "Throttling-dev-CircuitBreakersTable-Throttled",
        *(f"Throttling-dev-{d.name}-caller-Throttles" for d in dev_config.downstreams),
        *(f"Throttling-dev-{workflow}-{kind}" for workflow in ("CrmBatchEmail", "CrmSegmentLarge", "UgcModeration",
                                                              "LegacyPublish")
          for kind in ("ExecutionsFailed", "ExecutionsThrottled")),
        # Payments fail by design (a declined card ends in a named Fail): only throttles and timeouts alarm
        "Throttling-dev-PaymentAuthorization-ExecutionsThrottled", "Throttling-dev-PaymentAuthorization-ExecutionsTimedOut",
        # every queue with a dead-letter queue, on its oldest message; every dead-letter queue, on any message
        "Throttling-dev-LegacyConsumerQueue-OldestMessageAge", "Throttling-dev-ParkedOrdersQueue-OldestMessageAge",
        # the fair queue, on its quiet tenants' oldest message
        "Throttling-dev-LegacyConsumerQueue-QuietTenantsMessageAge",
        *(f"Throttling-dev-{queue}-DeadLetters" for queue in (
            "LegacyConsumerDeadLetterQueue", "CrmBatchEmailDeadLetterQueue", "ParkedOrdersDeadLetterQueue",
            "OrderStartFailedQueue", "OrderPlacedUndeliveredQueue")),
        # a failed OrderPlaced handed to a queue that refuses it would be lost
        "Throttling-dev-PaymentStarterFunction-DestinationDeliveryFailures",
        "Throttling-dev-OrderPlacedRule-DeadLetterDeliveryFailures",
        "Throttling-dev-Api-RefusedRate", "Throttling-dev-Api-ServerErrorRate", "Throttling-dev-Api-LatencyP99",
        "Throttling-dev-controller-Errors",
        # functions whose failures nothing else shows: the decider's become reviews, the resumer is scheduled
        "Throttling-dev-ModerationDecider-Errors", "Throttling-dev-ParkedOrderResumer-Errors",
    }
    assert layers <= names
    assert len(names) == len(layers) + 4 * len(dev_config.downstreams)
    # AND a queue's oldest-message alarm uses the stage's backlog age, unless the queue says why not
    assert _alarm(control_loop, "Throttling-dev-LegacyConsumerQueue-OldestMessageAge")["Threshold"] == (
        dev_config.control_loop.backlog_age_alarm_sec)
    parked = _alarm(control_loop, "Throttling-dev-ParkedOrdersQueue-OldestMessageAge")
    assert parked["Threshold"] == 3600 and "breaker stays open" in parked["AlarmDescription"]
    # AND the fair queue's quiet tenants alarm past the batches in flight, then their own and those beside it,
    # at the planned rate (5 records x 4 batches at the mainframe's 0.8 req/s: 25 s), on the metric SQS
    # publishes for fair queues
    quiet = _alarm(control_loop, "Throttling-dev-LegacyConsumerQueue-QuietTenantsMessageAge")
    mainframe = next(d for d in dev_config.downstreams if d.name == "legacy_mainframe")
    assert quiet["Threshold"] == math.ceil(5 * 4 / mainframe.planned_rate_per_sec) == 25
    assert (quiet["MetricName"], quiet["Namespace"], quiet["Statistic"]) == (
        "ApproximateAgeOfOldestMessageInQuietGroups", "AWS/SQS", "Maximum")
    dead_letters = _alarm(control_loop, "Throttling-dev-OrderStartFailedQueue-DeadLetters")
    assert (dead_letters["Threshold"], dead_letters["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    throttled = _alarm(control_loop, "Throttling-dev-RateLimiterTable-Throttled")
    assert throttled["Threshold"] == 0 and "ThrottledRequests" in json.dumps(throttled["Metrics"])


def test_every_alarm_tells_people_through_an_encrypted_topic_that_refuses_plain_http(control_loop):
    topic = _topic(control_loop)
    for alarm in control_loop.find_resources("AWS::CloudWatch::Alarm").values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic}]
        assert alarm["Properties"]["OKActions"] == [{"Ref": topic}]
    control_loop.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    control_loop.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    # AND CloudWatch may publish and use the key, for this account's alarms of this stage only
    this_stages_alarms = {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        "ArnLike": {"aws:SourceArn": {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":cloudwatch:us-east-1:",
                                                        {"Ref": "AWS::AccountId"}, ":alarm:Throttling-dev-*"]]}},
    }
    control_loop.has_resource_properties("AWS::KMS::Key", {"KeyPolicy": {"Statement": Match.array_with([
        Match.object_like({"Principal": {"Service": "cloudwatch.amazonaws.com"}, "Effect": "Allow",
                           "Action": ["kms:Decrypt", "kms:GenerateDataKey*"], "Condition": this_stages_alarms})])}})
    control_loop.has_resource_properties("AWS::SNS::TopicPolicy", {"PolicyDocument": {"Statement": [
        Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}),
        Match.object_like({"Effect": "Allow", "Principal": {"Service": "cloudwatch.amazonaws.com"},
                           "Action": "sns:Publish", "Resource": {"Ref": topic}, "Condition": this_stages_alarms}),
    ]}})


def test_the_slow_down_alarms_and_a_minute_schedule_invoke_the_controller(control_loop, dev_config):
    (function_id,) = control_loop.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Handler": "handlers.controller.handler"}})
    rules = control_loop.find_resources("AWS::Events::Rule").values()
    (schedule,) = [r for r in rules if r["Properties"].get("ScheduleExpression") == "rate(1 minute)"]
    (on_alarms,) = [r for r in rules if "EventPattern" in r["Properties"]]
    for rule in (schedule, on_alarms):
        assert [t["Arn"] for t in rule["Properties"]["Targets"]] == [{"Fn::GetAtt": [function_id, "Arn"]}]
    pattern = on_alarms["Properties"]["EventPattern"]
    assert (pattern["source"], pattern["detail-type"]) == (["aws.cloudwatch"], ["CloudWatch Alarm State Change"])
    assert sorted(pattern["detail"]["alarmName"]) == sorted(
        f"Throttling-dev-{d.name}-{kind}" for d in dev_config.downstreams
        for kind in ("ThrottleRate", "ErrorRate", "ErrorRateSustained", "LatencyP99"))


def test_the_controller_runs_alone_and_may_tune_ssm_breakers_and_the_consumers_mappings(control_loop):
    control_loop.has_resource_properties("AWS::Lambda::Function", {
        "Handler": "handlers.controller.handler", "Timeout": 50,
        "Environment": {"Variables": Match.object_like({"SEMAPHORE_TABLE_NAME": Match.any_value()})}})
    statements = [s for p in control_loop.find_resources("AWS::IAM::Policy").values()
                  for s in p["Properties"]["PolicyDocument"]["Statement"]]
    actions = {a for s in statements for a in _list(s["Action"])}
    assert {"ssm:PutParameter", "ssm:GetParameter", "cloudwatch:GetMetricData", "dynamodb:PutItem",
            "lambda:UpdateEventSourceMapping", "lambda:ListEventSourceMappings",
            "lambda:GetFunctionConcurrency"} <= actions
    (update,) = [s for s in statements if s["Action"] == "lambda:UpdateEventSourceMapping"]
    assert "lambda:FunctionArn" in update["Condition"]["StringEquals"]
    (put,) = [s for s in statements if "ssm:PutParameter" in _list(s["Action"])]
    assert json.dumps(put["Resource"]).endswith(':parameter/throttling/dev/*"]]}')


def test_the_stage_has_a_dashboard_of_every_downstream_and_layer(control_loop, dev_config):
    (dashboard,) = control_loop.find_resources("AWS::CloudWatch::Dashboard").values()
    assert dashboard["Properties"]["DashboardName"] == "Throttling-dev-throttling"
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for d in dev_config.downstreams:
        for title in ("calls, 429s, errors", "latency (ms)", "limiter admitted / refused", "controller"):
            assert f"{d.name}: {title}" in body
    for title in ("RateLimiter table", "Callers: Lambda throttles", "Workflows: executions", "Buffers: backlog",
                  "Queues: oldest message (s), dead letters", "CrmSegmentLarge timed out",
                  "ControllerMaxConcurrency", "BreakerOpen", "Ingress Api: requests, 4xx, 429s, 5xx",
                  "Ingress Api: latency (ms)", "Ingress Api: requests and 4xx per route", "IngressRefused429"):
        assert title in body


def test_each_downstream_has_top_tenant_rules_over_every_function_that_calls_it(dev_assembly, control_loop,
                                                                               dev_config):
    stacks, _ = dev_assembly
    rules = stacks["control_loop"].tenant_rules
    # THEN every downstream has its pair, named after it, counting refusals by tenant and class, answers by tenant
    assert set(rules) == {d.name for d in dev_config.downstreams}
    for downstream, pair in rules.items():
        refused, answered = pair["Refused"], pair["Answered"]
        assert refused.rule_name == f"Throttling-dev-{downstream}-TopTenantsRefused"
        assert refused.body["Contribution"]["Keys"] == ["$.tenant", "$.priority"]
        assert answered.body["Contribution"]["Keys"] == ["$.tenant"]
        assert {"Match": "$.message", "In": [names.LIMITER_REFUSED_LOG_MESSAGE]} in refused.body["Contribution"]["Filters"]
        assert {"Match": "$.message", "In": [names.CALL_ANSWERED_LOG_MESSAGE]} in answered.body["Contribution"][
            "Filters"]
        assert refused.body["AggregateOn"] == answered.body["AggregateOn"] == "Count"
    # AND the legacy mainframe's rules read its caller's and its queue consumer's logs, each by exact name
    legacy = json.dumps(stacks["control_loop"].resolve(rules["legacy_mainframe"]["Answered"].body["LogGroupNames"]))
    assert "LegacyMainframeCallerLogGroup" in legacy and "LegacyConsumerLogGroup" in legacy
    control_loop.resource_count_is("AWS::CloudWatch::InsightRule", 2 * len(dev_config.downstreams))


def test_the_dashboard_draws_each_downstreams_top_tenants(control_loop, dev_config):
    (dashboard,) = control_loop.find_resources("AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    for d in dev_config.downstreams:
        for kind in ("Refused", "Answered"):
            assert f'\\"insightRule\\":{{\\"ruleName\\":\\"Throttling-dev-{d.name}-TopTenants{kind}\\"' in body
        assert f"{d.name}: top tenants by refused takes (tenant, class)" in body


def test_the_ingress_alarms_tell_people_of_refusals_errors_and_latency(control_loop, dev_config):
    loop = dev_config.control_loop
    refused = _alarm(control_loop, "Throttling-dev-Api-RefusedRate")
    assert (refused["Threshold"], refused["EvaluationPeriods"], refused["DatapointsToAlarm"]) == (
        pytest.approx(loop.ingress_refused_rate_threshold * 100), 3, 2)
    # The 429 share counts the access log's 429s against all requests, once there are enough to mean something
    (expression,) = [m["Expression"] for m in refused["Metrics"] if "Expression" in m]
    assert expression == "IF(requests >= 10, 100 * FILL(refused, 0) / requests, 0)"
    assert _alarm(control_loop, "Throttling-dev-Api-ServerErrorRate")["Threshold"] == pytest.approx(
        loop.error_rate_threshold * 100)
    latency = _alarm(control_loop, "Throttling-dev-Api-LatencyP99")
    assert latency["Threshold"] == loop.ingress_p99_latency_ms
    assert [m["MetricStat"]["Stat"] for m in latency["Metrics"]] == ["p99"]


def test_the_control_loop_outputs_what_operators_and_the_tests_need(control_loop):
    assert set(control_loop.to_json()["Outputs"]) >= {"ControllerName", "ControllerStateTableName", "AlarmTopicArn",
                                                      "DashboardName"}


# -- use case 2: payment authorization (Workflows stack) ------------------------------------------


def _by_prefix(template: Template, resource_type: str, prefix: str) -> tuple[str, dict]:
    (found,) = [(i, r) for i, r in template.find_resources(resource_type).items() if i.startswith(prefix)]
    return found


def _statements_of(template: Template, role_id: str) -> list[dict]:
    """The role's Allow statements, without the X-Ray and log-delivery ones (no resource-level permissions)."""
    return [s for p in template.find_resources("AWS::IAM::Policy").values()
            if {"Ref": role_id} in p["Properties"]["Roles"]
            for s in p["Properties"]["PolicyDocument"]["Statement"] if s["Resource"] != "*"]


def _granted(template: Template, role_id: str) -> dict[str, list[str]]:
    """What the role may do, by resource: its logical id without the hash (an import: the exported resource's)."""
    granted = {}
    for statement in _statements_of(template, role_id):
        for resource in _list(statement["Resource"]):
            text = json.dumps(resource)
            imported = re.search(r"ExportsOutput(?:Ref|FnGetAtt)([A-Za-z]+?)[0-9A-F]{8}", text)
            (name,) = [imported.group(1)] if imported else [re.sub(r"[0-9A-F]{8}$", "", r) for r in referenced_ids(resource)]
            granted[name] = sorted(_list(statement["Action"]))
    return granted


@pytest.fixture(scope="module")
def payment_machine(workflows) -> dict:
    return _by_prefix(workflows, "AWS::StepFunctions::StateMachine", "PaymentAuthorization")[1]


@pytest.fixture(scope="module")
def payment_authorizer(workflows) -> tuple[str, dict]:
    return _by_prefix(workflows, "AWS::Lambda::Function", "PaymentAuthorizer")


def test_the_orders_and_inventory_tables_are_on_demand_encrypted_and_recoverable(workflows):
    for prefix in ("OrdersTable", "InventoryTable"):
        _, table = _by_prefix(workflows, "AWS::DynamoDB::Table", prefix)
        assert {k: table["Properties"].get(k) for k in ("BillingMode", "KeySchema", "SSESpecification",
                                                        "PointInTimeRecoverySpecification")} == {
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "SSESpecification": {"SSEEnabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        }


def test_the_idempotency_table_has_powertools_layout_and_forgets_records_by_ttl(workflows):
    _, table = _by_prefix(workflows, "AWS::DynamoDB::Table", "PaymentIdempotencyTable")
    assert table["Properties"]["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["Properties"]["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["Properties"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["Properties"]["SSESpecification"] == {"SSEEnabled": True}
    assert table["Properties"]["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_parked_orders_wait_in_an_encrypted_queue_that_redrives_to_its_dead_letter_queue(workflows):
    _, queue = _by_prefix(workflows, "AWS::SQS::Queue", "ParkedOrdersQueue")
    dlq_id, dlq = _by_prefix(workflows, "AWS::SQS::Queue", "ParkedOrdersDeadLetterQueue")
    assert queue["Properties"]["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
                                                    "maxReceiveCount": 5}
    for properties in (queue["Properties"], dlq["Properties"]):
        assert (properties["SqsManagedSseEnabled"], properties["MessageRetentionPeriod"]) == (True, 14 * 24 * 3600)
    policies = [p["Properties"] for p in workflows.find_resources("AWS::SQS::QueuePolicy").values()
                if any(r["Ref"].startswith("ParkedOrders") for r in p["Properties"]["Queues"])]
    assert len(policies) == 2
    for policy in policies:
        assert {"Bool": {"aws:SecureTransport": "false"}} in [s.get("Condition") for s in
                                                              policy["PolicyDocument"]["Statement"]]


def test_customer_notifications_are_encrypted_and_refuse_plain_http(workflows):
    topic_id, topic = _by_prefix(workflows, "AWS::SNS::Topic", "CustomerNotificationsTopic")
    assert json.dumps(topic["Properties"]["KmsMasterKeyId"]).endswith(':alias/aws/sns"]]}')
    (policy,) = [p["Properties"] for p in workflows.find_resources("AWS::SNS::TopicPolicy").values()
                 if p["Properties"]["Topics"] == [{"Ref": topic_id}]]
    assert {"Bool": {"aws:SecureTransport": "false"}} in [s.get("Condition") for s in
                                                          policy["PolicyDocument"]["Statement"]]


def test_the_authorizer_is_wired_to_the_gateway_its_limits_and_its_idempotency_table(payment_authorizer, workflows):
    _, function = payment_authorizer
    properties = function["Properties"]
    assert properties["Handler"] == "handlers.authorize_payment.handler"
    # dev reserves nothing (a stage that reserves gives it 5: see test_reserved_concurrency.py)
    assert "ReservedConcurrentExecutions" not in properties
    assert properties["Timeout"] == 10 + 2 + 5  # the gateway's timeout, the limiter wait, a margin
    variables = properties["Environment"]["Variables"]
    assert {k: variables[k] for k in ("DOWNSTREAM_NAME", "DOWNSTREAM_BASE_URL", "DOWNSTREAM_RATE_LIMIT_PER_SEC",
                                      "LIMITER_MAX_WAIT_SEC", "IDEMPOTENCY_EXPIRY_SEC")} == {
        "DOWNSTREAM_NAME": "payment_gateway", "DOWNSTREAM_BASE_URL": "https://payments.example.com",
        "DOWNSTREAM_RATE_LIMIT_PER_SEC": "2.0", "LIMITER_MAX_WAIT_SEC": "2", "IDEMPOTENCY_EXPIRY_SEC": "86400"}
    (idempotency_table,) = referenced_ids(variables["IDEMPOTENCY_TABLE_NAME"])
    assert idempotency_table.startswith("PaymentIdempotencyTable")
    assert "RateLimiterTable" in json.dumps(variables["RATE_LIMITER_TABLE_NAME"])
    assert "CircuitBreakersTable" in json.dumps(variables["BREAKER_TABLE_NAME"])
    assert "TunablesDownstreamsPaymentGateway" in json.dumps(variables["TUNABLES_PARAMETER_NAME"])
    assert "TunablesBreakersPaymentGateway" in json.dumps(variables["BREAKER_TUNABLES_PARAMETER_NAME"])
    assert json.loads(variables["BREAKER_TUNABLES_DEFAULTS"])["open_duration_sec"] > 0


def test_the_authorizer_may_take_tokens_move_the_breaker_read_its_two_documents_and_keep_idempotency_records(
    payment_authorizer, workflows
):
    _, function = payment_authorizer
    (role,) = referenced_ids(function["Properties"]["Role"])
    granted = _granted(workflows, role)
    assert {k: v for k, v in granted.items() if not k.startswith("Tunables")} == {
        "RateLimiterTable": ["dynamodb:UpdateItem"],  # one conditional update per attempt, never a read
        "CircuitBreakersTable": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
        "PaymentIdempotencyTable": ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem",
                                    "dynamodb:UpdateItem"],  # what Powertools' persistence layer does
        "PaymentAuthorizerLogGroup": ["logs:CreateLogStream", "logs:PutLogEvents"],
    }
    assert sorted(k for k in granted if k.startswith("Tunables")) == [
        "TunablesBreakersPaymentGateway", "TunablesDownstreamsPaymentGateway"]


def test_the_payment_workflow_is_a_standard_one_from_its_file_with_logs_and_tracing(payment_machine):
    properties = payment_machine["Properties"]
    assert properties["StateMachineType"] == "STANDARD"
    assert json.loads(properties["DefinitionString"])["StartAt"] == "CheckTenant"
    assert sorted(properties["DefinitionSubstitutions"]) == [
        "AuthorizeFunctionArn", "CircuitBreakerTableName", "CustomerNotificationsTopicArn", "DefaultTenant",
        "InventoryTableName", "LedgerCallerArn", "MessagingCallerArn", "OrdersTableName", "ParkedOrdersQueueUrl",
        "PaymentGatewayCallerArn", "PaymentPriority", "WarehouseCallerArn"]
    # AND every call of a payment takes the order's tenant's share as the critical class
    assert properties["DefinitionSubstitutions"]["PaymentPriority"] == "critical"
    assert properties["TracingConfiguration"] == {"Enabled": True}
    assert properties["LoggingConfiguration"]["Level"] == "ALL"


def test_every_payment_outcome_ends_in_succeed_or_a_named_fail(payment_machine):
    definition = json.loads(payment_machine["Properties"]["DefinitionString"])
    ends = {name: state for name, state in definition["States"].items()
            if state["Type"] in ("Succeed", "Fail") or state.get("End")}
    assert {name: state["Type"] for name, state in ends.items()} == {
        "OrderPaid": "Succeed", "OrderParked": "Succeed", "PaymentDeclined": "Fail", "OutOfStock": "Fail",
        "PaymentFailed": "Fail", "DuplicateOrder": "Fail", "CompensationFailed": "Fail"}
    assert all(state["Error"] == name for name, state in ends.items() if state["Type"] == "Fail")


def test_the_payment_workflow_role_may_do_exactly_what_the_file_does(payment_machine, workflows):
    (role,) = referenced_ids(payment_machine["Properties"]["RoleArn"])
    assert _granted(workflows, role) == {
        "OrdersTable": ["dynamodb:PutItem", "dynamodb:UpdateItem"],
        "InventoryTable": ["dynamodb:UpdateItem"],
        "CircuitBreakersTable": ["dynamodb:GetItem"],  # ReadBreaker, in the shared-limits stack
        "ParkedOrdersQueue": ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"],
        "CustomerNotificationsTopic": ["sns:Publish"],
        # the unqualified functions only, not `<arn>:*` (every version and alias)
        "PaymentAuthorizerFunction": ["lambda:InvokeFunction"],
        "PaymentGatewayCallerFunction": ["lambda:InvokeFunction"],
        # the follow-ups' callers, one per branch of the Parallel
        "WarehouseCallerFunction": ["lambda:InvokeFunction"],
        "MessagingCallerFunction": ["lambda:InvokeFunction"],
        "LedgerCallerFunction": ["lambda:InvokeFunction"],
    }


def test_order_placed_events_reach_a_starter_that_may_only_start_the_payment_workflow_and_hand_over_failures(
    workflows
):
    _, rule = _by_prefix(workflows, "AWS::Events::Rule", "OrderPlacedRule")
    assert rule["Properties"]["EventPattern"] == {"source": ["shop.orders"], "detail-type": ["OrderPlaced"]}
    (target,) = rule["Properties"]["Targets"]
    starter_id, starter = _by_prefix(workflows, "AWS::Lambda::Function", "PaymentStarter")
    assert referenced_ids(target["Arn"]) == {starter_id}
    assert starter["Properties"]["Handler"] == "handlers.start_payment.handler"
    machine_id, _ = _by_prefix(workflows, "AWS::StepFunctions::StateMachine", "PaymentAuthorization")
    assert starter["Properties"]["Environment"]["Variables"]["PAYMENT_STATE_MACHINE_ARN"] == {"Ref": machine_id}
    (role,) = referenced_ids(starter["Properties"]["Role"])
    statements = [s for s in _statements_of(workflows, role) if s["Action"] != ["logs:CreateLogStream",
                                                                                  "logs:PutLogEvents"]]
    failed_id, _ = _by_prefix(workflows, "AWS::SQS::Queue", "OrderStartFailedQueue")
    assert [(s["Action"], s["Resource"]) for s in statements] == [
        ("states:StartExecution", {"Ref": machine_id}),
        # Lambda sends the events it gave up on to the on-failure queue with the function's own role
        (["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:SendMessage"], {"Fn::GetAtt": [failed_id, "Arn"]}),
    ]


def test_the_payment_workflow_outputs_what_operators_and_the_demo_need(workflows):
    assert {"PaymentAuthorizationStateMachineArn", "OrdersTableName", "InventoryTableName", "ParkedOrdersQueueUrl",
            "PaymentStarterName", "PaymentAuthorizerName", "CustomerNotificationsTopicArn",
            "PaymentIdempotencyTableName"} <= set(workflows.to_json()["Outputs"])


def test_the_authorizer_concurrency_covers_calls_in_flight_and_callers_waiting_for_a_token(dev_config):
    from dataclasses import replace

    from stacks.use_cases.payments import payment_authorizer_concurrency

    gateway = dev_config.downstream("payment_gateway")
    assert payment_authorizer_concurrency(gateway) == 5
    assert payment_authorizer_concurrency(replace(gateway, rate_limit_per_sec=0.1)) == 2  # never below 2


# -- use case 3: UGC moderation -----------------------------------------------------------------

def test_uploads_are_encrypted_private_tls_only_and_notify_eventbridge_natively(workflows):
    bucket_id, bucket = _by_prefix(workflows, "AWS::S3::Bucket", "UploadsBucket")
    properties = bucket["Properties"]
    assert properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    # The bucket's own property, not CDK's Lambda-backed custom resource
    assert properties["NotificationConfiguration"] == {"EventBridgeConfiguration": {"EventBridgeEnabled": True}}
    assert workflows.find_resources("Custom::S3BucketNotifications") == {}
    (policy,) = [p["Properties"] for p in workflows.find_resources("AWS::S3::BucketPolicy").values()
                 if p["Properties"]["Bucket"] == {"Ref": bucket_id}]
    assert {"Bool": {"aws:SecureTransport": "false"}} in [s.get("Condition") for s in
                                                          policy["PolicyDocument"]["Statement"]]


def test_every_object_created_in_the_uploads_bucket_starts_one_moderation(workflows):
    bucket_id, _ = _by_prefix(workflows, "AWS::S3::Bucket", "UploadsBucket")
    machine_id, _ = _by_prefix(workflows, "AWS::StepFunctions::StateMachine", "UgcModeration")
    (rule,) = [r for r in workflows.find_resources("AWS::Events::Rule").values()
               if referenced_ids(r["Properties"]["Targets"]) & {machine_id}]
    assert rule["Properties"]["EventPattern"] == {
        "source": ["aws.s3"], "detail-type": ["Object Created"], "detail": {"bucket": {"name": [{"Ref": bucket_id}]}}}
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": machine_id}
    assert "Input" not in target  # the event itself is the execution's input


def test_moderation_results_are_stored_encrypted_and_published_on_an_encrypted_tls_only_topic(workflows):
    _, table = _by_prefix(workflows, "AWS::DynamoDB::Table", "ModerationResultsTable")
    assert table["Properties"]["SSESpecification"] == {"SSEEnabled": True}
    topic_id, topic = _by_prefix(workflows, "AWS::SNS::Topic", "ModerationResultsTopic")
    assert json.dumps(topic["Properties"]["KmsMasterKeyId"]).endswith(':alias/aws/sns"]]}')
    (policy,) = [p["Properties"] for p in workflows.find_resources("AWS::SNS::TopicPolicy").values()
                 if p["Properties"]["Topics"] == [{"Ref": topic_id}]]
    assert {"Bool": {"aws:SecureTransport": "false"}} in [s.get("Condition") for s in
                                                          policy["PolicyDocument"]["Statement"]]
    outputs = workflows.to_json()["Outputs"]
    assert {"UgcModerationStateMachineArn", "UploadsBucketName", "ModerationResultsTableName",
            "ModerationResultsTopicArn"} <= set(outputs)
