"""Parked orders: the message that holds one, the execution that resumes it, and what to do with each message.

Pure: no AWS. The payment workflow parks an order while the gateway's circuit breaker is open
(`ParkOrder` queues the message, `MarkParked` marks the order); the resumer
(`handlers.resume_parked_orders`) takes the messages back once the breaker lets calls through.
The handler reads and writes; everything it decides is decided here.

One execution name per park episode. An order's first execution is `order-<id>` (the starter's and
the API's), and Step Functions refuses a name for 90 days after it was used, so a parked order can
never start again under it. The episode parked by `order-<id>` is resumed as `r1-<id>`, the one
parked by `r<n>-<id>` as `r<n+1>-<id>`: every copy of one parked message (SQS delivers at least
once, and a retried send can queue two) names the same execution, and Step Functions starts a name
once. The names keep to the characters CloudWatch accepts in them (letters, digits, `-`, `_`) and to
Step Functions' 80: `order-<id>` takes 80 for a 74-character id, `r9999-<id>` 80 as well, so even
the longest id can be parked and resumed 9,999 times before `NoExecutionNameLeft`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from payments.orders import EXECUTION_NAME_PREFIX, InvalidOrder, Order, parse_order
from throttling.core.circuit_breaker import BreakerState, BreakerStatus

__all__ = [
    "MAX_EXECUTION_NAME_LENGTH",
    "Action",
    "Decision",
    "InvalidParkedMessage",
    "NoExecutionNameLeft",
    "OrderRecord",
    "ParkedOrder",
    "decide",
    "episode_of",
    "is_valid_execution_name",
    "parse_parked_message",
    "resume_execution_name",
    "resume_input",
    "resumes_allowed",
]

MAX_EXECUTION_NAME_LENGTH = 80
RESUME_NAME = re.compile(r"r([1-9][0-9]*)-(.+)", re.DOTALL)
# What Step Functions accepts and CloudWatch can log and graph; AWS refuses more characters than these.
_LOGGABLE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")


class InvalidParkedMessage(ValueError):
    """The message cannot be resumed as it is; the message says which field is wrong and what it holds."""


class NoExecutionNameLeft(ValueError):
    """The next resumption's name would pass Step Functions' 80 characters."""


@dataclass(frozen=True)
class ParkedOrder:
    """One parked message: the order, the execution that parked it (`parked_by`), when and why."""

    order: Order
    parked_by: str
    parked_at: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class OrderRecord:
    """What the orders table says of an order: its status, the execution holding it, and the resumption claimed."""

    status: str | None
    execution: str | None
    resume_execution: str | None = None

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> OrderRecord:
        """From an item of plain values (`{"status": "parked", ...}`); a missing or non-string attribute is None."""

        def text(name: str) -> str | None:
            value = item.get(name)
            return value if isinstance(value, str) else None

        return cls(status=text("status"), execution=text("execution"), resume_execution=text("resume_execution"))


class Action(str, Enum):
    RESUME = "resume"  # start (or make sure of) the execution named in the decision, then delete the message
    DROP = "drop"  # nothing to do for this order: delete the message
    WAIT = "wait"  # not yet: leave the message, it comes back after its visibility timeout
    CHECK_PARKER = "check_parker"  # ask whether the parking execution still runs, then decide again
    DEAD_LETTER = "dead_letter"  # no automatic answer: to the dead-letter queue, with the reason, for a person


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    execution_name: str | None = None


def episode_of(execution: str, order_id: str) -> int:
    """Which park episode of `order_id` an execution of the payment workflow ran: 0 for `order-<id>`, n for `r<n>-<id>`.

    Raises `InvalidParkedMessage` for any other name: an execution started by hand under a name of
    its own cannot be told apart from an earlier resumption, so only a person can resume it safely.
    """
    if execution == f"{EXECUTION_NAME_PREFIX}{order_id}":
        return 0
    match = RESUME_NAME.fullmatch(execution)
    if match and match.group(2) == order_id:
        return int(match.group(1))
    raise InvalidParkedMessage(
        f"execution {execution!r} is not a name the payment workflow gives order {order_id!r}"
        f" ('{EXECUTION_NAME_PREFIX}<order_id>' or 'r<n>-<order_id>'); start its resumption by hand"
    )


def resume_execution_name(parked_by: str, order_id: str) -> str:
    """The one execution that resumes the episode `parked_by` parked (`r<n+1>-<order_id>`)."""
    name = f"r{episode_of(parked_by, order_id) + 1}-{order_id}"
    if len(name) > MAX_EXECUTION_NAME_LENGTH:
        raise NoExecutionNameLeft(
            f"order {order_id!r} was parked {episode_of(parked_by, order_id) + 1} times: its next resumption"
            f" {name!r} would be {len(name)} characters, past Step Functions' {MAX_EXECUTION_NAME_LENGTH};"
            " resolve it by hand"
        )
    return name


def is_valid_execution_name(name: object) -> bool:
    """1 to 80 characters of letters, digits, `-` and `_`: a name Step Functions takes and CloudWatch can show."""
    return isinstance(name, str) and _LOGGABLE_NAME.fullmatch(name) is not None


def parse_parked_message(body: str | None) -> ParkedOrder:
    """The parked order a message body holds (`ParkOrder`'s MessageBody); `InvalidParkedMessage` says why not."""
    try:
        document = json.loads(body or "")
    except ValueError as error:
        raise InvalidParkedMessage(f"the body is not JSON ({error})") from None
    if not isinstance(document, dict):
        raise InvalidParkedMessage(f"the body must be a JSON object, got {type(document).__name__}")
    try:
        order = parse_order(document)
    except InvalidOrder as error:
        raise InvalidParkedMessage(f"the parked order is invalid: {error}") from None
    parked_by = document.get("execution")
    if not isinstance(parked_by, str) or not parked_by:
        raise InvalidParkedMessage(
            f"execution (the execution that parked the order) must be a name, got {parked_by!r}")
    episode_of(parked_by, order.order_id)
    parked_at, reason = document.get("parked_at"), document.get("reason")
    return ParkedOrder(order=order, parked_by=parked_by,
                       parked_at=parked_at if isinstance(parked_at, str) else None,
                       reason=reason if isinstance(reason, str) else None)


def decide(parked: ParkedOrder, record: OrderRecord | None, *, parker_running: bool | None = None) -> Decision:
    """What to do with one parked message, given the order's record (None: the orders table has no such order).

    - paid or cancelled: dropped, whatever execution got it there;
    - held by another execution than the one that parked it: dropped, as superseded (a later episode
      has its own message, or this episode's resumption has already taken the order up);
    - parked by the execution that parked it: resumed under its episode's name;
    - still pending under that execution: `MarkParked` has not landed yet; while the parker runs,
      wait (`CHECK_PARKER` asks the caller to find out); once it ended, its mark never will, and
      the order is resumed all the same;
    - no record, another status, or no name left: to the dead-letter queue, for a person.
    """
    if record is None:
        return Decision(Action.DEAD_LETTER, "unknown_order")
    if record.status in ("paid", "cancelled"):
        return Decision(Action.DROP, f"already_{record.status}")
    if record.execution != parked.parked_by:
        return Decision(Action.DROP, "superseded")
    if record.status == "pending":
        if parker_running is None:
            return Decision(Action.CHECK_PARKER, "not_yet_marked_parked")
        if parker_running:
            return Decision(Action.WAIT, "not_yet_marked_parked")
    elif record.status != "parked":
        return Decision(Action.DEAD_LETTER, f"unexpected_status:{record.status}")
    try:
        name = resume_execution_name(parked.parked_by, parked.order.order_id)
    except NoExecutionNameLeft:
        return Decision(Action.DEAD_LETTER, "no_execution_name_left")
    reason = "parked" if record.status == "parked" else "parker_ended_before_marking_it_parked"
    return Decision(Action.RESUME, reason, execution_name=name)


def resume_input(parked: ParkedOrder) -> dict[str, Any]:
    """The resumption's input: the order in the starter's stable shape, and the execution it resumes.

    Stable, so a second start of the same name while the first runs is Step Functions' idempotent
    success rather than an error.
    """
    return {**parked.order.to_input(), "resume_of": parked.parked_by}


def resumes_allowed(breaker: BreakerState, now: float, per_run: int) -> tuple[int, str]:
    """How many orders one run may resume, and why, given the gateway's breaker.

    Closed: `per_run`. Open until a later time: none, and nothing is received. Open past its
    `open_until`, or half-open with a probe lease that lapsed: the breaker is due a probe that only
    an authorization can make, so one order is resumed and its authorization is the probe (without
    it, parked orders would wait for the next new order to close the breaker). Half-open with a
    live probe: none, the probe decides.
    """
    if breaker.status is BreakerStatus.CLOSED:
        return per_run, "closed"
    if breaker.status is BreakerStatus.OPEN:
        if breaker.open_until is not None and now < breaker.open_until:
            return 0, "open"
        return min(1, per_run), "due_a_probe"
    if breaker.probe_expires_at is not None and now < breaker.probe_expires_at:
        return 0, "probing"
    return min(1, per_run), "due_a_probe"

