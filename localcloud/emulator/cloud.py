"""The embedded AWS emulator: moto as a server thread in this process, with the fixes this app needs.

    with LocalCloud() as cloud:
        stacks = cloud.deploy(Path("cdk.out"))
        cloud.client("lambda").invoke(FunctionName=..., Payload=...)

Everything speaks to it over HTTP on loopback, as to AWS: the tests, the demo, the Lambda handlers
(in their own worker processes) and moto's own Step Functions interpreter. Its state lives in
moto's process-wide backends, so run one LocalCloud per process at a time.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config

from localcloud.emulator import patches
from localcloud.emulator.deployer import DeployedStack, Deployer
from localcloud.emulator.faults import FaultInjector
from localcloud.emulator.event_source_poller import (
    EventSourcePollerManager,
    InvocationResult,
    disable_moto_synchronous_sqs_trigger,
)
from localcloud.emulator.lambda_runtime import LambdaRuntime
from localcloud.emulator.public_layers import PublicLayers

ACCOUNT_ID = "123456789012"  # moto's default account
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}


class _SkippedResourceNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No Moto CloudFormation support for")


_SKIPPED_RESOURCE_NOTICES = _SkippedResourceNotices()


class LocalCloud:
    """Start, deploy into, and stop the emulator.

    :param region: the region every client and function uses.
    :param work_dir: where unpacked function code and function logs go; a temporary folder by default.
    :param lambda_concurrency_limit: the account's Lambda concurrency (`GetAccountSettings`, and the
        reservations it allows); default 1,000, AWS's usual limit (a new account's is 10). Tests may
        change `cloud.lambda_account.concurrency_limit` while it runs.
    :param port: the loopback port to serve on; default 0, any free one (`endpoint_url` says which).
    """

    def __init__(self, *, region: str = "us-east-1", work_dir: Path | None = None,
                 lambda_concurrency_limit: int = 1_000, port: int = 0) -> None:
        self.region = region
        self.port = port
        self.account_id = ACCOUNT_ID
        self._own_work_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="localcloud-"))
        self._server: Any = None
        self._undo: list[Any] = []
        self._saved_env: dict[str, str | None] = {}
        self.lambda_runtime: LambdaRuntime | None = None
        self.event_sources: EventSourcePollerManager | None = None
        self.stacks: dict[str, DeployedStack] = {}
        # Powertools' public layers: the installed release is the one handlers can run with.
        self.public_layers = PublicLayers(region)
        self.lambda_account = patches.LambdaAccount(lambda_concurrency_limit)
        # AWS errors on demand (throttling, access denied) for chosen calls: `cloud.faults.inject(...)`.
        self.faults = FaultInjector()

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> LocalCloud:
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer

        # No request from this process may reach real AWS, whatever the caller's environment says.
        self._set_env({**FAKE_CREDENTIALS, "AWS_DEFAULT_REGION": self.region, "AWS_REGION": self.region})
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request drowns the rest
        # moto names each resource type its CloudFormation skips (queue and topic policies here); the
        # README lists them once instead.
        logging.getLogger("moto").addFilter(_SKIPPED_RESOURCE_NOTICES)
        # moto's interpreter logs every failed state (an expected Fail, an IsPresent miss) as an error;
        # executions report their own failures through DescribeExecution and the history.
        logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", message="Tried to parse .* but it's not supported by moto's CloudFormation")
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        # moto's Step Functions interpreter calls services back at localhost:$MOTO_PORT.
        self._set_env({"MOTO_PORT": str(port)})
        # moto's fixes, one registry (localcloud/emulator/patches): a test may take one out and put it back.
        self._undo.append(patches.apply_all(layers=self.public_layers, account_id=self.account_id,
                                            lambda_account=self.lambda_account))
        self._undo.append(self.faults.install())
        self.lambda_runtime = LambdaRuntime(endpoint_url=self.endpoint_url, region=self.region, work_dir=self.work_dir,
                                            layers=self.public_layers)
        self._undo.append(self.lambda_runtime.install())
        # SQS event sources are polled the way Lambda does (batches, window, maximum concurrency,
        # partial batch responses) instead of moto's one-message call inside SendMessage.
        self._undo.append(disable_moto_synchronous_sqs_trigger())
        self.event_sources = EventSourcePollerManager(
            invoke=self._invoke_for_event_source, sqs_client_factory=lambda region: self.client("sqs")
        )
        return self

    def stop(self) -> None:
        if self.event_sources:
            self.event_sources.stop_all()
        if self.lambda_runtime:
            self.lambda_runtime.shutdown()
        if self._server:
            self._server.stop()
            self._server = None
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        # moto's backends are process-wide: forget everything, so the next LocalCloud starts empty.
        from moto.core.base_backend import BackendDict
        from moto.core.models import reset_model_data

        BackendDict.reset()
        reset_model_data()
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if self._own_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- use ------------------------------------------------------------------------------------
    def client(self, service: str, *, config: Config | None = None) -> Any:
        """A boto3 client for the emulator (fake credentials, loopback endpoint, few retries unless `config` says)."""
        defaults = Config(retries={"mode": "standard", "max_attempts": 3}, read_timeout=120)
        return boto3.client(
            service,
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            aws_session_token="testing",
            config=defaults.merge(config) if config else defaults,
        )

    def deploy(self, cdk_out: Path) -> dict[str, DeployedStack]:
        """Deploy every stack of a synthesized assembly, in dependency order."""
        deployer = Deployer(
            cloudformation=self.client("cloudformation"),
            s3=self.client("s3"),
            ssm=self.client("ssm"),
            account=self.account_id,
            region=self.region,
        )
        deployed = deployer.deploy(Path(cdk_out))
        self.stacks.update(deployed)
        assert self.event_sources is not None
        self.event_sources.sync()
        return deployed

    def _invoke_for_event_source(self, function_name: str, event: dict[str, Any]) -> InvocationResult:
        """How an event-source poller invokes a function: through moto's backend to the Lambda runtime."""
        from moto.awslambda.models import lambda_backends

        assert self.lambda_runtime is not None
        function = lambda_backends[self.account_id][self.region].get_function(function_name)
        payload, errored, _ = self.lambda_runtime.invoke(function, event)
        return InvocationResult(payload=json.loads(payload) if payload else None, errored=errored)

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value
