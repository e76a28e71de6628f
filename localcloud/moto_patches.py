"""Fixes to moto that the emulator needs to run this app faithfully; each names the limitation it covers.

Every `apply_*` function is idempotent and returns an undo callable, so a test can show the
limitation by running without the fix.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
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
