"""Fine-grained assertions on the synthesized templates: these carry the meaning, snapshots only detect change."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match, Template


@pytest.fixture(scope="module")
def shared_limits(dev_assembly) -> Template:
    stacks, _ = dev_assembly
    return Template.from_stack(stacks["shared_limits"])


@pytest.fixture(scope="module")
def workflows(dev_assembly) -> Template:
    stacks, _ = dev_assembly
    return Template.from_stack(stacks["workflows"])


def test_one_tunables_document_per_downstream_under_the_stage_prefix(shared_limits, dev_config):
    # THEN each downstream has its parameter, seeded with its contract rate and Little's-law concurrency
    shared_limits.resource_count_is("AWS::SSM::Parameter", 2 * len(dev_config.downstreams))
    crm = shared_limits.find_resources(
        "AWS::SSM::Parameter", {"Properties": {"Name": "/throttling/dev/downstreams/crm"}}
    )
    (resource,) = crm.values()
    assert json.loads(resource["Properties"]["Value"]) == {
        "burst": 10, "max_concurrency": 2, "mode": "auto", "rate_per_sec": 10.0,
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
    shared_limits.has_resource_properties("AWS::Lambda::Function", {
        "Handler": "handlers.reclaim_leases.handler", "ReservedConcurrentExecutions": 1})
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
    workflows.resource_count_is("AWS::Lambda::Function", len(dev_config.downstreams))
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


def test_functions_use_the_powertools_layer_of_their_runtime(workflows):
    for function in workflows.find_resources("AWS::Lambda::Function").values():
        assert "layer:AWSLambdaPowertoolsPythonV3-python313-x86_64:27" in json.dumps(function["Properties"]["Layers"])


def test_logs_are_kept_for_the_configured_retention(workflows, dev_config):
    workflows.resource_count_is("AWS::Logs::LogGroup", len(dev_config.downstreams))
    workflows.all_resources_properties("AWS::Logs::LogGroup", {"RetentionInDays": 14})


def test_no_managed_policies_and_tunables_read_is_scoped_to_one_parameter(workflows):
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
    assert len(ssm_statements) == 4
    for statement in ssm_statements:
        assert set(_list(statement["Action"])) <= {"ssm:DescribeParameters", "ssm:GetParameter", "ssm:GetParameters",
                                                     "ssm:GetParameterHistory"}
        assert "*" not in json.dumps(statement["Resource"])


def _list(value):
    return value if isinstance(value, list) else [value]
