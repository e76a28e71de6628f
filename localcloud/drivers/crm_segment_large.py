"""Use case 1 for a large segment: a CSV export in S3, a Distributed Map, and what the CRM saw."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from localcloud.drivers.common import drain_queue, layer_stack, run_execution
from localcloud.drivers.crm_batch import CrmRun
from localcloud.emulator.cloud import LocalCloud
from localcloud.emulator.deployer import DeployedStack
from localcloud.referee.downstream_simulator import DownstreamSimulator


def crm_segment_large_outputs(stacks: Mapping[str, DeployedStack]) -> dict[str, str]:
    """What the large-segment path needs: its state machine, the segments bucket, the CRM batch's dead-letter queue."""
    workflows = layer_stack(stacks, "Workflows")
    return {
        "state_machine_arn": workflows.outputs["CrmSegmentLargeStateMachineArn"],
        "bucket": workflows.outputs["SegmentsBucketName"],
        "dead_letter_queue_url": workflows.outputs["CrmBatchEmailDeadLetterQueueUrl"],
    }


def seed_segment_object(cloud: LocalCloud, bucket: str, user_ids: Sequence[str], *, name: str | None = None) -> str:
    """Write a segment export as the workflow reads it (CSV, header `user_id`) under `segments/`; return its key."""
    key = f"segments/{name or uuid.uuid4().hex[:8]}.csv"
    body = "\n".join(["user_id", *user_ids]) + "\n"
    cloud.client("s3").put_object(Bucket=bucket, Key=key, Body=body.encode(), ContentType="text/csv")
    return key


def run(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], crm: DownstreamSimulator, *, users: int = 40) -> CrmRun:
    """Export a segment of `users` users to S3 and run the workflow once (one child execution per user)."""
    outputs = crm_segment_large_outputs(stacks)
    key = seed_segment_object(cloud, outputs["bucket"], [f"user-{i:04d}" for i in range(users)],
                              name=f"demo-{uuid.uuid4().hex[:8]}")
    drain_queue(cloud, outputs["dead_letter_queue_url"])
    crm.reset()
    execution = run_execution(cloud, outputs["state_machine_arn"], {"segment_key": key},
                              timeout_sec=60 + 3 * users / crm.profile.rate_per_sec)
    return CrmRun(execution, crm.stats())
