"""throttlectl's pure parts: the schema it validates with is the Lambdas', and its audit note round-trips."""

from __future__ import annotations

import dataclasses
import json

import pytest

from stacks.shared_limits_stack import breaker_tunables_seed, downstream_tunables_seed
from throttling.core.circuit_breaker import BreakerPolicy
from throttling.core.tunables import DownstreamTunables
from throttlectl.discovery import Deployment
from throttlectl.exceptions import Refused
from throttlectl.parameters import DESCRIPTION_MAX_CHARS, Audit, StoredTunable, key_of, principal_of, who_changed
from throttlectl.schema import BREAKER_BOUNDS, BREAKER_POLICY, DOWNSTREAM_LIMITS, diff, kind_of, parse_assignments


def test_the_fields_are_the_lambda_side_dataclasses():
    assert DOWNSTREAM_LIMITS.fields == tuple(f.name for f in dataclasses.fields(DownstreamTunables))
    assert BREAKER_POLICY.fields == tuple(f.name for f in dataclasses.fields(BreakerPolicy))
    assert set(BREAKER_BOUNDS) == set(BREAKER_POLICY.fields)
    assert BREAKER_POLICY.defaults["window_buckets"] == BreakerPolicy().window_buckets


def test_every_seed_of_the_stacks_passes_the_cli_validation(dev_config):
    for downstream in dev_config.downstreams:
        seed = json.loads(downstream_tunables_seed(downstream))
        assert DOWNSTREAM_LIMITS.validate("downstreams/x", seed, downstream.rate_limit_per_sec, downstream.burst) == seed
        breaker = json.loads(breaker_tunables_seed(downstream))
        assert BREAKER_POLICY.validate("breakers/x", breaker) == breaker


@pytest.mark.parametrize(
    ("document", "ceiling", "message"),
    [
        ({"rate_per_sec": 11, "burst": 1, "max_concurrency": 1}, 10.0,
         "rate_per_sec 11 is above x's contract of 10 req/s"),
        ({"rate_per_sec": 0.001, "burst": 1, "max_concurrency": 1}, None,
         "rate_per_sec 0.001 is below the lower bound 0.01; the Lambdas would clamp it to 0.01"),
        ({"rate_per_sec": 1, "burst": 5001, "max_concurrency": 1}, None, "burst 5001 is above the upper bound 5000"),
        ({"rate_per_sec": 1, "burst": 1, "max_concurrency": 0}, None, "max_concurrency 0 is below the lower bound 1"),
        ({"rate_per_sec": 1, "burst": 1.5, "max_concurrency": 1}, None, "burst must be a whole number, got 1.5"),
        ({"rate_per_sec": True, "burst": 1, "max_concurrency": 1}, None, "rate_per_sec must be a finite number"),
        ({"rate_per_sec": 1, "burst": 1}, None, "max_concurrency is missing"),
        ({"rate_per_sec": 1, "burst": 1, "max_concurrency": 1, "mode": "off"}, None, "mode must be one of"),
        ({"rate_per_sec": 1, "burst": 1, "max_concurrency": 1, "rate": 2}, None, "unknown field rate for downstreams/x"),
        # the inner loop's fields the Lambdas clamp are refused with their bounds, as the rate is
        ({"rate_per_sec": 1, "burst": 1, "max_concurrency": 1, "decrease_factor": 0.99}, None,
         "decrease_factor 0.99 is above the upper bound 0.95; the Lambdas would clamp it to 0.95"),
        ({"rate_per_sec": 1, "burst": 1, "max_concurrency": 1, "seed_fraction": 0}, None,
         "seed_fraction 0 is below the lower bound 0.01"),
        ({"rate_per_sec": 1, "burst": 1, "max_concurrency": 1, "seed_fraction": 0.05}, None,
         "seed_fraction 0.05 is below the floor_fraction of 0.1; a bucket never runs below its floor, so the Lambdas"
         " would start it at 0.1: give a seed_fraction in [0.1, 1], or lower floor_fraction"),
    ],
)
def test_downstream_documents_the_lambdas_would_clamp_or_refuse_are_refused(document, ceiling, message):
    with pytest.raises(Refused) as refused:
        DOWNSTREAM_LIMITS.validate("downstreams/x", document, ceiling)
    assert message in str(refused.value)


