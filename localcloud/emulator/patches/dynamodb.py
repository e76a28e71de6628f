"""moto's DynamoDB: atomic conditional writes and DynamoDB's 38-digit numbers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from localcloud.emulator.patches.registry import Undo, patch, replace, undo_all


@patch("dynamodb")
def atomic_dynamodb() -> Undo:
    """Serialize whole DynamoDB requests.

    moto limitation: conditional writes are not atomic under concurrency (the condition is checked,
    then the item written, with no lock between), so eight threads taking from a 500-token bucket
    were granted 516. DynamoDB guarantees a conditional `UpdateItem` is atomic per item; one lock
    around each request gives that guarantee (and more, which only costs throughput).
    """
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action
    lock = threading.RLock()

    def call_action(self: Any) -> Any:
        with lock:
            return original(self)

    return replace(DynamoHandler, call_action=call_action)


# DynamoDB's numbers: "up to 38 digits of precision. Exceeding this results in an exception."
DYNAMODB_NUMBER_DIGITS = 38
DYNAMODB_TOO_MANY_DIGITS = "Attempting to store more than 38 significant digits in a Number"


@patch("dynamodb")
def dynamodb_number_precision() -> Undo:
    """Numbers to DynamoDB's 38 significant digits: sums computed at that precision, more refused.

    moto limitation: an `ADD` (and `SET a = b + c`) is computed in Python's default decimal context
    of 28 digits, so a sum DynamoDB keeps exactly is silently rounded, and an item holding a number
    of more than 38 significant digits is stored where DynamoDB refuses it. The fix computes sums
    exactly and refuses, with DynamoDB's ValidationException, a number or a sum beyond 38 digits.
    """
    from decimal import Decimal, localcontext

    from moto.dynamodb.exceptions import MockValidationException
    from moto.dynamodb.models.dynamo_type import DDBType, DynamoType
    from moto.dynamodb.models.table import Table

    originals = (DynamoType.__add__, DynamoType.__sub__, Table._validate_number_type)

    def within_precision(text: str) -> str:
        # Significant digits of the exact value (normalize() would round to the context's precision first)
        digits = "".join(map(str, Decimal(text).as_tuple().digits)).strip("0")
        if len(digits) > DYNAMODB_NUMBER_DIGITS:
            raise MockValidationException(DYNAMODB_TOO_MANY_DIGITS)
        return text

    def arithmetic(sign: int) -> Callable[[Any, Any], Any]:
        original = originals[0] if sign > 0 else originals[1]

        def operate(self: Any, other: Any) -> Any:
            if self.type != DDBType.NUMBER or other.type != DDBType.NUMBER:
                return original(self, other)
            with localcontext() as context:
                context.prec = 2 * DYNAMODB_NUMBER_DIGITS + 300  # exact for any two DynamoDB numbers
                total = Decimal(self.value) + sign * Decimal(other.value)
            return DynamoType({DDBType.NUMBER: within_precision(format(total, "f"))})

        return operate

    def validate_number_type(self: Any, value: Any) -> None:
        originals[2](self, value)
        if isinstance(value, str):
            within_precision(value)

    add, sub = arithmetic(+1), arithmetic(-1)
    return undo_all(
        replace(DynamoType, __add__=add, __sub__=sub),
        replace(Table, _validate_number_type=validate_number_type),
    )
