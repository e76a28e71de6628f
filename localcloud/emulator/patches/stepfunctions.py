"""moto's Step Functions: the interpreter on, state machines from CloudFormation, and the rules it leaves out."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from localcloud.emulator.patches.registry import Undo, patch, replace, replace_items


@patch("stepfunctions")
def state_machine_execution() -> Undo:
    """Turn on moto's ASL interpreter (without it executions stay RUNNING forever)."""
    from moto.core.config import default_user_config

    configured = default_user_config.get("stepfunctions", {})
    return replace_items(default_user_config, {"stepfunctions": {**configured, "execute_state_machine": True}})


@patch("stepfunctions")
def jsonata() -> Undo:
    """Evaluate JSONata (and so `QueryLanguage: JSONata` and Variables) with the `jsonata-python` engine.

    moto limitation: its JSONata bridge is a stub for a JVM engine it does not ship, so every JSONata
    expression fails. moto composes each expression with its variable bindings and evaluates it
    without input, which is what we do here.
    """
    import jsonata
    from moto.stepfunctions.parser.asl.jsonata import jsonata as moto_jsonata

    def eval_jsonata(expression: str) -> Any:
        try:
            result = jsonata.Jsonata(expression).evaluate(None)
            # Round-trip so no engine-specific type escapes into the interpreter.
            return None if result is None else json.loads(json.dumps(result))
        except Exception as error:  # noqa: BLE001 - moto expects its own exception type
            raise moto_jsonata.JSONataException("States.QueryEvaluationError", str(error)) from error

    return replace(moto_jsonata, _eval_jsonata=eval_jsonata)


@patch("stepfunctions")
def executing_state_machines_from_cloudformation() -> Undo:
    """Create CloudFormation's state machines where executions run.

    moto limitation: with `execute_state_machine` on, the API serves the parser backend
    (`moto.stepfunctions.parser.models.stepfunctions_parser_backends`), but CloudFormation creates
    `AWS::StepFunctions::StateMachine` in the plain backend, where a deployed machine is invisible
    to `StartExecution`. Pointing the module's backend registry at the parser backends fixes both.
    """
    import moto.stepfunctions.models as sfn_models
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    return replace(sfn_models, stepfunctions_backends=stepfunctions_parser_backends)


@patch("stepfunctions")
def definition_substitutions_from_cloudformation() -> Undo:
    """Apply `DefinitionSubstitutions` when CloudFormation creates or updates a state machine.

    moto limitation: its `AWS::StepFunctions::StateMachine` handler passes `DefinitionString` on
    as it is and ignores `DefinitionSubstitutions`, so a deployed machine keeps its literal
    `${Placeholders}` and fails at its first Task. CloudFormation resolves the intrinsics inside the
    substitutions before the handler runs, so replacing each `${Name}` with its value is all AWS does.
    """
    import re

    from moto.stepfunctions.models import StateMachine

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

    return replace(StateMachine, create_from_cloudformation_json=classmethod(create),
                   update_from_cloudformation_json=classmethod(update))


@patch("stepfunctions")
def rfc3339_timestamps_in_choice() -> Undo:
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

    def string_to_timestamp(string: Any) -> datetime | None:
        # RFC 3339 (ISO 8601 with an upper-case T, and Z or a numeric offset); naive times are not timestamps.
        if not isinstance(string, str) or "T" not in string:
            return None
        try:
            moment = datetime.fromisoformat(string)
        except ValueError:
            return None
        return moment if moment.tzinfo is not None else None

    return replace(IsTimestamp, string_to_timestamp=staticmethod(string_to_timestamp))


def iso_millis(moment: datetime) -> str:
    """A moment as Step Functions writes one: UTC, milliseconds, `Z`."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _timestamps_as_text(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_millis(value)
    if isinstance(value, dict):
        return {key: _timestamps_as_text(inner) for key, inner in value.items()}
    if isinstance(value, list):
        return [_timestamps_as_text(inner) for inner in value]
    return value


@patch("stepfunctions")
def aws_sdk_pascal_case() -> Undo:
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

    return replace(StateTaskServiceAwsSdk, _normalise_parameters=normalise_parameters,
                   _normalise_response=normalise_response)


# The service part of an `aws-sdk` Task's error names, as Step Functions spells it (PascalCase).
_AWS_SDK_ERROR_SERVICE_NAMES = {
    "cloudwatch": "CloudWatch", "dynamodb": "DynamoDb", "eventbridge": "EventBridge", "lambda": "Lambda",
    "s3": "S3", "sfn": "Sfn", "sns": "Sns", "sqs": "Sqs", "ssm": "Ssm",
}


@patch("stepfunctions")
def aws_sdk_error_names() -> Undo:
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

    def service_error_name(service_name: str) -> str:
        lower = service_name.lower()
        return _AWS_SDK_ERROR_SERVICE_NAMES.get(lower, lower[:1].upper() + lower[1:])

    def exception_name(norm_service_name: str, ex: Exception) -> str:
        code = getattr(ex, "response", {}).get("Error", {}).get("Code") or ex.__class__.__name__
        code = code.rsplit("#", 1)[-1]  # JSON protocols may qualify it: com.amazonaws.dynamodb.v20120810#...
        return f"{norm_service_name}.{code if code.endswith('Exception') else code + 'Exception'}"

    return replace(StateTaskServiceAwsSdk, _normalise_service_error_name=staticmethod(service_error_name),
                   _normalise_exception_name=staticmethod(exception_name))


@patch("stepfunctions")
def execution_name_rules() -> Undo:
    """Refuse the execution names Step Functions refuses: past 80 characters, or with whitespace, brackets,
    wildcards, the special characters it lists or control characters.

    moto limitation: the backend that executes state machines starts an execution under any name (moto
    checks names only in the backend that does not execute), so a name that would fail every
    `StartExecution` on AWS (an 81-character resumption of a 74-character order id, an order id with
    a space) runs here. AWS answers `ValidationException` for the length and `InvalidName` for the
    characters; moto's own check raises both.
    """
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    original = StepFunctionsParserBackend.__dict__["start_execution"]

    def start_execution(self: Any, state_machine_arn: str, name: Any = None, *args: Any, **kwargs: Any) -> Any:
        if name:
            self._validate_name(name)
        return original(self, state_machine_arn, name, *args, **kwargs)

    return replace(StepFunctionsParserBackend, start_execution=start_execution)


@patch("stepfunctions")
def query_language_scopes_per_parse() -> Undo:
    """Give each ASL parse its own stack of QueryLanguage scopes.

    moto limitation: the preprocessor keeps the scopes in a list declared on its class, shared by every
    parse in every thread, and each execution parses its definition when it starts. When a state
    machine mixes JSONPath and JSONata states (a `QueryLanguage: JSONata` state in a JSONPath machine,
    as AWS allows), executions started together read each other's scopes, and some fail to parse
    ("Unsupported declaration in QueryLanguage=JSONPath block") inside their thread, which leaves them
    RUNNING forever. On AWS each definition is parsed on its own.
    """
    from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        super(Preprocessor, self).__init__(*args, **kwargs)
        self._query_language_per_scope = []

    return replace(Preprocessor, __init__=__init__)
