"""moto's Lambda: asynchronous invocation, the environment and account-concurrency limits, and public layers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from localcloud.emulator.patches.cloudformation import add_resource_types
from localcloud.emulator.patches.registry import Undo, patch, replace, replace_items, undo_all


# -- asynchronous Lambda invocation ------------------------------------------------------------------
# Lambda's defaults for an asynchronous invocation without an EventInvokeConfig.
LAMBDA_ASYNC_DEFAULT_RETRY_ATTEMPTS = 2


class _CloudFormationEventInvokeConfig:
    """`AWS::Lambda::EventInvokeConfig` for moto's CloudFormation, stored with moto's own PutFunctionEventInvokeConfig."""

    def __init__(self, function_name: str, qualifier: str) -> None:
        self.function_name = function_name
        self.physical_resource_id = f"{function_name}:{qualifier}"

    def is_created(self) -> bool:
        return True

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::Lambda::EventInvokeConfig"

    @classmethod
    def has_cfn_attr(cls, attribute: str) -> bool:
        return False

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str,
                                        region_name: str, **kwargs: Any) -> _CloudFormationEventInvokeConfig:
        from moto.awslambda.models import lambda_backends

        properties = cloudformation_json["Properties"]
        config = {key: properties[key] for key in ("MaximumRetryAttempts", "MaximumEventAgeInSeconds",
                                                   "DestinationConfig") if key in properties}
        backend = lambda_backends[account_id][region_name]
        function = backend.get_function(properties["FunctionName"])
        function.event_invoke_config = []  # one configuration per function and qualifier, as on Lambda
        backend.put_function_event_invoke_config(properties["FunctionName"], config)
        return cls(properties["FunctionName"], properties.get("Qualifier", "$LATEST"))

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str) -> _CloudFormationEventInvokeConfig:
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)

    def delete(self, account_id: str, region_name: str) -> None:
        """Forget the function's configuration, by the name resolved at creation (a stack's deletion passes the
        template's unresolved `Ref`); nothing to do when the function went first."""
        from moto.awslambda.exceptions import UnknownFunctionException
        from moto.awslambda.models import lambda_backends

        try:
            lambda_backends[account_id][region_name].get_function(self.function_name).event_invoke_config = []
        except UnknownFunctionException:
            pass


def _invocation_record(function: Any, event: Any, payload: str, errored: bool, attempts: int) -> dict[str, Any]:
    """The record Lambda sends to a destination (its documented shape: request and response, with context)."""
    try:
        response = json.loads(payload) if payload else None
    except ValueError:
        response = payload
    return {
        "version": "1.0",
        "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "requestContext": {"requestId": str(uuid.uuid4()), "functionArn": f"{function.function_arn}:$LATEST",
                           "condition": "RetriesExhausted" if errored else "Success",
                           "approximateInvokeCount": attempts},
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
                            **({"functionError": "Unhandled"} if errored else {})},
        "responsePayload": response,
    }


def _deliver_invocation_record(function: Any, destination: str, record: dict[str, Any]) -> None:
    from moto.sqs.models import sqs_backends

    arn = destination.split(":")
    if arn[2] != "sqs":
        raise NotImplementedError(f"the emulator delivers invocation records to SQS queues only, got {destination!r}:"
                                  " teach lambda_asynchronous_invocation that destination")
    region, account, queue_name = arn[3], arn[4], arn[5]
    sqs_backends[account][region].send_message(queue_name, json.dumps(record))


@patch("lambda")
def lambda_asynchronous_invocation() -> Undo:
    """Invoke a function asynchronously as Lambda does: its retries, then its destinations.

    moto limitations: its CloudFormation skips `AWS::Lambda::EventInvokeConfig`, and an `Event`
    invocation runs the function once and forgets the result, so a failed event vanishes whatever
    the function's configuration says. With this fix the configuration is deployed, and a failed
    `Event` invocation is retried `MaximumRetryAttempts` times (Lambda's default, 2, without a
    configuration), then its invocation record goes to the `OnFailure` destination; a successful
    one's to `OnSuccess`. Not modelled: the minutes Lambda waits between retries (they run at once)
    and the event's age (no event waits), so `MaximumEventAgeInSeconds` is stored, not applied;
    destinations other than SQS queues.
    """
    from moto.awslambda.models import LambdaFunction

    original = LambdaFunction.invoke

    def invoke(self: Any, body: str, request_headers: Any, response_headers: Any) -> str | bytes:
        if (request_headers.get("x-amz-invocation-type") or "RequestResponse") != "Event":
            return original(self, body, request_headers, response_headers)
        config = self.event_invoke_config[0].config if self.event_invoke_config else {}
        attempts = 1 + int(config.get("MaximumRetryAttempts", LAMBDA_ASYNC_DEFAULT_RETRY_ATTEMPTS))
        for attempt in range(1, attempts + 1):
            payload, errored, _ = self._invoke_lambda(event=body)
            if not errored:
                break
        outcome = "OnFailure" if errored else "OnSuccess"
        destination = config.get("DestinationConfig", {}).get(outcome, {}).get("Destination")
        if destination:
            event = json.loads(body) if body else {}
            _deliver_invocation_record(self, destination, _invocation_record(self, event, payload, errored, attempt))
        return b""

    return undo_all(
        add_resource_types({_CloudFormationEventInvokeConfig.cloudformation_type(): _CloudFormationEventInvokeConfig}),
        replace(LambdaFunction, invoke=invoke),
    )