def test_a_burst_above_the_contract_is_refused_naming_the_contract():
    # GIVEN a downstream whose contract allows a burst of 10 / WHEN an operator asks for 50
    with pytest.raises(Refused) as refused:
        DOWNSTREAM_LIMITS.validate("downstreams/crm", {"rate_per_sec": 5, "burst": 50, "max_concurrency": 1}, 10.0, 10)
    # THEN refused, naming the contract and the range the Lambdas would keep it in
    assert str(refused.value) == (
        "downstreams/crm: burst 50 is above crm's contract burst of 10 (the DOWNSTREAM_BURST its functions are "
        "deployed with); the Lambdas would clamp it to 10: give a whole number in [1, 10]")
    # AND the contract's own burst is accepted, and shown as the bound
    assert DOWNSTREAM_LIMITS.validate("downstreams/crm", {"rate_per_sec": 5, "burst": 10, "max_concurrency": 1},
                                      10.0, 10)["burst"] == 10
    assert DOWNSTREAM_LIMITS.bounds(10.0, 10)["burst"] == "whole 1..10 (contract)"


def test_a_rate_above_a_ceiling_is_refused_naming_the_ceiling():
    # GIVEN a downstream known only by a 50 req/s ceiling (its document starts the bucket at a seed)
    document = {"rate_per_sec": 60, "burst": 5, "max_concurrency": 10, "seed_fraction": 0.1, "floor_fraction": 0.05}
    # WHEN an operator asks for 60 req/s THEN refused, naming the ceiling, not a contract it never had
    with pytest.raises(Refused) as refused:
        DOWNSTREAM_LIMITS.validate("downstreams/geo_api", document, 50.0, 10)
    assert str(refused.value).startswith("downstreams/geo_api: rate_per_sec 60 is above geo_api's ceiling of 50 req/s")


def test_discovery_reads_each_downstream_s_contract_from_its_functions():
    from throttlectl.discovery import _collect_contract

    rates: dict[str, float] = {}
    bursts: dict[str, int] = {}
    for variables in ({"DOWNSTREAM_NAME": "crm", "DOWNSTREAM_RATE_LIMIT_PER_SEC": "10.0", "DOWNSTREAM_BURST": "10"},
                      {"DOWNSTREAM_NAME": "crm", "DOWNSTREAM_RATE_LIMIT_PER_SEC": "8", "DOWNSTREAM_BURST": "6"},
                      {"DOWNSTREAM_NAME": "old", "DOWNSTREAM_RATE_LIMIT_PER_SEC": "1"}):
        _collect_contract({"Type": "AWS::Lambda::Function", "Properties": {"Environment": {"Variables": variables}}},
                          rates, bursts)
    # The lowest contract binds; a function deployed without DOWNSTREAM_BURST leaves the burst unknown
    assert (rates, bursts) == ({"crm": 8.0, "old": 1.0}, {"crm": 6})
    deployment = Deployment(stage="dev", stacks=(), outputs={}, contracts=rates, contract_bursts=bursts)
    assert (deployment.ceiling_for("downstreams/crm"), deployment.burst_ceiling_for("downstreams/crm")) == (8.0, 6)
    assert deployment.burst_ceiling_for("breakers/crm") is None


def test_a_valid_downstream_document_is_written_in_the_lambdas_canonical_form():
    assert DOWNSTREAM_LIMITS.validate("downstreams/x", {"rate_per_sec": 5, "burst": 5, "max_concurrency": 1}) == {
        "burst": 5, "max_concurrency": 1, "mode": "auto", "rate_per_sec": 5.0}


def test_breaker_documents_are_checked_by_the_breaker_policy():
    with pytest.raises(Refused, match="failure_rate_threshold must be a rate in"):
        BREAKER_POLICY.validate("breakers/x", {"failure_rate_threshold": 2})
    with pytest.raises(Refused, match="unknown field open_sec"):
        BREAKER_POLICY.validate("breakers/x", {"open_sec": 2})


def test_only_known_kinds_have_a_schema():
    assert kind_of("downstreams/crm") is DOWNSTREAM_LIMITS
    assert kind_of("breakers/crm") is BREAKER_POLICY
    with pytest.raises(Refused, match="no schema for 'other/thing'"):
        kind_of("other/thing")


def test_assignments_are_json_values_or_plain_words():
    assert parse_assignments(["rate_per_sec=5", "mode=manual", "x=0.5", "s=\"5\""]) == {
        "rate_per_sec": 5, "mode": "manual", "x": 0.5, "s": "5"}
    with pytest.raises(Refused, match="expected FIELD=VALUE, got 'rate_per_sec'"):
        parse_assignments(["rate_per_sec"])
    with pytest.raises(Refused, match="burst is given twice"):
        parse_assignments(["burst=1", "burst=2"])


def test_diff_treats_equal_numbers_as_equal():
    changes = diff({"rate_per_sec": 9, "mode": "auto"}, {"rate_per_sec": 9.0, "mode": "manual"})
    assert [(c.field, c.old, c.new) for c in changes] == [("mode", "auto", "manual")]


