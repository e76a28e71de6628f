"""A fleet-wide circuit breaker as a pure state machine: closed -> open -> half-open -> closed.

Powertools for AWS Lambda (Python) >= 3.37 ships a circuit breaker (`utilities.circuit_breaker`)
that counts consecutive failures in each execution environment. This core exists because the
project needs three things it does not model: the whole state in one flat DynamoDB item that a
Step Functions `dynamodb:getItem` task can read (`status`, `open_until_utc`); opening on the
failure *rate* and on the slow-call rate of the whole fleet over a sliding window; and exactly
one leased probe while half-open. Adapting Powertools onto this state belongs to a DynamoDB
adapter, not here.

- Closed: every call is admitted; outcomes go into the window. The breaker opens when at least
  `minimum_calls` were seen and the failure rate or the slow-call rate (duration >=
  `slow_call_duration_sec`) reaches its threshold, or on demand (`force_open`, e.g. an alarm).
- Open: calls are refused with `retry_after_sec` until `open_until`.
- Half-open: the first caller after `open_until` takes a probe lease until `now +
  probe_lease_sec`; everyone else is refused. A probe that succeeds in time closes the breaker
  with a fresh window; a failed or slow one opens it again. If the prober dies, its lease expires
  and the next caller probes, so the breaker can never stay stuck half-open.

The window is a ring of `window_buckets` fixed time buckets (counts per bucket), not a log of
calls: the item stays small and fixed-size whatever the traffic (DynamoDB items stop at 400 KB),
an update touches one bucket, and the counts could even be bumped with an atomic `ADD`. The cost
is granularity: the window covers between `window_sec - bucket_sec` and `window_sec` of history.

Every transition bumps `version`; an adapter writes the item with the condition
`version = :version_read` (or `attribute_not_exists(version)`) and re-reads on conflict, which is
what makes the probe single across Lambdas. When a function returns its input state unchanged
there is nothing to write.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import Any

from throttling.core.validation import is_int, is_number, shown

__all__ = [
    "Admission",
    "BreakerPolicy",
    "BreakerState",
    "BreakerStatus",
    "WindowBucket",
    "WindowTotals",
    "allow",
    "force_close",
    "force_open",
    "record",
    "window_totals",
]

# Beyond this the item grows for no real gain in precision; 60 buckets of one second already
# give a one-minute window with one-second granularity.
MAX_WINDOW_BUCKETS = 60
# Every duration of a policy: below 10 ms no call is timed that finely; beyond a day the breaker's
# item outlives its TTL margin, and times far out overflow the window's slot arithmetic and what
# DynamoDB can store.
DURATION_BOUNDS_SEC = (0.01, 86_400.0)
MAX_MINIMUM_CALLS = 1_000_000


class BreakerStatus(str, Enum):
    """Subclasses str so the value is stored and compared as a plain string (Step Functions reads it)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    """When the breaker opens and how it recovers; defaults suit a downstream with ~1 s calls."""

    failure_rate_threshold: float = 0.5
    slow_call_rate_threshold: float = 0.8
    slow_call_duration_sec: float = 5.0
    minimum_calls: int = 10
    window_sec: float = 60.0
    window_buckets: int = 6
    open_duration_sec: float = 30.0
    probe_lease_sec: float = 10.0

    def __post_init__(self) -> None:
        # Range comparisons only: they hold for any int or float (NaN fails them), where float() or
        # math.isfinite() would overflow on a huge integer.
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            value = getattr(self, name)
            if not is_number(value) or not 0 < value <= 1:
                raise ValueError(f"{name} must be a rate in (0, 1], got {shown(value)}; 0.5 means half of the calls")
        low, high = DURATION_BOUNDS_SEC
        for name in ("slow_call_duration_sec", "window_sec", "open_duration_sec", "probe_lease_sec"):
            value = getattr(self, name)
            if not is_number(value) or not low <= value <= high:
                raise ValueError(f"{name} must be a number of seconds in [{low:g}, {high:g}], got {shown(value)}")
        if not is_int(self.minimum_calls) or not 1 <= self.minimum_calls <= MAX_MINIMUM_CALLS:
            raise ValueError(f"minimum_calls must be an int in [1, {MAX_MINIMUM_CALLS}], got {shown(self.minimum_calls)}")
        if not is_int(self.window_buckets) or not 1 <= self.window_buckets <= MAX_WINDOW_BUCKETS:
            raise ValueError(
                f"window_buckets must be an int in [1, {MAX_WINDOW_BUCKETS}], got {shown(self.window_buckets)}"
            )

    @property
    def bucket_sec(self) -> float:
        return self.window_sec / self.window_buckets


