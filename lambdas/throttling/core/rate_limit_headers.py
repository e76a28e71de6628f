"""Read what a downstream's response headers say about its rate limit, whatever dialect it speaks.

Understood, with header names case-insensitive:
- `Retry-After`: delta seconds or an HTTP-date (RFC 9110); a date in the past means wait 0.
- `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (GitHub, Twitter and many more).
- The IETF RateLimit drafts: the early separate fields `RateLimit-Limit`, `RateLimit-Remaining`,
  `RateLimit-Reset`; the structured-field `RateLimit` as a dictionary (`limit=10, remaining=0,
  reset=5`) or as a list of policy items (`"default";r=0;t=5`); and `RateLimit-Policy`
  (`10;w=1` or `"default";q=100;w=10`).

Reset values are ambiguous in the wild: above `EPOCH_SECONDS_THRESHOLD` (10**9, September 2001)
a value is an epoch timestamp, since nobody means a 31-year delay; above
`EPOCH_MILLISECONDS_THRESHOLD` (10**11, year 5138 in seconds) it is epoch milliseconds. A reset
only counts as a wait when the same header says nothing is remaining (or does not say).

A published rate (`RateLimitInfo.published_per_sec`, requests per second) is offered only where
one item states both its quota and its window (`w=`): `RateLimit-Policy: 10;w=1`, `"default";q=100;w=10`,
a structured `RateLimit` item with `q` and `w`, the early drafts' `RateLimit-Limit: 10, 10;w=1`. A
limit alone gives none: `X-RateLimit-Limit: 5000` is GitHub's per hour and others' per second or
per minute, and a guessed window would be a guessed rate.

Several sources may disagree; the most conservative wins (longest wait, lowest remaining and
limit, lowest published rate: `10;w=1, 1000;w=3600` publishes 1,000 an hour, the rate both
allow). That includes one header sent twice, which arrives as two lines or, folded by the transport
or a proxy, as one comma-separated list (`Retry-After: 120, 120`; an HTTP-date keeps its
own comma: `Wed, 21 Oct 2015 07:28:00 GMT, 120`): every member counts. Headers come from outside, so
garbage never raises: it is ignored, and no usable header at all gives `RateLimitInfo()`, "no
information".
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime

__all__ = [
    "EPOCH_MILLISECONDS_THRESHOLD",
    "EPOCH_SECONDS_THRESHOLD",
    "RateLimitInfo",
    "parse_rate_limit_headers",
    "parse_retry_after",
]

EPOCH_SECONDS_THRESHOLD = 10**9
EPOCH_MILLISECONDS_THRESHOLD = 10**11

# ASCII digits only, and a bounded length: `int()` accepts other Unicode digits and refuses
# strings beyond 4,300 digits, and neither should reach it from a header.
_INTEGER = re.compile(r"[0-9]{1,15}", re.ASCII)
_NUMBER = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,9})?", re.ASCII)
# The day names an HTTP-date starts with (IMF-fixdate "Wed, ..." and RFC 850 "Wednesday, ..."): the
# comma after one is part of the date, not a list separator.
_DAY_NAMES = frozenset(
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun",
     "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
)


@dataclass(frozen=True)
class RateLimitInfo:
    """What the headers said; None where they said nothing.

    wait_sec: seconds to wait before the next request is worth sending (>= 0).
    remaining: requests left in the current window.
    limit: requests allowed per window.
    published_per_sec: the lowest rate a policy states with both its quota and its window
        (quota / window, > 0); None when no policy gives a window.
    window_sec: the window of that policy.
    """

    wait_sec: float | None = None
    remaining: int | None = None
    limit: int | None = None
    published_per_sec: float | None = None
    window_sec: float | None = None


@dataclass
class _Findings:
    waits: list[float] = field(default_factory=list)
    remainings: list[int] = field(default_factory=list)
    limits: list[int] = field(default_factory=list)
    # (requests per second, window) of every policy that states both.
    policies: list[tuple[float, float]] = field(default_factory=list)

    def add_policy(self, quota: int | None, window_sec: float | None) -> None:
        # A quota of 0 says "nothing now", a wait rather than a rate; a window of 0 says nothing.
        if quota is not None and quota > 0 and window_sec is not None and window_sec > 0:
            self.policies.append((quota / window_sec, window_sec))

    def add_reset(self, wait_sec: float | None, remaining: int | None) -> None:
        # A reset with requests still remaining is when the window refills, not a reason to wait.
        if wait_sec is not None and (remaining is None or remaining == 0):
            self.waits.append(wait_sec)

    def to_info(self) -> RateLimitInfo:
        return RateLimitInfo(
            wait_sec=max(self.waits) if self.waits else None,
            remaining=min(self.remainings) if self.remainings else None,
            limit=min(self.limits) if self.limits else None,
            published_per_sec=min(self.policies)[0] if self.policies else None,
            window_sec=min(self.policies)[1] if self.policies else None,
        )


def parse_rate_limit_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    now: float,
) -> RateLimitInfo:
    """Combine every rate-limit header in `headers` (a mapping or name/value pairs) into one answer."""
    values = _values_by_lowercase_name(headers)
    findings = _Findings()
    for value in values.get("retry-after", []):
        wait = parse_retry_after(value, now)
        if wait is not None:
            findings.waits.append(wait)
    # X (Twitter) spells it with a second hyphen: x-rate-limit-limit, -remaining, -reset (epoch).
    for prefix in ("x-ratelimit-", "x-rate-limit-", "ratelimit-"):
        _read_separate_fields(values, prefix, now, findings)
    for value in values.get("ratelimit", []):
        _read_structured_ratelimit(value, now, findings)
    for value in values.get("ratelimit-policy", []):
        _read_policy(value, findings)
    return findings.to_info()


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta seconds or HTTP-date); None when unreadable.

    A value holding several (a header sent twice and folded into one line, or a list) gives the
    longest wait of the members that are readable.
    """
    if not isinstance(value, str):
        return None
    # Split first: the date parser reads "Wed, 21 Oct 2015 07:28:00 GMT, 120" as the date alone.
    waits = [w for w in (_retry_after_member(member, now) for member in _retry_after_members(value)) if w is not None]
    return max(waits) if waits else None


