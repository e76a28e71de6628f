"""Fixes to moto that the emulator needs to run this app faithfully; each names the limitation it covers.

Every `apply_*` function is idempotent and returns an undo callable, so a test can show the
limitation by running without the fix.
"""

from __future__ import annotations

import json
import math
import re
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

Undo = Callable[[], None]


def apply_atomic_dynamodb() -> Undo:
    """Serialize whole DynamoDB requests.

    moto limitation: conditional writes are not atomic under concurrency (the condition is checked,
    then the item written, with no lock between), so eight threads taking from a 500-token bucket
    were granted 516. DynamoDB guarantees a conditional `UpdateItem` is atomic per item; one lock
    around each request gives that guarantee (and more, which only costs throughput).
    """
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler.call_action, "_localcloud_original", None) is not None:
        return remove_atomic_dynamodb
    original = DynamoHandler.call_action
    lock = threading.RLock()

    def call_action(self: Any) -> Any:
        with lock:
            return original(self)

    call_action._localcloud_original = original  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    return remove_atomic_dynamodb


def remove_atomic_dynamodb() -> None:
    """Undo `apply_atomic_dynamodb` (tests use it to show the race the fix closes)."""
    from moto.dynamodb.responses import DynamoHandler

    original = getattr(DynamoHandler.call_action, "_localcloud_original", None)
    if original is not None:
        DynamoHandler.call_action = original  # type: ignore[method-assign]


def apply_jsonata() -> Undo:
    """Evaluate JSONata (and so `QueryLanguage: JSONata` and Variables) with the `jsonata-python` engine.

    moto limitation: its JSONata bridge is a stub for a JVM engine it does not ship, so every JSONata
    expression fails. moto composes each expression with its variable bindings and evaluates it
    without input, which is what we do here.
    """
    import jsonata
    from moto.stepfunctions.parser.asl.jsonata import jsonata as moto_jsonata

    original = moto_jsonata._eval_jsonata

    def eval_jsonata(expression: str) -> Any:
        try:
            result = jsonata.Jsonata(expression).evaluate(None)
            # Round-trip so no engine-specific type escapes into the interpreter.
            return None if result is None else json.loads(json.dumps(result))
        except Exception as error:  # noqa: BLE001 - moto expects its own exception type
            raise moto_jsonata.JSONataException("States.QueryEvaluationError", str(error)) from error

    moto_jsonata._eval_jsonata = eval_jsonata

    def undo() -> None:
        moto_jsonata._eval_jsonata = original

    return undo


def apply_executing_state_machines_from_cloudformation() -> Undo:
    """Create CloudFormation's state machines where executions run.

    moto limitation: with `execute_state_machine` on, the API serves the parser backend
    (`moto.stepfunctions.parser.models.stepfunctions_parser_backends`), but CloudFormation creates
    `AWS::StepFunctions::StateMachine` in the plain backend, where a deployed machine is invisible
    to `StartExecution`. Pointing the module's backend registry at the parser backends fixes both.
    """
    import moto.stepfunctions.models as sfn_models
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    original = sfn_models.stepfunctions_backends
    sfn_models.stepfunctions_backends = stepfunctions_parser_backends

    def undo() -> None:
        sfn_models.stepfunctions_backends = original

    return undo


def enable_state_machine_execution() -> Undo:
    """Turn on moto's ASL interpreter (without it executions stay RUNNING forever)."""
    from moto.core.config import default_user_config

    original = dict(default_user_config.get("stepfunctions", {}))
    default_user_config["stepfunctions"] = {**original, "execute_state_machine": True}

    def undo() -> None:
        default_user_config["stepfunctions"] = original

    return undo


def apply_ssm_parameter_tags_from_cloudformation() -> Undo:
    """Accept `AWS::SSM::Parameter` tags in CloudFormation's shape.

    moto limitation: CloudFormation gives this resource's `Tags` as a map (`{"stage": "dev"}`), but
    moto's handler passes it on to `put_parameter`, which expects `[{"Key": ..., "Value": ...}]`
    and fails the whole stack with a TypeError.
    """
    from moto.ssm.models import Parameter

    original = Parameter.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any, *args: Any,
                                        **kwargs: Any) -> Any:
        tags = cloudformation_json.get("Properties", {}).get("Tags")
        if isinstance(tags, dict):
            properties = {**cloudformation_json["Properties"],
                          "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
            cloudformation_json = {**cloudformation_json, "Properties": properties}
        return original(cls, resource_name, cloudformation_json, *args, **kwargs)

    Parameter.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)  # type: ignore[assignment]

    def undo() -> None:
        Parameter.create_from_cloudformation_json = classmethod(original)  # type: ignore[assignment]

    return undo


def apply_cloudwatch_percentiles() -> Undo:
    """Answer percentile statistics (`p50`, `p99`, `p99.9`) in `GetMetricData`.

    moto limitation: its statistics are Sum, Average, Minimum, Maximum and SampleCount only; for a
    percentile it puts None among a result's values and the response fails to serialize (a 500 in
    server mode). CloudWatch computes percentiles from every value put (EMF and `Values`/`Counts`
    keep them all), which moto stores as single values: the nearest-rank percentile of those is
    what this answers. A period holding only `StatisticValues` has no percentile, and its
    datapoint is left out, as CloudWatch leaves out periods without data.
    """
    from moto.cloudwatch.models import CloudWatchBackend, Statistics

    if getattr(Statistics.get_statistics_for_type, "_localcloud_original", None) is not None:
        return remove_cloudwatch_percentiles
    original_statistic = Statistics.get_statistics_for_type
    original_get_metric_data = CloudWatchBackend.get_metric_data
    percentile = re.compile(r"p([0-9]{1,2}(?:\.[0-9]+)?|100)")

    def get_statistics_for_type(self: Any, stat: str) -> Any:
        match = percentile.fullmatch(stat)
        if match is None:
            return original_statistic(self, stat)
        values = sorted(self.metric_single_values_list)
        if not values:
            return None
        rank = max(1, math.ceil(float(match.group(1)) / 100 * len(values)))
        return values[rank - 1]

    def get_metric_data(self: Any, *args: Any, **kwargs: Any) -> Any:
        results = original_get_metric_data(self, *args, **kwargs)
        for result in results:
            kept = [(t, v) for t, v in zip(result.get("timestamps", []), result.get("values", [])) if v is not None]
            result["timestamps"] = [t for t, _ in kept]
            result["values"] = [v for _, v in kept]
        return results

    get_statistics_for_type._localcloud_original = original_statistic  # type: ignore[attr-defined]
    get_metric_data._localcloud_original = original_get_metric_data  # type: ignore[attr-defined]
    Statistics.get_statistics_for_type = get_statistics_for_type  # type: ignore[method-assign]
    CloudWatchBackend.get_metric_data = get_metric_data  # type: ignore[method-assign]
    return remove_cloudwatch_percentiles


def remove_cloudwatch_percentiles() -> None:
    """Undo `apply_cloudwatch_percentiles` (tests use it to show the failure the fix removes)."""
    from moto.cloudwatch.models import CloudWatchBackend, Statistics

    original = getattr(Statistics.get_statistics_for_type, "_localcloud_original", None)
    if original is not None:
        Statistics.get_statistics_for_type = original  # type: ignore[method-assign]
    original = getattr(CloudWatchBackend.get_metric_data, "_localcloud_original", None)
    if original is not None:
        CloudWatchBackend.get_metric_data = original  # type: ignore[method-assign]


def apply_kms_key_tags_from_cloudformation() -> Undo:
    """Accept `AWS::KMS::Key` tags in CloudFormation's shape.

    moto limitation: CloudFormation gives this resource's `Tags` as `[{"Key": ..., "Value": ...}]`,
    but moto's handler passes them on to KMS's tagger, which expects KMS's own
    `[{"TagKey": ..., "TagValue": ...}]`, and the stack fails with a KeyError (any tagged key, and
    CDK tags every resource of a stack tagged with `Tags.of(stack)`).
    """
    from moto.kms.models import Key

    original = Key.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    if getattr(original, "_localcloud_original", None) is not None:
        return remove_kms_key_tags_from_cloudformation

    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any, *args: Any,
                                        **kwargs: Any) -> Any:
        tags = cloudformation_json.get("Properties", {}).get("Tags")
        if isinstance(tags, list) and all(isinstance(t, dict) and "Key" in t for t in tags):
            properties = {**cloudformation_json["Properties"],
                          "Tags": [{"TagKey": t["Key"], "TagValue": t.get("Value", "")} for t in tags]}
            cloudformation_json = {**cloudformation_json, "Properties": properties}
        return original(cls, resource_name, cloudformation_json, *args, **kwargs)

    create_from_cloudformation_json._localcloud_original = original  # type: ignore[attr-defined]
    Key.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)  # type: ignore[assignment]
    return remove_kms_key_tags_from_cloudformation


def remove_kms_key_tags_from_cloudformation() -> None:
    """Undo `apply_kms_key_tags_from_cloudformation` (tests use it to show the failure the fix removes)."""
    from moto.kms.models import Key

    original = getattr(Key.create_from_cloudformation_json.__func__, "_localcloud_original", None)  # type: ignore[attr-defined]
    if original is not None:
        Key.create_from_cloudformation_json = classmethod(original)  # type: ignore[assignment]


