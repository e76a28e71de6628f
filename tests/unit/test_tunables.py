"""The Lambda-side tunables reader: clamps what is out of range, refuses what is unusable, never crashes."""

from __future__ import annotations

import json
import logging

import pytest

from throttling.circuit_breaker import BreakerPolicy
from throttling.tunables import (
    DownstreamTunables,
    InvalidTunables,
    TunablesReader,
    defaults_from_environment,
    parse_breaker_policy,
    parse_tunables,
)

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
    ],
)
def test_out_of_range_values_are_clamped_and_reported(field, value, expected):
    result = parse_tunables({**GOOD, field: value}, ceiling_rate_per_sec=10)
    assert getattr(result.tunables, field) == expected
    assert result.clamped_fields == (field,)


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
        ('{"rate_per_sec": NaN, "burst": 1, "max_concurrency": 1}', "rate_per_sec must be a finite number"),
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
        ('{"minimum_calls": 0}', "minimum_calls must be an int >= 1, got 0"),
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
