"""Unit tests of the limiter's inner loop: cuts on a throttling signal, blocks, the climb back, discovery."""

from __future__ import annotations

import pytest

from throttling.core.adaptive_rate import (
    PUBLISHED_TTL_SEC,
    AdaptiveRatePolicy,
    AdaptiveState,
    InMemoryAdaptiveRateLimiter,
    ceiling_in_force,
    current_rate,
    effective_policy,
    is_throttling_signal,
    on_published,
    on_signal,
    recovered_at,
)
from throttling.core.clock import FakeClock
from throttling.core.rate_limiter import RatePolicy

CONTRACT = RatePolicy(rate_per_sec=10.0, burst=10)
LOOP = AdaptiveRatePolicy(decrease_factor=0.5, increase_fraction_per_sec=0.01, floor_fraction=0.1)
T0 = 1_000.0


def drain(limiter: InMemoryAdaptiveRateLimiter) -> list[float]:
    """Admit until refused; the admission instants."""
    admitted = []
    while (decision := limiter.try_acquire()).allowed:
        admitted.append(decision.decided_at)
    return admitted


def test_a_limiter_never_signalled_enforces_the_policy_in_force_exactly():
    # GIVEN a known contract (seed 1.0) and no signal
    limiter = InMemoryAdaptiveRateLimiter(CONTRACT, LOOP, FakeClock(T0))
    # WHEN it is drained
    # THEN the full burst passes at the contract's rate, as the plain GCRA would
    assert len(drain(limiter)) == 10
    assert limiter.rate_per_sec == 10.0


def test_a_429_blocks_every_caller_for_its_retry_after_and_cuts_the_rate_once():
    # GIVEN a bucket in use, and three calls admitted at T0
    clock = FakeClock(T0)
    limiter = InMemoryAdaptiveRateLimiter(CONTRACT, LOOP, clock)
    admitted = [limiter.try_acquire().decided_at for _ in range(3)]

    # WHEN all three come back 429 with Retry-After: 2, 50 ms later
    clock.advance(0.05)
    outcomes = [limiter.report_signal(at, 2.0) for at in admitted]

    # THEN the first cut the rate by half; the other two answered the old rate and cut nothing
    assert [o.cut for o in outcomes] == [True, False, False]
    assert outcomes[0].rate_before_per_sec == 10.0 and outcomes[0].rate_after_per_sec == 5.0
    assert len(limiter.cuts) == 1
    # AND nobody is admitted before the Retry-After ends, and the refusal says exactly until when
    refused = limiter.try_acquire()
    assert not refused.allowed and refused.retry_after_sec == pytest.approx(2.0, abs=1e-5)
    block_ends = clock.now() + refused.retry_after_sec
    clock.set(block_ends - 0.001)
    assert not limiter.try_acquire().allowed
    clock.set(block_ends)
    assert limiter.try_acquire().allowed
    # AND the burst shrank with the rate: half the burst, not a full one, when the block ends
    assert len(drain(limiter)) == 5 - 1


def test_a_call_admitted_after_the_cut_that_meets_a_429_cuts_again():
    # GIVEN a cut at T0 with a 1 s block
    clock = FakeClock(T0)
    limiter = InMemoryAdaptiveRateLimiter(CONTRACT, LOOP, clock)
    first = limiter.try_acquire().decided_at
    limiter.report_signal(first, 1.0)
    # WHEN a call admitted after the block still meets a 429
    clock.advance(1.5)
    later = limiter.try_acquire()
    assert later.allowed
    outcome = limiter.report_signal(later.decided_at, None)
    # THEN it counts: 5 req/s (climbed for 0.5 s to 5.05) is halved again
    assert outcome.cut and outcome.rate_after_per_sec == pytest.approx(5.05 / 2)


def test_the_rate_climbs_back_additively_to_the_ceiling_and_never_above():
    # GIVEN a bucket cut to 5 req/s at T0 (no block)
    state = on_signal(AdaptiveState(), T0, T0, None, CONTRACT, LOOP).state
    assert state is not None
    # THEN 0.1 req/s more per second (1 % of 10) up to 90 % of the rate that drew the signal,
    # then half a percent of it per second (0.05 req/s) across the band where the limit most likely is,
    # capped at 10
    assert current_rate(state, T0, 10.0, LOOP) == 5.0
    assert current_rate(state, T0 + 10, 10.0, LOOP) == pytest.approx(6.0)
    assert current_rate(state, T0 + 40, 10.0, LOOP) == pytest.approx(9.0)
    assert current_rate(state, T0 + 50, 10.0, LOOP) == pytest.approx(9.5)
    assert current_rate(state, T0 + 61, 10.0, LOOP) == 10.0
    assert current_rate(state, T0 + 5000, 10.0, LOOP) == 10.0
    assert recovered_at(state, 10.0, LOOP) == pytest.approx(T0 + 60)
    # AND the controller lowering the rate in force lowers the ceiling at once
    assert current_rate(state, T0 + 5000, 4.0, LOOP) == 4.0


