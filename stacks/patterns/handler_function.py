"""A Lambda function running one handler module of the shared `lambdas/` code asset.

Every function of the app is built here so they all get the same defaults: one code asset, the
Powertools layer, X-Ray tracing, JSON logs in a log group with a retention, and no wildcard grants.

The Powertools layer is the release the tests run: `requirements-lambda.txt` pins it (the one source
of truth), and CloudFormation resolves the layer's ARN at deploy from the public SSM parameter
Powertools publishes for that release, runtime and architecture
(`/aws/service/powertools/python/<arch>/<python>/<version>`). A layer number in the template would
pin some other release (layer 27 is 3.23.0, which lacks modules the handlers import).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from throttling.core import names

ROOT = Path(__file__).resolve().parents[2]
LAMBDAS_DIR = ROOT / "lambdas"
# What the tests install; the Lambda runtime's libraries are pinned there.
REQUIREMENTS_FILE = ROOT / "requirements-lambda.txt"
RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.X86_64
POWERTOOLS_PACKAGE = "aws-lambda-powertools"
POWERTOOLS_PARAMETER_PREFIX = "/aws/service/powertools/python/"


def pinned_version(package: str, requirements: Path = REQUIREMENTS_FILE) -> str:
    """The exact version `requirements` pins `package` to (a `name[extras]==X.Y.Z` line); ValueError if none."""
    pattern = re.compile(rf"\s*{re.escape(package)}(\[[^\]]*\])?\s*==\s*([0-9][0-9A-Za-z.+-]*)\s*(#.*)?", re.IGNORECASE)
    for line in requirements.read_text().splitlines():
        match = pattern.fullmatch(line)
        if match:
            return match.group(2)
    raise ValueError(f"{requirements.name} pins no exact version of {package} (expected a line '{package}==X.Y.Z');"
                     " the deployed layer is resolved from that pin")


def powertools_layer_parameter(version: str, *, architecture: str = ARCHITECTURE.name,
                               runtime: str = RUNTIME.name) -> str:
    """Powertools' public SSM parameter holding its layer's ARN for one release, runtime and architecture."""
    return f"{POWERTOOLS_PARAMETER_PREFIX}{architecture}/{runtime}/{version}"


POWERTOOLS_VERSION = pinned_version(POWERTOOLS_PACKAGE)


class HandlerFunction(Construct):
    """One function of the shared asset.

    :param handler: the handler's dotted path inside `lambdas/`, e.g. `handlers.call_downstream.handler`.
    :param service: the Powertools service name (logs, metrics and traces are grouped by it).
    :param log_retention: of the function's log group; default two years (CDK's default for a log group).
    :param timeout_sec: the function timeout; default 30 s.
    :param reserved_concurrency: reserved concurrent executions; default none (account pool).
    :param powertools_version: the Powertools release whose public layer the function gets; default
        the one `requirements-lambda.txt` pins (what the tests run).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: str,
        service: str,
        description: str,
        removal_policy: RemovalPolicy,
        log_retention: logs.RetentionDays = logs.RetentionDays.TWO_YEARS,
        environment: Mapping[str, str] | None = None,
        timeout_sec: int = 30,
        memory_mb: int = 256,
        reserved_concurrency: int | None = None,
        powertools_version: str = POWERTOOLS_VERSION,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            retention=log_retention,
            removal_policy=removal_policy,
        )
        # Our own role instead of AWSLambdaBasicExecutionRole: it may write to this log group only.
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description=f"{service}: writes its own logs; other grants are added per resource")
        self.log_group.grant_write(self.role)
        # Resolved by CloudFormation at each deploy (an `AWS::SSM::Parameter::Value<String>` parameter).
        powertools = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "PowertoolsLayer",
            ssm.StringParameter.value_for_string_parameter(self, powertools_layer_parameter(powertools_version)),
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description=description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=lambda_.Code.from_asset(str(LAMBDAS_DIR), exclude=["**/__pycache__", "**/*.pyc"]),
            handler=handler,
            role=self.role,
            layers=[powertools],
            timeout=Duration.seconds(timeout_sec),
            memory_size=memory_mb,
            reserved_concurrent_executions=reserved_concurrency,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            environment={
                names.ENV_POWERTOOLS_SERVICE_NAME: service,
                names.ENV_POWERTOOLS_METRICS_NAMESPACE: names.METRICS_NAMESPACE,
                "POWERTOOLS_LOG_LEVEL": "INFO",
                **(environment or {}),
            },
        )


        Validations.of(self.function).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-L1",
                reason="python3.13 is pinned to match the Powertools v3 layer build and the tested runtime; bump both together",
            )
        )
        Validations.of(self.role).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                reason="X-Ray's PutTraceSegments and PutTelemetryRecords do not support resource-level permissions",
            )
        )
