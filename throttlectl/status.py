"""What the limits are doing now: breakers, limiter levels, tenants, semaphore leases, queues, Map concurrency.

Reads only (consistent scans of the three limit tables, queue attributes); interprets each item
with the same pure cores the Lambdas decide with (`BreakerState.from_item`, `window_totals`,
`shard_count_for`/`split_policy`), so the numbers mean what they mean to the fleet.

Tenants: each downstream's shares in force (its tunables document, read as the Lambdas read it), and
each tenant's bucket now, from the TATs the limiter keeps in the bucket's shard items (one attribute
per tenant active lately: `hierarchical_rate`). A tenant whose TAT is ahead of now is backed up by that
many seconds; past its own bucket's depth it is held back (its next call within its share is refused,
and it is admitted only on what it may borrow). Only the `top_tenants` most backed up are listed, with a
count of the others, so the output stays bounded whatever the number of tenants.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from boto3.dynamodb.types import TypeDeserializer

from throttling.core import names as shared_names
from throttling.core.circuit_breaker import BreakerPolicy, BreakerState, window_totals
from throttling.core.hierarchical_rate import (
    UNKNOWN_TENANT_PREFIX,
    TenantShares,
    class_depth_tokens,
    tenant_policy,
    tenant_share,
)
from throttling.core.names import breaker_tunables_key
from throttling.core.rate_limiter import RatePolicy, depth_sec, shard_count_for, split_policy
from throttling.core.tunables import DownstreamTunables, InvalidTunables, parse_tunables
from throttlectl.discovery import Deployment, QueueRef
from throttlectl.parameters import StoredTunable
from throttlectl.schema import BREAKER_POLICY, DOWNSTREAM_LIMITS, document_of

__all__ = [
    "BreakerRow",
    "ConcurrencyRow",
    "LimiterRow",
    "QueueRow",
    "SemaphoreRow",
    "StageStatus",
    "TenantRow",
    "TenantSharesRow",
    "collect_status",
    "queue_rows",
]

_deserializer = TypeDeserializer()


@dataclass(frozen=True)
class BreakerRow:
    name: str
    status: str
    open_until_utc: str | None
    retry_after_sec: float | None
    calls: int
    failures: int
    slow_calls: int
    probe_owner: str | None
    reason: str


@dataclass(frozen=True)
class LimiterRow:
    bucket: str
    rate_per_sec: float | None
    burst: int | None
    shards: int
    tokens_available: float | None
    full_in_sec: float


@dataclass(frozen=True)
class TenantSharesRow:
    """How a downstream's bucket is shared, as its tunables document sets it (`TenantShares`)."""

    downstream: str
    shares: dict[str, float]
    default_share: float
    borrow_depth: float
    reserves: dict[str, float]
    # Tenants with a bucket state now, and how many of them are left out of `StageStatus.tenants`.
    tenants_seen: int
    tenants_left_out: int


@dataclass(frozen=True)
class TenantRow:
    """One tenant's bucket under a downstream now: `backlog_sec` ahead of now (0: idle, a full bucket)."""

    downstream: str
    tenant: str
    share: float
    backlog_sec: float
    # "held back" (every class), "<classes> held back" (the lower ones: `hierarchical_rate`'s thresholds),
    # "within its share" (backed up, but its next call of any class conforms) or "idle".
    state: str


@dataclass(frozen=True)
class SemaphoreRow:
    name: str
    lease_count: int
    live: int
    expired: int
    live_owners: tuple[str, ...]
    expired_owners: tuple[str, ...]


@dataclass(frozen=True)
class QueueRow:
    label: str
    name: str
    stack: str
    role: str  # "queue" or "dead-letter"
    visible: int
    in_flight: int
    delayed: int
    dead_letter_queue: str | None  # label of this queue's DLQ
    sources: tuple[str, ...]  # labels of the queues dead-lettering into this one
    arn: str
    url: str


@dataclass(frozen=True)
class ConcurrencyRow:
    downstream: str
    max_concurrency: int | None
    note: str