def test_past_the_band_around_the_last_signal_the_climb_is_fast_again():
    # GIVEN a bucket cut from 10 to 5 req/s under a ceiling of 20 (the downstream's capacity came back)
    state = AdaptiveState(rate_base_per_sec=5.0, rate_base_at=T0, signals=1, rate_peak_per_sec=10.0)
    # THEN 0.2 req/s per second to 9, 0.05 to 10.2 (24 s), then 0.2 again
    assert current_rate(state, T0 + 20, 20.0, LOOP) == pytest.approx(9.0)
    assert current_rate(state, T0 + 44, 20.0, LOOP) == pytest.approx(10.2)
    assert current_rate(state, T0 + 54, 20.0, LOOP) == pytest.approx(12.2)


def test_cuts_stop_at_the_floor():
    # GIVEN a bucket cut again and again by calls admitted after each cut
    state = AdaptiveState()
    for step in range(20):
        now = T0 + step
        outcome = on_signal(state, now, now, None, CONTRACT, LOOP)
        assert outcome.state is not None
        state = outcome.state
    # THEN it rests at the floor, a tenth of the ceiling
    assert state.rate_base_per_sec == 1.0
    assert current_rate(state, state.rate_base_at, 10.0, LOOP) == 1.0


def test_an_unknown_limit_is_discovered_from_the_seed_up_to_the_ceiling():
    # GIVEN a downstream whose limit is unknown: a 100 req/s ceiling, seeded at 5 %
    discovery = AdaptiveRatePolicy(decrease_factor=0.7, increase_fraction_per_sec=0.01, floor_fraction=0.01,
                                   seed_fraction=0.05)
    clock = FakeClock(T0)
    limiter = InMemoryAdaptiveRateLimiter(RatePolicy(100.0, 10), discovery, clock)
    # WHEN it is first used, and 20 s pass without a signal
    assert limiter.try_acquire().allowed
    assert limiter.rate_per_sec == 5.0
    clock.advance(20)
    # THEN it climbed a percent of the ceiling per second: 5 + 20
    assert limiter.rate_per_sec == pytest.approx(25.0)


def test_the_burst_follows_the_rate_but_never_below_the_cost():
    state = AdaptiveState(rate_base_per_sec=2.5, rate_base_at=T0)
    assert effective_policy(state, T0, CONTRACT, LOOP) == RatePolicy(2.5, 3)
    assert effective_policy(state, T0, CONTRACT, LOOP, cost=4).burst == 4


def test_a_retry_after_longer_than_the_cap_blocks_only_for_the_cap():
    outcome = on_signal(AdaptiveState(), T0, T0, 86_400.0, CONTRACT, LOOP)
    assert outcome.state is not None and outcome.state.blocked_until == T0 + 300


def test_a_repeat_inside_the_block_that_asks_for_no_longer_writes_nothing():
    first = on_signal(AdaptiveState(), T0, T0, 5.0, CONTRACT, LOOP).state
    assert first is not None
    repeat = on_signal(first, T0 + 1, T0 - 0.1, 2.0, CONTRACT, LOOP)
    assert repeat.state is None and not repeat.cut
    longer = on_signal(first, T0 + 1, T0 - 0.1, 10.0, CONTRACT, LOOP)
    assert not longer.cut and longer.state is not None and longer.state.blocked_until == T0 + 11
    assert longer.state.rate_base_per_sec == first.rate_base_per_sec


@pytest.mark.parametrize(("field", "value", "message"), [
    ("decrease_factor", 1.0, r"decrease_factor must be in \(0, 1\), got 1.0"),
    ("decrease_factor", 0, r"decrease_factor must be in \(0, 1\)"),
    ("increase_fraction_per_sec", 0.0, r"increase_fraction_per_sec must be in \(0, 1\]"),
    ("floor_fraction", 1.5, r"floor_fraction must be in \(0, 1\], got 1.5"),
    ("max_block_sec", float("inf"), "max_block_sec must be a finite number >= 0"),
])
def test_a_bad_loop_setting_is_refused_with_the_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveRatePolicy(**{field: value})


