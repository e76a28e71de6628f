"""Runs the real handler code for every Lambda invocation the emulator receives.

moto limitation covered: moto's Lambda backend runs functions in Docker, and without Docker only
echoes the payload. Every invoke path (the Invoke API, Step Functions tasks, event-source mappings)
goes through `moto.awslambda.models.LambdaFunction._invoke_lambda`; we route that method here.

Each function gets warm execution environments: worker processes (`localcloud.emulator.lambda_worker`)
started with the function's own environment variables, its deployed code zip unpacked once, and
the handler imported once. One environment serves one invocation at a time; concurrent invocations
of a function get more environments, up to its reserved concurrency, beyond which the call is
throttled with a 429 `TooManyRequestsException`, as on Lambda. Environment variables and module
state never leak between functions because they never share a process.

Imports and layers: a handler imports what it could on Lambda and nothing else
(`localcloud.emulator.lambda_packages`): the standard library, what the python runtime ships (boto3),
its own code, and its layers. Its own layers (`AWS::Lambda::LayerVersion` assets) are unpacked once and
put on the path after the code, as Lambda extracts them to `/opt/python`. The runtime ships no
Powertools, so a function gets `aws_lambda_powertools` only through a Powertools layer
(`localcloud.emulator.public_layers`). Without one, the worker cannot import it (Lambda's
`Runtime.ImportModuleError`); with a layer of a release other than the installed one the emulator
runs, every invocation is refused with that error type and the two releases named.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import select
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moto.awslambda.exceptions import LambdaClientError

from localcloud.emulator.lambda_packages import powertools_layer_modules, runtime_modules
from localcloud.emulator.public_layers import PublicLayers

WORKER_SCRIPT = Path(__file__).with_name("lambda_worker.py")
# Without reserved concurrency a function shares the account pool; a small cap keeps 2 cores usable.
DEFAULT_MAX_ENVIRONMENTS = 16
COLD_START_TIMEOUT_SEC = 60


class TooManyRequestsException(LambdaClientError):
    """Lambda's throttle: every environment the function may have is busy."""

    code = 429

    def __init__(self, function_name: str, limit: int) -> None:
        super().__init__(
            "TooManyRequestsException",
            f"Rate Exceeded. {function_name} is at its concurrency limit of {limit}",
        )


@dataclass(frozen=True)
class InvocationRecord:
    """What the emulator saw of one invocation (tests use it to prove real code ran)."""

    function_name: str
    request_id: str
    errored: bool
    error_type: str | None
    duration_ms: float
    environment_pid: int


class _Environment:
    """One warm worker process."""

    def __init__(self, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            argv, env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True
        )
        ready = self._read_line(COLD_START_TIMEOUT_SEC)
        if ready is None or not json.loads(ready).get("ready"):
            self.close()
            raise RuntimeError(f"lambda environment did not start; see {log_path}")

    def invoke(self, event: Any, request_id: str, timeout_sec: float) -> dict[str, Any] | None:
        deadline_epoch_ms = int((time.time() + timeout_sec) * 1000)
        assert self.process.stdin is not None
        self.process.stdin.write(
            json.dumps({"event": event, "request_id": request_id, "deadline_epoch_ms": deadline_epoch_ms}) + "\n"
        )
        self.process.stdin.flush()
        line = self._read_line(timeout_sec)
        return None if line is None else json.loads(line)

    def _read_line(self, timeout_sec: float) -> str | None:
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], timeout_sec)
        if not readable:
            return None
        line = self.process.stdout.readline()
        return line or None

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream:
                stream.close()
        self._log.close()


class _Pool:
    """The environments of one function version (code, handler and environment variables)."""

    def __init__(self, function_name: str, limit: int) -> None:
        self.function_name = function_name
        self.limit = limit
        self.idle: list[_Environment] = []
        self.busy = 0
        self.lock = threading.Lock()


