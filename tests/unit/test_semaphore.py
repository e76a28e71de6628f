"""Unit tests of the leased semaphore core."""

from __future__ import annotations

import pytest

from throttling.core.semaphore import (
    Lease,
    SemaphoreState,
    expired_owners,
    in_use,
    live_leases,
    release,
    try_acquire,
)


def test_acquires_up_to_the_limit_then_refuses():
    # GIVEN a semaphore of two slots
    state = SemaphoreState(limit=2)

    # WHEN three owners try to acquire at the same time
    first, state = try_acquire(state, "a", now=0.0, lease_sec=30.0)
    second, state = try_acquire(state, "b", now=0.0, lease_sec=30.0)
    third, state = try_acquire(state, "c", now=0.0, lease_sec=30.0)

    # THEN two get a lease and the third is refused
    assert (first, second, third) == (True, True, False)
    assert in_use(state, 0.0) == 2
    assert live_leases(state, 0.0) == (Lease("a", 30.0), Lease("b", 30.0))


def test_expired_lease_is_reclaimed_by_the_next_acquire():
    # GIVEN a full semaphore whose only lease expires at t=10
    _, state = try_acquire(SemaphoreState(limit=1), "crashed", now=0.0, lease_sec=10.0)

    # WHEN another owner tries just before and exactly at the expiry
    before, state = try_acquire(state, "next", now=9.999, lease_sec=10.0)
    at_expiry, state = try_acquire(state, "next", now=10.0, lease_sec=10.0)

    # THEN it is refused while the lease is live, and gets the slot once expires_at <= now
    assert not before
    assert at_expiry
    assert dict(state.leases) == {"next": 20.0}


def test_same_owner_renews_without_taking_a_second_slot():
    # GIVEN a two-slot semaphore with one lease held by "a"
    _, state = try_acquire(SemaphoreState(limit=2), "a", now=0.0, lease_sec=10.0)

    # WHEN "a" acquires again later
    renewed, state = try_acquire(state, "a", now=5.0, lease_sec=10.0)

    # THEN the lease is extended and still one slot is used
    assert renewed
    assert state.leases["a"] == 15.0
    assert state.lease_count == 1


def test_release_is_idempotent():
    # GIVEN a lease held by "a"
    _, held = try_acquire(SemaphoreState(limit=1), "a", now=0.0, lease_sec=10.0)

    # WHEN it is released twice, and a stranger releases
    once = release(held, "a")
    twice = release(once, "a")
    stranger = release(once, "nobody")

    # THEN the slot is free and the repeats change nothing
    assert once.lease_count == 0
    assert twice == once
    assert stranger is once


def test_lowered_limit_lets_existing_leases_run_out():
    # GIVEN three leases and a limit lowered to one by an operator
    state = SemaphoreState(limit=1, leases={"a": 10.0, "b": 20.0, "c": 30.0})

    # WHEN a new owner asks at t=15, and a holder renews
    newcomer, state = try_acquire(state, "d", now=15.0, lease_sec=10.0)
    renewal, state = try_acquire(state, "c", now=15.0, lease_sec=10.0)

    # THEN the newcomer waits, the holder keeps its slot, and the expired lease was reclaimed
    assert not newcomer
    assert renewal
    assert dict(state.leases) == {"b": 20.0, "c": 25.0}


def test_expired_owners_names_what_an_adapter_removes():
    # GIVEN leases expiring at 5, 10 and 15
    state = SemaphoreState(limit=3, leases={"x": 10.0, "y": 5.0, "z": 15.0})

    # WHEN / THEN at t=10 the leases of y and x are reclaimable
    assert expired_owners(state, 10.0) == ("x", "y")
    assert in_use(state, 10.0) == 1


def test_state_is_not_changed_by_mutating_the_callers_dict():
    # GIVEN a state built from a dict
    leases = {"a": 10.0}
    state = SemaphoreState(limit=1, leases=leases)

    # WHEN the caller mutates its dict
    leases["b"] = 10.0

    # THEN the state still holds one lease
    assert state.lease_count == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: SemaphoreState(limit=-1), "limit must be an int >= 0, got -1"),
        (lambda: try_acquire(SemaphoreState(limit=1), "", 0.0, 1.0), "owner_id must be a non-empty string, got ''"),
        (lambda: try_acquire(SemaphoreState(limit=1), "a", 0.0, 0.0), "lease_sec must be > 0, got 0.0"),
        (lambda: SemaphoreState(limit=1, leases={"a": float("nan")}), "expiry of lease 'a' must be a finite number"),
    ],
)
def test_bad_inputs_are_rejected_with_the_value(call, message):
    # GIVEN / WHEN / THEN
    with pytest.raises(ValueError, match=message):
        call()