class _CloudFormationAlarm:
    """`AWS::CloudWatch::Alarm` for moto's CloudFormation, backed by moto's own `PutMetricAlarm`."""

    def __init__(self, alarm: Any) -> None:
        self.alarm = alarm
        self.physical_resource_id = alarm.name  # what Ref answers, as in AWS

    def get_cfn_attribute(self, attribute: str) -> Any:
        if attribute == "Arn":
            return self.alarm.alarm_arn
        from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

        raise UnformattedGetAttTemplateException()

    def is_created(self) -> bool:
        return True

    @staticmethod
    def cloudformation_name_type() -> str:
        return "AlarmName"

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::CloudWatch::Alarm"

    @classmethod
    def update_from_cloudformation_json(cls, original_resource: Any, new_resource_name: str, cloudformation_json: Any,
                                        account_id: str, region_name: str) -> _CloudFormationAlarm:
        # PutMetricAlarm on the same name replaces the alarm, as an update does.
        return cls.create_from_cloudformation_json(new_resource_name, cloudformation_json, account_id, region_name)

    @classmethod
    def delete_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str,
                                        region_name: str) -> None:
        from moto.cloudwatch.models import cloudwatch_backends

        name = cloudformation_json.get("Properties", {}).get("AlarmName") or resource_name
        cloudwatch_backends[account_id][region_name].delete_alarms([name])

    @classmethod
    def has_cfn_attr(cls, attribute: str) -> bool:
        return attribute == "Arn"

    @classmethod
    def create_from_cloudformation_json(cls, resource_name: str, cloudformation_json: Any, account_id: str,
                                        region_name: str, **kwargs: Any) -> _CloudFormationAlarm:
        from moto.cloudwatch.models import Dimension, Metric, MetricDataQuery, MetricStat, cloudwatch_backends

        properties = cloudformation_json.get("Properties", {})
        queries = None
        if properties.get("Metrics"):
            queries = []
            for query in properties["Metrics"]:
                stat = query.get("MetricStat")
                metric_stat = None
                if stat:
                    metric = stat["Metric"]
                    metric_stat = MetricStat(
                        metric=Metric(metric_name=metric["MetricName"], namespace=metric.get("Namespace"),
                                      dimensions=[Dimension(d["Name"], d["Value"]) for d in metric.get("Dimensions", [])]),
                        period=stat.get("Period"), stat=stat.get("Stat"), unit=stat.get("Unit"))
                queries.append(MetricDataQuery(query_id=query["Id"], label=query.get("Label"), period=query.get("Period"),
                                               return_data=query.get("ReturnData"), expression=query.get("Expression"),
                                               metric_stat=metric_stat))
        alarm = cloudwatch_backends[account_id][region_name].put_metric_alarm(
            name=properties.get("AlarmName") or resource_name,
            namespace=properties.get("Namespace"),
            metric_name=properties.get("MetricName"),
            comparison_operator=properties["ComparisonOperator"],
            evaluation_periods=int(properties["EvaluationPeriods"]),
            period=properties.get("Period"),
            threshold=float(properties["Threshold"]) if "Threshold" in properties else None,
            statistic=properties.get("Statistic"),
            extended_statistic=properties.get("ExtendedStatistic"),
            description=properties.get("AlarmDescription"),
            dimensions=properties.get("Dimensions", []),
            alarm_actions=properties.get("AlarmActions", []),
            ok_actions=properties.get("OKActions", []),
            insufficient_data_actions=properties.get("InsufficientDataActions", []),
            metric_data_queries=queries,
            datapoints_to_alarm=properties.get("DatapointsToAlarm"),
            unit=properties.get("Unit"),
            actions_enabled=properties.get("ActionsEnabled", True),
            treat_missing_data=properties.get("TreatMissingData"),
            tags=properties.get("Tags"),
        )
        return cls(alarm)


def apply_cloudwatch_alarms_from_cloudformation() -> Undo:
    """Create `AWS::CloudWatch::Alarm` resources of a CloudFormation stack (moto's `PutMetricAlarm`).

    moto limitation: its CloudFormation skips alarms (not supported), so the alarms of a deployed
    stack do not exist, and anything that takes an alarm's ARN (`Fn::GetAtt [Alarm, Arn]`, e.g. a
    dashboard's alarm status widget or a composite alarm) fails the whole stack. moto still
    evaluates no alarm and runs no action: the alarms exist to be described.
    """
    _add_cloudformation_resources({_CloudFormationAlarm.cloudformation_type(): _CloudFormationAlarm})
    return remove_cloudwatch_alarms_from_cloudformation


def remove_cloudwatch_alarms_from_cloudformation() -> None:
    """Undo `apply_cloudwatch_alarms_from_cloudformation` (tests use it to show the failure the fix removes)."""
    _CLOUDFORMATION_RESOURCES.pop(_CloudFormationAlarm.cloudformation_type(), None)


# Resource types the emulator adds to moto's CloudFormation: type -> class with moto's CloudFormationModel shape.
_CLOUDFORMATION_RESOURCES: dict[str, Any] = {}


def _add_cloudformation_resources(classes: dict[str, Any]) -> None:
    """Teach moto's CloudFormation `classes`; one lookup in front of moto's, installed once, shared by the fixes."""
    import moto.cloudformation.parsing as parsing

    if not getattr(parsing.resource_class_from_type, "_localcloud_lookup", False):
        original = parsing.resource_class_from_type

        def resource_class_from_type(resource_type: str) -> Any:
            return _CLOUDFORMATION_RESOURCES.get(resource_type) or original(resource_type)

        resource_class_from_type._localcloud_lookup = True  # type: ignore[attr-defined]
        parsing.resource_class_from_type = resource_class_from_type
    _CLOUDFORMATION_RESOURCES.update(classes)


def apply_definition_substitutions_from_cloudformation() -> Undo:
    """Apply `DefinitionSubstitutions` when CloudFormation creates or updates a state machine.

    moto limitation: its `AWS::StepFunctions::StateMachine` handler passes `DefinitionString` on
    as it is and ignores `DefinitionSubstitutions`, so a deployed machine keeps its literal
    `${Placeholders}` and fails at its first Task. CloudFormation resolves the intrinsics inside the
    substitutions before the handler runs, so replacing each `${Name}` with its value is all AWS does.
    """
    import re

    from moto.stepfunctions.models import StateMachine

    if getattr(StateMachine.create_from_cloudformation_json, "_localcloud_originals", None):
        return lambda: None  # already in force; whoever applied it first owns the undo
    original_create = StateMachine.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    original_update = StateMachine.update_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def substituted(cloudformation_json: Any) -> Any:
        properties = cloudformation_json.get("Properties", {})
        substitutions = properties.get("DefinitionSubstitutions") or {}
        if not substitutions or "DefinitionString" not in properties:
            return cloudformation_json
        definition = re.sub(r"\$\{([A-Za-z0-9_]+)\}",
                            lambda m: str(substitutions.get(m.group(1), m.group(0))), properties["DefinitionString"])
        return {**cloudformation_json, "Properties": {**properties, "DefinitionString": definition}}

    def create(cls: Any, resource_name: str, cloudformation_json: Any, *args: Any, **kwargs: Any) -> Any:
        return original_create(cls, resource_name, substituted(cloudformation_json), *args, **kwargs)

    def update(cls: Any, original_resource: Any, new_resource_name: str, cloudformation_json: Any, *args: Any,
               **kwargs: Any) -> Any:
        return original_update(cls, original_resource, new_resource_name, substituted(cloudformation_json),
                               *args, **kwargs)

    create._localcloud_originals = (original_create, original_update)  # type: ignore[attr-defined]
    StateMachine.create_from_cloudformation_json = classmethod(create)  # type: ignore[assignment]
    StateMachine.update_from_cloudformation_json = classmethod(update)  # type: ignore[assignment]
    return remove_definition_substitutions_from_cloudformation


def remove_definition_substitutions_from_cloudformation() -> None:
    """Undo `apply_definition_substitutions_from_cloudformation` (a test shows the limitation with it)."""
    from moto.stepfunctions.models import StateMachine

    originals = getattr(StateMachine.create_from_cloudformation_json, "_localcloud_originals", None)
    if originals:
        StateMachine.create_from_cloudformation_json = classmethod(originals[0])  # type: ignore[assignment]
        StateMachine.update_from_cloudformation_json = classmethod(originals[1])  # type: ignore[assignment]


def apply_rfc3339_timestamps_in_choice() -> Undo:
    """Compare RFC 3339 timestamps with fractions of a second and offsets in Choice rules, as AWS does.

    moto limitation: its `Timestamp*` comparisons parse only `%Y-%m-%dT%H:%M:%SZ`. A breaker's
    `open_until_utc` ("2026-11-26T02:32:02.257Z") then never compares as later than anything, so an
    open breaker would never park an order, and moto's own `$$.State.EnteredTime` (an `isoformat()`
    with microseconds and "+00:00") parses as nothing, so comparing with it fails the execution.
    """
    from datetime import datetime

    from moto.stepfunctions.parser.asl.component.state.choice.comparison.operator.implementations.is_operator import (
        IsTimestamp,
    )

    current = IsTimestamp.__dict__["string_to_timestamp"]
    if getattr(current.__func__, "moto_original", None) is not None:
        return lambda: None  # already in force; whoever applied it first owns the undo

    def string_to_timestamp(string: Any) -> datetime | None:
        # RFC 3339 (ISO 8601 with an upper-case T, and Z or a numeric offset); naive times are not timestamps.
        if not isinstance(string, str) or "T" not in string:
            return None
        try:
            moment = datetime.fromisoformat(string)
        except ValueError:
            return None
        return moment if moment.tzinfo is not None else None

    string_to_timestamp.moto_original = current  # type: ignore[attr-defined]
    IsTimestamp.string_to_timestamp = staticmethod(string_to_timestamp)
    return remove_rfc3339_timestamps_in_choice


def remove_rfc3339_timestamps_in_choice() -> None:
    """Undo `apply_rfc3339_timestamps_in_choice` (a test shows the limitation with it)."""
    from moto.stepfunctions.parser.asl.component.state.choice.comparison.operator.implementations.is_operator import (
        IsTimestamp,
    )

    original = getattr(IsTimestamp.__dict__["string_to_timestamp"].__func__, "moto_original", None)
    if original is not None:
        IsTimestamp.string_to_timestamp = original


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


def apply_api_gateway_integrations_from_cloudformation() -> Undo:
    """Deploy a REST API's whole request contract from CloudFormation, not just its skeleton.

    moto limitations: its CloudFormation handler for `AWS::ApiGateway::Method` keeps only the
    integration's type, URI and HTTP method (the mapping templates, the integration's role, its
    passthrough behavior, request parameters and integration responses, and the method's
    responses, request models and validator are dropped), and it skips models, request validators
    and gateway responses altogether. A deployed API then says nothing of what it validates, sends
    or answers. With this fix they are stored as moto's own API calls store them, resolved by
    CloudFormation (ARNs and table names in the templates filled in). moto still executes none of
    it; `localcloud.api_gateway` validates, renders and sends.
    """
    from moto.apigateway.models import Method, apigateway_backends

    _add_cloudformation_resources(_API_GATEWAY_PARTS)
    original = Method.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    if getattr(original, "_localcloud_patched", False):
        return remove_api_gateway_integrations_from_cloudformation

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

    create_from_cloudformation_json._localcloud_patched = True  # type: ignore[attr-defined]
    create_from_cloudformation_json._localcloud_original = original  # type: ignore[attr-defined]
    Method.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)  # type: ignore[assignment]
    return remove_api_gateway_integrations_from_cloudformation


def remove_api_gateway_integrations_from_cloudformation() -> None:
    """Undo `apply_api_gateway_integrations_from_cloudformation`."""
    from moto.apigateway.models import Method

    current = Method.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    original = getattr(current, "_localcloud_original", None)
    if original is not None:
        Method.create_from_cloudformation_json = classmethod(original)  # type: ignore[assignment]
    for resource_type in _API_GATEWAY_PARTS:
        _CLOUDFORMATION_RESOURCES.pop(resource_type, None)


# -- Distributed Map ---------------------------------------------------------------------------------

_EXCEEDED_CAUSE = "The specified tolerated failure threshold was exceeded"


class _ToleranceExceeded(Exception):
    """Stops a Map Run's job pool; the Map Run turns it into `States.ExceedToleratedFailureThreshold`."""


