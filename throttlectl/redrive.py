"""Move dead letters back to the queue they came from, once their cause is fixed.

Two ways, same result (the messages are back in the source queue with a fresh receive count, the
consumer delivers them at the limiter's pace):
- `move-task`: SQS's own message move task (`StartMessageMoveTask`), polled for progress. What a
  real account should use: SQS moves the messages server-side. The task always names its
  destination: without one SQS returns each message to the queue it moved it from, and a message a
  consumer sent to its dead-letter queue itself (the legacy consumer's poison messages) has none.
- `copy`: receive a batch from the dead-letter queue, send it to the source with its body and
  message attributes (and FIFO group/deduplication ids), delete what was sent; repeat. For
  endpoints without move tasks: moto 5.2 answers `StartMessageMoveTask` with a 500
  (NotImplementedError), so against the emulator `auto` copies.
A message whose send failed stays in the dead-letter queue and becomes visible again after the
visibility timeout of the receive.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from throttlectl.exceptions import AwsFailure, NotFound, Refused
from throttlectl.status import QueueRow

__all__ = ["RedrivePlan", "RedriveResult", "plan_redrive", "redrive_copy", "redrive_move_task", "resolve_queue"]

RECEIVE_VISIBILITY_SEC = 60
_FINISHED = {"COMPLETED", "CANCELLED", "FAILED"}


@dataclass(frozen=True)
class RedrivePlan:
    dead_letter_queue: QueueRow
    target: QueueRow
    approximate_count: int


@dataclass(frozen=True)
class RedriveResult:
    method: str
    moved: int
    failed: int
    task_handle: str | None = None


def resolve_queue(rows: tuple[QueueRow, ...], ident: str) -> QueueRow:
    """A queue by label (`LegacyConsumerDeadLetterQueue`), name, URL or ARN; case-insensitive label match."""
    exact = [r for r in rows if ident in (r.name, r.url, r.arn)]
    if exact:
        return exact[0]
    by_label = [r for r in rows if r.label.lower() == ident.lower()]
    if len(by_label) == 1:
        return by_label[0]
    if len(by_label) > 1:
        raise Refused(f"{ident!r} names {len(by_label)} queues: {', '.join(r.name for r in by_label)}; give the name")
    known = ", ".join(r.label for r in rows) or "none"
    raise NotFound(f"no queue {ident!r} in this stage; queues: {known}")


def plan_redrive(rows: tuple[QueueRow, ...], ident: str, to: str | None = None) -> RedrivePlan:
    """Which dead-letter queue to empty into which queue.

    QUEUE may be the dead-letter queue or the queue it serves. The target is the only queue whose
    redrive policy points at the dead-letter queue, or `to`.
    """
    queue = resolve_queue(rows, ident)
    if queue.role != "dead-letter" and queue.dead_letter_queue:
        dead_letter_queue = resolve_queue(rows, queue.dead_letter_queue)
    elif queue.role == "dead-letter":
        dead_letter_queue = queue
    else:
        raise Refused(f"{queue.label} is not a dead-letter queue and has none; nothing to redrive")
    if to is not None:
        target = resolve_queue(rows, to)
    elif len(dead_letter_queue.sources) == 1:
        target = resolve_queue(rows, dead_letter_queue.sources[0])
    elif dead_letter_queue.sources:
        raise Refused(
            f"{dead_letter_queue.label} serves {len(dead_letter_queue.sources)} queues "
            f"({', '.join(dead_letter_queue.sources)}); choose one with --to"
        )
    else:
        raise NotFound(
            f"no queue sends its dead letters to {dead_letter_queue.label} (its messages come from elsewhere, "
            f"e.g. a workflow's Catch); give the queue to move them to with --to"
        )
    if target.url == dead_letter_queue.url:
        raise Refused(f"{target.label} cannot be redriven into itself")
    return RedrivePlan(dead_letter_queue, target, dead_letter_queue.visible)


def redrive_copy(
    sqs: Any,
    plan: RedrivePlan,
    *,
    max_messages: int | None = None,
    progress: Callable[[int, int, int], None] = lambda moved, failed, total: None,
    wait_sec: int = 1,
) -> RedriveResult:
    """Receive, send, delete in batches of 10 until the dead-letter queue is empty or `max_messages` moved.

    Stops after the count it started with (or `max_messages`), so messages that die again while
    it runs are not cycled for ever. `progress(moved, failed, total)` is called after each batch.
    """
    total = plan.approximate_count if max_messages is None else max_messages
    fifo = plan.target.name.endswith(".fifo")
    moved = failed = 0
    empty_receives = 0
    while moved + failed < total:
        batch = min(10, total - moved - failed)
        messages = sqs.receive_message(
            QueueUrl=plan.dead_letter_queue.url,
            MaxNumberOfMessages=batch,
            VisibilityTimeout=RECEIVE_VISIBILITY_SEC,
            WaitTimeSeconds=wait_sec,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            empty_receives += 1
            if empty_receives >= 2:  # a short poll can miss messages; two empty long polls do not
                break
            continue
        empty_receives = 0
        entries = [_send_entry(str(index), message, fifo) for index, message in enumerate(messages)]
        sent = sqs.send_message_batch(QueueUrl=plan.target.url, Entries=entries)
        ok = {entry["Id"] for entry in sent.get("Successful", [])}
        failed += len(messages) - len(ok)
        if ok:
            deleted = sqs.delete_message_batch(
                QueueUrl=plan.dead_letter_queue.url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                         for i, m in enumerate(messages) if str(i) in ok],
            )
            # Sent but not deleted: it will be delivered twice; the consumers are idempotent by record id.
            moved += len(ok)
            if deleted.get("Failed"):
                raise AwsFailure(
                    f"{len(deleted['Failed'])} messages were copied to {plan.target.label} but could not be deleted "
                    f"from {plan.dead_letter_queue.label}: {deleted['Failed'][0].get('Message', '')}; they will be "
                    f"delivered twice"
                )
        progress(moved, failed, total)
    return RedriveResult("copy", moved, failed)


def redrive_move_task(
    sqs: Any,
    plan: RedrivePlan,
    *,
    progress: Callable[[int, int, int], None] = lambda moved, failed, total: None,
    poll_sec: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    wait: bool = True,
) -> RedriveResult:
    """Start an SQS message move task and follow it until it finishes (unless `wait` is False)."""
    handle = sqs.start_message_move_task(
        SourceArn=plan.dead_letter_queue.arn, DestinationArn=plan.target.arn
    )["TaskHandle"]
    if not wait:
        return RedriveResult("move-task", 0, 0, handle)
    while True:
        tasks = sqs.list_message_move_tasks(SourceArn=plan.dead_letter_queue.arn, MaxResults=1).get("Results", [])
        task = next((t for t in tasks if t.get("TaskHandle") in (handle, None)), tasks[0] if tasks else {})
        moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
        total = int(task.get("ApproximateNumberOfMessagesToMove", plan.approximate_count))
        progress(moved, 0, total)
        status = task.get("Status", "RUNNING")
        if status in _FINISHED:
            if status != "COMPLETED":
                raise AwsFailure(
                    f"message move task {status.lower()} after {moved} of {total} messages: {task.get('FailureReason', '')}"
                )
            return RedriveResult("move-task", moved, 0, handle)
        sleep(poll_sec)


def _send_entry(entry_id: str, message: dict[str, Any], fifo: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": entry_id, "MessageBody": message["Body"]}
    attributes = {
        name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        for name, value in (message.get("MessageAttributes") or {}).items()
    }
    if attributes:
        entry["MessageAttributes"] = attributes
    if fifo:
        system = message.get("Attributes") or {}
        entry["MessageGroupId"] = system.get("MessageGroupId", "redrive")
        entry["MessageDeduplicationId"] = system.get("MessageDeduplicationId") or message["MessageId"]
    return entry
