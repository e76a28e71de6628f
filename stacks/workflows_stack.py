"""Workflows: the functions that call downstreams, and the registered use cases that run workflows with them.

One `call_downstream` function per downstream, so each has its own limits, metrics dimension and
blast radius, and reads only its own tunables and, for a downstream that takes credentials, only its own
secret. The use cases of the workflows layer
(`stacks/use_cases/`, in `registry.USE_CASES` order) are built into this stack after the callers,
each calling the downstream its props name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import json

from aws_cdk import Acknowledgment, CfnOutput, Stack, Validations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from stacks import stage_props
from stacks.config import AppConfig, DownstreamConfig
from stacks.app_assets import lambda_code
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
        # downstream name -> the secret holding its credentials, for the downstreams configured with `auth`.
        self.downstream_credentials: dict[str, secretsmanager.ISecret] = {}
        for downstream in config.downstreams:
            caller = HandlerFunction(
                self,
                f"{_pascal(downstream.name)}Caller",
                code=lambda_code(),
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
            if downstream.auth is not None:
                self.downstream_credentials[downstream.name] = self._credentials(downstream, caller.function, config)
            self.downstream_callers[downstream.name] = caller.function
            CfnOutput(self, f"{_pascal(downstream.name)}CallerName", value=caller.function.function_name)

        self.use_cases: list[UseCase[Any]] = build_layer(
            self, Layer.WORKFLOWS, use_cases, config=config, shared_limits=shared_limits,
            callers=self.downstream_callers)

    def _credentials(self, downstream: DownstreamConfig, caller: lambda_.Function,
                     config: AppConfig) -> secretsmanager.ISecret:
        """The secret of `downstream`'s credentials, readable by its caller alone, and where the caller finds it.

        Created here unless `auth.secret_name` names an existing one. A created secret starts with a
        generated placeholder of the right shape; put the value the third party issued
        (`aws secretsmanager put-secret-value`): the caller reads it within `secret_cache_sec`, or at
        once when the downstream answers 401.
        """
        auth = downstream.auth
        assert auth is not None
        construct_id = f"{_pascal(downstream.name)}Credentials"
        if auth.secret_name is not None:
            secret: secretsmanager.ISecret = secretsmanager.Secret.from_secret_name_v2(self, construct_id,
                                                                                       auth.secret_name)
            secret_id = auth.secret_name
        else:
            api_key = auth.kind == names.AUTH_API_KEY
            created = secretsmanager.Secret(
                self, construct_id,
                description=f"{downstream.name}'s credentials ({auth.kind}); put the value it issued",
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    secret_string_template="{}" if api_key else json.dumps({names.SECRET_CLIENT_ID: "replace-me"}),
                    generate_string_key=names.SECRET_API_KEY if api_key else names.SECRET_CLIENT_SECRET,
                    exclude_punctuation=True, password_length=40),
                removal_policy=stage_props.removal_policy(config),
            )
            Validations.of(created).acknowledge(Acknowledgment(
                id="AwsSolutions::AwsSolutions-SMG4",
                reason="the third party issues and rotates this credential, not us: put its new value and the"
                " caller picks it up on the next 401 (a rotation Lambda would need the third party's API)"))
            CfnOutput(self, f"{construct_id}SecretArn", value=created.secret_arn)
            secret, secret_id = created, created.secret_arn
        secret.grant_read(caller)
        caller.add_environment(names.ENV_DOWNSTREAM_AUTH, auth.document())
        caller.add_environment(names.ENV_DOWNSTREAM_SECRET_ID, secret_id)
        return secret

    def use_case(self, kind: type[U]) -> U:
        """The use case of `kind` built here (the ingress routes to its workflow and tables)."""
        return the_use_case(self.use_cases, kind)


def _pascal(snake: str) -> str:
    return "".join(part.title() for part in snake.split("_"))
