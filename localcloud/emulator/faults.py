"""AWS errors on demand: the emulator answers chosen calls with the error AWS would send, instead of moto.

moto never throttles, never denies and never fails: every call it understands succeeds. Our app
depends on what happens when AWS does (Parameter Store's throughput quota, DynamoDB throttling
behind an API route, access denied after a broken deploy), so a test names the calls that fail:

    with cloud.faults.inject("ssm", "GetParameter", code="ThrottlingException", message="Rate exceeded"):
        ...  # every GetParameter, from a test, a Lambda or a state machine, is refused as AWS would

Every caller reaches the emulator over HTTP (boto3 in the tests and in the Lambda workers, moto's
own Step Functions interpreter, the API Gateway emulator), so the fault sits in front of moto's
request dispatch and meets all of them. The operation is read from the request as AWS protocols
carry it: `X-Amz-Target` for the JSON protocols (DynamoDB, SSM, Step Functions, SQS), `Action` in
the form body for the query protocol (SQS as API Gateway calls it). REST protocols (S3, Lambda's
Invoke) are not matched.
"""

from __future__ import annotations

import io
import json
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

Undo = Callable[[], None]


@dataclass
class Fault:
    """One injected error: which calls it answers, what it answers, and how often it has.

    :param service: the signing name of the service, as in the request's credential scope
        (`dynamodb`, `ssm`, `states`, `sqs`).
    :param operation: the API operation (`GetItem`, `GetParameter`).
    :param code: the error code the SDK raises (`ProvisionedThroughputExceededException`).
    :param status: the HTTP status AWS answers it with (DynamoDB and SSM answer throttling with 400).
    :param message: the error's message.
    :param times: answer this many matching calls, then let calls through; default every call.
    :param matches: a predicate on the request's parameters (the JSON body, or the form fields),
        to fail only some calls (one parameter name, one table); default every call.
    """

    service: str
    operation: str
    code: str
    status: int = 400
    message: str = "injected by the emulator"
    times: int | None = None
    matches: Callable[[Mapping[str, Any]], bool] | None = None
    hits: int = field(default=0, init=False)

    def applies_to(self, service: str | None, operation: str | None, parameters: Mapping[str, Any]) -> bool:
        if service != self.service or operation != self.operation:
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        return self.matches is None or bool(self.matches(parameters))


class FaultInjector:
    """The faults in force for one emulator; `install()` puts it in front of moto's dispatch."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    @contextmanager
    def inject(
        self,
        service: str,
        operation: str,
        *,
        code: str,
        status: int = 400,
        message: str = "injected by the emulator",
        times: int | None = None,
        matches: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> Iterator[Fault]:
        """Answer matching calls with `code` while the block runs (see `Fault` for the arguments)."""
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {status}")
        fault = Fault(service, operation, code, status, message, times, matches)
        with self._lock:
            self._faults.append(fault)
        try:
            yield fault
        finally:
            with self._lock:
                self._faults.remove(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take(self, service: str | None, operation: str | None, parameters: Mapping[str, Any]) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.applies_to(service, operation, parameters):
                    fault.hits += 1
                    return fault
        return None

    def install(self) -> Undo:
        """Put the injector in front of moto's server dispatch; the undo takes it out."""
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication

        original = DomainDispatcherApplication.__call__
        injector = self

        def dispatch(app: Any, environ: dict[str, Any], start_response: Any) -> Any:
            if injector._faults:
                service, operation, parameters, json_protocol = _read_call(environ)
                fault = injector._take(service, operation, parameters)
                if fault is not None:
                    return _error_response(fault, json_protocol, start_response)
            return original(app, environ, start_response)

        DomainDispatcherApplication.__call__ = dispatch  # type: ignore[method-assign]

        def undo() -> None:
            DomainDispatcherApplication.__call__ = original  # type: ignore[method-assign]
            self.clear()

        return undo


def _read_call(environ: dict[str, Any]) -> tuple[str | None, str | None, Mapping[str, Any], bool]:
    """(service, operation, parameters, JSON protocol?) of a request, leaving its body readable."""
    service = None
    authorization = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" in authorization:
        scope = authorization.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        if len(scope) >= 5:
            service = scope[3]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        try:
            parameters = json.loads(body or b"{}")
        except ValueError:
            parameters = {}
        return service, target.rsplit(".", 1)[-1], parameters if isinstance(parameters, dict) else {}, True
    form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"))) if body else {}
    form.update(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
    return service, form.get("Action"), form, False


def _error_response(fault: Fault, json_protocol: bool, start_response: Any) -> list[bytes]:
    request_id = str(uuid.uuid4())
    reason = f"{fault.status} {'Bad Request' if fault.status < 500 else 'Service Unavailable'}"
    if json_protocol:
        body = json.dumps({"__type": fault.code, "message": fault.message}).encode()
        headers = [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-ErrorType", fault.code),
                   ("x-amzn-RequestId", request_id)]
    else:
        kind = "Sender" if fault.status < 500 else "Receiver"
        body = (f"<ErrorResponse><Error><Type>{kind}</Type><Code>{fault.code}</Code>"
                f"<Message>{fault.message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>").encode()
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)]
    start_response(reason, [*headers, ("Content-Length", str(len(body)))])
    return [body]
