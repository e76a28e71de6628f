"""An unanswered authorization is repeated only while the gateway keeps its Idempotency-Key; its note in DynamoDB."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from payments.unanswered import UNANSWERED_RECORD_TTL_SEC, UnansweredAuthorizations, may_repeat_authorization

KEPT_SEC = 23 * 3600
NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("first_unanswered_at", "may"),
    [
        (None, True),  # nothing went unanswered: the usual case
        (NOW - 60, True),  # a retry minutes later: the gateway answers the first authorization
        (NOW - KEPT_SEC + 1, True),
        (NOW - KEPT_SEC, False),  # from here the gateway may have forgotten the key
        (NOW - 3 * 86_400, False),  # a parked order resumed three days later
    ],
)
def test_an_authorization_is_repeated_only_while_the_gateway_keeps_its_key(first_unanswered_at, may):
    assert may_repeat_authorization(first_unanswered_at, NOW, KEPT_SEC) is may


def test_a_retention_that_is_not_a_positive_number_is_refused():
    for bad in (0, -1, True, "86400"):
        with pytest.raises(ValueError, match="key_kept_sec must be a number of seconds > 0"):
            may_repeat_authorization(None, NOW, bad)


@pytest.fixture
def notes():
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        # The idempotency table's layout (tests/infra asserts the deployed one): key `id`, TTL `expiration`.
        client.create_table(TableName="idempotency", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                            BillingMode="PAY_PER_REQUEST")
        yield UnansweredAuthorizations("idempotency", client=client), client


def test_the_first_unanswered_authorization_is_kept_and_expires_after_the_longest_an_order_can_come_back(notes):
    store, client = notes
    # GIVEN nothing noted THEN an order has no unanswered authorization
    assert store.first_at("o-1") is None
    # WHEN two authorizations of the order go unanswered, an hour apart
    store.note("o-1", NOW)
    store.note("o-1", NOW + 3600)
    # THEN the first is kept, so the order never looks younger than it is, and other orders are untouched
    assert store.first_at("o-1") == NOW
    assert store.first_at("o-2") is None
    # AND the item lives beside Powertools' records under a key of its own, with the table's TTL attribute
    (item,) = client.scan(TableName="idempotency")["Items"]
    assert item["id"] == {"S": "authorize_payment.unanswered#o-1"}
    assert int(item["expiration"]["N"]) == int(NOW) + UNANSWERED_RECORD_TTL_SEC
    assert UNANSWERED_RECORD_TTL_SEC >= 28 * 86_400  # 14 days parked, then 14 in the dead-letter queue


def test_a_store_error_other_than_the_kept_first_note_is_raised(notes):
    store, _ = notes
    missing = UnansweredAuthorizations("no-such-table", client=store._client)
    with pytest.raises(Exception, match="ResourceNotFoundException"):
        missing.note("o-1", NOW)
