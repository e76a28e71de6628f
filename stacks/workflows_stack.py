"""Workflows: the functions that call downstreams, and the registered use cases that run workflows with them.

One `call_downstream` function per downstream, so each has its own limits, metrics dimension and
blast radius, and reads only its own tunables. The use cases of the workflows layer
(`stacks/use_cases/`, in `registry.USE_CASES` order) are built into this stack after the callers,
each calling the downstream its props name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from stacks import stage_props
from stacks.config import AppConfig
from stacks.patterns import HandlerFunction
from stacks.shared_limits_stack import SharedLimitsStack
from stacks.use_cases import USE_CASES, Layer, Registered, UseCase, build_layer
from stacks.use_cases.base import U, the_use_case
from throttling.core import names

class WorkflowsStack(Stack):
    """The downstreams' callers and the workflows layer's use cases.

    :param use_cases: the registry whose workflows-layer lines are built here; default `USE_CASES`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        shared_limits: SharedLimitsStack,
        use_cases: Sequence[Registered[Any]] = USE_CASES,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        removal_policy = stage_props.removal_policy(config)
        self.downstream_callers: dict[str, lambda_.Function] = {}
        for downstream in config.downstreams:
            caller = HandlerFunction(
                self,
                f"{_pascal(downstream.name)}Caller",
                handler="handlers.call_downstream.handler",
                service=f"{downstream.name}-caller",
                description=f"Calls {downstream.name} within its limits",
                log_retention=stage_props.log_retention(config),
                removal_policy=removal_policy,
                timeout_sec=int(downstream.timeout_sec) + 5,
                environment={
                    **shared_limits.caller_environment(downstream, tunables_cache_sec=config.tunables_cache_sec),
                    names.ENV_LIMITER_MAX_WAIT_SEC: "1",
                },
            )
            shared_limits.grant_caller(caller.function, downstream)
            self.downstream_callers[downstream.name] = caller.function
            CfnOutput(self, f"{_pascal(downstream.name)}CallerName", value=caller.function.function_name)

        self.use_cases: list[UseCase[Any]] = build_layer(
            self, Layer.WORKFLOWS, use_cases, config=config, shared_limits=shared_limits,
            callers=self.downstream_callers)

    def use_case(self, kind: type[U]) -> U:
        """The use case of `kind` built here (the ingress routes to its workflow and tables)."""
        return the_use_case(self.use_cases, kind)


def _pascal(snake: str) -> str:
    return "".join(part.title() for part in snake.split("_"))
