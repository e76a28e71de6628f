"""What the cores check about the values callers hand them, defined once.

A JSON document, an SSM parameter or a caller's argument can carry a bool where a number belongs
(`True` is an `int` in Python), a NaN or an infinity: each core refuses them with its own message,
and asks these the same questions.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["is_finite_number", "is_int", "is_number"]


def is_int(value: Any) -> bool:
    """An `int` that is not a `bool`."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An `int` or a `float`, not a `bool` (NaN and the infinities included)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A number that is neither NaN nor infinite."""
    return is_number(value) and math.isfinite(value)
