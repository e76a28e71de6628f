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
- The inner loop (`adaptive=`, `throttling.core.adaptive_rate`): the same item also holds the
  bucket's current rate (`rate_base`, `rate_base_at`, `rate_peak`), its block (`blocked_until`) and `signals`, a
  count of the signals written. An admission costs what it costs above, still one write: its
  condition adds `signals <= :signals_seen`, so a caller that has not seen the latest cut or block
  fails once (1 write), learns the state from the failed write, and re-decides under it. A reported
  signal costs 1 write per shard when it cuts or lengthens the block, 0 when the state already
  answers it (a repeat from the same overload), plus 1 failed write per shard whose state moved
  since this instance saw it.
- A published limit (`report_published`, `adaptive_rate.on_published`): the item also holds the rate the
  downstream last published (`published_rate`, the shard's share of it) and the admission of the call that
  carried it (`published_at`); while it is believed (`PUBLISHED_TTL_SEC`) it caps the bucket's rate, for
  tenants as for the bucket as a whole. A report costs 0 writes when the state this instance last saw
  (every admission's write returns the stored item at no extra cost) already holds that rate: the same
  rate within 1 %, less than half its TTL old. Otherwise 1 conditional write per shard, which holds if
  no newer call's publication was written meanwhile; one that finds newer news learns it and stops,
  nothing retried. A downstream publishing a steady rate so costs each instance about one write every
  half TTL, and a changed rate one write per instance that had not yet seen it. Admissions do not wait
  for a publication they have not seen: an instance admits once more at the rate it knew, and learns the
  new one from that write's answer.

Tenants and priority classes (`tenant=`/`priority=`, `throttling.core.hierarchical_rate`): the same item
also holds each tenant's TAT, as a top-level attribute `t#<tenant key>`, and an admission is still
one conditional UpdateItem on it, which moves the global TAT and the tenant's together (or only the
global one for a borrowed admission) under one condition on both. Why one item, not a
TransactWriteItems over a global item and a tenant item: a transaction bills 2 writes per item (4
per admission against 1), two items written together conflict with every other admission on either
(a transaction that meets a concurrent write is cancelled whole, and the global item is the one
every admission writes), and the reason to split a hot limit over items, one partition's ~1,000
writes/s, is already handled by sharding: each shard's item holds its own tenants under its own
share of the rate. The item's size is bounded: at most `MAX_TENANTS` (256) named tenants plus
`unknown_tenant_slots` (at most 64) slots, each at most 66 characters of name and a number of at
most 21 bytes, so under 30 KB, far below DynamoDB's 400 KB; and since a write is billed per KB of the
item, each admission also removes (conditionally: only if still idle) up to `STALE_TENANTS_PER_WRITE`
tenant entries whose bucket was full again when last seen (an absent entry is a full bucket), so an
item holds about the tenants active within the last few seconds, not every tenant ever seen. A
request with neither a tenant nor a class takes the paths above, byte for byte.

Shards and the inner loop: each shard's item holds its own share of the rate (the rate in force
split over the shards) and its own block, and a signal is written to every shard, so a cut reaches
the callers of every shard; the dedup (a signal counts only for a call admitted after the shard's
last cut took effect) keeps a burst of 429s to one cut per shard, and every shard cuts alike.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Mapping
from dataclasses import replace
from decimal import ROUND_CEILING, Decimal, localcontext
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from throttling.adapters._dynamodb import failed_condition_item, number
from throttling.core import names
from throttling.core.adaptive_rate import (
    PUBLISHED_TTL_SEC,
    AdaptiveRatePolicy,
    AdaptiveState,
    SignalOutcome,
    decide_adaptive,
    effective_policy,
    on_published,
    on_signal,
    recovered_at,
)
from throttling.core.clock import Clock, SystemClock
from throttling.core.hierarchical_rate import TenantShares, class_depth_tokens, decide_hierarchical, tenant_key
from throttling.core.rate_limiter import (
    GRID_STEPS_PER_SEC,
    RateDecision,
    RatePolicy,
    decide,
    depth_sec,
    on_grid,
    shard_count_for,
    split_policy,
)

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient

