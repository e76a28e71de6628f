"""A counting semaphore made of expiring leases, as pure functions over an immutable state.

Callers hold a lease (owner id -> expiry) instead of a bare count, so a Lambda that dies or times
out without releasing frees its slot when the lease expires rather than leaking it forever. The
state has the shape of one DynamoDB item: a map attribute of owner id -> expiry epoch seconds and
a count (`lease_count`), so an adapter can acquire with
`SET leases.#owner = :expires_at, lease_count = lease_count + :one`
under `lease_count < :limit AND attribute_not_exists(leases.#owner)`, release with a REMOVE
under `attribute_exists(leases.#owner)` (a failed condition means already released), and reclaim
the owners `expired_owners` names with a REMOVE conditioned on their expiries being unchanged.

Rule: a lease whose `expires_at <= now` is expired and reclaimable; acquiring again with a live
lease renews it without taking a second slot.

The DynamoDB expressions are defined here, once: the adapter sends them, and the stacks place them
into the ASL of workflows that take a lease with `arn:aws:states:::dynamodb:updateItem` (so a
workflow and a Lambda holding the same semaphore follow one protocol).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from throttling.core.validation import is_finite_number, is_int

__all__ = [
    "SEMAPHORE_ACQUIRE_CONDITION",
    "SEMAPHORE_ACQUIRE_UPDATE",
    "SEMAPHORE_CREATE_CONDITION",
    "SEMAPHORE_RECLAIM_CONDITION",
    "SEMAPHORE_RECLAIM_UPDATE",
    "SEMAPHORE_RELEASE_CONDITION",
    "SEMAPHORE_RELEASE_UPDATE",
    "SEMAPHORE_RENEW_CONDITION",
    "SEMAPHORE_RENEW_UPDATE",
    "Acquisition",
    "Lease",
    "SemaphoreState",
    "expired_owners",
    "in_use",
    "live_leases",
    "new_semaphore_item",
    "reclaim_expired",
    "release",
    "try_acquire",
]

# The item's expressions. Placeholders: `#owner` is the lease owner id (any string: a map key given
# through ExpressionAttributeNames), `:expiry` its expiry in epoch seconds, `:limit` the semaphore's
# limit, `:one` = 1, `:minus_one` = -1, `:seen_expiry` the expiry read.
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


def new_semaphore_item(name: str) -> dict[str, dict[str, object]]:
    """The item a semaphore starts as (written under `SEMAPHORE_CREATE_CONDITION`): no leases, a count of 0.

    `SET leases.#owner` needs the map to exist, so an acquire on a missing item fails until this is written.
    """
    return {"pk": {"S": name}, "leases": {"M": {}}, "lease_count": {"N": "0"}}


@dataclass(frozen=True)
class Lease:
    """One slot held by `owner_id` until `expires_at` (epoch seconds)."""

    owner_id: str
    expires_at: float

    def __post_init__(self) -> None:
        _check_owner(self.owner_id)
        _check_finite("expires_at", self.expires_at)

    def is_live(self, now: float) -> bool:
        return self.expires_at > now


@dataclass(frozen=True)
class SemaphoreState:
    """At most `limit` live leases; `leases` maps owner id -> expiry epoch seconds.

    `limit` may be 0 (admit nobody, e.g. to drain a downstream) and may be lowered below the
    number of leases held: existing leases run out and new owners wait until they do.
    """

    limit: int
    leases: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_int(self.limit) or self.limit < 0:
            raise ValueError(f"limit must be an int >= 0, got {self.limit!r}")
        for owner_id, expires_at in self.leases.items():
            _check_owner(owner_id)
            _check_finite(f"expiry of lease {owner_id!r}", expires_at)
        # A read-only copy: the state is a value, and a caller mutating its dict afterwards must
        # not change a decision already taken.
        object.__setattr__(self, "leases", types.MappingProxyType(dict(self.leases)))

    @property
    def lease_count(self) -> int:
        """Leases held, live or not: the number the DynamoDB item's count attribute mirrors."""
        return len(self.leases)


class Acquisition(NamedTuple):
    """The result of `try_acquire`; unpacks as `(acquired, state)`."""

    acquired: bool
    state: SemaphoreState


def try_acquire(state: SemaphoreState, owner_id: str, now: float, lease_sec: float) -> Acquisition:
    """Take (or renew) a slot for `owner_id` until `now + lease_sec`, reclaiming expired leases first.

    When denied, the returned state is `state` with expired leases reclaimed; writing it is
    optional.
    """
    _check_owner(owner_id)
    _check_finite("lease_sec", lease_sec)
    if lease_sec <= 0:
        raise ValueError(f"lease_sec must be > 0, got {lease_sec}; size it above the longest call it guards")
    reclaimed = reclaim_expired(state, now)
    renewing = owner_id in reclaimed.leases
    if not renewing and reclaimed.lease_count >= reclaimed.limit:
        return Acquisition(False, reclaimed)
    leases = dict(reclaimed.leases)
    leases[owner_id] = now + lease_sec
    return Acquisition(True, SemaphoreState(limit=reclaimed.limit, leases=leases))


def release(state: SemaphoreState, owner_id: str) -> SemaphoreState:
    """Give back `owner_id`'s slot; releasing a lease not held (again, or after it expired) is a no-op."""
    if owner_id not in state.leases:
        return state
    leases = {owner: expires_at for owner, expires_at in state.leases.items() if owner != owner_id}
    return SemaphoreState(limit=state.limit, leases=leases)


def in_use(state: SemaphoreState, now: float) -> int:
    """Live leases at `now`."""
    return sum(1 for expires_at in state.leases.values() if expires_at > now)


def live_leases(state: SemaphoreState, now: float) -> tuple[Lease, ...]:
    """The live leases at `now`, soonest expiry first."""
    live = (Lease(owner, expires_at) for owner, expires_at in state.leases.items() if expires_at > now)
    return tuple(sorted(live, key=lambda lease: (lease.expires_at, lease.owner_id)))


def expired_owners(state: SemaphoreState, now: float) -> tuple[str, ...]:
    """Owners whose lease is reclaimable at `now` (what a DynamoDB adapter REMOVEs)."""
    return tuple(sorted(owner for owner, expires_at in state.leases.items() if expires_at <= now))


def reclaim_expired(state: SemaphoreState, now: float) -> SemaphoreState:
    """`state` without the leases that expired at or before `now`."""
    if not expired_owners(state, now):
        return state
    leases = {owner: expires_at for owner, expires_at in state.leases.items() if expires_at > now}
    return SemaphoreState(limit=state.limit, leases=leases)


def _check_owner(owner_id: str) -> None:
    if not isinstance(owner_id, str) or not owner_id:
        raise ValueError(f"owner_id must be a non-empty string, got {owner_id!r}; use the invocation's request id")


def _check_finite(name: str, value: float) -> None:
    if not is_finite_number(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