def test_the_audit_note_fits_ssm_and_counts_only_for_the_version_it_wrote():
    # GIVEN a note with a reason far longer than a description may be
    note = Audit(by="arn:aws:sts::1:assumed-role/Ops/alice", at="2026-01-01T00:00:00Z", reason="r" * 2000, from_version=3)
    text = note.to_description()
    # THEN it is shortened to SSM's limit and still parses
    assert len(text) <= DESCRIPTION_MAX_CHARS
    assert Audit.from_description(text).reason.endswith("\u2026")
    # AND it is this tool's note for version 4 only: a later write inherits the description, not the note
    stored = StoredTunable("/throttling/dev/x", "x", "{}", 4, None, "N/A", text)
    assert stored.audit is not None
    assert dataclasses.replace(stored, version=5).audit is None


def test_who_changed_names_the_controller_a_person_or_the_seed():
    deployment = Deployment(stage="dev", stacks=(), outputs={}, seeds={"/throttling/dev/x": "{}"},
                            controller_roles=("Throttling-dev-Ctl-Role1",))
    stored = StoredTunable("/throttling/dev/x", "x", '{"a": 1}', 2, None, "N/A", None)
    controller = "arn:aws:sts::1:assumed-role/Throttling-dev-Ctl-Role1/session"
    assert who_changed(dataclasses.replace(stored, last_modified_user=controller), deployment) == "controller"
    assert who_changed(dataclasses.replace(stored, last_modified_user="arn:aws:iam::1:user/bob"), deployment) == (
        "arn:aws:iam::1:user/bob")
    assert who_changed(dataclasses.replace(stored, value="{}", version=1), deployment) == "CloudFormation (seed)"
    assert who_changed(dataclasses.replace(stored, value="{}"), deployment) == "unknown"
    assert who_changed(stored, deployment) == "unknown"
    # AND where SSM does not record the writer (moto), this tool's note for the version names it
    note = Audit("arn:aws:sts::1:assumed-role/Ops", "2026-01-01T00:00:00Z", "why", 1).to_description()
    assert who_changed(dataclasses.replace(stored, description=note), deployment) == "arn:aws:sts::1:assumed-role/Ops"
    # AND SSM's own record wins over the note
    assert who_changed(dataclasses.replace(stored, description=note, last_modified_user="arn:aws:iam::1:user/bob"),
                       deployment) == "arn:aws:iam::1:user/bob"


def test_the_audit_note_keeps_the_role_not_the_session_name():
    assert principal_of("arn:aws:sts::1:assumed-role/AWSReservedSSO_Ops_0a1b/alice@example.com") == (
        "arn:aws:sts::1:assumed-role/AWSReservedSSO_Ops_0a1b")
    assert principal_of("arn:aws:iam::1:user/ci") == "arn:aws:iam::1:user/ci"


def test_names_are_keys_under_the_stage_prefix():
    deployment = Deployment(stage="dev", stacks=(), outputs={})
    assert key_of(deployment, "/throttling/dev/downstreams/crm") == "downstreams/crm"
    assert key_of(deployment, "/downstreams/crm") == "downstreams/crm"
    with pytest.raises(Refused, match="belongs to stage 'prod', not 'dev'; pass --stage prod"):
        key_of(deployment, "/throttling/prod/downstreams/crm")


def test_a_tenants_share_and_the_classes_reserves_pass_the_cli_and_a_wrong_one_is_refused():
    # GIVEN a downstream document with a tenant's share and a class's reserve
    document = {"rate_per_sec": 10, "burst": 10, "max_concurrency": 2, "mode": "auto", "share_acme": 0.3,
                "reserve_batch": 0.5}
    # THEN throttlectl takes it as written (the share_ fields are named by the operator's tenants)
    assert DOWNSTREAM_LIMITS.validate("downstreams/crm", document) == document
    # AND a share out of range is refused with the Lambdas' reason, and a field of neither kind stays unknown
    with pytest.raises(Refused, match=r"downstreams/crm: the share of tenant 'acme' must be in \(0, 1\], got 3"):
        DOWNSTREAM_LIMITS.validate("downstreams/crm", {**document, "share_acme": 3})
    with pytest.raises(Refused, match="unknown field shares_acme"):
        DOWNSTREAM_LIMITS.validate("downstreams/crm", {**document, "shares_acme": 0.3})


def test_a_field_clamped_to_its_default_is_still_shown_with_the_value_in_force():
    # GIVEN a stored document whose seed_fraction (2) the Lambdas clamp to 1, its default
    values, clamped = DOWNSTREAM_LIMITS.in_force('{"rate_per_sec": 5, "burst": 5, "max_concurrency": 2,'
                                                 ' "seed_fraction": 2}', 10.0, 10)
    # THEN the clamped field is listed, and shown at the value the Lambdas use
    assert clamped == ("seed_fraction",)
    assert values["seed_fraction"] == 1.0
