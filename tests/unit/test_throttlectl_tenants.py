"""`throttlectl status` per tenant: the shares in force, and each tenant's bucket as the limiter left it.

The buckets are written by the real limiter adapter (`DynamoDbRateLimiter`, tenants and classes, on
moto's DynamoDB, on a fake clock) and read back by `throttlectl.status.tenant_rows`: what the operator
sees is what the fleet wrote, however the adapter names its items and attributes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from throttling.adapters import dynamodb_rate_limiter
from throttling.adapters.dynamodb_rate_limiter import DynamoDbRateLimiter
from throttling.core import names
from throttling.core.clock import FakeClock
from throttling.core.rate_limiter import RatePolicy
from throttling.core.tunables import parse_tunables
from throttlectl.discovery import Deployment
from throttlectl.parameters import StoredTunable
from throttlectl.status import collect_status, tenant_rows

TABLE = "limiter"
NOW = 1_000_000.0
# The CRM at 10 req/s, burst 10; acme has half of it, every other tenant the default 0.1.
CRM = {"rate_per_sec": 10, "burst": 10, "max_concurrency": 2, "mode": "manual", "share_acme": 0.5,
       "share_initech": 0.2}


def stored(document: dict[str, Any], key: str = "downstreams/crm") -> StoredTunable:
    return StoredTunable(name=f"/throttling/dev/{key}", key=key, value=json.dumps(document), version=1,
                         last_modified=None, last_modified_user=None, description=None)


@pytest.fixture
def dynamodb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="eu-west-1")
        client.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
        yield client


@pytest.fixture
def deployment() -> Deployment:
    return Deployment(stage="dev", stacks=("Throttling-dev-SharedLimits",),
                      outputs={"Throttling-dev-SharedLimits": {"RateLimiterTableName": TABLE}},
                      contracts={"crm": 10.0}, contract_bursts={"crm": 10})


def take(dynamodb: Any, tenant: str, times: int, *, at: float = NOW) -> list[bool]:
    """`times` batch calls of `tenant` on the CRM's bucket at `at`, as a caller takes them."""
    limiter = DynamoDbRateLimiter(TABLE, client=dynamodb, clock=FakeClock(at))
    shares = parse_tunables(json.dumps(CRM)).tunables.shares
    return [limiter.try_acquire("crm", RatePolicy(10, 10), tenant=tenant, priority=names.PRIORITY_BATCH,
                                shares=shares).allowed for _ in range(times)]


def test_status_shows_the_shares_in_force_and_who_is_held_back(dynamodb, deployment):
    # GIVEN acme taking 2 batch calls at once (batch may fill 3 of its share's burst of 5), and an unknown tenant
    # taking 1 (its share's whole burst of 1); initech has not called
    assert take(dynamodb, "acme", 2) == [True] * 2
    assert take(dynamodb, "globex", 1) == [True]
    # WHEN the operator asks for the tenants at that instant
    shares, tenants = tenant_rows(dynamodb, deployment, {"downstreams/crm": stored(CRM)}, NOW)
    # THEN the shares are the document's, as the Lambdas read it
    (crm,) = shares
    assert (crm.shares, crm.default_share, crm.borrow_depth) == ({"acme": 0.5, "initech": 0.2}, 0.1, 0.5)
    assert crm.reserves == {names.PRIORITY_CRITICAL: 0.0, names.PRIORITY_STANDARD: 0.2, names.PRIORITY_BATCH: 0.4}
    assert (crm.tenants_seen, crm.tenants_left_out) == (2, 0)
    # AND each tenant's bucket is ahead of now by its calls over its rate: acme 2 / 5 per s, within its share;
    # the unknown tenant's slot 1 / 1 per s, held back: its next call of any class within its share would be refused
    rows = {row.tenant: row for row in tenants}
    assert (rows["acme"].backlog_sec, rows["acme"].share, rows["acme"].state) == (pytest.approx(0.4), 0.5,
                                                                                 "within its share")
    (unknown,) = [row for name, row in rows.items() if name.startswith("(unknown tenants, slot ")]
    assert (unknown.backlog_sec, unknown.share, unknown.state) == (pytest.approx(1.0), 0.1, "held back")
    assert [row.tenant for row in tenants][0] == unknown.tenant  # the most backed up first
    # AND two seconds later both buckets are full again: idle
    _, later = tenant_rows(dynamodb, deployment, {"downstreams/crm": stored(CRM)}, NOW + 2)
    assert {row.state for row in later} == {"idle"} and {row.backlog_sec for row in later} == {0.0}


def test_the_listing_is_bounded_to_the_top_tenants_and_counts_the_others(dynamodb, deployment):
    # GIVEN three tenants backed up by different amounts
    assert take(dynamodb, "globex", 1, at=NOW - 0.5) == [True]
    assert take(dynamodb, "acme", 4) == [True, True, True, False]  # batch reaches 3 of acme's 5
    assert take(dynamodb, "initech", 1) == [True]
    # WHEN only the top 1 is asked for
    (crm,), tenants = tenant_rows(dynamodb, deployment, {"downstreams/crm": stored(CRM)}, NOW, top=1)
    # THEN only the most backed up is listed, and the others are counted
    assert [(row.tenant, row.backlog_sec, row.state) for row in tenants] == [
        ("acme", pytest.approx(0.6), "batch held back")]
    assert (crm.tenants_seen, crm.tenants_left_out) == (3, 2)
    with pytest.raises(ValueError, match="top must be at least 1 tenant per downstream, got 0"):
        tenant_rows(dynamodb, deployment, {}, NOW, top=0)


def test_a_document_the_lambdas_refuse_shows_the_seeds_shares(dynamodb, deployment):
    # GIVEN a stored document whose share is out of range, and a seed without shares
    bad = stored({**CRM, "share_acme": 2})
    seeded = Deployment(**{**deployment.__dict__, "seeds": {bad.name: json.dumps({k: v for k, v in CRM.items()
                                                                                  if not k.startswith("share_")})}})
    # WHEN the tenants are read THEN the shares in force are the seed's (what the Lambdas fall back to)
    (crm,), _ = tenant_rows(dynamodb, seeded, {"downstreams/crm": bad}, NOW)
    assert crm.shares == {}


def test_the_tenant_attribute_prefix_is_the_adapters():
    # The CLI imports only the core; the adapter writes the attribute the CLI reads.
    assert names.LIMITER_TENANT_TAT_PREFIX == dynamodb_rate_limiter.TENANT_TAT_PREFIX


def test_collect_status_carries_the_tenants(dynamodb, deployment):
    take(dynamodb, "acme", 2)

    class NoQueues:
        def get_queue_attributes(self, **_: Any) -> Any:
            raise AssertionError("no queue to read")

    status = collect_status(dynamodb, NoQueues(), deployment, {"downstreams/crm": stored(CRM)}, NOW, top_tenants=5)
    assert [(t.tenant, t.state) for t in status.tenants] == [("acme", "within its share")]
    assert status.to_dict()["tenant_shares"][0]["shares"] == {"acme": 0.5, "initech": 0.2}
