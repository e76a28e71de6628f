"""Tenants and priority classes in the DynamoDB limiter on the emulator: one conditional write per admission on the
shard's item, concurrent writers never over-admitting the global limit nor a tenant's share, idle tenants' entries
removed, and the inner loop's block binding every tenant.

Time is a FakeClock shared by every thread (as in test_dynamodb_limits), so counts are exact whatever the machine's
speed. Each thread has its own adapter and client, as each execution environment would.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.e2e.test_dynamodb_limits import T0, THREADS, fleet, in_threads, table  # noqa: F401 - the fixture
from throttling.adapters.dynamodb_rate_limiter import DynamoDbRateLimiter, rate_limiter_key
from throttling.core import names
from throttling.core.adaptive_rate import AdaptiveRatePolicy
from throttling.core.clock import FakeClock
from throttling.core.hierarchical_rate import InMemoryHierarchicalRateLimiter, TenantShares
from throttling.core.rate_limiter import RatePolicy

pytestmark = pytest.mark.emulator

POLICY = RatePolicy(rate_per_sec=8, burst=16)
# Each named tenant: 2 req/s, burst 4; borrowing may fill half the bucket (8 of 16).
SHARES = TenantShares({"noisy": 0.25, "quiet": 0.25}, default_share=0.125, borrow_depth=0.5)


def drain(limiter: DynamoDbRateLimiter, **request) -> int:
    """Acquire until really denied (a wait > 0, not a lost race); the number admitted."""
    admitted = 0
    for _ in range(1_000):
        decision = limiter.try_acquire("crm", POLICY, shares=SHARES, **request)
        if decision.allowed:
            admitted += 1
        elif decision.retry_after_sec > 0:
            return admitted
    raise AssertionError("the limiter never denied")


def stored(cloud, table_name: str) -> dict:
    return cloud.client("dynamodb").get_item(TableName=table_name, Key={"pk": {"S": rate_limiter_key("crm", 0)}},
                                             ConsistentRead=True)["Item"]


def test_sixteen_writers_admit_each_tenant_its_share_and_borrow_only_the_idle_half(cloud, table):
    # GIVEN 16 callers, 12 of the noisy tenant and 4 of the quiet one, frozen at T0
    clock = FakeClock(T0)
    limiters, clients = fleet(cloud, THREADS, lambda c: DynamoDbRateLimiter(table, client=c, clock=clock))

    # WHEN the noisy tenant's callers all drain the bucket at once
    noisy = sum(in_threads(lambda i: drain(limiters[i], tenant="noisy"), threads=12))
    # THEN it got its own burst (4) and borrowed up to half the global depth (4 more), no more
    assert noisy == 8
    # WHEN the quiet tenant's callers come
    quiet = sum(in_threads(lambda i: drain(limiters[12 + i], tenant="quiet"), threads=4))
    # THEN its whole burst is there for it: the borrowing left it room
    assert quiet == 4
    # AND one item holds the global TAT and each tenant's: 12 admissions of 1/8 s, each tenant's 4 of 1/2 s
    item = stored(cloud, table)
    assert float(item["tat"]["N"]) == T0 + 12 / 8
    assert float(item["t#noisy"]["N"]) == T0 + 4 / 2 and float(item["t#quiet"]["N"]) == T0 + 4 / 2
    # AND every admission was one successful write, none of them a read
    assert sum(c.total("update_item", succeeded=True) for c in clients) == 12
    assert all(c.total("get_item") == 0 for c in clients)


def test_over_time_concurrent_writers_never_exceed_the_global_limit_and_the_quiet_tenant_gets_its_share(cloud, table):
    # GIVEN 16 callers (12 noisy, 3 quiet, 1 of a tenant the shares do not name) and a clock moved in half seconds
    clock = FakeClock(T0)
    limiters, _ = fleet(cloud, THREADS, lambda c: DynamoDbRateLimiter(table, client=c, clock=clock))
    tenant_of = ["noisy"] * 12 + ["quiet"] * 3 + ["stranger"]
    admitted: Counter[str] = Counter()
    # WHEN they all drain the bucket at every half second for 5 s
    for _ in range(11):
        counts = in_threads(lambda i: drain(limiters[i], tenant=tenant_of[i]))
        for index, count in enumerate(counts):
            admitted[tenant_of[index]] += count
        clock.advance(0.5)
    # THEN the global limit holds in all: at most its burst plus 5 s of its rate
    assert sum(admitted.values()) <= POLICY.burst + 5 * POLICY.rate_per_sec
    # AND the quiet tenant got all of its share, its burst and 5 s at 2/s (its TAT counts exactly those),
    # and may have borrowed a little idle room besides
    assert float(stored(cloud, table)["t#quiet"]["N"]) == T0 + 5 + 4 / 2
    assert admitted["quiet"] >= 4 + 5 * 2
    # AND the unknown tenant got at least the default share (1 req/s, burst 2), never the bucket
    assert 2 + 5 * 1 <= admitted["stranger"] < admitted["noisy"]


def test_under_saturation_batch_is_refused_first_and_critical_keeps_its_reserve(cloud, table):
    # GIVEN the default reserves (standard keeps 20 % of the depth, batch 40 %), callers frozen at T0
    clock = FakeClock(T0)
    limiters, _ = fleet(cloud, THREADS, lambda c: DynamoDbRateLimiter(table, client=c, clock=clock))
    # WHEN batch callers drain, then standard, then critical, each class from many threads at once
    batch = sum(in_threads(lambda i: drain(limiters[i], priority=names.PRIORITY_BATCH), threads=8))
    standard = sum(in_threads(lambda i: drain(limiters[i], priority=names.PRIORITY_STANDARD), threads=8))
    critical = sum(in_threads(lambda i: drain(limiters[i], priority=names.PRIORITY_CRITICAL), threads=8))
    # THEN each class filled the bucket to its own depth: 60 % of 16, then 80 %, then all of it
    assert (batch, standard, critical) == (9, 3, 4)
    # AND a batch request now is told when it would conform: when its token fits within batch's depth
    # (9.6 of 16) again, i.e. when the bucket has drained 16 + 1 - 9.6 tokens at 8/s
    refused = limiters[0].try_acquire("crm", POLICY, shares=SHARES, priority=names.PRIORITY_BATCH)
    assert not refused.allowed and refused.retry_after_sec == pytest.approx((16 + 1 - 9.6) / 8, abs=1e-5)


def test_idle_tenants_entries_are_removed_by_later_admissions(cloud, table):
    # GIVEN a tenant admitted once, long ago
    clock = FakeClock(T0)
    limiter = DynamoDbRateLimiter(table, client=cloud.client("dynamodb"), clock=clock)
    assert limiter.try_acquire("crm", POLICY, shares=SHARES, tenant="once").allowed
    assert "t#?" in "".join(stored(cloud, table)) or any(name.startswith("t#") for name in stored(cloud, table))
    # WHEN its bucket is full again and another tenant is admitted twice
    clock.advance(60.0)
    assert limiter.try_acquire("crm", POLICY, shares=SHARES, tenant="quiet").allowed
    assert limiter.try_acquire("crm", POLICY, shares=SHARES, tenant="quiet").allowed
    # THEN the idle entry is gone (an absent entry is a full bucket) and the active one stays
    attributes = stored(cloud, table)
    assert [name for name in attributes if name.startswith("t#")] == ["t#quiet"]


def test_the_inner_loops_block_and_cut_bind_every_tenant(cloud, table):
    # GIVEN a bucket with the inner loop, a tenant admitted at T0
    loop = AdaptiveRatePolicy(decrease_factor=0.5, increase_fraction_per_sec=0.01, floor_fraction=0.1)
    clock = FakeClock(T0)
    limiter = DynamoDbRateLimiter(table, client=cloud.client("dynamodb"), clock=clock)
    admitted = limiter.try_acquire("crm", POLICY, adaptive=loop, shares=SHARES, tenant="quiet")
    assert admitted.allowed
    # WHEN its call meets a 429 asking for 2 s
    limiter.report_signal("crm", POLICY, loop, admitted_at=admitted.decided_at, retry_after_sec=2.0)
    # THEN every tenant and class is refused until the block ends, and told exactly when
    for request in ({"tenant": "quiet"}, {"tenant": "noisy", "priority": names.PRIORITY_CRITICAL}, {}):
        refused = limiter.try_acquire("crm", POLICY, adaptive=loop, shares=SHARES, **request) if request else \
            limiter.try_acquire("crm", POLICY, adaptive=loop)
        assert not refused.allowed and refused.retry_after_sec == pytest.approx(2.0, abs=1e-5)
    # AND after it the bucket admits at the cut rate: half the burst, shared by tenants and tenant-less callers alike
    clock.advance(2.0)
    total = sum(drain_adaptive(limiter, loop, tenant=name) for name in ("noisy", "quiet"))
    assert total <= POLICY.burst // 2 + 1


def test_a_published_limit_lowers_every_tenants_share_with_the_bucket(cloud, table):
    # GIVEN a bucket with the inner loop (8 req/s, burst 16), a tenant admitted at T0 by one caller
    loop = AdaptiveRatePolicy(decrease_factor=0.5, increase_fraction_per_sec=0.01, floor_fraction=0.1)
    clock = FakeClock(T0)
    limiter = DynamoDbRateLimiter(table, client=cloud.client("dynamodb"), clock=clock)
    admitted = limiter.try_acquire("crm", POLICY, adaptive=loop, shares=SHARES, tenant="quiet")
    assert admitted.allowed
    # WHEN that call's answer publishes 4 req/s, half the contract
    assert limiter.report_published("crm", POLICY, loop, admitted_at=admitted.decided_at, published_per_sec=4.0) == [True]
    # AND another caller, which never saw it, takes one token for a tenant (its write's answer teaches it)
    other = DynamoDbRateLimiter(table, client=cloud.client("dynamodb"), clock=clock)
    clock.advance(10.0)
    assert other.try_acquire("crm", POLICY, adaptive=loop, shares=SHARES, tenant="noisy").allowed
    assert other.seen_state("crm").published_per_sec == 4.0
    # THEN, the bucket refilled, both tenants together get the published rate's burst (8 of the contract's 16): each
    # tenant's share and what it may borrow are shares of the bucket's current rate, and that is the published one
    clock.advance(10.0)
    total = sum(drain_adaptive(limiter, loop, tenant=name) for name in ("noisy", "quiet"))
    assert total <= POLICY.burst // 2
    # (the same two tenants get 12 of a bucket at its contract: test_sixteen_writers_admit_each_tenant_its_share...)


def drain_adaptive(limiter: DynamoDbRateLimiter, loop: AdaptiveRatePolicy, **request) -> int:
    admitted = 0
    for _ in range(1_000):
        decision = limiter.try_acquire("crm", POLICY, adaptive=loop, shares=SHARES, **request)
        if decision.allowed:
            admitted += 1
        elif decision.retry_after_sec > 0:
            return admitted
    raise AssertionError("the limiter never denied")


def test_a_sharded_bucket_holds_each_tenants_share_on_every_shard(cloud, table):
    # GIVEN a limit spread over 3 shards (400 req/s and a burst of 20 each), a tenant's share a quarter of each
    policy = RatePolicy(rate_per_sec=1_200, burst=60)
    clock = FakeClock(T0)
    limiters, _ = fleet(cloud, THREADS, lambda c: DynamoDbRateLimiter(table, client=c, clock=clock))
    assert limiters[0].shards_for(policy) == 3

    def drain_sharded(limiter: DynamoDbRateLimiter, tenant: str) -> int:
        admitted = 0
        for _ in range(1_000):
            decision = limiter.try_acquire("crm", policy, shares=SHARES, tenant=tenant)
            if decision.allowed:
                admitted += 1
            elif decision.retry_after_sec > 0:
                return admitted
        raise AssertionError("the limiter never denied")

    # WHEN 12 callers of the noisy tenant drain it, then 4 of the quiet one
    noisy = sum(in_threads(lambda i: drain_sharded(limiters[i], "noisy"), threads=12))
    quiet = sum(in_threads(lambda i: drain_sharded(limiters[12 + i], "quiet"), threads=4))
    # THEN on each shard the noisy tenant took its burst (5) and borrowed to half the depth (10), and the quiet
    # one still found its whole burst on every shard
    assert (noisy, quiet) == (3 * 10, 3 * 5)


@pytest.mark.parametrize("seed", [1, 2])
def test_two_instances_through_dynamodb_decide_exactly_as_the_core_in_memory(cloud, table, seed):
    # GIVEN two adapter instances (two execution environments, each with its own stale view of the item)
    # and the pure core in memory, on one clock
    import random

    rng = random.Random(seed)
    clock = FakeClock(T0)
    instances = [DynamoDbRateLimiter(table, client=cloud.client("dynamodb"), clock=clock) for _ in range(2)]
    core = InMemoryHierarchicalRateLimiter(POLICY, SHARES, clock)
    tenants = [None, "noisy", "quiet", "stranger", "another-stranger"]
    classes = [None, *names.PRIORITY_CLASSES]
    # WHEN a random mix of tenants and classes asks either instance at random gaps
    for _ in range(300):
        clock.advance(rng.choice([0.0, 0.0, 0.01, 0.05, 0.125, 0.5, 2.0, 30.0]))
        tenant, priority = rng.choice(tenants), rng.choice(classes)
        expected = core.try_acquire(tenant=tenant, priority=priority)
        if tenant is None and priority is None:
            answer = rng.choice(instances).try_acquire("crm", POLICY)
        else:
            answer = rng.choice(instances).try_acquire("crm", POLICY, shares=SHARES, tenant=tenant, priority=priority)
        # THEN every answer is the core's, admitted or not
        assert answer.allowed == expected.allowed
        # AND a refusal's wait is the core's, or shorter when the instance refused on what it had seen (a lower
        # bound of every stored TAT, which proves the refusal at no write): never longer than needed
        if not answer.allowed:
            assert 0 < answer.retry_after_sec <= expected.retry_after_sec + 1e-5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_with_the_inner_loop_two_instances_decide_exactly_as_the_core_in_memory(cloud, table, seed):
    # GIVEN two adapter instances and the pure core, all following the inner loop, on one clock
    import random

    rng = random.Random(seed)
    loop = AdaptiveRatePolicy(decrease_factor=0.5, increase_fraction_per_sec=0.05, floor_fraction=0.1)
    clock = FakeClock(T0)
    instances = [DynamoDbRateLimiter(table, client=cloud.client("dynamodb"), clock=clock) for _ in range(2)]
    core = InMemoryHierarchicalRateLimiter(POLICY, SHARES, clock, adaptive=loop)
    admitted_at: list[float] = []
    # WHEN tenants and classes ask either instance, and now and then a call's 429 is reported to either
    for _ in range(300):
        clock.advance(rng.choice([0.0, 0.01, 0.05, 0.125, 0.5, 2.0]))
        if admitted_at and rng.random() < 0.05:
            at, retry_after = rng.choice(admitted_at[-5:]), rng.choice([None, 1.0])
            core.report_signal(at, retry_after)
            rng.choice(instances).report_signal("crm", POLICY, loop, admitted_at=at, retry_after_sec=retry_after)
            continue
        tenant, priority = rng.choice([None, "noisy", "quiet", "stranger"]), rng.choice([None, *names.PRIORITY_CLASSES])
        expected = core.try_acquire(tenant=tenant, priority=priority)
        instance = rng.choice(instances)
        seen_signals = instance.seen_state("crm").signals
        answer = instance.try_acquire("crm", POLICY, adaptive=loop, shares=SHARES, tenant=tenant, priority=priority)
        # THEN every answer is the core's: the cut and the block bind tenants and classes alike
        if answer.allowed != expected.allowed:
            # AND the only exception: a refusal an instance proved at no write on a state older than the stored one.
            # The scaled burst is rounded up, so a faster rate can hold less depth in seconds than a slower one
            # (`adaptive_rate.effective_policy`); such a refusal waits a little early, and the write that follows
            # learns the state. It never admits what the core refuses.
            assert expected.allowed and not answer.allowed
            assert seen_signals < int(stored(cloud, table)["signals"]["N"])
            return  # the core admitted one more: from here on the two histories differ
        if answer.allowed:
            admitted_at.append(clock.now())
