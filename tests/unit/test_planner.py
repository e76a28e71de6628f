"""The capacity planner's arithmetic (Little's law), and that it agrees with the seeds the stacks write."""

from __future__ import annotations

import math

import pytest

from throttlectl.planner import (
    MAX_RETRY_ATTEMPTS,
    SQS_MIN_MAXIMUM_CONCURRENCY,
    in_flight,
    offered_rps,
    plan_capacity,
    retry_plan,
)


def test_five_concurrent_calls_of_200_ms_offer_25_rps_too_many_for_a_10_rps_limit():
    # GIVEN the README's example: a CRM limited to 10 req/s answering in 200 ms, and a Map of 5
    # WHEN it is planned with that concurrency checked
    plan = plan_capacity(10, 200, burst=10, check_concurrency=5)
    # THEN 5 in flight offer 25 req/s, two and a half times the limit, and the plan says so
    assert offered_rps(5, 200) == 25
    assert plan.check is not None
    assert (plan.check.offered_rps, plan.check.exceeds_limit, plan.check.times_the_limit) == (25, True, 2.5)
    assert "check: 5 concurrent calls / 0.2 s = 25 req/s: too many for a 10 req/s limit (2.5x it)" in plan.steps
    # AND the Map concurrency that fits is 2 calls in flight, which offer exactly the limit
    assert (plan.map_concurrency, plan.map_offered_rps) == (2, 10)
    assert any(step.startswith("Map concurrency = max(1, floor(10 req/s x 0.2 s)) = max(1, floor(2)) = 2")
               for step in plan.steps)


def test_littles_law_both_ways():
    # GIVEN / WHEN / THEN L = lambda x W, and lambda = L / W
    assert in_flight(10, 200) == pytest.approx(2)
    assert in_flight(5, 800) == pytest.approx(4)
    assert offered_rps(2, 200) == pytest.approx(10)
    assert offered_rps(1, 300) == pytest.approx(10 / 3)


def test_limiter_keeps_the_headroom_below_the_contract():
    # GIVEN a 10 req/s contract with a burst of 10 and the default 10 % headroom
    plan = plan_capacity(10, 200, burst=10)
    # THEN the limiter admits 9 req/s with a burst of 9, which is the SSM document the plan proposes
    assert (plan.limiter_rate_per_sec, plan.limiter_burst) == (9.0, 9)
    assert plan.tunables_document() == {"rate_per_sec": 9.0, "burst": 9, "max_concurrency": 2, "mode": "auto"}
    assert "limiter rate_per_sec = 10 x (1 - 0.1) = 9 req/s; burst = max(1, floor(10 x (1 - 0.1))) = 9" in plan.steps


def test_a_slow_one_request_per_second_downstream_warns_that_only_the_limiter_holds_it():
    # GIVEN the mainframe: 1 req/s, 300 ms per call, 20 % headroom
    plan = plan_capacity(1, 300, burst=1, headroom=0.2)
    # THEN one call in flight is the floor, it would offer 3.3 req/s, and the plan warns about it
    assert plan.map_concurrency == 1
    assert plan.map_offered_rps == pytest.approx(10 / 3, rel=1e-5)
    assert any("only the shared limiter" in warning for warning in plan.warnings)
    # AND the queue consumer cannot go below Lambda's SQS minimum
    assert plan.consumer_max_concurrency == SQS_MIN_MAXIMUM_CONCURRENCY
    # AND retries start one emission interval (1 / 0.8 s, rounded up) out
    assert plan.retry.interval_sec == 2


def test_consumer_concurrency_follows_the_map_above_the_sqs_minimum():
    plan = plan_capacity(5, 800)
    assert (plan.map_concurrency, plan.consumer_max_concurrency) == (4, 4)


def test_default_burst_is_one_second_worth():
    assert plan_capacity(10, 200).burst_limit == 10
    assert plan_capacity(0.5, 200).burst_limit == 1


def test_retries_ride_out_the_window_on_average_with_full_jitter():
    # GIVEN a limiter at 9 req/s and a 60 s blip to ride out with waits capped at 30 s
    plan, steps = retry_plan(9, ride_out_sec=60, max_delay_sec=30)
    # THEN delays 1, 2, 4, 8, 16, 30, 30, 30 (121 s at worst) average 60.5 s: 8 attempts
    assert (plan.interval_sec, plan.max_attempts, plan.max_delay_sec) == (1, 8, 30)
    assert (plan.worst_total_wait_sec, plan.mean_total_wait_sec) == (121, 60.5)
    assert plan.as_asl() == {"IntervalSeconds": 1, "BackoffRate": 2.0, "MaxDelaySeconds": 30, "MaxAttempts": 8,
                             "JitterStrategy": "FULL"}
    assert "1 + 2 + 4 + 8 + 16 + 30 + 30 + 30 = 121 s at worst" in steps[1]
    # AND one attempt fewer would not ride it out
    assert (1 + 2 + 4 + 8 + 16 + 30 + 30) / 2 < 60


def test_retries_are_capped_and_the_shortfall_is_a_warning():
    plan = plan_capacity(10, 200, ride_out_sec=3600, max_retry_delay_sec=10)
    assert plan.retry.max_attempts == MAX_RETRY_ATTEMPTS
    assert any("less than 3600 s" in warning for warning in plan.warnings)


def test_the_plan_reproduces_what_the_stacks_seed_for_every_configured_downstream(dev_config):
    # GIVEN the dev stage's downstreams (the stacks seed their SSM documents from DownstreamConfig)
    for downstream in dev_config.downstreams:
        # WHEN each is planned from its contract and latency
        plan = plan_capacity(downstream.rate_limit_per_sec, downstream.expected_latency_ms,
                             burst=downstream.burst, headroom=downstream.headroom)
        # THEN the planner and the config agree on every seeded number
        assert plan.map_concurrency == downstream.default_max_concurrency, downstream.name
        assert plan.limiter_rate_per_sec == downstream.planned_rate_per_sec, downstream.name
        assert plan.limiter_burst == downstream.planned_burst, downstream.name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit_rps": 0, "latency_ms": 200}, "limit_rps must be a finite number > 0, got 0"),
        ({"limit_rps": 10, "latency_ms": -1}, "latency_ms must be a finite number > 0, got -1"),
        ({"limit_rps": math.inf, "latency_ms": 200}, "limit_rps must be a finite number > 0, got inf"),
        ({"limit_rps": 10, "latency_ms": 200, "headroom": 1}, "headroom must be a fraction in [0, 1), got 1"),
        ({"limit_rps": 10, "latency_ms": 200, "burst": 0}, "burst must be a whole number >= 1, got 0"),
        ({"limit_rps": 10, "latency_ms": 200, "check_concurrency": 0}, "check_concurrency must be a whole number >= 1"),
        ({"limit_rps": 10, "latency_ms": 200, "max_retry_delay_sec": 0}, "max_delay_sec must be a whole number"),
    ],
)
def test_bad_inputs_are_refused_with_the_value(kwargs, message):
    with pytest.raises(ValueError) as raised:
        plan_capacity(**kwargs)
    assert message in str(raised.value)
