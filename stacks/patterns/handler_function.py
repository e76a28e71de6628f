"""A Lambda function with the architecture's defaults, running one handler of a code asset it is given.

Every function of the app is built here so they all get the same defaults: the Powertools layer,
X-Ray tracing, JSON logs in a log group with a retention, and no wildcard grants.

The Powertools layer is a release the tests ran: `POWERTOOLS_VERSION` (the app's
`requirements-lambda.txt` installs the same one, and a test keeps the two equal), and CloudFormation
resolves the layer's ARN at deploy from the public SSM parameter Powertools publishes for that
release, runtime and architecture (`/aws/service/powertools/python/<arch>/<python>/<version>`). A
layer number in the template would pin some other release (layer 27 is 3.23.0, which lacks modules
the handlers import).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from throttling.core import names

RUNTIME = lambda_.Runtime.PYTHON_3_13
ARCHITECTURE = lambda_.Architecture.X86_64
POWERTOOLS_PACKAGE = "aws-lambda-powertools"
POWERTOOLS_PARAMETER_PREFIX = "/aws/service/powertools/python/"
# The release the handlers and the tests run; bump it with requirements-lambda.txt (a test compares them).
POWERTOOLS_VERSION = "3.37.0"


def powertools_layer_parameter(version: str, *, architecture: str = ARCHITECTURE.name,
                               runtime: str = RUNTIME.name) -> str:
    """Powertools' public SSM parameter holding its layer's ARN for one release, runtime and architecture."""
    return f"{POWERTOOLS_PARAMETER_PREFIX}{architecture}/{runtime}/{version}"


class HandlerFunction(Construct):
    """One function: `handler` of `code`, with the Powertools layer and `layers` after it.

    :param code: the function's code (a new `lambda_.Code` per function: an asset belongs to one stack).
    :param handler: the handler's dotted path inside `code`, e.g. `handlers.call_downstream.handler`.
    :param service: the Powertools service name (logs, metrics and traces are grouped by it).
    :param log_retention: of the function's log group; default two years (CDK's default for a log group).
    :param timeout_sec: the function timeout; default 30 s.
    :param reserved_concurrency: reserved concurrent executions; default none (account pool).
    :param powertools_version: the Powertools release whose public layer the function gets; default
        `POWERTOOLS_VERSION` (what the tests run).
    :param layers: more layers, after Powertools' (e.g. `RuntimeLayer`, the throttling runtime); default none.
    :param function_props: any other `aws_lambda.Function` keyword arguments, or overrides of the
        defaults above (e.g. `{"architecture": lambda_.Architecture.ARM_64}`); default none.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code: lambda_.Code,
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
        layers: Sequence[lambda_.ILayerVersion] = (),
        function_props: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        overrides = dict(function_props or {})
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
        # Resolved by CloudFormation at each deploy (an `AWS::SSM::Parameter::Value<String>` parameter); it
        # follows an overridden architecture or runtime, since Powertools builds one layer per pair.
        powertools = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "PowertoolsLayer",
            ssm.StringParameter.value_for_string_parameter(self, powertools_layer_parameter(
                powertools_version, architecture=overrides.get("architecture", ARCHITECTURE).name,
                runtime=overrides.get("runtime", RUNTIME).name)),
        )
        defaults: dict[str, Any] = dict(
            description=description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            code=code,
            handler=handler,
            role=self.role,
            layers=[powertools, *layers],
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
        self.function = lambda_.Function(self, "Function", **{**defaults, **overrides})

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
