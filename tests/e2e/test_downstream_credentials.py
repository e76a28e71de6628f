"""Authenticated downstreams end to end: the deployed callers read their credentials from Secrets Manager.

The ledger takes an API key (`x-api-key`) and the messaging provider OAuth2 client credentials (`auth` in
cdk.json); their simulators answer 401 to a request without the credential they issued. The stack created
each secret; the `deployed` fixture put the issued credential in it, as an operator does. Each test says
what becomes of the requests and orders it makes, and the last one that no credential reached a log.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from localcloud.drivers.common import layer_stack, record_statuses
from localcloud.drivers.credentials import credentials_secret_arn, issued_credential, put_credential
from localcloud.drivers.payments import follow_up_requests, payment_orders, read_stock, seed_inventory
from tests.e2e.test_payment_workflow import authorizations_by_order, run_orders

pytestmark = pytest.mark.emulator

STOCK = 50
WRONG_KEY = "a-key-the-ledger-never-issued-Xy7"
ROTATED_KEY = "ledger-rotated-api-key-Qm42"


@pytest.fixture
def ledger(fresh_simulators):
    return fresh_simulators["ledger"]


@pytest.fixture
def messaging(fresh_simulators):
    return fresh_simulators["messaging"]


@pytest.fixture
def ledger_secret(cloud, deployed, ledger) -> Iterator[str]:
    """The ledger's secret; afterwards it holds the issued key again and no environment remembers another."""
    arn = credentials_secret_arn(deployed, "ledger")
    assert arn is not None
    yield arn
    ledger.reset()
    put_credential(cloud, arn, issued_credential(ledger.profile))
    cloud.lambda_runtime.shutdown()


def caller_name(deployed, downstream: str) -> str:
    return layer_stack(deployed, "Workflows").outputs[f"{downstream.title()}CallerName"]


def invoke(cloud, function_name: str, event: dict) -> tuple[dict, str | None]:
    response = cloud.client("lambda").invoke(FunctionName=function_name, Payload=json.dumps(event))
    return json.loads(response["Payload"].read()), response.get("FunctionError")


def test_a_wrong_secret_fails_the_order_with_the_reason_and_loses_nothing(cloud, deployed, payments, gateway, ledger,
                                                                           ledger_secret):
    # GIVEN the ledger's secret holding a key the ledger never issued, read by environments started afresh
    put_credential(cloud, ledger_secret, {"api_key": WRONG_KEY})
    cloud.lambda_runtime.shutdown()
    sku = f"sku-{uuid.uuid4().hex[:8]}"
    seed_inventory(cloud, payments["inventory_table"], {sku: STOCK})
    (order,) = payment_orders(1, skus=(sku,))
    # WHEN the order is placed
    (result,) = run_orders(cloud, payments, [order]).values()
    # THEN the ledger refused the key twice (the second time after the secret was read again) and wrote nothing
    assert follow_up_requests(ledger, order["order_id"]) == [("/ledger/entries", 401), ("/ledger/entries", 401)]
    # AND the execution took its failure path, the order cancelled with the reason: the ledger's credentials
    assert (result.status, result.error) == ("FAILED", "PaymentFailed"), (result.error, result.cause)
    item = record_statuses(cloud, payments["orders_table"], [order["order_id"]])[order["order_id"]]
    assert (item["status"], item["cancel_reason"]) == ("cancelled", "follow_up_failed:ledger:DownstreamUnauthorized")
    # AND nothing was lost or charged: the stock is back, one authorization voided
    assert read_stock(cloud, payments["inventory_table"], [sku]) == {sku: STOCK}
    assert authorizations_by_order(gateway) == Counter({order["order_id"]: 1})
    assert [r.path for r in gateway.requests] == ["/authorize", "/void"]


def test_the_caller_says_which_secret_to_fix_when_the_downstream_refuses_it(cloud, deployed, ledger, ledger_secret):
    # GIVEN the wrong key in the ledger's secret, read by an environment started afresh
    put_credential(cloud, ledger_secret, {"api_key": WRONG_KEY})
    cloud.lambda_runtime.shutdown()
    # WHEN the ledger's caller is invoked
    answer, error = invoke(cloud, caller_name(deployed, "ledger"), {"method": "POST", "path": "/ledger/entries",
                                                                   "body": {"kind": "probe"}})
    # THEN it fails as DownstreamUnauthorized, naming the secret and the command that fixes it, never the key
    assert error is not None and answer["errorType"] == "DownstreamUnauthorized", answer
    details = json.loads(answer["errorMessage"])
    assert details["secret_id"] == ledger_secret and details["status"] == 401
    assert f"aws secretsmanager put-secret-value --secret-id {ledger_secret}" in details["reason"]
    assert WRONG_KEY not in answer["errorMessage"]


