"""What the three DynamoDB adapters share: low-level attribute values and the failed-condition protocol.

How their costs count: one write is one conditional write request, and DynamoDB bills a *failed*
conditional write as a write too (1 WCU for items up to 1 KB). A failed condition returns the stored
item (`ReturnValuesOnConditionCheckFailure=ALL_OLD`) at no extra read, which is what keeps the
limiter and the semaphore at zero reads. Each adapter's docstring counts its operations in these units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

CONDITION_FAILED = "ConditionalCheckFailedException"
DAY_SEC = 86_400


def error_code(error: ClientError) -> str | None:
    """The AWS error code of a botocore `ClientError` (None when the answer carried none)."""
    return error.response.get("Error", {}).get("Code")


def failed_condition_item(error: ClientError) -> dict[str, Any] | None:
    """The stored item a failed conditional write returned (None when there was none); re-raise anything else."""
    if error_code(error) != CONDITION_FAILED:
        raise error
    return error.response.get("Item")  # type: ignore[return-value]


def number(value: float | int) -> dict[str, str]:
    """A DynamoDB number that round-trips to the same float (shortest repr, never exponent notation)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"cannot store {value!r} as a DynamoDB number")
    if isinstance(value, int):
        return {"N": str(value)}
    return {"N": format(Decimal(repr(value)), "f")}


def attribute(value: str | int | float) -> dict[str, str]:
    if isinstance(value, str):
        return {"S": value}
    return number(value)


def plain_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """Strings and numbers (as Decimal) of a low-level item; other types are left out (from_item ignores them)."""
    plain: dict[str, Any] = {}
    for key, value in item.items():
        if "S" in value:
            plain[key] = value["S"]
        elif "N" in value:
            plain[key] = Decimal(value["N"])
    return plain


def check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