@dataclass(frozen=True)
class WindowBucket:
    """Outcomes of the calls that finished in [start_sec, start_sec + bucket_sec)."""

    start_sec: float = 0.0
    calls: int = 0
    failures: int = 0
    slow_calls: int = 0


@dataclass(frozen=True)
class WindowTotals:
    calls: int
    failures: int
    slow_calls: int

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        return self.slow_calls / self.calls if self.calls else 0.0


@dataclass(frozen=True)
class BreakerState:
    """Everything the breaker knows; `BreakerState()` is a fresh closed breaker.

    `window` is empty or holds one bucket per ring slot; `reason` says why it last opened.
    """

    status: BreakerStatus = BreakerStatus.CLOSED
    version: int = 0
    window: tuple[WindowBucket, ...] = ()
    opened_at: float | None = None
    open_until: float | None = None
    reason: str = ""
    probe_owner: str | None = None
    probe_expires_at: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status, BreakerStatus):
            raise ValueError(f"status must be a BreakerStatus, got {self.status!r}")
        if self.status is BreakerStatus.OPEN and (self.opened_at is None or self.open_until is None):
            raise ValueError("an open breaker needs opened_at and open_until; use force_open() to open one")
        if self.status is BreakerStatus.HALF_OPEN and (not self.probe_owner or self.probe_expires_at is None):
            raise ValueError("a half-open breaker needs probe_owner and probe_expires_at; only allow() grants a probe")
        if self.status is not BreakerStatus.HALF_OPEN and self.probe_owner is not None:
            raise ValueError(f"only a half-open breaker has a probe owner, got {self.probe_owner!r} while {self.status.value}")

    def to_item(self) -> dict[str, str | int | float]:
        """A flat dict of strings and numbers for a DynamoDB item (absent values are left out).

        Floats stay floats: a boto3 resource adapter converts them with `Decimal(str(x))`.
        `open_until_utc` is an RFC 3339 copy of `open_until` for Step Functions Choice states.
        """
        item: dict[str, str | int | float] = {"status": self.status.value, "version": self.version}
        if self.reason:
            item["reason"] = self.reason
        if self.opened_at is not None:
            item["opened_at"] = self.opened_at
        if self.open_until is not None:
            item["open_until"] = self.open_until
            open_until_utc = _rfc3339(self.open_until)
            if open_until_utc is not None:
                item["open_until_utc"] = open_until_utc
        if self.probe_owner is not None:
            item["probe_owner"] = self.probe_owner
        if self.probe_expires_at is not None:
            item["probe_expires_at"] = self.probe_expires_at
        for index, bucket in enumerate(self.window):
            item[f"w{index}_start"] = bucket.start_sec
            item[f"w{index}_calls"] = bucket.calls
            item[f"w{index}_failures"] = bucket.failures
            item[f"w{index}_slow"] = bucket.slow_calls
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> BreakerState:
        """Rebuild a state from `to_item()` output; numbers may be int, float or Decimal, other keys are ignored."""
        raw_status = item.get("status", BreakerStatus.CLOSED.value)
        try:
            status = BreakerStatus(raw_status)
        except ValueError:
            known = ", ".join(s.value for s in BreakerStatus)
            raise ValueError(f"breaker item has unknown status {raw_status!r}; expected one of {known}") from None
        window = []
        while f"w{len(window)}_start" in item:
            index = len(window)
            window.append(
                WindowBucket(
                    start_sec=_item_float(item, f"w{index}_start"),
                    calls=_item_int(item, f"w{index}_calls"),
                    failures=_item_int(item, f"w{index}_failures"),
                    slow_calls=_item_int(item, f"w{index}_slow"),
                )
            )
        probe_owner = item.get("probe_owner")
        if probe_owner is not None and not isinstance(probe_owner, str):
            raise ValueError(f"breaker item probe_owner must be a string, got {probe_owner!r}")
        reason = item.get("reason", "")
        return cls(
            status=status,
            version=_item_int(item, "version") if "version" in item else 0,
            window=tuple(window),
            opened_at=_item_float(item, "opened_at") if "opened_at" in item else None,
            open_until=_item_float(item, "open_until") if "open_until" in item else None,
            reason=reason if isinstance(reason, str) else str(reason),
            probe_owner=probe_owner,
            probe_expires_at=_item_float(item, "probe_expires_at") if "probe_expires_at" in item else None,
        )