def _tolerance_exceeded(record: Any, total_items: int, declared: tuple[bool, bool]) -> bool:
    """AWS's rule: failed (or timed out) items above the count, or above the percentage of all items.

    A threshold the definition does not set does not apply; with neither set, one failure is too many.
    """
    failed = record.item_counter.failed.get() + record.item_counter.timed_out.get()
    count_declared, percentage_declared = declared
    if not (count_declared or percentage_declared):
        return failed > 0
    over_count = count_declared and failed > record.tolerated_failure_count
    over_percentage = percentage_declared and failed * 100 > record.tolerated_failure_percentage * total_items
    return over_count or over_percentage


def _with_float_percentages(definition: str) -> str:
    try:
        document = json.loads(definition)
    except ValueError:
        return definition  # moto's parser reports it
    changed = False

    def visit(node: Any) -> None:
        nonlocal changed
        if isinstance(node, dict):
            value = node.get("ToleratedFailurePercentage")
            if isinstance(value, int) and not isinstance(value, bool):
                node["ToleratedFailurePercentage"] = float(value)
                changed = True
            for inner in node.values():
                visit(inner)
        elif isinstance(node, list):
            for inner in node:
                visit(inner)

    visit(document)
    return json.dumps(document) if changed else definition


def apply_distributed_map_failure_tolerance() -> Undo:
    """Apply a Distributed Map's tolerated failure threshold, written as AWS accepts it.

    moto limitations: its grammar takes `ToleratedFailurePercentage` only with a decimal point (`10` is
    a parse error that refuses the whole state machine, where AWS takes any number from 0 to 100), and
    it ignores both thresholds: a failed child execution is counted and the Map Run carries on, so a
    Map Run never fails. AWS fails the Map Run with `States.ExceedToleratedFailureThreshold` once the
    failed or timed-out items exceed `ToleratedFailureCount`, or `ToleratedFailurePercentage` of all the
    items (one failure when neither is set), and starts no child execution after that; children already
    running may still finish.
    """
    from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import job as job_module
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component import (
        DistributedIterationComponent,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.max_concurrency import (
        DEFAULT_MAX_CONCURRENCY_VALUE,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.state_map import StateMap
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.tolerated_failure import (
        ToleratedFailureCountDecl,
        ToleratedFailurePercentageDecl,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    if getattr(StateMap.from_state_props, "_localcloud_original", None) is not None:
        return remove_distributed_map_failure_tolerance
    JobPool = job_module.JobPool
    originals = {
        "parse": AmazonStateLanguageParser.__dict__["parse"],
        "from_state_props": StateMap.from_state_props,
        "map_run": DistributedIterationComponent._map_run,
        "next_job": JobPool.next_job,
        "close_job": JobPool.close_job,
    }

    def parse(definition: str) -> Any:
        return originals["parse"].__func__(_with_float_percentages(definition))

    def from_state_props(self: Any, state_props: Any) -> None:
        originals["from_state_props"](self, state_props)
        # The defaults moto fills in cannot be told from declared zeros, and an undeclared threshold must not apply.
        self.iteration_component._localcloud_tolerance_declared = (
            state_props.get(ToleratedFailureCountDecl) is not None,
            state_props.get(ToleratedFailurePercentageDecl) is not None,
        )

    def map_run(self: Any, env: Any, eval_input: Any) -> None:
        # moto's own _map_run, with the threshold checked as each child execution ends.
        input_items = env.stack.pop()
        job_pool = JobPool(job_program=self._get_iteration_program(), job_inputs=input_items)
        record = eval_input.map_run_record
        job_pool._localcloud_threshold = (
            record, len(input_items), getattr(self, "_localcloud_tolerance_declared", (False, False)))
        max_concurrency = record.max_concurrency
        workers = len(input_items) if max_concurrency == DEFAULT_MAX_CONCURRENCY_VALUE else max_concurrency
        for _ in range(workers):
            self._launch_worker(env=env, eval_input=eval_input, job_pool=job_pool)
        job_pool.await_jobs()
        worker_exception = job_pool.get_worker_exception()
        if isinstance(worker_exception, _ToleranceExceeded):
            error = StatesErrorNameType.StatesExceedToleratedFailureThreshold.to_name()
            raise FailureEventException(failure_event=FailureEvent(
                env=env,
                error_name=StatesErrorName(typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold),
                event_type=HistoryEventType.MapRunFailed,
                event_details=EventDetails(
                    mapRunFailedEventDetails=MapRunFailedEventDetails(error=error, cause=_EXCEEDED_CAUSE)),
            ))
        if worker_exception is not None:
            raise worker_exception
        env.stack.append([closed.job_output for closed in job_pool.get_closed_jobs()])

    def stop_if_exceeded(pool: Any) -> None:
        threshold = getattr(pool, "_localcloud_threshold", None)
        if threshold is not None and _tolerance_exceeded(*threshold):
            with pool._mutex:
                if pool._worker_exception is None:
                    pool._worker_exception = _ToleranceExceeded()
                    pool._termination_event.set()

    def next_job(self: Any) -> Any:
        # A worker asks for its next item as soon as its child execution ends: past the threshold, none is started.
        stop_if_exceeded(self)
        return originals["next_job"](self)

    def close_job(self: Any, job: Any) -> None:
        # Closing the last job wakes the Map Run, which must by then see the verdict on it.
        stop_if_exceeded(self)
        originals["close_job"](self, job)

    from_state_props._localcloud_original = originals  # type: ignore[attr-defined]
    AmazonStateLanguageParser.parse = staticmethod(parse)  # type: ignore[method-assign]
    StateMap.from_state_props = from_state_props  # type: ignore[method-assign]
    DistributedIterationComponent._map_run = map_run  # type: ignore[method-assign]
    JobPool.next_job = next_job  # type: ignore[method-assign]
    JobPool.close_job = close_job  # type: ignore[method-assign]
    return remove_distributed_map_failure_tolerance


def remove_distributed_map_failure_tolerance() -> None:
    """Undo `apply_distributed_map_failure_tolerance` (tests use it to show what moto does alone)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component import (
        DistributedIterationComponent,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.job import JobPool
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.state_map import StateMap
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    originals = getattr(StateMap.from_state_props, "_localcloud_original", None)
    if originals is None:
        return
    AmazonStateLanguageParser.parse = originals["parse"]  # type: ignore[method-assign]
    StateMap.from_state_props = originals["from_state_props"]  # type: ignore[method-assign]
    DistributedIterationComponent._map_run = originals["map_run"]  # type: ignore[method-assign]
    JobPool.next_job = originals["next_job"]  # type: ignore[method-assign]
    JobPool.close_job = originals["close_job"]  # type: ignore[method-assign]


_RESULTS_LOCK = threading.Lock()


def _iso_millis(moment: Any) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def apply_distributed_map_result_writer() -> Undo:
    """Export a Distributed Map's child executions to S3 as AWS does: result files and a manifest that lists them.

    moto limitation: its `ResultWriter` writes only `<prefix>/<map run id>/manifest.json` with empty
    result file lists (a TODO in moto), so what each child execution returned, or why it failed, is
    nowhere. AWS writes `SUCCEEDED_0.json` and `FAILED_0.json` beside the manifest, each a JSON array
    of the child executions with that outcome (ARN, name, input, output or error and cause, dates,
    status), and lists each file with its key and size in the manifest's `ResultFiles`.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor.distributed_item_processor_worker import (
        DistributedItemProcessorWorker,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.resource_eval.resource_eval_s3 import (
        ResourceEvalS3,
    )
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramEnded, ProgramError, ProgramStopped

    if getattr(DistributedItemProcessorWorker._eval_job, "_localcloud_original", None) is not None:
        return remove_distributed_map_result_writer
    originals = {
        "eval_input": DistributedItemProcessorWorker._eval_input,
        "eval_job": DistributedItemProcessorWorker._eval_job,
        "put_object": ResourceEvalS3.__dict__["_handle_put_object"],
    }

    def eval_input(self: Any, env_frame: Any) -> None:
        originals["eval_input"](self, env_frame)
        # The child execution's input is the item after ItemSelector, which the job itself does not keep.
        env_frame._localcloud_child_input = env_frame.states.get_input()

    def eval_job(self: Any, env: Any, job: Any) -> None:
        started = datetime.now(timezone.utc)
        originals["eval_job"](self, env, job)
        record = self._map_run_record
        name = str(uuid.uuid4())
        result: dict[str, Any] = {
            "ExecutionArn": f"{record.map_state_machine_arn.replace(':stateMachine:', ':execution:')}:{name}",
            "Input": json.dumps(getattr(env, "_localcloud_child_input", job.job_input)),
            "InputDetails": {"Included": True},
            "Name": name,
            "StartDate": _iso_millis(started),
            "StateMachineArn": record.map_state_machine_arn,
            "StopDate": _iso_millis(datetime.now(timezone.utc)),
        }
        state = env.program_state()
        if isinstance(state, ProgramEnded):
            result.update(Status="SUCCEEDED", Output=json.dumps(job.job_output), OutputDetails={"Included": True})
        else:
            details = (state.error if isinstance(state, ProgramError) else None) or {}
            result.update(Status="ABORTED" if isinstance(state, ProgramStopped) else "FAILED",
                          Error=details.get("error", "States.Runtime"), Cause=details.get("cause", ""))
        with _RESULTS_LOCK:
            record.__dict__.setdefault("_localcloud_results", []).append((job.job_index, result))

    def put_object(env: Any, resource_runtime_part: Any, state_credentials: Any) -> None:
        parameters = env.stack.pop()
        env.stack.pop()  # the children's outputs: AWS writes them to S3 instead of the state's output
        s3 = ResourceEvalS3._get_s3_client(resource_runtime_part=resource_runtime_part,
                                           state_credentials=state_credentials)
        record = env.map_run_record_pool_manager.get_all()[-1]
        bucket, prefix = parameters["Bucket"], parameters.get("Prefix", "")
        folder = f"{prefix.rstrip('/')}/" if prefix else ""
        folder += record.map_run_arn.split(":")[-1] + "/"
        with _RESULTS_LOCK:
            results = [result for _, result in sorted(record.__dict__.get("_localcloud_results", []),
                                                      key=lambda indexed: indexed[0])]
        files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
        for status in ("SUCCEEDED", "FAILED"):
            entries = [r for r in results if (r["Status"] == "SUCCEEDED") == (status == "SUCCEEDED")]
            if entries:
                body = json.dumps(entries).encode()
                key = f"{folder}{status}_0.json"
                s3.put_object(Bucket=bucket, Key=key, Body=body)
                files[status].append({"Key": key, "Size": len(body)})
        manifest_key = f"{folder}manifest.json"
        s3.put_object(Bucket=bucket, Key=manifest_key, Body=json.dumps(
            {"DestinationBucket": bucket, "MapRunArn": record.map_run_arn, "ResultFiles": files}).encode())
        env.stack.append({"MapRunArn": record.map_run_arn,
                          "ResultWriterDetails": {"Bucket": bucket, "Key": manifest_key}})

    eval_job._localcloud_original = originals  # type: ignore[attr-defined]
    DistributedItemProcessorWorker._eval_input = eval_input  # type: ignore[method-assign]
    DistributedItemProcessorWorker._eval_job = eval_job  # type: ignore[method-assign]
    ResourceEvalS3._handle_put_object = staticmethod(put_object)  # type: ignore[method-assign]
    return remove_distributed_map_result_writer


def remove_distributed_map_result_writer() -> None:
    """Undo `apply_distributed_map_result_writer` (tests use it to show what moto does alone)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor.distributed_item_processor_worker import (
        DistributedItemProcessorWorker,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.resource_eval.resource_eval_s3 import (
        ResourceEvalS3,
    )

    originals = getattr(DistributedItemProcessorWorker._eval_job, "_localcloud_original", None)
    if originals is None:
        return
    DistributedItemProcessorWorker._eval_input = originals["eval_input"]  # type: ignore[method-assign]
    DistributedItemProcessorWorker._eval_job = originals["eval_job"]  # type: ignore[method-assign]
    ResourceEvalS3._handle_put_object = originals["put_object"]  # type: ignore[method-assign]


# -- AWS SDK integrations ------------------------------------------------------------------------------

def _timestamps_as_text(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso_millis(value)
    if isinstance(value, dict):
        return {key: _timestamps_as_text(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_timestamps_as_text(inner) for inner in value]
    return value


def apply_aws_sdk_pascal_case() -> Undo:
    """Translate `aws-sdk:*` Task parameters and results between Step Functions' PascalCase and the API's names.

    moto limitation: its `aws-sdk` integration hands a Task's parameters to botocore as written, so an
    API whose members are camelCase, such as Step Functions' own (`aws-sdk:sfn:describeMapRun` takes
    `MapRunArn`, botocore knows only `mapRunArn`), fails the state with a KeyError; and the result keeps
    botocore's names and `datetime` values, which then break the execution's output (a 500 on
    `DescribeExecution`). AWS takes parameters and returns results in PascalCase (`ItemCounts.Succeeded`),
    timestamps as text.
    """
    import botocore.session
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
        StateTaskServiceAwsSdk,
    )
    from moto.stepfunctions.parser.utils import camel_to_snake_case

    if "_normalise_parameters" in StateTaskServiceAwsSdk.__dict__:
        return remove_aws_sdk_pascal_case
    session = botocore.session.get_session()
    operations: dict[tuple[str, str], Any] = {}

    def operation(task: Any) -> Any:
        service, action = task._get_boto_service_name(), task._get_boto_service_action()
        if (service, action) not in operations:
            model = session.get_service_model(service)
            names = {camel_to_snake_case(name): name for name in model.operation_names}
            operations[(service, action)] = model.operation_model(names[action]) if action in names else None
        return operations[(service, action)]

    def normalise_parameters(self: Any, parameters: dict, *args: Any, **kwargs: Any) -> None:
        model = operation(self)
        if model is not None and model.input_shape is not None:
            self._to_boto_request(parameters, model.input_shape)

    def normalise_response(self: Any, response: Any, *args: Any, **kwargs: Any) -> None:
        model = operation(self)
        if model is not None and model.output_shape is not None:
            self._from_boto_response(response, model.output_shape)
        if isinstance(response, dict):
            response.update(_timestamps_as_text(response))

    StateTaskServiceAwsSdk._normalise_parameters = normalise_parameters  # type: ignore[attr-defined]
    StateTaskServiceAwsSdk._normalise_response = normalise_response  # type: ignore[attr-defined]
    return remove_aws_sdk_pascal_case


def remove_aws_sdk_pascal_case() -> None:
    """Undo `apply_aws_sdk_pascal_case` (tests use it to show what moto does alone)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
        StateTaskServiceAwsSdk,
    )

    for name in ("_normalise_parameters", "_normalise_response"):
        if name in StateTaskServiceAwsSdk.__dict__:
            delattr(StateTaskServiceAwsSdk, name)


# The service part of an `aws-sdk` Task's error names, as Step Functions spells it (PascalCase).
_AWS_SDK_ERROR_SERVICE_NAMES = {
    "cloudwatch": "CloudWatch", "dynamodb": "DynamoDb", "eventbridge": "EventBridge", "lambda": "Lambda",
    "s3": "S3", "sfn": "Sfn", "sns": "Sns", "sqs": "Sqs", "ssm": "Ssm",
}


def apply_aws_sdk_error_names() -> Undo:
    """Name an `aws-sdk:*` Task's errors as Step Functions does: `Ssm.ThrottlingException`.

    moto limitation: it spells the service part in lower case for every service but DynamoDB and
    Step Functions (`ssm.ThrottlingException`), and takes the error part from the botocore
    exception's class, so an error the API does not model is named after the service. AWS names
    both parts in PascalCase, the error from the service's error code with `Exception` appended
    when it lacks it; a Retry or Catch on `Ssm.ThrottlingException` never matches moto's name.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
        StateTaskServiceAwsSdk,
    )

    if "_localcloud_error_names" in StateTaskServiceAwsSdk.__dict__:
        return remove_aws_sdk_error_names
    originals = {name: StateTaskServiceAwsSdk.__dict__[name]
                 for name in ("_normalise_service_error_name", "_normalise_exception_name")}

    def service_error_name(service_name: str) -> str:
        lower = service_name.lower()
        return _AWS_SDK_ERROR_SERVICE_NAMES.get(lower, lower[:1].upper() + lower[1:])

    def exception_name(norm_service_name: str, ex: Exception) -> str:
        code = getattr(ex, "response", {}).get("Error", {}).get("Code") or ex.__class__.__name__
        code = code.rsplit("#", 1)[-1]  # JSON protocols may qualify it: com.amazonaws.dynamodb.v20120810#...
        return f"{norm_service_name}.{code if code.endswith('Exception') else code + 'Exception'}"

    StateTaskServiceAwsSdk._normalise_service_error_name = staticmethod(service_error_name)  # type: ignore[method-assign]
    StateTaskServiceAwsSdk._normalise_exception_name = staticmethod(exception_name)  # type: ignore[method-assign]
    StateTaskServiceAwsSdk._localcloud_error_names = originals  # type: ignore[attr-defined]
    return remove_aws_sdk_error_names


def remove_aws_sdk_error_names() -> None:
    """Undo `apply_aws_sdk_error_names` (tests use it to show what moto does alone)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_aws_sdk import (
        StateTaskServiceAwsSdk,
    )

    originals = StateTaskServiceAwsSdk.__dict__.get("_localcloud_error_names")
    if originals is None:
        return
    for name, original in originals.items():
        setattr(StateTaskServiceAwsSdk, name, original)
    delattr(StateTaskServiceAwsSdk, "_localcloud_error_names")


def apply_execution_name_rules() -> Undo:
    """Refuse the execution names Step Functions refuses: past 80 characters, or with whitespace, brackets,
    wildcards, the special characters it lists or control characters.

    moto limitation: the backend that executes state machines starts an execution under any name (moto
    checks names only in the backend that does not execute), so a name that would fail every
    `StartExecution` on AWS (an 81-character resumption of a 74-character order id, an order id with
    a space) runs here. AWS answers `ValidationException` for the length and `InvalidName` for the
    characters; moto's own check raises both.
    """
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    if "_localcloud_original_start_execution" in StepFunctionsParserBackend.__dict__:
        return remove_execution_name_rules
    original = StepFunctionsParserBackend.__dict__["start_execution"]

    def start_execution(self: Any, state_machine_arn: str, name: Any = None, *args: Any, **kwargs: Any) -> Any:
        if name:
            self._validate_name(name)
        return original(self, state_machine_arn, name, *args, **kwargs)

    StepFunctionsParserBackend._localcloud_original_start_execution = original  # type: ignore[attr-defined]
    StepFunctionsParserBackend.start_execution = start_execution  # type: ignore[method-assign]
    return remove_execution_name_rules


def remove_execution_name_rules() -> None:
    """Undo `apply_execution_name_rules` (a test shows the limitation with it)."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    original = StepFunctionsParserBackend.__dict__.get("_localcloud_original_start_execution")
    if original is None:
        return
    StepFunctionsParserBackend.start_execution = original  # type: ignore[method-assign]
    delattr(StepFunctionsParserBackend, "_localcloud_original_start_execution")
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
                                  " teach apply_lambda_asynchronous_invocation that destination")
    region, account, queue_name = arn[3], arn[4], arn[5]
    sqs_backends[account][region].send_message(queue_name, json.dumps(record))


def apply_lambda_asynchronous_invocation() -> Undo:
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

    _add_cloudformation_resources({_CloudFormationEventInvokeConfig.cloudformation_type():
                                   _CloudFormationEventInvokeConfig})
    if "_localcloud_original_invoke" in LambdaFunction.__dict__:
        return remove_lambda_asynchronous_invocation
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

    LambdaFunction._localcloud_original_invoke = original  # type: ignore[attr-defined]
    LambdaFunction.invoke = invoke  # type: ignore[method-assign]
    return remove_lambda_asynchronous_invocation


def remove_lambda_asynchronous_invocation() -> None:
    """Undo `apply_lambda_asynchronous_invocation` (tests use it to show what moto does alone)."""
    from moto.awslambda.models import LambdaFunction

    _CLOUDFORMATION_RESOURCES.pop(_CloudFormationEventInvokeConfig.cloudformation_type(), None)
    original = LambdaFunction.__dict__.get("_localcloud_original_invoke")
    if original is not None:
        LambdaFunction.invoke = original  # type: ignore[method-assign]
        delattr(LambdaFunction, "_localcloud_original_invoke")
# DynamoDB's numbers: "up to 38 digits of precision. Exceeding this results in an exception."
DYNAMODB_NUMBER_DIGITS = 38
DYNAMODB_TOO_MANY_DIGITS = "Attempting to store more than 38 significant digits in a Number"


def apply_dynamodb_number_precision() -> Undo:
    """Numbers to DynamoDB's 38 significant digits: sums computed at that precision, more refused.

    moto limitation: an `ADD` (and `SET a = b + c`) is computed in Python's default decimal context
    of 28 digits, so a sum DynamoDB keeps exactly is silently rounded, and an item holding a number
    of more than 38 significant digits is stored where DynamoDB refuses it. The fix computes sums
    exactly and refuses, with DynamoDB's ValidationException, a number or a sum beyond 38 digits.
    """
    from decimal import Decimal, localcontext

    from moto.dynamodb.exceptions import MockValidationException
    from moto.dynamodb.models.dynamo_type import DDBType, DynamoType
    from moto.dynamodb.models.table import Table

    if getattr(DynamoType.__add__, "_localcloud_original", None) is not None:
        return remove_dynamodb_number_precision
    originals = (DynamoType.__add__, DynamoType.__sub__, Table._validate_number_type)

    def within_precision(text: str) -> str:
        # Significant digits of the exact value (normalize() would round to the context's precision first)
        digits = "".join(map(str, Decimal(text).as_tuple().digits)).strip("0")
        if len(digits) > DYNAMODB_NUMBER_DIGITS:
            raise MockValidationException(DYNAMODB_TOO_MANY_DIGITS)
        return text

    def arithmetic(sign: int) -> Callable[[Any, Any], Any]:
        original = originals[0] if sign > 0 else originals[1]

        def operate(self: Any, other: Any) -> Any:
            if self.type != DDBType.NUMBER or other.type != DDBType.NUMBER:
                return original(self, other)
            with localcontext() as context:
                context.prec = 2 * DYNAMODB_NUMBER_DIGITS + 300  # exact for any two DynamoDB numbers
                total = Decimal(self.value) + sign * Decimal(other.value)
            return DynamoType({DDBType.NUMBER: within_precision(format(total, "f"))})

        return operate

    def validate_number_type(self: Any, value: Any) -> None:
        originals[2](self, value)
        if isinstance(value, str):
            within_precision(value)

    add, sub = arithmetic(+1), arithmetic(-1)
    add._localcloud_original = originals  # type: ignore[attr-defined]
    DynamoType.__add__ = add  # type: ignore[method-assign]
    DynamoType.__sub__ = sub  # type: ignore[method-assign]
    Table._validate_number_type = validate_number_type  # type: ignore[method-assign]
    return remove_dynamodb_number_precision


def remove_dynamodb_number_precision() -> None:
    """Undo `apply_dynamodb_number_precision` (tests use it to show moto's 28-digit sums)."""
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    originals = getattr(DynamoType.__add__, "_localcloud_original", None)
    if originals is not None:
        DynamoType.__add__, DynamoType.__sub__, Table._validate_number_type = originals  # type: ignore[method-assign]
# -- Step Functions rules the interpreter leaves out -----------------------------------------------

# Step Functions' quota for a state's input, output or task result: 256 KiB of UTF-8 text.
STATE_PAYLOAD_LIMIT_BYTES = 256 * 1024
# The range AWS documents for `States.MathAdd`'s arguments, and the largest Map concurrency a path
# can name (a Java int, as Step Functions reads it).
INT32_RANGE = (-(2**31), 2**31 - 1)


def state_payload_bytes(value: Any) -> int:
    """A payload's size as Step Functions counts it: its JSON text, compact, in UTF-8 (`é` is 2 bytes)."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                                                            default=str)
    return len(text.encode("utf-8"))


def _within_payload_limit(value: Any) -> bool:
    return state_payload_bytes(value) <= STATE_PAYLOAD_LIMIT_BYTES


# Where moto imported its own size check by name.
_SIZE_QUOTA_MODULES = (
    "moto.stepfunctions.parser.quotas",
    "moto.stepfunctions.parser.asl.component.state.state",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.state_task_lambda",
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service",
)


def _data_limit_exceeded(env: Any, what: str) -> Exception:
    from moto.stepfunctions.parser.api import ExecutionFailedEventDetails, HistoryEventType
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    error = StatesErrorNameType.StatesStatesDataLimitExceeded
    return FailureEventException(failure_event=FailureEvent(
        env=env,
        error_name=StatesErrorName(typ=error),
        event_type=HistoryEventType.TaskFailed,
        event_details=EventDetails(executionFailedEventDetails=ExecutionFailedEventDetails(
            error=error.to_name(),
            cause=f"{what} is larger than the payload size quota of {STATE_PAYLOAD_LIMIT_BYTES} bytes"),
        ),
    ))


def _is_data_limit_exceeded(error: Exception) -> bool:
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import FailureEventException

    name = getattr(getattr(error, "failure_event", None), "error_name", None) if isinstance(
        error, FailureEventException) else None
    return getattr(name, "error_name", None) == "States.DataLimitExceeded"


def _execution_state_classes() -> list[type]:
    """Every state class that turns a failure into an error name (Task integrations, Map, Parallel)."""
    import moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service_factory  # noqa: F401
    import moto.stepfunctions.parser.asl.component.state.exec.state_task.state_task_factory  # noqa: F401
    from moto.stepfunctions.parser.asl.component.state.exec.execute_state import ExecutionState

    found, pending = [], [ExecutionState]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


def apply_state_payload_limit() -> Undo:
    """Enforce Step Functions' 256 KiB payload quota as AWS does: where, how it counts, and under which name.

    moto limitations: its size check (1) counts JSON with spaces and `\\u` escapes, so a 200 KB
    payload of accented text is refused at three times its size; (2) looks at a state's output and a
    task's result only, where AWS also refuses a state's input once Parameters or ItemSelector made
    it larger than the quota; (3) is renamed by the DynamoDB, SQS, SNS and EventBridge integrations
    after the service (`DynamoDB.AmazonDynamoDBException`), which a Catch on `States.ALL` then
    takes. AWS counts the compact UTF-8 text, fails the state with `States.DataLimitExceeded`
    whatever the integration, and (with `apply_terminal_errors_escape_states_all`) no `States.ALL`
    catches it.
    """
    import importlib

    from moto.stepfunctions.parser.asl.component.common.parargs import Parargs
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_selector import ItemSelector

    if "_localcloud_payload_limit" in Parargs.__dict__:
        return remove_state_payload_limit
    originals: dict[str, Any] = {
        "size": {name: importlib.import_module(name).is_within_size_quota for name in _SIZE_QUOTA_MODULES},
        "parargs": Parargs.__dict__["_eval_body"],
        "item_selector": ItemSelector.__dict__["_eval_body"],
        "from_error": {cls: cls.__dict__["_from_error"] for cls in _execution_state_classes()
                       if "_from_error" in cls.__dict__},
    }

    def checked(original: Callable[..., None], what: str) -> Callable[..., None]:
        def eval_body(self: Any, env: Any) -> None:
            original(self, env)
            if not _within_payload_limit(env.stack[-1]):
                raise _data_limit_exceeded(env, what)
        return eval_body

    def named(original: Callable[..., Any]) -> Callable[..., Any]:
        def from_error(self: Any, env: Any, ex: Exception) -> Any:
            return ex.failure_event if _is_data_limit_exceeded(ex) else original(self, env, ex)  # type: ignore[attr-defined]
        return from_error

    for name in _SIZE_QUOTA_MODULES:
        importlib.import_module(name).is_within_size_quota = _within_payload_limit
    Parargs._eval_body = checked(originals["parargs"], "the state's input after Parameters")  # type: ignore[method-assign]
    ItemSelector._eval_body = checked(originals["item_selector"], "an iteration's input after ItemSelector")  # type: ignore[method-assign]
    for cls, original in originals["from_error"].items():
        cls._from_error = named(original)  # type: ignore[attr-defined]
    Parargs._localcloud_payload_limit = originals  # type: ignore[attr-defined]
    return remove_state_payload_limit


def remove_state_payload_limit() -> None:
    """Undo `apply_state_payload_limit` (tests use it to show what moto does alone)."""
    import importlib

    from moto.stepfunctions.parser.asl.component.common.parargs import Parargs
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_selector import ItemSelector

    originals = Parargs.__dict__.get("_localcloud_payload_limit")
    if originals is None:
        return
    for name, original in originals["size"].items():
        importlib.import_module(name).is_within_size_quota = original
    Parargs._eval_body = originals["parargs"]  # type: ignore[method-assign]
    ItemSelector._eval_body = originals["item_selector"]  # type: ignore[method-assign]
    for cls, original in originals["from_error"].items():
        cls._from_error = original  # type: ignore[attr-defined]
    delattr(Parargs, "_localcloud_payload_limit")


# Errors AWS documents as beyond `States.ALL`: a Retry or Catch must name them to take them.
_TERMINAL_ERRORS = ("States.DataLimitExceeded", "States.Runtime")


def apply_terminal_errors_escape_states_all() -> Undo:
    """Let no `States.ALL` retrier or catcher take `States.DataLimitExceeded` or `States.Runtime`.

    moto limitation: its `States.ALL` matches every error, so a workflow that catches everything
    survives, on the emulator, a payload over the quota or a runtime error (an intrinsic function
    given a value it cannot take, a path to nothing) that fails the execution on AWS, whose
    documentation says `States.ALL` catches neither.
    """
    from moto.stepfunctions.parser.asl.component.common.error_name.error_equals_decl import ErrorEqualsDecl

    if "_localcloud_original" in ErrorEqualsDecl.__dict__:
        return remove_terminal_errors_escape_states_all
    original = ErrorEqualsDecl.__dict__["_eval_body"]

    def eval_body(self: Any, env: Any) -> None:
        error = getattr(env.stack[-1], "error_name", None)
        original(self, env)
        named = {getattr(name, "error_name", None) for name in self.error_names}
        if error in _TERMINAL_ERRORS and error not in named:
            env.stack[-1] = False

    ErrorEqualsDecl._eval_body = eval_body  # type: ignore[method-assign]
    ErrorEqualsDecl._localcloud_original = original  # type: ignore[attr-defined]
    return remove_terminal_errors_escape_states_all


def remove_terminal_errors_escape_states_all() -> None:
    """Undo `apply_terminal_errors_escape_states_all` (tests use it to show what moto does alone)."""
    from moto.stepfunctions.parser.asl.component.common.error_name.error_equals_decl import ErrorEqualsDecl

    original = ErrorEqualsDecl.__dict__.get("_localcloud_original")
    if original is not None:
        ErrorEqualsDecl._eval_body = original  # type: ignore[method-assign]
        delattr(ErrorEqualsDecl, "_localcloud_original")


def apply_strict_max_concurrency_path() -> Undo:
    """Refuse a `MaxConcurrencyPath` value that is not a whole JSON number from 0 to 2^31 - 1, as AWS does.

    moto limitation: it passes the value through Python's `int()`, so `2.5` runs at 2, the string
    `"3"` at 3, and `1e15` starts a thread per item; AWS fails the execution with `States.Runtime`
    ("not a valid integer"), which no Catch can take. A whole number written with a fraction
    (`2.0`) is refused here too: AWS does not document it, and a workflow never needs to pass one.
    moto also starts one thread per unit of concurrency, items or not (1,000 threads for three
    models); at most one per item is started here, which changes nothing but the emulator's load.
    """
    from moto.stepfunctions.parser.api import ExecutionFailedEventDetails, HistoryEventType
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.inline_iteration_component import (
        InlineIterationComponent,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.max_concurrency import MaxConcurrencyPath
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    if "_localcloud_original" in MaxConcurrencyPath.__dict__:
        return remove_strict_max_concurrency_path
    original = MaxConcurrencyPath.__dict__["_eval_max_concurrency"]
    original_launch = InlineIterationComponent.__dict__["_launch_worker"]

    def launch_worker(self: Any, env: Any, eval_input: Any, job_pool: Any) -> Any:
        launched = job_pool.__dict__.setdefault("_localcloud_workers", 0)
        if launched >= job_pool._jobs_number:
            return None
        job_pool._localcloud_workers = launched + 1
        return original_launch(self, env=env, eval_input=eval_input, job_pool=job_pool)

    def eval_max_concurrency(self: Any, env: Any) -> int:
        self.string_sampler.eval(env=env)
        value = env.stack.pop()
        whole = isinstance(value, int) and not isinstance(value, bool)
        if whole and 0 <= value <= INT32_RANGE[1]:
            return value
        path = self.string_sampler.literal_value
        cause = (f"Expected non-negative integer for MaxConcurrency, got '{value}' instead." if whole and value < 0
                 else f'The MaxConcurrencyPath field refers to value "{value if isinstance(value, str) else json.dumps(value)}"'
                      f" which is not a valid integer: {path}")
        runtime = StatesErrorNameType.StatesRuntime
        raise FailureEventException(failure_event=FailureEvent(
            env=env,
            error_name=StatesErrorName(typ=runtime),
            event_type=HistoryEventType.ExecutionFailed,
            event_details=EventDetails(executionFailedEventDetails=ExecutionFailedEventDetails(
                error=runtime.to_name(), cause=cause)),
        ))

    MaxConcurrencyPath._eval_max_concurrency = eval_max_concurrency  # type: ignore[method-assign]
    MaxConcurrencyPath._localcloud_original = (original, original_launch)  # type: ignore[attr-defined]
    InlineIterationComponent._launch_worker = launch_worker  # type: ignore[method-assign]
    return remove_strict_max_concurrency_path


def remove_strict_max_concurrency_path() -> None:
    """Undo `apply_strict_max_concurrency_path` (tests use it to show what moto does alone)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.inline_iteration_component import (
        InlineIterationComponent,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.max_concurrency import MaxConcurrencyPath

    originals = MaxConcurrencyPath.__dict__.get("_localcloud_original")
    if originals is not None:
        MaxConcurrencyPath._eval_max_concurrency, InlineIterationComponent._launch_worker = originals  # type: ignore[method-assign]
        delattr(MaxConcurrencyPath, "_localcloud_original")


def apply_math_add_integer_range() -> Undo:
    """Refuse `States.MathAdd` arguments outside -2^31 .. 2^31 - 1, as AWS documents.

    moto limitation: it rounds a fraction to the nearest integer as AWS does (half up, as Java's
    `Math.round`), but adds numbers of any size, so `States.MathAdd(1e15, 0)` answers 10^15 where
    AWS fails the state. Refused here as moto refuses an argument that is not a number.
    """
    from moto.stepfunctions.parser.asl.component.intrinsic.function.statesfunction.math_operations.math_add import (
        MathAdd,
    )

    if "_localcloud_original" in MathAdd.__dict__:
        return remove_math_add_integer_range
    original = MathAdd.__dict__["_validate_integer_value"]

    def validate_integer_value(value: Any) -> int:
        rounded = original.__func__(value)
        if not INT32_RANGE[0] <= rounded <= INT32_RANGE[1]:
            raise TypeError(f"Expected an integer in [{INT32_RANGE[0]}, {INT32_RANGE[1]}], but got: '{value}'.")
        return rounded

    MathAdd._validate_integer_value = staticmethod(validate_integer_value)  # type: ignore[method-assign]
    MathAdd._localcloud_original = original  # type: ignore[attr-defined]
    return remove_math_add_integer_range


def remove_math_add_integer_range() -> None:
    """Undo `apply_math_add_integer_range` (tests use it to show what moto does alone)."""
    from moto.stepfunctions.parser.asl.component.intrinsic.function.statesfunction.math_operations.math_add import (
        MathAdd,
    )

    original = MathAdd.__dict__.get("_localcloud_original")
    if original is not None:
        MathAdd._validate_integer_value = original  # type: ignore[method-assign]
        delattr(MathAdd, "_localcloud_original")
# Lambda measures an environment as the JSON of its variables ("String measured: {...}" in its error).
LAMBDA_ENVIRONMENT_LIMIT_BYTES = 4_096


def lambda_environment_bytes(variables: dict[str, str] | None) -> int:
    """The size Lambda holds against its 4 KB limit: the compact JSON of the variables, in UTF-8."""
    return len(json.dumps(variables or {}, separators=(",", ":"), ensure_ascii=False).encode())


def apply_lambda_environment_size_limit() -> Undo:
    """Refuse a function whose environment exceeds Lambda's 4 KB, as `CreateFunction` and
    `UpdateFunctionConfiguration` do on AWS (and so a CloudFormation deploy of such a function).

    moto limitation: both accept an environment of any size, so a template AWS rolls back deploys.
    """
    def on_create(backend: Any, spec: dict[str, Any]) -> None:
        _check_lambda_environment((spec.get("Environment") or {}).get("Variables"))

    def on_update(function: Any, config_updates: dict[str, Any]) -> None:
        if "Environment" in config_updates:
            _check_lambda_environment((config_updates.get("Environment") or {}).get("Variables"))

    _add_lambda_checks("environment-size", on_create, on_update)
    return remove_lambda_environment_size_limit


def remove_lambda_environment_size_limit() -> None:
    """Undo `apply_lambda_environment_size_limit` (tests use it to show what moto accepts alone)."""
    _remove_lambda_checks("environment-size")


# Checks several patches make before moto's CreateFunction and UpdateFunctionConfiguration, installed
# as one wrapper each, so that any of the patches can be removed alone.
_LAMBDA_CREATE_CHECKS: dict[str, Callable[[Any, dict[str, Any]], None]] = {}
_LAMBDA_UPDATE_CHECKS: dict[str, Callable[[Any, dict[str, Any]], None]] = {}


def _add_lambda_checks(name: str, on_create: Callable[[Any, dict[str, Any]], None],
                       on_update: Callable[[Any, dict[str, Any]], None] | None = None) -> None:
    from moto.awslambda.models import LambdaBackend, LambdaFunction

    _LAMBDA_CREATE_CHECKS[name] = on_create
    if on_update is not None:
        _LAMBDA_UPDATE_CHECKS[name] = on_update
    if getattr(LambdaBackend.create_function, "_localcloud_original", None) is not None:
        return
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

    create_function._localcloud_original = original_create  # type: ignore[attr-defined]
    update_configuration._localcloud_original = original_update  # type: ignore[attr-defined]
    LambdaBackend.create_function = create_function  # type: ignore[method-assign]
    LambdaFunction.update_configuration = update_configuration  # type: ignore[method-assign]


def _remove_lambda_checks(name: str) -> None:
    from moto.awslambda.models import LambdaBackend, LambdaFunction

    _LAMBDA_CREATE_CHECKS.pop(name, None)
    _LAMBDA_UPDATE_CHECKS.pop(name, None)
    if _LAMBDA_CREATE_CHECKS or _LAMBDA_UPDATE_CHECKS:
        return
    for owner, method in ((LambdaBackend, "create_function"), (LambdaFunction, "update_configuration")):
        original = getattr(getattr(owner, method), "_localcloud_original", None)
        if original is not None:
            setattr(owner, method, original)


def _check_lambda_environment(variables: dict[str, str] | None) -> None:
    from moto.awslambda.exceptions import InvalidParameterValueException

    if lambda_environment_bytes(variables) > LAMBDA_ENVIRONMENT_LIMIT_BYTES:
        measured = json.dumps(variables, separators=(",", ":"), ensure_ascii=False)
        raise InvalidParameterValueException(
            "Lambda was unable to configure your environment variables because the environment variables you have"
            f" provided exceeded the 4KB limit. String measured: {measured}"
        )


def apply_cloudformation_resource_failures() -> Undo:
    """Fail the stack, as CloudFormation does, when a resource's service refuses it.

    moto limitation: a service's refusal while CloudFormation creates or updates a resource (a
    Lambda limit, a bad property) escapes from the `CreateStack`/`UpdateStack` call itself, in that
    service's error format (JSON for Lambda), which botocore cannot even parse as CloudFormation's
    XML. CloudFormation accepts the call, marks the resource `CREATE_FAILED` (or `UPDATE_FAILED`)
    with the service's message and rolls the stack back; here the stack ends `ROLLBACK_COMPLETE`
    (`UPDATE_ROLLBACK_COMPLETE`) with that event, and the resources created before it stay (moto
    does not roll back).
    """
    import moto.cloudformation.parsing as parsing
    from moto.cloudformation.models import Stack as FakeStack

    if getattr(FakeStack.create_resources, "_localcloud_original", None) is not None:
        return remove_cloudformation_resource_failures
    original_parse = parsing.parse_and_create_resource
    original_create = FakeStack.create_resources
    original_update = FakeStack.update

    def parse_and_create_resource(logical_id: str, resource_json: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return original_parse(logical_id, resource_json, *args, **kwargs)
        except _SERVICE_ERRORS as error:
            error._localcloud_resource = (logical_id, resource_json.get("Type", ""))  # type: ignore[attr-defined]
            raise

    def create_resources(self: Any) -> None:
        try:
            original_create(self)
        except _SERVICE_ERRORS as error:
            _fail_stack(self, error, "CREATE_FAILED", "ROLLBACK_COMPLETE")

    def update(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            original_update(self, *args, **kwargs)
        except _SERVICE_ERRORS as error:
            _fail_stack(self, error, "UPDATE_FAILED", "UPDATE_ROLLBACK_COMPLETE")

    for patched, original in ((parse_and_create_resource, original_parse), (create_resources, original_create),
                              (update, original_update)):
        patched._localcloud_original = original  # type: ignore[attr-defined]
    parsing.parse_and_create_resource = parse_and_create_resource
    FakeStack.create_resources = create_resources  # type: ignore[method-assign]
    FakeStack.update = update  # type: ignore[method-assign]
    return remove_cloudformation_resource_failures


def remove_cloudformation_resource_failures() -> None:
    """Undo `apply_cloudformation_resource_failures` (tests use it to show what moto does alone)."""
    import moto.cloudformation.parsing as parsing
    from moto.cloudformation.models import Stack as FakeStack

    original = getattr(parsing.parse_and_create_resource, "_localcloud_original", None)
    if original is not None:
        parsing.parse_and_create_resource = original
    for name in ("create_resources", "update"):
        original = getattr(getattr(FakeStack, name), "_localcloud_original", None)
        if original is not None:
            setattr(FakeStack, name, original)


def _service_errors() -> tuple[type[BaseException], ...]:
    from moto.core import exceptions

    return tuple(getattr(exceptions, name) for name in ("_RESTError", "ServiceException") if hasattr(exceptions, name))


_SERVICE_ERRORS = _service_errors()


def _fail_stack(stack: Any, error: BaseException, resource_status: str, stack_status: str) -> None:
    from moto.cloudformation.models import Event
    from moto.cloudformation.parsing import OutputMap

    # moto creates resources lazily on first use: keep only those it created, and no outputs (a rolled-back
    # stack has none), so describing or listing the stack does not try the refused resource again.
    resource_map = stack.resource_map
    resource_map._resource_json_map = {logical_id: resource for logical_id, resource in
                                       resource_map._resource_json_map.items()
                                       if logical_id in resource_map._parsed_resources}
    stack.output_map = OutputMap(resource_map, {**stack.template_dict, "Outputs": {}}, stack.stack_id)
    from moto.cloudformation.models import cloudformation_backends

    exports = cloudformation_backends[stack.account_id][stack.region_name].exports
    for name in [name for name, export in exports.items() if export.exporting_stack_id == stack.stack_id]:
        del exports[name]

    logical_id, resource_type = getattr(error, "_localcloud_resource", (stack.name, "AWS::CloudFormation::Stack"))
    code = getattr(error, "error_type", None) or getattr(error, "code", None) or type(error).__name__
    message = getattr(error, "message", None) or str(error)
    stack.events.append(Event(
        stack_id=stack.stack_id, stack_name=stack.name, logical_resource_id=logical_id, physical_resource_id="",
        resource_type=resource_type, resource_status=resource_status,
        resource_status_reason=f"{message} (Error Code: {code})", resource_properties=None,
    ))
    stack.status = stack_status
    stack._add_stack_event(stack_status)


def apply_public_lambda_layers(layers: Any, account_id: str) -> Undo:
    """Deploy functions with their layers, resolved from the public parameters as CloudFormation does.

    moto limitations: CloudFormation drops an `AWS::Lambda::Function`'s `Layers`; `CreateFunction`
    refuses a layer that is not in moto's own store (every public layer, such as Powertools' in
    account 017000801446); the public `/aws/service/powertools/...` parameters do not exist; and a
    stack parameter of type `AWS::SSM::Parameter::Value<String>` naming a missing parameter crashes
    moto (an AttributeError, a 500) where CloudFormation refuses the stack. With this patch the
    parameters of `layers` (a `localcloud.public_layers.PublicLayers`) exist in the account's
    region, their layers are accepted and kept on the function (the Lambda runtime decides what
    runs with them), and a missing parameter fails the stack with CloudFormation's message.
    """
    from moto.awslambda.models import LambdaFunction
    from moto.cloudformation.exceptions import ValidationError
    from moto.cloudformation.parsing import ResourceMap
    from moto.core.utils import utcnow
    from moto.ssm.models import Parameter, ssm_backends

    if getattr(LambdaFunction._get_layers_data, "_localcloud_original", None) is not None:
        remove_public_lambda_layers()
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
    get_layers_data._localcloud_original = original_layers  # type: ignore[attr-defined]
    create_from_cloudformation_json._localcloud_original = original_create  # type: ignore[attr-defined]
    parse_ssm_parameter._localcloud_original = original_parse  # type: ignore[attr-defined]
    LambdaFunction._get_layers_data = get_layers_data  # type: ignore[method-assign]
    LambdaFunction.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)  # type: ignore[assignment]
    ResourceMap.parse_ssm_parameter = parse_ssm_parameter  # type: ignore[method-assign]
    return remove_public_lambda_layers


def remove_public_lambda_layers() -> None:
    """Undo `apply_public_lambda_layers` (the parameters it published stay until the emulator stops)."""
    from moto.awslambda.models import LambdaFunction
    from moto.cloudformation.parsing import ResourceMap

    original = getattr(LambdaFunction._get_layers_data, "_localcloud_original", None)
    if original is not None:
        LambdaFunction._get_layers_data = original  # type: ignore[method-assign]
    original = getattr(LambdaFunction.create_from_cloudformation_json.__func__, "_localcloud_original", None)  # type: ignore[attr-defined]
    if original is not None:
        LambdaFunction.create_from_cloudformation_json = classmethod(original)  # type: ignore[assignment]
    original = getattr(ResourceMap.parse_ssm_parameter, "_localcloud_original", None)
    if original is not None:
        ResourceMap.parse_ssm_parameter = original  # type: ignore[method-assign]


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


def apply_lambda_account_concurrency(account: LambdaAccount) -> Undo:
    """Answer `GetAccountSettings`, and refuse a reservation that leaves the account too little unreserved.

    moto limitations: it has no `GetAccountSettings`; `CreateFunction` (so every CloudFormation
    deploy) takes any `ReservedConcurrentExecutions`, and `PutFunctionConcurrency` checks the
    unreserved minimum only when `MOTO_LAMBDA_CONCURRENCY_QUOTA` is set (and then always as 100);
    a CloudFormation update leaves a function's reservation as it was. With this patch the account
    has `account.concurrency_limit` executions, `GetAccountSettings` reports it and what is
    unreserved, and a create, a put or a stack update that would leave fewer than
    `account.minimum_unreserved` unreserved is refused with Lambda's message (a deploy rolls back).
    """
    import moto.awslambda.urls as lambda_urls
    from moto.awslambda.models import LambdaBackend, LambdaFunction
    from moto.awslambda.responses import LambdaResponse

    if "_localcloud_account" in LambdaResponse.__dict__:
        remove_lambda_account_concurrency()
    original_put = LambdaBackend.put_function_concurrency
    original_cfn_update = LambdaFunction.update_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def reserved_by_others(backend: Any, function_name: str | None) -> int:
        return sum(int(f.reserved_concurrency or 0) for f in backend.list_functions()
                   if f.function_name != function_name)

    def check(backend: Any, function_name: str | None, wanted: Any) -> None:
        from moto.awslambda.exceptions import InvalidParameterValueException

        if wanted is None:
            return
        unreserved = account.concurrency_limit - reserved_by_others(backend, function_name) - int(wanted)
        if unreserved < account.minimum_unreserved:
            raise InvalidParameterValueException(
                "Specified ReservedConcurrentExecutions for function decreases account's"
                f" UnreservedConcurrentExecution below its minimum value of [{account.minimum_unreserved}]."
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
                "ConcurrentExecutions": account.concurrency_limit,
                "UnreservedConcurrentExecutions": account.concurrency_limit - reserved,
            },
            "AccountUsage": {"FunctionCount": len(functions),
                             "TotalCodeSize": sum(int(getattr(f, "code_size", 0) or 0) for f in functions)},
        })

    _add_lambda_checks("account-concurrency",
                       lambda backend, spec: check(backend, None, spec.get("ReservedConcurrentExecutions")))
    put_function_concurrency._localcloud_original = original_put  # type: ignore[attr-defined]
    update_from_cloudformation_json._localcloud_original = original_cfn_update  # type: ignore[attr-defined]
    LambdaBackend.put_function_concurrency = put_function_concurrency  # type: ignore[method-assign]
    LambdaFunction.update_from_cloudformation_json = classmethod(update_from_cloudformation_json)  # type: ignore[assignment]
    LambdaResponse.get_account_settings = get_account_settings  # type: ignore[attr-defined]
    LambdaResponse._localcloud_account = account  # type: ignore[attr-defined]
    # Served from the moto server's next Lambda app: patch before the emulator's first Lambda request.
    lambda_urls.url_paths[_ACCOUNT_SETTINGS_PATH] = LambdaResponse.dispatch
    return remove_lambda_account_concurrency


_ACCOUNT_SETTINGS_PATH = r"{0}/(?P<api_version>[^/]+)/account-settings/?$"


def remove_lambda_account_concurrency() -> None:
    """Undo `apply_lambda_account_concurrency` (a moto server already serving Lambda keeps the route)."""
    import moto.awslambda.urls as lambda_urls
    from moto.awslambda.models import LambdaBackend, LambdaFunction
    from moto.awslambda.responses import LambdaResponse

    _remove_lambda_checks("account-concurrency")
    original = getattr(LambdaBackend.put_function_concurrency, "_localcloud_original", None)
    if original is not None:
        LambdaBackend.put_function_concurrency = original  # type: ignore[method-assign]
    original = getattr(LambdaFunction.update_from_cloudformation_json.__func__, "_localcloud_original", None)  # type: ignore[attr-defined]
    if original is not None:
        LambdaFunction.update_from_cloudformation_json = classmethod(original)  # type: ignore[assignment]
    for name in ("get_account_settings", "_localcloud_account"):
        if name in LambdaResponse.__dict__:
            delattr(LambdaResponse, name)
    lambda_urls.url_paths.pop(_ACCOUNT_SETTINGS_PATH, None)


# Service settings of Parameter Store the emulator knows, with AWS's defaults.
SSM_SERVICE_SETTING_DEFAULTS = {
    "/ssm/parameter-store/high-throughput-enabled": "false",
    "/ssm/parameter-store/default-parameter-tier": "Standard",
}
_SSM_SERVICE_SETTING_VALUES = {
    "/ssm/parameter-store/high-throughput-enabled": ("true", "false"),
    "/ssm/parameter-store/default-parameter-tier": ("Standard", "Advanced", "Intelligent-Tiering"),
}


def apply_ssm_service_settings() -> Undo:
    """Answer `GetServiceSetting`, `UpdateServiceSetting` and `ResetServiceSetting` for Parameter Store's settings.

    moto limitation: it has none of the three (an unknown action), so nothing that checks or turns
    on Parameter Store's higher throughput can run against it. Each account and region starts with
    AWS's defaults (`high-throughput-enabled` "false"); the id is accepted as a path or as its ARN.
    """
    from moto.core.exceptions import JsonRESTError
    from moto.core.utils import utcnow
    from moto.ssm.exceptions import ValidationException
    from moto.ssm.responses import SimpleSystemManagerResponse

    settings: dict[tuple[str, str, str], tuple[str, Any]] = {}

    def setting_id(self: Any) -> str:
        raw = str(self._get_param("SettingId") or "")
        path = "/" + raw.split(":servicesetting/", 1)[1] if ":servicesetting/" in raw else raw
        if path not in SSM_SERVICE_SETTING_DEFAULTS:
            raise JsonRESTError("ServiceSettingNotFound",
                                f"{raw} is not a service setting the emulator knows: {sorted(SSM_SERVICE_SETTING_DEFAULTS)}")
        return path

    def answer(self: Any, path: str) -> str:
        value, modified = settings.get((self.current_account, self.region, path),
                                       (SSM_SERVICE_SETTING_DEFAULTS[path], None))
        return json.dumps({"ServiceSetting": {
            "SettingId": path, "SettingValue": value,
            "ARN": f"arn:aws:ssm:{self.region}:{self.current_account}:servicesetting{path}",
            "LastModifiedDate": (modified or utcnow()).timestamp(),
            "LastModifiedUser": "System" if modified is None else f"arn:aws:iam::{self.current_account}:root",
            "Status": "Default" if modified is None else "Customized",
        }})

    def get_service_setting(self: Any) -> str:
        return answer(self, setting_id(self))

    def update_service_setting(self: Any) -> str:
        path = setting_id(self)
        value = str(self._get_param("SettingValue"))
        if value not in _SSM_SERVICE_SETTING_VALUES[path]:
            raise ValidationException(
                f"SettingValue {value!r} is not valid for {path}: one of {list(_SSM_SERVICE_SETTING_VALUES[path])}")
        settings[(self.current_account, self.region, path)] = (value, utcnow())
        return "{}"

    def reset_service_setting(self: Any) -> str:
        path = setting_id(self)
        settings.pop((self.current_account, self.region, path), None)
        return answer(self, path)

    for name, method in (("get_service_setting", get_service_setting),
                         ("update_service_setting", update_service_setting),
                         ("reset_service_setting", reset_service_setting)):
        setattr(SimpleSystemManagerResponse, name, method)
    return remove_ssm_service_settings


def remove_ssm_service_settings() -> None:
    """Undo `apply_ssm_service_settings` (tests use it to show moto has no such action)."""
    from moto.ssm.responses import SimpleSystemManagerResponse

    for name in ("get_service_setting", "update_service_setting", "reset_service_setting"):
        if name in SimpleSystemManagerResponse.__dict__:
            delattr(SimpleSystemManagerResponse, name)


def apply_cloudformation_bucket_deletion() -> Undo:
    """Fail a stack's deletion, as CloudFormation does, while one of its buckets holds anything.

    moto limitation: deleting a stack whose bucket holds objects (or, versioned, any object version or
    delete marker) succeeds and silently leaves the bucket behind, so a stage whose `cdk destroy`
    fails on AWS ("The bucket you tried to delete is not empty") is destroyed here. With this patch
    the bucket refuses, the stack's other resources are deleted, and the stack stays, in
    `DELETE_FAILED`, with that resource's event; deleting it again once the bucket is empty succeeds.
    """
    from moto.cloudformation.models import CloudFormationBackend
    from moto.s3.models import FakeBucket, s3_backends
    from moto.utilities.utils import get_partition

    if getattr(CloudFormationBackend.delete_stack, "_localcloud_original", None) is not None:
        return remove_cloudformation_bucket_deletion
    original_bucket_delete = FakeBucket.delete_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    original_delete_stack = CloudFormationBackend.delete_stack

    def delete_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any, account_id: str,
                                        region_name: str) -> None:
        from moto.s3.exceptions import BucketNotEmpty

        bucket = s3_backends[account_id][get_partition(region_name)].buckets.get(resource_name)
        if bucket is not None and bucket.keys:
            error = BucketNotEmpty(resource_name)
            error.message = (f"The bucket you tried to delete is not empty. You must delete all versions in the bucket."
                             f" (Bucket: {resource_name})")
            raise error
        original_bucket_delete(cls, resource_name, cloudformation_json, account_id, region_name)

    def delete_stack(self: Any, name_or_stack_id: str) -> None:
        stacks = [s for key, s in self.stacks.items() if name_or_stack_id in (key, s.name)]
        try:
            original_delete_stack(self, name_or_stack_id)
        except _SERVICE_ERRORS as error:
            for stack in stacks:  # moto took it out of the live stacks before the refusal: it stays, failed
                self.stacks[stack.stack_id] = stack
                _failed_deletion(stack, error)

    delete_from_cloudformation_json._localcloud_original = original_bucket_delete  # type: ignore[attr-defined]
    delete_stack._localcloud_original = original_delete_stack  # type: ignore[attr-defined]
    FakeBucket.delete_from_cloudformation_json = classmethod(delete_from_cloudformation_json)  # type: ignore[assignment]
    CloudFormationBackend.delete_stack = delete_stack  # type: ignore[method-assign]
    return remove_cloudformation_bucket_deletion


def remove_cloudformation_bucket_deletion() -> None:
    """Undo `apply_cloudformation_bucket_deletion` (tests use it to show what moto does alone)."""
    from moto.cloudformation.models import CloudFormationBackend
    from moto.s3.models import FakeBucket

    original = getattr(CloudFormationBackend.delete_stack, "_localcloud_original", None)
    if original is not None:
        CloudFormationBackend.delete_stack = original  # type: ignore[method-assign]
    original = getattr(FakeBucket.delete_from_cloudformation_json.__func__, "_localcloud_original", None)  # type: ignore[attr-defined]
    if original is not None:
        FakeBucket.delete_from_cloudformation_json = classmethod(original)  # type: ignore[assignment]


def _failed_deletion(stack: Any, error: BaseException) -> None:
    from moto.cloudformation.models import Event

    bucket = getattr(error, "bucket_name", None)
    logical_id = next((logical for logical, resource in stack.resource_map._parsed_resources.items()
                       if getattr(resource, "physical_resource_id", None) == bucket), stack.name)
    code = getattr(error, "error_type", None) or getattr(error, "code", None) or type(error).__name__
    stack.events.append(Event(
        stack_id=stack.stack_id, stack_name=stack.name, logical_resource_id=logical_id,
        physical_resource_id=bucket or "", resource_type="AWS::S3::Bucket" if bucket else "AWS::CloudFormation::Stack",
        resource_status="DELETE_FAILED",
        resource_status_reason=f"{getattr(error, 'message', None) or error} (Error Code: {code})",
        resource_properties=None,
    ))
    stack.status = "DELETE_FAILED"
    stack._add_stack_event("DELETE_FAILED")


def apply_s3_versioning_from_cloudformation() -> Undo:
    """Turn on a CloudFormation bucket's `VersioningConfiguration`.

    moto limitation: its CloudFormation creates `AWS::S3::Bucket` without versioning whatever the
    template says, so the uploads bucket keeps one version per key where S3 keeps them all (and
    their delete markers), which is what makes a stage that ran hard to destroy.
    """
    from moto.s3.models import FakeBucket

    original = FakeBucket.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    if getattr(original, "_localcloud_original", None) is not None:
        return remove_s3_versioning_from_cloudformation

    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any, *args: Any,
                                        **kwargs: Any) -> Any:
        bucket = original(cls, resource_name, cloudformation_json, *args, **kwargs)
        status = (cloudformation_json.get("Properties", {}).get("VersioningConfiguration") or {}).get("Status")
        if status in ("Enabled", "Suspended"):
            bucket.versioning_status = status
        return bucket

    create_from_cloudformation_json._localcloud_original = original  # type: ignore[attr-defined]
    FakeBucket.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)  # type: ignore[assignment]
    return remove_s3_versioning_from_cloudformation


