"""Shared limits: the state every workflow and consumer throttles against.

For now, the operator-tunable limits of each downstream in SSM. The token-bucket, semaphore and
circuit-breaker tables join this stack with the throttling primitives.
"""

from __future__ import annotations

from aws_cdk import Stack
from constructs import Construct

from stacks.config import AppConfig, DownstreamConfig
from stacks.patterns import TunableParameters


def downstream_tunables_key(downstream: DownstreamConfig) -> str:
    return f"downstreams/{downstream.name}"


def downstream_tunables_seed(downstream: DownstreamConfig) -> str:
    """The first value of a downstream's tunables document (the Lambda side parses it: see the contract test)."""
    import json

    return json.dumps(
        {
            "rate_per_sec": downstream.rate_limit_per_sec,
            "burst": downstream.burst,
            "max_concurrency": downstream.default_max_concurrency,
            "mode": "auto",
        },
        sort_keys=True,
    )


class SharedLimitsStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.tunables = TunableParameters(
            self,
            "Tunables",
            prefix=config.ssm_prefix,
            documents={downstream_tunables_key(d): downstream_tunables_seed(d) for d in config.downstreams},
        )
