"""What the cores check about the values callers hand them, defined once.

A JSON document, an SSM parameter or a caller's argument can carry a bool where a number belongs
(`True` is an `int` in Python), a NaN or an infinity: each core refuses them with its own message,
and asks these the same questions.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["clipped", "is_finite_number", "is_int", "is_number", "shown"]


def is_int(value: Any) -> bool:
    """An `int` that is not a `bool`."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An `int` or a `float`, not a `bool` (NaN and the infinities included)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A number that is neither NaN nor infinite."""
    return is_number(value) and math.isfinite(value)


def shown(value: Any, limit: int = 80) -> str:
    """`repr(value)` for an error message, cut to `limit`; never raises.

    Python refuses to make the repr of an integer beyond 4,300 digits, and a 400-digit one helps nobody
    reading a log line: such an integer is described by its size instead.
    """
    if is_int(value) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__}"
    return clipped(text, limit)


def clipped(text: str, limit: int = 200) -> str:
    """`text` cut to `limit` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
