"""The payment domain without AWS: which orders are taken, their one execution name, and what the gateway decided."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.orders import (
    DECLINED_TEST_AMOUNTS,
    Authorization,
    InvalidOrder,
    UnreadableGatewayAnswer,
    execution_name,
    interpret_gateway_answer,
    parse_order,
)


def an_order(**changes):
    order = {"order_id": "o-1", "customer_id": "c-1", "amount": "12.50", "currency": "EUR",
             "items": [{"sku": "sku-1", "quantity": 2}]}
    return {**order, **changes}


def test_an_order_is_parsed_with_a_decimal_amount_and_its_items():
    order = parse_order(an_order(amount="19.99", extra="ignored"))
    assert (order.order_id, order.amount, order.currency) == ("o-1", Decimal("19.99"), "EUR")
    assert [(i.sku, i.quantity) for i in order.items] == [("sku-1", 2)]
    assert order.gateway_request() == {"order_id": "o-1", "customer_id": "c-1", "amount": "19.99", "currency": "EUR"}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"order_id": "has space"}, "order_id must be 1-74 characters"),
        ({"order_id": "x" * 75}, "order_id must be 1-74 characters"),
        ({"customer_id": " "}, "customer_id must be a non-empty string"),
        ({"amount": "0.00"}, "amount must be a decimal string with two decimals"),
        ({"amount": "1000000.01"}, "amount must be a decimal string with two decimals"),
        ({"amount": "1.005"}, "amount must be a decimal string with two decimals"),
        ({"amount": "19.9"}, "amount must be a decimal string with two decimals"),
        ({"amount": "19.99\n"}, "amount must be a decimal string with two decimals"),
        ({"amount": 19.99}, "such as \"19.99\", got 19.99"),
        ({"amount": True}, "amount must be a decimal string"),
        ({"amount": "NaN"}, "amount must be a decimal string"),
        ({"currency": "eur"}, "currency must be an ISO 4217 code"),
        ({"items": []}, "items must be a list of 1 to 100"),
        ({"items": [{"sku": "s", "quantity": 0}]}, r"items\[0\].quantity must be a whole number"),
        ({"items": [{"sku": "s", "quantity": -1}]}, r"items\[0\].quantity must be a whole number"),
        ({"items": [{"sku": "", "quantity": 1}]}, r"items\[0\].sku must be"),
        # `$` in a Python pattern also matches before a final newline: each field is matched whole
        ({"order_id": "o-1\n"}, "order_id must be 1-74 characters"),
        ({"currency": "EUR\n"}, "currency must be an ISO 4217 code"),
        ({"items": [{"sku": "sku-1\n", "quantity": 1}]}, r"items\[0\].sku must be"),
        ({"order_id": "o-\u0661"}, "order_id must be 1-74 characters"),
    ],
)
def test_a_bad_field_is_refused_by_name_with_its_value(changes, message):
    with pytest.raises(InvalidOrder, match=message):
        parse_order(an_order(**changes))


def test_an_order_has_one_execution_name_within_step_functions_limits():
    assert execution_name("o-1") == "order-o-1"
    assert len(execution_name("x" * 74)) == 80


@given(
    order_id=st.from_regex(r"[A-Za-z0-9_-]{1,74}", fullmatch=True),
    cents=st.integers(min_value=1, max_value=100_000_000),
    quantities=st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=5),
)
def test_the_workflow_input_parses_back_to_the_same_order(order_id, cents, quantities):
    # GIVEN any valid order WHEN it is turned into the workflow's input and parsed again THEN nothing changed
    order = parse_order(an_order(order_id=order_id, amount=f"{cents // 100}.{cents % 100:02d}",
                                 items=[{"sku": f"s{i}", "quantity": q} for i, q in enumerate(quantities)]))
    assert parse_order(order.to_input()) == order


def test_a_gateway_decision_is_taken_as_it_is():
    order = parse_order(an_order(amount="2500.00"))  # a test-decline amount does not override a real decision
    assert interpret_gateway_answer({"status": "authorized", "authorization_id": "a-1"}, order) == Authorization(
        True, authorization_id="a-1")
    declined = interpret_gateway_answer({"status": "declined", "decline_reason": "insufficient_funds"},
                                        parse_order(an_order()))
    assert declined == Authorization(False, decline_reason="insufficient_funds")


@pytest.mark.parametrize(
    ("amount", "authorized"),
    [("12.50", True), ("1999.99", True), ("2000.00", False), ("2999.99", False), ("3000.00", True)],
)
def test_an_acknowledgement_is_read_by_the_sandbox_amounts(amount, authorized):
    # GIVEN the simulator's answer: its request id and the request echoed, no decision
    answer = {"method": "POST", "path": "/authorize", "request_id": "req-000042", "body": {}}
    # WHEN it is interpreted for an order of `amount`
    result = interpret_gateway_answer(answer, parse_order(an_order(amount=amount)))
    # THEN only amounts in the test-decline range are declined; the others are authorized under the request id
    assert DECLINED_TEST_AMOUNTS == (Decimal("2000.00"), Decimal("3000.00"))
    if authorized:
        assert result == Authorization(True, authorization_id="req-000042")
    else:
        assert result == Authorization(False, decline_reason="processor_declined")


def test_an_answer_that_says_nothing_is_an_error_not_a_decision():
    with pytest.raises(UnreadableGatewayAnswer, match="neither a decision nor an acknowledgement"):
        interpret_gateway_answer({"ok": True}, parse_order(an_order()))
    with pytest.raises(UnreadableGatewayAnswer, match="expected a JSON object"):
        interpret_gateway_answer("OK", parse_order(an_order()))


def test_the_answer_always_has_every_key():
    assert Authorization(False, decline_reason="x").to_answer("o-1") == {
        "order_id": "o-1", "authorized": False, "authorization_id": None, "decline_reason": "x"}