__all__ = [
    "ADAPTIVE_BACKLOG_CONDITION",
    "ADAPTIVE_CONDITION",
    "ADAPTIVE_PUBLISHED_CONDITION",
    "ADAPTIVE_PUBLISHED_UPDATE",
    "ADAPTIVE_SIGNAL_CONDITION",
    "ADAPTIVE_SIGNAL_UPDATE",
    "ADAPTIVE_UPDATE",
    "RATE_LIMITER_BACKLOG_CONDITION",
    "RATE_LIMITER_BACKLOG_UPDATE",
    "RATE_LIMITER_CONDITION",
    "RATE_LIMITER_UPDATE",
    "STALE_TENANTS_PER_WRITE",
    "TENANT_TAT_PREFIX",
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
# The same two steps with the inner loop: a write holds only if this caller has seen every signal
# (`signals` only grows), so a cut or a block reaches every caller at its next write. The first
# admission of a bucket also records when its rate started (a seed climbs from then).
_SIGNALS_SEEN = "(attribute_not_exists(signals) OR signals <= :signals_seen)"
ADAPTIVE_UPDATE = ("SET tat = :new_tat, expires_at = :expires_at, rate_base = if_not_exists(rate_base, :rate_base), "
                   "rate_base_at = if_not_exists(rate_base_at, :rate_base_at)")
ADAPTIVE_CONDITION = f"(attribute_not_exists(tat) OR tat <= :based_on_tat) AND {_SIGNALS_SEEN}"
ADAPTIVE_BACKLOG_CONDITION = f"tat >= :now AND tat <= :latest_tat AND {_SIGNALS_SEEN}"
# A signal: the new rate, its start and the block, written if the state it was computed from is still the stored one.
ADAPTIVE_SIGNAL_UPDATE = ("SET rate_base = :rate_base, rate_base_at = :rate_base_at, rate_peak = :rate_peak, "
                          "blocked_until = :blocked_until, expires_at = :expires_at ADD signals :one")
ADAPTIVE_SIGNAL_CONDITION = _SIGNALS_SEEN
# A published rate: written unless the item already holds one carried by a later-admitted call (answers
# overtake each other; an older call's headers are older news).
ADAPTIVE_PUBLISHED_UPDATE = ("SET published_rate = :published_rate, published_at = :published_at, "
                             "expires_at = :expires_at")
ADAPTIVE_PUBLISHED_CONDITION = "attribute_not_exists(published_at) OR published_at <= :published_at"
# Tenants: each tenant's TAT is the attribute `t#<tenant key>` of the shard's item.
TENANT_TAT_PREFIX = names.LIMITER_TENANT_TAT_PREFIX
# Idle tenants' entries an admission removes at most (each one adds a condition to its write).
STALE_TENANTS_PER_WRITE = 2


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
        # shard key -> the inner loop's state as last seen (the one with the most signals).
        self._seen_state: dict[str, AdaptiveState] = {}
        # (shard key, tenant key) -> a lower bound of the tenant's stored TAT; shard key -> entries seen idle.
        self._seen_tenant_tat: dict[tuple[str, str], float] = {}
        self._idle_tenants: dict[str, set[str]] = {}
        self._seen_lock = threading.Lock()

    def shards_for(self, policy: RatePolicy) -> int:
        """How many items `policy` is spread over."""
        return shard_count_for(policy.rate_per_sec, self._per_partition_writes_per_sec, self._headroom)

    def try_acquire(self, bucket: str, policy: RatePolicy, cost: int = 1,
                    adaptive: AdaptiveRatePolicy | None = None, *, tenant: str | None = None,
                    priority: str | None = None, shares: TenantShares | None = None) -> RateDecision:
        """Admit `cost` units of `bucket` now, or say how long to wait.

        With `adaptive`, under the bucket's current rate and block (the inner loop), `policy` being
        its ceiling; without, at `policy` exactly. With a `tenant` or a `priority`, under `shares`
        (default `TenantShares()`): the tenant's share and the class's depth
        (`throttling.core.hierarchical_rate`); with neither, as before tenants, byte for byte.

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
            shard = (first + step) % shards
            if tenant is not None or priority is not None:
                decision = self.try_acquire_tenant_shard(bucket, shard, shard_policy, shares or TenantShares(),
                                                         tenant=tenant, priority=priority, cost=cost, adaptive=adaptive)
            elif adaptive is None:
                decision = self.try_acquire_shard(bucket, shard, shard_policy, cost)
            else:
                decision = self.try_acquire_adaptive_shard(bucket, shard, shard_policy, adaptive, cost)
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

    def report_signal(self, bucket: str, policy: RatePolicy, adaptive: AdaptiveRatePolicy, *, admitted_at: float,
                      retry_after_sec: float | None) -> list[SignalOutcome]:
        """A downstream answered a call of `bucket` admitted at `admitted_at` (its `RateDecision.decided_at`)
        with a throttling signal: block every shard for `retry_after_sec` and cut its rate, unless the
        shard's state already answers the signal. One outcome per shard; a shard whose state kept
        moving for `max_attempts_per_shard` writes is left to the next signal (logged)."""
        if not isinstance(bucket, str) or not bucket:
            raise ValueError(f"bucket must be a non-empty string, got {bucket!r}")
        shards = self.shards_for(policy)
        shard_policy = split_policy(policy, shards) if shards > 1 else policy
        return [self._signal_shard(rate_limiter_key(bucket, shard), shard_policy, adaptive, admitted_at, retry_after_sec)
                for shard in range(shards)]

    def report_published(self, bucket: str, policy: RatePolicy, adaptive: AdaptiveRatePolicy, *, admitted_at: float,
                         published_per_sec: float | None) -> list[bool]:
        """The downstream's answer to a call of `bucket` admitted at `admitted_at` published its limit,
        `published_per_sec` for the whole downstream (`RateLimitInfo.published_per_sec`): each of the N shards
        believes its share (published / N), as the policy is divided. Whether each shard's item was written.

        Decided by `on_published` on the state this instance last saw, so an answer that is no news costs
        nothing; news costs one conditional write per shard. A write that finds a newer call's publication
        stored is not an error and is not retried: the state it returns is learnt, and that is newer news.
        """
        if not isinstance(bucket, str) or not bucket:
            raise ValueError(f"bucket must be a non-empty string, got {bucket!r}")
        shards = self.shards_for(policy)
        shard_policy = split_policy(policy, shards) if shards > 1 else policy
        share = None if published_per_sec is None else published_per_sec / shards
        return [self._publish_shard(rate_limiter_key(bucket, shard), shard_policy, adaptive, admitted_at, share)
                for shard in range(shards)]

    def _publish_shard(self, key: str, shard_policy: RatePolicy, adaptive: AdaptiveRatePolicy, admitted_at: float,
                       published_per_sec: float | None) -> bool:
        now = self._clock.now()
        new = on_published(self._state(key), now, admitted_at, published_per_sec)
        if new is None:
            return False
        assert new.published_per_sec is not None and new.published_at is not None
        try:
            self._client.update_item(
                TableName=self.table_name,
                Key={"pk": {"S": key}},
                UpdateExpression=ADAPTIVE_PUBLISHED_UPDATE,
                ConditionExpression=ADAPTIVE_PUBLISHED_CONDITION,
                ExpressionAttributeValues={
                    ":published_rate": number(new.published_per_sec),
                    ":published_at": _grid_number(new.published_at),
                    ":expires_at": {"N": str(self._expiry(max(now, self._seen(key) or now), new, shard_policy, adaptive))},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:  # a failed condition: a later call's publication is stored; else raised
            self._learn(key, failed_condition_item(error))
            return False
        self._remember_state(key, new)
        if new.published_per_sec * (1 - adaptive.published_headroom) < shard_policy.rate_per_sec:
            logger.info("rate limiter shard %s: the downstream publishes %.3f req/s for it, under its ceiling %.3f",
                        key, new.published_per_sec, shard_policy.rate_per_sec)
        return True

    def seen_state(self, bucket: str, shard: int = 0) -> AdaptiveState:
        """The inner loop's state of one shard as this instance last saw it."""
        return self._state(rate_limiter_key(bucket, shard))

    def try_acquire_adaptive_shard(self, bucket: str, shard: int, shard_policy: RatePolicy, adaptive: AdaptiveRatePolicy,
                                   cost: int = 1) -> RateDecision:
        """`try_acquire_shard` under the shard's current rate and block (`adaptive_rate.decide_adaptive`)."""
        key = rate_limiter_key(bucket, shard)
        now = self._clock.now()
        for _ in range(self._max_attempts):
            seen, state = self._seen(key), self._state(key)
            decision = decide_adaptive(seen, state, now, shard_policy, adaptive, cost)
            if not decision.allowed:
                # On the stored state, or on one no newer than it: a block or a rate only a signal lifts
                # early, and a TAT only grows. Either way a true denial.
                return decision
            rate_policy = effective_policy(state, now, shard_policy, adaptive, cost)
            started = state.started(now, shard_policy.rate_per_sec, adaptive)
            expires_at = self._expiry(max(decision.new_tat or now, now + rate_policy.burst * rate_policy.emission_interval_sec),
                                      started, shard_policy, adaptive)
            try:
                if seen is not None and seen >= on_grid(now):
                    old_item = self._add_to_backlog_adaptive(key, now, rate_policy, cost, state, expires_at)
                    admitted = decide(_stored_tat(old_item), now, rate_policy, cost)
                    if not admitted.allowed:  # only for an item written off the grid; DynamoDB admitted it
                        admitted = decision
                else:
                    old_item = self._set_from_idle_adaptive(key, decision, started, state, expires_at)
                    admitted = decision
            except ClientError as error:
                self._learn(key, failed_condition_item(error))
                continue
            self._remember(key, admitted.new_tat)
            self._remember_state(key, _learned_state(old_item, started), item_says_publication=True)
            return admitted
        # Every write lost a race; the state the last one returned may still prove a real denial (a block, a full bucket).
        decision = decide_adaptive(self._seen(key), self._state(key), now, shard_policy, adaptive, cost)
        if not decision.allowed:
            return decision
        logger.debug("rate limiter shard %s contended for %d attempts", key, self._max_attempts)
        return RateDecision(allowed=False, retry_after_sec=0.0, remaining=0, reset_after_sec=0.0, new_tat=None,
                            based_on_tat=on_grid(now), decided_at=now)

    def try_acquire_tenant_shard(self, bucket: str, shard: int, shard_policy: RatePolicy, shares: TenantShares, *,
                                 tenant: str | None, priority: str | None, cost: int = 1,
                                 adaptive: AdaptiveRatePolicy | None = None) -> RateDecision:
        """One shard's decision for a tenant and a class (`hierarchical_rate.decide_hierarchical`), under the
        shard's current rate and block with `adaptive`: one conditional write on the shard's item."""
        key = rate_limiter_key(bucket, shard)
        tkey = None if tenant is None else tenant_key(tenant, shares)
        for _ in range(self._max_attempts):
            now = self._clock.now()
            seen, state = self._seen(key), self._state(key)
            seen_tenant = None if tkey is None else self._seen_tenant(key, tkey)
            if adaptive is not None:
                blocked = decide_adaptive(seen, state, now, shard_policy, adaptive, cost)
                if not blocked.allowed and on_grid(now) < state.blocked_until:
                    return blocked
                rate_policy = effective_policy(state, now, shard_policy, adaptive, cost)
            else:
                rate_policy = shard_policy
            outcome = decide_hierarchical(seen, seen_tenant, now, rate_policy, shares, tenant=tenant,
                                          priority=priority, cost=cost)
            if not outcome.allowed:
                # Every path's test only gets harder as TATs grow, and what this instance saw is a lower bound
                # of each: a true denial.
                return outcome.decision
            try:
                old_item, removed = self._write_tenant_admission(key, tkey, now, rate_policy, outcome, cost, state,
                                                                 adaptive, shard_policy, shares, priority,
                                                                 seen=seen, seen_tenant=seen_tenant)
            except ClientError as error:
                item = failed_condition_item(error)
                if not item:
                    # No item: TTL took it (every bucket in it was full); what this instance saw is history.
                    self._forget(key)
                self._learn(key, item)
                # The idle entries too: one this instance meant to remove may be busy again, which failed the write.
                self._learn_tenants(key, item, tkey, now=now)
                continue
            admitted = outcome.decision
            old_tat = _stored_tat(old_item)
            if seen is not None and seen >= on_grid(now):
                # DynamoDB added to the TAT it held: the decision on it says where it stands now.
                on_stored = decide(old_tat, now, rate_policy, cost, outcome.depth_tokens)
                admitted = on_stored if on_stored.allowed else admitted
            self._remember(key, admitted.new_tat)
            if tkey is not None and not outcome.borrowed:
                assert outcome.tenant_policy is not None
                tenant_new = outcome.tenant_new_tat
                if seen_tenant is not None and seen_tenant >= on_grid(now):
                    stored_tenant = _stored_tat({"tat": old_item[_tenant_attribute(tkey)]}) if old_item and \
                        _tenant_attribute(tkey) in old_item else None
                    tenant_new = decide(stored_tenant, now, outcome.tenant_policy, cost,
                                        class_depth_tokens(outcome.tenant_policy, shares, priority, cost)).new_tat
                self._remember_tenant(key, tkey, tenant_new)
            self._learn_tenants(key, old_item, None, now=now, removed=removed)
            if adaptive is not None:
                started = state.started(now, shard_policy.rate_per_sec, adaptive)
                self._remember_state(key, _learned_state(old_item, started), item_says_publication=True)
            return admitted
        # Every write lost a race.
        logger.debug("rate limiter shard %s contended for %d attempts", key, self._max_attempts)
        return RateDecision(allowed=False, retry_after_sec=0.0, remaining=0, reset_after_sec=0.0, new_tat=None,
                            based_on_tat=on_grid(self._clock.now()), decided_at=self._clock.now())

    def _write_tenant_admission(self, key: str, tkey: str | None, now: float, rate_policy: RatePolicy, outcome: Any,
                                cost: int, state: AdaptiveState, adaptive: AdaptiveRatePolicy | None,
                                shard_policy: RatePolicy, shares: TenantShares, priority: str | None, *,
                                seen: float | None, seen_tenant: float | None) -> tuple[dict[str, Any] | None, set[str]]:
        """The one conditional UpdateItem of an admission: the global TAT, the tenant's unless borrowed, idle entries
        removed; each part in the form `try_acquire_shard` explains (SET from idle, ADD onto a backlog), chosen by
        the TATs the decision was made on (`seen`, `seen_tenant`), so the caller reads the answer the same way."""
        now_on_grid = on_grid(now)
        interval = rate_policy.emission_interval_sec
        sets, adds, removes, conditions = [], [], [], []
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        decision = outcome.decision
        if seen is not None and seen >= now_on_grid:
            adds.append("tat :cost_interval")
            conditions.append("tat >= :now AND tat <= :latest_tat")
            values[":cost_interval"] = _grid_number(cost * interval)
            values[":latest_tat"] = _grid_number(now_on_grid + depth_sec(rate_policy, cost, outcome.depth_tokens)
                                                 - cost * interval)
            values[":now"] = _grid_number(now_on_grid)
        else:
            sets.append("tat = :new_tat")
            conditions.append("(attribute_not_exists(tat) OR tat <= :based_on_tat)")
            values[":new_tat"] = _grid_number(decision.new_tat)
            values[":based_on_tat"] = _grid_number(decision.based_on_tat)
        busy_until = now + rate_policy.burst * interval
        if tkey is not None and not outcome.borrowed:
            own = outcome.tenant_policy
            names["#tenant"] = _tenant_attribute(tkey)
            if seen_tenant is not None and seen_tenant >= now_on_grid:
                adds.append("#tenant :tenant_cost_interval")
                conditions.append("#tenant >= :now AND #tenant <= :tenant_latest_tat")
                values[":tenant_cost_interval"] = _grid_number(cost * own.emission_interval_sec)
                own_depth = class_depth_tokens(own, shares, priority, cost)
                values[":tenant_latest_tat"] = _grid_number(now_on_grid + depth_sec(own, cost, own_depth)
                                                            - cost * own.emission_interval_sec)
                values[":now"] = _grid_number(now_on_grid)
            else:
                sets.append("#tenant = :tenant_new_tat")
                conditions.append("(attribute_not_exists(#tenant) OR #tenant <= :tenant_based_on_tat)")
                values[":tenant_new_tat"] = _grid_number(outcome.tenant_new_tat)
                values[":tenant_based_on_tat"] = _grid_number(outcome.tenant_based_on_tat)
            busy_until = max(busy_until, now + own.burst * own.emission_interval_sec)
        with self._seen_lock:
            stale = sorted(self._idle_tenants.get(key, set()) - {tkey})[:STALE_TENANTS_PER_WRITE]
        for index, idle in enumerate(stale):
            names[f"#idle{index}"] = _tenant_attribute(idle)
            removes.append(f"#idle{index}")
            # Removed only if still full when written: an absent entry means a full bucket.
            conditions.append(f"(attribute_not_exists(#idle{index}) OR #idle{index} <= :now)")
            values[":now"] = _grid_number(now_on_grid)
        if adaptive is not None:
            started = state.started(now, shard_policy.rate_per_sec, adaptive)
            assert started.rate_base_per_sec is not None and started.rate_base_at is not None
            sets.append("rate_base = if_not_exists(rate_base, :rate_base)")
            sets.append("rate_base_at = if_not_exists(rate_base_at, :rate_base_at)")
            conditions.append(_SIGNALS_SEEN)
            values[":rate_base"] = number(started.rate_base_per_sec)
            values[":rate_base_at"] = _grid_number(started.rate_base_at)
            values[":signals_seen"] = {"N": str(state.signals)}
            expires_at = self._expiry(busy_until, started, shard_policy, adaptive)
        else:
            expires_at = math.ceil(busy_until + self._ttl_margin_sec)
        sets.append("expires_at = :expires_at")
        values[":expires_at"] = {"N": str(expires_at)}
        update = "SET " + ", ".join(sets)
        if adds:
            update += " ADD " + ", ".join(adds)
        if removes:
            update += " REMOVE " + ", ".join(removes)
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": {"pk": {"S": key}},
            "UpdateExpression": update,
            "ConditionExpression": " AND ".join(conditions),
            "ExpressionAttributeValues": values,
            # The old item (at no extra cost) holds the TATs DynamoDB added to, and the tenants now idle.
            "ReturnValues": "ALL_OLD",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if names:
            request["ExpressionAttributeNames"] = names
        response = self._client.update_item(**request)
        return response.get("Attributes"), set(stale)

    def _seen_tenant(self, key: str, tkey: str) -> float | None:
        with self._seen_lock:
            return self._seen_tenant_tat.get((key, tkey))

    def _remember_tenant(self, key: str, tkey: str, tat: float | None) -> None:
        if tat is None:
            return
        with self._seen_lock:
            self._seen_tenant_tat[(key, tkey)] = max(tat, self._seen_tenant_tat.get((key, tkey), tat))

    def _learn_tenants(self, key: str, item: Mapping[str, Any] | None, tkey: str | None, *,
                       now: float | None = None, removed: set[str] | None = None) -> None:
        """What an item says of its tenants: `tkey`'s TAT (absent: a full bucket, whatever was seen before), and with
        `now`, which entries were idle then (for later writes to remove, less the `removed` ones)."""
        if not item:
            return
        with self._seen_lock:
            if tkey is not None:
                attribute = _tenant_attribute(tkey)
                if attribute in item:
                    tat = _stored_tat({"tat": item[attribute]})
                    assert tat is not None
                    self._seen_tenant_tat[(key, tkey)] = max(tat, self._seen_tenant_tat.get((key, tkey), tat))
                else:
                    self._seen_tenant_tat.pop((key, tkey), None)
            if now is not None:
                idle = {name[len(TENANT_TAT_PREFIX):] for name, value in item.items()
                        if name.startswith(TENANT_TAT_PREFIX) and float(value["N"]) <= now}
                self._idle_tenants[key] = idle - (removed or set())

    def _forget(self, key: str) -> None:
        with self._seen_lock:
            self._seen_tat.pop(key, None)
            for seen_key in [seen_key for seen_key in self._seen_tenant_tat if seen_key[0] == key]:
                del self._seen_tenant_tat[seen_key]

    def _signal_shard(self, key: str, shard_policy: RatePolicy, adaptive: AdaptiveRatePolicy, admitted_at: float,
                      retry_after_sec: float | None) -> SignalOutcome:
        outcome = SignalOutcome(None, False, shard_policy.rate_per_sec, shard_policy.rate_per_sec)
        for _ in range(self._max_attempts):
            state = self._state(key)
            now = self._clock.now()
            outcome = on_signal(state, now, admitted_at, retry_after_sec, shard_policy, adaptive)
            if outcome.state is None:
                return outcome
            new = outcome.state
            assert new.rate_base_per_sec is not None and new.rate_base_at is not None
            try:
                self._client.update_item(
                    TableName=self.table_name,
                    Key={"pk": {"S": key}},
                    UpdateExpression=ADAPTIVE_SIGNAL_UPDATE,
                    ConditionExpression=ADAPTIVE_SIGNAL_CONDITION,
                    ExpressionAttributeValues={
                        ":rate_base": number(new.rate_base_per_sec),
                        ":rate_base_at": _grid_number(new.rate_base_at),
                        # Before any cut there is no peak: the rate the bucket started at stands for it.
                        ":rate_peak": number(new.rate_peak_per_sec if new.rate_peak_per_sec is not None
                                             else new.rate_base_per_sec),
                        ":blocked_until": _grid_number(new.blocked_until),
                        ":expires_at": {"N": str(self._expiry(max(now, self._seen(key) or now), new, shard_policy, adaptive))},
                        ":one": {"N": "1"},
                        ":signals_seen": {"N": str(state.signals)},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            except ClientError as error:
                self._learn(key, failed_condition_item(error))
                continue
            self._remember_state(key, new)
            if outcome.cut:
                logger.info("rate limiter shard %s cut from %.3f to %.3f req/s", key, outcome.rate_before_per_sec,
                            outcome.rate_after_per_sec)
            return outcome
        logger.warning("rate limiter shard %s: a signal was not written after %d attempts; the next one will be",
                       key, self._max_attempts)
        return SignalOutcome(None, False, outcome.rate_before_per_sec, outcome.rate_before_per_sec)

    def _expiry(self, busy_until: float, state: AdaptiveState, shard_policy: RatePolicy,
                adaptive: AdaptiveRatePolicy) -> int:
        """When the item may go: once the bucket is full again, unblocked, back at its ceiling and no longer under a
        published limit (an absent item is all four), plus the margin."""
        back_at = max(busy_until, state.blocked_until, recovered_at(state, shard_policy.rate_per_sec, adaptive))
        if state.published_at is not None:
            back_at = max(back_at, state.published_at + PUBLISHED_TTL_SEC)
        return math.ceil(back_at + self._ttl_margin_sec)

    def _set_from_idle_adaptive(self, key: str, decision: RateDecision, started: AdaptiveState, seen_state: AdaptiveState,
                                expires_at: int) -> dict[str, Any] | None:
        assert decision.new_tat is not None and started.rate_base_per_sec is not None and started.rate_base_at is not None
        response = self._client.update_item(
            TableName=self.table_name,
            Key={"pk": {"S": key}},
            UpdateExpression=ADAPTIVE_UPDATE,
            ConditionExpression=ADAPTIVE_CONDITION,
            ExpressionAttributeValues={
                ":new_tat": _grid_number(decision.new_tat),
                ":based_on_tat": _grid_number(decision.based_on_tat),
                ":expires_at": {"N": str(expires_at)},
                ":rate_base": number(started.rate_base_per_sec),
                ":rate_base_at": _grid_number(started.rate_base_at),
                ":signals_seen": {"N": str(seen_state.signals)},
            },
            # The old item (at no extra cost) says when the bucket's rate started, if another caller started it.
            ReturnValues="ALL_OLD",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return response.get("Attributes")

    def _add_to_backlog_adaptive(self, key: str, now: float, policy: RatePolicy, cost: int, seen_state: AdaptiveState,
                                 expires_at: int) -> dict[str, Any] | None:
        interval = policy.emission_interval_sec
        now_on_grid = on_grid(now)
        response = self._client.update_item(
            TableName=self.table_name,
            Key={"pk": {"S": key}},
            UpdateExpression=RATE_LIMITER_BACKLOG_UPDATE,
            ConditionExpression=ADAPTIVE_BACKLOG_CONDITION,
            ExpressionAttributeValues={
                ":cost_interval": _grid_number(cost * interval),
                ":now": _grid_number(now_on_grid),
                ":latest_tat": _grid_number(now_on_grid + (policy.burst - cost) * interval),
                ":expires_at": {"N": str(expires_at)},
                ":signals_seen": {"N": str(seen_state.signals)},
            },
            ReturnValues="ALL_OLD",
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
        return response.get("Attributes")

    def _learn(self, key: str, item: Mapping[str, Any] | None) -> None:
        """What a failed condition returned: the stored TAT and the inner loop's state."""
        self._remember(key, _stored_tat(item))
        if item:
            self._remember_state(key, _stored_state(item), item_says_publication=True)

    def _state(self, key: str) -> AdaptiveState:
        with self._seen_lock:
            return self._seen_state.get(key, _NEVER_USED)

    def _remember_state(self, key: str, state: AdaptiveState, *, item_says_publication: bool = False) -> None:
        """Keep `state` if it is newer than the one seen. With `item_says_publication`, `state` holds what a stored
        item said of the publication (an admission never writes it, so the item before one is the truth): kept as
        is, so a publication gone with its item (expired, or deleted) is forgotten here too."""
        with self._seen_lock:
            known = self._seen_state.get(key, _NEVER_USED)
            # Newer signals win; among equals, a state that knows when the rate started.
            if (state.signals, state.rate_base_at is not None) >= (known.signals, known.rate_base_at is not None):
                kept, other = state, known
            else:
                kept, other = known, state
            # A publication is written apart from the signals: the item's word, else the later-admitted call's.
            if item_says_publication:
                kept = replace(kept, published_per_sec=state.published_per_sec, published_at=state.published_at)
            elif other.published_at is not None and (kept.published_at is None or other.published_at > kept.published_at):
                kept = replace(kept, published_per_sec=other.published_per_sec, published_at=other.published_at)
            self._seen_state[key] = kept

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


def _tenant_attribute(tkey: str) -> str:
    return f"{TENANT_TAT_PREFIX}{tkey}"


def _grid_number(value: float) -> dict[str, str]:
    """A time-grid value as the exact decimal DynamoDB stores and compares (at most 18 fractional digits).

    Not the shortest repr, which `_number` writes: DynamoDB's sums of those drift from the float sums.
    """
    if on_grid(value) != value:
        raise ValueError(f"{value!r} is not on the limiter's time grid; round it with rate_limiter.on_grid")
    return {"N": format(Decimal(value), "f")}


_NEVER_USED = AdaptiveState()


def _stored_state(item: Mapping[str, Any]) -> AdaptiveState:
    """The inner loop's state in a stored item; attributes it lacks read as a bucket never signalled."""
    def grid(name: str) -> float | None:
        return _stored_tat({"tat": item[name]}) if name in item else None

    return AdaptiveState(
        rate_base_per_sec=float(item["rate_base"]["N"]) if "rate_base" in item else None,
        rate_base_at=grid("rate_base_at"),
        blocked_until=grid("blocked_until") or 0.0,
        signals=int(item["signals"]["N"]) if "signals" in item else 0,
        rate_peak_per_sec=float(item["rate_peak"]["N"]) if "rate_peak" in item else None,
        published_per_sec=float(item["published_rate"]["N"]) if "published_rate" in item else None,
        published_at=grid("published_at"),
    )


def _learned_state(old_item: Mapping[str, Any] | None, started: AdaptiveState) -> AdaptiveState:
    """What an admission's write returned (the item before it) says of the inner loop's state: the stored state
    once the bucket's rate started, else the one this instance started, with the publication the item holds
    (one may have created the item before any admission; an absent item holds none)."""
    stored = _stored_state(old_item or {})
    if old_item and "rate_base" in old_item:
        return stored
    return replace(started, published_per_sec=stored.published_per_sec, published_at=stored.published_at)


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
