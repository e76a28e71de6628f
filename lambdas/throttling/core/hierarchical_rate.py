"""Tenants under a downstream's bucket, with weighted soft shares and priority classes: GCRA over a few numbers.

The same GCRA core as every other bucket (`throttling.core.rate_limiter.decide`), asked more than once:

- **The global bucket** is the downstream's (its current rate: the inner loop's cut applies, see
  `throttling.core.adaptive_rate.effective_policy`). Every admission conforms to it, so the
  downstream is never over-admitted whatever the tenants and classes do.
- **Each tenant has its own bucket** under it: its share of the global bucket's current rate, its
  burst scaled alike (`ceil(share x burst)`, at least the cost), so its tolerance in seconds is the
  global one. Shares are weights as fractions of the rate (`TenantShares.shares`); they may add up
  to more than 1 (the global bucket still caps the sum). A tenant the shares do not name gets
  `default_share`, never the whole bucket: unknown tenants are hashed into `unknown_tenant_slots`
  buckets of the default share each, so a flood of made-up tenant ids cannot grow the state
  without bound nor add up to more than `slots x default_share`.
- **Within its share** (its own bucket conforms) an admission takes from both buckets, or from
  neither: one decision, stored as one write.
- **Borrowing** (soft allocation): a tenant past its share may still be admitted by the global
  bucket alone, but only into its first `borrow_depth` of depth (the depth a class may reach, times
  `borrow_depth`). Borrowed admissions leave the tenant's own bucket as it was (a borrower keeps its
  full share for when the others come back); what bounds them is the global bucket: they happen only
  while it has more idle room than `1 - borrow_depth` of its depth. A tenant returning from idle
  has a full bucket of its own, and its admissions may reach into the top of the depth that borrowers
  leave free, so it is admitted at once and keeps its whole share while others borrow: each of its
  admissions only makes the borrowers wait longer (`bench/tenants.py`: its full share within 2 s).
  `borrow_depth` 0 turns borrowing off: hard partitioning.
- **Priority classes** (`names.PRIORITY_CLASSES`, highest first, a class per request): the
  technique is per-class admission thresholds on one shared bucket's depth (as ATM's cell-loss
  priority thresholds, and the "reserved capacity" of a priority load shedder): a class may fill
  the global bucket only up to `1 - reserve` of its depth (`priority_reserves`; critical's reserve
  is 0, each lower class at least the one above it). Under saturation the depth hovers at the
  threshold of the highest class still asking, so the lowest class is refused first and critical
  keeps the reserved depth for itself. The same thresholds apply inside each tenant's bucket, so a
  tenant's own batch traffic is refused before its own critical traffic. Why thresholds rather than one bucket per class, or
  weighted shares per class: one stored number (the global TAT) still decides the downstream's
  limit exactly, no class's bucket idles while another starves, and the order is strict, which is
  what "shed batch before payments" asks. The cost: a class below is refused only while a class
  above fills the bucket; it is not guaranteed a share of its own (batch may be starved by a
  standard load of the whole rate: that is the point).
  Critical's guarantee: a critical stream that on its own conforms to a bucket of the global rate
  and a burst of the reserve (`reserve_tokens`) is never refused, whatever the other classes do
  (the depth the others leave is at most `1 - reserve`; GCRA's depth from any start grows by at most
  the depth the same stream builds from empty). Without tenants, or for a tenant within its share.
  A threshold is never below the request's cost (a class could otherwise never be admitted), so a
  bucket whose burst is below `cost / (1 - reserve)` cannot tell the classes apart: there they share
  it first come, first served.
- **Retry-After is a promise**: a refusal's `retry_after_sec` is the earliest instant at which the
  same request conforms if nothing else is admitted meanwhile: the later of its own bucket's and the
  global bucket's waits on the within-share path, or the global wait at the borrowing depth,
  whichever comes first.

A request with neither a tenant nor a class is `decide` on the global bucket exactly: today's callers
see no change.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from throttling.core import names
from throttling.core.adaptive_rate import AdaptiveRatePolicy, AdaptiveState, decide_adaptive, effective_policy, on_signal
from throttling.core.clock import Clock
from throttling.core.rate_limiter import RateDecision, RatePolicy, decide, on_grid
from throttling.core.validation import is_int, is_number

__all__ = [
    "MAX_TENANT_ID_CHARS",
    "MAX_TENANTS",
    "PRIORITY_ORDER",
    "HierarchicalDecision",
    "InMemoryHierarchicalRateLimiter",
    "TenantShares",
    "class_depth_tokens",
    "decide_hierarchical",
    "reserve_tokens",
    "tenant_key",
    "tenant_policy",
    "tenant_share",
]

PRIORITY_ORDER = names.PRIORITY_CLASSES
# The state of every tenant of a shard lives in one DynamoDB item (400 KB at most, and every write is
# billed per KB of it): at most MAX_TENANTS named tenants plus the unknown tenants' slots, each an
# attribute of at most MAX_TENANT_ID_CHARS + 4 characters and a number (see the DynamoDB adapter).
MAX_TENANTS = 256
MAX_TENANT_ID_CHARS = 64
MAX_UNKNOWN_TENANT_SLOTS = 64
# A slot's key cannot be a tenant's id: tenant ids may not start with it.
UNKNOWN_TENANT_PREFIX = "?"
_DEFAULT_RESERVES = MappingProxyType({names.PRIORITY_CRITICAL: 0.0, names.PRIORITY_STANDARD: 0.2,
                                      names.PRIORITY_BATCH: 0.4})


@dataclass(frozen=True)
class TenantShares:
    """How a downstream's bucket is shared among tenants and priority classes.

    :param shares: tenant id -> its share of the downstream's current rate, in (0, 1]; default none.
    :param default_share: the share of a tenant `shares` does not name; default 0.1.
    :param borrow_depth: the part of a class's depth a tenant past its share may fill with borrowed
        admissions, in [0, 1]; default 0.5; 0 turns borrowing off (hard partitioning).
    :param priority_reserves: class -> the part of the global bucket's depth it may not fill, kept
        for the classes above it; default critical 0, standard 0.2, batch 0.4. Critical's is 0,
        and a class's reserve is at least the one above it. A class left out has its upper
        neighbour's reserve.
    :param unknown_tenant_slots: how many default-share buckets unknown tenants are hashed into;
        default 16.
    """

    shares: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    default_share: float = 0.1
    borrow_depth: float = 0.5
    priority_reserves: Mapping[str, float] = field(default_factory=lambda: _DEFAULT_RESERVES)
    unknown_tenant_slots: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.shares, Mapping):
            raise TypeError(f"shares must map tenant ids to shares, got {type(self.shares).__name__}")
        if len(self.shares) > MAX_TENANTS:
            raise ValueError(f"shares name {len(self.shares)} tenants; at most {MAX_TENANTS} fit one limiter item: "
                             "give the small tenants the default share instead")
        for tenant, share in self.shares.items():
            _check_tenant_id(tenant)
            _check_fraction(f"the share of tenant {tenant!r}", share, low_open=True)
        _check_fraction("default_share", self.default_share, low_open=True)
        _check_fraction("borrow_depth", self.borrow_depth)
        if not is_int(self.unknown_tenant_slots) or not 1 <= self.unknown_tenant_slots <= MAX_UNKNOWN_TENANT_SLOTS:
            raise ValueError(f"unknown_tenant_slots must be an int from 1 to {MAX_UNKNOWN_TENANT_SLOTS}, "
                             f"got {self.unknown_tenant_slots!r}")
        if not isinstance(self.priority_reserves, Mapping):
            raise TypeError(f"priority_reserves must map classes to reserves, got {type(self.priority_reserves).__name__}")
        unknown = sorted(str(name) for name in set(self.priority_reserves) - set(PRIORITY_ORDER))
        if unknown:
            raise ValueError(f"unknown priority classes {unknown}; the classes are {list(PRIORITY_ORDER)}")
        for name, reserve in self.priority_reserves.items():
            _check_fraction(f"the reserve of class {name!r}", reserve, high_open=True)
        if self.priority_reserves.get(names.PRIORITY_CRITICAL, 0.0) != 0.0:
            raise ValueError(f"critical's reserve must be 0 (it is the top class; nothing is kept from it), "
                             f"got {self.priority_reserves[names.PRIORITY_CRITICAL]}")
        above = 0.0
        for name in PRIORITY_ORDER:
            reserve = self.priority_reserves.get(name, above)
            if reserve < above:
                raise ValueError(f"the reserve of class {name!r} ({reserve}) is below the class above it ({above}); "
                                 f"a lower class must keep at least as much for the classes above it")
            above = reserve
        # Frozen copies: a caller's dict changing later must not change a policy in force.
        object.__setattr__(self, "shares", MappingProxyType(dict(self.shares)))
        object.__setattr__(self, "priority_reserves", MappingProxyType(dict(self.priority_reserves)))

    def reserve_of(self, priority: str | None) -> float:
        """The part of the global depth `priority` may not fill (None: 0, the whole bucket, as before classes)."""
        if priority is None:
            return 0.0
        if priority not in PRIORITY_ORDER:
            raise ValueError(f"unknown priority class {priority!r}; give one of {list(PRIORITY_ORDER)} or none")
        reserve = 0.0
        for name in PRIORITY_ORDER:
            reserve = self.priority_reserves.get(name, reserve)
            if name == priority:
                return reserve
        raise AssertionError("unreachable: priority is one of PRIORITY_ORDER")



@dataclass(frozen=True)
class HierarchicalDecision:
    """The outcome of one `decide_hierarchical` call.

    decision: the global bucket's answer (`RateDecision`: `new_tat` is the global TAT to store,
        `retry_after_sec` the promise for the whole request, tenant's bucket included).
    tenant_key: which tenant bucket the request was judged by (None without a tenant): the tenant's
        id, or an unknown tenant's slot.
    tenant_new_tat / tenant_based_on_tat: the tenant bucket's TAT to store and the one it was decided
        from (None: nothing to store, for a refusal, a borrowed admission, or no tenant).
    borrowed: admitted past the tenant's share, on the global bucket's idle room.
    depth_tokens: how deep into the global bucket this admission was allowed to reach (what a
        conditional write checks).
    tenant_policy: the tenant bucket's policy at this decision (None without a tenant).
    """

    decision: RateDecision
    tenant_key: str | None = None
    tenant_new_tat: float | None = None
    tenant_based_on_tat: float | None = None
    borrowed: bool = False
    depth_tokens: float | None = None
    tenant_policy: RatePolicy | None = None

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    @property
    def retry_after_sec(self) -> float:
        return self.decision.retry_after_sec


def tenant_key(tenant: str, shares: TenantShares) -> str:
    """The bucket a tenant is judged by: its own id when the shares name it, else one of the unknown tenants' slots."""
    if not isinstance(tenant, str) or not tenant:
        raise ValueError(f"a tenant id must be a non-empty string, got {tenant!r}; pass None for no tenant")
    if tenant in shares.shares:
        return tenant
    # crc32: stable across processes and Python versions (hash() is salted per process).
    return f"{UNKNOWN_TENANT_PREFIX}{zlib.crc32(tenant.encode()) % shares.unknown_tenant_slots}"


