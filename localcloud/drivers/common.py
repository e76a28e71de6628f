"""What every use-case driver needs: run or await executions, empty and count queues, read items by key."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from localcloud.emulator.cloud import LocalCloud
from localcloud.emulator.deployer import DeployedStack

POLL_INTERVAL_SEC = 0.2


def layer_stack(stacks: Mapping[str, DeployedStack], layer: str) -> DeployedStack:
    """The deployed stack of one layer (`"Workflows"`, `"Buffers"`, ...), whatever the stage's prefix."""
    found = [stack for name, stack in stacks.items() if name.endswith(f"-{layer}")]
    if len(found) != 1:
        raise LookupError(f"expected one deployed stack named *-{layer}, found {sorted(stacks)}")
    return found[0]


@dataclass(frozen=True)
class ExecutionResult:
    name: str
    status: str
    output: Any
    error: str | None
    cause: str | None
    duration_sec: float


def run_execution(
    cloud: LocalCloud, state_machine_arn: str, execution_input: Mapping[str, Any], *, name: str | None = None,
    timeout_sec: float = 120,
) -> ExecutionResult:
    """Start an execution and poll it to the end.

    Always named: moto leaves an unnamed execution's `$$.Execution.Name` null (AWS generates a
    UUID), and the workflow builds its idempotency keys from that name.
    """
    name = name or f"run-{uuid.uuid4().hex[:12]}"
    sfn = cloud.client("stepfunctions")
    started = time.monotonic()
    arn = sfn.start_execution(stateMachineArn=state_machine_arn, name=name, input=json.dumps(execution_input))[
        "executionArn"
    ]
    while True:
        description = sfn.describe_execution(executionArn=arn)
        if description["status"] != "RUNNING":
            break
        if time.monotonic() - started > timeout_sec:
            raise TimeoutError(f"execution {name} still RUNNING after {timeout_sec} s")
        time.sleep(POLL_INTERVAL_SEC)
    output = description.get("output")
    return ExecutionResult(
        name=name,
        status=description["status"],
        output=json.loads(output) if output else None,
        error=description.get("error"),
        cause=description.get("cause"),
        duration_sec=time.monotonic() - started,
    )


def wait_for_executions(
    cloud: LocalCloud, state_machine_arn: str, names: Sequence[str], *, timeout_sec: float,
) -> dict[str, ExecutionResult]:
    """Poll the named executions of a state machine until none is RUNNING; name -> result.

    One `ListExecutions` of the running ones per poll, and one `DescribeExecution` per execution
    once it ended: the emulator serves these in the process that also times the simulators' arrivals.
    """
    sfn = cloud.client("stepfunctions")
    execution_prefix = state_machine_arn.replace(":stateMachine:", ":execution:")
    deadline = time.monotonic() + timeout_sec
    results: dict[str, ExecutionResult] = {}
    while True:
        running = {
            execution["name"]
            for page in sfn.get_paginator("list_executions").paginate(
                stateMachineArn=state_machine_arn, statusFilter="RUNNING")
            for execution in page["executions"]
        }
        for name in [n for n in names if n not in results and n not in running]:
            description = sfn.describe_execution(executionArn=f"{execution_prefix}:{name}")
            if description["status"] == "RUNNING":
                continue
            output = description.get("output")
            results[name] = ExecutionResult(
                name=name,
                status=description["status"],
                output=json.loads(output) if output else None,
                error=description.get("error"),
                cause=description.get("cause"),
                duration_sec=(description["stopDate"] - description["startDate"]).total_seconds(),
            )
        if len(results) == len(names):
            return results
        if time.monotonic() > deadline:
            running = sorted(set(names) - set(results))
            late = sorted(set(names) - set(results))
            raise TimeoutError(f"{len(late)} executions still RUNNING after {timeout_sec} s: {late[:5]}")
        time.sleep(POLL_INTERVAL_SEC * 2)


def drain_queue(cloud: LocalCloud, queue_url: str) -> list[dict[str, Any]]:
    """Receive and delete every message on the queue; return their bodies parsed as JSON."""
    sqs = cloud.client("sqs")
    bodies: list[dict[str, Any]] = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def discard_messages(cloud: LocalCloud, queue_url: str) -> int:
    """Receive and delete every visible message, whatever its body (PurgeQueue works once a minute); return how many."""
    sqs = cloud.client("sqs")
    discarded = 0
    while messages := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
        discarded += len(messages)
    return discarded


def queue_depth(cloud: LocalCloud, queue_url: str) -> int:
    """Messages in a queue, visible or in flight."""
    attributes = cloud.client("sqs").get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def record_statuses(cloud: LocalCloud, table_name: str, record_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """record id -> its status item (plain strings and numbers), for the ids that have one."""
    dynamodb = cloud.client("dynamodb")
    items: dict[str, dict[str, Any]] = {}
    for start in range(0, len(record_ids), 100):
        keys = [{"pk": {"S": record_id}} for record_id in record_ids[start : start + 100]]
        request: dict[str, Any] = {table_name: {"Keys": keys, "ConsistentRead": True}}
        while request:
            answer = dynamodb.batch_get_item(RequestItems=request)
            for item in answer["Responses"].get(table_name, []):
                items[item["pk"]["S"]] = {name: next(iter(value.values())) for name, value in item.items()}
            request = answer.get("UnprocessedKeys") or {}
    return items
