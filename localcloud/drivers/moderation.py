"""Use case 3, UGC moderation: uploads arrive at once, each moderated by three models through the shared limiter,
each call holding a lease of the model's in-flight semaphore."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from localcloud.drivers.common import ExecutionResult, layer_stack, record_statuses, wait_for_executions
from localcloud.emulator.cloud import LocalCloud
from localcloud.emulator.deployer import DeployedStack
from localcloud.referee.downstream_simulator import DownstreamSimulator


def moderation_outputs(stacks: Mapping[str, DeployedStack]) -> dict[str, str]:
    """What use case 3 needs from the workflow stack's outputs."""
    workflows = layer_stack(stacks, "Workflows")
    return {
        "state_machine_arn": workflows.outputs["UgcModerationStateMachineArn"],
        "bucket": workflows.outputs["UploadsBucketName"],
        "results_table": workflows.outputs["ModerationResultsTableName"],
        "topic_arn": workflows.outputs["ModerationResultsTopicArn"],
        "decider_name": workflows.outputs["ModerationDeciderName"],
        "semaphore_table": layer_stack(stacks, "SharedLimits").outputs["SemaphoreTableName"],
        "semaphore_name": workflows.outputs["AiModelSemaphoreName"],
        "lease_sec": workflows.outputs["AiModelLeaseSec"],
    }


def model_leases(cloud: LocalCloud, outputs: Mapping[str, str]) -> dict[str, float]:
    """The leases the model's in-flight semaphore holds now: owner (`<execution>/<model>`) -> expiry, epoch seconds."""
    item = cloud.client("dynamodb").get_item(TableName=outputs["semaphore_table"], ConsistentRead=True,
                                             Key={"pk": {"S": outputs["semaphore_name"]}}).get("Item", {})
    return {owner: float(expiry["N"]) for owner, expiry in item.get("leases", {}).get("M", {}).items()}


def upload_created_event(
    bucket: str, key: str, *, account: str = "123456789012", region: str = "us-east-1"
) -> dict[str, Any]:
    """The `Object Created` event S3 sends to EventBridge for an upload, as the rule hands it to the workflow."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Object Created",
        "source": "aws.s3",
        "account": account,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": region,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"version": "0", "bucket": {"name": bucket}, "object": {"key": key}, "reason": "PutObject"},
    }


def start_moderations(cloud: LocalCloud, outputs: Mapping[str, str], keys: Sequence[str]) -> list[str]:
    """Upload each key and start its moderation with the event the rule would send, all at once; the execution names.

    moto's EventBridge does not deliver to Step Functions targets, so the rule's delivery is done here
    (one execution per object, as the rule does), concurrently, as a burst of uploads would arrive.
    """
    s3 = cloud.client("s3")
    sfn = cloud.client("stepfunctions")
    for key in keys:
        s3.put_object(Bucket=outputs["bucket"], Key=key, Body=f"user content {key}".encode())
    names = [f"upload-{uuid.uuid4().hex[:12]}" for _ in keys]

    def start(name_key: tuple[str, str]) -> None:
        name, key = name_key
        event = upload_created_event(outputs["bucket"], key, account=cloud.account_id, region=cloud.region)
        sfn.start_execution(stateMachineArn=outputs["state_machine_arn"], name=name, input=json.dumps(event))

    with ThreadPoolExecutor(max_workers=max(1, len(keys))) as pool:
        list(pool.map(start, zip(names, keys)))
    return names


def moderation_results(cloud: LocalCloud, table_name: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """object key -> its stored result (decision, verdicts parsed from JSON, bucket, execution name)."""
    items = record_statuses(cloud, table_name, keys)
    return {key: {**item, "verdicts": json.loads(item["verdicts"])} for key, item in items.items()}


@dataclass(frozen=True)
class ModerationRun:
    """One burst of uploads: how each moderation ended, what the model API's referee saw (its requests in flight
    at every instant among them), and the leases its semaphore still held afterwards."""

    uploads: int
    results: dict[str, ExecutionResult]
    model_stats: dict[str, Any]
    in_flight_timeline: list[tuple[float, int]]
    leases_left: dict[str, float]

    @property
    def most_in_flight(self) -> int:
        return max(count for _, count in self.in_flight_timeline)


def run(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], model: DownstreamSimulator, *,
        uploads: int = 10) -> ModerationRun:
    """`uploads` objects arrive at once; await every moderation to its end.

    The first upload is one the toxicity model is sure is hateful (rejected), the second one the nudity
    model finds borderline (a human reviews it); the models score the others low (approved).
    """
    outputs = moderation_outputs(stacks)
    model.reset()
    keys = [f"demo-{uuid.uuid4().hex[:8]}/upload-{i:03d}.jpg" for i in range(uploads)]
    chosen = ({"toxicity": {"hate": 0.97}}, {"nudity": {"suggestive": 0.55}})
    model.set_profile(model.profile.merged_with({"content_scores": dict(zip(keys, chosen))}))
    names = start_moderations(cloud, outputs, keys)
    # Each execution ends within the slot's wait budget (at most 133 s per wait) past the model's own pace.
    results = wait_for_executions(cloud, outputs["state_machine_arn"], names,
                                  timeout_sec=150 + 3 * uploads / model.profile.rate_per_sec)
    return ModerationRun(uploads, results, model.stats(), model.in_flight_timeline(), model_leases(cloud, outputs))