def remove_s3_versioning_from_cloudformation() -> None:
    """Undo `apply_s3_versioning_from_cloudformation` (tests use it to show what moto does alone)."""
    from moto.s3.models import FakeBucket

    original = getattr(FakeBucket.create_from_cloudformation_json.__func__, "_localcloud_original", None)  # type: ignore[attr-defined]
    if original is not None:
        FakeBucket.create_from_cloudformation_json = classmethod(original)  # type: ignore[assignment]


def apply_ssm_allowed_pattern() -> Undo:
    """Refuse a parameter value its `AllowedPattern` does not match, as Parameter Store does.

    moto limitation: it stores a parameter's AllowedPattern and returns it, but takes any value, so a
    document that is not JSON reaches the readers on the emulator where Parameter Store would have
    answered `ParameterPatternMismatchException`. The pattern is matched with `re.search`, which
    reads `^`, `$`, classes and repetitions as Java's `find` does for the patterns this app writes.
    """
    from moto.core.exceptions import JsonRESTError
    from moto.ssm.models import SimpleSystemManagerBackend

    if getattr(SimpleSystemManagerBackend.put_parameter, "_localcloud_original", None) is not None:
        return remove_ssm_allowed_pattern
    original = SimpleSystemManagerBackend.put_parameter

    def put_parameter(self: Any, name: str, description: str, value: str, parameter_type: str,
                      allowed_pattern: str, *args: Any, **kwargs: Any) -> Any:
        pattern = allowed_pattern
        if pattern is None and self._parameters.get(name):
            pattern = self._parameters[name][-1].allowed_pattern
        if pattern and value is not None and not re.search(pattern, value):
            raise JsonRESTError("ParameterPatternMismatchException",
                                f"Parameter value, cannot be validated against allowedPattern: {pattern}")
        return original(self, name, description, value, parameter_type, allowed_pattern, *args, **kwargs)

    put_parameter._localcloud_original = original  # type: ignore[attr-defined]
    SimpleSystemManagerBackend.put_parameter = put_parameter  # type: ignore[method-assign]
    return remove_ssm_allowed_pattern


