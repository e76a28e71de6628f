"""Use case 4, the legacy integration: publish records through the buffer and wait for the mainframe to take them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from localcloud.drivers.common import (
    ExecutionResult,
    POLL_INTERVAL_SEC,
    discard_messages,
    layer_stack,
    queue_depth,
    record_statuses,
    run_execution,
)
from localcloud.emulator.cloud import LocalCloud
from localcloud.emulator.deployer import DeployedStack
from localcloud.referee.downstream_simulator import DownstreamSimulator


def legacy_outputs(stacks: Mapping[str, DeployedStack]) -> dict[str, str]:
    """The buffers stack's outputs use case 4 needs: publishing workflow, queues, consumer, records table."""
    buffers = layer_stack(stacks, "Buffers")
    return {
        "state_machine_arn": buffers.outputs["LegacyPublishStateMachineArn"],
        "queue_url": buffers.outputs["LegacyQueueUrl"],
        "queue_arn": buffers.outputs["LegacyQueueArn"],
        "dead_letter_queue_url": buffers.outputs["LegacyDeadLetterQueueUrl"],
        "consumer_name": buffers.outputs["LegacyConsumerName"],
        "records_table": buffers.outputs["LegacyRecordsTableName"],
    }


def legacy_records(count: int, *, prefix: str | None = None) -> list[dict[str, Any]]:
    """`count` records in the shape the publishing workflow takes: `{record_id, payload}`."""
    prefix = prefix or f"rec-{uuid.uuid4().hex[:8]}"
    return [{"record_id": f"{prefix}-{i:03d}", "payload": {"account": f"ACC{i:05d}", "amount_cents": 100 * i}}
            for i in range(count)]


def wait_for_delivery(
    cloud: LocalCloud, table_name: str, record_ids: Sequence[str], *, timeout_sec: float
) -> dict[str, dict[str, Any]]:
    """Poll the records table until every record is `delivered` or the time is up; return the statuses."""
    deadline = time.monotonic() + timeout_sec
    while True:
        statuses = record_statuses(cloud, table_name, record_ids)
        delivered = sum(1 for item in statuses.values() if item.get("status") == "delivered")
        if delivered == len(record_ids) or time.monotonic() > deadline:
            return statuses
        time.sleep(POLL_INTERVAL_SEC)


@dataclass(frozen=True)
class LegacyRun:
    """One publishing run: its execution, each record's status item, the dead letters, what the mainframe saw."""

    execution: ExecutionResult
    statuses: dict[str, dict[str, Any]]
    dead_letters: int
    mainframe_stats: dict[str, Any]

    @property
    def delivered(self) -> int:
        return sum(1 for item in self.statuses.values() if item.get("status") == "delivered")


def run(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], mainframe: DownstreamSimulator, *,
        records: int = 10, tenant: str | None = None) -> LegacyRun:
    """Publish `records` records through the workflow (for `tenant`, or without one) and wait until the consumer
    delivered them (or time is up)."""
    outputs = legacy_outputs(stacks)
    discard_messages(cloud, outputs["dead_letter_queue_url"])
    mainframe.reset()
    batch = legacy_records(records, prefix=f"demo-{uuid.uuid4().hex[:8]}")
    execution = run_execution(cloud, outputs["state_machine_arn"],
                              {"records": batch, **({"tenant": tenant} if tenant is not None else {})})
    if execution.status != "SUCCEEDED":
        return LegacyRun(execution, {}, queue_depth(cloud, outputs["dead_letter_queue_url"]), mainframe.stats())
    # The consumer delivers at the limiter's pace (0.8 req/s in dev): allow twice that, plus a cold start.
    statuses = wait_for_delivery(cloud, outputs["records_table"], [r["record_id"] for r in batch],
                                 timeout_sec=2.5 * records / max(0.1, mainframe.profile.rate_per_sec) + 15)
    return LegacyRun(execution, statuses, queue_depth(cloud, outputs["dead_letter_queue_url"]), mainframe.stats())
