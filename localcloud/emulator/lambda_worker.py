"""One Lambda execution environment: a process that imports a handler once and serves invocations.

Started by `localcloud.emulator.lambda_runtime` with the function's own environment variables, so module-level
state (clients, caches, Powertools' service name) belongs to one function, as on Lambda. The protocol
is one JSON line per invocation on stdin and one JSON line per answer on the original stdout; the
handler's own prints and logs go to stderr, which the runtime collects as the function's log.

    python localcloud/emulator/lambda_worker.py <code_dir> <module.handler>
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
import time
import traceback
import uuid
from typing import Any


class LambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    def __init__(self, request_id: str, deadline_epoch_ms: int) -> None:
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = os.environ.get("LOCALCLOUD_FUNCTION_ARN", "")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline_epoch_ms = deadline_epoch_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_epoch_ms - int(time.time() * 1000))


class _OnlyWhatLambdaHas(importlib.abc.MetaPathFinder):
    """Refuses a top-level module that Lambda would not have (`localcloud.emulator.lambda_packages`).

    Allowed: the standard library, the runtime's own libraries and those of the function's public
    layers (`provided`), and whatever its code or its own layers contain (`roots`, searched alone).
    """

    def __init__(self, roots: list[str], provided: set[str]) -> None:
        self.roots = roots
        self.provided = provided

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if "." in fullname or fullname in sys.builtin_module_names or fullname in sys.stdlib_module_names:
            return None
        if fullname in self.provided or importlib.machinery.PathFinder.find_spec(fullname, self.roots) is not None:
            return None
        raise ModuleNotFoundError(f"No module named '{fullname}'", name=fullname)


def main(code_dir: str, handler_path: str) -> None:
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # handler prints (EMF metrics, logs) go to the log
    # Lambda's order: the code (/var/task), then the layers (/opt/python...), then the runtime's libraries.
    layer_paths = [path for path in os.environ.pop("LOCALCLOUD_LAYER_PATHS", "").split(os.pathsep) if path]
    sys.path[0:1] = [code_dir, *layer_paths]  # run as a script, so [0] was this folder: the handler must not see it
    provided = {name for name in os.environ.pop("LOCALCLOUD_PROVIDED_MODULES", "").split(",") if name}
    sys.meta_path.insert(0, _OnlyWhatLambdaHas([code_dir, *layer_paths], provided))
    module_name, _, function_name = handler_path.rpartition(".")
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception as error:  # noqa: BLE001 - an init failure is answered for every invocation, as on Lambda
        init_error: dict[str, Any] | None = _error_shape(error, error_type_prefix="Runtime.ImportModuleError")
        init_error["errorMessage"] = f"Unable to import module '{module_name}': {error}"
        handler = None
    else:
        init_error = None
    answers.write(json.dumps({"ready": True}) + "\n")

    for line in sys.stdin:
        request = json.loads(line)
        if init_error is not None:
            answers.write(json.dumps({"errored": True, "payload": init_error}) + "\n")
            continue
        context = LambdaContext(request.get("request_id") or str(uuid.uuid4()), request["deadline_epoch_ms"])
        # Lambda sets the invocation's trace header here; unsampled, so X-Ray's SDK records nothing to send.
        os.environ["_X_AMZN_TRACE_ID"] = (f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};"
                                          f"Parent={uuid.uuid4().hex[:16]};Sampled=0")
        try:
            result = handler(request["event"], context)
        except Exception as error:  # noqa: BLE001 - the error goes back in Lambda's shape
            traceback.print_exc()
            answer = json.dumps({"errored": True, "payload": _error_shape(error)}, default=str)
        else:
            try:
                answer = json.dumps({"errored": False, "payload": result})
            except (TypeError, ValueError) as error:  # as on Lambda, a result that is not JSON is an error
                answer = json.dumps({"errored": True, "payload": _error_shape(error, "Runtime.MarshalError")})
        # Lambda ships what an invocation printed (EMF metrics with print()) as it ends, not when the process does.
        sys.stdout.flush()
        sys.stderr.flush()
        answers.write(answer + "\n")


def _error_shape(error: BaseException, error_type_prefix: str | None = None) -> dict[str, Any]:
    """Lambda's error payload: Step Functions retries and catches on `errorType`."""
    return {
        "errorType": error_type_prefix or type(error).__name__,
        "errorMessage": str(error),
        "stackTrace": traceback.format_exception(error)[-5:],
    }


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