# Lambda measures an environment as the JSON of its variables ("String measured: {...}" in its error).
LAMBDA_ENVIRONMENT_LIMIT_BYTES = 4_096


def lambda_environment_bytes(variables: dict[str, str] | None) -> int:
    """The size Lambda holds against its 4 KB limit: the compact JSON of the variables, in UTF-8."""
    return len(json.dumps(variables or {}, separators=(",", ":"), ensure_ascii=False).encode())


@patch("lambda")
def lambda_environment_size_limit() -> Undo:
    """Refuse a function whose environment exceeds Lambda's 4 KB, as `CreateFunction` and
    `UpdateFunctionConfiguration` do on AWS (and so a CloudFormation deploy of such a function).

    moto limitation: both accept an environment of any size, so a template AWS rolls back deploys.
    """
    def on_create(backend: Any, spec: dict[str, Any]) -> None:
        _check_lambda_environment((spec.get("Environment") or {}).get("Variables"))

    def on_update(function: Any, config_updates: dict[str, Any]) -> None:
        if "Environment" in config_updates:
            _check_lambda_environment((config_updates.get("Environment") or {}).get("Variables"))

    return _add_lambda_checks("environment-size", on_create, on_update)


# Checks several patches make before moto's CreateFunction and UpdateFunctionConfiguration, installed
# as one wrapper each, so that any of the patches can be removed alone.
_LAMBDA_CREATE_CHECKS: dict[str, Callable[[Any, dict[str, Any]], None]] = {}
_LAMBDA_UPDATE_CHECKS: dict[str, Callable[[Any, dict[str, Any]], None]] = {}
_lambda_checks_undo: list[Undo] = []  # the two wrappers, while any fix has checks in them


def _add_lambda_checks(name: str, on_create: Callable[[Any, dict[str, Any]], None],
                       on_update: Callable[[Any, dict[str, Any]], None] | None = None) -> Undo:
    """Run `on_create` (and `on_update`) before moto's CreateFunction (UpdateFunctionConfiguration); the answer
    stops them."""
    _LAMBDA_CREATE_CHECKS[name] = on_create
    if on_update is not None:
        _LAMBDA_UPDATE_CHECKS[name] = on_update
    if not _lambda_checks_undo:
        _lambda_checks_undo.append(_wrap_lambda_calls())

    def undo() -> None:
        _LAMBDA_CREATE_CHECKS.pop(name, None)
        _LAMBDA_UPDATE_CHECKS.pop(name, None)
        if not (_LAMBDA_CREATE_CHECKS or _LAMBDA_UPDATE_CHECKS) and _lambda_checks_undo:
            _lambda_checks_undo.pop()()

    return undo


def _wrap_lambda_calls() -> Undo:
    from moto.awslambda.models import LambdaBackend, LambdaFunction

    original_create = LambdaBackend.create_function
    original_update = LambdaFunction.update_configuration

    def create_function(self: Any, spec: dict[str, Any]) -> Any:
        for check in list(_LAMBDA_CREATE_CHECKS.values()):
            check(self, spec)
        return original_create(self, spec)

    def update_configuration(self: Any, config_updates: dict[str, Any]) -> Any:
        for check in list(_LAMBDA_UPDATE_CHECKS.values()):
            check(self, config_updates)
        return original_update(self, config_updates)

    return undo_all(replace(LambdaBackend, create_function=create_function),
                    replace(LambdaFunction, update_configuration=update_configuration))


