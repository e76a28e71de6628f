"""Shared limits: the state every workflow and consumer throttles against.

The operator-tunable limits of each downstream and breaker in SSM, the DynamoDB tables of the
sharded rate limiter, the lease semaphores and the circuit breakers, and the sweep that reclaims
leases whose owners died.
"""

from __future__ import annotations

import json

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks import stage_props
from stacks.config import AppConfig, DownstreamConfig
from stacks.app_assets import lambda_code
from stacks.patterns import CircuitBreakerTable, HandlerFunction, RateLimiterTable, SemaphoreTable, TunableParameters
from stacks.patterns.shared_limiter import shared_limiter_environment
from throttling.core import names, planning

# Lambda's and EventBridge's minimum event age: a sweep is worth a minute, then the next one runs.
LEASE_SWEEP_MAX_AGE_SEC = 60


def downstream_tunables_key(downstream: DownstreamConfig) -> str:
    return names.downstream_tunables_key(downstream.name)


def breaker_tunables_key(downstream: DownstreamConfig) -> str:
    return names.breaker_tunables_key(downstream.name)


def downstream_tunables_seed(downstream: DownstreamConfig) -> str:
    """The first value of a downstream's limits (the Lambda side parses it: see the contract test).

    Where the limit is unknown the rate is planned from the ceiling, and the inner loop's seed and floor
    come with it, so the callers start an unused bucket low and discover the rate under it.
    """
    return json.dumps(
        {**planning.tunables_document(downstream.planned_rate_per_sec, downstream.planned_burst,
                                      downstream.default_max_concurrency),
         **downstream.discovery_tunables},
        sort_keys=True,
    )


def breaker_tunables_seed(downstream: DownstreamConfig) -> str:
    """The first value of a downstream's breaker policy.

    A call is slow at five times its planned latency (never beyond its timeout), and the half-open
    probe's lease outlives the longest call it may make, so a slow probe is not taken for a dead one.
    """
    return json.dumps(
        {
            "failure_rate_threshold": 0.5,
            "slow_call_rate_threshold": 0.8,
            "slow_call_duration_sec": min(downstream.timeout_sec, downstream.expected_latency_ms * 5 / 1000),
            "minimum_calls": 10,
            "window_sec": 60,
            "open_duration_sec": 30,
            "probe_lease_sec": downstream.timeout_sec * 2,
        },
        sort_keys=True,
    )


class SharedLimitsStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: AppConfig, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        removal_policy = stage_props.removal_policy(config)
        documents = {}
        for downstream in config.downstreams:
            documents[downstream_tunables_key(downstream)] = downstream_tunables_seed(downstream)
            documents[breaker_tunables_key(downstream)] = breaker_tunables_seed(downstream)
        self.tunables = TunableParameters(self, "Tunables", prefix=config.ssm_prefix, documents=documents)

        self.rate_limiter = RateLimiterTable(self, "RateLimiter", removal_policy=removal_policy)
        self.semaphores = SemaphoreTable(self, "Semaphores", removal_policy=removal_policy)
        self.breakers = CircuitBreakerTable(self, "CircuitBreakers", removal_policy=removal_policy)

        # Leases of owners that died (a timed-out Lambda, an aborted execution) would hold permits
        # until the next contended acquire reclaims them; the sweep frees them within a minute.
        self.lease_reclaimer = HandlerFunction(
            self,
            "LeaseReclaimer",
            code=lambda_code(),
            handler="handlers.reclaim_leases.handler",
            service="lease-reclaimer",
            description="Removes semaphore leases whose owners died",
            log_retention=stage_props.log_retention(config),
            removal_policy=removal_policy,
            timeout_sec=60,
            # A ceiling, not a need: two sweeps at once are harmless (each removal is conditioned on the
            # lease's expiry being unchanged), so a stage without reservations runs it unreserved.
            reserved_concurrency=1 if config.reserve_concurrency else None,
            environment={names.ENV_SEMAPHORE_TABLE_NAME: self.semaphores.table.table_name},
        )
        self.semaphores.grant_reclaim(self.lease_reclaimer.function)
        # A sweep that fails is replaced by the next minute's: no Lambda retries (by default two, over
        # up to six hours) and no event older than a minute, which would only stack sweeps up.
        self.lease_reclaimer.function.configure_async_invoke(
            retry_attempts=0, max_event_age=Duration.seconds(LEASE_SWEEP_MAX_AGE_SEC))
        events.Rule(
            self,
            "LeaseReclaimSchedule",
            description="Sweep expired semaphore leases every minute",
            schedule=events.Schedule.rate(Duration.minutes(1)),
            targets=[targets.LambdaFunction(self.lease_reclaimer.function, retry_attempts=0,
                                            max_event_age=Duration.seconds(LEASE_SWEEP_MAX_AGE_SEC))],
        )

        CfnOutput(self, "RateLimiterTableName", value=self.rate_limiter.table.table_name)
        CfnOutput(self, "SemaphoreTableName", value=self.semaphores.table.table_name)
        CfnOutput(self, "CircuitBreakerTableName", value=self.breakers.table.table_name)
        CfnOutput(self, "LeaseReclaimerName", value=self.lease_reclaimer.function.function_name)

    def caller_environment(self, downstream: DownstreamConfig, *, tunables_cache_sec: int) -> dict[str, str]:
        """What every function that calls `downstream` through the shared limiter reads (its contract, its
        tunables document and the limiter's table), whichever use case it serves; grant it with
        `grant_caller`."""
        return {
            names.ENV_DOWNSTREAM_BASE_URL: downstream.base_url,
            names.ENV_DOWNSTREAM_TIMEOUT_SEC: str(downstream.timeout_sec),
            **shared_limiter_environment(
                downstream=downstream.name, rate_limit_per_sec=downstream.max_rate_per_sec, burst=downstream.burst,
                tunables_parameter_name=self.tunables.parameter(downstream_tunables_key(downstream)).parameter_name,
                tunables_seed=downstream_tunables_seed(downstream), tunables_cache_sec=tunables_cache_sec,
                table_name=self.rate_limiter.table.table_name),
        }

    def grant_caller(self, grantee: iam.IGrantable, downstream: DownstreamConfig) -> None:
        """What `caller_environment` promises: read the downstream's tunables, take the limiter's tokens."""
        self.tunables.grant_read(grantee, downstream_tunables_key(downstream))
        self.rate_limiter.grant_acquire(grantee)
