"""The planning arithmetic (Little's law), and that it agrees with the seeds the stacks write.

The Map concurrency is planned for a downstream behind the shared limiter (every deployed caller takes a
token): enough calls in flight to spend every token at the pace a call really holds its slot.
"""

from __future__ import annotations

import math

import pytest

from throttling.core.names import SQS_MIN_MAXIMUM_CONCURRENCY
from throttling.core.planning import (
    MAX_RETRY_ATTEMPTS,
    controller_bounds,
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
    # THEN 5 in flight offer 25 req/s, two and a half times the limit, more than the plan needs, and the plan says so
    assert offered_rps(5, 200) == 25
    assert plan.check is not None
    assert (plan.check.offered_rps, plan.check.exceeds_limit, plan.check.times_the_limit) == (25, True, 2.5)
    assert plan.steps[2] == ("check: 5 concurrent calls / 0.2 s = 25 req/s: too many for a 10 req/s limit (2.5x it):"
                             " more than the 3 that spend every token of the shared limiter; the rest only wait for one")
    # AND behind the shared limiter the Map needs 3: a call holds its slot 300 ms, and 3 / 0.3 s is the limit
    assert (plan.map_concurrency, plan.slot_time_ms, plan.map_offered_rps) == (3, 300, 15)
    assert ("a call holds its slot W x 1.25 + 50 ms = 300 ms (a quarter slower than expected, plus the network both"
            " ways and the limiter's round trip)") in plan.steps
    assert any(step.startswith("Map concurrency = max(1, ceil(10 req/s x 0.3 s)) = max(1, ceil(3)) = 3: the shared"
                               " limiter holds the rate") and step.endswith("3 / 0.3 s = 10 req/s at that pace,"
                                                                            " 3 / 0.2 s = 15 req/s at W")
               for step in plan.steps)
    # AND concurrency alone, with no limiter, would be Little's law rounded down: 2, exactly the limit at 200 ms
    assert plan.littles_law_concurrency == 2
    assert any(step.startswith("concurrency alone (no limiter) = max(1, floor(10 req/s x 0.2 s)) = max(1, floor(2)) ="
                               " 2: it offers 2 / 0.2 s = 10 req/s <= 10 req/s") for step in plan.steps)


def test_the_plans_concurrency_is_the_verdict_a_checked_one_is_measured_against():
    # GIVEN the CRM planned at 3 calls in flight
    # WHEN 3, 2 and 1 are checked THEN 3 is the plan's (above the limit at W, which the limiter holds),
    # 2 is within the limit but leaves tokens unspent, and so is 1
    assert plan_capacity(10, 200, check_concurrency=3).steps[2] == (
        "check: 3 concurrent calls / 0.2 s = 15 req/s: more than the 10 req/s limit (1.5x it) at W, which the shared"
        " limiter holds to its rate; within the plan's 3")
    assert plan_capacity(10, 200, check_concurrency=2).steps[2] == (
        "check: 2 concurrent calls / 0.2 s = 10 req/s: within the 10 req/s limit; fewer than the plan's 3: calls"
        " slower than W leave tokens unspent")
    assert plan_capacity(10, 200, check_concurrency=1).steps[2].endswith("fewer than the plan's 3: calls slower than"
                                                                        " W leave tokens unspent")


def test_the_plans_concurrency_spends_the_limit_at_the_pace_where_littles_law_rounded_down_does_not():
    # GIVEN the CRM: 10 req/s, 200 ms expected, a call holding its slot 300 ms
    plan = plan_capacity(10, 200, burst=10)
    # WHEN calls run as slowly as the plan allows for
    # THEN the plan's 3 in flight still deliver the limit, and more than the limiter's 9.9 req/s
    assert offered_rps(plan.map_concurrency, plan.slot_time_ms) == pytest.approx(10)
    assert offered_rps(plan.map_concurrency, plan.slot_time_ms) >= plan.limiter_rate_per_sec
    # AND Little's law rounded down (2) would deliver two thirds of it, leaving the limiter's tokens unspent
    assert offered_rps(plan.littles_law_concurrency, plan.slot_time_ms) == pytest.approx(20 / 3)


def test_a_concurrency_contract_caps_the_plan_and_the_shortfall_is_a_warning():
    # GIVEN the AI model: 5 req/s at 800 ms, and at most 3 of our calls in flight (its semaphore's permits)
    plan = plan_capacity(5, 800, burst=5, max_in_flight=3)
    # THEN the plan names 3, never the 6 that would spend every token at 1.05 s a call
    assert (plan.map_concurrency, plan.consumer_max_concurrency, plan.max_in_flight) == (3, 3, 3)
    assert any("= 6; min(3 (its max_in_flight: the semaphore lets no more through), 6) = 3" in step
               for step in plan.steps)
    # AND it warns that the downstream's concurrency contract, not the limiter, may then hold the rate
    assert plan.warnings == (
        "6 calls in flight would be needed to spend every token of 5 req/s at 1050 ms a call, but its max_in_flight"
        " of 3 caps them: 3 in flight offer 2.85714 req/s at that pace (3.75 req/s at 800 ms), so concurrency, not the"
        " limiter, may hold the rate there",)
    # AND a contract above what the plan needs changes nothing, and a bad one is refused with its value
    assert plan_capacity(5, 800, burst=5, max_in_flight=10).map_concurrency == 6
    with pytest.raises(ValueError, match=r"max_in_flight must be a whole number >= 1 .* got 0"):
        plan_capacity(5, 800, max_in_flight=0)


def test_the_controllers_concurrency_ceiling_holds_the_plan_within_the_concurrency_contract():
    # GIVEN / WHEN / THEN the CRM's ceiling is 4 x Little's law (4 x 2 = 8), and its seed (3) inside the bounds
    crm = controller_bounds(10, 10, 200)
    assert (crm["min_concurrency"], crm["max_concurrency"]) == (1, 8)
    assert crm["min_concurrency"] <= plan_capacity(10, 200).map_concurrency <= crm["max_concurrency"]
    # AND a factor of 1 still leaves room for the plan's seed (3, not 1 x 2)
    assert controller_bounds(10, 10, 200, max_concurrency_factor=1)["max_concurrency"] == 3
    # AND the AI model's ceiling is its max_in_flight, which also caps its seed
    assert controller_bounds(5, 5, 800, max_in_flight=3)["max_concurrency"] == 3
    # AND no ceiling passes the 1,000 the Lambdas take
    assert controller_bounds(10_000, 5_000, 60_000)["max_concurrency"] == MAX_CONCURRENCY_BOUNDS[1]


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
    assert plan.tunables_document() == {"rate_per_sec": 9.9, "burst": 5, "max_concurrency": 3, "mode": "auto"}
    assert any(step.startswith("limiter rate_per_sec = 10 x (1 - 0.01) = 9.9 req/s; "
                               "burst = max(1, min(floor(10 / 2), floor(10 x (1 - 0.01)))) = 5") for step in plan.steps)
    # AND calls may lag their decisions unevenly by half a second and never meet a 429
    assert plan.jitter_margin_sec == pytest.approx(6 / 9.9 - 0.1)
    assert "jitter margin = (10 + 1 - 5) / 9.9 req/s - 1 / 10 req/s = 0.506 s" in plan.steps[-4]
    assert plan.warnings == ()


def test_a_slow_one_request_per_second_downstream_warns_that_only_the_limiter_holds_it():
    # GIVEN the mainframe: 1 req/s, 300 ms per call, 20 % headroom
    plan = plan_capacity(1, 300, burst=1, headroom=0.2)
    # THEN one call in flight is the floor, it would offer 3.3 req/s, and the plan warns that only the limiter holds it
    assert (plan.map_concurrency, plan.littles_law_concurrency) == (1, 1)
    assert plan.map_offered_rps == pytest.approx(10 / 3, rel=1e-5)
    assert ("even 1 call in flight offers 3.33333 req/s > 1 req/s: concurrency alone cannot hold this limit; every"
            " caller must take the shared limiter's token") in plan.warnings
    # AND the queue consumer cannot go below Lambda's SQS minimum
    assert plan.consumer_max_concurrency == SQS_MIN_MAXIMUM_CONCURRENCY
    # AND retries start one emission interval (1 / 0.8 s, rounded up) out
    assert plan.retry.interval_sec == 2


def test_consumer_concurrency_follows_the_map_above_the_sqs_minimum():
    # GIVEN 5 req/s at 800 ms: a call holds its slot 1.05 s, so 5.25 calls in flight, rounded up
    plan = plan_capacity(5, 800)
    assert (plan.map_concurrency, plan.consumer_max_concurrency) == (6, 6)


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
                             burst=downstream.burst, headroom=downstream.headroom,
                             max_in_flight=downstream.max_in_flight)
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
    assert any("= 750500; min(1000 (the most the Lambdas take), 750500) = 1000" in step for step in plan.steps)
    assert any(warning.startswith("750500 calls in flight would be needed to spend every token of 10000 req/s at"
                                  " 75050 ms a call, but the 1000 the Lambdas take (they clamp max_concurrency to it)"
                                  " caps them: 1000 in flight offer 13.3245 req/s at that pace")
               for warning in plan.warnings)
