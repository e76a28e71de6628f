"""Unit tests of the tenants' and classes' shared bucket: borrowing and giving back, unknown tenants, shedding order, validation."""

from __future__ import annotations

import pytest

from throttling.core import names
from throttling.core.clock import FakeClock
from throttling.core.hierarchical_rate import (
    MAX_TENANTS,
    InMemoryHierarchicalRateLimiter,
    TenantShares,
    tenant_key,
    tenant_policy,
)
from throttling.core.rate_limiter import RatePolicy

CONTRACT = RatePolicy(rate_per_sec=10.0, burst=10)
TWO_HALVES = TenantShares({"noisy": 0.5, "quiet": 0.5})


def ask_every(limiter, clock, seconds, interval, **request):
    """Ask at a fixed pace for `seconds`; the admissions' times."""
    admitted = []
    end = clock.now() + seconds
    while clock.now() < end:
        if limiter.try_acquire(**request).allowed:
            admitted.append(clock.now())
        clock.advance(interval)
    return admitted


def test_a_lone_busy_tenant_borrows_the_idle_share_and_a_returning_tenant_takes_it_back_at_once():
    # GIVEN a noisy tenant asking 4x its share while the quiet one is idle
    clock = FakeClock(1_000.0)
    limiter = InMemoryHierarchicalRateLimiter(CONTRACT, TWO_HALVES, clock)
    alone = ask_every(limiter, clock, 10.0, 0.025, tenant="noisy")
    # THEN it gets more than its share: the idle share, lent (up to the borrowing depth)
    assert len(alone) / 10.0 > 9.0
    # WHEN the quiet tenant comes back at its share (5/s) while the noisy one keeps asking
    quiet_asked, quiet, noisy = 0, [], []
    for step in range(400):
        if step % 8 == 0:
            quiet_asked += 1
            if limiter.try_acquire(tenant="quiet").allowed:
                quiet.append(clock.now())
        if limiter.try_acquire(tenant="noisy").allowed:
            noisy.append(clock.now())
        clock.advance(0.025)
    # THEN every one of the quiet tenant's requests is admitted from the first one on
    assert len(quiet) == quiet_asked == 50
    # AND the noisy one keeps the rest of the rate, never the global limit's excess
    assert 45 <= len(noisy) <= 51


def test_without_borrowing_a_lone_tenant_is_held_to_its_share():
    # GIVEN hard partitioning (borrow_depth 0)
    clock = FakeClock(1_000.0)
    limiter = InMemoryHierarchicalRateLimiter(CONTRACT, TenantShares({"noisy": 0.5, "quiet": 0.5}, borrow_depth=0.0), clock)
    # WHEN the noisy tenant asks 4x its share with the rest idle
    admitted = ask_every(limiter, clock, 10.0, 0.025, tenant="noisy")
    # THEN it gets its share and its burst, nothing borrowed
    assert len(admitted) <= 5 * 10 + 5


def test_an_unknown_tenant_gets_the_default_share_never_the_whole_bucket():
    # GIVEN shares that do not name the tenant, and no borrowing
    shares = TenantShares({"acme": 0.5}, default_share=0.1, borrow_depth=0.0)
    clock = FakeClock(1_000.0)
    limiter = InMemoryHierarchicalRateLimiter(CONTRACT, shares, clock)
    # WHEN it asks far more than that
    admitted = ask_every(limiter, clock, 10.0, 0.01, tenant="stranger")
    # THEN it is held to the default share (1 req/s, burst 1)
    assert len(admitted) == 10
    # AND unknown tenants are hashed into a bounded number of slots, the same for the same id in any process
    keys = {tenant_key(f"tenant-{n}", shares) for n in range(1_000)}
    assert len(keys) == shares.unknown_tenant_slots and all(key.startswith("?") for key in keys)
    assert tenant_key("stranger", shares) == tenant_key("stranger", shares)
    assert tenant_key("acme", shares) == "acme"


def test_under_saturation_the_lowest_class_is_refused_first_and_told_when_to_come_back():
    # GIVEN a bucket every class keeps asking of, faster than it allows
    clock = FakeClock(1_000.0)
    limiter = InMemoryHierarchicalRateLimiter(CONTRACT, TenantShares(), clock)
    counts = {name: 0 for name in names.PRIORITY_CLASSES}
    waits = []
    for step in range(400):
        for name in (names.PRIORITY_BATCH, names.PRIORITY_STANDARD, names.PRIORITY_CRITICAL):
            if name == names.PRIORITY_CRITICAL and step % 4:
                continue  # critical asks 5/s, half the rate; the others 20/s each
            outcome = limiter.try_acquire(priority=name)
            counts[name] += outcome.allowed
            if name == names.PRIORITY_BATCH and not outcome.allowed:
                waits.append(outcome.retry_after_sec)
        clock.advance(0.05)
    # THEN critical gets all it asks, batch is shed first
    assert counts[names.PRIORITY_CRITICAL] == 100
    assert counts[names.PRIORITY_BATCH] < counts[names.PRIORITY_STANDARD]
    # AND never more than the global limit in all
    assert sum(counts.values()) <= CONTRACT.burst + 20.0 * CONTRACT.rate_per_sec
    # AND a shed request is told a positive wait
    assert waits and min(waits) > 0


def test_a_tenants_bucket_is_its_share_of_the_rate_and_burst():
    assert tenant_policy(CONTRACT, 0.25) == RatePolicy(2.5, 3)
    assert tenant_policy(RatePolicy(10.0, 1), 0.1) == RatePolicy(1.0, 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shares": {"acme": 0.0}}, r"the share of tenant 'acme' must be in \(0, 1\], got 0.0"),
        ({"shares": {"acme": 1.5}}, r"must be in \(0, 1\], got 1.5"),
        ({"shares": {"": 0.1}}, "a tenant id must be a string of 1 to 64 characters"),
        ({"shares": {"?1": 0.1}}, "may not start with '\\?'"),
        ({"shares": {f"t{n}": 0.001 for n in range(MAX_TENANTS + 1)}}, "at most 256 fit one limiter item"),
        ({"default_share": 0}, r"default_share must be in \(0, 1\], got 0"),
        ({"borrow_depth": 1.2}, r"borrow_depth must be in \[0, 1\], got 1.2"),
        ({"priority_reserves": {"urgent": 0.1}}, r"unknown priority classes \['urgent'\]"),
        ({"priority_reserves": {"critical": 0.1}}, "critical's reserve must be 0"),
        ({"priority_reserves": {"standard": 0.5, "batch": 0.2}}, r"reserve of class 'batch' \(0.2\) is below"),
        ({"priority_reserves": {"batch": 1.0}}, r"must be in \[0, 1\), got 1.0"),
        ({"unknown_tenant_slots": 0}, "unknown_tenant_slots must be an int from 1 to 64"),
    ],
)
def test_bad_shares_are_refused_with_the_value_and_the_remedy(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TenantShares(**kwargs)


def test_a_request_of_an_unknown_class_is_refused_with_the_classes():
    limiter = InMemoryHierarchicalRateLimiter(CONTRACT, TenantShares(), FakeClock(0.0))
    with pytest.raises(ValueError, match=r"unknown priority class 'urgent'; give one of \['critical', 'standard', 'batch'\]"):
        limiter.try_acquire(priority="urgent")
