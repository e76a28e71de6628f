"""Property-based tests of the tenants' and classes' shared bucket on a fake clock: whatever the tenants, classes,
gaps and signals, the global limit is never exceeded in any window, each tenant stays within its share except for
what it borrowed while the global bucket had idle room, critical traffic within the reserve is never refused, a
refusal's Retry-After is a promise, the inner loop's cut binds every tenant, and a request with neither tenant nor
class is today's GCRA exactly."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from throttling.core import names
from throttling.core.adaptive_rate import AdaptiveRatePolicy, decide_adaptive
from throttling.core.clock import FakeClock
from throttling.core.hierarchical_rate import (
    PRIORITY_ORDER,
    InMemoryHierarchicalRateLimiter,
    TenantShares,
    class_depth_tokens,
    reserve_tokens,
    tenant_policy,
    tenant_share,
)
from throttling.core.rate_limiter import TIME_GRID_SEC, InMemoryRateLimiter, RatePolicy, decide, on_grid

MODEST = settings(max_examples=150, deadline=None)

contracts = st.builds(RatePolicy, rate_per_sec=st.floats(min_value=0.5, max_value=200.0), burst=st.integers(1, 40))
shares_policies = st.builds(
    TenantShares,
    shares=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.floats(min_value=0.01, max_value=1.0), max_size=4),
    default_share=st.floats(min_value=0.01, max_value=1.0),
    borrow_depth=st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1.0)),
    priority_reserves=st.tuples(st.floats(0.0, 0.6), st.floats(0.0, 0.3)).map(
        lambda r: {names.PRIORITY_CRITICAL: 0.0, names.PRIORITY_STANDARD: r[0], names.PRIORITY_BATCH: min(0.95, r[0] + r[1])}),
    unknown_tenant_slots=st.integers(1, 4),
)
tenants = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d", "stranger-1", "stranger-2"]))
priorities = st.one_of(st.none(), st.sampled_from(PRIORITY_ORDER))
# Gaps in emission intervals of the contract (`clock.advance(gap * T)`): the bucket fills and drains whatever its rate.
gaps = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=3.0))
requests = st.lists(st.tuples(gaps, tenants, priorities), max_size=200)


@MODEST
@given(contract=contracts, shares=shares_policies, steps=requests)
def test_the_global_limit_holds_and_each_tenant_takes_its_share_or_idle_room(contract, shares, steps):
    # GIVEN a shared bucket with tenants and classes on a fake clock
    clock = FakeClock(1_000.0)
    limiter = InMemoryHierarchicalRateLimiter(contract, shares, clock)
    reference = InMemoryRateLimiter(contract, clock)  # the global contract alone
    own_references: dict[str, InMemoryRateLimiter] = {}

    # WHEN any tenants ask at any classes with any gaps
    for gap, tenant, priority in steps:
        clock.advance(gap * contract.emission_interval_sec)
        outcome = limiter.try_acquire(tenant=tenant, priority=priority)
        if not outcome.allowed:
            continue
        # THEN every admission conforms to the global contract: no window ever holds more than it allows
        assert reference.try_acquire().allowed
        if tenant is None:
            continue
        key = outcome.tenant_key
        assert key is not None
        if outcome.borrowed:
            # AND a borrowed admission only filled the global bucket's idle room: the depth it left is
            # within borrow_depth of its class's depth, so the rest was there for tenants within their shares
            depth_after = outcome.decision.new_tat - on_grid(clock.now())
            borrow_tokens = shares.borrow_depth * class_depth_tokens(contract, shares, priority)
            assert depth_after <= borrow_tokens * contract.emission_interval_sec + TIME_GRID_SEC
        else:
            # AND an admission within the tenant's share conforms to its own bucket
            own = own_references.setdefault(
                key, InMemoryRateLimiter(tenant_policy(contract, tenant_share(key, shares)), clock))
            assert own.try_acquire().allowed


@MODEST
@given(contract=contracts, shares=shares_policies, steps=requests, data=st.data())
def test_a_refusal_says_exactly_when_the_same_request_would_be_admitted(contract, shares, steps, data):
    # GIVEN a shared bucket in any state the requests leave it in
    clock = FakeClock(1_000.0)
    limiter = InMemoryHierarchicalRateLimiter(contract, shares, clock)
    for gap, tenant, priority in steps:
        clock.advance(gap * contract.emission_interval_sec)
        limiter.try_acquire(tenant=tenant, priority=priority)
    # WHEN one more request is refused
    tenant, priority = data.draw(tenants), data.draw(priorities)
    refused = limiter.try_acquire(tenant=tenant, priority=priority)
    if refused.allowed:
        return
    wait = refused.retry_after_sec
    # THEN asking again after exactly its wait, with nothing admitted meanwhile, is admitted
    later = _copy_at(limiter, clock.now() + wait)
    assert later.try_acquire(tenant=tenant, priority=priority).allowed
    # AND a grid step earlier it is not: the wait is no longer than needed
    if on_grid(clock.now() + wait) - TIME_GRID_SEC > clock.now():
        earlier = _copy_at(limiter, on_grid(clock.now() + wait) - TIME_GRID_SEC)
        assert not earlier.try_acquire(tenant=tenant, priority=priority).allowed


@MODEST
@given(contract=contracts, shares=shares_policies,
       steps=st.lists(st.tuples(gaps, st.booleans(), tenants, st.sampled_from(PRIORITY_ORDER[1:])), max_size=150),
       critical_tenant=st.one_of(st.none(), st.just("payments")))
def test_critical_traffic_within_the_reserve_is_never_refused(contract, shares, steps, critical_tenant):
    # GIVEN a bucket whose reserve holds at least one request, and critical traffic of its own tenant
    # (or of no tenant) that on its own conforms to a bucket of the global rate and the reserve's depth,
    # and to that tenant's share
    # "payments" is named, so no unknown tenant's slot shares its bucket
    shares = replace(shares, shares={**shares.shares, "payments": shares.default_share})
    reserve = reserve_tokens(contract, shares)
    if reserve < 1:
        return
    clock = FakeClock(1_000.0)
    limiter = InMemoryHierarchicalRateLimiter(contract, shares, clock)
    critical_pace = InMemoryRateLimiter(contract, clock)
    critical_share = InMemoryRateLimiter(tenant_policy(contract, shares.default_share), clock)
    # WHEN other tenants send the other classes at any pace, critical traffic among them
    for gap, is_critical, tenant, priority in steps:
        clock.advance(gap * contract.emission_interval_sec)
        if not is_critical:
            if tenant != critical_tenant or tenant is None:
                limiter.try_acquire(tenant=tenant, priority=priority)
            continue
        within_reserve = decide(critical_pace.tat, clock.now(), contract, 1, reserve).allowed
        within_share = critical_tenant is None or decide(critical_share.tat, clock.now(), critical_share.policy).allowed
        if not (within_reserve and within_share):
            continue  # beyond its reserved share: the guarantee does not cover it
        critical_pace._tat = decide(critical_pace.tat, clock.now(), contract, 1, reserve).new_tat
        if critical_tenant is not None:
            critical_share.try_acquire()
        # THEN it is admitted, whatever the others did
        assert limiter.try_acquire(tenant=critical_tenant, priority=names.PRIORITY_CRITICAL).allowed


@MODEST
@given(contract=contracts, shares=shares_policies,
       steps=st.lists(st.tuples(gaps, st.one_of(st.tuples(tenants, priorities),
                                                st.tuples(st.just("signal"), st.floats(0.0, 5.0)))), max_size=120))
def test_the_inner_loops_cut_binds_every_tenant_and_class(contract, shares, steps):
    # GIVEN a shared bucket following the inner loop
    clock = FakeClock(1_000.0)
    loop = AdaptiveRatePolicy()
    limiter = InMemoryHierarchicalRateLimiter(contract, shares, clock, adaptive=loop)
    admitted_at: list[float] = []
    # WHEN requests and throttling signals come in any order
    for gap, step in steps:
        clock.advance(gap * contract.emission_interval_sec)
        if step[0] == "signal":
            if admitted_at:
                limiter.report_signal(admitted_at[-1], step[1])
            continue
        tenant, priority = step
        alone = decide_adaptive(limiter.tat, limiter.state, clock.now(), contract, loop)
        outcome = limiter.try_acquire(tenant=tenant, priority=priority)
        # THEN nothing is admitted that the downstream's own adaptive bucket would refuse: its cut and block bind all
        if outcome.allowed:
            assert alone.allowed
            admitted_at.append(clock.now())


@MODEST
@given(contract=contracts, shares=shares_policies, steps=st.lists(gaps, max_size=100))
def test_without_tenant_or_class_it_is_todays_gcra_exactly(contract, shares, steps):
    # GIVEN the shared bucket and today's plain GCRA side by side
    clock = FakeClock(1_000.0)
    limiter = InMemoryHierarchicalRateLimiter(contract, shares, clock)
    plain = InMemoryRateLimiter(contract, clock)
    for gap in steps:
        clock.advance(gap * contract.emission_interval_sec)
        # WHEN a caller names neither a tenant nor a class
        # THEN the decision is the plain one, field for field
        assert limiter.try_acquire().decision == plain.try_acquire()


def _copy_at(limiter: InMemoryHierarchicalRateLimiter, now: float) -> InMemoryHierarchicalRateLimiter:
    """The same limiter's state on a clock of its own, at `now`."""
    twin = InMemoryHierarchicalRateLimiter(limiter.policy, limiter.shares, FakeClock(now), limiter.adaptive)
    twin.tat, twin.tenant_tats, twin.state = limiter.tat, dict(limiter.tenant_tats), limiter.state
    return twin
