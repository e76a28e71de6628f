"""The payment domain of use case 2: orders, their execution names, and what a gateway's answer means (no AWS)."""

from payments.orders import (
    DECLINED_TEST_AMOUNTS,
    Authorization,
    InvalidOrder,
    Order,
    OrderItem,
    UnreadableGatewayAnswer,
    execution_name,
    interpret_gateway_answer,
    parse_order,
)

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