def tenant_share(key: str, shares: TenantShares) -> float:
    """The share of the bucket `key` (from `tenant_key`)."""
    return shares.shares.get(key, shares.default_share)


def tenant_policy(policy: RatePolicy, share: float, cost: int = 1) -> RatePolicy:
    """A tenant's bucket under the global `policy`: `share` of its rate, its burst scaled alike, at least `cost`."""
    return RatePolicy(rate_per_sec=policy.rate_per_sec * share,
                      burst=max(cost, 1, math.ceil(policy.burst * share - 1e-9)))


def class_depth_tokens(policy: RatePolicy, shares: TenantShares, priority: str | None, cost: int = 1) -> float:
    """How many tokens deep into the global bucket a request of `priority` may reach: `(1 - reserve) x burst`,
    never below `cost`."""
    return max(float(cost), (1.0 - shares.reserve_of(priority)) * policy.burst)


def reserve_tokens(policy: RatePolicy, shares: TenantShares, cost: int = 1) -> float:
    """The depth only critical may fill: the burst less the deepest any other class reaches."""
    others = [class_depth_tokens(policy, shares, name, cost) for name in PRIORITY_ORDER[1:]]
    return policy.burst - max(others, default=float(policy.burst))


def decide_hierarchical(global_tat: float | None, tenant_tat: float | None, now: float, policy: RatePolicy,
                        shares: TenantShares, *, tenant: str | None = None, priority: str | None = None,
                        cost: int = 1) -> HierarchicalDecision:
    """Decide `cost` units of `tenant` at class `priority` at `now` (see the module docstring).

    `policy` is the global bucket's policy in force (after the inner loop's cut); `tenant_tat` the
    stored TAT of the tenant's bucket (`tenant_key`), ignored without a tenant.
    """
    depth = class_depth_tokens(policy, shares, priority, cost)
    full = decide(global_tat, now, policy, cost, depth)
    if tenant is None:
        return HierarchicalDecision(full, depth_tokens=depth)
    key = tenant_key(tenant, shares)
    own_policy = tenant_policy(policy, tenant_share(key, shares), cost)
    # The class's threshold applies inside the tenant's bucket too: a tenant's own batch is shed before its payments.
    own = decide(tenant_tat, now, own_policy, cost, class_depth_tokens(own_policy, shares, priority, cost))
    if own.allowed and full.allowed:
        return HierarchicalDecision(full, key, own.new_tat, own.based_on_tat, False, depth, own_policy)
    within_share_wait = max(own.retry_after_sec, full.retry_after_sec)
    borrow_tokens = depth * shares.borrow_depth
    if borrow_tokens < cost:
        # No borrowing at this depth (or none at all): only the tenant's own share can admit it.
        return HierarchicalDecision(_refused(full, within_share_wait), key, depth_tokens=depth, tenant_policy=own_policy)
    borrowed = decide(global_tat, now, policy, cost, borrow_tokens)
    if borrowed.allowed:
        return HierarchicalDecision(borrowed, key, None, None, True, borrow_tokens, own_policy)
    return HierarchicalDecision(_refused(full, min(within_share_wait, borrowed.retry_after_sec)), key,
                                depth_tokens=depth, tenant_policy=own_policy)


