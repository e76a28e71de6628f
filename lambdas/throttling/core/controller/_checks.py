"""Validation and formatting helpers shared by the controller's modules (numbers in, readable errors out)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from throttling.core.validation import is_finite_number, is_int


def require_non_negative(name: str, value: Any) -> None:
    if not (is_finite_number(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def require_int(name: str, value: Any, low: int) -> None:
    if not is_int(value) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def require_in(name: str, value: Any, low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> None:
    ok = is_finite_number(value) and (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not ok:
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


def require_tolerance(value: Any) -> None:
    if not (is_finite_number(value) and value >= 1):
        raise ValueError(f"rtt_tolerance must be a number >= 1, got {value!r}")


def from_mapping(cls: type, raw: Mapping[str, Any], what: str) -> Any:
    """`cls(**raw)`, refusing a non-object, unknown fields and missing ones with a `ValueError` that names them."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"the {what} must be an object, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown {what} fields {sorted(unknown)}; known: {sorted(known)}")
    try:
        return cls(**raw)
    except TypeError as error:
        raise ValueError(f"the {what} is incomplete: {error}") from None


def num(value: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"


def pct(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"
