"""A Lambda function running one handler module of the shared `lambdas/` code asset.

Every function of the app is built here so they all get the same defaults: one code asset, the
Powertools layer, X-Ray tracing, JSON logs in a log group with a retention, and no wildcard grants.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aws_cdk import Acknowledgment, Aws, Duration, RemovalPolicy, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import LOG_RETENTION_DAYS_ALLOWED

LAMBDAS_DIR = Path(__file__).resolve().parents[2] / "lambdas"
RUNTIME = lambda_.Runtime.PYTHON_3_13
METRICS_NAMESPACE = "Throttling"


class HandlerFunction(Construct):
    """One function of the shared asset.

    :param handler: the handler's dotted path inside `lambdas/`, e.g. `handlers.call_downstream.handler`.
    :param service: the Powertools service name (logs, metrics and traces are grouped by it).
    :param timeout_sec: the function timeout; default 30 s.
    :param reserved_concurrency: reserved concurrent executions; default none (account pool).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: str,
        service: str,
        description: str,
        log_retention_days: int,
        powertools_layer_version: int,
        removal_policy: RemovalPolicy,
        environment: Mapping[str, str] | None = None,
        timeout_sec: int = 30,
        memory_mb: int = 256,
        reserved_concurrency: int | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.log_group = logs.LogGroup(
            self,
            "LogGroup",
            retention=retention_days(log_retention_days),
            removal_policy=removal_policy,
        )
        # Our own role instead of AWSLambdaBasicExecutionRole: it may write to this log group only.
        self.role = iam.Role(self, "Role", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                             description=f"{service}: writes its own logs; other grants are added per resource")
        self.log_group.grant_write(self.role)
        powertools = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "PowertoolsLayer",
            f"arn:{Aws.PARTITION}:lambda:{Aws.REGION}:017000801446:layer:"
            f"AWSLambdaPowertoolsPythonV3-python313-x86_64:{powertools_layer_version}",
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description=description,
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
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
                "POWERTOOLS_SERVICE_NAME": service,
                "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
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


def retention_days(days: int) -> logs.RetentionDays:
    """The `RetentionDays` member for `days` (jsii enums carry names, not day counts, so map by order)."""
    by_days = dict(zip(LOG_RETENTION_DAYS_ALLOWED, [m for m in logs.RetentionDays if m.name != "INFINITE"], strict=True))
    if days not in by_days:
        raise ValueError(f"log retention must be one of {list(by_days)} days, got {days}")
    return by_days[days]
