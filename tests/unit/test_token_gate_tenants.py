"""The token gate's tenant and class: passed to the limiter with the tunables' shares, and a take that names neither
asks exactly as before tenants."""

from __future__ import annotations

from throttling.core import names
from throttling.core.clock import FakeClock
from throttling.core.hierarchical_rate import InMemoryHierarchicalRateLimiter, TenantShares
from throttling.core.rate_limiter import RateDecision, RatePolicy
from throttling.core.tunables import parse_tunables
from throttling.runtime.token_gate import GateKnobs, TokenGate

POLICY = RatePolicy(rate_per_sec=4.0, burst=4)


class RecordingLimiter:
    """Admits everything and records how it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple, dict]] = []

    def try_acquire(self, *args, **kwargs) -> RateDecision:
        self.calls.append((args, kwargs))
        return RateDecision(True, 0.0, 1, 0.0, 1.0, 0.0, decided_at=0.0)


class SharedBucket:
    """The limiter's contract over the in-memory hierarchical core, on a fake clock."""

    def __init__(self, clock: FakeClock, shares: TenantShares) -> None:
        self.core = InMemoryHierarchicalRateLimiter(POLICY, shares, clock)

    def try_acquire(self, bucket, policy, cost=1, adaptive=None, *, tenant=None, priority=None, shares=None):
        return self.core.try_acquire(cost, tenant=tenant, priority=priority).decision


def test_a_take_that_names_no_tenant_nor_class_asks_the_limiter_as_before():
    # GIVEN a gate over a limiter that records its calls
    limiter = RecordingLimiter()
    gate = TokenGate(limiter, GateKnobs())
    # WHEN a caller takes a token as today's callers do
    gate.take("crm", POLICY, time_left_sec=1.0, stale_after_sec=1.0)
    # THEN the limiter is asked with exactly today's arguments
    assert limiter.calls == [(("crm", POLICY), {})]


def test_a_tenant_and_a_class_reach_the_limiter_with_the_tunables_shares():
    # GIVEN tunables that name a tenant's share and the classes' reserves
    tunables = parse_tunables({"rate_per_sec": 4, "burst": 4, "max_concurrency": 1, "share_acme": 0.5,
                               "reserve_batch": 0.5}).tunables
    limiter = RecordingLimiter()
    gate = TokenGate(limiter, GateKnobs())
    # WHEN a caller takes a token for a tenant at a class
    gate.take("crm", POLICY, time_left_sec=1.0, stale_after_sec=1.0, adaptive=tunables.adaptive, tenant="acme",
              priority=names.PRIORITY_BATCH, shares=tunables.shares)
    # THEN the limiter gets all three, and the shares are the document's
    (_, kwargs), = limiter.calls
    assert kwargs["tenant"] == "acme" and kwargs["priority"] == names.PRIORITY_BATCH
    assert kwargs["shares"].shares == {"acme": 0.5} and kwargs["shares"].reserve_of(names.PRIORITY_BATCH) == 0.5


def test_a_tenant_counts_only_once_the_downstream_s_tunables_name_a_share():
    # GIVEN tunables that name no tenant (a downstream nobody divided yet)
    tunables = parse_tunables({"rate_per_sec": 4, "burst": 4, "max_concurrency": 1}).tunables
    limiter = RecordingLimiter()
    gate = TokenGate(limiter, GateKnobs())
    # WHEN a caller takes a token for a tenant, at a class
    gate.take("crm", POLICY, time_left_sec=1.0, stale_after_sec=1.0, adaptive=tunables.adaptive, tenant="acme",
              priority=names.PRIORITY_BATCH, shares=tunables.shares)
    # THEN the take is from the bucket as a whole (no tenant's default tenth), at its class
    (_, kwargs), = limiter.calls
    assert kwargs["tenant"] is None and kwargs["priority"] == names.PRIORITY_BATCH


def test_a_refused_tenant_waits_out_its_promise_and_is_admitted_then():
    # GIVEN a tenant with a quarter of a 4/s bucket (1/s, burst 1), no borrowing, its token just spent
    clock = FakeClock(1_000.0)
    shares = TenantShares({"acme": 0.25}, borrow_depth=0.0)
    limiter = SharedBucket(clock, shares)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    gate = TokenGate(limiter, GateKnobs(max_wait_sec=5.0), clock=clock.now, sleep=sleep)
    first = gate.take("crm", POLICY, time_left_sec=5.0, stale_after_sec=1.0, tenant="acme", shares=shares)
    # WHEN it takes another at once
    second = gate.take("crm", POLICY, time_left_sec=5.0, stale_after_sec=1.0, tenant="acme", shares=shares)
    # THEN the gate waited exactly once, for its share's interval, and was admitted then
    assert first.admitted and second.admitted
    assert len(slept) == 1 and abs(slept[0] - 1.0) < 1e-5
