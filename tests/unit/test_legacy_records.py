"""The legacy mainframe's record contract: what a message body must hold, and why a body is poison."""

from __future__ import annotations

import json

import pytest

from legacy import records


def test_a_record_is_an_object_with_a_record_id():
    record = records.parse_record('{"record_id": "r-1", "payload": {"amount": 5}}')
    assert (record.record_id, record.payload) == ("r-1", {"amount": 5})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{not json", "the body is not JSON"),
        ("", "the body is not JSON"),
        ('["r-1"]', "must be a JSON object with a record_id, got list"),
        ('{"payload": 1}', "record_id must be 1-128 characters of A-Z, a-z, 0-9, '_', '.', ':' or '-'"),
        ('{"record_id": "  "}', "(it is the mainframe's Idempotency-Key), got '  '"),
        ('{"record_id": 7}', "(it is the mainframe's Idempotency-Key), got 7"),
        # What the mainframe's contract cannot carry: refused here, before a token is taken
        ('{"record_id": "r-1\\n", "payload": {}}', "got 'r-1\\n'"),
        ('{"record_id": "r-\\n1", "payload": {}}', "record_id must be 1-128 characters"),
        ('{"record_id": "r-\\ud83d\\ude00", "payload": {}}', "record_id must be 1-128 characters"),
        (json.dumps({"record_id": "x" * 129, "payload": {}}), "record_id must be 1-128 characters"),
        ('{"record_id": "r-1", "payload": ' + "[" * 2000 + "]" * 2000 + "}", "the body nests 2001 levels deep"),
        ('{"record_id": "r-1", "payload": ' + '{"a":' * 9 + "1" + "}" * 9 + "}", "the body nests 10 levels deep"),
        ('{"record_id": "r-1", "payload": {"amount": NaN}}', "the body holds NaN, which is not a JSON number"),
        ('{"record_id": "r-1", "payload": {"amount": -Infinity}}', "the body holds -Infinity"),
        ('{"record_id": "r-1", "payload": {"note": "\\ud800"}}', "the payload holds text that is not Unicode"),
        ('{"record_id": "r-1", "payload": {"\\udfff": 1}}', "the payload holds text that is not Unicode"),
    ],
    ids=lambda value: value[:40] if isinstance(value, str) else None,
)
def test_a_body_that_is_not_a_record_is_poison(body, reason):
    with pytest.raises(records.PoisonRecord) as poison:
        records.parse_record(body)
    assert reason in str(poison.value)
    assert len(str(poison.value)) < 400


def test_a_payload_as_deep_as_the_contract_allows_is_a_record():
    # GIVEN a payload nesting objects and arrays exactly MAX_PAYLOAD_DEPTH levels deep
    payload: object = 1
    for level in range(records.MAX_PAYLOAD_DEPTH - 1):
        payload = [payload] if level % 2 else {"a": payload}
    body = json.dumps({"record_id": "R:1.2_3-4", "payload": {"deep": payload, "text": "caf\u00e9 \U0001F600"}})
    # THEN it is a record, unchanged
    assert records.parse_record(body).payload == {"deep": payload, "text": "caf\u00e9 \U0001F600"}


def test_a_message_s_tenant_is_its_group_or_else_the_default_tenant():
    from legacy.records import tenant_of
    from throttling.core import names

    # GIVEN a message the API queued (its group is the API key's client) and one sent without a group
    # THEN the first is its client's, the second the default tenant's: never unlimited, never an error
    assert tenant_of("example-partner-client") == "example-partner-client"
    assert tenant_of(None) == tenant_of("") == names.DEFAULT_TENANT
