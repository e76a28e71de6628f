"""Rate limiting with GCRA (the generic cell rate algorithm), as pure functions over one number.

Why GCRA and not a token bucket: both admit the same traffic (a burst of `burst`, then
`rate_per_sec` sustained), but a token bucket must store two numbers (tokens, last refill) and
recompute a refill on every call, while GCRA stores a single one, the theoretical arrival time
(TAT): the instant at which the limiter would be back to "empty" if nothing else arrived. One
number maps onto one conditional DynamoDB UpdateItem, `SET tat = :new_tat` with the condition
`attribute_not_exists(tat) OR tat <= :based_on_tat`, so concurrent Lambdas never double-spend.
It also makes "when to retry" exact: a denied request conforms at `TAT + cost/rate - burst/rate`,
so `retry_after_sec` is a promise rather than a guess (see `decide`).

A single DynamoDB partition absorbs roughly 1,000 write units per second, and every decision on
a key is a write to one item; `shard_count_for` and `split_policy` spread a hot limit over shards.

Exact at the boundary: every instant and interval the limiter decides on lies on a grid of
`TIME_GRID_SEC` (2^-18 s, about 3.8 us). Sums of grid values are exact in a binary float (below
2^34 s, the year 2514) and have an exact decimal form of at most 18 fractional digits, which is what
DynamoDB stores, adds and compares; so a condition computed in decimal agrees with the float
decision behind it, a caller that waits exactly `retry_after_sec` is admitted, and `burst` requests
at one instant are all admitted. The emission interval is rounded *up* to the grid (a rate never
above the policy's: 0.004 % slower at 10 req/s, 0.1 % at 500 req/s, the most a shard plans), and
`now` *down* (a request is never judged later than it arrived).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from throttling.core.clock import Clock
from throttling.core.validation import is_int, is_number

__all__ = [
    "TIME_GRID_SEC",
    "InMemoryRateLimiter",
    "RateDecision",
    "RatePolicy",
    "decide",
    "depth_sec",
    "on_grid",
    "shard_count_for",
    "split_policy",
    "stale_token_after_sec",
]

GRID_STEPS_PER_SEC = 2**18
TIME_GRID_SEC = 1.0 / GRID_STEPS_PER_SEC

# `remaining` is derived by division while admission uses subtraction; without a little slack a
# quotient like 2.9999999999999996 would under-report a full token.
_REMAINING_SLACK = 1e-9


@dataclass(frozen=True)
class RatePolicy:
    """Admit `burst` cost at once, refilled at `rate_per_sec` cost per second."""

    rate_per_sec: float
    burst: int = 1

    def __post_init__(self) -> None:
        if not is_number(self.rate_per_sec):
            raise TypeError(f"rate_per_sec must be a number, got {self.rate_per_sec!r}")
        if not math.isfinite(self.rate_per_sec) or self.rate_per_sec <= 0:
            raise ValueError(f"rate_per_sec must be a finite number > 0, got {self.rate_per_sec}")
        if not is_int(self.burst):
            raise TypeError(f"burst must be an int, got {self.burst!r}")
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {self.burst}; use 1 for no bursting")

    @property
    def emission_interval_sec(self) -> float:
        """Seconds one unit of cost occupies: 1 / rate_per_sec, rounded up to the time grid."""
        return on_grid(1.0 / self.rate_per_sec, up=True)


@dataclass(frozen=True)
class RateDecision:
    """The outcome of one `decide` call.

    allowed: whether the request's cost was admitted.
    retry_after_sec: 0 when allowed; otherwise the exact wait after which the same request is
        admitted if nothing else is admitted meanwhile: asking again at `now + retry_after_sec`
        (that float sum) is admitted, and any earlier instant is not.
    remaining: how many more cost-1 requests would be admitted right now.
    reset_after_sec: seconds until the limiter is back to a full burst if nothing else arrives.
    new_tat: the state to store; equal to the previous state (nothing to write) when denied.
    based_on_tat: the TAT this decision was computed from (max of stored TAT and now); a
        conditional write `tat <= :based_on_tat` keeps the decision valid under concurrency.
    decided_at: the `now` it was decided at (None from older callers); a caller that reports a
        downstream's throttling signal for the call names its admission by it
        (`throttling.core.adaptive_rate.on_signal`).
    """

    allowed: bool
    retry_after_sec: float
    remaining: int
    reset_after_sec: float
    new_tat: float | None
    based_on_tat: float
    decided_at: float | None = None


def decide(state_tat: float | None, now: float, policy: RatePolicy, cost: int = 1,
           depth_tokens: float | None = None) -> RateDecision:
    """Decide whether `cost` units conform at `now`, given the stored TAT (None when never used; a TAT
    this core computed is on the time grid).

    GCRA: with T = 1 / rate_per_sec, a request of cost n conforms when
    `max(tat, now) + n*T - burst*T <= now`; admitting it moves TAT to `max(tat, now) + n*T`.
    All on the time grid: T rounded up, `now` down, and a stored TAT off the grid (written by an
    older version) up, so every sum is exact.

    `depth_tokens` (default: `burst`) is how deep into the bucket this request may reach: the test
    becomes `max(tat, now) + n*T - depth_tokens*T <= now`, with `depth_tokens*T` rounded down to the
    grid. Below `burst` it keeps the rest of the bucket for others (a priority class's threshold,
    borrowed capacity: `throttling.core.hierarchical_rate`); it must be at least `cost`, or the
    request could never conform.
    """
    _check_cost(cost, policy)
    interval = policy.emission_interval_sec
    now_on_grid = on_grid(now)
    based_on = now_on_grid if state_tat is None else max(on_grid(state_tat, up=True), now_on_grid)
    candidate_tat = based_on + cost * interval
    allow_at = candidate_tat - depth_sec(policy, cost, depth_tokens)
    if now_on_grid >= allow_at:
        return RateDecision(
            allowed=True,
            retry_after_sec=0.0,
            remaining=_remaining(candidate_tat, now, policy),
            reset_after_sec=max(0.0, candidate_tat - now),
            new_tat=candidate_tat,
            based_on_tat=based_on,
            decided_at=now,
        )
    return RateDecision(
        allowed=False,
        retry_after_sec=_exact_wait(now, allow_at),
        remaining=_remaining(based_on, now, policy),
        reset_after_sec=max(0.0, based_on - now),
        new_tat=state_tat,
        based_on_tat=based_on,
        decided_at=now,
    )


class InMemoryRateLimiter:
    """One GCRA limiter held in process memory: for tests, the lab and single-instance use."""

    def __init__(self, policy: RatePolicy, clock: Clock) -> None:
        self.policy = policy
        self._clock = clock
        self._tat: float | None = None

    @property
    def tat(self) -> float | None:
        return self._tat

    def try_acquire(self, cost: int = 1) -> RateDecision:
        decision = decide(self._tat, self._clock.now(), self.policy, cost)
        if decision.allowed:
            self._tat = decision.new_tat
        return decision


def shard_count_for(
    rate_per_sec: float,
    per_partition_writes_per_sec: float = 1000.0,
    headroom: float = 0.5,
) -> int:
    """How many limiter items a limit needs so that no DynamoDB partition runs hot.

    Every decision is one write to the limiter item, and a denied conditional write still costs a
    write unit, so pass the offered rate (attempts per second), not only the admitted rate.
    `headroom` is the share of a partition's ~1,000 writes/s a shard may plan to use (0.5 keeps
    half for bursts and for other items of the same partition).
    """
    if not math.isfinite(rate_per_sec) or rate_per_sec <= 0:
        raise ValueError(f"rate_per_sec must be a finite number > 0, got {rate_per_sec}")
    if not math.isfinite(per_partition_writes_per_sec) or per_partition_writes_per_sec <= 0:
        raise ValueError(
            f"per_partition_writes_per_sec must be a finite number > 0, got {per_partition_writes_per_sec}"
        )
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}; 0.5 plans for half a partition")
    usable_per_shard = per_partition_writes_per_sec * headroom
    # The tiny subtraction keeps an exact multiple (1000 / 500.0) from rounding up to one extra shard.
    return max(1, math.ceil(rate_per_sec / usable_per_shard - 1e-9))


def split_policy(policy: RatePolicy, shards: int) -> RatePolicy:
    """The policy each of `shards` independent limiter items enforces so that together they enforce `policy`.

    Sharding trades precision for write throughput:
    - a caller picks one shard at random; a denied shard may try one other before giving up, so
      the fleet sees a denial only when two shards are exhausted, and an unlucky caller can be
      denied while another shard still has room;
    - burst is rounded up per shard (ceil(burst / shards), at least 1), so the combined burst can
      exceed `policy.burst` by up to `shards - 1`, and a request costing more than the per-shard
      burst can no longer be admitted at all.
    """
    if not is_int(shards) or shards < 1:
        raise ValueError(f"shards must be an int >= 1, got {shards!r}")
    return RatePolicy(
        rate_per_sec=policy.rate_per_sec / shards,
        burst=max(1, math.ceil(policy.burst / shards)),
    )


def stale_token_after_sec(limiter: RatePolicy, downstream: RatePolicy) -> float:
    """How long after asking the limiter an admitted token may still be spent on a call.

    The limiter decides at its caller's `now`, but the call reaches the downstream only after the
    limiter's write returns and the call travels: calls decided apart arrive closer together when
    an earlier one was slower. GCRA lets no `n` decisions fall within `(n - limiter.burst) / rate`
    of each other, and the downstream's bucket refuses `n` arrivals within
    `(n - downstream.burst) / downstream rate`; with the limiter no faster than the downstream,
    the tightest case is `n = downstream.burst + 1`, so arrivals may lag their decisions unevenly by
    `(downstream.burst + 1 - limiter.burst) / rate - 1 / downstream rate` and never be refused.
    Half of that is for the limiter's round trip, the other half for the call's own way there; a
    limiter as loose as the downstream leaves nothing to keep, and every token is spent (inf).
    """
    spread_sec = (downstream.burst + 1 - limiter.burst) / limiter.rate_per_sec - 1 / downstream.rate_per_sec
    return spread_sec / 2 if spread_sec > 0 else math.inf


def depth_sec(policy: RatePolicy, cost: int = 1, depth_tokens: float | None = None) -> float:
    """How far ahead of `now` the TAT may reach after an admission: `depth_tokens` (default `burst`)
    emission intervals, on the grid (rounded down: a threshold never admits more than it says)."""
    if depth_tokens is None:
        return policy.burst * policy.emission_interval_sec
    if not is_number(depth_tokens) or not cost <= depth_tokens <= policy.burst:
        raise ValueError(f"depth_tokens must be a number from cost ({cost}) to burst ({policy.burst}), "
                         f"got {depth_tokens!r}; a request could never reach deeper than its bucket, nor conform below its cost")
    return on_grid(depth_tokens * policy.emission_interval_sec)


def _check_cost(cost: int, policy: RatePolicy) -> None:
    if not is_int(cost):
        raise TypeError(f"cost must be an int, got {cost!r}")
    if cost < 1:
        raise ValueError(f"cost must be >= 1, got {cost}")
    if cost > policy.burst:
        raise ValueError(
            f"cost {cost} exceeds burst {policy.burst} and could never be admitted; "
            "raise burst to at least the largest cost or split the request"
        )


def on_grid(seconds: float, *, up: bool = False) -> float:
    """`seconds` on the limiter's time grid (2^-18 s): rounded down, or up with `up`; exact for any finite input."""
    steps = seconds * GRID_STEPS_PER_SEC  # a power of two: exact
    return (math.ceil(steps) if up else math.floor(steps)) / GRID_STEPS_PER_SEC


def _exact_wait(now: float, allow_at: float) -> float:
    # `allow_at - now` can round so that `now + wait` lands one float below `allow_at`; nudge the
    # wait up until retrying at exactly `now + wait` is admitted, which is what the caller will do.
    wait = allow_at - now
    while now + wait < allow_at:
        wait = math.nextafter(wait, math.inf)
    return wait


def _remaining(tat_after: float, now: float, policy: RatePolicy) -> int:
    room_sec = now + policy.burst * policy.emission_interval_sec - tat_after
    units = math.floor(room_sec * policy.rate_per_sec + _REMAINING_SLACK)
    return min(policy.burst, max(0, units))
