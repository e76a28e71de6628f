"""moto's SQS: the message quotas `SendMessage` enforces (attribute count, size with attributes), and fair queues."""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from localcloud.emulator.patches.registry import Undo, patch, replace, undo_all


# SQS's message quotas (Amazon SQS Developer Guide, "Amazon SQS message attributes"; MessageAttributeValue):
# at most 10 attributes a message, and every part of each (name, type, value) counts towards its size.
SQS_MAX_MESSAGE_ATTRIBUTES = 10


def sqs_message_size_bytes(body: str, attributes: dict[str, Any] | None) -> int:
    """The size SQS holds against a queue's `MaximumMessageSize`: the body and each attribute's name,
    type and value, in bytes (UTF-8 text, a binary value as its decoded bytes)."""
    import base64

    size = len(body.encode("utf-8", errors="surrogatepass"))
    for name, value in (attributes or {}).items():
        size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        if value.get("BinaryValue") is not None:
            binary = value["BinaryValue"]
            size += len(binary if isinstance(binary, (bytes, bytearray)) else base64.b64decode(binary))
        else:
            size += len(str(value.get("StringValue", "")).encode("utf-8", errors="surrogatepass"))
    return size


@patch("sqs")
def sqs_message_limits() -> Undo:
    """Refuse a `SendMessage` with more than 10 message attributes, or whose body and attributes together
    exceed the queue's `MaximumMessageSize`, with SQS's `InvalidParameterValue`.

    moto limitation: it takes any number of attributes and measures only the body, in characters, so a
    message AWS refuses (an 11th attribute added to a producer's ten; a body near the limit plus its
    attributes; multi-byte text) is queued. `SendMessageBatch` is left as moto has it.
    """
    from moto.sqs.responses import SQSResponse

    original = SQSResponse.send_message

    def send_message(self: Any) -> Any:
        from moto.sqs.exceptions import InvalidParameterValue

        attributes = self._get_param("MessageAttributes", {}) or {}
        if len(attributes) > SQS_MAX_MESSAGE_ATTRIBUTES:
            raise InvalidParameterValue(f"Number of message attributes [{len(attributes)}] exceeds the allowed "
                                        f"maximum [{SQS_MAX_MESSAGE_ATTRIBUTES}].")
        queue = self.sqs_backend.get_queue(self._get_queue_name())
        limit = int(queue.maximum_message_size)
        if sqs_message_size_bytes(self._get_param("MessageBody") or "", attributes) > limit:
            raise InvalidParameterValue(f"One or more parameters are invalid. Reason: Message must be shorter "
                                        f"than {limit} bytes.")
        return original(self)

    return replace(SQSResponse, send_message=send_message)


# -- Fair queues ------------------------------------------------------------------------------------
# What the SQS Developer Guide documents ("Amazon SQS fair queues", "How Amazon SQS fair queues work",
# July 2025), and all this models: on a *standard* queue, messages sharing a `MessageGroupId` belong to
# one tenant; a message without one is a tenant of its own. A tenant is noisy when it holds more than
# 10 % of the queue's in-flight messages and at least 30 of its own, or more than 10 % of the recent
# consumer processing time. While some tenant is noisy, a receive returns quiet tenants' messages
# first; among noisy tenants, the one with the fewest messages in flight first. Nothing is dropped or
# throttled: a noisy tenant's messages wait, and come as usual once no quiet message is waiting.
# Not modelled: the approximation AWS admits ("thresholds are approximate"), and the 5 minutes without
# sends after which a tenant with a backlog is quiet again (here a tenant is judged afresh on every
# receive, from its in-flight messages and the last `FAIR_QUEUE_PROCESSING_WINDOW_SEC` of processing).
# A message without a group id never counts as noisy (its tenant has that one message to deliver), so
# a queue whose messages carry no group id delivers in the order it did before.
NOISY_IN_FLIGHT_SHARE = 0.10
NOISY_MIN_IN_FLIGHT = 30
NOISY_PROCESSING_TIME_SHARE = 0.10
# AWS says "recent" without a figure; a minute is the model's choice, the period of the queue's metrics.
FAIR_QUEUE_PROCESSING_WINDOW_SEC = 60.0
# The CloudWatch metrics SQS publishes for a fair queue (namespace AWS/SQS, dimension QueueName).
AGE_OF_OLDEST_MESSAGE_IN_QUIET_GROUPS = "ApproximateAgeOfOldestMessageInQuietGroups"
NUMBER_OF_NOISY_GROUPS = "ApproximateNumberOfNoisyGroups"