def _retry_after_member(value: str, now: float) -> float | None:
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return _non_negative(float(text))
    try:
        moment = parsedate_to_datetime(text)
        if moment.tzinfo is None:
            # The asctime form carries no zone; HTTP dates are always GMT.
            moment = moment.replace(tzinfo=timezone.utc)
        return _non_negative(moment.timestamp() - now)
    except (ValueError, TypeError, OverflowError, IndexError):
        return None


def _retry_after_members(value: str) -> list[str]:
    """A folded value split at its list commas, each HTTP-date kept whole (`Wed, 21 Oct ...` is one member)."""
    pieces = value.split(",")
    members: list[str] = []
    index = 0
    while index < len(pieces):
        piece = pieces[index]
        if piece.strip().lower() in _DAY_NAMES and index + 1 < len(pieces):
            members.append(f"{piece},{pieces[index + 1]}")
            index += 2
        else:
            members.append(piece)
            index += 1
    return members


def _values_by_lowercase_name(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    values: dict[str, list[str]] = {}
    for pair in pairs:
        try:
            name, value = pair
        except (TypeError, ValueError):
            continue
        if isinstance(name, str) and isinstance(value, str):
            values.setdefault(name.strip().lower(), []).append(value)
    return values


def _read_separate_fields(values: dict[str, list[str]], prefix: str, now: float, findings: _Findings) -> None:
    # Each value may be a list: a header sent twice and folded, or the early drafts' `10, 10;w=1`
    # (the quota, then its policy): every member's leading number counts, the safest one wins.
    limit_members = _members(values, prefix + "limit")
    limits = [n for n in (_leading_integer(m) for m in limit_members) if n is not None]
    for member in limit_members:
        # The early drafts' policy members (`10;w=1`) state their window.
        findings.add_policy(_leading_integer(member), _number(_item_and_params(member)[1].get("w")))
    remainings = [n for n in (_leading_integer(m) for m in _members(values, prefix + "remaining")) if n is not None]
    waits = [w for w in (_reset_wait(_number(_before_parameters(m)), now) for m in _members(values, prefix + "reset"))
             if w is not None]
    findings.limits.extend(limits)
    findings.remainings.extend(remainings)
    remaining = min(remainings) if remainings else None
    for wait in waits:
        findings.add_reset(wait, remaining)


def _read_structured_ratelimit(value: str, now: float, findings: _Findings) -> None:
    dictionary: dict[str, str] = {}
    for member in _split_outside_quotes(value, ","):
        item, params = _item_and_params(member)
        key, equals, member_value = item.partition("=")
        if equals and not item.startswith('"'):
            # Dictionary form (draft 07): `limit=10, remaining=0, reset=5`. A key seen again starts the
            # next dictionary (the header was sent twice and folded), so each reset keeps its remaining.
            key = key.strip().lower()
            if key in dictionary:
                _read_ratelimit_dictionary(dictionary, now, findings)
                dictionary = {}
            dictionary[key] = member_value.strip()
            continue
        # List form (draft 08 and later): `"policy";r=<remaining>;t=<seconds to reset>`.
        remaining = _integer(params.get("r"))
        if remaining is not None:
            findings.remainings.append(remaining)
        limit = _integer(params.get("q"))
        if limit is not None:
            findings.limits.append(limit)
        findings.add_policy(limit, _number(params.get("w")))
        findings.add_reset(_reset_wait(_number(params.get("t")), now), remaining)
    if dictionary:
        _read_ratelimit_dictionary(dictionary, now, findings)


def _read_ratelimit_dictionary(dictionary: dict[str, str], now: float, findings: _Findings) -> None:
    limit = _integer(dictionary.get("limit"))
    remaining = _integer(dictionary.get("remaining"))
    if limit is not None:
        findings.limits.append(limit)
    if remaining is not None:
        findings.remainings.append(remaining)
    findings.add_reset(_reset_wait(_number(dictionary.get("reset")), now), remaining)


def _read_policy(value: str, findings: _Findings) -> None:
    # `10;w=1` (quota as the item) or `"default";q=100;w=10` (quota as the q parameter).
    for member in _split_outside_quotes(value, ","):
        item, params = _item_and_params(member)
        limit = _integer(params.get("q"))
        if limit is None:
            limit = _integer(item)
        if limit is not None:
            findings.limits.append(limit)
        findings.add_policy(limit, _number(params.get("w")))


def _item_and_params(member: str) -> tuple[str, dict[str, str]]:
    parts = _split_outside_quotes(member, ";")
    params: dict[str, str] = {}
    for part in parts[1:]:
        key, equals, value = part.partition("=")
        if equals:
            params.setdefault(key.strip().lower(), value.strip())
    return (parts[0].strip() if parts else ""), params


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    in_quotes = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif in_quotes and char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == separator and not in_quotes:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _reset_wait(reset: float | None, now: float) -> float | None:
    if reset is None:
        return None
    if reset > EPOCH_MILLISECONDS_THRESHOLD:
        return _non_negative(reset / 1000 - now)
    if reset > EPOCH_SECONDS_THRESHOLD:
        return _non_negative(reset - now)
    return _non_negative(reset)


def _members(values: dict[str, list[str]], name: str) -> list[str]:
    return [member for value in values.get(name, []) for member in value.split(",")]


def _before_parameters(member: str) -> str:
    return member.split(";", 1)[0]


def _leading_integer(member: str) -> int | None:
    return _integer(_before_parameters(member))


def _integer(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    return int(text) if _INTEGER.fullmatch(text) else None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    text = value.strip()
    return float(text) if _NUMBER.fullmatch(text) else None


def _non_negative(seconds: float) -> float | None:
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)
