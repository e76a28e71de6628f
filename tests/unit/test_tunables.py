"""The Lambda-side tunables reader: clamps what is out of range, refuses what is unusable, never crashes."""

from __future__ import annotations

import json
import logging

import pytest

from throttling.adapters.ssm_tunables import TunablesReader, defaults_from_environment
from throttling.core.adaptive_rate import AdaptiveRatePolicy
from throttling.core.circuit_breaker import BreakerPolicy
from throttling.core.tunables import DownstreamTunables, InvalidTunables, parse_breaker_policy, parse_tunables

GOOD = {"rate_per_sec": 10, "burst": 10, "max_concurrency": 2, "mode": "auto"}
DEFAULTS = DownstreamTunables(rate_per_sec=5, burst=5, max_concurrency=1)


def test_a_good_document_parses_unchanged():
    result = parse_tunables(json.dumps(GOOD), ceiling_rate_per_sec=10)
    assert result.tunables == DownstreamTunables(10.0, 10, 2, "auto")
    assert result.clamped_fields == ()


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("rate_per_sec", 50, 10.0),  # above the downstream's contract: clamped to it
        ("rate_per_sec", 0, 0.01),
        ("burst", 0, 1),
        ("burst", 10**6, 5_000),
        ("max_concurrency", -3, 1),
        ("max_concurrency", 5_000, 1_000),
        ("decrease_factor", 0.99, 0.95),  # the inner loop's: a cut that barely slows is no cut
        ("decrease_factor", 0.0, 0.1),
        ("increase_fraction_per_sec", 3, 0.5),
        ("floor_fraction", 0, 0.01),
        ("seed_fraction", 1.5, 1.0),  # an unknown contract's seed: a share of the ceiling
        ("seed_fraction", 0.05, 0.1),  # below the floor (0.1 by default) the bucket would start at the floor anyway
    ],
)
def test_out_of_range_values_are_clamped_and_reported(field, value, expected):
    result = parse_tunables({**GOOD, field: value}, ceiling_rate_per_sec=10, ceiling_burst=5_000)
    assert getattr(result.tunables, field) == expected
    assert result.clamped_fields == (field,)


def test_the_inner_loop_defaults_when_the_document_leaves_it_out_and_follows_it_when_it_does_not():
    # GIVEN a seed without the inner loop's fields, and an operator's document with them
    seeded = parse_tunables(GOOD).tunables
    tuned = parse_tunables({**GOOD, "decrease_factor": 0.5, "increase_fraction_per_sec": 0.05,
                            "floor_fraction": 0.2}).tunables
    # THEN the seed has the core's defaults, and writes none of them back
    assert seeded.adaptive == AdaptiveRatePolicy()
    assert set(json.loads(seeded.to_document())) == set(GOOD)
    # AND the operator's values are the loop's, and survive a round trip
    assert tuned.adaptive == AdaptiveRatePolicy(decrease_factor=0.5, increase_fraction_per_sec=0.05, floor_fraction=0.2)
    assert parse_tunables(tuned.to_document()).tunables == tuned
    # AND a value that is not a number refuses the document, as for any field
    with pytest.raises(InvalidTunables, match="decrease_factor must be a finite number, got 'half'"):
        parse_tunables({**GOOD, "decrease_factor": "half"})


def test_an_unknown_contracts_seed_and_floor_make_the_loop_start_low_and_survive_a_round_trip():
    # GIVEN the document a stage seeds for a downstream known only by its ceiling (rate_per_sec is the ceiling)
    document = {**GOOD, "seed_fraction": 0.1, "floor_fraction": 0.05}
    # WHEN the callers parse it
    result = parse_tunables(json.dumps(document), ceiling_rate_per_sec=10)
    # THEN the loop starts a bucket at a tenth of the ceiling, may fall to a twentieth, and nothing was clamped
    assert result.clamped_fields == ()
    assert result.tunables.adaptive == AdaptiveRatePolicy(seed_fraction=0.1, floor_fraction=0.05)
    # AND writing it back (as the controller and throttlectl do) keeps both, so the discovery survives a retune
    assert json.loads(result.tunables.to_document())["seed_fraction"] == 0.1
    assert parse_tunables(result.tunables.to_document()).tunables == result.tunables
    # AND a known contract's document leaves the seed out: its default, 1, starts the bucket at the rate
    assert "seed_fraction" not in json.loads(parse_tunables(GOOD).tunables.to_document())
    assert parse_tunables(GOOD).tunables.adaptive.seed_fraction == 1.0


