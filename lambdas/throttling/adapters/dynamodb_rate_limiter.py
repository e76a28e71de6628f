"""The GCRA rate limiter over DynamoDB: a sharded bucket, one conditional write per decision and no reads.

The adapter holds no decision logic: it gets the stored TAT (by assuming it, or from a failed
write), asks the pure core (`throttling.core.rate_limiter.decide`) and stores the answer with one
conditional write that fails if the TAT moved meanwhile. The low-level client is injected; time
comes from an injected `Clock`. The table has a string partition key `pk`, no sort key, and the TTL
attribute `expires_at` (integer epoch seconds).

Costs (how DynamoDB bills them: `throttling.adapters._dynamodb`):

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
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from throttling.adapters._dynamodb import failed_condition_item
from throttling.core.clock import Clock, SystemClock
from throttling.core.rate_limiter import (
    GRID_STEPS_PER_SEC,
    RateDecision,
    RatePolicy,
    decide,
    on_grid,
    shard_count_for,
    split_policy,
)

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient

__all__ = [
    "RATE_LIMITER_BACKLOG_CONDITION",
    "RATE_LIMITER_BACKLOG_UPDATE",
    "RATE_LIMITER_CONDITION",
    "RATE_LIMITER_UPDATE",
    "DynamoDbRateLimiter",
    "rate_limiter_key",
]

logger = logging.getLogger(__name__)

# Module constants so Step Functions `arn:aws:states:::dynamodb:updateItem` tasks can copy them
# verbatim (a contract test compares).
# Rate limiter, two forms of the same GCRA step (see DynamoDbRateLimiter): from an idle shard
# (the new TAT computed by `decide`), and onto a backlogged one (DynamoDB adds cost/rate to it).
RATE_LIMITER_UPDATE = "SET tat = :new_tat, expires_at = :expires_at"
RATE_LIMITER_CONDITION = "attribute_not_exists(tat) OR tat <= :based_on_tat"
RATE_LIMITER_BACKLOG_UPDATE = "ADD tat :cost_interval SET expires_at = :expires_at"
RATE_LIMITER_BACKLOG_CONDITION = "tat >= :now AND tat <= :latest_tat"


def rate_limiter_key(bucket: str, shard: int) -> str:
    """The partition key of one shard of a rate-limiter bucket."""
    return f"{bucket}#{shard}"


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
        client: DynamoDBClient,
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
            except ClientError as error:  # a failed condition returns the stored item; anything else is raised
                seen = _stored_tat(failed_condition_item(error))
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
