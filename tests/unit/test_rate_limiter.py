"""Unit tests of the GCRA rate limiter core and its sharding helpers."""

from __future__ import annotations

import pytest

from throttling.core.clock import FakeClock
from throttling.core.rate_limiter import (
    TIME_GRID_SEC,
    InMemoryRateLimiter,
    RatePolicy,
    decide,
    shard_count_for,
    split_policy,
    stale_token_after_sec,
)


def test_fresh_limiter_admits_a_full_burst_then_denies():
    # GIVEN a limiter of 1 request per second with a burst of 3
    limiter = InMemoryRateLimiter(RatePolicy(rate_per_sec=1.0, burst=3), FakeClock(100.0))

    # WHEN four requests arrive at the same instant
    decisions = [limiter.try_acquire() for _ in range(4)]

    # THEN the first three pass, with remaining counting down, and the fourth is told to wait one interval
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    assert decisions[3].retry_after_sec == pytest.approx(1.0)
    assert decisions[3].remaining == 0


def test_denied_request_is_admitted_exactly_at_retry_after():
    # GIVEN an exhausted limiter (rate 2/s, burst 1)
    clock = FakeClock(0.0)
    limiter = InMemoryRateLimiter(RatePolicy(rate_per_sec=2.0, burst=1), clock)
    limiter.try_acquire()
    denied = limiter.try_acquire()

    # WHEN the caller retries a hair early, then exactly after retry_after_sec
    clock.advance(denied.retry_after_sec - 1e-6)
    too_early = limiter.try_acquire()
    clock.set(denied.retry_after_sec)
    on_time = limiter.try_acquire()

    # THEN the early retry is refused and the on-time one passes
    assert denied.retry_after_sec == pytest.approx(0.5)
    assert not too_early.allowed
    assert on_time.allowed


def test_cost_takes_several_units_at_once():
    # GIVEN a limiter with burst 10 at 5 units per second
    policy = RatePolicy(rate_per_sec=5.0, burst=10)

    # WHEN a request costing 7 arrives on a fresh limiter, then one costing 4
    first = decide(None, 0.0, policy, cost=7)
    second = decide(first.new_tat, 0.0, policy, cost=4)

    # THEN the first passes leaving 3, and the second waits for one more unit (0.2 s; each interval
    # rounded up to the time grid)
    assert first.allowed and first.remaining == 3
    assert first.new_tat == 7 * policy.emission_interval_sec == pytest.approx(1.4, abs=7 * TIME_GRID_SEC)
    assert not second.allowed
    assert second.retry_after_sec == policy.emission_interval_sec == pytest.approx(0.2, abs=TIME_GRID_SEC)
    assert second.new_tat == first.new_tat


def test_denied_decision_leaves_state_unchanged_and_reports_reset():
    # GIVEN a stored TAT two seconds ahead of now
    policy = RatePolicy(rate_per_sec=1.0, burst=2)

    # WHEN a request arrives
    decision = decide(12.0, 10.0, policy)

    # THEN it is denied, nothing needs writing, and the limiter is full again in two seconds
    assert not decision.allowed
    assert decision.new_tat == 12.0
    assert decision.reset_after_sec == pytest.approx(2.0)
    assert decision.retry_after_sec == pytest.approx(1.0)


def test_stale_tat_in_the_past_counts_as_an_idle_limiter():
    # GIVEN a TAT far in the past (the key was idle)
    policy = RatePolicy(rate_per_sec=10.0, burst=5)

    # WHEN a request arrives
    decision = decide(3.0, 1_000.0, policy)

    # THEN it is admitted from a full burst, and the write is conditioned on the TAT being <= now
    assert decision.allowed
    assert decision.remaining == 4
    assert decision.based_on_tat == 1_000.0
    assert decision.new_tat == 1_000.0 + policy.emission_interval_sec
    assert decision.reset_after_sec == policy.emission_interval_sec == pytest.approx(0.1, abs=TIME_GRID_SEC)