def _check_lambda_environment(variables: dict[str, str] | None) -> None:
    from moto.awslambda.exceptions import InvalidParameterValueException

    if lambda_environment_bytes(variables) > LAMBDA_ENVIRONMENT_LIMIT_BYTES:
        measured = json.dumps(variables, separators=(",", ":"), ensure_ascii=False)
        raise InvalidParameterValueException(
            "Lambda was unable to configure your environment variables because the environment variables you have"
            f" provided exceeded the 4KB limit. String measured: {measured}"
        )


@patch("lambda")
def public_lambda_layers(layers: Any, account_id: str) -> Undo:
    """Deploy functions with their layers, resolved from the public parameters as CloudFormation does.

    moto limitations: CloudFormation drops an `AWS::Lambda::Function`'s `Layers`; `CreateFunction`
    refuses a layer that is not in moto's own store (every public layer, such as Powertools' in
    account 017000801446); the public `/aws/service/powertools/...` parameters do not exist; and a
    stack parameter of type `AWS::SSM::Parameter::Value<String>` naming a missing parameter crashes
    moto (an AttributeError, a 500) where CloudFormation refuses the stack. With this patch the
    parameters of `layers` (a `localcloud.emulator.public_layers.PublicLayers`) exist in the account's
    region, their layers are accepted and kept on the function (the Lambda runtime decides what
    runs with them), and a missing parameter fails the stack with CloudFormation's message.
    """
    from moto.awslambda.models import LambdaFunction
    from moto.cloudformation.exceptions import ValidationError
    from moto.cloudformation.parsing import ResourceMap
    from moto.core.utils import utcnow
    from moto.ssm.models import Parameter, ssm_backends

    original_layers = LambdaFunction._get_layers_data
    original_create = LambdaFunction.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    original_parse = ResourceMap.parse_ssm_parameter

    def get_layers_data(self: Any, arns: list[str]) -> list[dict[str, Any]]:
        public = [{"Arn": arn, "CodeSize": 0} for arn in arns if layers.release_of(arn) is not None]
        others = [arn for arn in arns if layers.release_of(arn) is None]
        kept = original_layers(self, others) if others else []
        by_arn = {layer["Arn"]: layer for layer in [*public, *kept]}
        return [by_arn[arn] for arn in arns]  # in the template's order, as Lambda stacks them

    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any, *args: Any,
                                        **kwargs: Any) -> Any:
        function = original_create(cls, resource_name, cloudformation_json, *args, **kwargs)
        wanted = cloudformation_json.get("Properties", {}).get("Layers")
        if wanted:
            function.layers = function._get_layers_data(list(wanted))
        return function

    def parse_ssm_parameter(self: Any, value: str, value_type: str) -> Any:
        from moto.ssm.models import ssm_backends as backends

        if backends[self._account_id][self._region_name].get_parameter(value) is None:
            raise ValidationError(message=f"Unable to fetch parameters [{value}] from parameter store for this account.")
        return original_parse(self, value, value_type)

    backend = ssm_backends[account_id][layers.region]
    for name, arn in layers.parameters().items():
        backend._parameters[name] = [Parameter(
            account_id=account_id, name=name, value=arn, parameter_type="String", description=None,
            allowed_pattern=None, keyid=None, last_modified_date=utcnow(), version=1, data_type="text")]
    return undo_all(
        replace(LambdaFunction, _get_layers_data=get_layers_data,
                create_from_cloudformation_json=classmethod(create_from_cloudformation_json)),
        replace(ResourceMap, parse_ssm_parameter=parse_ssm_parameter),
    )


@patch("lambda")
def lambda_layer_version_refs() -> Undo:
    """A template's own layers: `Ref` of an `AWS::Lambda::LayerVersion` is its version ARN, as in CloudFormation.

    moto limitation: its LayerVersion has no physical id, so a `Ref` resolves to the Python object
    itself and a function naming the layer crashes the stack (an AttributeError, a 500). With this
    patch the function gets the layer's ARN, and the Lambda runtime unpacks the layer's content.
    """
    from moto.awslambda.models import LayerVersion

    return replace(LayerVersion, physical_resource_id=property(lambda self: self.arn))


class LambdaAccount:
    """The account's Lambda concurrency as the emulator enforces it; tests set `concurrency_limit` (a new
    account's is 10) and restore it.

    Lambda keeps `minimum_unreserved` executions for functions without a reservation: 100, or the whole
    limit when it is below 100 (as on a new account, which can then reserve nothing).
    """

    UNRESERVED_MINIMUM = 100

    def __init__(self, concurrency_limit: int = 1_000) -> None:
        self.concurrency_limit = concurrency_limit

    @property
    def minimum_unreserved(self) -> int:
        return min(self.UNRESERVED_MINIMUM, self.concurrency_limit)