@dataclass(frozen=True)
class Admission:
    """Whether a call may go ahead; `is_probe` marks the single half-open trial call."""

    allowed: bool
    is_probe: bool
    retry_after_sec: float
    status: BreakerStatus


def allow(state: BreakerState, policy: BreakerPolicy, now: float, caller_id: str) -> tuple[Admission, BreakerState]:
    """May `caller_id` call the downstream at `now`? Returns the admission and the state to store."""
    _check_caller(caller_id)
    if state.status is BreakerStatus.CLOSED:
        return Admission(True, False, 0.0, BreakerStatus.CLOSED), state
    if state.status is BreakerStatus.OPEN:
        assert state.open_until is not None  # guaranteed by BreakerState.__post_init__
        if now < state.open_until:
            return Admission(False, False, state.open_until - now, BreakerStatus.OPEN), state
        return _grant_probe(state, policy, now, caller_id)
    assert state.probe_expires_at is not None  # half-open, guaranteed by BreakerState.__post_init__
    lease_live = state.probe_expires_at > now
    if lease_live and state.probe_owner == caller_id:
        # The same caller asking again (e.g. its conditional write timed out and it retried) is
        # still the one probe; the lease is not extended so a prober cannot hold half-open forever.
        return Admission(True, True, 0.0, BreakerStatus.HALF_OPEN), state
    if lease_live:
        return Admission(False, False, state.probe_expires_at - now, BreakerStatus.HALF_OPEN), state
    return _grant_probe(state, policy, now, caller_id)


def record(
    state: BreakerState,
    policy: BreakerPolicy,
    now: float,
    success: bool,
    duration_sec: float,
    caller_id: str,
) -> BreakerState:
    """Account for a finished call and return the new state.

    Outcomes of calls admitted before the breaker opened (stragglers finishing while it is open
    or half-open) are ignored: only the probe's outcome decides a half-open breaker.
    """
    _check_caller(caller_id)
    if not is_number(duration_sec) or not math.isfinite(duration_sec) or duration_sec < 0:
        raise ValueError(f"duration_sec must be a finite number >= 0, got {duration_sec!r}")
    slow = duration_sec >= policy.slow_call_duration_sec
    if state.status is BreakerStatus.OPEN:
        return state
    if state.status is BreakerStatus.HALF_OPEN:
        if caller_id != state.probe_owner:
            return state
        if success and not slow:
            return force_close(state)
        if success:
            # Closing on a slow probe would send full traffic to a downstream that is still struggling.
            why = f"probe was slow ({duration_sec:g}s >= {policy.slow_call_duration_sec:g}s)"
        else:
            why = "probe failed"
        return _open(state, now, policy.open_duration_sec, why)

    window = _add_to_window(_window_of(state, policy), policy, now, failed=not success, slow=slow)
    totals = _totals(window, policy, now)
    if totals.calls >= policy.minimum_calls:
        if totals.failure_rate >= policy.failure_rate_threshold:
            why = (
                f"failure rate {totals.failure_rate:.2f} >= {policy.failure_rate_threshold:g} "
                f"over {totals.calls} calls in {policy.window_sec:g}s"
            )
            return _open(state, now, policy.open_duration_sec, why)
        if totals.slow_call_rate >= policy.slow_call_rate_threshold:
            why = (
                f"slow-call rate {totals.slow_call_rate:.2f} >= {policy.slow_call_rate_threshold:g} "
                f"over {totals.calls} calls in {policy.window_sec:g}s"
            )
            return _open(state, now, policy.open_duration_sec, why)
    return dataclasses.replace(state, window=window, version=state.version + 1)


def force_open(
    state: BreakerState,
    policy: BreakerPolicy,
    now: float,
    reason: str,
    duration_sec: float | None = None,
) -> BreakerState:
    """Open on demand (an alarm, an operator) for `duration_sec` (default `policy.open_duration_sec`).

    Forcing never shortens an opening already in force, so a repeating alarm only extends it.
    """
    duration = policy.open_duration_sec if duration_sec is None else duration_sec
    if not is_number(duration) or not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration_sec must be a finite number of seconds > 0, got {duration!r}")
    return _open(state, now, duration, f"forced: {reason}")