def remove_ssm_allowed_pattern() -> None:
    """Undo `apply_ssm_allowed_pattern` (tests use it to show moto taking any value)."""
    from moto.ssm.models import SimpleSystemManagerBackend

    original = getattr(SimpleSystemManagerBackend.put_parameter, "_localcloud_original", None)
    if original is not None:
        SimpleSystemManagerBackend.put_parameter = original  # type: ignore[method-assign]
# SQS's message quotas (Amazon SQS Developer Guide, "Amazon SQS message attributes"; MessageAttributeValue):
# at most 10 attributes a message, and every part of each (name, type, value) counts towards its size.
SQS_MAX_MESSAGE_ATTRIBUTES = 10


def sqs_message_size_bytes(body: str, attributes: dict[str, Any] | None) -> int:
    """The size SQS holds against a queue's `MaximumMessageSize`: the body and each attribute's name,
    type and value, in bytes (UTF-8 text, a binary value as its decoded bytes)."""
    import base64

    size = len(body.encode("utf-8", errors="surrogatepass"))
    for name, value in (attributes or {}).items():
        size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        if value.get("BinaryValue") is not None:
            binary = value["BinaryValue"]
            size += len(binary if isinstance(binary, (bytes, bytearray)) else base64.b64decode(binary))
        else:
            size += len(str(value.get("StringValue", "")).encode("utf-8", errors="surrogatepass"))
    return size