_Message = TypeVar("_Message")


@dataclass(frozen=True)
class ProcessingSpan:
    """A message of `group` in flight from `start` to `end` (seconds): received until deleted or visible again."""

    group: str | None
    start: float
    end: float


def processing_sec_by_group(spans: Sequence[ProcessingSpan], *, now: float,
                            window_sec: float = FAIR_QUEUE_PROCESSING_WINDOW_SEC) -> dict[str | None, float]:
    """Each group's processing time inside the last `window_sec` seconds (None: messages without a group)."""
    since = now - window_sec
    totals: dict[str | None, float] = collections.defaultdict(float)
    for span in spans:
        overlap = min(span.end, now) - max(span.start, since)
        if overlap > 0:
            totals[span.group] += overlap
    return dict(totals)


def noisy_groups(in_flight_by_group: Mapping[str | None, int],
                 processing_by_group: Mapping[str | None, float]) -> frozenset[str]:
    """The groups SQS treats as noisy neighbours, by its two documented measures (see above)."""
    total_in_flight = sum(in_flight_by_group.values())
    total_processing = sum(processing_by_group.values())
    noisy = set()
    for group, in_flight in in_flight_by_group.items():
        if (group is not None and in_flight >= NOISY_MIN_IN_FLIGHT
                and in_flight > NOISY_IN_FLIGHT_SHARE * total_in_flight):
            noisy.add(group)
    for group, seconds in processing_by_group.items():
        if group is not None and total_processing > 0 and seconds > NOISY_PROCESSING_TIME_SHARE * total_processing:
            noisy.add(group)
    return frozenset(noisy)


def fair_delivery_order(messages: Sequence[_Message], group_of: Callable[[_Message], str | None],
                        noisy: frozenset[str], in_flight_by_group: Mapping[str | None, int]) -> list[_Message]:
    """`messages` in the order a fair queue offers them: quiet tenants' first, then noisy tenants' by
    fewest in flight; each tenant's own messages keep their order."""
    quiet = [m for m in messages if group_of(m) not in noisy]
    held_back = [m for m in messages if group_of(m) in noisy]
    held_back.sort(key=lambda m: in_flight_by_group.get(group_of(m), 0))  # stable: each tenant keeps its order
    return quiet + held_back


def _in_flight(queue: Any) -> list[Any]:
    return [m for m in queue._messages if getattr(m, "_fair_received_at", None) is not None and not m.visible]


def _queue_view(queue: Any, now: float) -> tuple[dict[str | None, int], frozenset[str]]:
    """(in-flight messages per group, noisy groups) of a moto queue at `now`."""
    in_flight = _in_flight(queue)
    in_flight_by_group: dict[str | None, int] = collections.Counter(m.group_id for m in in_flight)
    open_spans = [ProcessingSpan(m.group_id, m._fair_received_at, now) for m in in_flight]
    processing = processing_sec_by_group([*getattr(queue, "_fair_spans", ()), *open_spans], now=now)
    return in_flight_by_group, noisy_groups(in_flight_by_group, processing)


def fair_queue_metrics(queue: Any, *, now: float | None = None) -> dict[str, float]:
    """The fair-queue metrics SQS publishes for `queue` (a moto queue), as they stand at `now`.

    `ApproximateAgeOfOldestMessageInQuietGroups`: the age of the oldest message not yet deleted whose
    tenant is quiet (0 with none); `ApproximateNumberOfNoisyGroups`: how many tenants are noisy.
    """
    from moto.core.utils import unix_time

    now = unix_time() if now is None else now
    _, noisy = _queue_view(queue, now)
    quiet_sent_ms = [m.sent_timestamp for m in queue._messages if m.group_id not in noisy and m.sent_timestamp]
    oldest_quiet_sec = max(0.0, now - min(quiet_sent_ms) / 1000) if quiet_sent_ms else 0.0
    return {AGE_OF_OLDEST_MESSAGE_IN_QUIET_GROUPS: oldest_quiet_sec, NUMBER_OF_NOISY_GROUPS: float(len(noisy))}


