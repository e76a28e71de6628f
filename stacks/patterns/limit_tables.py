"""The DynamoDB tables behind the shared limits: a sharded rate limiter, lease semaphores and circuit breakers.

All three are on-demand, encrypted, point-in-time recoverable, and keyed by one string `pk`; the
item layouts live with their adapters in `lambdas/throttling/adapters/dynamodb_*.py`. Each construct
grants exactly the actions one side needs, and exposes the metrics that tell whether a limit is
biting (`ConditionalCheckFailedRequests` is a denied acquire) or the table itself is throttled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from .secure_defaults import encrypted_table

TTL_ATTRIBUTE = "expires_at"


class _LimitTable(Construct):
    """One on-demand table keyed by `pk`, with TTL on `expires_at`.

    :param removal_policy: of the table; default RETAIN (a limit's state outlives a stack update gone wrong).
    :param existing_table: a table of yours to keep the state in instead (its key must be a string `pk`,
        and TTL on `expires_at` keeps idle items from piling up); no table is created then.
    :param table_props: other `aws_dynamodb.Table` keyword arguments or overrides of the defaults
        (on demand, AWS-managed encryption, point-in-time recovery); not with `existing_table`.
    """

    def __init__(self, scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
                 existing_table: dynamodb.ITable | None = None, table_props: Mapping[str, Any] | None = None) -> None:
        super().__init__(scope, construct_id)
        if existing_table is not None and table_props:
            raise ValueError(f"table_props {sorted(table_props)} were given with existing_table: the table exists"
                             " already; configure it where it is created, or drop existing_table")
        self.table: dynamodb.ITable = existing_table or encrypted_table(
            self, "Table", removal_policy=removal_policy, ttl_attribute=TTL_ATTRIBUTE, table_props=table_props)

    def metric_denied(self, **props) -> cloudwatch.Metric:
        """Conditional writes that failed: each one is an acquire the limit refused.

        DynamoDB publishes `ConditionalCheckFailedRequests` per table only (no `Operation` dimension):
        a graph asking for one per operation stays empty.
        """
        return self.table.metric("ConditionalCheckFailedRequests", statistic="Sum", period=Duration.minutes(1),
                                 **props)

    def metric_throttled(self, **props) -> cloudwatch.Metric:
        """Requests DynamoDB itself throttled: a hot partition, the reason to add shards."""
        return self.table.metric_throttled_requests_for_operations(
            operations=[dynamodb.Operation.UPDATE_ITEM, dynamodb.Operation.GET_ITEM], period=Duration.minutes(1),
            **props,
        )

    def metric_consumed_writes(self, **props) -> cloudwatch.Metric:
        return self.table.metric_consumed_write_capacity_units(period=Duration.minutes(1), **props)


class RateLimiterTable(_LimitTable):
    """GCRA state, one item per shard of each logical bucket (`<bucket>#<shard>`), idle shards expiring by TTL."""

    def grant_acquire(self, grantee: iam.IGrantable) -> iam.Grant:
        """One conditional UpdateItem per attempt; no read is ever needed."""
        return self.table.grant(grantee, "dynamodb:UpdateItem")


class SemaphoreTable(_LimitTable):
    """One item per semaphore: a map of owner -> lease expiry and a count, so one UpdateItem takes a lease."""

    def grant_acquire_release(self, grantee: iam.IGrantable) -> iam.Grant:
        """Take, renew and release leases, and reclaim expired ones on contention (which reads the item)."""
        return self.table.grant(grantee, "dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:PutItem")

    def grant_leases_from_workflow(self, grantee: iam.IGrantable) -> iam.Grant:
        """A state machine taking and releasing leases with `dynamodb:updateItem` tasks, and writing a semaphore's
        first item with `dynamodb:putItem` (no reads: its tasks never look at the item)."""
        return self.table.grant(grantee, "dynamodb:UpdateItem", "dynamodb:PutItem")

    def grant_reclaim(self, grantee: iam.IGrantable) -> iam.Grant:
        """The cleanup sweep: scan for semaphores and remove leases whose owners died."""
        return self.table.grant(grantee, "dynamodb:Scan", "dynamodb:GetItem", "dynamodb:UpdateItem")


class CircuitBreakerTable(_LimitTable):
    """One item per breaker; workflows branch on it with a `dynamodb:getItem` task and no Lambda."""

    def grant_read_state(self, grantee: iam.IGrantable) -> iam.Grant:
        return self.table.grant(grantee, "dynamodb:GetItem")

    def grant_update(self, grantee: iam.IGrantable) -> iam.Grant:
        """Record outcomes and move the breaker (optimistic writes guarded by a version)."""
        return self.table.grant(grantee, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
