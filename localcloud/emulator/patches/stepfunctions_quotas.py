"""Step Functions' quotas and error rules that moto's interpreter leaves out: payload size, `States.ALL`, `States.MathAdd`."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from localcloud.emulator.patches.registry import Undo, patch, replace, undo_all

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


def states_failure(env: Any, error_type: str, cause: str, *, event_type: str = "ExecutionFailed") -> Exception:
    """A Step Functions error as moto's interpreter raises one, for a Retry or Catch to take by its name.

    :param error_type: a `StatesErrorNameType` member, e.g. `StatesRuntime`.
    :param event_type: the `HistoryEventType` the failure records (`ExecutionFailed`, `TaskFailed`).
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
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    error = StatesErrorNameType[error_type]
    return FailureEventException(failure_event=FailureEvent(
        env=env,
        error_name=StatesErrorName(typ=error),
        event_type=HistoryEventType[event_type],
        event_details=EventDetails(executionFailedEventDetails=ExecutionFailedEventDetails(
            error=error.to_name(), cause=cause)),
    ))


def _data_limit_exceeded(env: Any, what: str) -> Exception:
    return states_failure(env, "StatesStatesDataLimitExceeded",
                          f"{what} is larger than the payload size quota of {STATE_PAYLOAD_LIMIT_BYTES} bytes",
                          event_type="TaskFailed")


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


@patch("stepfunctions")
def state_payload_limit() -> Undo:
    """Enforce Step Functions' 256 KiB payload quota as AWS does: where, how it counts, and under which name.

    moto limitations: its size check (1) counts JSON with spaces and `\\u` escapes, so a 200 KB
    payload of accented text is refused at three times its size; (2) looks at a state's output and a
    task's result only, where AWS also refuses a state's input once Parameters or ItemSelector made
    it larger than the quota; (3) is renamed by the DynamoDB, SQS, SNS and EventBridge integrations
    after the service (`DynamoDB.AmazonDynamoDBException`), which a Catch on `States.ALL` then
    takes. AWS counts the compact UTF-8 text, fails the state with `States.DataLimitExceeded`
    whatever the integration, and (with `terminal_errors_escape_states_all`) no `States.ALL`
    catches it.
    """
    import importlib

    from moto.stepfunctions.parser.asl.component.common.parargs import Parargs
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.item_selector import ItemSelector

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

    return undo_all(
        *(replace(importlib.import_module(name), is_within_size_quota=_within_payload_limit)
          for name in _SIZE_QUOTA_MODULES),
        replace(Parargs, _eval_body=checked(Parargs.__dict__["_eval_body"], "the state's input after Parameters")),
        replace(ItemSelector, _eval_body=checked(ItemSelector.__dict__["_eval_body"],
                                                 "an iteration's input after ItemSelector")),
        *(replace(cls, _from_error=named(cls.__dict__["_from_error"]))
          for cls in _execution_state_classes() if "_from_error" in cls.__dict__),
    )


# Errors AWS documents as beyond `States.ALL`: a Retry or Catch must name them to take them.
_TERMINAL_ERRORS = ("States.DataLimitExceeded", "States.Runtime")


@patch("stepfunctions")
def terminal_errors_escape_states_all() -> Undo:
    """Let no `States.ALL` retrier or catcher take `States.DataLimitExceeded` or `States.Runtime`.

    moto limitation: its `States.ALL` matches every error, so a workflow that catches everything
    survives, on the emulator, a payload over the quota or a runtime error (an intrinsic function
    given a value it cannot take, a path to nothing) that fails the execution on AWS, whose
    documentation says `States.ALL` catches neither.
    """
    from moto.stepfunctions.parser.asl.component.common.error_name.error_equals_decl import ErrorEqualsDecl

    original = ErrorEqualsDecl.__dict__["_eval_body"]

    def eval_body(self: Any, env: Any) -> None:
        error = getattr(env.stack[-1], "error_name", None)
        original(self, env)
        named = {getattr(name, "error_name", None) for name in self.error_names}
        if error in _TERMINAL_ERRORS and error not in named:
            env.stack[-1] = False

    return replace(ErrorEqualsDecl, _eval_body=eval_body)


@patch("stepfunctions")
def math_add_integer_range() -> Undo:
    """Refuse `States.MathAdd` arguments outside -2^31 .. 2^31 - 1, as AWS documents.

    moto limitation: it rounds a fraction to the nearest integer as AWS does (half up, as Java's
    `Math.round`), but adds numbers of any size, so `States.MathAdd(1e15, 0)` answers 10^15 where
    AWS fails the state. Refused here as moto refuses an argument that is not a number.
    """
    from moto.stepfunctions.parser.asl.component.intrinsic.function.statesfunction.math_operations.math_add import (
        MathAdd,
    )

    original = MathAdd.__dict__["_validate_integer_value"]

    def validate_integer_value(value: Any) -> int:
        rounded = original.__func__(value)
        if not INT32_RANGE[0] <= rounded <= INT32_RANGE[1]:
            raise TypeError(f"Expected an integer in [{INT32_RANGE[0]}, {INT32_RANGE[1]}], but got: '{value}'.")
        return rounded

    return replace(MathAdd, _validate_integer_value=staticmethod(validate_integer_value))
