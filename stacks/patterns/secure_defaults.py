"""The storage every layer builds with the same defaults: encrypted, recoverable, TLS-only.

One place for them, so a table, a dead-letter queue or a bucket cannot be added without point-in-time
recovery or encryption, and cdk-nag's findings on dead-letter queues are answered once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct


def encrypted_table(
    scope: Construct,
    construct_id: str,
    *,
    removal_policy: RemovalPolicy,
    partition_key: str = "pk",
    ttl_attribute: str | None = None,
    table_props: Mapping[str, Any] | None = None,
) -> dynamodb.Table:
    """A table keyed by one string attribute: on demand, encrypted, point-in-time recoverable.

    :param ttl_attribute: the epoch-seconds attribute DynamoDB expires items by; default none.
    :param table_props: other `aws_dynamodb.Table` keyword arguments, or overrides of these defaults
        (e.g. a customer-managed key: `{"encryption": CUSTOMER_MANAGED, "encryption_key": key}`).
    """
    defaults: dict[str, Any] = dict(
        partition_key=dynamodb.Attribute(name=partition_key, type=dynamodb.AttributeType.STRING),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption=dynamodb.TableEncryption.AWS_MANAGED,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        time_to_live_attribute=ttl_attribute,
        removal_policy=removal_policy,
    )
    return dynamodb.Table(scope, construct_id, **{**defaults, **(table_props or {})})


def dead_letter_queue(
    scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy, holds: str
) -> sqs.Queue:
    """An encrypted, TLS-only queue that keeps what failed for the longest SQS allows (14 days).

    :param holds: what lands here, e.g. "the users the CRM batch could not e-mail"; it completes the
        reason cdk-nag's "no DLQ of its own" finding is acknowledged with.
    """
    queue = sqs.Queue(
        scope,
        construct_id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=Duration.days(14),
        removal_policy=removal_policy,
    )
    Validations.of(queue).acknowledge(
        Acknowledgment(
            id="AwsSolutions::AwsSolutions-SQS3",
            reason=f"this is a dead-letter queue ({holds}); a dead-letter queue of a dead-letter queue would only"
            " move them one step further from the operator",
        )
    )
    return queue


def encrypted_bucket(
    scope: Construct,
    construct_id: str,
    *,
    removal_policy: RemovalPolicy,
    audited_by: str,
    expire_after_days: int | None = None,
) -> s3.Bucket:
    """A private bucket: S3-managed encryption, TLS only, every form of public access blocked.

    No `auto_delete_objects` and no `event_bridge_enabled=True`: both add a Lambda-backed custom resource.

    :param audited_by: how reads and writes of its objects are traced instead of server access logs,
        e.g. "each object is read by the execution it starts"; it completes the reason cdk-nag's
        "no access logs" finding is acknowledged with.
    :param expire_after_days: objects are deleted this many days after they are written; default never.
    """
    if expire_after_days is not None and expire_after_days < 1:
        raise ValueError(f"expire_after_days must be None (keep) or >= 1, got {expire_after_days}")
    bucket = s3.Bucket(
        scope,
        construct_id,
        encryption=s3.BucketEncryption.S3_MANAGED,
        enforce_ssl=True,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(expire_after_days))] if expire_after_days else None,
        removal_policy=removal_policy,
    )
    Validations.of(bucket).acknowledge(
        Acknowledgment(
            id="AwsSolutions::AwsSolutions-S1",
            reason=f"{audited_by}; CloudTrail data events, not a log bucket, are the place to audit object access"
            " if a stage needs it",
        )
    )
    return bucket
