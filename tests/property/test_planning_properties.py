"""`plan_capacity` over every input a stage may configure: what it suggests is what the Lambdas and `set` take as is.

The plan, the Lambdas' tunables parser and throttlectl's `set` must agree on the bounds: a plan whose document
the Lambdas would clamp (once, a `max_concurrency` of 10^15) tells the operator a number that never applies.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from throttling.core.planning import EXPECTED_LATENCY_MS_BOUNDS, HEADROOM_BOUNDS, plan_capacity
from throttling.core.tunables import BURST_BOUNDS, MAX_CONCURRENCY_BOUNDS, RATE_PER_SEC_BOUNDS, parse_tunables
from throttlectl.schema import DOWNSTREAM_LIMITS

limits = st.floats(*RATE_PER_SEC_BOUNDS, allow_nan=False)
latencies = st.floats(*EXPECTED_LATENCY_MS_BOUNDS, allow_nan=False)
bursts = st.integers(*BURST_BOUNDS)
headrooms = st.floats(*HEADROOM_BOUNDS, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(limit_rps=limits, latency_ms=latencies, burst=bursts, headroom=headrooms)
def test_every_plan_within_the_bounds_is_a_document_the_lambdas_take_unclamped(limit_rps, latency_ms, burst, headroom):
    # GIVEN any contract, latency and headroom a stage's config accepts
    # WHEN it is planned
    plan = plan_capacity(limit_rps, latency_ms, burst=burst, headroom=headroom)
    document = plan.tunables_document()
    # THEN the Lambdas' parser takes its document as it is, under the downstream's own contract
    parsed = parse_tunables(document, ceiling_rate_per_sec=limit_rps, ceiling_burst=burst)
    assert parsed.clamped_fields == ()
    # AND throttlectl's `set` would write it without a refusal
    DOWNSTREAM_LIMITS.validate("downstreams/planned", document, limit_rps, burst)


@settings(max_examples=300, deadline=None)
@given(limit_rps=limits, latency_ms=latencies, max_in_flight=st.none() | st.integers(1, 1_000))
def test_the_planned_concurrency_is_the_least_that_spends_the_limit_at_the_pace_a_call_holds_its_slot(
    limit_rps, latency_ms, max_in_flight
):
    # GIVEN any contract and latency a stage accepts, with or without a concurrency contract WHEN it is planned
    plan = plan_capacity(limit_rps, latency_ms, max_in_flight=max_in_flight)
    in_flight_at_the_limit = limit_rps * plan.slot_time_ms / 1000
    # THEN it never plans more calls in flight than the downstream takes
    assert max_in_flight is None or plan.map_concurrency <= max_in_flight
    # AND its calls in flight deliver the whole limit at the pace the plan allows for (a call a quarter slower
    # than expected, plus the network and the limiter's round trip), unless a bound caps them, which it says
    capped = plan.map_concurrency == MAX_CONCURRENCY_BOUNDS[1] or plan.map_concurrency == max_in_flight
    if not capped:
        assert plan.map_concurrency >= in_flight_at_the_limit * (1 - 1e-9)
    elif plan.map_concurrency < in_flight_at_the_limit * (1 - 1e-9):
        assert any(warning.endswith("so concurrency, not the limiter, may hold the rate there")
                   for warning in plan.warnings)
    # AND one call fewer would not: the plan adds no call the limiter's tokens do not need
    if plan.map_concurrency > 1:
        assert plan.map_concurrency - 1 < in_flight_at_the_limit * (1 + 1e-9)
    # AND never fewer than concurrency alone, Little's law rounded down at the expected latency, within those bounds
    assert plan.map_concurrency >= min(plan.littles_law_concurrency, MAX_CONCURRENCY_BOUNDS[1],
                                       max_in_flight or MAX_CONCURRENCY_BOUNDS[1])
