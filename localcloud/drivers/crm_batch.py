"""Use case 1, the CRM batch e-mail: seed a segment, run the workflow, and what the CRM saw."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from localcloud.drivers.common import ExecutionResult, drain_queue, layer_stack, run_execution
from localcloud.emulator.cloud import LocalCloud
from localcloud.emulator.deployer import DeployedStack
from localcloud.referee.downstream_simulator import DownstreamSimulator


def crm_batch_outputs(stacks: Mapping[str, DeployedStack]) -> dict[str, str]:
    """The workflow stack's outputs the CRM batch needs: state machine ARN, segments table, dead-letter queue URL."""
    workflows = layer_stack(stacks, "Workflows")
    return {
        "state_machine_arn": workflows.outputs["CrmBatchEmailStateMachineArn"],
        "segments_table": workflows.outputs["SegmentsTableName"],
        "dead_letter_queue_url": workflows.outputs["CrmBatchEmailDeadLetterQueueUrl"],
    }


def seed_segment(cloud: LocalCloud, table_name: str, segment_id: str, user_ids: Sequence[str]) -> None:
    """Write one segment item in the shape the workflow reads: `{pk: S, user_ids: L of S}`."""
    cloud.client("dynamodb").put_item(
        TableName=table_name,
        Item={"pk": {"S": segment_id}, "user_ids": {"L": [{"S": user_id} for user_id in user_ids]}},
    )


@dataclass(frozen=True)
class CrmRun:
    """One run of a CRM workflow: how its execution ended, and what the CRM's referee saw meanwhile."""

    execution: ExecutionResult
    crm_stats: dict[str, Any]


def run(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], crm: DownstreamSimulator, *, users: int = 30) -> CrmRun:
    """Seed a segment of `users` users and run the workflow once, against a CRM whose counts start at zero."""
    outputs = crm_batch_outputs(stacks)
    segment_id = f"demo-{uuid.uuid4().hex[:8]}"
    seed_segment(cloud, outputs["segments_table"], segment_id, [f"user-{i:03d}" for i in range(users)])
    drain_queue(cloud, outputs["dead_letter_queue_url"])
    crm.reset()
    execution = run_execution(cloud, outputs["state_machine_arn"], {"segment_id": segment_id})
    return CrmRun(execution, crm.stats())
