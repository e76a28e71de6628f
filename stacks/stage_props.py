"""The stage's config translated once into what the patterns take (they never read the app's config)."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs

from stacks.config import LOG_RETENTION_DAYS_ALLOWED, AppConfig


def log_retention(config: AppConfig) -> logs.RetentionDays:
    """The `RetentionDays` member for the stage's `log_retention_days`.

    jsii enums carry names, not day counts, so the members are matched by order with the periods
    CloudWatch Logs accepts; `strict=True` fails the synth if a CDK upgrade adds a member.
    """
    members = [m for m in logs.RetentionDays if m.name != "INFINITE"]
    by_days = dict(zip(LOG_RETENTION_DAYS_ALLOWED, members, strict=True))
    if config.log_retention_days not in by_days:
        raise ValueError(f"log_retention_days must be one of {list(by_days)}, got {config.log_retention_days}")
    return by_days[config.log_retention_days]


def removal_policy(config: AppConfig) -> RemovalPolicy:
    """What a delete of the stack does to its stateful resources: `destroy` for a dev stage, otherwise kept."""
    return RemovalPolicy.DESTROY if config.removal_policy == "destroy" else RemovalPolicy.RETAIN
