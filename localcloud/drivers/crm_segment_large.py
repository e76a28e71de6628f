"""Use case 1 for a large segment: a CSV export in S3, a Distributed Map of batches, and what the CRM saw."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from localcloud.drivers.common import ExecutionResult, drain_queue, layer_stack, run_execution
from localcloud.emulator.cloud import LocalCloud
from localcloud.emulator.deployer import DeployedStack
from localcloud.referee.downstream_simulator import DownstreamSimulator


@dataclass(frozen=True)
class SegmentRun:
    """One run of the large-segment workflow: its execution, what each batch did with its users, what the CRM saw.

    `batches` are the results ResultWriter wrote, by status (`SUCCEEDED`, `FAILED`), each entry one child
    execution; `users` adds up the succeeded batches' outputs (`users`, `sent`, `dead_lettered`, `rounds`)
    and counts the users of failed batches as `in_failed_batches`.
    """

    execution: ExecutionResult
    crm_stats: dict[str, Any]
    batches: dict[str, list[dict[str, Any]]]
    users: dict[str, int]


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


def results_written(cloud: LocalCloud, results: Mapping[str, str]) -> dict[str, list[dict[str, Any]]]:
    """The run's results as ResultWriter left them: status -> the child executions listed in the manifest's files."""
    s3 = cloud.client("s3")
    manifest = json.loads(s3.get_object(Bucket=results["Bucket"], Key=results["Key"])["Body"].read())
    return {status: [entry for f in files for entry in json.loads(
        s3.get_object(Bucket=manifest["DestinationBucket"], Key=f["Key"])["Body"].read())]
        for status, files in manifest["ResultFiles"].items()}


def users_of(batches: Mapping[str, list[dict[str, Any]]]) -> dict[str, int]:
    """What the batches did with their users, added up from their outputs (and their inputs, for failed ones)."""
    totals = {"users": 0, "sent": 0, "dead_lettered": 0, "rounds": 0, "in_failed_batches": 0}
    for entry in batches.get("SUCCEEDED", []):
        output = json.loads(entry["Output"])
        for name in ("users", "sent", "dead_lettered", "rounds"):
            totals[name] += output[name]
    for entry in batches.get("FAILED", []):
        failed_users = len(json.loads(entry["Input"])["Items"])
        totals["users"] += failed_users
        totals["in_failed_batches"] += failed_users
    return totals


def run_segment(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], crm: DownstreamSimulator,
                user_ids: Sequence[str], *, name: str | None = None) -> SegmentRun:
    """Export `user_ids` to S3 and run the workflow once on them, against the CRM as it is (reset it first to count
    from zero: a test sets its profile after that)."""
    outputs = crm_segment_large_outputs(stacks)
    key = seed_segment_object(cloud, outputs["bucket"], user_ids, name=name)
    # Batches take one request each, and a deferred recipient one wait and one more request: a generous bound.
    execution = run_execution(cloud, outputs["state_machine_arn"], {"segment_key": key},
                              timeout_sec=60 + 3 * len(user_ids) / crm.profile.rate_per_sec)
    results = execution.output.get("results") if execution.status == "SUCCEEDED" else None
    batches = results_written(cloud, results) if results else {}
    return SegmentRun(execution, crm.stats(), batches, users_of(batches))


def run(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], crm: DownstreamSimulator, *,
        users: int = 120) -> SegmentRun:
    """Export a segment of `users` users to S3 and run the workflow once (one child execution per batch)."""
    drain_queue(cloud, crm_segment_large_outputs(stacks)["dead_letter_queue_url"])
    crm.reset()
    return run_segment(cloud, stacks, crm, [f"user-{i:04d}" for i in range(users)],
                       name=f"demo-{uuid.uuid4().hex[:8]}")