def _refused(global_answer: RateDecision, retry_after_sec: float) -> RateDecision:
    return RateDecision(allowed=False, retry_after_sec=retry_after_sec, remaining=0 if global_answer.allowed
                        else global_answer.remaining, reset_after_sec=global_answer.reset_after_sec,
                        new_tat=None if global_answer.allowed else global_answer.new_tat,
                        based_on_tat=global_answer.based_on_tat, decided_at=global_answer.decided_at)


class InMemoryHierarchicalRateLimiter:
    """One downstream's shared bucket with its tenants, in process memory: for tests, the lab and single-instance use.

    With `adaptive`, the global bucket follows the inner loop (`report_signal`); `policy` is then its ceiling.
    """

    def __init__(self, policy: RatePolicy, shares: TenantShares, clock: Clock,
                 adaptive: AdaptiveRatePolicy | None = None) -> None:
        self.policy = policy
        self.shares = shares
        self.adaptive = adaptive
        self._clock = clock
        self.tat: float | None = None
        self.tenant_tats: dict[str, float] = {}
        self.state = AdaptiveState()

    def policy_at(self, now: float, cost: int = 1) -> RatePolicy:
        """The global bucket's policy in force at `now`."""
        if self.adaptive is None:
            return self.policy
        return effective_policy(self.state, now, self.policy, self.adaptive, cost)

    def try_acquire(self, cost: int = 1, *, tenant: str | None = None, priority: str | None = None) -> HierarchicalDecision:
        now = self._clock.now()
        if self.adaptive is not None and on_grid(now) < self.state.blocked_until:
            return HierarchicalDecision(decide_adaptive(self.tat, self.state, now, self.policy, self.adaptive, cost))
        key = None if tenant is None else tenant_key(tenant, self.shares)
        outcome = decide_hierarchical(self.tat, None if key is None else self.tenant_tats.get(key), now,
                                      self.policy_at(now, cost), self.shares, tenant=tenant, priority=priority, cost=cost)
        if outcome.allowed:
            self.tat = outcome.decision.new_tat
            if outcome.tenant_key is not None and outcome.tenant_new_tat is not None:
                self.tenant_tats[outcome.tenant_key] = outcome.tenant_new_tat
            if self.adaptive is not None:
                self.state = self.state.started(now, self.policy.rate_per_sec, self.adaptive)
        return outcome

    def report_signal(self, admitted_at: float, retry_after_sec: float | None) -> None:
        """A downstream's throttling signal for a call admitted at `admitted_at` (the inner loop's `on_signal`)."""
        if self.adaptive is None:
            return
        outcome = on_signal(self.state, self._clock.now(), admitted_at, retry_after_sec, self.policy, self.adaptive)
        if outcome.state is not None:
            self.state = outcome.state


def _check_tenant_id(tenant: object) -> None:
    if not isinstance(tenant, str) or not tenant or len(tenant) > MAX_TENANT_ID_CHARS:
        raise ValueError(f"a tenant id must be a string of 1 to {MAX_TENANT_ID_CHARS} characters, got {tenant!r}")
    if tenant.startswith(UNKNOWN_TENANT_PREFIX):
        raise ValueError(f"a named tenant's id may not start with {UNKNOWN_TENANT_PREFIX!r} (unknown tenants' slots "
                         f"do), got {tenant!r}")


def _check_fraction(name: str, value: object, *, low_open: bool = False, high_open: bool = False) -> None:
    if not is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r}")
    assert isinstance(value, (int, float))
    too_low = value <= 0 if low_open else value < 0
    too_high = value >= 1 if high_open else value > 1
    if too_low or too_high or not math.isfinite(value):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value}")

