"""The ingress stack's every limit, plan, quota, key, model, gateway response and integration, as synthesized."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace

import pytest
from aws_cdk import App
from aws_cdk.assertions import Template

from stacks.app_stacks import add_stacks
from stacks.config import load_config
from stacks.ingress_stack import AMOUNT_PATTERN, api_limits


@pytest.fixture(scope="module")
def ingress(dev_assembly) -> Template:
    stacks, _ = dev_assembly
    return Template.from_stack(stacks["ingress"])


def _only(template: Template, resource_type: str, properties: dict | None = None) -> dict:
    found = template.find_resources(resource_type, {"Properties": properties or {}})
    assert len(found) == 1, f"expected one {resource_type} matching {properties}, found {len(found)}"
    return next(iter(found.values()))["Properties"]


def _joined(value) -> str:
    """A template string that CloudFormation joins, with every token shown as `<token>`."""
    if isinstance(value, str):
        return value
    parts = value["Fn::Join"][1]
    return "".join(p if isinstance(p, str) else "<token>" for p in parts)


def test_stage_and_method_throttles_come_from_config_with_metrics_logs_and_tracing(ingress, dev_config):
    stage = _only(ingress, "AWS::ApiGateway::Stage")
    assert stage["StageName"] == "dev"
    assert stage["TracingEnabled"] is True
    settings = {(s["ResourcePath"], s["HttpMethod"]): s for s in stage["MethodSettings"]}
    every = settings[("/*", "*")]
    assert (every["ThrottlingRateLimit"], every["ThrottlingBurstLimit"]) == (100, 200)
    assert every["MetricsEnabled"] and every["LoggingLevel"] == "ERROR" and every["DataTraceEnabled"] is False
    for route, throttle in dev_config.ingress.method_throttles.items():
        verb, path = route.split(" ")
        method = settings[("/" + path.replace("/", "~1"), verb)]
        assert (method["ThrottlingRateLimit"], method["ThrottlingBurstLimit"]) == (throttle.rate_limit_per_sec,
                                                                                  throttle.burst)
        # A method's settings replace the stage's, so metrics must be on again for it
        assert method["MetricsEnabled"] is True
    # AND the access log is one JSON object per request, with the key id and the trace id
    access_format = json.loads(stage["AccessLogSetting"]["Format"])
    assert access_format["api_key_id"] == "$context.identity.apiKeyId"
    assert access_format["xray_trace_id"] == "$context.xrayTraceId"
    assert access_format["response_type"] == "$context.error.responseType"


def test_the_access_log_counts_429s_per_stage(ingress):
    metric_filter = _only(ingress, "AWS::Logs::MetricFilter")
    assert metric_filter["FilterPattern"] == '{ $.status = "429" }'
    (transformation,) = metric_filter["MetricTransformations"]
    assert (transformation["MetricNamespace"], transformation["MetricName"], transformation["MetricValue"]) == (
        "Throttling", "IngressRefused429", "1")
    assert transformation["Dimensions"] == [{"Key": "Stage", "Value": "$.stage"}]


def test_both_log_groups_have_a_retention(ingress, dev_config):
    groups = ingress.find_resources("AWS::Logs::LogGroup")
    assert len(groups) == 2
    assert {g["Properties"]["RetentionInDays"] for g in groups.values()} == {dev_config.log_retention_days}
    # The execution log group is created first, under the name API Gateway would give it
    assert any("API-Gateway-Execution-Logs_" in _joined(g["Properties"].get("LogGroupName", ""))
               for g in groups.values())


def test_one_usage_plan_per_tier_with_its_throttle_quota_and_method_throttles(ingress, dev_config):
    ingress.resource_count_is("AWS::ApiGateway::UsagePlan", len(dev_config.ingress.tiers))
    for tier in dev_config.ingress.tiers:
        plan = _only(ingress, "AWS::ApiGateway::UsagePlan", {"UsagePlanName": f"throttling-dev-{tier.name}"})
        assert plan["Throttle"] == {"RateLimit": tier.throttle.rate_limit_per_sec, "BurstLimit": tier.throttle.burst}
        assert plan["Quota"] == {"Limit": tier.quota.limit, "Period": tier.quota.period}
        (api_stage,) = plan["ApiStages"]
        per_method = api_stage.get("Throttle", {})
        assert len(per_method) == len(tier.method_throttles)
        for route, throttle in tier.method_throttles.items():
            verb, path = route.split(" ")
            assert per_method[f"{path}/{verb}"] == {"RateLimit": throttle.rate_limit_per_sec,
                                                    "BurstLimit": throttle.burst}


def test_one_api_key_per_configured_client_in_its_tier_plan(ingress, dev_config):
    clients = [(tier.name, client) for tier in dev_config.ingress.tiers for client in tier.api_keys]
    ingress.resource_count_is("AWS::ApiGateway::ApiKey", len(clients))
    ingress.resource_count_is("AWS::ApiGateway::UsagePlanKey", len(clients))
    for tier, client in clients:
        _only(ingress, "AWS::ApiGateway::ApiKey", {"Name": f"throttling-dev-{client}", "Enabled": True})


def test_every_route_needs_an_api_key_and_is_validated_before_its_integration(ingress):
    methods = ingress.find_resources("AWS::ApiGateway::Method")
    assert {m["Properties"]["OperationName"] for m in methods.values()} == {
        "StartPayment", "GetPayment", "QueueLegacyRecord"}
    validator = _only(ingress, "AWS::ApiGateway::RequestValidator")
    assert validator["ValidateRequestBody"] and validator["ValidateRequestParameters"]
    for method in methods.values():
        properties = method["Properties"]
        assert properties["ApiKeyRequired"] is True
        assert "RequestValidatorId" in properties
        # No body reaches an integration without a template for its content type (415 otherwise)
        assert properties["Integration"]["PassthroughBehavior"] == "NEVER"
        assert properties["Integration"]["Type"] == "AWS"


def test_request_models_hold_the_order_and_record_contracts(ingress):
    order = _only(ingress, "AWS::ApiGateway::Model", {"Name": "PaymentOrder"})["Schema"]
    assert order["$schema"] == "http://json-schema.org/draft-04/schema#"
    assert order["additionalProperties"] is False
    assert set(order["required"]) == {"order_id", "customer_id", "amount", "currency", "items"}
    # Money is a decimal string checked by a pattern: no number, so no floating-point `multipleOf`
    assert order["properties"]["amount"] == {"type": "string", "pattern": AMOUNT_PATTERN}
    assert "multipleOf" not in json.dumps(order)
    record = _only(ingress, "AWS::ApiGateway::Model", {"Name": "LegacyRecord"})["Schema"]
    assert set(record["required"]) == {"record_id", "payload"}
    # AND each POST route validates against its model
    start = _only(ingress, "AWS::ApiGateway::Method", {"OperationName": "StartPayment"})
    assert list(start["RequestModels"]) == ["application/json"]


def test_throttling_and_quota_refusals_are_429_with_retry_after_and_a_json_body(ingress, dev_config):
    throttled = _only(ingress, "AWS::ApiGateway::GatewayResponse", {"ResponseType": "THROTTLED"})
    assert throttled["StatusCode"] == "429"
    assert throttled["ResponseParameters"]["gatewayresponse.header.Retry-After"] == \
        f"'{api_limits(dev_config.ingress).throttle_retry_after_sec}'"
    body = throttled["ResponseTemplates"]["application/json"]
    assert '"retry_after_sec": 1' in body and "$context.requestId" in body
    quota = _only(ingress, "AWS::ApiGateway::GatewayResponse", {"ResponseType": "QUOTA_EXCEEDED"})
    assert quota["StatusCode"] == "429"
    assert quota["ResponseParameters"]["gatewayresponse.header.Retry-After"] == "'3600'"
    bad_body = _only(ingress, "AWS::ApiGateway::GatewayResponse", {"ResponseType": "BAD_REQUEST_BODY"})
    assert bad_body["StatusCode"] == "400"
    assert "$context.error.validationErrorString" in bad_body["ResponseTemplates"]["application/json"]
    for response_type in ("BAD_REQUEST_PARAMETERS", "DEFAULT_4XX", "DEFAULT_5XX"):
        _only(ingress, "AWS::ApiGateway::GatewayResponse", {"ResponseType": response_type})


def test_post_payments_starts_the_standard_workflow_named_after_the_order(ingress):
    integration = _only(ingress, "AWS::ApiGateway::Method", {"OperationName": "StartPayment"})["Integration"]
    assert _joined(integration["Uri"]).endswith(":states:action/StartExecution")
    request = _joined(integration["RequestTemplates"]["application/json"])
    assert '"name": "order-$util.escapeJavaScript($input.path(\'$.order_id\'))' in request
    assert '"stateMachineArn": "<token>"' in request
    by_status = {r["StatusCode"]: r for r in integration["IntegrationResponses"]}
    assert set(by_status) == {"202", "500", "503"}
    assert by_status["500"]["SelectionPattern"] == "4\\d{2}"
    assert "ExecutionAlreadyExists" in by_status["500"]["ResponseTemplates"]["application/json"]
    assert by_status["503"]["ResponseParameters"] == {"method.response.header.Retry-After": "'1'"}


def error_statuses_answered_as_success(integration: dict) -> list[int]:
    """The service statuses (4xx, 5xx) that no selection pattern takes, so the default (success) answer renders them."""
    patterns = [r["SelectionPattern"] for r in integration["IntegrationResponses"] if r.get("SelectionPattern")]
    return [status for status in range(400, 600) if not any(re.fullmatch(p, str(status)) for p in patterns)]


def test_no_service_error_behind_any_route_reaches_its_success_answer(ingress):
    # DynamoDB, SQS and Step Functions answer throttling and denials with 4xx: a route without a
    # pattern for them renders an error through its 200 template (GET once answered "no such order").
    methods = ingress.find_resources("AWS::ApiGateway::Method")
    integrations = {m["Properties"]["OperationName"]: m["Properties"]["Integration"] for m in methods.values()
                    if m["Properties"].get("Integration", {}).get("Type") == "AWS"}
    assert set(integrations) == {"StartPayment", "GetPayment", "QueueLegacyRecord"}
    for operation, integration in integrations.items():
        assert error_statuses_answered_as_success(integration) == [], operation


def test_the_guard_catches_a_route_whose_service_errors_fall_through(ingress):
    # GIVEN GET /payments/{id} as it was: a 200 answer and a 5xx pattern, nothing for 4xx
    get = _only(ingress, "AWS::ApiGateway::Method", {"OperationName": "GetPayment"})["Integration"]
    as_it_was = {**get, "IntegrationResponses": [r for r in get["IntegrationResponses"]
                                                  if r.get("SelectionPattern") != "4\\d{2}"]}
    # THEN every 4xx is reported
    assert error_statuses_answered_as_success(as_it_was) == list(range(400, 500))


def test_get_payment_reads_the_orders_table_and_legacy_records_go_straight_to_the_queue(ingress):
    get = _only(ingress, "AWS::ApiGateway::Method", {"OperationName": "GetPayment"})
    assert get["RequestParameters"] == {"method.request.path.id": True}
    assert _joined(get["Integration"]["Uri"]).endswith(":dynamodb:action/GetItem")
    queue = _only(ingress, "AWS::ApiGateway::Method", {"OperationName": "QueueLegacyRecord"})["Integration"]
    assert ":sqs:path/" in _joined(queue["Uri"])
    assert queue["RequestParameters"] == {
        "integration.request.header.Content-Type": "'application/x-www-form-urlencoded'"}
    assert _joined(queue["RequestTemplates"]["application/json"]).strip().startswith("## POST /legacy-records")


def _statements(template: Template, role_prefix: str) -> list[dict]:
    policies = [p for p in template.find_resources("AWS::IAM::Policy").values()
                if p["Properties"]["Roles"][0]["Ref"].startswith(role_prefix)]
    assert len(policies) == 1, f"expected one policy for {role_prefix}"
    return policies[0]["Properties"]["PolicyDocument"]["Statement"]


@pytest.mark.parametrize(
    ("role_prefix", "actions"),
    [
        ("StartPaymentRole", {"states:StartExecution"}),
        ("GetPaymentRole", {"dynamodb:GetItem"}),
        ("SendLegacyRecordRole", {"sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
                                  "kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"}),
    ],
)
def test_each_integration_role_may_do_its_one_job(ingress, role_prefix, actions):
    statements = _statements(ingress, role_prefix)
    granted = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert statement["Resource"] != "*"
        granted |= set([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    assert granted <= actions and granted & actions


def test_integration_roles_are_assumed_by_api_gateway_only(ingress):
    roles = [r for logical_id, r in ingress.find_resources("AWS::IAM::Role").items()
             if logical_id.startswith(("StartPaymentRole", "GetPaymentRole", "SendLegacyRecordRole"))]
    assert len(roles) == 3
    for role in roles:
        (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "apigateway.amazonaws.com"}


def test_dev_has_no_web_acl(ingress):
    # (the nag acknowledgement on the stage says why, and how to turn it on)
    ingress.resource_count_is("AWS::WAFv2::WebACL", 0)


@pytest.fixture(scope="module")
def prod_ingress(cdk_context, cdk_stages) -> Template:
    config = load_config(copy.deepcopy(cdk_stages), "prod")
    app = App(context=cdk_context)
    stacks = add_stacks(app, replace(config, nag=False))
    return Template.from_stack(stacks["ingress"])


def test_prod_puts_a_web_acl_with_a_per_ip_rate_rule_answering_429_in_front_of_the_stage(prod_ingress, cdk_stages):
    acl = _only(prod_ingress, "AWS::WAFv2::WebACL")
    assert acl["Scope"] == "REGIONAL"
    (rule,) = acl["Rules"]
    statement = rule["Statement"]["RateBasedStatement"]
    assert statement == {"AggregateKeyType": "IP", "EvaluationWindowSec": 300,
                         "Limit": cdk_stages["prod"]["ingress"]["waf"]["requests_per_5_min_per_ip"]}
    response = rule["Action"]["Block"]["CustomResponse"]
    assert response["ResponseCode"] == 429
    assert response["ResponseHeaders"] == [{"Name": "Retry-After", "Value": "300"}]
    association = _only(prod_ingress, "AWS::WAFv2::WebACLAssociation")
    assert "Fn::GetAtt" in association["WebACLArn"]


def test_a_throttle_for_a_route_the_api_lacks_fails_synth(cdk_context, cdk_stages):
    stages = copy.deepcopy(cdk_stages)
    stages["dev"]["ingress"]["method_throttles"]["DELETE /payments/{id}"] = {"rate_limit_per_sec": 1, "burst": 1}
    app = App(context=cdk_context)
    add_stacks(app, load_config(stages, "dev"))
    with pytest.raises(Exception, match=r"the API's limits throttle 'DELETE /payments/\{id\}', but the API has no such route"):
        app.synth()


def test_a_client_named_as_the_default_tenant_is_refused(cdk_context, cdk_stages):
    # GIVEN a client named as the tenant of keys the stack did not create
    stages = copy.deepcopy(cdk_stages)
    stages["dev"]["ingress"]["tiers"]["free"]["api_keys"] = ["default"]
    app = App(context=cdk_context)
    # THEN the app refuses it, saying why and what to do: its requests could not be told from those of any other key
    with pytest.raises(ValueError, match=r"an API client may not be named 'default'.*rename the client"):
        add_stacks(app, load_config(stages, "dev"))



def access_log_problems(log_format: str) -> list[str]:
    """Why an access log format could write a line that is not JSON: a variable a client writes, substituted
    unescaped, or a format that is not a JSON object of strings to begin with."""
    from stacks.patterns.throttled_api import CLIENT_WRITTEN_CONTEXT_VARIABLES

    problems = [f"{variable} is written by the client and substituted unescaped"
                for variable in CLIENT_WRITTEN_CONTEXT_VARIABLES
                if re.search(re.escape(variable) + r"(?![A-Za-z0-9_])", log_format)]
    try:
        fields = json.loads(log_format)
    except ValueError as error:
        return [*problems, f"the format is not JSON: {error}"]
    problems += [f"{name} is not a quoted value" for name, value in fields.items() if not isinstance(value, str)]
    return problems


def test_every_access_log_line_stays_json_whatever_a_client_sends(ingress):
    # GIVEN the stage's access log format (the 429 metric filter reads $.status from each line)
    (stage,) = ingress.find_resources("AWS::ApiGateway::Stage").values()
    log_format = stage["Properties"]["AccessLogSetting"]["Format"]
    # THEN it holds only values API Gateway writes, each in quotes
    assert access_log_problems(log_format) == []
    assert {"request_id", "status", "api_key_id", "xray_trace_id"} <= set(json.loads(log_format))


def test_the_access_log_guard_catches_a_client_written_value():
    log_format = json.dumps({"status": "$context.status", "user_agent": "$context.identity.userAgent"})
    assert access_log_problems(log_format) == [
        "$context.identity.userAgent is written by the client and substituted unescaped"]
