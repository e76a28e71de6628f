"""Orders as the payment workflow takes them, and what the payment gateway's answer to `POST /authorize` means.

Pure: no AWS, no HTTP. The starter (`handlers.start_payment`) and the authorizer
(`handlers.authorize_payment`) parse with `parse_order`, so a malformed order is refused, by field,
before it can start a workflow or reach the gateway.

A decline is an answer, not an error: `interpret_gateway_answer` returns an `Authorization` either
way, and the workflow branches on `authorized`. Only an answer that says neither raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = [
    "DECLINED_TEST_AMOUNTS",
    "Authorization",
    "InvalidOrder",
    "Order",
    "OrderItem",
    "UnreadableGatewayAnswer",
    "execution_name",
    "interpret_gateway_answer",
    "parse_order",
]

EXECUTION_NAME_PREFIX = "order-"
# Step Functions execution names are at most 80 characters; CloudWatch metrics and logs accept only
# these characters in them. The prefix takes 6, which leaves 74 for the order id.
# Used with fullmatch: `$` would also match before a trailing newline ("ord-1\n").
_ORDER_ID = re.compile(r"[A-Za-z0-9_-]{1,74}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_SKU = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
MAX_AMOUNT = Decimal("1000000.00")
# Money is a decimal string with exactly two decimals, from 0.01 to 1000000.00 ("19.99", as PayPal's
# API takes it), never a JSON number: a validator doing binary floating point refuses 19.99 as a
# multiple of 0.01, and a float cannot say 0.07. A string checked by its pattern is exact in every
# validator, and one canonical spelling per amount makes a repeated order the same bytes (Step
# Functions' and the authorizer's idempotency compare them). The API's model has the same pattern.
_AMOUNT = re.compile(r"(0\.(0[1-9]|[1-9][0-9])|[1-9][0-9]{0,5}\.[0-9]{2}|1000000\.00)")
MAX_QUANTITY = 10_000
MAX_ITEMS = 100

# A sandbox gateway declines by amount: Braintree's sandbox, for one, declines every amount from
# 2000.00 to 2999.99. The simulator standing in for the gateway acknowledges each request without a
# decision, and an acknowledgement is read by that convention. [low, high).
DECLINED_TEST_AMOUNTS = (Decimal("2000.00"), Decimal("3000.00"))
TEST_DECLINE_REASON = "processor_declined"


class InvalidOrder(ValueError):
    """The order cannot be taken as it is; the message names the field and the bad value."""


class UnreadableGatewayAnswer(ValueError):
    """The gateway answered 2xx with something that is neither a decision nor an acknowledgement."""


@dataclass(frozen=True)
class OrderItem:
    sku: str
    quantity: int


@dataclass(frozen=True)
class Order:
    """One order; `amount` is a Decimal read from its two-decimal string, so no float rounding reaches the gateway."""

    order_id: str
    customer_id: str
    amount: Decimal
    currency: str
    items: tuple[OrderItem, ...]

    def gateway_request(self) -> dict[str, str]:
        """The body of `POST /authorize`: the amount as a decimal string, as payment APIs take it."""
        return {"order_id": self.order_id, "customer_id": self.customer_id, "amount": str(self.amount),
                "currency": self.currency}

    def to_input(self) -> dict[str, Any]:
        """The workflow's input: the order's own fields in a stable shape, so a duplicate start sends the same bytes."""
        return {
            "order_id": self.order_id,
            "customer_id": self.customer_id,
            "amount": str(self.amount),
            "currency": self.currency,
            "items": [{"sku": item.sku, "quantity": item.quantity} for item in self.items],
        }


@dataclass(frozen=True)
class Authorization:
    """The gateway's decision on one order."""

    authorized: bool
    authorization_id: str | None = None
    decline_reason: str | None = None

    def to_answer(self, order_id: str) -> dict[str, Any]:
        """The authorizer's answer; every key is always present, so a workflow can select them without a guard."""
        return {"order_id": order_id, "authorized": self.authorized, "authorization_id": self.authorization_id,
                "decline_reason": self.decline_reason}


