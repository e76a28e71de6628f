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
