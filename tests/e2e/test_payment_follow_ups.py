"""Use case 2's follow-ups end to end: after the authorization, a Parallel tells the warehouse, confirms to the
customer and writes the ledger, each branch through its own downstream's caller and shared limiter.

Each follow-up's downstream is a simulator (`warehouse`, `messaging`, `ledger`) recording every request with
the order id as its correlation id, so the tests count, per order, what each third party received: one
request per follow-up when all goes well, retries only in the branch that was refused, and the undo of
exactly the follow-ups that were done when another failed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest

from localcloud.demo import run_payment_follow_ups
from localcloud.drivers.common import drain_queue, record_statuses
from localcloud.drivers.payments import (
    FOLLOW_UPS,
    follow_up_requests,
    payment_orders,
    read_stock,
    seed_inventory,
)
from tests.e2e.test_payment_workflow import authorizations_by_order, run_orders

pytestmark = pytest.mark.emulator

STOCK = 100


@pytest.fixture
def sku(cloud, payments) -> str:
    name = f"sku-{uuid.uuid4().hex[:8]}"
    seed_inventory(cloud, payments["inventory_table"], {name: STOCK})
    return name


@pytest.fixture
def follow_up_simulators(fresh_simulators):
    return {name: fresh_simulators[name] for name in FOLLOW_UPS}


def test_every_follow_up_runs_once_per_order_and_the_order_is_paid(cloud, payments, gateway, sku,
                                                                    follow_up_simulators):
    # GIVEN 8 orders placed at once
    orders = payment_orders(8, skus=(sku,))
    # WHEN their workflows run
    results = run_orders(cloud, payments, orders)
    # THEN every order is paid, and its output names the three follow-ups done, from the branches' own outcomes
    assert {r.status for r in results.values()} == {"SUCCEEDED"}, [(r.error, r.cause) for r in results.values()]
    for order in orders:
        output = results[order["order_id"]].output
        assert output["status"] == "paid"
        assert output["follow_ups"] == ["inventory", "confirmation", "ledger"]
    assert {i["status"] for i in record_statuses(cloud, payments["orders_table"],
                                                 [o["order_id"] for o in orders]).values()} == {"paid"}
    # AND each follow-up's downstream received exactly one request per order, answered 200, under the
    # order's own Idempotency-Key, and none of them had to answer 429
    paths = {"warehouse": "/inventory/reservations", "messaging": "/messages", "ledger": "/ledger/entries"}
    for name, simulator in follow_up_simulators.items():
        for order in orders:
            assert follow_up_requests(simulator, order["order_id"]) == [(paths[name], 200)], name
        assert 429 not in simulator.stats()["by_status"], (name, simulator.stats())
    (entry,) = [r for r in follow_up_simulators["ledger"].requests
                if r.headers["X-Correlation-Id"] == orders[0]["order_id"]]
    assert entry.headers["Idempotency-Key"] == f"ledger-{orders[0]['order_id']}"
    assert entry.body["amount"] == orders[0]["amount"] and entry.body["kind"] == "authorization"
    (message,) = [r for r in follow_up_simulators["messaging"].requests
                  if r.headers["X-Correlation-Id"] == orders[0]["order_id"]]
    assert message.body["customer_id"] == orders[0]["customer_id"]
    # AND the gateway authorized each order once
    assert authorizations_by_order(gateway) == Counter({o["order_id"]: 1 for o in orders})


def test_a_follow_up_that_fails_for_good_is_compensated_and_nothing_is_charged_twice(
    cloud, payments, gateway, sku, follow_up_simulators, notifications
):
    # GIVEN the ledger down for good (every request answered 503)
    ledger = follow_up_simulators["ledger"]
    ledger.set_profile(ledger.profile.merged_with({"outage_windows_sec": [(0, 24 * 3600)]}))
    (order,) = payment_orders(1, skus=(sku,))
    order["items"] = [{"sku": sku, "quantity": 3}]
    # WHEN the order is placed
    (result,) = run_orders(cloud, payments, [order]).values()
    # THEN the workflow ends in PaymentFailed after the compensation, naming the ledger as the follow-up not done
    assert (result.status, result.error) == ("FAILED", "PaymentFailed"), (result.error, result.cause)
    item = record_statuses(cloud, payments["orders_table"], [order["order_id"]])[order["order_id"]]
    assert (item["status"], item["failure"], item["cancel_reason"]) == ("cancelled", "PaymentFailed",
                                                                        "follow_up_failed:ledger:DownstreamUnavailable")
    # AND the ledger was retried (each a 503) and never wrote, so there is nothing to reverse there
    ledger_requests = follow_up_requests(ledger, order["order_id"])
    assert len(ledger_requests) == 5 and {status for _, status in ledger_requests} == {503}, ledger_requests
    # AND the follow-ups that were done are undone by their own downstream: the warehouse releases what it
    # was told; the confirmation sent stays sent, and the cancellation notice follows it
    assert follow_up_requests(follow_up_simulators["warehouse"], order["order_id"]) == [
        ("/inventory/reservations", 200), ("/inventory/releases", 200)]
    assert follow_up_requests(follow_up_simulators["messaging"], order["order_id"]) == [("/messages", 200)]
    (notice,) = drain_queue(cloud, notifications)
    assert (notice["event"], notice["reason"]) == ("OrderCancelled", "follow_up_failed:ledger:DownstreamUnavailable")
    # AND the stock is back, and the gateway authorized once and voided once: nothing lost, nothing charged twice
    assert read_stock(cloud, payments["inventory_table"], [sku]) == {sku: STOCK}
    assert [(r.path, r.status) for r in gateway.requests] == [("/authorize", 200), ("/void", 200)]
    assert authorizations_by_order(gateway) == Counter({order["order_id"]: 1})


def test_a_throttled_follow_up_retries_alone_without_redoing_the_others(cloud, payments, gateway, sku,
                                                                         follow_up_simulators):
    # GIVEN a ledger that admits one request every 2 s, and another client of it taking every token as it comes
    # back until our order's ledger call has been answered 429 (however long the order takes to get there)
    ledger = follow_up_simulators["ledger"]
    ledger.set_profile(ledger.profile.merged_with({"rate_per_sec": 0.5, "burst": 1}))
    another_client = {"X-Correlation-Id": "another-client", ledger.profile.api_key_header: ledger.profile.api_key}
    (order,) = payment_orders(1, skus=(sku,))
    refused = threading.Event()

    def another_client_takes_every_token() -> None:
        while not refused.is_set():
            if any(status == 429 for _, status in follow_up_requests(ledger, order["order_id"])):
                refused.set()
                return
            ledger.handle("POST", "/ledger/entries", another_client, b"{}")
            time.sleep(0.02)

    neighbour = threading.Thread(target=another_client_takes_every_token, daemon=True)
    neighbour.start()
    # WHEN the order is placed
    try:
        (result,) = run_orders(cloud, payments, [order]).values()
    finally:
        refused.set()
        neighbour.join(timeout=10)
    # THEN it is paid with every follow-up done
    assert (result.status, result.output["status"]) == ("SUCCEEDED", "paid"), (result.error, result.cause)
    assert result.output["follow_ups"] == ["inventory", "confirmation", "ledger"]
    # AND only the ledger's branch retried: it was refused at least once and wrote once
    ledger_statuses = Counter(status for _, status in follow_up_requests(ledger, order["order_id"]))
    assert ledger_statuses[429] >= 1 and ledger_statuses[200] == 1, ledger_statuses
    # AND the warehouse and the messaging provider were called once each: the other branches were not redone
    assert follow_up_requests(follow_up_simulators["warehouse"], order["order_id"]) == [
        ("/inventory/reservations", 200)]
    assert follow_up_requests(follow_up_simulators["messaging"], order["order_id"]) == [("/messages", 200)]
    assert authorizations_by_order(gateway) == Counter({order["order_id"]: 1})


def test_the_demo_line(cloud, deployed, fresh_simulators):
    line = run_payment_follow_ups(cloud, deployed, fresh_simulators, orders=4)
    assert line.startswith("payment follow-ups: 4 orders, 4 paid after inventory, confirmation and ledger in"
                           " parallel (peak "), line
    assert line.endswith("; with the ledger down, 1 order cancelled: warehouse released, confirmation kept,"
                         " authorized 1 and voided 1 at the gateway"), line
