"""The planning arithmetic (Little's law), and that it agrees with the seeds the stacks write."""

from __future__ import annotations

import math

import pytest

from throttling.core.names import SQS_MIN_MAXIMUM_CONCURRENCY
from throttling.core.planning import (
    MAX_RETRY_ATTEMPTS,
    MIN_JITTER_MARGIN_SEC,
    headroom_for_margin,
    in_flight,
    jitter_margin_sec,
    limiter_settings,
    offered_rps,
    plan_capacity,
    retry_plan,
)
from throttling.core.rate_limiter import RatePolicy, stale_token_after_sec
from throttling.core.tunables import MAX_CONCURRENCY_BOUNDS, parse_tunables


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
    # GIVEN a 10 req/s contract with a burst of 10 and the default 1 % headroom
    plan = plan_capacity(10, 200, burst=10)
    # THEN the limiter admits 9.9 req/s with half the burst, which is the SSM document the plan proposes
    assert (plan.limiter_rate_per_sec, plan.limiter_burst) == (9.9, 5)
    assert plan.tunables_document() == {"rate_per_sec": 9.9, "burst": 5, "max_concurrency": 2, "mode": "auto"}
    assert any(step.startswith("limiter rate_per_sec = 10 x (1 - 0.01) = 9.9 req/s; "
                               "burst = max(1, min(floor(10 / 2), floor(10 x (1 - 0.01)))) = 5") for step in plan.steps)
    # AND calls may lag their decisions unevenly by half a second and never meet a 429
    assert plan.jitter_margin_sec == pytest.approx(6 / 9.9 - 0.1)
    assert "jitter margin = (10 + 1 - 5) / 9.9 req/s - 1 / 10 req/s = 0.506 s" in plan.steps[-4]
    assert plan.warnings == ()


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
        # THEN the plan and the config agree on every seeded number
        assert plan.map_concurrency == downstream.default_max_concurrency, downstream.name
        assert plan.limiter_rate_per_sec == downstream.planned_rate_per_sec, downstream.name
        assert plan.limiter_burst == downstream.planned_burst, downstream.name
        assert plan.jitter_margin_sec == pytest.approx(downstream.jitter_margin_sec), downstream.name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit_rps": 0, "latency_ms": 200},
         "limit_rps must be a number in [0.01, 10000] (req/s, the rates the Lambdas' tunables take), got 0"),
        ({"limit_rps": 10, "latency_ms": -1},
         "latency_ms must be a number in [1, 60000] (ms, the latencies a stage's config takes), got -1"),
        ({"limit_rps": math.inf, "latency_ms": 200}, "limit_rps must be a number in [0.01, 10000]"),
        # What once planned 10^15 calls in flight: a limit and a latency no stage or tunable could hold
        ({"limit_rps": 1e12, "latency_ms": 200}, "limit_rps must be a number in [0.01, 10000]"),
        ({"limit_rps": 10, "latency_ms": 1e6}, "latency_ms must be a number in [1, 60000]"),
        ({"limit_rps": 10, "latency_ms": 200, "headroom": 1},
         "headroom must be a number in [0, 0.5] (the share of the limit left unused; 0.01 leaves 1%), got 1"),
        ({"limit_rps": 10, "latency_ms": 200, "burst": 0},
         "burst must be a whole number in [1, 5000] (the bursts the Lambdas' tunables take), got 0"),
        ({"limit_rps": 10, "latency_ms": 200, "burst": 5001}, "burst must be a whole number in [1, 5000]"),
        ({"limit_rps": 10, "latency_ms": 200, "check_concurrency": 0}, "check_concurrency must be a whole number >= 1"),
        ({"limit_rps": 10, "latency_ms": 200, "max_retry_delay_sec": 0}, "max_delay_sec must be a whole number"),
    ],
)
def test_bad_inputs_are_refused_with_the_value(kwargs, message):
    with pytest.raises(ValueError) as raised:
        plan_capacity(**kwargs)
    assert message in str(raised.value)


def test_half_the_burst_buys_four_times_the_jitter_margin_of_ten_percent_rate_headroom():
    # GIVEN the CRM (10 req/s, burst 10): the old plan, 10 % off the rate and the burst (9 req/s, burst 9)
    old = jitter_margin_sec(10, 10, 9.0, 9)
    # WHEN 1 % comes off the rate and half off the burst instead
    rate, burst = limiter_settings(10, 10, 0.01)
    new = jitter_margin_sec(10, 10, rate, burst)
    # THEN the downstream absorbs 0.51 s of uneven lag instead of 0.12 s, at 99 % of its rate instead of 90 %
    assert (rate, burst) == (9.9, 5)
    assert (round(old, 3), round(new, 3)) == (0.122, 0.506)
    assert new > 4 * old


