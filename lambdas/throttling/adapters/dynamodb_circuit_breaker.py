"""The circuit breaker shared by the fleet over DynamoDB: one item per breaker, versioned optimistic writes.

The adapter holds no decision logic: it reads the stored state, asks the pure core
(`throttling.core.circuit_breaker.allow/record/force_open`) and stores the answer with one
conditional write that fails if the state moved meanwhile. The low-level client is injected; time
comes from an injected `Clock`. The table has a string partition key `pk`, no sort key, and the TTL
attribute `expires_at` (integer epoch seconds).

Costs (how DynamoDB bills them: `throttling.adapters._dynamodb`):

- Circuit breaker: `allow` on a closed breaker costs 1 consistent read and no write; on an open
  breaker this instance has already seen, 0 until `open_until`; granting the half-open probe
  1 read + 1 write. `record` while closed costs 1 read + 1 write (the fleet-wide window);
  while open (seen) 0. A lost race costs one more write and no read (ALL_OLD again).

Powertools (3.37) circuit breaker, what fits and what does not:
- Used: its public error type. `DynamoDbCircuitBreaker.call` raises Powertools'
  `CircuitBreakerOpenError` with a `CircuitInfo`, so a handler catches the same exception whether
  it uses Powertools' `@circuit_breaker` or this adapter. Also adopted (reimplemented, as ideas):
  its fail-open read policy (a store read error admits the call, logged, because a breaker must
  never become the outage), its never-fail-the-call rule for outcome writes, and its in-process
  fast path, narrowed to what is exact: an OPEN state is cached until its `open_until`, the one
  window in which the pure machine cannot leave OPEN (only an operator's `force_close` can; other
  instances see that at their cached `open_until` at the latest).
- Not used: the decorator and its handler count *consecutive* failures per execution environment
  in module globals and persist only the tripping transition, so the fleet-wide failure-rate and
  slow-call windows of `circuit_breaker` have nowhere to live; they take the time from
  `datetime.now()` in whole seconds (no injectable clock, so no FakeClock tests). Its persistence
  layer is pluggable (`CircuitBreakerPersistenceLayer._get_record/_put_record/_update_record`) but
  stores a fixed `CircuitStateRecord` (state, failure_count, opened_at, probe owner and lease:
  no version, no window, no reason, no `open_until_utc` for a Step Functions Choice), writes the
  half-open -> closed/open transitions unconditionally (a late probe result can overwrite a newer
  state) and sets the probe lease to the recovery timeout; a backend written for it could only
  store Powertools' decisions, not ours. Added here instead: versioned optimistic writes of the
  whole `BreakerState.to_item()` item, an exact single probe across the fleet, and `force_open`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from throttling.adapters._dynamodb import DAY_SEC, attribute, check_name, failed_condition_item, plain_item
from throttling.core import circuit_breaker as breaker_core
from throttling.core.circuit_breaker import Admission, BreakerPolicy, BreakerState, BreakerStatus
from throttling.core.clock import Clock, SystemClock

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient

__all__ = ["BREAKER_CREATE_CONDITION", "BREAKER_WRITE_CONDITION", "DynamoDbCircuitBreaker"]

logger = logging.getLogger(__name__)

# `version` and `status` are DynamoDB reserved words, hence the names.
BREAKER_WRITE_CONDITION = "#version = :read_version"
BREAKER_CREATE_CONDITION = "attribute_not_exists(pk)"

T = TypeVar("T")


class DynamoDbCircuitBreaker:
    """The pure breaker, shared by the fleet through one item per breaker (`pk = name` + `BreakerState.to_item()`).

    Every change is written whole with `BREAKER_WRITE_CONDITION` on the version read (or
    `BREAKER_CREATE_CONDITION` for a new item); a lost race re-decides on the item the failed
    write returned, at most `max_attempts` times. Nothing is written when the pure function
    returns the state unchanged, so a closed breaker costs one read per call.

    :param fail_open: when the store cannot be read, `allow` admits (and logs) instead of raising;
        default True, Powertools' policy.
    :param max_attempts: optimistic writes per call before giving up; default 10. `allow` then
        refuses, `record` drops the outcome (logged), `force_open` raises.
    :param ttl_margin_sec: how long an item outlives the moment it is equivalent to a fresh one;
        default one day (a forgotten OPEN breaker would come back closed).
    """

    def __init__(
        self,
        table_name: str,
        *,
        client: DynamoDBClient,
        policy: BreakerPolicy,
        clock: Clock = SystemClock(),
        consistent_read: bool = True,
        fail_open: bool = True,
        max_attempts: int = 10,
        ttl_margin_sec: float = DAY_SEC,
    ) -> None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        self.table_name = table_name
        self.policy = policy
        self._client = client
        self._clock = clock
        self._consistent_read = consistent_read
        self._fail_open = fail_open
        self._max_attempts = max_attempts
        self._ttl_margin_sec = ttl_margin_sec
        # name -> an OPEN state seen by this instance; exact until its open_until.
        self._open: dict[str, BreakerState] = {}
        self._open_lock = threading.Lock()

    def allow(self, name: str, caller_id: str) -> Admission:
        """May `caller_id` call now? Grants the single half-open probe fleet-wide."""
        return self._allow(name, caller_id)[0]

    def record(self, name: str, caller_id: str, *, success: bool, duration_sec: float) -> None:
        """Account for a finished call; never raises on a store error (the outcome is dropped and logged)."""
        if self._cached_open(name, self._clock.now()) is not None:
            return  # the pure record ignores outcomes while open
        try:
            self._transition(
                name,
                lambda state, now: (None, breaker_core.record(state, self.policy, now, success, duration_sec, caller_id)),
            )
        except _Contended:
            logger.warning("circuit breaker %s: outcome of %s dropped after %d lost races", name, caller_id, self._max_attempts)
        except (ValueError, TypeError):
            raise
        except (ClientError, BotoCoreError):  # Powertools' rule: a breaker write must never fail the call
            logger.warning("circuit breaker %s: could not record an outcome", name, exc_info=True)

    def force_open(self, name: str, reason: str, duration_sec: float | None = None) -> None:
        """Open now (an alarm, an operator) for `duration_sec` (default `policy.open_duration_sec`); never shortens an opening."""
        try:
            self._transition(
                name, lambda state, now: (None, breaker_core.force_open(state, self.policy, now, reason, duration_sec))
            )
        except _Contended:
            raise RuntimeError(
                f"could not open circuit breaker {name!r}: lost {self._max_attempts} write races in a row; retry"
            ) from None

    def state(self, name: str) -> BreakerState:
        """The stored state (a fresh closed breaker when there is no item)."""
        return self._read(name)[0]

    def call(
        self,
        name: str,
        caller_id: str,
        fn: Callable[..., T],
        *args: Any,
        counts_as_failure: Callable[[Exception], bool] = lambda error: True,
        **kwargs: Any,
    ) -> T:
        """Run `fn(*args, **kwargs)` through the breaker and record its outcome and duration.

        Refused: raises Powertools' `CircuitBreakerOpenError` (with a `CircuitInfo`). An exception
        for which `counts_as_failure` is False propagates without being recorded, as in Powertools.
        """
        admission, state = self._allow(name, caller_id)
        if not admission.allowed:
            from aws_lambda_powertools.utilities.circuit_breaker import (
                CircuitBreakerOpenError,
                CircuitInfo,
                CircuitState,
            )

            circuit = CircuitInfo(
                name=name,
                state=CircuitState[admission.status.name],
                failure_count=0,
                opened_at=None if state.opened_at is None else int(state.opened_at),
            )
            raise CircuitBreakerOpenError(
                f"circuit {name!r} is {admission.status.value}; retry after {admission.retry_after_sec:.3f}s", circuit=circuit
            )
        started = self._clock.now()
        try:
            result = fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - the caller's own error: recorded if it counts, always re-raised
            if counts_as_failure(error):
                self.record(name, caller_id, success=False, duration_sec=max(0.0, self._clock.now() - started))
            raise
        self.record(name, caller_id, success=True, duration_sec=max(0.0, self._clock.now() - started))
        return result

    # -- internals ------------------------------------------------------------------------------
    def _allow(self, name: str, caller_id: str) -> tuple[Admission, BreakerState]:
        now = self._clock.now()
        cached = self._cached_open(name, now)
        if cached is not None:
            return breaker_core.allow(cached, self.policy, now, caller_id)[0], cached
        try:
            return self._transition(name, lambda state, now: breaker_core.allow(state, self.policy, now, caller_id))
        except _Contended as contended:
            status = contended.state.status
            return Admission(False, False, 0.0, status), contended.state
        except (ValueError, TypeError):
            raise
        except (ClientError, BotoCoreError):  # the store refused or could not be reached
            if not self._fail_open:
                raise
            logger.warning("circuit breaker %s: store unavailable, failing open", name, exc_info=True)
            return Admission(True, False, 0.0, BreakerStatus.CLOSED), BreakerState()

    def _transition(
        self, name: str, compute: Callable[[BreakerState, float], tuple[T, BreakerState]]
    ) -> tuple[T, BreakerState]:
        check_name("name", name)
        state, exists = self._read(name)
        for _ in range(self._max_attempts):
            now = self._clock.now()
            result, new_state = compute(state, now)
            if new_state is state:
                self._note(name, state, now)
                return result, state
            try:
                self._write(name, new_state, state.version if exists else None, now)
            except _LostRace as lost:
                state, exists = lost.state, lost.exists
                continue
            self._note(name, new_state, now)
            return result, new_state
        raise _Contended(state)

    def _read(self, name: str) -> tuple[BreakerState, bool]:
        response = self._client.get_item(
            TableName=self.table_name, Key={"pk": {"S": name}}, ConsistentRead=self._consistent_read
        )
        item = response.get("Item")
        if item is None:
            return BreakerState(), False
        return BreakerState.from_item(plain_item(item)), True

    def _write(self, name: str, state: BreakerState, read_version: int | None, now: float) -> None:
        item = {"pk": {"S": name}, **{key: attribute(value) for key, value in state.to_item().items()}}
        item["expires_at"] = {"N": str(math.ceil(self._equivalent_to_fresh_at(state, now) + self._ttl_margin_sec))}
        kwargs: dict[str, Any] = {"TableName": self.table_name, "Item": item, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
        if read_version is None:
            kwargs["ConditionExpression"] = BREAKER_CREATE_CONDITION
        else:
            kwargs["ConditionExpression"] = BREAKER_WRITE_CONDITION
            kwargs["ExpressionAttributeNames"] = {"#version": "version"}
            kwargs["ExpressionAttributeValues"] = {":read_version": {"N": str(read_version)}}
        try:
            self._client.put_item(**kwargs)
        except ClientError as error:
            stored = failed_condition_item(error)
            if stored is None:
                raise _LostRace(BreakerState(), exists=False) from None
            raise _LostRace(BreakerState.from_item(plain_item(stored)), exists=True) from None

    def _equivalent_to_fresh_at(self, state: BreakerState, now: float) -> float:
        if state.status is BreakerStatus.OPEN and state.open_until is not None:
            return state.open_until
        if state.status is BreakerStatus.HALF_OPEN and state.probe_expires_at is not None:
            return state.probe_expires_at
        return now + self.policy.window_sec  # closed: every bucket of the window has aged out

    def _cached_open(self, name: str, now: float) -> BreakerState | None:
        with self._open_lock:
            state = self._open.get(name)
            if state is None:
                return None
            if state.open_until is not None and now < state.open_until:
                return state
            del self._open[name]
            return None

    def _note(self, name: str, state: BreakerState, now: float) -> None:
        with self._open_lock:
            if state.status is BreakerStatus.OPEN and state.open_until is not None and now < state.open_until:
                self._open[name] = state
            else:
                self._open.pop(name, None)


class _LostRace(Exception):
    def __init__(self, state: BreakerState, *, exists: bool) -> None:
        self.state = state
        self.exists = exists


class _Contended(Exception):
    def __init__(self, state: BreakerState) -> None:
        self.state = state