class LambdaRuntime:
    """Routes moto's Lambda invocations to real handler code in warm worker processes.

    :param endpoint_url: where handlers' AWS SDK calls go (the emulator's server).
    :param work_dir: unpacked code and one log file per function are kept here.
    :param layers: the public layers the emulator knows; default Powertools' of `region`, with the
        installed release as the one it can run.
    """

    def __init__(self, *, endpoint_url: str, region: str, work_dir: Path, python: str = sys.executable,
                 layers: PublicLayers | None = None) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self.work_dir = work_dir
        self.python = python
        self.layers = layers or PublicLayers(region)
        self._pools: dict[tuple[Any, ...], _Pool] = {}
        self._pools_lock = threading.Lock()
        self._code_lock = threading.Lock()
        self._records: list[InvocationRecord] = []
        self._records_lock = threading.Lock()

    # -- wiring ---------------------------------------------------------------------------------
    def install(self) -> Callable[[], None]:
        """Patch moto so every invocation runs here; returns the undo."""
        from moto.awslambda.models import LambdaFunction

        original = LambdaFunction._invoke_lambda
        runtime = self

        def _invoke_lambda(function: Any, event: Any = None) -> tuple[str, bool, str]:
            return runtime.invoke(function, event)

        LambdaFunction._invoke_lambda = _invoke_lambda  # type: ignore[method-assign]

        def undo() -> None:
            LambdaFunction._invoke_lambda = original  # type: ignore[method-assign]

        return undo

    @property
    def invocations(self) -> list[InvocationRecord]:
        with self._records_lock:
            return list(self._records)

    def busy_environments(self, function_name: str) -> int:
        """How many environments of `function_name` are serving an invocation right now."""
        with self._pools_lock:
            pools = [p for p in self._pools.values() if p.function_name == function_name]
        return sum(p.busy for p in pools)

    def log_path(self, function_name: str) -> Path:
        return self.work_dir / "logs" / f"{function_name}.log"

    # -- invocation -----------------------------------------------------------------------------
    def invoke(self, function: Any, event: Any) -> tuple[str, bool, str]:
        """`LambdaFunction._invoke_lambda`'s contract: (payload JSON, errored, logs)."""
        if isinstance(event, (str, bytes)):
            event = json.loads(event or "{}")
        elif event is None:
            event = {}
        refusal = self.layer_refusal(function)
        if refusal is not None:
            self._record(function.function_name, str(uuid.uuid4()), True, refusal, time.monotonic(), None)
            return json.dumps(refusal), True, ""
        pool = self._pool_for(function)
        environment = self._acquire(pool, function)
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        try:
            answer = environment.invoke(event, request_id, float(function.timeout or 3))
        except (BrokenPipeError, OSError):
            answer = None
        finally:
            self._release(pool, environment)
        if answer is None:  # the handler overran its timeout or its process died: Lambda reports it so
            payload: Any = {
                "errorType": "Sandbox.Timedout",
                "errorMessage": f"Task timed out after {float(function.timeout or 3):.2f} seconds",
            }
            errored = True
        else:
            payload, errored = answer["payload"], answer["errored"]
        self._record(function.function_name, request_id, errored, payload, started, environment)
        return json.dumps(payload), errored, ""

    def shutdown(self) -> None:
        with self._pools_lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            with pool.lock:
                for environment in pool.idle:
                    environment.close()
                pool.idle.clear()

    def layer_refusal(self, function: Any) -> dict[str, Any] | None:
        """Lambda's import error for a function whose Powertools layer is a release the emulator cannot run."""
        for arn in _layer_arns(function):
            release = self.layers.release_of(arn)
            if release is not None and release != self.layers.provided_release:
                return {
                    "errorType": "Runtime.ImportModuleError",
                    "errorMessage": f"localcloud cannot run {function.function_name}: its layer {arn} is Powertools"
                    f" {release}, and the emulator runs handlers with the installed aws-lambda-powertools"
                    f" {self.layers.provided_release}; on AWS this function would import {release}, which the tests"
                    " never ran. Deploy the release requirements-lambda.txt pins",
                }
        return None

    def _has_powertools(self, function: Any) -> bool:
        return any(self.layers.release_of(arn) == self.layers.provided_release for arn in _layer_arns(function))

    # -- internals ------------------------------------------------------------------------------
    def _pool_for(self, function: Any) -> _Pool:
        env_vars = dict(function.environment_vars or {})
        key = (function.function_arn, function.code_sha_256, function.handler, tuple(sorted(env_vars.items())),
               tuple(_layer_arns(function)))
        with self._pools_lock:
            pool = self._pools.get(key)
            if pool is None:
                limit = int(function.reserved_concurrency) if function.reserved_concurrency else DEFAULT_MAX_ENVIRONMENTS
                pool = self._pools[key] = _Pool(function.function_name, limit)
            return pool

    def _acquire(self, pool: _Pool, function: Any) -> _Environment:
        with pool.lock:
            while pool.idle:
                environment = pool.idle.pop()
                if environment.alive():
                    pool.busy += 1
                    return environment
                environment.close()
            if pool.busy >= pool.limit:
                raise TooManyRequestsException(function.function_name, pool.limit)
            pool.busy += 1
        try:
            return self._start_environment(function)
        except Exception:
            with pool.lock:
                pool.busy -= 1
            raise

    def _release(self, pool: _Pool, environment: _Environment) -> None:
        with pool.lock:
            pool.busy -= 1
            if environment.alive():
                pool.idle.append(environment)
            else:
                environment.close()

    def _start_environment(self, function: Any) -> _Environment:
        code_dir = self._unpack(function)
        name = function.function_name
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "TZ": "UTC",
            "LAMBDA_TASK_ROOT": str(code_dir),
            "_HANDLER": function.handler,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{function.run_time}",
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size or 128),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"local/{uuid.uuid4().hex}",
            "LOCALCLOUD_FUNCTION_ARN": function.function_arn,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            # The emulator's own choices: SDK calls go to the emulator, and there is no X-Ray daemon.
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "POWERTOOLS_TRACE_DISABLED": "true",
            # What the function may import from outside its code and its own layers (the worker refuses the rest).
            "LOCALCLOUD_PROVIDED_MODULES": ",".join(sorted(
                runtime_modules() | (powertools_layer_modules() if self._has_powertools(function) else set()))),
            "LOCALCLOUD_LAYER_PATHS": os.pathsep.join(str(path) for path in self._layer_paths(function)),
            **{k: str(v) for k, v in (function.environment_vars or {}).items()},
        }
        return _Environment([self.python, str(WORKER_SCRIPT), str(code_dir), function.handler], env, self.log_path(name))

    def _unpack(self, function: Any) -> Path:
        return self._unpacked("code", function.code_sha_256, function.code_bytes)

    def _layer_paths(self, function: Any) -> list[Path]:
        """Where the function's own layers' Python lives, in the function's order (public layers have none here).

        Lambda extracts every layer into `/opt`; the python runtime searches `/opt/python` and
        `/opt/python/lib/<runtime>/site-packages`.
        """
        from moto.awslambda.models import lambda_backends

        backend = lambda_backends[function.account_id][function.region]
        paths: list[Path] = []
        for arn in _layer_arns(function):
            if self.layers.release_of(arn) is not None:
                continue
            layer = backend.layers_versions_by_arn(arn)
            if layer is None or not layer.code_bytes:
                continue  # moto refused an unknown layer at deploy; an empty one adds nothing
            root = self._unpacked("layers", layer.code_sha_256, layer.code_bytes) / "python"
            paths += [root, root / "lib" / str(function.run_time) / "site-packages"]
        return paths

    def _unpacked(self, kind: str, digest: str | None, zipped: bytes) -> Path:
        digest = digest or hashlib.sha256(zipped).hexdigest()
        target = self.work_dir / kind / digest.replace("/", "_").replace("+", "-")
        with self._code_lock:
            if not target.exists():
                staging = target.with_suffix(".partial")
                with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
                    archive.extractall(staging)
                staging.rename(target)
        return target

    def _record(self, name: str, request_id: str, errored: bool, payload: Any, started: float,
                environment: _Environment | None) -> None:
        error_type = payload.get("errorType") if errored and isinstance(payload, dict) else None
        record = InvocationRecord(name, request_id, errored, error_type, (time.monotonic() - started) * 1000,
                                  environment.process.pid if environment else 0)
        with self._records_lock:
            self._records.append(record)


def _layer_arns(function: Any) -> list[str]:
    return [str(layer.get("Arn") if isinstance(layer, dict) else layer) for layer in (function.layers or [])]