@patch("lambda")
def lambda_account_concurrency(lambda_account: LambdaAccount) -> Undo:
    """Answer `GetAccountSettings`, and refuse a reservation that leaves the account too little unreserved.

    moto limitations: it has no `GetAccountSettings`; `CreateFunction` (so every CloudFormation
    deploy) takes any `ReservedConcurrentExecutions`, and `PutFunctionConcurrency` checks the
    unreserved minimum only when `MOTO_LAMBDA_CONCURRENCY_QUOTA` is set (and then always as 100);
    a CloudFormation update leaves a function's reservation as it was. With this patch the account
    has `lambda_account.concurrency_limit` executions, `GetAccountSettings` reports it and what is
    unreserved, and a create, a put or a stack update that would leave fewer than
    `lambda_account.minimum_unreserved` unreserved is refused with Lambda's message (a deploy rolls back).
    """
    import moto.awslambda.urls as lambda_urls
    from moto.awslambda.models import LambdaBackend, LambdaFunction
    from moto.awslambda.responses import LambdaResponse

    original_put = LambdaBackend.put_function_concurrency
    original_cfn_update = LambdaFunction.update_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def reserved_by_others(backend: Any, function_name: str | None) -> int:
        return sum(int(f.reserved_concurrency or 0) for f in backend.list_functions()
                   if f.function_name != function_name)

    def check(backend: Any, function_name: str | None, wanted: Any) -> None:
        from moto.awslambda.exceptions import InvalidParameterValueException

        if wanted is None:
            return
        unreserved = lambda_account.concurrency_limit - reserved_by_others(backend, function_name) - int(wanted)
        if unreserved < lambda_account.minimum_unreserved:
            raise InvalidParameterValueException(
                "Specified ReservedConcurrentExecutions for function decreases account's"
                f" UnreservedConcurrentExecution below its minimum value of [{lambda_account.minimum_unreserved}]."
            )

    def put_function_concurrency(self: Any, function_name: str, reserved_concurrency: Any) -> Any:
        check(self, self.get_function(function_name).function_name, reserved_concurrency)
        return original_put(self, function_name, reserved_concurrency)

    def update_from_cloudformation_json(cls: Any, original_resource: Any, new_resource_name: str,
                                        cloudformation_json: Any, account_id: str, region_name: str) -> Any:
        from moto.awslambda.models import lambda_backends

        wanted = cloudformation_json.get("Properties", {}).get("ReservedConcurrentExecutions")
        check(lambda_backends[account_id][region_name], original_resource.function_name, wanted)
        updated = original_cfn_update(cls, original_resource, new_resource_name, cloudformation_json, account_id,
                                      region_name)
        updated.reserved_concurrency = wanted  # a property the template no longer sets is removed
        return updated

    def get_account_settings(self: Any) -> Any:
        functions = list(self.backend.list_functions())
        reserved = sum(int(f.reserved_concurrency or 0) for f in functions)
        return 200, {}, json.dumps({
            "AccountLimit": {
                "TotalCodeSize": 80_530_636_800, "CodeSizeUnzipped": 262_144_000, "CodeSizeZipped": 52_428_800,
                "ConcurrentExecutions": lambda_account.concurrency_limit,
                "UnreservedConcurrentExecutions": lambda_account.concurrency_limit - reserved,
            },
            "AccountUsage": {"FunctionCount": len(functions),
                             "TotalCodeSize": sum(int(getattr(f, "code_size", 0) or 0) for f in functions)},
        })

    return undo_all(
        _add_lambda_checks("account-concurrency",
                           lambda backend, spec: check(backend, None, spec.get("ReservedConcurrentExecutions"))),
        replace(LambdaBackend, put_function_concurrency=put_function_concurrency),
        replace(LambdaFunction, update_from_cloudformation_json=classmethod(update_from_cloudformation_json)),
        replace(LambdaResponse, get_account_settings=get_account_settings),
        # Served from the moto server's next Lambda app: patch before the emulator's first Lambda request
        # (a moto server already serving Lambda keeps the route after the undo).
        replace_items(lambda_urls.url_paths, {_ACCOUNT_SETTINGS_PATH: LambdaResponse.dispatch}),
    )


_ACCOUNT_SETTINGS_PATH = r"{0}/(?P<api_version>[^/]+)/account-settings/?$"