def test_a_seed_below_the_documents_own_floor_is_raised_to_it_and_reported():
    # GIVEN a floor of 0.2 and a seed under it (the bucket could never run below the floor)
    result = parse_tunables({**GOOD, "seed_fraction": 0.1, "floor_fraction": 0.2})
    # THEN the seed is the floor, the floor stands, and the reader logs the seed as clamped
    assert (result.tunables.seed_fraction, result.tunables.floor_fraction) == (0.2, 0.2)
    assert result.clamped_fields == ("seed_fraction",)
    # AND a seed that is not a number refuses the document, as for any loop field
    with pytest.raises(InvalidTunables, match="seed_fraction must be a finite number, got 'low'"):
        parse_tunables({**GOOD, "seed_fraction": "low"})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "the value is not JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        (json.dumps({**GOOD, "rate_per_sec": "fast"}), "rate_per_sec must be a finite number, got 'fast'"),
        (json.dumps({**GOOD, "burst": 2.5}), "burst must be a whole number, got 2.5"),
        (json.dumps({**GOOD, "max_concurrency": True}), "max_concurrency must be a finite number, got True"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "burst"}), "burst is missing"),
        (json.dumps({**GOOD, "mode": "turbo"}), "mode must be one of ['auto', 'manual'], got 'turbo'"),
        # json takes NaN and Infinity, JSON has neither: the whole document is refused
        ('{"rate_per_sec": NaN, "burst": 1, "max_concurrency": 1}', "NaN is not a JSON number"),
    ],
)
def test_unusable_documents_are_refused_with_the_reason(raw, message):
    with pytest.raises(InvalidTunables) as error:
        parse_tunables(raw)
    assert message in str(error.value)


class FakeParameterStore:
    def __init__(self, value: str) -> None:
        self.value = value
        self.fail: Exception | None = None

    def fetch(self, name: str) -> str:
        if self.fail:
            raise self.fail
        return self.value


def test_reader_keeps_the_last_good_value_when_the_document_turns_bad(caplog):
    # GIVEN a reader that has seen a good value
    store = FakeParameterStore(json.dumps(GOOD))
    reader = TunablesReader("/throttling/dev/downstreams/crm", defaults=DEFAULTS, fetch=store.fetch, ceiling_rate_per_sec=10)
    assert reader.get().rate_per_sec == 10
    # WHEN an operator writes garbage
    store.value = '{"rate_per_sec": "lots"'
    with caplog.at_level(logging.ERROR):
        in_force = reader.get()
    # THEN the last good value stays in force and an error names the parameter
    assert in_force == DownstreamTunables(10.0, 10, 2, "auto")
    assert "refused an invalid tunables document" in caplog.text
    # AND a corrected value is taken at once
    store.value = json.dumps({**GOOD, "rate_per_sec": 4})
    assert reader.get().rate_per_sec == 4


def test_reader_uses_deploy_time_defaults_before_any_good_value(caplog):
    store = FakeParameterStore("garbage")
    reader = TunablesReader("/p", defaults=DEFAULTS, fetch=store.fetch)
    with caplog.at_level(logging.ERROR):
        assert reader.get() == DEFAULTS


def test_reader_survives_a_failed_read(caplog):
    store = FakeParameterStore(json.dumps(GOOD))
    reader = TunablesReader("/p", defaults=DEFAULTS, fetch=store.fetch)
    reader.get()
    store.fail = TimeoutError("ssm throttled")
    with caplog.at_level(logging.ERROR):
        assert reader.get().rate_per_sec == 10
    assert "could not read tunables" in caplog.text


def test_a_burst_above_the_downstream_s_contract_is_clamped_to_it():
    # GIVEN a downstream whose contract allows a burst of 10 / WHEN a document asks for 50
    result = parse_tunables({**GOOD, "burst": 50}, ceiling_rate_per_sec=10, ceiling_burst=10)
    # THEN the contract's burst is in force, and the clamp is reported
    assert (result.tunables.burst, result.clamped_fields) == (10, ("burst",))
    assert parse_tunables({**GOOD, "burst": 10}, ceiling_rate_per_sec=10, ceiling_burst=10).clamped_fields == ()


