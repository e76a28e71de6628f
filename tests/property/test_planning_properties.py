"""`plan_capacity` over every input a stage may configure: what it suggests is what the Lambdas and `set` take as is.

The plan, the Lambdas' tunables parser and throttlectl's `set` must agree on the bounds: a plan whose document
the Lambdas would clamp (once, a `max_concurrency` of 10^15) tells the operator a number that never applies.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from throttling.core.planning import EXPECTED_LATENCY_MS_BOUNDS, HEADROOM_BOUNDS, plan_capacity
from throttling.core.tunables import BURST_BOUNDS, RATE_PER_SEC_BOUNDS, parse_tunables
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
