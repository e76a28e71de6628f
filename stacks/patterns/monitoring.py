"""What the control loop cannot read from a resource's shape, said next to the resource.

The control loop finds every workflow and queue of the registered use cases by walking their
constructs and gives each the alarms of its kind (`stacks/control_loop_stack.py`): a queue with a dead-letter queue of
its own alarms on the age of its oldest message, a dead-letter queue on any message at all. A
queue whose messages may rightly wait longer than the stage's `backlog_age_alarm_sec` (orders
parked while a downstream's breaker is open) says so here, with the reason, where it is built; the
setting travels as construct metadata, so any stack can set it and the control loop reads it. A fair
queue (its messages carry a tenant as `MessageGroupId`) also alarms on its quiet tenants' oldest
message (`alarm_on_quiet_tenants_age_after`): the backlog of a noisy tenant is expected to wait, the
others' records are not.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sqs as sqs

OLDEST_MESSAGE_ALARM = "throttling:oldest-message-alarm"
# SQS keeps a message at most 14 days: an age alarm past that could never fire.
OLDEST_MESSAGE_ALARM_RANGE_SEC = (60, 14 * 24 * 3600)


@dataclass(frozen=True)
class OldestMessageAlarm:
    """A queue's own threshold for the age of its oldest message, and why the stage's default does not fit."""

    after_sec: int
    reason: str


def alarm_on_oldest_message_after(queue: sqs.IQueue, *, after_sec: int, reason: str) -> None:
    """Give `queue` its own oldest-message alarm threshold instead of the stage's `backlog_age_alarm_sec`.

    :param after_sec: alarm when the oldest message is older than this (60 s to 14 days).
    :param reason: why messages may wait this long; it goes into the alarm's description.
    """
    _set_threshold(queue, OLDEST_MESSAGE_ALARM, after_sec, low=OLDEST_MESSAGE_ALARM_RANGE_SEC[0], reason=reason,
                   missing_reason="reason must say why this queue's messages may wait longer than the stage's default",
                   already="already has its own oldest-message alarm threshold")


def oldest_message_alarm(queue: sqs.IQueue) -> OldestMessageAlarm | None:
    """The threshold `alarm_on_oldest_message_after` gave `queue`, if any."""
    return _threshold(queue, OLDEST_MESSAGE_ALARM)


def _set_threshold(queue: sqs.IQueue, kind: str, after_sec: int, *, low: int, reason: str, missing_reason: str,
                   already: str) -> None:
    """Record a queue's alarm threshold of `kind` as construct metadata, for the control-loop stack to build."""
    high = OLDEST_MESSAGE_ALARM_RANGE_SEC[1]
    if isinstance(after_sec, bool) or not isinstance(after_sec, int) or not low <= after_sec <= high:
        raise ValueError(f"after_sec must be a whole number of seconds from {low} to {high} (SQS keeps a message"
                         f" 14 days at most), got {after_sec!r}")
    if not reason.strip():
        raise ValueError(missing_reason)
    if _threshold(queue, kind) is not None:
        raise ValueError(f"{queue.node.path} {already}; set it once")
    queue.node.add_metadata(kind, {"after_sec": after_sec, "reason": reason}, stack_trace=False)


def _threshold(queue: sqs.IQueue, kind: str) -> OldestMessageAlarm | None:
    for entry in queue.node.metadata:
        if entry.type == kind:
            return OldestMessageAlarm(after_sec=int(entry.data["after_sec"]), reason=str(entry.data["reason"]))
    return None


QUIET_TENANTS_ALARM = "throttling:quiet-tenants-alarm"
# What SQS publishes for a fair queue (AWS/SQS, dimension QueueName): the age of the oldest message of
# the tenants it does not count as noisy.
QUIET_GROUPS_AGE_METRIC = "ApproximateAgeOfOldestMessageInQuietGroups"


def alarm_on_quiet_tenants_age_after(queue: sqs.IQueue, *, after_sec: int, reason: str) -> None:
    """Alarm when the oldest message of `queue`'s quiet tenants is older than `after_sec` seconds.

    For a fair queue: a noisy tenant's backlog waits by design, and its age says nothing; a quiet
    tenant's message waiting longer than the consumer needs to serve it says every tenant is behind.

    :param after_sec: the quiet tenants' longest expected wait, in whole seconds (1 s to 14 days).
    :param reason: where the threshold comes from; it goes into the alarm's description.
    """
    _set_threshold(queue, QUIET_TENANTS_ALARM, after_sec, low=1, reason=reason,
                   missing_reason="reason must say where the quiet tenants' threshold comes from",
                   already="already alarms on its quiet tenants' message age")


def quiet_tenants_alarm(queue: sqs.IQueue) -> OldestMessageAlarm | None:
    """The threshold `alarm_on_quiet_tenants_age_after` gave `queue`, if any."""
    return _threshold(queue, QUIET_TENANTS_ALARM)


ERRORS_ALARM = "throttling:errors-alarm"


def alarm_on_errors(function: lambda_.IFunction, *, reason: str) -> None:
    """Alarm on any error of `function`, for one whose failures nothing else would show.

    Most functions are watched through what they serve (a caller's errors are the downstream's 5xx,
    counted per downstream; a consumer's failures reach its dead-letter queue). A function whose
    caller turns its failure into a safe outcome (a moderation decider's error becomes "needs review")
    or that runs on a schedule with nobody waiting for it fails silently otherwise.

    :param reason: what its errors mean for the business; it goes into the alarm's description.
    """
    if not reason.strip():
        raise ValueError("reason must say what this function's errors mean, for the alarm's description")
    if errors_alarm_reason(function) is not None:
        raise ValueError(f"{function.node.path} already alarms on its errors; say it once")
    function.node.add_metadata(ERRORS_ALARM, {"reason": reason}, stack_trace=False)


def errors_alarm_reason(function: lambda_.IFunction) -> str | None:
    """The reason `alarm_on_errors` gave `function`, if it was given one."""
    for entry in function.node.metadata:
        if entry.type == ERRORS_ALARM:
            return str(entry.data["reason"])
    return None