@pytest.mark.parametrize(
    ("limit", "burst", "headroom", "planned", "margin"),
    [
        (10, 10, 0.01, (9.9, 5), 0.506),  # the CRM
        (2, 2, 0.01, (1.98, 1), 0.51),  # the payment gateway
        (5, 5, 0.01, (4.95, 2), 0.608),  # the AI model
        (1, 1, 0.2, (0.8, 1), 0.25),  # the mainframe: burst 1, nothing to absorb jitter but the rate headroom
        (1, 1, 0.01, (0.99, 1), 0.01),  # the same at the default: too little, hence its 20 %
        (10, 1, 0.5, (5.0, 1), 0.1),  # a 10 req/s burst-1 downstream needs half its rate for 0.1 s
    ],
)
def test_our_burst_is_half_the_downstreams_and_only_a_burst_of_1_needs_a_rate_headroom(
    limit, burst, headroom, planned, margin
):
    rate, our_burst = limiter_settings(limit, burst, headroom)
    assert (rate, our_burst) == planned
    assert round(jitter_margin_sec(limit, burst, rate, our_burst), 3) == margin


def test_a_headroom_never_leaves_our_burst_above_what_it_leaves_of_the_downstreams():
    # GIVEN / WHEN / THEN 80 % off a burst of 10 leaves 2, less than half of it
    assert limiter_settings(10, 10, 0.8) == (2.0, 2)


def test_the_headroom_for_a_margin_is_the_least_that_keeps_it():
    # GIVEN the mainframe (1 req/s, burst 1) THEN 10 % keeps 0.1 s, and 9 % would not
    assert headroom_for_margin(1, 1, MIN_JITTER_MARGIN_SEC) == 0.1
    assert jitter_margin_sec(1, 1, *limiter_settings(1, 1, 0.1)) >= MIN_JITTER_MARGIN_SEC
    assert jitter_margin_sec(1, 1, *limiter_settings(1, 1, 0.09)) < MIN_JITTER_MARGIN_SEC
    # AND a downstream whose spare bucket already absorbs it needs none
    assert headroom_for_margin(10, 10, MIN_JITTER_MARGIN_SEC) == 0


def test_a_plan_that_keeps_too_little_margin_warns_with_the_headroom_that_keeps_enough():
    plan = plan_capacity(1, 300, burst=1, headroom=0.01)
    assert any(w.startswith("a jitter margin of 0.01 s is below 0.1 s") and w.endswith("a headroom of 0.1 keeps 0.1 s")
               for w in plan.warnings), plan.warnings


def test_the_margin_is_what_callers_split_between_the_limiters_answer_and_the_call(dev_config):
    # GIVEN every configured downstream WHEN its callers judge a token stale THEN they keep half the plan's margin
    for downstream in dev_config.downstreams:
        limiter = RatePolicy(downstream.planned_rate_per_sec, downstream.planned_burst)
        contract = RatePolicy(downstream.rate_limit_per_sec, downstream.burst)
        assert stale_token_after_sec(limiter, contract) == pytest.approx(downstream.jitter_margin_sec / 2), downstream.name
        assert downstream.jitter_margin_sec >= MIN_JITTER_MARGIN_SEC, downstream.name


def test_a_plan_past_the_concurrency_the_lambdas_take_names_their_bound_and_says_what_it_costs():
    # GIVEN the largest contract and latency a stage may configure: 10,000 req/s at 60 s, 600,000 calls in flight
    plan = plan_capacity(10_000, 60_000)
    # THEN the plan names the 1,000 the Lambdas take, never more (they would clamp the document)
    assert plan.map_concurrency == MAX_CONCURRENCY_BOUNDS[1] == 1_000
    assert parse_tunables(plan.tunables_document(), ceiling_rate_per_sec=10_000, ceiling_burst=plan.burst_limit
                          ).clamped_fields == ()
    # AND it shows the cap in the arithmetic and warns that concurrency then holds the rate below the limit
    assert any("= 600000; min(1000 (the most the Lambdas take), 600000) = 1000" in step for step in plan.steps)
    assert any(warning.startswith("600000 calls in flight would be needed to reach 10000 req/s at 60000 ms, but the"
                                  " Lambdas clamp max_concurrency to 1000: 1000 in flight offer 16.6667 req/s")
               for warning in plan.warnings)