def test_a_rotated_key_is_picked_up_by_the_refresh_a_401_triggers(cloud, deployed, ledger, ledger_secret):
    caller = caller_name(deployed, "ledger")
    # GIVEN a warm ledger caller that has read the issued key (cached for secret_cache_sec, 300 s)
    assert invoke(cloud, caller, {"method": "POST", "path": "/ledger/entries", "correlation_id": "before"})[1] is None
    # WHEN the ledger rotates the key (the old one refused from now on) and the operator puts the new one
    ledger.set_profile(ledger.profile.merged_with({"api_key": ROTATED_KEY}))
    put_credential(cloud, ledger_secret, {"api_key": ROTATED_KEY})
    answer, error = invoke(cloud, caller, {"method": "POST", "path": "/ledger/entries", "correlation_id": "after"})
    # THEN the call succeeds: the cached key got a 401, the secret was read again and the call made once more
    assert error is None and answer["status"] == 200, answer
    assert follow_up_requests(ledger, "after") == [("/ledger/entries", 401), ("/ledger/entries", 200)]
    # AND the next call uses the new key at once, with no 401
    invoke(cloud, caller, {"method": "POST", "path": "/ledger/entries", "correlation_id": "later"})
    assert follow_up_requests(ledger, "later") == [("/ledger/entries", 200)]


def test_an_oauth2_token_serves_every_call_until_it_expires(cloud, deployed, messaging):
    # GIVEN a messaging provider whose tokens live 3 s, and a caller environment started afresh
    messaging.set_profile(messaging.profile.merged_with({"token_ttl_sec": 3}))
    cloud.lambda_runtime.shutdown()
    caller = caller_name(deployed, "messaging")
    try:
        # WHEN the caller sends 4 messages one after the other
        for i in range(4):
            assert invoke(cloud, caller, {"method": "POST", "path": "/messages", "correlation_id": f"m{i}"})[1] is None
        # THEN one token served them all
        assert messaging.stats()["tokens_issued"] == 1
        # WHEN the token's life has passed (less the margin the caller renews it by)
        time.sleep(3)
        assert invoke(cloud, caller, {"method": "POST", "path": "/messages", "correlation_id": "m4"})[1] is None
        # THEN a new token was fetched before the call, so the provider never had to refuse one
        assert messaging.stats()["tokens_issued"] == 2
        assert {status for _, status in (follow_up_requests(messaging, f"m{i}")[0] for i in range(5))} == {200}
        assert 401 not in messaging.stats()["by_status"]
    finally:
        cloud.lambda_runtime.shutdown()  # no environment keeps a 3 s token for the next test


def test_no_credential_ever_reaches_a_log(cloud, deployed, fresh_simulators):
    # GIVEN every credential the tests above used or were issued: keys, the client secret and the access tokens
    ledger, messaging = fresh_simulators["ledger"], fresh_simulators["messaging"]
    credentials = {WRONG_KEY, ROTATED_KEY, ledger.profile.api_key, messaging.profile.oauth_client_secret,
                   *messaging.access_tokens}
    assert messaging.access_tokens, "the OAuth2 test above ran and was issued tokens"
    # WHEN every log of the deployed functions is read (each function's log file, every environment's output)
    logs = [path.read_text() for path in (cloud.lambda_runtime.work_dir / "logs").glob("*.log")]
    assert any("downstream answered" in log for log in logs)
    # THEN none of them holds a credential
    leaked = {credential for credential in credentials for log in logs if credential in log}
    assert leaked == set()


def test_the_demo_line(cloud, deployed, fresh_simulators):
    from localcloud.demo import run_credentials

    line = run_credentials(cloud, deployed, fresh_simulators, messages=5)
    assert line == ("authenticated downstreams: 5 messages on 1 OAuth2 token (0 refused); the ledger's API key rotated"
                    " under a warm caller: 401 then 200 (the secret read again once); 0 credentials in the logs"), line
