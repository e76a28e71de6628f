"""The shared limiter's fast inner loop: the bucket's *current* rate, cut by a downstream's throttling
signal and probed back up by clean time, as pure functions over a few stored numbers.

The slow outer loop (the controller, `throttling.core.controller`) sets the rate in force once a
minute from CloudWatch; this loop moves the bucket's rate under it within one call's round trip:

- a *signal* is a downstream's 429, or a 503 that carries a Retry-After of at most `max_block_sec`
  (`is_throttling_signal`: a longer one says the downstream is down, not busy, which is the
  breaker's business); any caller reports it for the call it made (`on_signal`). The bucket then admits nobody before the Retry-After ends
  (`blocked_until`, for every caller of every environment at once), and its rate is multiplied by
  `decrease_factor`;
- a burst of signals from one overload cuts once: a signal counts only if its call was admitted at
  or after the last cut took effect (`rate_base_at`). The calls admitted before it were sent at the
  old rate, so their 429s say nothing about the new one; they still extend the block if they ask
  for longer;
- from the cut on, the rate climbs back additively, `increase_fraction_per_sec` of the ceiling per
  second without a signal, up to the ceiling: the rate in force (the tunables, already clamped to
  the downstream's contract). A bucket that is idle climbs too, which is safe: its first signal
  cuts it again, and the first cut of an overload is the only one the dedup lets through;
- near the rate that drew the last signal (`rate_peak_per_sec`, from `NEAR_PEAK_LOW` to
  `NEAR_PEAK_HIGH` of it) the climb slows to `NEAR_PEAK_SLOPE` of that rate per second: the limit
  is most likely there, and a climb that crosses it slowly draws a 429 every few dozen seconds
  instead of every few. Past the band the limit has moved up (capacity came back), and the climb
  is fast again. Every piece is linear: the increase stays additive, only its slope changes;
- the rate never falls below `floor_fraction` of the ceiling (one caller's stray 429 must not
  starve the fleet), and never exceeds the ceiling;
- where the contract is unknown (`seed_fraction` < 1), the bucket starts at the seed when it is
  first used and discovers the rate with the same climb and cuts, up to the configured ceiling;
- a downstream that *publishes* its limit (`RateLimit-Policy: 10;w=1` and its kin, read by
  `throttling.core.rate_limit_headers`) is believed without a probe (`on_published`): for
  `PUBLISHED_TTL_SEC` after the call that carried it, the ceiling in force is the published rate
  less `published_headroom`, never above the configured ceiling. A halved limit is met by the next
  answer, not by a 429, and a restored one is used at once instead of climbed to. Only news is
  written: a rate that moved by more than `PUBLISHED_TOLERANCE`, or the same one once it is half its
  TTL old, from a call admitted no earlier than the one that carried the stored rate (answers can
  overtake each other; an older call's headers are older news).

The burst follows the rate (`scaled burst = ceil(burst x rate / ceiling)`, at least 1): a bucket
cut to half its rate must not then release its full burst at once when the block ends.

State (`AdaptiveState`): `rate_base_per_sec` and `rate_base_at` (the rate a cut, or the first use,
set and from when it counts), `rate_peak_per_sec` (the rate the last cut came from), `blocked_until`,
`published_per_sec` and `published_at` (the downstream's own word and the admission of the call that
carried it), and `signals`, a count that only grows, so a writer can make its write conditional on having seen
every signal (`throttling.adapters.dynamodb_rate_limiter`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from throttling.core.clock import Clock
from throttling.core.rate_limiter import TIME_GRID_SEC, RateDecision, RatePolicy, decide, on_grid
from throttling.core.validation import is_number

__all__ = [
    "NEAR_PEAK_HIGH",
    "NEAR_PEAK_LOW",
    "NEAR_PEAK_SLOPE",
    "PUBLISHED_TOLERANCE",
    "PUBLISHED_TTL_SEC",
    "AdaptiveRatePolicy",
    "AdaptiveState",
    "InMemoryAdaptiveRateLimiter",
    "SignalOutcome",
    "current_rate",
    "decide_adaptive",
    "effective_policy",
    "ceiling_in_force",
    "is_throttling_signal",
    "on_published",
    "on_signal",
    "recovered_at",
]

# The slow band around the rate that drew the last signal, and the slope inside it (per second, as a
# share of that rate): from 90 % to 102 % of it in 24 s, so the limit (most likely just below the
# signal's rate) is met about 15 s after a cut, not 2 s. Constants, not tunables: they shape the
# probe, while the tunables set how hard and how fast the bucket reacts.
NEAR_PEAK_LOW = 0.9
NEAR_PEAK_HIGH = 1.02
NEAR_PEAK_SLOPE = 0.005
# How long a published limit is believed after the call that carried it: long enough that a
# downstream publishing the same rate costs one write every few minutes (it is refreshed at half
# of it), short enough that one which stops publishing is not held to a stale word for long.
PUBLISHED_TTL_SEC = 300.0
# A published rate within 1 % of the stored one is no news (no write): headers that round, or a
# window that is measured, must not turn every answer into a write.
PUBLISHED_TOLERANCE = 0.01


@dataclass(frozen=True)
class AdaptiveRatePolicy:
    """How the bucket's rate reacts to signals; every field is a share of the ceiling or a factor.

    :param decrease_factor: the rate is multiplied by this on a signal that counts; default 0.7
        (a downstream that halved its capacity is met in two cuts, with less overshoot than 0.5).
    :param increase_fraction_per_sec: the rate climbs by this share of the ceiling per second
        without a signal; default 0.02 (from a cut to 0.7 back to the ceiling in 15 s).
    :param floor_fraction: the rate never goes below this share of the ceiling; default 0.1.
    :param seed_fraction: where an unused bucket starts, as a share of the ceiling; default 1.0
        (a known contract: start at it); below 1 for a downstream whose limit is unknown.
    :param max_block_sec: the longest Retry-After honoured as a block; default 300 (a longer
        one is a fault the breaker handles, and must not silence the bucket for longer: a 429's
        block is capped at it, and a 503 asking for longer is no signal at all).
    :param published_headroom: the share of a published rate left unused, as the plan leaves of a
        contract; default 0.01 (the stage's default headroom).
    """

    decrease_factor: float = 0.7
    increase_fraction_per_sec: float = 0.02
    floor_fraction: float = 0.1
    seed_fraction: float = 1.0
    max_block_sec: float = 300.0
    published_headroom: float = 0.01

    def __post_init__(self) -> None:
        _check_share("decrease_factor", self.decrease_factor, low_open=True, high_open=True)
        _check_share("increase_fraction_per_sec", self.increase_fraction_per_sec, low_open=True)
        _check_share("floor_fraction", self.floor_fraction, low_open=True)
        _check_share("seed_fraction", self.seed_fraction, low_open=True)
        if self.seed_fraction < self.floor_fraction:
            raise ValueError(f"seed_fraction must be >= floor_fraction, got {self.seed_fraction} < "
                             f"{self.floor_fraction}; raise the seed or lower the floor")
        _check_share("published_headroom", self.published_headroom, high_open=True)
        if not is_number(self.max_block_sec) or not 0 <= self.max_block_sec < math.inf:
            raise ValueError(f"max_block_sec must be a finite number >= 0, got {self.max_block_sec!r}")


@dataclass(frozen=True)
class AdaptiveState:
    """What a bucket stores besides its TAT; the default is a bucket never used.

    rate_base_per_sec, rate_base_at: the rate the last cut (or the first use) set, and the instant
        it took effect; None before the first use. The climb counts from `rate_base_at`.
    blocked_until: no admission before this instant (0.0: never blocked).
    signals: how many signals were written; only grows.
    rate_peak_per_sec: the rate the last cut came from; None before the first cut.
    published_per_sec, published_at: the rate the downstream last published, and when the call that
        carried it was admitted; None when it never published one.
    """

    rate_base_per_sec: float | None = None
    rate_base_at: float | None = None
    blocked_until: float = 0.0
    signals: int = 0
    rate_peak_per_sec: float | None = None
    published_per_sec: float | None = None
    published_at: float | None = None

    def started(self, now: float, ceiling_per_sec: float, adaptive: AdaptiveRatePolicy) -> AdaptiveState:
        """This state with its start filled in (the seed from `now`) if it had none."""
        if self.rate_base_per_sec is not None and self.rate_base_at is not None:
            return self
        return replace(self, rate_base_per_sec=adaptive.seed_fraction * ceiling_per_sec, rate_base_at=on_grid(now, up=True))


@dataclass(frozen=True)
class SignalOutcome:
    """What a signal does: `state` to store (None: nothing to write), and whether the rate was cut."""

    state: AdaptiveState | None
    cut: bool
    rate_before_per_sec: float
    rate_after_per_sec: float


def is_throttling_signal(status: int, retry_after_sec: float | None, adaptive: AdaptiveRatePolicy) -> bool:
    """Whether a downstream's answer asks the fleet to slow down: a 429, with or without Retry-After, or a 503
    with a Retry-After of at most `max_block_sec` (shedding load). A 503 without one, or with a longer one
    (an outage: "down until"), is a failure for the breaker; cutting the rate would not bring it back sooner."""
    if status == 429:
        return True
    return status == 503 and retry_after_sec is not None and 0 <= retry_after_sec <= adaptive.max_block_sec


def current_rate(state: AdaptiveState, now: float, ceiling_per_sec: float, adaptive: AdaptiveRatePolicy) -> float:
    """The bucket's rate at `now`: the base plus the climb since it, within [floor, ceiling].

    A state never started is at the seed. A published limit in force caps it (`ceiling_in_force`),
    floor included: the downstream's own word outranks our floor.
    """
    top = ceiling_in_force(state, now, ceiling_per_sec, adaptive)
    floor = min(top, adaptive.floor_fraction * ceiling_per_sec)
    if state.rate_base_per_sec is None or state.rate_base_at is None:
        return max(floor, min(top, adaptive.seed_fraction * ceiling_per_sec))
    return max(floor, min(top, _climbed(state, max(0.0, now - state.rate_base_at), ceiling_per_sec, adaptive)))


def ceiling_in_force(state: AdaptiveState, now: float, ceiling_per_sec: float, adaptive: AdaptiveRatePolicy) -> float:
    """The configured ceiling, or the downstream's published rate less its headroom while that is
    believed (`PUBLISHED_TTL_SEC` from the call that carried it) and lower."""
    if state.published_per_sec is None or state.published_at is None or now >= state.published_at + PUBLISHED_TTL_SEC:
        return ceiling_per_sec
    return min(ceiling_per_sec, state.published_per_sec * (1 - adaptive.published_headroom))


def recovered_at(state: AdaptiveState, ceiling_per_sec: float, adaptive: AdaptiveRatePolicy) -> float:
    """When the climb reaches the ceiling (the state's start if it is there already, or never started)."""
    if state.rate_base_per_sec is None or state.rate_base_at is None:
        return state.rate_base_at or 0.0
    fast = adaptive.increase_fraction_per_sec * ceiling_per_sec
    rate, elapsed = state.rate_base_per_sec, 0.0
    for top, slope in _pieces(state, fast):
        if rate >= ceiling_per_sec:
            break
        reach = min(top, ceiling_per_sec)
        if rate < reach:
            elapsed += (reach - rate) / slope
            rate = reach
    return state.rate_base_at + elapsed


def _pieces(state: AdaptiveState, fast: float) -> list[tuple[float, float]]:
    """The climb's linear pieces from the base: (up to which rate, at what slope per second)."""
    if state.rate_peak_per_sec is None:
        return [(math.inf, fast)]
    peak = state.rate_peak_per_sec
    return [(NEAR_PEAK_LOW * peak, fast), (NEAR_PEAK_HIGH * peak, min(fast, NEAR_PEAK_SLOPE * peak)), (math.inf, fast)]


def _climbed(state: AdaptiveState, elapsed: float, ceiling_per_sec: float, adaptive: AdaptiveRatePolicy) -> float:
    assert state.rate_base_per_sec is not None
    rate = state.rate_base_per_sec
    for top, slope in _pieces(state, adaptive.increase_fraction_per_sec * ceiling_per_sec):
        if rate >= top:
            continue
        needed = (top - rate) / slope
        if elapsed <= needed:
            return rate + slope * elapsed
        elapsed -= needed
        rate = top
    return rate


def effective_policy(state: AdaptiveState, now: float, policy: RatePolicy, adaptive: AdaptiveRatePolicy,
                     cost: int = 1) -> RatePolicy:
    """The GCRA policy the bucket enforces at `now`: the current rate, and the burst scaled with it
    (never below `cost`, so a request the full policy admits is never impossible)."""
    rate = current_rate(state, now, policy.rate_per_sec, adaptive)
    burst = max(cost, 1, math.ceil(policy.burst * rate / policy.rate_per_sec - 1e-9))
    return RatePolicy(rate_per_sec=rate, burst=min(policy.burst, burst))


def decide_adaptive(state_tat: float | None, state: AdaptiveState, now: float, policy: RatePolicy,
                    adaptive: AdaptiveRatePolicy, cost: int = 1) -> RateDecision:
    """GCRA (`rate_limiter.decide`) under `effective_policy`, and nothing before `blocked_until`.

    A refusal during a block waits exactly until it ends (then the GCRA decides again).
    """
    now_on_grid = on_grid(now)
    if now_on_grid < state.blocked_until:
        based_on = now_on_grid if state_tat is None else max(on_grid(state_tat, up=True), now_on_grid)
        wait = state.blocked_until - now
        while now + wait < state.blocked_until:
            wait = math.nextafter(wait, math.inf)
        return RateDecision(allowed=False, retry_after_sec=wait, remaining=0,
                            reset_after_sec=max(0.0, based_on - now), new_tat=state_tat, based_on_tat=based_on,
                            decided_at=now)
    return decide(state_tat, now, effective_policy(state, now, policy, adaptive, cost), cost)


def on_signal(state: AdaptiveState, now: float, admitted_at: float, retry_after_sec: float | None,
              policy: RatePolicy, adaptive: AdaptiveRatePolicy) -> SignalOutcome:
    """A downstream answered a call admitted at `admitted_at` with a throttling signal, seen at `now`.

    Counts (cuts) when the call was admitted at or after the last cut took effect; the cut takes
    effect when the block ends (no call is admitted before), so every call answering the old rate
    is one admitted before it. Either way a Retry-After (capped at `max_block_sec`) extends the
    block. `state` is None when the signal changes nothing (a repeat within the block).
    """
    ceiling = policy.rate_per_sec
    started = state.started(admitted_at, ceiling, adaptive)
    before = current_rate(started, now, ceiling, adaptive)
    block_until = state.blocked_until
    if retry_after_sec is not None and is_number(retry_after_sec) and retry_after_sec > 0:
        block_until = max(block_until, on_grid(now + min(retry_after_sec, adaptive.max_block_sec), up=True))
    assert started.rate_base_at is not None
    counts = on_grid(admitted_at) >= started.rate_base_at
    if not counts:
        if block_until == state.blocked_until and started == state:
            return SignalOutcome(None, False, before, before)
        return SignalOutcome(replace(started, blocked_until=block_until, signals=state.signals + 1), False, before, before)
    floor = adaptive.floor_fraction * ceiling
    after = max(floor, min(ceiling, before * adaptive.decrease_factor))
    # Strictly after `now`: a call admitted at the very instant the signal came was sent at the old rate.
    effective_at = max(on_grid(now) + TIME_GRID_SEC, block_until)
    new_state = replace(state, rate_base_per_sec=after, rate_base_at=effective_at, blocked_until=block_until,
                        signals=state.signals + 1, rate_peak_per_sec=before)
    return SignalOutcome(new_state, True, before, after)


def on_published(state: AdaptiveState, now: float, admitted_at: float, published_per_sec: float | None) -> AdaptiveState | None:
    """A downstream's answer to a call admitted at `admitted_at` published its rate limit (requests per second).

    Returns the state to store, or None when it is no news: no usable rate (None, not a number, not
    above 0), a call admitted `PUBLISHED_TTL_SEC` ago or more, an answer to a call admitted before the
    one whose rate is stored, or the stored rate again (within `PUBLISHED_TOLERANCE`) while it is
    less than half its TTL old.
    """
    if published_per_sec is None or not is_number(published_per_sec) or not 0 < published_per_sec < math.inf:
        return None
    admitted = on_grid(admitted_at)
    if now >= admitted + PUBLISHED_TTL_SEC:
        return None
    stored, stored_at = state.published_per_sec, state.published_at
    if stored is not None and stored_at is not None:
        if admitted < stored_at:
            return None
        same = abs(published_per_sec - stored) <= PUBLISHED_TOLERANCE * stored
        if same and now < stored_at + PUBLISHED_TTL_SEC / 2:
            return None
    return replace(state, published_per_sec=float(published_per_sec), published_at=admitted)


class InMemoryAdaptiveRateLimiter:
    """One adaptive bucket held in process memory: for tests, the lab and single-instance use."""

    def __init__(self, policy: RatePolicy, adaptive: AdaptiveRatePolicy, clock: Clock) -> None:
        self.policy = policy
        self.adaptive = adaptive
        self._clock = clock
        self.tat: float | None = None
        self.state = AdaptiveState()
        self.cuts: list[tuple[float, float, float]] = []  # (at, rate before, rate after)
        self.publications = 0  # the published rates written (each one conditional write when deployed)

    @property
    def rate_per_sec(self) -> float:
        return current_rate(self.state, self._clock.now(), self.policy.rate_per_sec, self.adaptive)

    def try_acquire(self, cost: int = 1) -> RateDecision:
        now = self._clock.now()
        decision = decide_adaptive(self.tat, self.state, now, self.policy, self.adaptive, cost)
        if decision.allowed:
            self.tat = decision.new_tat
            self.state = self.state.started(now, self.policy.rate_per_sec, self.adaptive)
        return decision

    def report_signal(self, admitted_at: float, retry_after_sec: float | None) -> SignalOutcome:
        now = self._clock.now()
        outcome = on_signal(self.state, now, admitted_at, retry_after_sec, self.policy, self.adaptive)
        if outcome.state is not None:
            self.state = outcome.state
        if outcome.cut:
            self.cuts.append((now, outcome.rate_before_per_sec, outcome.rate_after_per_sec))
        return outcome

    def report_published(self, admitted_at: float, published_per_sec: float | None) -> bool:
        """Record a published rate if it is news (`on_published`); whether it was."""
        new_state = on_published(self.state, self._clock.now(), admitted_at, published_per_sec)
        if new_state is None:
            return False
        self.state = new_state
        self.publications += 1
        return True


def _check_share(name: str, value: float, *, low_open: bool = False, high_open: bool = False) -> None:
    if not is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r}")
    too_low = value <= 0 if low_open else value < 0
    too_high = value >= 1 if high_open else value > 1
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {value}")