def execution_name(order_id: str) -> str:
    """The one execution name an order may have: a second start with it is refused by Step Functions."""
    if not isinstance(order_id, str) or not _ORDER_ID.fullmatch(order_id):
        raise InvalidOrder(f"order_id must be 1-74 characters of A-Z, a-z, 0-9, '_' or '-', got {order_id!r}")
    return f"{EXECUTION_NAME_PREFIX}{order_id}"


def parse_order(raw: Any) -> Order:
    """Validate an order `{"order_id", "customer_id", "amount", "currency", "items": [{"sku", "quantity"}]}`.

    Unknown keys are ignored (the workflow adds its own as it goes); a missing or bad field raises
    `InvalidOrder` naming it.
    """
    if not isinstance(raw, Mapping):
        raise InvalidOrder(f"an order must be a JSON object, got {type(raw).__name__}")
    order_id = raw.get("order_id")
    execution_name(order_id)  # validates the id
    customer_id = raw.get("customer_id")
    if not isinstance(customer_id, str) or not customer_id.strip() or len(customer_id) > 128:
        raise InvalidOrder(f"customer_id must be a non-empty string of at most 128 characters, got {customer_id!r}")
    amount = _amount(raw.get("amount"))
    currency = raw.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise InvalidOrder(f"currency must be an ISO 4217 code such as 'EUR', got {currency!r}")
    items = raw.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        raise InvalidOrder(f"items must be a list of 1 to {MAX_ITEMS} {{sku, quantity}} objects, got {items!r}")
    return Order(order_id, customer_id, amount, currency, tuple(_item(i, item) for i, item in enumerate(items)))


def interpret_gateway_answer(answer: Any, order: Order) -> Authorization:
    """What a 2xx answer to `POST /authorize` decided.

    - A decision (`{"status": "authorized", "authorization_id"}` or `{"status": "declined",
      "decline_reason"}`) is taken as it is.
    - An acknowledgement without a decision (`{"request_id", ...}`, what the simulator and some
      sandboxes send) is read by the sandbox convention: declined for an amount in
      `DECLINED_TEST_AMOUNTS`, otherwise authorized under the gateway's request id.
    """
    if not isinstance(answer, Mapping):
        raise UnreadableGatewayAnswer(f"expected a JSON object from POST /authorize, got {answer!r:.200}")
    status = answer.get("status")
    if status == "authorized" and isinstance(answer.get("authorization_id"), str):
        return Authorization(True, authorization_id=answer["authorization_id"])
    if status == "declined":
        return Authorization(False, decline_reason=str(answer.get("decline_reason") or "declined"))
    if status is None and isinstance(answer.get("request_id"), str):
        low, high = DECLINED_TEST_AMOUNTS
        if low <= order.amount < high:
            return Authorization(False, decline_reason=TEST_DECLINE_REASON)
        return Authorization(True, authorization_id=answer["request_id"])
    raise UnreadableGatewayAnswer(
        f"POST /authorize answered neither a decision nor an acknowledgement: {answer!r:.200}")


def _amount(value: Any) -> Decimal:
    if not isinstance(value, str) or not _AMOUNT.fullmatch(value):
        raise InvalidOrder(f"amount must be a decimal string with two decimals from \"0.01\" to \"{MAX_AMOUNT}\","
                           f" such as \"19.99\", got {value!r}")
    return Decimal(value)


def _item(index: int, raw: Any) -> OrderItem:
    if not isinstance(raw, Mapping):
        raise InvalidOrder(f"items[{index}] must be an object {{sku, quantity}}, got {raw!r}")
    sku, quantity = raw.get("sku"), raw.get("quantity")
    if not isinstance(sku, str) or not _SKU.fullmatch(sku):
        raise InvalidOrder(
            f"items[{index}].sku must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':' or '-', got {sku!r}")
    # A zero or negative quantity would turn the workflow's stock decrement into an increment.
    if isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidOrder(f"items[{index}].quantity must be a whole number from 1 to {MAX_QUANTITY}, got {quantity!r}")
    return OrderItem(sku, quantity)
