"""Every parser of an SSM document, fed anything: a usable value comes out, or its domain error, nothing else.

The parsers: the Lambdas' `parse_tunables` and `parse_breaker_policy` (as text and as an already
decoded mapping), the controller's `TunablesDocumentStore`, and throttlectl's schema, assignments
and audit notes. Inputs: arbitrary JSON (huge integers, NaN and Infinity, deep nesting included),
arbitrary text, and documents shaped like tunables whose fields hold arbitrary JSON.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from throttling.adapters.ssm_controller_parameters import TunablesDocumentStore
from throttling.core import circuit_breaker
from throttling.core.circuit_breaker import DURATION_BOUNDS_SEC, MAX_MINIMUM_CALLS, BreakerPolicy, BreakerState
from throttling.core.names import TUNABLES_MODES
from throttling.core.rate_limiter import RatePolicy
from throttling.core.tunables import (
    BURST_BOUNDS,
    MAX_CONCURRENCY_BOUNDS,
    RATE_PER_SEC_BOUNDS,
    DownstreamTunables,
    InvalidTunables,
    parse_breaker_policy,
    parse_tunables,
)
from throttlectl.exceptions import Refused
from throttlectl.parameters import AUDIT_PREFIX, Audit
from throttlectl.schema import BREAKER_POLICY, DOWNSTREAM_LIMITS, document_of, parse_assignments

CONTRACT_RATE_PER_SEC = 10.0
CONTRACT_BURST = 10
NOW = 1_700_000_000.0
MANY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 2, 5, 10, 0.5, 1e-300, 1e300, -1, 86_400, 86_401, 10**15, 10**16]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20), st.sampled_from(TUNABLES_MODES))
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=20,
)
# With the inner loop's fields: a seed and a floor that disagree must still give a loop the callers can build.
downstream_fields = ("rate_per_sec", "burst", "max_concurrency", "mode", "decrease_factor", "increase_fraction_per_sec",
                     "floor_fraction", "seed_fraction")
breaker_fields = tuple(BreakerPolicy.__dataclass_fields__)


def shaped_like(fields: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with some of `fields` (and now and then a stranger), each holding any JSON value."""
    return st.dictionaries(st.sampled_from((*fields, "note")), st.one_of(scalars, json_values), max_size=len(fields) + 1)


def as_text(value: Any) -> str:
    return json.dumps(value)  # NaN and Infinity come out as the non-JSON literals json also reads


hostile_texts = st.one_of(
    st.integers(min_value=1, max_value=4000).map(lambda n: "[" * n + "]" * n),
    st.integers(min_value=1, max_value=1500).map(lambda n: '{"":' * n + "1" + "}" * n),
    st.integers(min_value=1, max_value=6000).map(
        lambda n: '{"rate_per_sec": 1' + "0" * n + ', "burst": 1, "max_concurrency": 1}'),
    st.integers(min_value=1, max_value=6000).map(lambda n: '{"window_sec": 9' + "9" * n + "}"),
    st.integers(min_value=8000, max_value=20000).map(lambda n: '{"rate_per_sec": 5, "pad": "' + "x" * n + '"}'),
)
documents = st.one_of(
    st.text(max_size=200),
    json_values.map(as_text),
    shaped_like(downstream_fields).map(as_text),
    shaped_like(breaker_fields).map(as_text),
    hostile_texts,
)


def assert_usable_tunables(tunables: DownstreamTunables, ceiling_rate_per_sec: float | None,
                           ceiling_burst: int | None) -> None:
    high = RATE_PER_SEC_BOUNDS[1] if ceiling_rate_per_sec is None else min(RATE_PER_SEC_BOUNDS[1], ceiling_rate_per_sec)
    assert isinstance(tunables.rate_per_sec, float) and RATE_PER_SEC_BOUNDS[0] <= tunables.rate_per_sec <= high
    burst_high = BURST_BOUNDS[1] if ceiling_burst is None else ceiling_burst
    assert type(tunables.burst) is int and BURST_BOUNDS[0] <= tunables.burst <= burst_high
    assert type(tunables.max_concurrency) is int
    assert MAX_CONCURRENCY_BOUNDS[0] <= tunables.max_concurrency <= MAX_CONCURRENCY_BOUNDS[1]
    assert tunables.mode in TUNABLES_MODES
    RatePolicy(tunables.rate_per_sec, tunables.burst)  # what the callers build from it
    assert tunables.adaptive.floor_fraction <= tunables.adaptive.seed_fraction  # and their inner loop


def assert_usable_breaker_policy(policy: BreakerPolicy) -> None:
    low, high = DURATION_BOUNDS_SEC
    for name in ("slow_call_duration_sec", "window_sec", "open_duration_sec", "probe_lease_sec"):
        assert low <= getattr(policy, name) <= high
    assert 1 <= policy.minimum_calls <= MAX_MINIMUM_CALLS
    # AND the breaker runs on it: admit, record a slow failure, open, and store the item
    state = BreakerState()
    for step in range(3):
        _, state = circuit_breaker.allow(state, policy, NOW + step, f"caller-{step}")
        state = circuit_breaker.record(state, policy, NOW + step, False, policy.slow_call_duration_sec, f"caller-{step}")
    opened = circuit_breaker.force_open(state, policy, NOW + 10, "property test")
    assert BreakerState.from_item(opened.to_item()) == opened


