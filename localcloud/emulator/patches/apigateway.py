"""moto's API Gateway under CloudFormation: a REST API's whole request contract, not just its skeleton."""

from __future__ import annotations

import json
from typing import Any

from localcloud.emulator.patches.cloudformation import add_resource_types
from localcloud.emulator.patches.registry import Undo, patch, replace, undo_all


class _CloudFormationApiGatewayPart:
    """An `AWS::ApiGateway::{Model,RequestValidator,GatewayResponse}` for moto's CloudFormation.

    Each is created with moto's own API call; `Ref` answers what AWS's does (the model's name, the
    validator's id), so a method's `RequestModels` and `RequestValidatorId` resolve.
    """

    resource_type = ""

    def __init__(self, physical_resource_id: str) -> None:
        self.physical_resource_id = physical_resource_id

    def is_created(self) -> bool:
        return True

    def delete(self, account_id: str, region_name: str) -> None:
        """Nothing of its own to delete: it goes with its API, which the stack deletes after it."""

    @staticmethod
    def cloudformation_name_type() -> str:
        return "Name"

    @classmethod
    def has_cfn_attr(cls, attribute: str) -> bool:
        return False

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str,
                                        region_name: str, **kwargs: Any) -> _CloudFormationApiGatewayPart:
        from moto.apigateway.models import apigateway_backends

        backend = apigateway_backends[account_id][region_name]
        properties = cloudformation_json["Properties"]
        api_id = properties["RestApiId"]
        if cls.resource_type == "AWS::ApiGateway::Model":
            name = properties.get("Name") or resource_name
            backend.create_model(api_id, name, properties.get("ContentType", "application/json"),
                                 properties.get("Description", ""), json.dumps(properties.get("Schema", {})))
            return cls(name)
        if cls.resource_type == "AWS::ApiGateway::RequestValidator":
            validator = backend.create_request_validator(
                api_id, properties.get("Name") or resource_name,
                properties.get("ValidateRequestBody", False), properties.get("ValidateRequestParameters", False))
            return cls(validator.id)
        backend.put_gateway_response(api_id, properties["ResponseType"], properties.get("StatusCode"),
                                     properties.get("ResponseParameters", {}), properties.get("ResponseTemplates", {}))
        return cls(f"{api_id}-{properties['ResponseType']}")


def _api_gateway_part(resource_type: str) -> type[_CloudFormationApiGatewayPart]:
    return type(resource_type.rsplit("::", 1)[-1], (_CloudFormationApiGatewayPart,), {
        "resource_type": resource_type, "cloudformation_type": staticmethod(lambda: resource_type)})


_API_GATEWAY_PARTS = {t: _api_gateway_part(t) for t in (
    "AWS::ApiGateway::Model", "AWS::ApiGateway::RequestValidator", "AWS::ApiGateway::GatewayResponse")}