def publish_fair_queue_metrics(account_id: str, region_name: str) -> dict[str, dict[str, float]]:
    """Put every standard queue's fair-queue metrics into CloudWatch (AWS/SQS, per QueueName), as SQS does
    each minute; the answer is what was put, by queue name. Queues whose messages carry no group id get none."""
    from moto.cloudwatch.models import cloudwatch_backends
    from moto.sqs.models import sqs_backends

    published: dict[str, dict[str, float]] = {}
    for queue in list(sqs_backends[account_id][region_name].queues.values()):
        if queue.fifo_queue or not any(m.group_id is not None for m in queue._messages):
            continue
        values = fair_queue_metrics(queue)
        cloudwatch_backends[account_id][region_name].put_metric_data("AWS/SQS", [
            {"MetricName": name, "Value": value, "Unit": "Seconds" if name == AGE_OF_OLDEST_MESSAGE_IN_QUIET_GROUPS
             else "Count", "Dimensions": [{"Name": "QueueName", "Value": queue.name}]}
            for name, value in values.items()])
        published[queue.name] = values
    return published


@patch("sqs")
def sqs_fair_queues() -> Undo:
    """Deliver a standard queue's messages as a fair queue does when they carry a `MessageGroupId`.

    moto limitation: it stores a standard queue's `MessageGroupId` (and returns it as an attribute) but
    delivers in the order messages arrived, so a tenant's backlog delays every other tenant's messages.
    With this fix a receive offers quiet tenants' messages ahead of noisy tenants' (the model and its
    limits are described above `NOISY_IN_FLIGHT_SHARE`); without group ids the order is moto's.
    """
    from moto.core.utils import unix_time
    from moto.sqs.models import Queue, SQSBackend

    original_messages = Queue.messages.fget  # type: ignore[attr-defined]
    original_receive = SQSBackend.receive_message
    original_delete = Queue.delete_message

    def messages(self: Any) -> list[Any]:
        visible = original_messages(self)
        if self.fifo_queue or not any(m.group_id is not None for m in visible):
            return visible
        in_flight_by_group, noisy = _queue_view(self, unix_time())
        if not noisy:
            return visible
        return fair_delivery_order(visible, lambda m: m.group_id, noisy, in_flight_by_group)

    def spans(queue: Any) -> collections.deque[ProcessingSpan]:
        if not hasattr(queue, "_fair_spans"):
            queue._fair_spans = collections.deque(maxlen=10_000)
        return queue._fair_spans

    def receive_message(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> list[Any]:
        queue = self.get_queue(queue_name)
        now = unix_time()
        # A message visible again (its visibility timeout ran out, or the consumer postponed it) ended
        # its time in flight when it became visible.
        for message in queue._messages:
            received_at = getattr(message, "_fair_received_at", None)
            if received_at is not None and message.visible:
                spans(queue).append(ProcessingSpan(message.group_id, received_at, min(now, message.visible_at / 1000)))
                message._fair_received_at = None
        received = original_receive(self, queue_name, *args, **kwargs)
        by_id = {m.id: m for m in queue._messages}
        for copy in received:
            if copy.id in by_id:
                by_id[copy.id]._fair_received_at = now
        return received

    def delete_message(self: Any, receipt_handle: str) -> None:
        message = next((m for m in self._messages if m.had_receipt_handle(receipt_handle)), None)
        original_delete(self, receipt_handle)
        received_at = getattr(message, "_fair_received_at", None)
        if message is not None and received_at is not None:
            spans(self).append(ProcessingSpan(message.group_id, received_at, unix_time()))
            message._fair_received_at = None

    return undo_all(
        replace(Queue, messages=property(messages), delete_message=delete_message),
        replace(SQSBackend, receive_message=receive_message),
    )