@dataclass(frozen=True)
class StageStatus:
    stage: str
    at_utc: str
    breakers: tuple[BreakerRow, ...]
    limiters: tuple[LimiterRow, ...]
    semaphores: tuple[SemaphoreRow, ...]
    queues: tuple[QueueRow, ...]
    concurrency: tuple[ConcurrencyRow, ...]
    tenant_shares: tuple[TenantSharesRow, ...] = ()
    tenants: tuple[TenantRow, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# How many tenants `status` lists per downstream, the most backed up first.
DEFAULT_TOP_TENANTS = 10


def collect_status(
    dynamodb: Any, sqs: Any, deployment: Deployment, tunables: Mapping[str, StoredTunable], now: float,
    *, top_tenants: int = DEFAULT_TOP_TENANTS,
) -> StageStatus:
    tenant_shares, tenants = tenant_rows(dynamodb, deployment, tunables, now, top=top_tenants)
    return StageStatus(
        stage=deployment.stage,
        at_utc=_utc(now) or "",
        breakers=_breakers(dynamodb, deployment, tunables, now),
        limiters=_limiters(dynamodb, deployment, tunables, now),
        semaphores=_semaphores(dynamodb, deployment, now),
        queues=queue_rows(sqs, deployment.queues),
        concurrency=_concurrency(deployment, tunables),
        tenant_shares=tenant_shares,
        tenants=tenants,
    )


def tenant_rows(
    dynamodb: Any, deployment: Deployment, tunables: Mapping[str, StoredTunable], now: float, *,
    top: int = DEFAULT_TOP_TENANTS,
) -> tuple[tuple[TenantSharesRow, ...], tuple[TenantRow, ...]]:
    """Each downstream's shares in force, and its `top` tenants by backlog now (see the module docstring)."""
    if top < 1:
        raise ValueError(f"top must be at least 1 tenant per downstream, got {top}")
    # bucket -> shard -> tenant key -> TAT
    tats: dict[str, dict[int, dict[str, float]]] = {}
    for item in _scan(dynamodb, deployment.rate_limiter_table):
        bucket, _, shard = str(item["pk"]).rpartition("#")
        if not bucket or not shard.isdigit():
            continue
        for attribute, value in item.items():
            if attribute.startswith(shared_names.LIMITER_TENANT_TAT_PREFIX):
                key = attribute[len(shared_names.LIMITER_TENANT_TAT_PREFIX):]
                tats.setdefault(bucket, {}).setdefault(int(shard), {})[key] = float(value)
    shares_rows, rows = [], []
    for key, stored in sorted(tunables.items()):
        if not key.startswith("downstreams/"):
            continue
        downstream = key.split("/", 1)[1]
        in_force = _tunables_in_force(deployment, stored)
        if in_force is None:
            continue  # the limiters section already says the document is refused
        shares = in_force.shares
        policy = RatePolicy(in_force.rate_per_sec, in_force.burst)
        shards = shard_count_for(policy.rate_per_sec)
        per_shard = split_policy(policy, shards) if shards > 1 else policy
        # tenant -> (its largest backlog over the shards, the classes whose next call within its share is refused)
        by_tenant: dict[str, tuple[float, set[str]]] = {}
        for tenants in tats.get(downstream, {}).values():
            for tenant, tat in tenants.items():
                backlog = max(0.0, tat - now)
                was_backlog, held = by_tenant.get(tenant, (0.0, set()))
                by_tenant[tenant] = (max(was_backlog, backlog), held | _classes_held_back(
                    tenant_policy(per_shard, tenant_share(tenant, shares)), shares, backlog))
        ranked = sorted(by_tenant.items(), key=lambda entry: (-entry[1][0], entry[0]))
        for tenant, (backlog, held) in ranked[:top]:
            if len(held) == len(shared_names.PRIORITY_CLASSES):
                state = "held back"
            elif held:
                state = ", ".join(c for c in shared_names.PRIORITY_CLASSES if c in held) + " held back"
            else:
                state = "within its share" if backlog > 0 else "idle"
            rows.append(TenantRow(downstream, _tenant_label(tenant), tenant_share(tenant, shares), round(backlog, 3),
                                  state))
        shares_rows.append(TenantSharesRow(
            downstream, dict(shares.shares), shares.default_share, shares.borrow_depth,
            {name: shares.reserve_of(name) for name in shared_names.PRIORITY_CLASSES}, len(by_tenant),
            max(0, len(by_tenant) - top)))
    return tuple(shares_rows), tuple(rows)


def _classes_held_back(bucket: RatePolicy, shares: TenantShares, backlog_sec: float) -> set[str]:
    """The classes whose next call within the tenant's share would be refused: GCRA admits one more only while
    the backlog plus one interval stays within the class's depth of the tenant's bucket."""
    return {name for name in shared_names.PRIORITY_CLASSES
            if backlog_sec + bucket.emission_interval_sec
            > depth_sec(bucket, depth_tokens=class_depth_tokens(bucket, shares, name)) + 1e-9}


def _tenant_label(key: str) -> str:
    """A tenant's key as an operator reads it: its id, or the slot unknown tenants are hashed into."""
    if key.startswith(UNKNOWN_TENANT_PREFIX):
        return f"(unknown tenants, slot {key[len(UNKNOWN_TENANT_PREFIX):]})"
    return key


def _tunables_in_force(deployment: Deployment, stored: StoredTunable) -> DownstreamTunables | None:
    """What the Lambdas make of a downstream's document (or, refused, of its seed); None if neither parses."""
    candidates = [stored.value] + ([deployment.seeds[stored.name]] if stored.name in deployment.seeds else [])
    for raw in candidates:
        try:
            return parse_tunables(raw, ceiling_rate_per_sec=deployment.ceiling_for(stored.key),
                                  ceiling_burst=deployment.burst_ceiling_for(stored.key)).tunables
        except InvalidTunables:
            continue
    return None


def queue_rows(sqs: Any, queues: tuple[QueueRef, ...]) -> tuple[QueueRow, ...]:
    """Every queue's depths, with dead-letter queues told apart by the redrive policies pointing at them."""
    attributes = {
        queue.url: sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["All"])["Attributes"] for queue in queues
    }
    by_arn = {attributes[q.url].get("QueueArn"): q for q in queues}
    dead_letter_of: dict[str, str] = {}
    for queue in queues:
        target = _redrive_target(attributes[queue.url])
        if target in by_arn:
            dead_letter_of[queue.url] = by_arn[target].label
    rows = []
    for queue in queues:
        attrs = attributes[queue.url]
        sources = tuple(sorted(q.label for q in queues if _redrive_target(attributes[q.url]) == attrs.get("QueueArn")))
        is_dlq = bool(sources) or "deadletter" in queue.logical_id.lower()
        rows.append(QueueRow(
            label=queue.label,
            name=queue.name,
            stack=queue.stack,
            role="dead-letter" if is_dlq else "queue",
            visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
            dead_letter_queue=dead_letter_of.get(queue.url),
            sources=sources,
            arn=attrs.get("QueueArn", ""),
            url=queue.url,
        ))
    return tuple(sorted(rows, key=lambda r: (r.stack, r.role != "queue", r.label)))