def test_cost_above_burst_is_an_error_that_says_so():
    # GIVEN a policy with burst 3
    policy = RatePolicy(rate_per_sec=1.0, burst=3)

    # WHEN a request costs 4
    with pytest.raises(ValueError, match="cost 4 exceeds burst 3"):
        decide(None, 0.0, policy, cost=4)

    # THEN (raised above) the caller learns it could never be admitted


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_per_sec": 0.0, "burst": 1}, "rate_per_sec must be a finite number > 0, got 0.0"),
        ({"rate_per_sec": float("inf"), "burst": 1}, "rate_per_sec must be a finite number > 0, got inf"),
        ({"rate_per_sec": 1.0, "burst": 0}, "burst must be >= 1, got 0"),
    ],
)
def test_policy_rejects_bad_values(kwargs, message):
    # GIVEN / WHEN a policy is built from a bad value
    with pytest.raises(ValueError, match=message):
        RatePolicy(**kwargs)
    # THEN the message shows the bad value


def test_shard_count_keeps_each_partition_at_half_its_write_capacity():
    # GIVEN / WHEN / THEN: 500 writes/s fit one shard at 50 % headroom, 501 need two, 5,000 need ten
    assert shard_count_for(500) == 1
    assert shard_count_for(501) == 2
    assert shard_count_for(5_000) == 10
    assert shard_count_for(5_000, headroom=1.0) == 5
    assert shard_count_for(0.1) == 1


def test_shard_count_rejects_headroom_outside_zero_to_one():
    # GIVEN / WHEN / THEN
    with pytest.raises(ValueError, match="headroom must be in \\(0, 1\\], got 1.5"):
        shard_count_for(100, headroom=1.5)


def test_split_policy_divides_rate_and_rounds_burst_up():
    # GIVEN a limit of 3,000/s with a burst of 10
    policy = RatePolicy(rate_per_sec=3_000.0, burst=10)

    # WHEN it is split over 4 shards, and over 20
    quarter = split_policy(policy, 4)
    twentieth = split_policy(policy, 20)

    # THEN each shard gets rate/shards and ceil(burst/shards), never below 1
    assert quarter == RatePolicy(rate_per_sec=750.0, burst=3)
    assert twentieth == RatePolicy(rate_per_sec=150.0, burst=1)


def test_split_policy_rejects_zero_shards():
    # GIVEN / WHEN / THEN
    with pytest.raises(ValueError, match="shards must be an int >= 1, got 0"):
        split_policy(RatePolicy(rate_per_sec=1.0), 0)


def test_fake_clock_refuses_to_advance_backwards():
    # GIVEN / WHEN / THEN
    with pytest.raises(ValueError, match="got -1; use set\\(\\)"):
        FakeClock().advance(-1)


@pytest.mark.parametrize(
    ("limiter", "downstream", "expected_sec"),
    [
        # 4 at 4.5/s under a model's 5 at 5/s: ((5 + 1 - 4) / 4.5 - 1 / 5) / 2
        (RatePolicy(4.5, 4), RatePolicy(5.0, 5), (2 / 4.5 - 0.2) / 2),
        # one burst token less buys more time than the rate headroom alone
        (RatePolicy(4.5, 2), RatePolicy(5.0, 5), (4 / 4.5 - 0.2) / 2),
        # a one-at-a-time mainframe: half the headroom between the intervals, 1/0.8 - 1/1
        (RatePolicy(0.8, 1), RatePolicy(1.0, 1), 0.125),
        # a limiter as loose as the downstream leaves nothing to keep: every token is spent
        (RatePolicy(5.0, 5), RatePolicy(5.0, 5), float("inf")),
        (RatePolicy(5.0, 6), RatePolicy(5.0, 5), float("inf")),
    ],
)
def test_a_token_is_stale_after_half_the_spread_the_downstream_absorbs(limiter, downstream, expected_sec):
    assert stale_token_after_sec(limiter, downstream) == pytest.approx(expected_sec)
