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
    shared_limits.resource_count_is("AWS::SSM::Parameter", len(dev_config.downstreams))
    crm = shared_limits.find_resources(
        "AWS::SSM::Parameter", {"Properties": {"Name": "/throttling/dev/downstreams/crm"}}
    )
    (resource,) = crm.values()
    assert json.loads(resource["Properties"]["Value"]) == {
        "burst": 10, "max_concurrency": 2, "mode": "auto", "rate_per_sec": 10.0,
    }


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