def _breakers(
    dynamodb: Any, deployment: Deployment, tunables: Mapping[str, StoredTunable], now: float
) -> tuple[BreakerRow, ...]:
    items = {item["pk"]: item for item in _scan(dynamodb, deployment.breaker_table)}
    names = sorted(set(items) | {key.split("/", 1)[1] for key in tunables if key.startswith("breakers/")})
    rows = []
    for name in names:
        policy = _breaker_policy(tunables.get(breaker_tunables_key(name)))
        try:
            state = BreakerState.from_item(items.get(name, {}))
        except ValueError as error:
            rows.append(BreakerRow(name, "unreadable", None, None, 0, 0, 0, None, str(error)))
            continue
        totals = window_totals(state, policy, now)
        retry_after = None if state.open_until is None or state.open_until <= now else round(state.open_until - now, 3)
        rows.append(BreakerRow(
            name=name,
            status=state.status.value,
            open_until_utc=_utc(state.open_until) if state.open_until else None,
            retry_after_sec=retry_after,
            calls=totals.calls,
            failures=totals.failures,
            slow_calls=totals.slow_calls,
            probe_owner=state.probe_owner,
            reason=state.reason,
        ))
    return tuple(rows)


def _limiters(
    dynamodb: Any, deployment: Deployment, tunables: Mapping[str, StoredTunable], now: float
) -> tuple[LimiterRow, ...]:
    tats: dict[str, dict[int, float]] = {}
    for item in _scan(dynamodb, deployment.rate_limiter_table):
        bucket, _, shard = str(item["pk"]).rpartition("#")
        if bucket and shard.isdigit() and "tat" in item:
            tats.setdefault(bucket, {})[int(shard)] = float(item["tat"])
    buckets = sorted(set(tats) | {key.split("/", 1)[1] for key in tunables if key.startswith("downstreams/")})
    rows = []
    for bucket in buckets:
        policy = _rate_policy(deployment, tunables.get(f"downstreams/{bucket}"))
        shard_tats = tats.get(bucket, {})
        full_in = max([0.0, *(tat - now for tat in shard_tats.values())])
        if policy is None:
            rows.append(LimiterRow(bucket, None, None, max(1, len(shard_tats)), None, round(full_in, 3)))
            continue
        shards = shard_count_for(policy.rate_per_sec)
        per_shard = split_policy(policy, shards) if shards > 1 else policy
        available = 0.0
        for shard in range(shards):
            backlog_sec = max(0.0, shard_tats.get(shard, now) - now)
            available += min(per_shard.burst, max(0.0, per_shard.burst - backlog_sec * per_shard.rate_per_sec))
        rows.append(LimiterRow(bucket, policy.rate_per_sec, policy.burst, shards, round(available, 2), round(full_in, 3)))
    return tuple(rows)