def test_a_seed_below_the_floor_is_refused():
    with pytest.raises(ValueError, match="seed_fraction must be >= floor_fraction, got 0.05 < 0.1"):
        AdaptiveRatePolicy(seed_fraction=0.05, floor_fraction=0.1)


@pytest.mark.parametrize(("status", "retry_after_sec", "signal"), [
    (429, None, True), (429, 2.0, True), (429, 3600.0, True),  # too fast, whatever it asks (the block is capped)
    (503, 2.0, True), (503, 300.0, True),  # shedding load for a while
    (503, 300.5, False), (503, None, False),  # down until later, or down: the breaker's
    (500, 1.0, False), (400, None, False),
])
def test_what_counts_as_a_throttling_signal(status, retry_after_sec, signal):
    assert is_throttling_signal(status, retry_after_sec, AdaptiveRatePolicy()) is signal


def test_a_published_limit_is_believed_at_once_both_ways_less_its_headroom():
    # GIVEN a bucket at its contract of 10 req/s, burst 10
    clock = FakeClock(T0)
    limiter = InMemoryAdaptiveRateLimiter(CONTRACT, LOOP, clock)
    admitted_at = limiter.try_acquire().decided_at
    # WHEN an answer says the downstream now allows 5 req/s
    assert limiter.report_published(admitted_at, 5.0)
    # THEN the bucket admits 5 less 1 % at once, with its burst scaled alike: no 429 was needed
    assert limiter.rate_per_sec == pytest.approx(4.95)
    assert effective_policy(limiter.state, clock.now(), CONTRACT, LOOP) == RatePolicy(4.95, 5)
    # WHEN a later call's answer says 10 again
    clock.advance(1.0)
    later = limiter.try_acquire().decided_at
    assert limiter.report_published(later, 10.0)
    # THEN it is back at once, with no climb, at 10 less its headroom; never above the configured
    # ceiling (here the contract itself), whatever is published
    assert limiter.rate_per_sec == pytest.approx(9.9)
    clock.advance(1.0)
    assert limiter.report_published(limiter.try_acquire().decided_at, 1_000.0)
    assert limiter.rate_per_sec == 10.0


def test_only_news_is_written_and_an_older_calls_answer_is_older_news():
    clock = FakeClock(T0)
    state = AdaptiveState()
    first = on_published(state, T0, T0, 5.0)
    assert first is not None and first.published_per_sec == 5.0
    # The same rate, or within 1 %, while the stored one is under half its TTL old: no write
    assert on_published(first, T0 + 10, T0 + 9, 5.04) is None
    # The same rate once it is half its TTL old: one refreshing write
    refreshed = on_published(first, T0 + PUBLISHED_TTL_SEC / 2 + 1, T0 + PUBLISHED_TTL_SEC / 2, 5.0)
    assert refreshed is not None and refreshed.published_at == T0 + PUBLISHED_TTL_SEC / 2
    # An answer to a call admitted before the stored one's, even if it arrives later: ignored
    assert on_published(first, T0 + 5, T0 - 1, 10.0) is None
    # Garbage, or a call admitted a TTL ago: ignored
    for nonsense in (None, 0.0, -3.0, float("nan"), float("inf"), "10"):
        assert on_published(first, T0 + 1, T0 + 1, nonsense) is None  # type: ignore[arg-type]
    assert on_published(state, T0 + PUBLISHED_TTL_SEC, T0, 5.0) is None
    del clock


def test_a_published_limit_expires_and_a_429_under_it_cuts_from_the_published_rate():
    # GIVEN a bucket told 5 req/s by the answer to a call admitted at T0
    clock = FakeClock(T0)
    limiter = InMemoryAdaptiveRateLimiter(CONTRACT, LOOP, clock)
    limiter.report_published(limiter.try_acquire().decided_at, 5.0)
    # WHEN a call admitted under it draws a 429
    clock.advance(2.0)
    admitted_at = limiter.try_acquire().decided_at
    outcome = limiter.report_signal(admitted_at, None)
    # THEN the cut starts from the published rate, not from the contract
    assert outcome.cut and outcome.rate_before_per_sec == pytest.approx(4.95)
    assert outcome.rate_after_per_sec == pytest.approx(4.95 * LOOP.decrease_factor)
    # AND once nobody has repeated it for its TTL, the published rate no longer caps the climb
    clock.set(T0 + PUBLISHED_TTL_SEC + 600)
    assert ceiling_in_force(limiter.state, clock.now(), CONTRACT.rate_per_sec, LOOP) == CONTRACT.rate_per_sec
    assert limiter.rate_per_sec == 10.0
