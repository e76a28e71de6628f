"""The per-tenant Contributor Insights rules count what the CRM caller really logs.

moto stores insight rules and evaluates nothing, so the rules are applied here with
`localcloud.emulator.contributor_insights` to the JSON lines the real `call_downstream` handler
writes (its limiter on moto's DynamoDB, its downstream a fake that answers 200): a tenant's admitted
call is one answered call, its refused take one refusal under its class; a log field renamed in the
handler would leave the rules counting nothing, which these tests would show.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from localcloud.emulator.contributor_insights import UnsupportedRule, contributions
from throttling.core import names
from throttling.runtime.downstream_client import DownstreamResponse, RateLimited

CRM_LOG_GROUP = "/aws/lambda/crm-caller"
ENVIRONMENT = {
    "DOWNSTREAM_NAME": "crm", "DOWNSTREAM_BASE_URL": "http://127.0.0.1:9", "DOWNSTREAM_RATE_LIMIT_PER_SEC": "10",
    "DOWNSTREAM_BURST": "10", "TUNABLES_PARAMETER_NAME": "/throttling/test/downstreams/crm",
    "RATE_LIMITER_TABLE_NAME": "limiter", "LIMITER_MAX_WAIT_SEC": "0.1", "POWERTOOLS_SERVICE_NAME": "crm-caller",
    "POWERTOOLS_METRICS_NAMESPACE": "Test",
}
# A slow bucket (one call per 100 s) of one token: the second call within the test is refused, whatever the machine.
TUNABLES = json.dumps({"rate_per_sec": 0.01, "burst": 1, "max_concurrency": 1, "mode": "manual", "share_acme": 0.5})


@dataclass
class Context:
    aws_request_id: str = "request-1"
    function_name: str = "crm-caller"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:crm-caller"
    remaining_ms: int = 20_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@dataclass
class Crm:
    timeout_sec: float = 5.0
    calls: list[str] = field(default_factory=list)

    def call(self, method: str, path: str, *, body: Any = None, headers: Any = None) -> DownstreamResponse:
        self.calls.append(path)
        return DownstreamResponse(status=200, body={"ok": True}, latency_ms=12.0)


def _resolve(value: Any, imports: dict[str, str]) -> str:
    """A template's `Fn::Join` of strings and `Fn::ImportValue`s, with each import's value from `imports`."""
    if isinstance(value, str):
        return value
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_resolve(part, imports) for part in parts)
    return imports[value["Fn::ImportValue"]]


@pytest.fixture(scope="module")
def crm_rules(templates) -> dict[str, dict[str, Any]]:
    """The CRM's two rules as deployed, each body with the CRM caller's log group under `CRM_LOG_GROUP`."""
    workflows, control_loop = templates["workflows"], templates["control_loop"]
    caller = next(r for r in workflows["Resources"].values() if r["Type"] == "AWS::Lambda::Function"
                  and r["Properties"]["Environment"]["Variables"].get(names.ENV_DOWNSTREAM_NAME) == "crm"
                  and r["Properties"]["Handler"] == "handlers.call_downstream.handler")
    caller_log_group = caller["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
    # Each export of the workflows stack that is a log group's name, by its export name.
    exports = {output["Export"]["Name"]: output["Value"]["Ref"] for output in workflows.get("Outputs", {}).values()
               if "Export" in output and isinstance(output["Value"], dict) and "Ref" in output["Value"]}
    rules = {}
    for resource in control_loop["Resources"].values():
        if resource["Type"] != "AWS::CloudWatch::InsightRule" or "-crm-" not in resource["Properties"]["RuleName"]:
            continue
        imports = {name: (CRM_LOG_GROUP if logical_id == caller_log_group else f"/other/{logical_id}")
                   for name, logical_id in exports.items()}
        rules[resource["Properties"]["RuleName"].rsplit("-", 1)[1]] = json.loads(
            _resolve(resource["Properties"]["RuleBody"], imports))
    return rules


@pytest.fixture
def caller_lines(import_handler, monkeypatch) -> list[str]:
    """The JSON lines of two invocations of the real CRM caller for tenant `acme`, class batch: one call, one refusal."""
    module = import_handler("handlers.call_downstream", ENVIRONMENT)
    # Powertools reads its namespace at import: another test may have imported the module first, without it.
    monkeypatch.setattr(module.metrics, "namespace", "Test")
    # The lines exactly as the function's logger formats them (its own handler keeps whichever stdout it began with).
    written = io.StringIO()
    captured = logging.StreamHandler(written)
    captured.setFormatter(module.logger.registered_formatter)
    module.logger.addHandler(captured)
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="eu-west-1")
        dynamodb.create_table(TableName="limiter", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                              AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                              BillingMode="PAY_PER_REQUEST")
        deps = module.build_dependencies(ENVIRONMENT, dynamodb=dynamodb, ssm=boto3.client("ssm", region_name="eu-west-1"))
        monkeypatch.setattr(deps.tunables, "_fetch", lambda name: TUNABLES)
        deps = replace(deps, client=Crm())
        monkeypatch.setattr(module, "dependencies", lambda: deps)
        event = {"method": "POST", "path": "/emails", "tenant": "acme", "priority": names.PRIORITY_BATCH}
        try:
            answer = module.handler(event, Context())
            with pytest.raises(RateLimited):
                module.handler(event, Context(aws_request_id="request-2"))
        finally:
            module.logger._logger.removeHandler(captured)
            module.metrics.clear_metrics()
    assert answer["status"] == 200 and deps.client.calls == ["/emails"]
    return [line for line in written.getvalue().splitlines() if line.startswith("{")]


def test_each_downstream_has_both_rules_over_its_callers_log_groups(templates, dev_config):
    # GIVEN the control-loop stack as deployed
    rules = {r["Properties"]["RuleName"]: r["Properties"] for r in templates["control_loop"]["Resources"].values()
             if r["Type"] == "AWS::CloudWatch::InsightRule"}
    # THEN every downstream has a refused and an answered rule, enabled, each reading log groups by exact name
    expected = {f"{dev_config.stack_prefix}-{d.name}-TopTenants{kind}" for d in dev_config.downstreams
                for kind in ("Refused", "Answered")}
    assert set(rules) == expected
    for properties in rules.values():
        assert properties["RuleState"] == "ENABLED"
        imports = [part["Fn::ImportValue"] for part in properties["RuleBody"]["Fn::Join"][1] if isinstance(part, dict)]
        body = json.loads(_resolve(properties["RuleBody"], {name: f"group-{i}" for i, name in enumerate(imports)}))
        assert body["LogGroupNames"] == [f"group-{i}" for i in range(len(imports))] and imports


def test_the_rules_count_the_tenants_refused_take_and_answered_call(crm_rules, caller_lines):
    # GIVEN the CRM caller's lines in its log group
    events = [(CRM_LOG_GROUP, line) for line in caller_lines]
    # WHEN each rule is applied THEN acme's refused take counts under its class, and its one answered call
    assert contributions(crm_rules["TopTenantsRefused"], events) == {("acme", names.PRIORITY_BATCH): 1}
    assert contributions(crm_rules["TopTenantsAnswered"], events) == {("acme",): 1}
    # AND lines of another function's log group are not read
    assert contributions(crm_rules["TopTenantsRefused"], [("/aws/lambda/other", line) for line in caller_lines]) == {}


@pytest.mark.parametrize("renamed", [names.LOG_KEY_TENANT, names.LOG_KEY_PRIORITY, names.LOG_KEY_MESSAGE])
def test_a_renamed_log_field_leaves_the_refusals_uncounted(crm_rules, caller_lines, renamed):
    # GIVEN the handler's lines as they would be had it renamed one field the refused rule reads
    def rename(line: str) -> str:
        record = json.loads(line)
        if renamed in record:
            record[f"{renamed}_id"] = record.pop(renamed)
        return json.dumps(record)

    events = [(CRM_LOG_GROUP, rename(line)) for line in caller_lines]
    # WHEN the rule is applied THEN it counts nothing: the assertion above would fail, naming the field
    assert contributions(crm_rules["TopTenantsRefused"], events) == {}


def test_the_evaluator_refuses_what_it_does_not_model():
    # GIVEN a rule summing a field, and one with an unknown operator
    summing = {"Schema": {"Name": "CloudWatchLogRule", "Version": 1}, "LogGroupNames": ["g"], "LogFormat": "JSON",
               "Contribution": {"Keys": ["$.tenant"], "ValueOf": "$.bytes"}, "AggregateOn": "Sum"}
    unknown = {**summing, "AggregateOn": "Count",
               "Contribution": {"Keys": ["$.tenant"], "Filters": [{"Match": "$.tenant", "Like": ["a"]}]}}
    # WHEN applied THEN each is refused with what it takes, rather than counted by a guess
    with pytest.raises(UnsupportedRule, match="AggregateOn Count"):
        contributions(summing, [])
    with pytest.raises(UnsupportedRule, match="unknown filter operator 'Like'"):
        contributions(unknown, [("g", '{"tenant": "a"}')])