def _semaphores(dynamodb: Any, deployment: Deployment, now: float) -> tuple[SemaphoreRow, ...]:
    rows = []
    for item in _scan(dynamodb, deployment.semaphore_table):
        leases = {owner: float(expiry) for owner, expiry in (item.get("leases") or {}).items()}
        live = tuple(sorted(owner for owner, expiry in leases.items() if expiry > now))
        expired = tuple(sorted(owner for owner, expiry in leases.items() if expiry <= now))
        rows.append(SemaphoreRow(str(item["pk"]), int(item.get("lease_count", 0)), len(live), len(expired), live, expired))
    return tuple(sorted(rows, key=lambda r: r.name))


def _concurrency(deployment: Deployment, tunables: Mapping[str, StoredTunable]) -> tuple[ConcurrencyRow, ...]:
    """The max_concurrency the workflows' Map states and consumers read from each downstream's document."""
    rows = []
    for key, stored in sorted(tunables.items()):
        if not key.startswith("downstreams/"):
            continue
        name = key.split("/", 1)[1]
        try:
            values, clamped = DOWNSTREAM_LIMITS.in_force(stored.value, deployment.ceiling_for(key),
                                                         deployment.burst_ceiling_for(key))
        except InvalidTunables as error:
            rows.append(ConcurrencyRow(name, None, f"document refused by the Lambdas ({error}); last good value in force"))
            continue
        note = "pinned (manual)" if values["mode"] == "manual" else "auto"
        if "max_concurrency" in clamped:
            note += f"; stored {(document_of(stored.value) or {}).get('max_concurrency')!r} is clamped"
        rows.append(ConcurrencyRow(name, values["max_concurrency"], note))
    return tuple(rows)


def _rate_policy(deployment: Deployment, stored: StoredTunable | None) -> RatePolicy | None:
    candidates = [] if stored is None else [stored.value]
    if stored is not None and stored.name in deployment.seeds:
        candidates.append(deployment.seeds[stored.name])  # what a function falls back to before any good value
    for raw in candidates:
        try:
            values, _ = DOWNSTREAM_LIMITS.in_force(raw, deployment.ceiling_for(stored.key),  # type: ignore[union-attr]
                                                   deployment.burst_ceiling_for(stored.key))  # type: ignore[union-attr]
        except InvalidTunables:
            continue
        return RatePolicy(values["rate_per_sec"], values["burst"])
    return None


def _breaker_policy(stored: StoredTunable | None) -> BreakerPolicy:
    if stored is not None:
        try:
            return BreakerPolicy(**BREAKER_POLICY.in_force(stored.value)[0])
        except InvalidTunables:
            pass
    return BreakerPolicy()


def _scan(dynamodb: Any, table: str | None) -> Iterator[dict[str, Any]]:
    if not table:
        return
    for page in dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page.get("Items", []):
            yield {key: _deserializer.deserialize(value) for key, value in item.items()}


def _redrive_target(attributes: Mapping[str, str]) -> str | None:
    policy = attributes.get("RedrivePolicy")
    if not policy:
        return None
    try:
        return json.loads(policy).get("deadLetterTargetArn")
    except ValueError:
        return None


def _utc(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(float(epoch), tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