@patch("apigateway")
def api_gateway_integrations_from_cloudformation() -> Undo:
    """Deploy a REST API's whole request contract from CloudFormation, not just its skeleton.

    moto limitations: its CloudFormation handler for `AWS::ApiGateway::Method` keeps only the
    integration's type, URI and HTTP method (the mapping templates, the integration's role, its
    passthrough behavior, request parameters and integration responses, and the method's
    responses, request models and validator are dropped), and it skips models, request validators
    and gateway responses altogether. A deployed API then says nothing of what it validates, sends
    or answers. With this fix they are stored as moto's own API calls store them, resolved by
    CloudFormation (ARNs and table names in the templates filled in). moto still executes none of
    it; `localcloud.emulator.api_gateway` validates, renders and sends.
    """
    from moto.apigateway.models import Method, apigateway_backends

    original = Method.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any, account_id: str,
                                        region_name: str, **kwargs: Any) -> Any:
        method = original(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        properties = cloudformation_json["Properties"]
        backend = apigateway_backends[account_id][region_name]
        api_id, resource_id, verb = properties["RestApiId"], properties["ResourceId"], properties["HttpMethod"]
        method.request_models = properties.get("RequestModels")
        method.request_parameters = properties.get("RequestParameters")
        method.request_validator_id = properties.get("RequestValidatorId")
        method.operation_name = properties.get("OperationName")
        for response in properties.get("MethodResponses", []):
            method.create_response(str(response["StatusCode"]), response.get("ResponseModels", {}),
                                   response.get("ResponseParameters", {}))
        integration = method.method_integration
        spec = properties["Integration"]
        integration.request_templates = spec.get("RequestTemplates")
        integration.request_parameters = spec.get("RequestParameters")
        integration.credentials = spec.get("Credentials")
        integration.passthrough_behaviour = spec.get("PassthroughBehavior", integration.passthrough_behaviour)
        for response in spec.get("IntegrationResponses", []):
            backend.put_integration_response(
                api_id, resource_id, verb, str(response["StatusCode"]), response.get("SelectionPattern"),
                response.get("ResponseTemplates", {}), response.get("ResponseParameters", {}),
            )
        return method

    return undo_all(
        add_resource_types(_API_GATEWAY_PARTS),
        replace(Method, create_from_cloudformation_json=classmethod(create_from_cloudformation_json)),
    )


class _CloudFormationApiKeyPart(_CloudFormationApiGatewayPart):
    """An `AWS::ApiGateway::{ApiKey,UsagePlan,UsagePlanKey}` for moto's CloudFormation.

    Created with moto's own calls; `Ref` answers what AWS's does: the key's id, the plan's id, the
    plan key's id. A key without `Value` gets one generated, as API Gateway does.
    """

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str,
                                        region_name: str, **kwargs: Any) -> _CloudFormationApiGatewayPart:
        from moto.apigateway.models import apigateway_backends

        backend = apigateway_backends[account_id][region_name]
        properties = cloudformation_json.get("Properties", {})
        if cls.resource_type == "AWS::ApiGateway::ApiKey":
            payload = {"name": properties.get("Name") or resource_name,
                       "description": properties.get("Description"),
                       "enabled": str(properties.get("Enabled", False)).lower() == "true"}
            if properties.get("Value"):
                payload["value"] = properties["Value"]
            return cls(backend.create_api_key(payload).id)
        if cls.resource_type == "AWS::ApiGateway::UsagePlan":
            plan = backend.create_usage_plan({
                "name": properties.get("UsagePlanName") or resource_name,
                "description": properties.get("Description"),
                "apiStages": [{"apiId": stage.get("ApiId"), "stage": stage.get("Stage")}
                              for stage in properties.get("ApiStages", [])],
                "throttle": {_camel(k): v for k, v in (properties.get("Throttle") or {}).items()},
                "quota": {_camel(k): v for k, v in (properties.get("Quota") or {}).items()},
            })
            return cls(plan.id)
        plan_key = backend.create_usage_plan_key(
            properties["UsagePlanId"], {"keyId": properties["KeyId"], "keyType": properties["KeyType"]})
        return cls(plan_key.id)


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


_API_KEY_PARTS = {t: type(t.rsplit("::", 1)[-1], (_CloudFormationApiKeyPart,), {
    "resource_type": t, "cloudformation_type": staticmethod(lambda t=t: t)})
    for t in ("AWS::ApiGateway::ApiKey", "AWS::ApiGateway::UsagePlan", "AWS::ApiGateway::UsagePlanKey")}


@patch("apigateway")
def api_keys_and_usage_plans_from_cloudformation() -> Undo:
    """Create a stack's API keys, usage plans and the keys' membership of the plans.

    moto limitation: its CloudFormation skips `AWS::ApiGateway::ApiKey`, `UsagePlan` and
    `UsagePlanKey` (a `Ref` to a key answers its bare logical id, and no key exists), so an emulated
    request could not be matched to the key API Gateway knows it by, nor `$context.identity.apiKeyId`
    be what AWS gives a mapping template. With this fix they exist with moto's own API calls, and
    `localcloud.emulator.api_gateway` identifies a request's key by its value, as API Gateway does.
    """
    return add_resource_types(_API_KEY_PARTS)
