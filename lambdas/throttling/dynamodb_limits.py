"""DynamoDB adapters of the throttling cores: a sharded GCRA rate limiter, a leased semaphore and a circuit breaker.

The adapters hold no decision logic: each one gets the stored state (by assuming it, from a failed
write, or by reading it), asks the pure core (`rate_limiter.decide`, the reclaim rule of `semaphore`,
`circuit_breaker.allow/record/force_open`) and stores the answer with one conditional write that
fails if the state moved meanwhile. The low-level client is injected (boto3 is never imported
here); time comes from an injected `Clock`. Each table has a string partition key `pk`, no sort
key, and the TTL attribute `expires_at` (integer epoch seconds) where an item can go stale.

Costs (one write = one conditional write request; DynamoDB bills a *failed* conditional write as a
write too, 1 WCU for items up to 1 KB). A failed condition returns the stored item
(`ReturnValuesOnConditionCheckFailure=ALL_OLD`) at no extra read, which is what keeps the limiter
and the semaphore at zero reads:

- Rate limiter, per shard tried: an admitted request costs 1 write when this instance's last-seen
  TAT tells rightly whether the shard is idle (stored TAT <= now) or backlogged (TAT > now); the
  exact value is not needed, because a backlogged shard is advanced by DynamoDB (`ADD`). It costs
  2 writes when the guess was wrong (1 failed write that returns the stored TAT, then 1 that
  succeeds), at most `max_attempts_per_shard`. A denied request costs 0 writes when the
  last-seen TAT already proves the denial (the stored TAT only grows, so the last-seen one is a
  lower bound) and 1 failed write otherwise; with N > 1 shards a denial is final only once every
  shard denied, so it costs up to N x that (a caller that keeps being denied mostly proves it from
  what it has seen, at no write). Reads: always 0. Every number written is an exact decimal of a
  time-grid value (`rate_limiter.TIME_GRID_SEC`), so DynamoDB's decimal conditions and sums agree
  with the float decisions exactly: a lone caller that waits its `retry_after_sec` is admitted.
- Semaphore: acquiring a free slot costs 1 write; renewing a held lease 2 (the failed take tells
  it is held, then the renewal); a denial 1 failed write, plus 1 per expired lease reclaimed and 1
  retry when any was. The first acquire of a semaphore ever adds a rejected update and 1 put that
  creates the item with an empty `leases` map (`SET leases.#owner` needs the map to exist).
  Release: 1 write. Reclaim: 1 consistent read (or a scan) + 1 write per expired lease.
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
import random
import threading
from collections.abc import Callable, Iterator, Mapping
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Any, TypeVar

from throttling import circuit_breaker as breaker_core
from throttling.circuit_breaker import Admission, BreakerPolicy, BreakerState, BreakerStatus
from throttling.clock import Clock, SystemClock
from throttling.rate_limiter import (
    GRID_STEPS_PER_SEC,
    RateDecision,
    RatePolicy,
    decide,
    on_grid,
    shard_count_for,
    split_policy,
)

__all__ = [
    "BREAKER_CREATE_CONDITION",
    "BREAKER_WRITE_CONDITION",
    "RATE_LIMITER_BACKLOG_CONDITION",
    "RATE_LIMITER_BACKLOG_UPDATE",
    "RATE_LIMITER_CONDITION",
    "RATE_LIMITER_UPDATE",
    "SEMAPHORE_ACQUIRE_CONDITION",
    "SEMAPHORE_ACQUIRE_UPDATE",
    "SEMAPHORE_CREATE_CONDITION",
    "SEMAPHORE_RECLAIM_CONDITION",
    "SEMAPHORE_RECLAIM_UPDATE",
    "SEMAPHORE_RELEASE_CONDITION",
    "SEMAPHORE_RELEASE_UPDATE",
    "SEMAPHORE_RENEW_CONDITION",
    "SEMAPHORE_RENEW_UPDATE",
    "DynamoDbCircuitBreaker",
    "DynamoDbRateLimiter",
    "DynamoDbSemaphore",
    "rate_limiter_key",
]

logger = logging.getLogger(__name__)

# -- expressions ---------------------------------------------------------------------------------
# Module constants so Step Functions `arn:aws:states:::dynamodb:updateItem` tasks can copy them
# verbatim (a contract test compares). Placeholders: `#owner` is the lease owner id (any string:
# a map key given through ExpressionAttributeNames), `:expiry` its expiry in epoch seconds,
# `:limit` the semaphore's limit, `:one` = 1, `:minus_one` = -1, `:seen_expiry` the expiry read.

# Rate limiter, two forms of the same GCRA step (see DynamoDbRateLimiter): from an idle shard
# (the new TAT computed by `decide`), and onto a backlogged one (DynamoDB adds cost/rate to it).
RATE_LIMITER_UPDATE = "SET tat = :new_tat, expires_at = :expires_at"
RATE_LIMITER_CONDITION = "attribute_not_exists(tat) OR tat <= :based_on_tat"
RATE_LIMITER_BACKLOG_UPDATE = "ADD tat :cost_interval SET expires_at = :expires_at"
RATE_LIMITER_BACKLOG_CONDITION = "tat >= :now AND tat <= :latest_tat"

SEMAPHORE_CREATE_CONDITION = "attribute_not_exists(pk)"
SEMAPHORE_ACQUIRE_UPDATE = "SET leases.#owner = :expiry ADD lease_count :one"
SEMAPHORE_ACQUIRE_CONDITION = (
    "(attribute_not_exists(lease_count) OR lease_count < :limit) AND attribute_not_exists(leases.#owner)"
)
SEMAPHORE_RENEW_UPDATE = "SET leases.#owner = :expiry"
SEMAPHORE_RENEW_CONDITION = "attribute_exists(leases.#owner)"
SEMAPHORE_RELEASE_UPDATE = "REMOVE leases.#owner ADD lease_count :minus_one"
SEMAPHORE_RELEASE_CONDITION = "attribute_exists(leases.#owner)"
SEMAPHORE_RECLAIM_UPDATE = SEMAPHORE_RELEASE_UPDATE
# Removes the lease only if nobody renewed (or released and re-took) it since it was read.
SEMAPHORE_RECLAIM_CONDITION = "leases.#owner = :seen_expiry"

# `version` and `status` are DynamoDB reserved words, hence the names.
BREAKER_WRITE_CONDITION = "#version = :read_version"
BREAKER_CREATE_CONDITION = "attribute_not_exists(pk)"

_CONDITION_FAILED = "ConditionalCheckFailedException"
_DAY_SEC = 86_400

T = TypeVar("T")


def rate_limiter_key(bucket: str, shard: int) -> str:
    """The partition key of one shard of a rate-limiter bucket."""
    return f"{bucket}#{shard}"


# -- rate limiter --------------------------------------------------------------------------------


class DynamoDbRateLimiter:
    """GCRA over DynamoDB: one item per shard (`pk = "<bucket>#<shard>"`, `tat`, `expires_at`).

    Each decision is one conditional UpdateItem, and the TAT is never read first. The instance
    keeps the last TAT it saw per shard, a lower bound of the stored one (a TAT only grows), and
    picks the write by where that puts the shard:
    - idle (last-seen TAT <= now, or none): the pure `decide` computes the new TAT, stored with
      `RATE_LIMITER_UPDATE` if `RATE_LIMITER_CONDITION` (the stored TAT is still <= now);
    - backlogged (last-seen TAT > now): then max(TAT, now) is the TAT itself, so DynamoDB adds
      cost/rate to it (`RATE_LIMITER_BACKLOG_UPDATE`) if `RATE_LIMITER_BACKLOG_CONDITION` holds:
      TAT >= now and TAT + cost/rate - burst/rate <= now, GCRA's own test. This needs no exact TAT,
      so callers whose last-seen TAT is stale still admit with one write.
    A failed condition returns the stored TAT (ALL_OLD); the instance re-decides on it.
    See the module docstring for the exact costs.

    :param per_partition_writes_per_sec: handed to `shard_count_for`; default 1,000 (a DynamoDB
        partition's write ceiling).
    :param headroom: handed to `shard_count_for`; default 0.5.
    :param max_attempts_per_shard: conditional writes per shard before giving up on it; default 2
        (a write, then one re-decision on the TAT the failed write returned). A shard still
        admitting but contended that long counts as denied with `retry_after_sec` 0.0.
    :param ttl_margin_sec: how long after a shard is back to a full burst its item may be
        deleted by TTL (an absent item is a full one); default 60.
    """

    def __init__(
        self,
        table_name: str,
        *,
        client: Any,
        clock: Clock = SystemClock(),
        rng: random.Random | None = None,
        per_partition_writes_per_sec: float = 1000.0,
        headroom: float = 0.5,
        max_attempts_per_shard: int = 2,
        ttl_margin_sec: float = 60.0,
    ) -> None:
        if isinstance(max_attempts_per_shard, bool) or not isinstance(max_attempts_per_shard, int) or max_attempts_per_shard < 1:
            raise ValueError(f"max_attempts_per_shard must be an int >= 1, got {max_attempts_per_shard!r}")
        if not math.isfinite(ttl_margin_sec) or ttl_margin_sec < 0:
            raise ValueError(f"ttl_margin_sec must be a finite number >= 0, got {ttl_margin_sec!r}")
        # Fail at construction, not on the first request, on a bad sharding setting.
        shard_count_for(1.0, per_partition_writes_per_sec, headroom)
        self.table_name = table_name
        self._client = client
        self._clock = clock
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._per_partition_writes_per_sec = per_partition_writes_per_sec
        self._headroom = headroom
        self._max_attempts = max_attempts_per_shard
        self._ttl_margin_sec = ttl_margin_sec
        # shard key -> a lower bound of its stored TAT.
        self._seen_tat: dict[str, float] = {}
        self._seen_lock = threading.Lock()

    def shards_for(self, policy: RatePolicy) -> int:
        """How many items `policy` is spread over."""
        return shard_count_for(policy.rate_per_sec, self._per_partition_writes_per_sec, self._headroom)

    def try_acquire(self, bucket: str, policy: RatePolicy, cost: int = 1) -> RateDecision:
        """Admit `cost` units of `bucket` now, or say how long to wait.

        With N > 1 shards each decides under `split_policy(policy, N)`: a random shard first (so
        callers spread), then the others in turn until one admits. A denial, when every shard
        denied, carries the smallest wait, so `retry_after_sec` keeps its promise, and `burst`
        requests at one instant are all admitted (the shards' bursts add up to at least it);
        `remaining` and `reset_after_sec` describe the shard with that wait.
        """
        if not isinstance(bucket, str) or not bucket:
            raise ValueError(f"bucket must be a non-empty string, got {bucket!r}")
        shards = self.shards_for(policy)
        shard_policy = split_policy(policy, shards) if shards > 1 else policy
        with self._rng_lock:
            first = self._rng.randrange(shards)
        denials = []
        for step in range(shards):
            decision = self.try_acquire_shard(bucket, (first + step) % shards, shard_policy, cost)
            if decision.allowed:
                return decision
            denials.append(decision)
        return min(denials, key=lambda d: d.retry_after_sec)

    def try_acquire_shard(self, bucket: str, shard: int, shard_policy: RatePolicy, cost: int = 1) -> RateDecision:
        """One shard's decision under its own policy (what `try_acquire` calls; tests and the bench use it too)."""
        key = rate_limiter_key(bucket, shard)
        now = self._clock.now()
        seen = self._seen(key)
        decision = decide(seen, now, shard_policy, cost)
        for _ in range(self._max_attempts):
            if not decision.allowed:
                # Decided on the stored TAT, or on a lower bound of it: either way a true denial.
                return decision
            # The same test as decide's max(TAT, now): on the grid
            backlogged = seen is not None and seen >= on_grid(now)
            try:
                if backlogged:
                    admitted = self._add_to_backlog(key, now, shard_policy, cost)
                else:
                    admitted = self._set_from_idle(key, decision)
            except Exception as error:  # noqa: BLE001 - botocore's ClientError, told apart by its code
                seen = _stored_tat(_failed_condition_item(error))
                self._remember(key, seen)
                decision = decide(seen, now, shard_policy, cost)
                continue
            self._remember(key, admitted.new_tat)
            return admitted
        if not decision.allowed:
            return decision
        # Still admissible but every write lost a race: other callers were admitted meanwhile.
        logger.debug("rate limiter shard %s contended for %d attempts", key, self._max_attempts)
        return RateDecision(
            allowed=False,
            retry_after_sec=0.0,
            remaining=decision.remaining,
            reset_after_sec=decision.reset_after_sec,
            new_tat=None,
            based_on_tat=decision.based_on_tat,
        )

    def _set_from_idle(self, key: str, decision: RateDecision) -> RateDecision:
        assert decision.new_tat is not None  # an admitted decision always has a new TAT
        self._client.update_item(
            TableName=self.table_name,
            Key={"pk": {"S": key}},
            UpdateExpression=RATE_LIMITER_UPDATE,
            ConditionExpression=RATE_LIMITER_CONDITION,
            ExpressionAttributeValues={
                ":new_tat": _grid_number(decision.new_tat),
                ":based_on_tat": _grid_number(decision.based_on_tat),
                # Back to a full burst at `new_tat`; from then on an absent item means the same.
                ":expires_at": {"N": str(math.ceil(decision.new_tat + self._ttl_margin_sec))},
            },
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return decision

    def _add_to_backlog(self, key: str, now: float, policy: RatePolicy, cost: int) -> RateDecision:
        interval = policy.emission_interval_sec
        now_on_grid = on_grid(now)  # what decide() compares with
        response = self._client.update_item(
            TableName=self.table_name,
            Key={"pk": {"S": key}},
            UpdateExpression=RATE_LIMITER_BACKLOG_UPDATE,
            ConditionExpression=RATE_LIMITER_BACKLOG_CONDITION,
            ExpressionAttributeValues={
                ":cost_interval": _grid_number(cost * interval),
                ":now": _grid_number(now_on_grid),
                # GCRA's test with max(TAT, now) = TAT: TAT + cost*T - burst*T <= now.
                ":latest_tat": _grid_number(now_on_grid + (policy.burst - cost) * interval),
                # The new TAT is at most now + burst*T: back to a full burst by then.
                ":expires_at": {"N": str(math.ceil(now + policy.burst * interval + self._ttl_margin_sec))},
            },
            ReturnValues="UPDATED_OLD",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        old_tat = _stored_tat(response.get("Attributes"))
        decision = decide(old_tat, now, policy, cost)
        if decision.allowed:
            return decision
        # Only for an item written off the grid by an older version, read rounded up: DynamoDB admitted
        # it, so report it as admitted.
        return RateDecision(True, 0.0, 0, max(0.0, decision.based_on_tat + cost * interval - now),
                            decision.based_on_tat + cost * interval, decision.based_on_tat)

    def _seen(self, key: str) -> float | None:
        with self._seen_lock:
            return self._seen_tat.get(key)

    def _remember(self, key: str, tat: float | None) -> None:
        if tat is None:
            return
        with self._seen_lock:
            # Keep the larger: a slower thread of this instance must not lower the bound.
            self._seen_tat[key] = max(tat, self._seen_tat.get(key, tat))


# -- semaphore -----------------------------------------------------------------------------------


class DynamoDbSemaphore:
    """A counting semaphore of expiring leases in one item (`pk = name`, `leases` map, `lease_count`).

    Same rule as the pure `semaphore` core: a lease whose expiry <= now is reclaimable; an owner
    holding a lease renews it without taking a second slot. Unlike the core, a held lease that
    expired but was not reclaimed yet is renewed too (its slot was never handed on, so the count
    does not change; the two differ only when the limit was lowered below the leases held).
    The item has no TTL: it lives as long as the downstream it guards.
    """

    def __init__(self, table_name: str, *, client: Any, clock: Clock = SystemClock()) -> None:
        self.table_name = table_name
        self._client = client
        self._clock = clock

    def acquire(self, name: str, owner_id: str, *, limit: int, lease_sec: float) -> bool:
        """Take (or renew) a slot of `name` for `owner_id` until now + `lease_sec`; False when all `limit` are held."""
        _check_name("name", name)
        _check_name("owner_id", owner_id)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an int >= 0, got {limit!r}")
        if isinstance(lease_sec, bool) or not isinstance(lease_sec, (int, float)) or not math.isfinite(lease_sec) or lease_sec <= 0:
            raise ValueError(f"lease_sec must be a finite number > 0, got {lease_sec!r}; size it above the longest call it guards")
        now = self._clock.now()
        expiry = _number(now + lease_sec)
        taken, stored = self._take(name, owner_id, expiry, limit)
        if taken:
            return True
        if stored is None:
            # The item (and so the map `SET leases.#owner` writes into) does not exist yet.
            self._create(name)
            taken, stored = self._take(name, owner_id, expiry, limit)
            if taken:
                return True
            if stored is None:
                raise RuntimeError(f"semaphore item {name!r} vanished right after it was created; is a TTL set on it?")
        leases = _leases_of(stored)
        if owner_id in leases:
            if self._renew(name, owner_id, expiry):
                return True
            # Reclaimed or released between the two writes: compete for a slot like anyone.
            taken, _ = self._take(name, owner_id, expiry, limit)
            return taken
        if not self._remove_expired(name, leases, now):
            return False
        taken, _ = self._take(name, owner_id, expiry, limit)
        return taken

    def release(self, name: str, owner_id: str) -> bool:
        """Give back `owner_id`'s slot; True if a lease was removed, False if it was not held (idempotent)."""
        _check_name("name", name)
        _check_name("owner_id", owner_id)
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key={"pk": {"S": name}},
                UpdateExpression=SEMAPHORE_RELEASE_UPDATE,
                ConditionExpression=SEMAPHORE_RELEASE_CONDITION,
                ExpressionAttributeNames={"#owner": owner_id},
                ExpressionAttributeValues={":minus_one": {"N": "-1"}},
            )
        except Exception as error:  # noqa: BLE001
            _failed_condition_item(error)
            return False
        return True

    def reclaim_expired(self, name: str) -> list[str]:
        """Remove `name`'s expired leases; returns the owners whose leases this call removed."""
        _check_name("name", name)
        response = self._client.get_item(
            TableName=self.table_name,
            Key={"pk": {"S": name}},
            ConsistentRead=True,
            ProjectionExpression="leases",
        )
        return self._remove_expired(name, _leases_of(response.get("Item", {})), self._clock.now())

    def reclaim_all_expired(self) -> dict[str, list[str]]:
        """Scan the table and remove every expired lease (what the cleanup function runs); name -> owners removed."""
        now = self._clock.now()
        reclaimed: dict[str, list[str]] = {}
        for item in self._scan():
            owners = self._remove_expired(item["pk"]["S"], _leases_of(item), now)
            if owners:
                reclaimed[item["pk"]["S"]] = owners
        return reclaimed

    def _take(self, name: str, owner_id: str, expiry: dict[str, str], limit: int) -> tuple[bool, dict[str, Any] | None]:
        """The acquire write; on a failed condition, the stored item it returned (None: no item yet)."""
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key={"pk": {"S": name}},
                UpdateExpression=SEMAPHORE_ACQUIRE_UPDATE,
                ConditionExpression=SEMAPHORE_ACQUIRE_CONDITION,
                ExpressionAttributeNames={"#owner": owner_id},
                ExpressionAttributeValues={":expiry": expiry, ":one": {"N": "1"}, ":limit": {"N": str(limit)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Exception as error:  # noqa: BLE001
            if _error_code(error) == "ValidationException" and "document path" in str(error):
                return False, None
            return False, _failed_condition_item(error) or {}
        return True, None

    def _create(self, name: str) -> None:
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item={"pk": {"S": name}, "leases": {"M": {}}, "lease_count": {"N": "0"}},
                ConditionExpression=SEMAPHORE_CREATE_CONDITION,
            )
        except Exception as error:  # noqa: BLE001
            _failed_condition_item(error)  # another caller created it first: fine

    def _renew(self, name: str, owner_id: str, expiry: dict[str, str]) -> bool:
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key={"pk": {"S": name}},
                UpdateExpression=SEMAPHORE_RENEW_UPDATE,
                ConditionExpression=SEMAPHORE_RENEW_CONDITION,
                ExpressionAttributeNames={"#owner": owner_id},
                ExpressionAttributeValues={":expiry": expiry},
            )
        except Exception as error:  # noqa: BLE001
            _failed_condition_item(error)
            return False
        return True

    def _remove_expired(self, name: str, leases: Mapping[str, dict[str, str]], now: float) -> list[str]:
        removed = []
        for owner_id, expiry in sorted(leases.items()):
            if float(expiry["N"]) > now:
                continue
            try:
                self._client.update_item(
                    TableName=self.table_name,
                    Key={"pk": {"S": name}},
                    UpdateExpression=SEMAPHORE_RECLAIM_UPDATE,
                    ConditionExpression=SEMAPHORE_RECLAIM_CONDITION,
                    ExpressionAttributeNames={"#owner": owner_id},
                    ExpressionAttributeValues={":minus_one": {"N": "-1"}, ":seen_expiry": expiry},
                )
            except Exception as error:  # noqa: BLE001
                _failed_condition_item(error)  # renewed, released or reclaimed by someone else meanwhile
                continue
            removed.append(owner_id)
        return removed

    def _scan(self) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"TableName": self.table_name, "ConsistentRead": True, "ProjectionExpression": "pk, leases"}
        while True:
            page = self._client.scan(**kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# -- circuit breaker -----------------------------------------------------------------------------


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
        client: Any,
        policy: BreakerPolicy,
        clock: Clock = SystemClock(),
        consistent_read: bool = True,
        fail_open: bool = True,
        max_attempts: int = 10,
        ttl_margin_sec: float = _DAY_SEC,
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
        except Exception:  # noqa: BLE001 - Powertools' rule: a breaker write must never fail the call
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
        except Exception as error:
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
        except Exception:
            if not self._fail_open:
                raise
            logger.warning("circuit breaker %s: store unavailable, failing open", name, exc_info=True)
            return Admission(True, False, 0.0, BreakerStatus.CLOSED), BreakerState()

    def _transition(
        self, name: str, compute: Callable[[BreakerState, float], tuple[T, BreakerState]]
    ) -> tuple[T, BreakerState]:
        _check_name("name", name)
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
        return BreakerState.from_item(_plain_item(item)), True

    def _write(self, name: str, state: BreakerState, read_version: int | None, now: float) -> None:
        item = {"pk": {"S": name}, **{key: _attribute(value) for key, value in state.to_item().items()}}
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
        except Exception as error:  # noqa: BLE001
            stored = _failed_condition_item(error)
            if stored is None:
                raise _LostRace(BreakerState(), exists=False) from None
            raise _LostRace(BreakerState.from_item(_plain_item(stored)), exists=True) from None

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


# -- attribute values ----------------------------------------------------------------------------


def _error_code(error: BaseException) -> str | None:
    response = getattr(error, "response", None)
    if isinstance(response, Mapping):
        return response.get("Error", {}).get("Code")
    return None


def _failed_condition_item(error: BaseException) -> dict[str, Any] | None:
    """The stored item a failed conditional write returned (None when there was none); re-raise anything else."""
    if _error_code(error) != _CONDITION_FAILED:
        raise error
    return error.response.get("Item")  # type: ignore[attr-defined]


def _number(value: float | int) -> dict[str, str]:
    """A DynamoDB number that round-trips to the same float (shortest repr, never exponent notation)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"cannot store {value!r} as a DynamoDB number")
    if isinstance(value, int):
        return {"N": str(value)}
    return {"N": format(Decimal(repr(value)), "f")}


def _grid_number(value: float) -> dict[str, str]:
    """A time-grid value as the exact decimal DynamoDB stores and compares (at most 18 fractional digits).

    Not the shortest repr, which `_number` writes: DynamoDB's sums of those drift from the float sums.
    """
    if on_grid(value) != value:
        raise ValueError(f"{value!r} is not on the limiter's time grid; round it with rate_limiter.on_grid")
    return {"N": format(Decimal(value), "f")}


def _stored_tat(item: Mapping[str, Any] | None) -> float | None:
    """The item's `tat` as a float on the time grid: exact for what this adapter writes, rounded up otherwise.

    Rounded up, an item an older version wrote with more digits still satisfies the conditions
    computed from it (`tat <= :based_on_tat`), instead of failing them forever.
    """
    if not item or "tat" not in item:
        return None
    with localcontext() as context:
        context.prec = 60  # ample for 38 significant digits times 2^18
        steps = (Decimal(item["tat"]["N"]) * GRID_STEPS_PER_SEC).to_integral_value(rounding=ROUND_CEILING)
    return int(steps) / GRID_STEPS_PER_SEC


def _leases_of(item: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    return dict(item.get("leases", {}).get("M", {}))


def _attribute(value: str | int | float) -> dict[str, str]:
    if isinstance(value, str):
        return {"S": value}
    return _number(value)


def _plain_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """Strings and numbers (as Decimal) of a low-level item; other types are left out (from_item ignores them)."""
    plain: dict[str, Any] = {}
    for key, value in item.items():
        if "S" in value:
            plain[key] = value["S"]
        elif "N" in value:
            plain[key] = Decimal(value["N"])
    return plain


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