def test_a_reader_clamps_the_burst_to_the_contract_with_a_warning(caplog):
    store = FakeParameterStore(json.dumps({**GOOD, "burst": 50}))
    reader = TunablesReader("/p", defaults=DEFAULTS, fetch=store.fetch, ceiling_rate_per_sec=10, ceiling_burst=10)
    with caplog.at_level(logging.WARNING):
        assert reader.get().burst == 10
    (warning,) = [r for r in caplog.records if r.getMessage() == "tunables out of range were clamped"]
    assert warning.clamped == ["burst"]


def test_a_reader_raises_a_seed_below_the_floor_and_logs_the_bad_value(caplog):
    # GIVEN an operator's seed of 0.02 under an unknown contract's floor of 0.05
    store = FakeParameterStore(json.dumps({**GOOD, "seed_fraction": 0.02, "floor_fraction": 0.05}))
    reader = TunablesReader("/p", defaults=DEFAULTS, fetch=store.fetch, ceiling_rate_per_sec=10, ceiling_burst=10)
    with caplog.at_level(logging.WARNING):
        # THEN the callers' loop starts at the floor
        assert reader.get().adaptive == AdaptiveRatePolicy(seed_fraction=0.05, floor_fraction=0.05)
    # AND the warning names the field and shows the value as it was stored
    (warning,) = [r for r in caplog.records if r.getMessage() == "tunables out of range were clamped"]
    assert warning.clamped == ["seed_fraction"] and '"seed_fraction": 0.02' in warning.value


def test_reader_logs_a_warning_when_it_clamps(caplog):
    store = FakeParameterStore(json.dumps({**GOOD, "rate_per_sec": 500}))
    reader = TunablesReader("/p", defaults=DEFAULTS, fetch=store.fetch, ceiling_rate_per_sec=10)
    with caplog.at_level(logging.WARNING):
        assert reader.get().rate_per_sec == 10
    assert "clamped" in caplog.text


def test_defaults_from_environment():
    assert defaults_from_environment(json.dumps(GOOD), DEFAULTS).burst == 10
    assert defaults_from_environment(None, DEFAULTS) == DEFAULTS
    assert defaults_from_environment("oops", DEFAULTS) == DEFAULTS


def test_document_round_trips():
    tunables = DownstreamTunables(2.5, 3, 4, "manual")
    assert parse_tunables(tunables.to_document()).tunables == tunables


def test_breaker_documents_parse_with_defaults_for_missing_fields():
    policy = parse_breaker_policy('{"failure_rate_threshold": 0.25, "open_duration_sec": 10}').tunables
    assert (policy.failure_rate_threshold, policy.open_duration_sec, policy.minimum_calls) == (0.25, 10, 10)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"failure_rate_threshold": 2}', "failure_rate_threshold must be a rate in (0, 1], got 2"),
        ('{"minimum_calls": 0}', "minimum_calls must be an int in [1, 1000000], got 0"),
        ('{"open_for": 3}', "unknown breaker fields ['open_for']"),
    ],
)
def test_bad_breaker_documents_are_refused(raw, message):
    with pytest.raises(InvalidTunables) as error:
        parse_breaker_policy(raw)
    assert message in str(error.value)


def test_a_breaker_reader_keeps_its_last_good_policy():
    store = FakeParameterStore('{"minimum_calls": 4}')
    reader = TunablesReader("/b", defaults=BreakerPolicy(), fetch=store.fetch, parse=parse_breaker_policy)
    assert reader.get().minimum_calls == 4
    store.value = '{"minimum_calls": -1}'
    assert reader.get().minimum_calls == 4


# -- documents of any shape: refused with the reason, never a crash -----------------------------