def force_close(state: BreakerState) -> BreakerState:
    """Close with a fresh window (what a successful probe does; also an operator's reset)."""
    return BreakerState(status=BreakerStatus.CLOSED, version=state.version + 1)


def window_totals(state: BreakerState, policy: BreakerPolicy, now: float) -> WindowTotals:
    """The calls, failures and slow calls the breaker currently counts (for metrics and logs)."""
    return _totals(_window_of(state, policy), policy, now)


def _grant_probe(state: BreakerState, policy: BreakerPolicy, now: float, caller_id: str) -> tuple[Admission, BreakerState]:
    half_open = dataclasses.replace(
        state,
        status=BreakerStatus.HALF_OPEN,
        version=state.version + 1,
        probe_owner=caller_id,
        probe_expires_at=now + policy.probe_lease_sec,
    )
    return Admission(True, True, 0.0, BreakerStatus.HALF_OPEN), half_open


def _open(state: BreakerState, now: float, duration_sec: float, reason: str) -> BreakerState:
    opened_at, open_until = now, now + duration_sec
    if state.status is BreakerStatus.OPEN and state.opened_at is not None and state.open_until is not None:
        opened_at, open_until = state.opened_at, max(open_until, state.open_until)
    return BreakerState(
        status=BreakerStatus.OPEN,
        version=state.version + 1,
        # The window is dropped: its evidence is in `reason`, and a breaker closes with a fresh one.
        window=(),
        opened_at=opened_at,
        open_until=open_until,
        reason=reason,
    )


def _window_of(state: BreakerState, policy: BreakerPolicy) -> tuple[WindowBucket, ...]:
    # A window laid out for another bucket count (the policy was retuned) cannot be mapped onto
    # the new ring; starting afresh only delays opening by at most one window.
    if len(state.window) != policy.window_buckets:
        return (WindowBucket(),) * policy.window_buckets
    return state.window


def _add_to_window(
    window: tuple[WindowBucket, ...], policy: BreakerPolicy, now: float, *, failed: bool, slow: bool
) -> tuple[WindowBucket, ...]:
    slot = math.floor(now / policy.bucket_sec)
    index = slot % policy.window_buckets
    bucket = window[index]
    if bucket.calls and _slot_of(bucket, policy) >= slot:
        # Same slot, or a slot ahead of our clock (another host runs slightly ahead): count into it
        # rather than wipe newer outcomes.
        current = bucket
    else:
        current = WindowBucket(start_sec=slot * policy.bucket_sec)
    updated = WindowBucket(
        start_sec=current.start_sec,
        calls=current.calls + 1,
        failures=current.failures + int(failed),
        slow_calls=current.slow_calls + int(slow),
    )
    return window[:index] + (updated,) + window[index + 1 :]


def _totals(window: tuple[WindowBucket, ...], policy: BreakerPolicy, now: float) -> WindowTotals:
    oldest_live_slot = math.floor(now / policy.bucket_sec) - policy.window_buckets + 1
    live = [bucket for bucket in window if bucket.calls and _slot_of(bucket, policy) >= oldest_live_slot]
    return WindowTotals(
        calls=sum(bucket.calls for bucket in live),
        failures=sum(bucket.failures for bucket in live),
        slow_calls=sum(bucket.slow_calls for bucket in live),
    )


def _slot_of(bucket: WindowBucket, policy: BreakerPolicy) -> int:
    # start_sec was computed as slot * bucket_sec, so rounding recovers the slot exactly.
    return round(bucket.start_sec / policy.bucket_sec)


def _rfc3339(epoch_sec: float) -> str | None:
    try:
        moment = datetime.fromtimestamp(epoch_sec, tz=timezone.utc)
    except (OverflowError, ValueError, OSError):
        # Beyond year 9999 (only reachable with a fake clock); the numeric open_until still says it.
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_caller(caller_id: str) -> None:
    if not isinstance(caller_id, str) or not caller_id:
        raise ValueError(f"caller_id must be a non-empty string, got {caller_id!r}; use the invocation's request id")



def _item_float(item: Mapping[str, Any], key: str) -> float:
    value = item.get(key)
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number):
            return number
    raise ValueError(f"breaker item attribute {key} must be a finite number, got {value!r}")


def _item_int(item: Mapping[str, Any], key: str) -> int:
    number = _item_float(item, key)
    if number != int(number) or number < 0:
        raise ValueError(f"breaker item attribute {key} must be a whole number >= 0, got {item.get(key)!r}")
    return int(number)