def apply_sqs_message_limits() -> Undo:
    """Refuse a `SendMessage` with more than 10 message attributes, or whose body and attributes together
    exceed the queue's `MaximumMessageSize`, with SQS's `InvalidParameterValue`.

    moto limitation: it takes any number of attributes and measures only the body, in characters, so a
    message AWS refuses (an 11th attribute added to a producer's ten; a body near the limit plus its
    attributes; multi-byte text) is queued. `SendMessageBatch` is left as moto has it.
    """
    from moto.sqs.responses import SQSResponse

    if getattr(SQSResponse.send_message, "_localcloud_original", None) is not None:
        return remove_sqs_message_limits
    original = SQSResponse.send_message

    def send_message(self: Any) -> Any:
        from moto.sqs.exceptions import InvalidParameterValue

        attributes = self._get_param("MessageAttributes", {}) or {}
        if len(attributes) > SQS_MAX_MESSAGE_ATTRIBUTES:
            raise InvalidParameterValue(f"Number of message attributes [{len(attributes)}] exceeds the allowed "
                                        f"maximum [{SQS_MAX_MESSAGE_ATTRIBUTES}].")
        queue = self.sqs_backend.get_queue(self._get_queue_name())
        limit = int(queue.maximum_message_size)
        if sqs_message_size_bytes(self._get_param("MessageBody") or "", attributes) > limit:
            raise InvalidParameterValue(f"One or more parameters are invalid. Reason: Message must be shorter "
                                        f"than {limit} bytes.")
        return original(self)

    send_message._localcloud_original = original  # type: ignore[attr-defined]
    SQSResponse.send_message = send_message  # type: ignore[method-assign]
    return remove_sqs_message_limits


def remove_sqs_message_limits() -> None:
    """Undo `apply_sqs_message_limits` (tests use it to show what moto takes alone)."""
    from moto.sqs.responses import SQSResponse

    original = getattr(SQSResponse.send_message, "_localcloud_original", None)
    if original is not None:
        SQSResponse.send_message = original  # type: ignore[method-assign]