# What an operator's slip, a copy-paste or a script can leave in Parameter Store. On the seed's
# parser each raised OverflowError, RecursionError or ValueError from inside the reader, so the
# deployed callers failed every invocation while it stayed there.
HOSTILE_DOCUMENTS = [
    ('{"rate_per_sec": 1' + "0" * 400 + ', "burst": 1, "max_concurrency": 1}', "an integer of 401 digits"),
    ('{"rate_per_sec": 1, "burst": 1' + "0" * 5000 + ', "max_concurrency": 1}', "an integer of 5001 digits"),
    ("[" * 3000 + "]" * 3000, "nests 3000 levels deep"),
    ('{"":' * 1500 + "1" + "}" * 1500, "nests 1500 levels deep"),
    ('{"rate_per_sec": 1e400, "burst": 1, "max_concurrency": 1}', "1e400 is too large for a number"),
    ('{"rate_per_sec": Infinity, "burst": 1, "max_concurrency": 1}', "Infinity is not a JSON number"),
    ('{"rate_per_sec": -Infinity, "burst": 1, "max_concurrency": 1}', "-Infinity is not a JSON number"),
    ('{"rate_per_sec": true, "burst": 1, "max_concurrency": 1}', "rate_per_sec must be a finite number, got True"),
    ('{"rate_per_sec": 5, "burst": 1, "max_concurrency": 1, "rate_per_sec": 50}', "field 'rate_per_sec' is given twice"),
    (json.dumps({**GOOD, "note": "x" * 9000}), "the value is 9"),
    ('"{\\"rate_per_sec\\": 5}"', "must be a JSON object, got str"),
    ("null", "must be a JSON object, got NoneType"),
    ("", "the value is not JSON"),
    ('{"rate_per_sec": 5, "burst": 1, "max_concurrency": 1, "mode": ' + "[" * 5 + "]" * 5 + "}", "mode must be one of"),
]


@pytest.mark.parametrize(("raw", "message"), HOSTILE_DOCUMENTS, ids=range(len(HOSTILE_DOCUMENTS)))
def test_a_document_of_any_shape_is_refused_with_its_reason(raw, message):
    # GIVEN a document no parser could use / WHEN it is parsed THEN only InvalidTunables, saying why
    with pytest.raises(InvalidTunables) as error:
        parse_tunables(raw, ceiling_rate_per_sec=10)
    assert message in str(error.value)
    assert len(str(error.value)) < 500


@pytest.mark.parametrize(("raw", "message"), HOSTILE_DOCUMENTS, ids=range(len(HOSTILE_DOCUMENTS)))
def test_a_reader_keeps_its_last_good_value_whatever_the_document(raw, message, caplog):
    # GIVEN a reader that has seen a good value
    store = FakeParameterStore(json.dumps(GOOD))
    reader = TunablesReader("/throttling/dev/downstreams/crm", defaults=DEFAULTS, fetch=store.fetch, ceiling_rate_per_sec=10)
    reader.get()
    # WHEN the document turns into something no parser can use
    store.value = raw
    with caplog.at_level(logging.ERROR):
        in_force = reader.get()
    # THEN the last good value stays in force, and the error says why
    assert in_force == DownstreamTunables(10.0, 10, 2, "auto")
    (refused,) = [r for r in caplog.records if r.getMessage().startswith("refused an invalid tunables document")]
    assert message in refused.error


@pytest.mark.parametrize(
    "raw",
    ['{"window_sec": 1' + "0" * 400 + "}", '{"open_duration_sec": 1e400}', '{"minimum_calls": NaN}',
     "[" * 3000 + "]" * 3000, '{"probe_lease_sec": 1e-300}', '{"window_sec": 172800}', '{"minimum_calls": true}'],
    ids=["long-int", "huge-float", "nan", "deep", "tiny", "two-days", "bool"],
)
def test_a_breaker_document_of_any_shape_is_refused(raw):
    with pytest.raises(InvalidTunables):
        parse_breaker_policy(raw)


def test_a_parser_that_fails_anyway_leaves_the_last_good_value_in_force(caplog):
    # GIVEN a reader whose parser has a bug on some input
    store = FakeParameterStore(json.dumps(GOOD))

    def parse(raw: str):
        if "boom" in raw:
            raise ZeroDivisionError("a bug")
        return parse_tunables(raw)

    reader = TunablesReader("/p", defaults=DEFAULTS, fetch=store.fetch, parse=parse)
    reader.get()
    # WHEN it meets that input THEN the function still runs on the last good value, and the bug is logged
    store.value = '{"boom": 1}'
    with caplog.at_level(logging.ERROR):
        assert reader.get() == DownstreamTunables(10.0, 10, 2, "auto")
    assert "the tunables parser failed" in caplog.text and "ZeroDivisionError" in caplog.text
