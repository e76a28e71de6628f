"""Workflows: the functions that call downstreams, and (with the use cases) the state machines that run them.

One `call_downstream` function per downstream, so each has its own limits, metrics dimension and
blast radius, and reads only its own tunables.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks.config import AppConfig
from stacks.patterns import HandlerFunction
from stacks.shared_limits_stack import SharedLimitsStack, downstream_tunables_key, downstream_tunables_seed


class WorkflowsStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: AppConfig, shared_limits: SharedLimitsStack, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        removal_policy = RemovalPolicy.DESTROY if config.removal_policy == "destroy" else RemovalPolicy.RETAIN
        self.downstream_callers: dict[str, lambda_.Function] = {}
        for downstream in config.downstreams:
            key = downstream_tunables_key(downstream)
            parameter = shared_limits.tunables.parameter(key)
            caller = HandlerFunction(
                self,
                f"{_pascal(downstream.name)}Caller",
                handler="handlers.call_downstream.handler",
                service=f"{downstream.name}-caller",
                description=f"Calls {downstream.name} within its limits",
                log_retention_days=config.log_retention_days,
                powertools_layer_version=config.powertools_layer_version,
                removal_policy=removal_policy,
                timeout_sec=int(downstream.timeout_sec) + 5,
                environment={
                    "DOWNSTREAM_NAME": downstream.name,
                    "DOWNSTREAM_BASE_URL": downstream.base_url,
                    "DOWNSTREAM_TIMEOUT_SEC": str(downstream.timeout_sec),
                    "DOWNSTREAM_RATE_LIMIT_PER_SEC": str(downstream.rate_limit_per_sec),
                    "TUNABLES_PARAMETER_NAME": parameter.parameter_name,
                    "TUNABLES_DEFAULTS": downstream_tunables_seed(downstream),
                    "TUNABLES_CACHE_SEC": str(config.tunables_cache_sec),
                },
            )
            shared_limits.tunables.grant_read(caller.function, key)
            self.downstream_callers[downstream.name] = caller.function
            CfnOutput(self, f"{_pascal(downstream.name)}CallerName", value=caller.function.function_name)


def _pascal(snake: str) -> str:
    return "".join(part.title() for part in snake.split("_"))
