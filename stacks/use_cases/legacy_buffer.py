"""Use case 4: a queue in front of a downstream too slow to be called from a workflow, and its consumer.

A legacy mainframe takes 1 request per second. A workflow (`statemachines/legacy_publish.asl.json`)
publishes records to a queue and ends; a consumer drains it at the pace the shared limiter allows (the
limiter's bucket is the same one every caller of the mainframe uses) and writes each record's outcome
to a records table. The controller reconciles the consumer's mapping (`queue_consumers`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import CfnOutput, Stack

from stacks.config import DownstreamConfig
from stacks.app_assets import lambda_code, statemachine_file
from stacks.patterns import AslStateMachine, ThrottledQueueConsumer
from stacks.patterns.monitoring import alarm_on_quiet_tenants_age_after
from stacks.patterns.secure_defaults import encrypted_table
from stacks.shared_limits_stack import downstream_tunables_key
from stacks.use_cases.base import Layer, UseCase, UseCaseContext
from throttling.core import names
from throttling.core.names import SQS_MIN_MAXIMUM_CONCURRENCY

# Five records are ~6 s of the mainframe's time at 0.8 req/s: long enough to amortise an
# invocation, short enough that one Retry-After postpones few records.
LEGACY_BATCH_SIZE = 5
# Lambda's minimum for an SQS mapping; the limiter, not concurrency, holds the rate.
LEGACY_MAX_CONCURRENCY = SQS_MIN_MAXIMUM_CONCURRENCY
# A postponed record spends one receive, and the consumer doubles its postponement with each
# receive (1 s, 2 s, 4 s, ... up to 12 h), so 20 receives need ~66 h of uninterrupted refusals
# before a healthy record reaches the dead-letter queue, and at most 20 x 12 h = 10 days in total,
# inside the queue's 14-day retention. Poison messages do not wait: the consumer sends them to the
# dead-letter queue on their first receive (or, if SQS refuses that, straight back to this queue,
# so their 20 receives take seconds).
LEGACY_MAX_RECEIVE_COUNT = 20
# Seconds the timeout adds for the last status write and the batch's visibility changes.
FINISHING_RESERVE_SEC = 3


def consumer_timeout_sec(downstream: DownstreamConfig, *, batch_size: int, max_concurrency: int) -> int:
    """A timeout that fits a whole batch when every record meets the worst wait at the limiter.

    With `max_concurrency` batches taking turns, a record waits up to `max_concurrency` emission
    intervals of the planned rate for its token, then up to the downstream's timeout for the call.
    A lower rate tuned in SSM lengthens the waits; the consumer then postpones what no longer fits.
    """
    worst_per_record_sec = max_concurrency / downstream.planned_rate_per_sec + downstream.timeout_sec
    return min(900, math.ceil(batch_size * worst_per_record_sec) + FINISHING_RESERVE_SEC)


def quiet_tenant_max_wait_sec(downstream: DownstreamConfig, *, batch_size: int, max_concurrency: int) -> int:
    """The longest a quiet tenant's record should wait in the fair queue, whatever a noisy tenant queued.

    A fair queue hands a quiet tenant's messages out first, so ahead of its record are at most the
    batches in flight when it arrives (`max_concurrency` of `batch_size` records), then, since the
    batches share the limiter, its own batch and those running beside it (as many again), each record
    one emission interval of the planned rate.
    """
    return math.ceil(2 * max_concurrency * batch_size / downstream.planned_rate_per_sec)


@dataclass(frozen=True)
class LegacyBufferProps:
    """:param downstream: the configured downstream the consumer delivers records to (its limits and tunables)."""

    downstream: str


class LegacyBuffer(UseCase[LegacyBufferProps]):
    """The records table, the queue and its consumer, and the workflow that publishes to it."""

    layer = Layer.BUFFERS

    def build(self, scope: Stack, context: UseCaseContext, props: LegacyBufferProps) -> None:
        config, shared_limits, removal_policy = context.config, context.shared_limits, context.removal_policy
        legacy = context.unauthenticated(props.downstream, handler="the legacy consumer")

        # One item per record: {pk: record_id, status: delivered|failed, timestamps, error}; idle items expire.
        self.records_table = encrypted_table(
            scope, "LegacyRecordsTable", removal_policy=removal_policy, ttl_attribute="expires_at"
        )

        self.consumer = ThrottledQueueConsumer(
            scope,
            "LegacyConsumer",
            code=lambda_code(),
            handler="handlers.legacy_consumer.handler",
            service=f"{legacy.name}-consumer",
            description=f"Delivers buffered records to {legacy.name} at the shared limiter's pace",
            log_retention=context.log_retention,
            removal_policy=removal_policy,
            function_timeout_sec=consumer_timeout_sec(
                legacy, batch_size=LEGACY_BATCH_SIZE, max_concurrency=LEGACY_MAX_CONCURRENCY
            ),
            batch_size=LEGACY_BATCH_SIZE,
            max_concurrency=LEGACY_MAX_CONCURRENCY,
            reserve_concurrency=config.reserve_concurrency,
            max_receive_count=LEGACY_MAX_RECEIVE_COUNT,
            environment={
                **shared_limits.caller_environment(legacy, tunables_cache_sec=config.tunables_cache_sec),
                names.ENV_RECORDS_TABLE_NAME: self.records_table.table_name,
            },
        )
        self.downstream = legacy.name
        # The queue is a fair queue: the API sends each record with its tenant as MessageGroupId, so SQS
        # serves a quiet tenant's records ahead of a noisy one's backlog (a standard queue; no setting).
        alarm_on_quiet_tenants_age_after(
            self.consumer.queue,
            after_sec=quiet_tenant_max_wait_sec(
                legacy, batch_size=LEGACY_BATCH_SIZE, max_concurrency=LEGACY_MAX_CONCURRENCY),
            reason=f"the batches in flight, then its own and those beside it, {LEGACY_BATCH_SIZE} records each,"
                   f" at {legacy.planned_rate_per_sec:g} req/s",
        )
        consumer = self.consumer.function
        # As `grant_caller`, in the order the deployed policy has its statements.
        shared_limits.rate_limiter.grant_acquire(consumer)
        shared_limits.tunables.grant_read(consumer, downstream_tunables_key(legacy))
        self.records_table.grant(consumer, "dynamodb:UpdateItem")

        # The producer lives next to its buffer: the queue is this layer's contract with the workflow
        # (it may only send to it), and a change of either (a FIFO queue, batched sends) ships as one.
        self.publish = AslStateMachine(
            scope,
            "LegacyPublish",
            definition_file=statemachine_file("legacy_publish.asl.json"),
            definition_substitutions={"LegacyQueueUrl": self.consumer.queue.queue_url,
                                      "DefaultTenant": names.DEFAULT_TENANT},
            log_retention=context.log_retention,
            removal_policy=removal_policy,
        )
        self.consumer.queue.grant_send_messages(self.publish.role)

        CfnOutput(scope, "LegacyPublishStateMachineArn", value=self.publish.state_machine.state_machine_arn)
        CfnOutput(scope, "LegacyQueueUrl", value=self.consumer.queue.queue_url)
        CfnOutput(scope, "LegacyQueueArn", value=self.consumer.queue.queue_arn)
        CfnOutput(scope, "LegacyDeadLetterQueueUrl", value=self.consumer.dead_letter_queue.queue_url)
        CfnOutput(scope, "LegacyDeadLetterQueueArn", value=self.consumer.dead_letter_queue.queue_arn)
        CfnOutput(scope, "LegacyConsumerName", value=consumer.function_name)
        CfnOutput(scope, "LegacyRecordsTableName", value=self.records_table.table_name)

    @property
    def queue_consumers(self) -> Mapping[str, ThrottledQueueConsumer]:
        return {self.downstream: self.consumer}
