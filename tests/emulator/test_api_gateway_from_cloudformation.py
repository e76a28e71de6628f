"""moto's CloudFormation keeps a REST API's request contract only with the fix (`patches`)."""

from __future__ import annotations

import json

import pytest

from localcloud.emulator import patches

pytestmark = pytest.mark.emulator

TEMPLATE = {"Resources": {
    "Api": {"Type": "AWS::ApiGateway::RestApi", "Properties": {"Name": "probe"}},
    "Orders": {"Type": "AWS::ApiGateway::Resource", "Properties": {
        "RestApiId": {"Ref": "Api"}, "ParentId": {"Fn::GetAtt": ["Api", "RootResourceId"]}, "PathPart": "orders"}},
    "Order": {"Type": "AWS::ApiGateway::Model", "Properties": {
        "RestApiId": {"Ref": "Api"}, "Name": "Order", "ContentType": "application/json",
        "Schema": {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object", "required": ["id"]}}},
    "Validator": {"Type": "AWS::ApiGateway::RequestValidator", "Properties": {
        "RestApiId": {"Ref": "Api"}, "ValidateRequestBody": True, "ValidateRequestParameters": False}},
    "Throttled": {"Type": "AWS::ApiGateway::GatewayResponse", "Properties": {
        "RestApiId": {"Ref": "Api"}, "ResponseType": "THROTTLED", "StatusCode": "429",
        "ResponseParameters": {"gatewayresponse.header.Retry-After": "'1'"}}},
    "Post": {"Type": "AWS::ApiGateway::Method", "Properties": {
        "RestApiId": {"Ref": "Api"}, "ResourceId": {"Ref": "Orders"}, "HttpMethod": "POST",
        "AuthorizationType": "NONE", "ApiKeyRequired": True,
        "RequestModels": {"application/json": {"Ref": "Order"}}, "RequestValidatorId": {"Ref": "Validator"},
        "MethodResponses": [{"StatusCode": "202"}],
        "Integration": {
            "Type": "AWS", "IntegrationHttpMethod": "POST",
            "Uri": "arn:aws:apigateway:us-east-1:states:action/StartExecution",
            "Credentials": "arn:aws:iam::123456789012:role/starter",
            "PassthroughBehavior": "NEVER",
            "RequestTemplates": {"application/json": {"Fn::Join": ["", ['{"name": "', {"Ref": "Api"}, '"}']]}},
            "IntegrationResponses": [{"StatusCode": "202"},
                                     {"StatusCode": "500", "SelectionPattern": "4\\d{2}"}]}}},
}, "Outputs": {"ApiId": {"Value": {"Ref": "Api"}}, "OrdersId": {"Value": {"Ref": "Orders"}}}}


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_the_deployed_method_keeps_templates_responses_model_and_validator_only_with_the_fix(cloud, patched):
    if not patched:
        patches.remove("api_gateway_integrations_from_cloudformation")
    try:
        # WHEN CloudFormation creates the API
        stack_name = f"api-{'patched' if patched else 'alone'}"
        cfn = cloud.client("cloudformation")
        cfn.create_stack(StackName=stack_name, TemplateBody=json.dumps(TEMPLATE))
    finally:
        patches.apply("api_gateway_integrations_from_cloudformation")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=stack_name)["Stacks"][0]["Outputs"]}
    apigateway = cloud.client("apigateway")
    method = apigateway.get_method(restApiId=outputs["ApiId"], resourceId=outputs["OrdersId"], httpMethod="POST")
    integration = method["methodIntegration"]
    # THEN only with the fix does the deployed API hold its templates (resolved), responses, model and validator
    if not patched:
        assert "requestTemplates" not in integration and "integrationResponses" not in integration
        assert not method.get("requestModels")
        assert apigateway.get_models(restApiId=outputs["ApiId"])["items"] == []
        return
    assert integration["requestTemplates"] == {"application/json": f'{{"name": "{outputs["ApiId"]}"}}'}
    assert integration["credentials"] == "arn:aws:iam::123456789012:role/starter"
    assert integration["passthroughBehavior"] == "NEVER"
    assert {code: r.get("selectionPattern") for code, r in integration["integrationResponses"].items()} == {
        "202": None, "500": "4\\d{2}"}
    assert method["requestModels"] == {"application/json": "Order"}
    validator = apigateway.get_request_validator(restApiId=outputs["ApiId"],
                                                 requestValidatorId=method["requestValidatorId"])
    assert validator["validateRequestBody"] is True
    assert json.loads(apigateway.get_model(restApiId=outputs["ApiId"], modelName="Order")["schema"])["required"] == ["id"]
    throttled = apigateway.get_gateway_response(restApiId=outputs["ApiId"], responseType="THROTTLED")
    assert throttled["statusCode"] == "429"


def _keyed_api_template(queue_name: str) -> dict:
    """An API whose one route queues `$context.identity.apiKeyId`, with a key in a plan, one outside any plan
    and a disabled one in the plan."""
    key = {"Type": "AWS::ApiGateway::ApiKey", "Properties": {"Name": "client", "Enabled": True}}
    return {"Resources": {
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": queue_name}},
        "Api": {"Type": "AWS::ApiGateway::RestApi", "Properties": {"Name": "keyed"}},
        "Records": {"Type": "AWS::ApiGateway::Resource", "Properties": {
            "RestApiId": {"Ref": "Api"}, "ParentId": {"Fn::GetAtt": ["Api", "RootResourceId"]}, "PathPart": "records"}},
        "Post": {"Type": "AWS::ApiGateway::Method", "Properties": {
            "RestApiId": {"Ref": "Api"}, "ResourceId": {"Ref": "Records"}, "HttpMethod": "POST",
            "AuthorizationType": "NONE", "ApiKeyRequired": True, "MethodResponses": [{"StatusCode": "200"}],
            "Integration": {
                "Type": "AWS", "IntegrationHttpMethod": "POST",
                "Uri": f"arn:aws:apigateway:us-east-1:sqs:path/123456789012/{queue_name}",
                "PassthroughBehavior": "NEVER",
                "RequestParameters": {"integration.request.header.Content-Type": "'application/x-www-form-urlencoded'"},
                "RequestTemplates": {"application/json": "Action=SendMessage&MessageBody=$context.identity.apiKeyId"},
                "IntegrationResponses": [{"StatusCode": "200"}]}}},
        "Key": key,
        "Outsider": {**key, "Properties": {"Name": "outsider", "Enabled": True}},
        "Disabled": {**key, "Properties": {"Name": "disabled", "Enabled": False}},
        "Plan": {"Type": "AWS::ApiGateway::UsagePlan", "Properties": {
            "UsagePlanName": "tier", "ApiStages": [{"ApiId": {"Ref": "Api"}, "Stage": "dev"}],
            "Throttle": {"RateLimit": 1, "BurstLimit": 1}}},
        "PlanKey": {"Type": "AWS::ApiGateway::UsagePlanKey", "Properties": {
            "UsagePlanId": {"Ref": "Plan"}, "KeyId": {"Ref": "Key"}, "KeyType": "API_KEY"}},
        "DisabledPlanKey": {"Type": "AWS::ApiGateway::UsagePlanKey", "Properties": {
            "UsagePlanId": {"Ref": "Plan"}, "KeyId": {"Ref": "Disabled"}, "KeyType": "API_KEY"}},
    }, "Outputs": {name: {"Value": {"Ref": name}} for name in ("Api", "Key", "Outsider", "Disabled", "Queue")}}


@pytest.mark.parametrize("patched", [False, True], ids=["moto-alone", "patched"])
def test_a_request_is_known_by_its_key_s_value_and_templates_get_the_key_s_id_only_with_the_fix(cloud, patched):
    from localcloud.emulator.api_gateway import LocalRestApi

    queue_name = f"keyed-{'patched' if patched else 'alone'}"
    if not patched:
        patches.remove("api_keys_and_usage_plans_from_cloudformation")
    try:
        # WHEN CloudFormation creates an API, its keys and a usage plan holding one enabled and one disabled key
        cfn = cloud.client("cloudformation")
        cfn.create_stack(StackName=f"keys-{'patched' if patched else 'alone'}",
                         TemplateBody=json.dumps(_keyed_api_template(queue_name)))
        # moto's CloudFormation creates the resources when the stack is first described
        outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(
            StackName=f"keys-{'patched' if patched else 'alone'}")["Stacks"][0]["Outputs"]}
    finally:
        patches.apply("api_keys_and_usage_plans_from_cloudformation")
    apigateway = cloud.client("apigateway")
    if not patched:
        # THEN moto alone creates no key and no plan: the id a Ref answers names nothing
        assert not [k for k in apigateway.get_api_keys()["items"] if k["name"] in ("client", "outsider", "disabled")]
        assert not [p for p in apigateway.get_usage_plans()["items"] if p["name"] == "tier"]
        return
    values = {name: apigateway.get_api_key(apiKey=outputs[name], includeValue=True)["value"]
              for name in ("Key", "Outsider", "Disabled")}
    api = LocalRestApi(cloud, outputs["Api"])
    sqs = cloud.client("sqs")
    queue_url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    # WHEN the plan's enabled key calls THEN the template saw that key's id, as API Gateway gives it
    answer = api.request("POST", "/records", body={}, headers={"x-api-key": values["Key"]})
    assert answer.status == 200, answer.body
    (message,) = sqs.receive_message(QueueUrl=queue_url)["Messages"]
    assert message["Body"] == outputs["Key"]
    # AND a key outside every plan of the API, a disabled key, an unknown value and no key are refused with 403
    # INVALID_API_KEY, and nothing more is queued
    for headers in ({"x-api-key": values["Outsider"]}, {"x-api-key": values["Disabled"]},
                    {"x-api-key": "not-a-key-of-this-account"}, {}):
        refused = api.request("POST", "/records", body={}, headers=headers)
        assert refused.status == 403, headers
    assert sqs.receive_message(QueueUrl=queue_url).get("Messages", []) == []
