"""The legacy records' status store: what an operator reads about each record, written by the consumer."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from legacy.record_status import RecordStatusStore

TABLE = "legacy-records"
DAY_SEC = 86_400


@pytest.fixture
def dynamodb():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
        yield client


def status_of(dynamodb, record_id: str) -> dict:
    return dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": record_id}})["Item"]


def test_a_failure_then_a_delivery_leaves_the_record_delivered_with_its_first_attempt(dynamodb):
    clock = iter([1_000.0, 1_060.0])
    store = RecordStatusStore(TABLE, client=dynamodb, retention_sec=30 * DAY_SEC, clock=lambda: next(clock))
    # GIVEN a record refused once (postponed 4 s), WHEN it is delivered on its second receive
    assert store.failed("r-1", "m-1", 1, "DownstreamThrottled: 429", retry_after_sec=4)
    store.delivered("r-1", "m-1", 2, 200)
    # THEN the item says delivered, keeps when it was first tried, and forgets the refusal
    item = status_of(dynamodb, "r-1")
    assert item["status"] == {"S": "delivered"}
    assert item["first_attempt_at"] == {"S": "1970-01-01T00:16:40.000Z"}
    assert item["delivered_at"] == {"S": "1970-01-01T00:17:40.000Z"}
    assert (item["attempts"], item["downstream_status"]) == ({"N": "2"}, {"N": "200"})
    assert "error" not in item and "retry_after_sec" not in item
    assert item["expires_at"] == {"N": str(1_060 + 30 * DAY_SEC)}


def test_a_delivered_record_is_never_marked_failed_afterwards(dynamodb):
    store = RecordStatusStore(TABLE, client=dynamodb, retention_sec=DAY_SEC, clock=lambda: 5.0)
    # GIVEN a delivered record, WHEN a late copy of it fails
    store.delivered("r-2", "m-2", 1, 201)
    kept = store.failed("r-2", "m-2", 2, "DownstreamUnavailable: 503 " + "x" * 2_000)
    # THEN the store says so and the record stays delivered
    assert kept is False
    assert status_of(dynamodb, "r-2")["status"] == {"S": "delivered"}


def test_a_failure_s_error_is_clipped_to_what_an_operator_reads(dynamodb):
    store = RecordStatusStore(TABLE, client=dynamodb, retention_sec=DAY_SEC, clock=lambda: 5.0)
    assert store.failed("r-3", "m-3", 1, "DownstreamRejected: " + "y" * 5_000)
    assert len(status_of(dynamodb, "r-3")["error"]["S"]) == 1_000


def test_any_other_refusal_reaches_the_caller(dynamodb):
    # GIVEN a table that does not exist, THEN the write's error is the caller's to log
    store = RecordStatusStore("no-such-table", client=dynamodb, retention_sec=DAY_SEC)
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        store.failed("r-4", "m-4", 1, "boom")