@MANY
@given(loop=st.dictionaries(st.sampled_from(("floor_fraction", "seed_fraction", "decrease_factor")),
                            st.one_of(numbers, st.floats(min_value=0, max_value=1.5)), min_size=1))
def test_any_seed_and_floor_give_an_inner_loop_the_callers_can_run_or_are_refused(loop):
    # GIVEN a usable document with the inner loop's fields holding anything numeric
    document = {"rate_per_sec": 10, "burst": 10, "max_concurrency": 2, **loop}
    try:
        result = parse_tunables(as_text(document), ceiling_rate_per_sec=CONTRACT_RATE_PER_SEC)
    except InvalidTunables:
        return
    # THEN the loop it gives is one the core builds (a seed never under the floor), within the bounds
    assert_usable_tunables(result.tunables, CONTRACT_RATE_PER_SEC, None)
    assert 0.01 <= result.tunables.floor_fraction <= result.tunables.seed_fraction <= 1


@MANY
@given(raw=documents)
def test_the_downstream_parser_returns_usable_limits_or_refuses(raw):
    for ceiling, ceiling_burst in ((None, None), (CONTRACT_RATE_PER_SEC, CONTRACT_BURST)):
        try:
            result = parse_tunables(raw, ceiling_rate_per_sec=ceiling, ceiling_burst=ceiling_burst)
        except InvalidTunables:
            continue
        assert_usable_tunables(result.tunables, ceiling, ceiling_burst)


@MANY
@given(document=st.one_of(shaped_like(downstream_fields), st.dictionaries(st.text(max_size=8), json_values)))
def test_the_downstream_parser_takes_a_decoded_mapping_alike(document):
    try:
        result = parse_tunables(document, ceiling_rate_per_sec=CONTRACT_RATE_PER_SEC, ceiling_burst=CONTRACT_BURST)
    except InvalidTunables:
        return
    assert_usable_tunables(result.tunables, CONTRACT_RATE_PER_SEC, CONTRACT_BURST)


@MANY
@given(raw=st.one_of(documents, shaped_like(breaker_fields)))
def test_the_breaker_parser_returns_a_policy_the_breaker_runs_on_or_refuses(raw):
    try:
        result = parse_breaker_policy(raw)
    except InvalidTunables:
        return
    assert_usable_breaker_policy(result.tunables)


class OneParameterSsm:
    def __init__(self, value: str) -> None:
        self.value = value

    def get_parameter(self, Name: str) -> dict[str, Any]:  # noqa: N803 - boto3's name
        return {"Parameter": {"Name": Name, "Value": self.value, "Version": 3}}


@MANY
@given(raw=documents)
def test_the_controller_reads_a_document_or_refuses_it(raw):
    try:
        read = TunablesDocumentStore(OneParameterSsm(raw)).read("/throttling/dev/downstreams/crm")
    except InvalidTunables:
        return
    assert isinstance(read.document, dict) and read.version == 3


@MANY
@given(raw=documents)
def test_throttlectl_reads_any_stored_value_as_the_lambdas_would(raw):
    # What `show` and `status` make of a stored value: the Lambdas' view, or their refusal
    for kind, ceiling, ceiling_burst in ((DOWNSTREAM_LIMITS, CONTRACT_RATE_PER_SEC, CONTRACT_BURST),
                                         (BREAKER_POLICY, None, None)):
        try:
            values, clamped = kind.in_force(raw, ceiling, ceiling_burst)
        except InvalidTunables:
            continue
        assert set(clamped) <= set(values)
    document = document_of(raw)
    assert document is None or isinstance(document, dict)
    note = Audit.from_description(AUDIT_PREFIX + raw)
    assert note is None or isinstance(note.from_version, int)


@MANY
@given(text=st.one_of(st.text(max_size=100), json_values.map(as_text), hostile_texts),
       field=st.sampled_from(downstream_fields))
def test_throttlectl_set_writes_a_usable_document_or_refuses(text, field):
    # GIVEN an operator's FIELD=VALUE over the seed / WHEN validated THEN a document the Lambdas use unclamped, or a refusal
    seed = {"rate_per_sec": 9.9, "burst": 5, "max_concurrency": 2, "mode": "auto"}
    try:
        document = DOWNSTREAM_LIMITS.validate("downstreams/crm", {**seed, **parse_assignments([f"{field}={text}"])},
                                              CONTRACT_RATE_PER_SEC, CONTRACT_BURST)
    except Refused:
        return
    result = parse_tunables(json.dumps(document), ceiling_rate_per_sec=CONTRACT_RATE_PER_SEC, ceiling_burst=CONTRACT_BURST)
    assert result.clamped_fields == ()
    assert_usable_tunables(result.tunables, CONTRACT_RATE_PER_SEC, CONTRACT_BURST)


@pytest.mark.parametrize("depth", [1, 999, 1001, 5000])
def test_no_nesting_reaches_json_s_recursion(depth):
    # GIVEN the depths around json's recursion limit / WHEN parsed THEN a refusal, never a RecursionError
    with pytest.raises(InvalidTunables):
        parse_tunables("[" * depth + "]" * depth)
