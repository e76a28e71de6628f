"""A loopback HTTP stand-in for a rate-limited third party (CRM, payment gateway, AI model, mainframe).

It enforces its own token bucket, answers 429/503/5xx/504 the way real APIs do, and records every
request, so a test can assert that the highest rate it ever saw over any 1 s window stayed within the
downstream's limit. It is the referee for the project's limiter, so it deliberately shares no code with it.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import email.utils
import hashlib
import json
import logging
import math
import random
import re
import secrets
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

__all__ = [
    "AI_MODEL",
    "BATCH_EMAILS_PATH",
    "CONTROL_PREFIX",
    "CRM",
    "DownstreamProfile",
    "DownstreamSimulator",
    "LEDGER",
    "LEGACY_MAINFRAME",
    "LatencyDistribution",
    "MESSAGING",
    "MODERATION_CATEGORIES",
    "PAYMENT_GATEWAY",
    "PROFILES",
    "RecordedRequest",
    "SimulatedResponse",
    "batch_answer",
    "WAREHOUSE",
    "main",
    "max_requests_in_window",
    "moderation_answer",
]

logger = logging.getLogger(__name__)

CONTROL_PREFIX = "/__sim/"
RECORDED_HEADERS = ("X-Correlation-Id", "Idempotency-Key", "Content-Type", "User-Agent")

# Float arithmetic leaves 0.9999999999 tokens where exactly 1 is due, or a 0.9999999999 s gap where 1 s
# elapsed; without a tolerance a client retrying exactly at Retry-After would be refused or counted twice in one
# window, and the referee must not be stricter than its contract. 1 ns is the monotonic clock's resolution.
_TOKEN_EPSILON = 1e-9
_TIME_EPSILON_SEC = 1e-9
# A concurrency 429 cannot know when a slot frees up; one second is the smallest Retry-After in whole seconds.
_CONCURRENCY_RETRY_AFTER_SEC = 1.0

# The AI model's moderation API, `POST /moderate/<model>` with `{"bucket", "key"}`, answers as OpenAI's moderation
# endpoint does: per category of the model a confidence score from 0 to 1, and its own `flagged` verdicts.
MODERATE_PREFIX = "/moderate/"
MODERATION_CATEGORIES: Mapping[str, tuple[str, ...]] = {
    "toxicity": ("harassment", "hate", "self_harm", "violence"),
    "nudity": ("sexual", "sexual_minors", "suggestive"),
    "spam": ("phishing", "scam", "spam"),
}
# Where a model's own answer says `flagged`; the workflow decides with the stage's thresholds, not this.
MODEL_FLAG_SCORE = 0.5
# An object no test chose scores below this in every category, the same for the same object every time.
BASELINE_SCORE_CEILING = 0.05

# The CRM's batch endpoint, `POST /emails/batch` with `{"segment_id", "recipients": [{"user_id", "idempotency_key"}]}`:
# one request (one token of its rate) e-mails up to `max_batch_size` recipients and answers for each of them.
BATCH_EMAILS_PATH = "/emails/batch"
# How long a recipient the CRM deferred asks to be left alone: whole seconds, as a workflow's Wait takes them.
RECIPIENT_RETRY_AFTER_SEC = 1

LatencyKind = Literal["fixed", "uniform", "lognormal"]
RetryAfterStyle = Literal["seconds", "http-date"]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ceil(value: float) -> int:
    """Round up, but not a whole unit up because of float noise (1.0000000000000002 is 1)."""
    return math.ceil(value - _TIME_EPSILON_SEC)


@dataclass(frozen=True)
class LatencyDistribution:
    """How long the downstream takes to answer an admitted request.

    ``fixed`` always takes ``median_ms``; ``uniform`` draws from ``median_ms ± jitter_ms``; ``lognormal``
    has median ``median_ms`` and shape ``sigma`` (the long tail of model inference). ``max_ms`` caps the
    tail so a test cannot hang on an unlucky draw; ``None`` means no cap.
    """

    kind: LatencyKind = "fixed"
    median_ms: float = 0.0
    jitter_ms: float = 0.0
    sigma: float = 0.5
    max_ms: float | None = None

    def __post_init__(self) -> None:
        kinds = ("fixed", "uniform", "lognormal")
        _require(self.kind in kinds, f"latency kind must be one of {', '.join(kinds)}, got {self.kind!r}")
        _require(
            _is_number(self.median_ms) and self.median_ms >= 0,
            f"latency median_ms must be a number >= 0, got {self.median_ms!r}",
        )
        _require(
            _is_number(self.jitter_ms) and 0 <= self.jitter_ms <= self.median_ms,
            f"latency jitter_ms must be between 0 and median_ms so a sample never goes below 0, "
            f"got {self.jitter_ms!r} with median_ms {self.median_ms!r}",
        )
        _require(_is_number(self.sigma) and self.sigma >= 0, f"latency sigma must be a number >= 0, got {self.sigma!r}")
        _require(
            self.max_ms is None or (_is_number(self.max_ms) and self.max_ms >= self.median_ms),
            f"latency max_ms must be None (no cap) or >= median_ms, got {self.max_ms!r} < {self.median_ms!r}",
        )

    def sample_sec(self, rng: random.Random) -> float:
        if self.kind == "uniform":
            sample_ms = rng.uniform(self.median_ms - self.jitter_ms, self.median_ms + self.jitter_ms)
        elif self.kind == "lognormal" and self.median_ms > 0:
            sample_ms = rng.lognormvariate(math.log(self.median_ms), self.sigma)
        else:
            sample_ms = self.median_ms
        if self.max_ms is not None:
            sample_ms = min(sample_ms, self.max_ms)
        return sample_ms / 1000.0


@dataclass(frozen=True)
class DownstreamProfile:
    """The contract and failure modes of one downstream.

    Admission is a token bucket of ``burst`` tokens refilled at ``rate_per_sec``. Of the admitted requests,
    a seeded ``timeout_rate`` fraction is held ``timeout_hold_sec`` and then answered 504, and an
    ``error_rate_5xx`` fraction is answered 500. ``outage_windows_sec`` are half-open ``[start, end)``
    offsets from the simulator's start (or last reset) during which every request gets 503.
    ``max_concurrency`` caps requests in flight, also answered 429; ``None`` means no cap.
    ``not_found_paths`` are answered 404 once admitted (a token spent, as a CRM spends one looking up a
    user it does not hold): a request no retry can fix. ``money_fields`` name body fields that, where
    present, must be money as payment APIs take it, a decimal string with two decimals (``"19.99"``,
    never the number 19.99); a request breaking that is answered 400 once admitted, a request no
    retry can fix either. With ``api_key`` set, a request without that key in ``api_key_header`` is
    answered 401 before it spends a token; with ``oauth_client_id`` set, one without ``Authorization:
    Bearer <token>`` of a token the token endpoint issued and not yet expired is. The token endpoint
    (``POST token_path``, RFC 6749 4.4: ``grant_type=client_credentials``, the client in HTTP Basic auth)
    is the third party's authorization server: neither rate limited nor recorded, only counted
    (``tokens_issued`` in the stats). ``content_scores`` are the moderation scores of chosen uploads,
    ``{object key: {model: {category: score}}}`` (see ``moderation_answer``); every other upload scores low.
    ``max_batch_size`` opens the batch endpoint (``BATCH_EMAILS_PATH``) for up to that many recipients per
    request; ``None`` (the default) means no batch endpoint, the path answered as any other.
    ``throttled_recipients`` are user ids the batch endpoint defers once per idempotency key, as a mail
    provider defers a busy mailbox (see ``batch_answer``).
    ``publishes_limit`` adds ``RateLimit-Policy: <quota>;w=<window>`` to every answer: the bucket's rate at
    that instant, so it follows a capacity change at once, which a client may believe as the limit. Off by
    default, as most APIs say only what is left (``X-RateLimit-*`` and the ``RateLimit`` dictionary, which
    carry no window, are always sent): a downstream read only through its 429s.
    """

    name: str
    rate_per_sec: float
    burst: int = 1
    latency: LatencyDistribution = field(default_factory=LatencyDistribution)
    error_rate_5xx: float = 0.0
    timeout_rate: float = 0.0
    timeout_hold_sec: float = 10.0
    outage_windows_sec: tuple[tuple[float, float], ...] = ()
    retry_after_style: RetryAfterStyle = "seconds"
    max_concurrency: int | None = None
    not_found_paths: tuple[str, ...] = ()
    money_fields: tuple[str, ...] = ()
    content_scores: Mapping[str, Mapping[str, Mapping[str, float]]] = field(default_factory=dict)
    max_batch_size: int | None = None
    throttled_recipients: tuple[str, ...] = ()
    api_key: str | None = None
    api_key_header: str = "x-api-key"
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = None
    token_path: str = "/oauth2/token"
    token_ttl_sec: float = 3600.0
    publishes_limit: bool = False

    def __post_init__(self) -> None:
        _require(isinstance(self.name, str) and self.name != "", f"name must be a non-empty string, got {self.name!r}")
        _require(
            _is_number(self.rate_per_sec) and self.rate_per_sec > 0,
            f"rate_per_sec must be a finite number > 0, got {self.rate_per_sec!r}",
        )
        _require(_is_count(self.burst) and self.burst >= 1, f"burst must be an integer >= 1, got {self.burst!r}")
        _require(
            isinstance(self.latency, LatencyDistribution),
            f"latency must be a LatencyDistribution, got {type(self.latency).__name__}",
        )
        for rate_name in ("error_rate_5xx", "timeout_rate"):
            rate = getattr(self, rate_name)
            _require(_is_number(rate) and 0 <= rate <= 1, f"{rate_name} must be between 0 and 1, got {rate!r}")
        _require(
            self.error_rate_5xx + self.timeout_rate <= 1,
            f"error_rate_5xx + timeout_rate must be <= 1 because they split the same admitted requests, "
            f"got {self.error_rate_5xx!r} + {self.timeout_rate!r}",
        )
        _require(
            _is_number(self.timeout_hold_sec) and self.timeout_hold_sec >= 0,
            f"timeout_hold_sec must be a number >= 0, got {self.timeout_hold_sec!r}",
        )
        # JSON from the control API brings lists; normalise so equality and hashing behave like a literal.
        _require(
            isinstance(self.outage_windows_sec, (list, tuple)),
            f"outage_windows_sec must be a sequence of (start_sec, end_sec) pairs, got {self.outage_windows_sec!r}",
        )
        windows = tuple(tuple(window) for window in self.outage_windows_sec)
        for window in windows:
            _require(
                len(window) == 2 and all(_is_number(edge) for edge in window) and 0 <= window[0] < window[1],
                f"outage_windows_sec entries must be (start_sec, end_sec) with 0 <= start_sec < end_sec, "
                f"got {window!r}",
            )
        object.__setattr__(self, "outage_windows_sec", windows)
        _require(
            self.retry_after_style in ("seconds", "http-date"),
            f"retry_after_style must be 'seconds' or 'http-date', got {self.retry_after_style!r}",
        )
        _require(
            self.max_concurrency is None or (_is_count(self.max_concurrency) and self.max_concurrency >= 1),
            f"max_concurrency must be None (no cap) or an integer >= 1, got {self.max_concurrency!r}",
        )
        _require(
            isinstance(self.not_found_paths, (list, tuple)) and all(isinstance(p, str) for p in self.not_found_paths),
            f"not_found_paths must be a sequence of paths such as '/users/42', got {self.not_found_paths!r}",
        )
        object.__setattr__(self, "not_found_paths", tuple(self.not_found_paths))
        _require(
            isinstance(self.money_fields, (list, tuple)) and all(isinstance(f, str) for f in self.money_fields),
            f"money_fields must be a sequence of body field names such as 'amount', got {self.money_fields!r}",
        )
        object.__setattr__(self, "money_fields", tuple(self.money_fields))
        for secret_name in ("api_key", "oauth_client_id", "oauth_client_secret"):
            value = getattr(self, secret_name)
            _require(value is None or (isinstance(value, str) and value != ""),
                     f"{secret_name} must be None (no credential) or a non-empty string")
        _require((self.oauth_client_id is None) == (self.oauth_client_secret is None),
                 "oauth_client_id and oauth_client_secret go together: set both or neither")
        _require(_is_number(self.token_ttl_sec) and self.token_ttl_sec > 0,
                 f"token_ttl_sec must be a number > 0, got {self.token_ttl_sec!r}")
        _require(isinstance(self.content_scores, Mapping), "content_scores must be an object of object key -> model"
                 f" -> category -> score, got {self.content_scores!r}")
        for key, by_model in self.content_scores.items():
            _require(isinstance(key, str) and isinstance(by_model, Mapping),
                     f"content_scores[{key!r}] must be an object of model -> category -> score, got {by_model!r}")
            for model, by_category in by_model.items():
                categories = MODERATION_CATEGORIES.get(model)
                _require(categories is not None and isinstance(by_category, Mapping),
                         f"content_scores[{key!r}]: model must be one of {sorted(MODERATION_CATEGORIES)} with an"
                         f" object of category -> score, got {model!r}: {by_category!r}")
                for category, score in by_category.items():
                    _require(category in categories and _is_number(score) and 0 <= score <= 1,
                             f"content_scores[{key!r}][{model!r}]: categories are {list(categories)} and scores"
                             f" numbers from 0 to 1, got {category!r}: {score!r}")
        _require(
            self.max_batch_size is None or (_is_count(self.max_batch_size) and self.max_batch_size >= 1),
            f"max_batch_size must be None (no batch endpoint) or an integer >= 1, got {self.max_batch_size!r}",
        )
        _require(
            isinstance(self.throttled_recipients, (list, tuple))
            and all(isinstance(user_id, str) for user_id in self.throttled_recipients),
            f"throttled_recipients must be a sequence of user ids such as 'user-0001', got {self.throttled_recipients!r}",
        )
        object.__setattr__(self, "throttled_recipients", tuple(self.throttled_recipients))
        _require(isinstance(self.publishes_limit, bool),
                 f"publishes_limit must be true or false, got {self.publishes_limit!r}")

    def merged_with(self, changes: Mapping[str, Any]) -> DownstreamProfile:
        """Apply a JSON-shaped partial update, e.g. ``{"rate_per_sec": 2.5}`` or ``{"latency": {"median_ms": 50}}``."""
        known = {profile_field.name for profile_field in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        _require(not unknown, f"unknown profile field(s) {unknown}; expected some of {sorted(known)}")
        updates = dict(changes)
        if "latency" in updates:
            latency_changes = updates["latency"]
            _require(
                isinstance(latency_changes, Mapping),
                f"latency must be an object of LatencyDistribution fields, got {latency_changes!r}",
            )
            latency_known = {latency_field.name for latency_field in dataclasses.fields(LatencyDistribution)}
            latency_unknown = sorted(set(latency_changes) - latency_known)
            _require(
                not latency_unknown,
                f"unknown latency field(s) {latency_unknown}; expected some of {sorted(latency_known)}",
            )
            updates["latency"] = dataclasses.replace(self.latency, **latency_changes)
        return dataclasses.replace(self, **updates)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def max_admitted_in_window(self, window_sec: float = 1.0) -> int:
        """The most requests this bucket can admit in one half-open window: the full burst, then one per refill."""
        return self.burst + _ceil(self.rate_per_sec * window_sec) - 1


# burst == rate_per_sec for every named profile: then a client that never sends more than rate_per_sec
# requests in any 1 s window is never refused (every [s, t] span holds at most rate * (floor(t - s) + 1)
# <= burst + rate * (t - s) requests), while a client that bursts beyond that is. Whether the project's
# limiter met the stricter "<= rate in any 1 s" is asserted from max_requests_in_window, not from 429 counts.
# Faults are zero so a test sees a 5xx or a timeout only when it asked for one (replace the profile).
CRM = DownstreamProfile(
    name="crm",
    rate_per_sec=10,
    burst=10,
    latency=LatencyDistribution(kind="uniform", median_ms=200, jitter_ms=50),
    max_batch_size=50,
)
# Two profiles answer Retry-After as an HTTP-date so the project's client has to parse both forms.
PAYMENT_GATEWAY = DownstreamProfile(
    name="payment_gateway",
    rate_per_sec=2,
    burst=2,
    latency=LatencyDistribution(kind="uniform", median_ms=350, jitter_ms=100),
    retry_after_style="http-date",
    money_fields=("amount",),
)
# Model inference has a long latency tail; its "variable capacity" is changed at runtime (POST /__sim/profile).
# Its GPUs take 3 requests at once whatever the rate (`max_in_flight` in cdk.json): a 4th is refused with a 429.
AI_MODEL = DownstreamProfile(
    name="ai_model",
    rate_per_sec=5,
    burst=5,
    latency=LatencyDistribution(kind="lognormal", median_ms=400, sigma=0.5, max_ms=2000),
    max_concurrency=3,
)
# One session on the mainframe: at 1 rps and 300 ms per call a compliant client never overlaps,
# so the concurrency cap only refuses callers that fan out.
LEGACY_MAINFRAME = DownstreamProfile(
    name="legacy_mainframe",
    rate_per_sec=1,
    burst=1,
    latency=LatencyDistribution(kind="fixed", median_ms=300),
    retry_after_style="http-date",
    max_concurrency=1,
)
# The payment's follow-ups, each its own third party: the warehouse's inventory API, the e-mail/SMS provider that
# tells the customer, and the accounting ledger. Plain JSON APIs: every admitted request is answered 200.
WAREHOUSE = DownstreamProfile(
    name="warehouse",
    rate_per_sec=5,
    burst=5,
    latency=LatencyDistribution(kind="uniform", median_ms=150, jitter_ms=50),
)
# The messaging provider takes OAuth2 client credentials and the ledger an API key (`downstreams.<name>.auth` in
# cdk.json): these are the sandbox credentials each issued, which the emulator's operator puts in their secrets.
MESSAGING = DownstreamProfile(
    name="messaging",
    rate_per_sec=10,
    burst=10,
    latency=LatencyDistribution(kind="uniform", median_ms=100, jitter_ms=30),
    oauth_client_id="shop-messaging-sandbox",
    oauth_client_secret="messaging-sandbox-client-secret-7Qp2",
)
LEDGER = DownstreamProfile(
    name="ledger",
    rate_per_sec=5,
    burst=5,
    latency=LatencyDistribution(kind="uniform", median_ms=200, jitter_ms=50),
    money_fields=("amount",),
    api_key="ledger-sandbox-api-key-Zr81",
)
PROFILES: Mapping[str, DownstreamProfile] = {
    profile.name: profile
    for profile in (CRM, PAYMENT_GATEWAY, AI_MODEL, LEGACY_MAINFRAME, WAREHOUSE, MESSAGING, LEDGER)
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the downstream saw it; control-API calls are not recorded."""

    request_id: str
    monotonic_sec: float
    wall_time_epoch_sec: float
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int


@dataclass(frozen=True)
class SimulatedResponse:
    """The decided answer; the HTTP layer waits ``delay_sec`` and then only serialises it."""

    request_id: str
    status: int
    headers: dict[str, str]
    body: dict[str, Any]
    delay_sec: float = 0.0

    def body_bytes(self) -> bytes:
        return json.dumps(self.body).encode("utf-8")


_MONEY = re.compile(r"[0-9]+\.[0-9]{2}")


def _bad_money_fields(body: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The named fields present in a JSON object body that are not money as a string with two decimals."""
    if not fields or not isinstance(body, dict):
        return {}
    return {name: body[name] for name in fields
            if name in body and not (isinstance(body[name], str) and _MONEY.fullmatch(body[name]))}
def moderation_answer(path: str, body: Any, profile: DownstreamProfile, request_id: str) -> tuple[int, dict[str, Any]]:
    """(status, body) of `POST /moderate/<model>` for `{"bucket", "key"}`: the model's score for each of its categories.

    The upload's scores in `profile.content_scores` when a test chose them (a category left out scores as
    any other), otherwise a low score drawn from the model, bucket, key and category: the same answer for
    the same object every time, below `BASELINE_SCORE_CEILING`. Shaped like OpenAI's moderation answer:
    `{"id", "model", "results": [{"flagged", "categories": {category: flagged}, "category_scores"}]}`. An
    unknown model is 404, a body without a key 400: requests no retry fixes.
    """
    model = path[len(MODERATE_PREFIX):]
    categories = MODERATION_CATEGORIES.get(model)
    if categories is None:
        return 404, {"error": "unknown_model", "model": model, "models": sorted(MODERATION_CATEGORIES)}
    if not isinstance(body, dict) or not isinstance(body.get("key"), str) or not body["key"]:
        return 400, {"error": "invalid_request", "message": 'the body must be {"bucket": "...", "key": "..."}'}
    bucket, key = str(body.get("bucket", "")), body["key"]
    chosen = profile.content_scores.get(key, {}).get(model, {})
    scores = {category: chosen.get(category, _baseline_score(model, bucket, key, category)) for category in categories}
    return 200, {
        "id": f"modr-{request_id}",
        "model": model,
        "results": [{
            "flagged": any(score >= MODEL_FLAG_SCORE for score in scores.values()),
            "categories": {category: score >= MODEL_FLAG_SCORE for category, score in scores.items()},
            "category_scores": scores,
        }],
    }


@dataclass
class BatchDeliveries:
    """What the batch endpoint delivered: the first delivery per idempotency key, and every repeat it absorbed."""

    delivered: dict[str, dict[str, str]] = field(default_factory=dict)  # idempotency key -> {user_id, message_id}
    repeats: Counter[str] = field(default_factory=Counter)  # idempotency key -> times it came back after delivery
    deferred: set[str] = field(default_factory=set)  # idempotency keys deferred once already


def batch_answer(body: Any, profile: DownstreamProfile, request_id: str,
                 deliveries: BatchDeliveries) -> tuple[int, dict[str, Any]]:
    """(status, body) of `POST /emails/batch`: an answer per recipient, in three lists, as bulk e-mail APIs give.

    The request, admitted, spent one token whatever its size: the contract counts requests. A body that is
    not `{"segment_id", "recipients": [{"user_id", "idempotency_key"}, ...]}` with 1 to `max_batch_size`
    recipients is 400 as a whole (no retry fixes it, and nothing is sent). Otherwise each recipient lands
    in exactly one list: `sent` (with its `message_id`; `duplicate` true when its idempotency key was
    delivered before, which is answered as sent again and not e-mailed twice), `rejected` with a
    `reason` (a user the CRM does not hold, `/users/<id>` in `not_found_paths`: permanent) or `throttled`
    (a recipient in `throttled_recipients`, deferred the first time its key comes: retry after
    `retry_after_sec`, which is null when nobody was deferred). Shaped like SQS's SendMessageBatch
    (Successful, Failed) with the retryable failures apart, so a workflow splits it without a filter.
    A batch the profile times out (`timeout_rate`) is delivered all the same, and its answer lost.
    """
    limit = profile.max_batch_size
    recipients = body.get("recipients") if isinstance(body, dict) else None
    well_formed = isinstance(recipients, list) and all(
        isinstance(r, dict) and isinstance(r.get("user_id"), str) and r["user_id"]
        and isinstance(r.get("idempotency_key"), str) and r["idempotency_key"] for r in recipients)
    if not well_formed or not recipients:
        return 400, {"error": "invalid_batch", "message": 'the body must be {"segment_id": "...", "recipients":'
                     ' [{"user_id": "...", "idempotency_key": "..."}, ...]} with at least one recipient'}
    if limit is not None and len(recipients) > limit:
        return 400, {"error": "batch_too_large", "max_batch_size": limit, "recipients": len(recipients),
                     "message": f"a batch takes at most {limit} recipients, got {len(recipients)}: split it"}
    sent: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    throttled: list[dict[str, Any]] = []
    for index, recipient in enumerate(recipients):
        user_id, key = recipient["user_id"], recipient["idempotency_key"]
        entry = {"user_id": user_id, "idempotency_key": key}
        if key in deliveries.delivered:
            deliveries.repeats[key] += 1
            sent.append({**entry, "message_id": deliveries.delivered[key]["message_id"], "duplicate": True})
        elif f"/users/{user_id}" in profile.not_found_paths:
            rejected.append({**entry, "reason": "unknown_recipient"})
        elif user_id in profile.throttled_recipients and key not in deliveries.deferred:
            deliveries.deferred.add(key)
            throttled.append({**entry, "reason": "recipient_rate_limited"})
        else:
            message_id = f"msg-{request_id}-{index}"
            deliveries.delivered[key] = {"user_id": user_id, "message_id": message_id}
            sent.append({**entry, "message_id": message_id, "duplicate": False})
    return 200, {"request_id": request_id, "segment_id": body.get("segment_id"), "sent": sent, "rejected": rejected,
                 "throttled": throttled, "retry_after_sec": RECIPIENT_RETRY_AFTER_SEC if throttled else None}


def _baseline_score(model: str, bucket: str, key: str, category: str) -> float:
    digest = hashlib.sha256(f"{model}\n{bucket}\n{key}\n{category}".encode()).digest()
    return round(int.from_bytes(digest[:8], "big") / 2**64 * BASELINE_SCORE_CEILING, 6)


def max_requests_in_window(timestamps_sec: Iterable[float], window_sec: float = 1.0) -> int:
    """The most timestamps inside any half-open window ``[s, s + window_sec)``, sliding, not aligned buckets.

    Half-open matches the token bucket: a request exactly ``window_sec`` after another starts a new window,
    just as a bucket refilled at ``1 / window_sec`` admits it. Gaps within 1 ns of ``window_sec`` count as equal.
    """
    _require(_is_number(window_sec) and window_sec > 0, f"window_sec must be a number > 0, got {window_sec!r}")
    ordered = sorted(timestamps_sec)
    most = 0
    window_start = 0
    # A busiest window can always be slid right until it starts at a request, so checking those suffices.
    for window_end, timestamp in enumerate(ordered):
        while timestamp - ordered[window_start] >= window_sec - _TIME_EPSILON_SEC:
            window_start += 1
        most = max(most, window_end - window_start + 1)
    return most


class TokenBucket:
    """The downstream's own bucket, written independently of the project's limiter so it can referee it.

    The lab's downstream model (`lab.downstream`) refills the same bucket in virtual time.
    """

    def __init__(self, rate_per_sec: float, capacity: int, now: float) -> None:
        self.rate_per_sec = rate_per_sec
        self.capacity = capacity
        self._tokens = float(capacity)
        self._updated_at = now

    def _refill(self, now: float) -> None:
        # A clock that steps backwards must neither drain nor double-fill the bucket.
        elapsed = max(0.0, now - self._updated_at)
        self._tokens = min(float(self.capacity), self._tokens + elapsed * self.rate_per_sec)
        self._updated_at = max(self._updated_at, now)

    def try_take(self, now: float) -> bool:
        self._refill(now)
        if self._tokens + _TOKEN_EPSILON < 1:
            return False
        self._tokens = max(0.0, self._tokens - 1)
        return True

    def resize(self, now: float, rate_per_sec: float, capacity: int) -> None:
        """A new rate and size from `now`; what the old rate earned until then is kept (up to the new size)."""
        self._refill(now)
        self.rate_per_sec = rate_per_sec
        self.capacity = capacity
        self._tokens = min(self._tokens, float(capacity))

    def remaining(self, now: float) -> int:
        self._refill(now)
        return math.floor(self._tokens + _TOKEN_EPSILON)

    def seconds_until_next_token(self, now: float) -> float:
        self._refill(now)
        return max(0.0, (1 - self._tokens) / self.rate_per_sec)

    def seconds_until_full(self, now: float) -> float:
        self._refill(now)
        return max(0.0, (self.capacity - self._tokens) / self.rate_per_sec)

    def reconfigure(self, rate_per_sec: float, capacity: int, now: float) -> None:
        # Tokens earned at the old rate are kept but clamped: a quota cut must not hand out a fresh burst.
        self._refill(now)
        self.rate_per_sec = rate_per_sec
        self.capacity = capacity
        self._tokens = min(self._tokens, float(capacity))


def _parse_body(body: bytes | str | None) -> Any:
    if not body:
        return None
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        return json.loads(text)
    except ValueError:
        return text


def _is_control_path(path: str) -> bool:
    return urlsplit(path).path.startswith(CONTROL_PREFIX)


def _advertised_quota(rate_per_sec: float) -> tuple[int, int]:
    """``(limit, window_sec)`` with integers as the RateLimit headers need: 2.5 rps is ``5;w=2``, 0.5 is ``1;w=2``.

    Advisory only (the bucket decides), so an awkward rate is approximated with a window of at most 60 s,
    or longer when one request takes longer than that to earn.
    """
    quota = Fraction(rate_per_sec).limit_denominator(max(60, _ceil(1 / rate_per_sec)))
    return max(1, quota.numerator), quota.denominator


class DownstreamSimulator:
    """A rate-limited third party on ``127.0.0.1``; ``decide`` holds the logic, the HTTP layer serialises it.

    ``clock`` is the monotonic time used for the bucket, the outage windows and the recorded timestamps;
    ``wall_clock`` feeds the epoch and HTTP-date headers; ``sleep`` waits out the simulated latency. All are
    injectable so tests do not depend on machine speed. ``seed`` makes latency and fault draws reproducible.
    """

    def __init__(
        self,
        profile: DownstreamProfile,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
        seed: int = 0,
        port: int = 0,
    ) -> None:
        self._initial_profile = profile
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._seed = seed
        self._port = port
        self._lock = threading.Lock()
        self._server: _LoopbackServer | None = None
        self._thread: threading.Thread | None = None
        self._request_count = 0
        # token -> when it expires (monotonic). Kept by reset(): resetting the referee revokes nobody's token.
        self._access_tokens: dict[str, float] = {}
        self._reset_state()

    def _reset_state(self) -> None:
        now = self._clock()
        self._profile = self._initial_profile
        self._started_at = now
        self._bucket = TokenBucket(self._profile.rate_per_sec, self._profile.burst, now)
        # Separate streams so changing the latency distribution does not change which requests fail.
        self._fault_rng = random.Random(self._seed)
        self._latency_rng = random.Random(self._seed + 1)
        self._records: list[RecordedRequest] = []
        self._batch_deliveries = BatchDeliveries()
        self._in_flight: set[str] = set()
        self._max_in_flight = 0
        # (monotonic time, requests in flight from then on) at every change: the count at every instant.
        self._in_flight_timeline: list[tuple[float, int]] = [(now, 0)]
        self._tokens_issued = 0
        self._token_refusals = 0

    # ----- lifecycle -----

    def start(self) -> DownstreamSimulator:
        if self._server is not None:
            raise RuntimeError(f"simulator is already listening on {self.base_url}; call stop() before start()")
        self._server = _LoopbackServer(("127.0.0.1", self._port), _make_handler(self))
        with self._lock:
            # Outage windows count from when the downstream starts answering, not from construction.
            self._started_at = self._clock()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"downstream-simulator-{self._profile.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> DownstreamSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("simulator is not listening; call start() or use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ----- state -----

    @property
    def profile(self) -> DownstreamProfile:
        with self._lock:
            return self._profile

    def set_profile(self, profile: DownstreamProfile) -> None:
        """Replace the profile at runtime; the bucket keeps its tokens, clamped to the new burst."""
        with self._lock:
            self._bucket.reconfigure(profile.rate_per_sec, profile.burst, self._clock())
            self._profile = profile

    def reset(self) -> None:
        """Back to how it started: the constructed profile, a full bucket, no records, outages counted from now."""
        with self._lock:
            self._reset_state()

    @property
    def batch_deliveries(self) -> dict[str, str]:
        """Idempotency key -> user id of every recipient the batch endpoint e-mailed, once each."""
        with self._lock:
            return {key: sent["user_id"] for key, sent in self._batch_deliveries.delivered.items()}

    @property
    def batch_repeats(self) -> dict[str, int]:
        """Idempotency key -> how many times a recipient already e-mailed came back (answered sent, not e-mailed)."""
        with self._lock:
            return dict(self._batch_deliveries.repeats)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._records)

    def in_flight_timeline(self) -> list[tuple[float, int]]:
        """`(monotonic time, requests in flight from then on)` at every admission and every answer since the start
        or last reset: the count at every instant, so a test asserts a concurrency contract over all of them."""
        with self._lock:
            return list(self._in_flight_timeline)

    @property
    def access_tokens(self) -> list[str]:
        """Every access token the token endpoint issued (for tests that look for a leaked one)."""
        with self._lock:
            return list(self._access_tokens)

    def max_requests_in_window(self, window_sec: float = 1.0, statuses: Iterable[int] | None = None) -> int:
        """Sliding-window maximum over the recorded arrivals, optionally only those answered with ``statuses``."""
        wanted = None if statuses is None else set(statuses)
        timestamps = [
            record.monotonic_sec for record in self.requests if wanted is None or record.status in wanted
        ]
        return max_requests_in_window(timestamps, window_sec)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            records = list(self._records)
            profile = self._profile
            elapsed_sec = self._clock() - self._started_at
            in_flight = len(self._in_flight)
            max_in_flight = self._max_in_flight
            tokens_issued, token_refusals = self._tokens_issued, self._token_refusals
        all_arrivals = [record.monotonic_sec for record in records]
        admitted_arrivals = [record.monotonic_sec for record in records if 200 <= record.status < 300]
        return {
            "profile": profile.name,
            "rate_per_sec": profile.rate_per_sec,
            "burst": profile.burst,
            "elapsed_sec": elapsed_sec,
            "total_requests": len(records),
            "by_status": dict(sorted(Counter(record.status for record in records).items())),
            "max_in_1s_window_all": max_requests_in_window(all_arrivals, 1.0),
            "max_in_1s_window_2xx": max_requests_in_window(admitted_arrivals, 1.0),
            "in_flight": in_flight,
            "max_in_flight": max_in_flight,
            "tokens_issued": tokens_issued,
            "token_refusals": token_refusals,
        }

    # ----- the decision -----

    def decide(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
    ) -> SimulatedResponse:
        """Decide and record the answer to one request, without waiting or HTTP.

        An admitted request occupies a concurrency slot until ``release(response)``; ``handle`` does both.
        """
        if _is_control_path(path):
            raise ValueError(f"{path!r} is the simulator's control API; send it over HTTP, not to decide()")
        headers_by_lower_name = {name.lower(): value for name, value in (headers or {}).items()}
        parsed_body = _parse_body(body)
        with self._lock:
            now = self._clock()
            wall_now = self._wall_clock()
            profile = self._profile
            self._request_count += 1
            request_id = f"req-{self._request_count:06d}"
            retry_after_sec: float | None = None
            delay_sec = 0.0
            # Outage first: a service that is down refuses everything and its limiter spends no tokens.
            outage_end_sec = self._outage_end_sec(now - self._started_at)
            if outage_end_sec is not None:
                retry_after_sec = outage_end_sec - (now - self._started_at)
                status, answer = 503, {"error": "service_unavailable"}
            # Credentials before the bucket: a request the API cannot attribute to a client spends nobody's tokens.
            elif not self._authenticated(headers_by_lower_name, now):
                status, answer = 401, {"error": "unauthorized"}
            # Concurrency before the bucket, so a request refused for concurrency does not spend a token.
            elif profile.max_concurrency is not None and len(self._in_flight) >= profile.max_concurrency:
                retry_after_sec = _CONCURRENCY_RETRY_AFTER_SEC
                status, answer = 429, {"error": "concurrency_limited", "max_concurrency": profile.max_concurrency}
            elif not self._bucket.try_take(now):
                retry_after_sec = self._bucket.seconds_until_next_token(now)
                status, answer = 429, {"error": "rate_limited"}
            else:
                self._in_flight.add(request_id)
                self._max_in_flight = max(self._max_in_flight, len(self._in_flight))
                self._in_flight_timeline.append((now, len(self._in_flight)))
                roll = self._fault_rng.random()
                if roll < profile.timeout_rate:
                    delay_sec = profile.timeout_hold_sec
                    status, answer = 504, {"error": "gateway_timeout"}
                    if method == "POST" and path == BATCH_EMAILS_PATH and profile.max_batch_size is not None:
                        # A gateway that gives up on a slow backend does not stop it: the batch is still
                        # delivered, and only its recipients' idempotency keys keep the client's retry from
                        # e-mailing them twice.
                        batch_answer(parsed_body, profile, request_id, self._batch_deliveries)
                else:
                    delay_sec = profile.latency.sample_sec(self._latency_rng)
                    if roll < profile.timeout_rate + profile.error_rate_5xx:
                        status, answer = 500, {"error": "internal_error"}
                    elif path in profile.not_found_paths:
                        status, answer = 404, {"error": "not_found", "path": path}
                    elif bad_money := _bad_money_fields(parsed_body, profile.money_fields):
                        status, answer = 400, {"error": "invalid_amount", "fields": bad_money,
                                               "expected": "a decimal string with two decimals, such as \"19.99\""}
                    elif method == "POST" and path.startswith(MODERATE_PREFIX):
                        status, answer = moderation_answer(path, parsed_body, profile, request_id)
                    elif method == "POST" and path == BATCH_EMAILS_PATH and profile.max_batch_size is not None:
                        status, answer = batch_answer(parsed_body, profile, request_id, self._batch_deliveries)
                    else:
                        status = 200
                        answer = {"method": method, "path": path, "request_id": request_id, "body": parsed_body}
            response_headers = {
                "Content-Type": "application/json",
                "X-Request-Id": request_id,
                **self._rate_limit_headers(now, wall_now),
            }
            if retry_after_sec is not None:
                response_headers["Retry-After"] = self._retry_after_value(retry_after_sec, wall_now, profile)
                # Rounded up to the millisecond so a client waiting exactly this long is never early.
                answer["retry_after_sec"] = _ceil(retry_after_sec * 1000) / 1000
            self._records.append(
                RecordedRequest(
                    request_id=request_id,
                    monotonic_sec=now,
                    wall_time_epoch_sec=wall_now,
                    method=method,
                    path=path,
                    headers={
                        name: headers_by_lower_name[name.lower()]
                        for name in RECORDED_HEADERS
                        if name.lower() in headers_by_lower_name
                    },
                    body=parsed_body,
                    status=status,
                )
            )
        return SimulatedResponse(request_id, status, response_headers, answer, delay_sec)

    def _authenticated(self, headers_by_lower_name: Mapping[str, str], now: float) -> bool:
        profile = self._profile
        if profile.api_key is not None and headers_by_lower_name.get(profile.api_key_header.lower()) != profile.api_key:
            return False
        if profile.oauth_client_id is not None:
            scheme, _, token = headers_by_lower_name.get("authorization", "").partition(" ")
            expires_at = self._access_tokens.get(token) if scheme.lower() == "bearer" else None
            if expires_at is None or now >= expires_at:
                return False
        return True

    def issue_token(
        self, headers: Mapping[str, str] | None = None, body: bytes | str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """The token endpoint: an access token for the client whose id and secret come in HTTP Basic auth."""
        headers_by_lower_name = {name.lower(): value for name, value in (headers or {}).items()}
        scheme, _, encoded = headers_by_lower_name.get("authorization", "").partition(" ")
        try:
            client = base64.b64decode(encoded, validate=True).decode() if scheme.lower() == "basic" else ""
        except (ValueError, UnicodeDecodeError):
            client = ""
        client_id, _, client_secret = client.partition(":")
        form = dict(parse_qsl(body.decode() if isinstance(body, bytes) else (body or "")))
        with self._lock:
            profile = self._profile
            if form.get("grant_type") != "client_credentials":
                return 400, {"error": "unsupported_grant_type"}
            if (client_id, client_secret) != (profile.oauth_client_id, profile.oauth_client_secret):
                self._token_refusals += 1
                return 401, {"error": "invalid_client"}
            token = secrets.token_urlsafe(24)
            self._access_tokens[token] = self._clock() + profile.token_ttl_sec
            self._tokens_issued += 1
            return 200, {"access_token": token, "token_type": "Bearer", "expires_in": profile.token_ttl_sec}

    def release(self, response: SimulatedResponse) -> None:
        """Free the concurrency slot an admitted response held; safe to call for any response, and twice."""
        with self._lock:
            if response.request_id in self._in_flight:
                self._in_flight.discard(response.request_id)
                self._in_flight_timeline.append((self._clock(), len(self._in_flight)))

    def handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
    ) -> SimulatedResponse:
        """``decide``, wait out the latency with the lock released, then ``release``."""
        response = self.decide(method, path, headers, body)
        try:
            if response.delay_sec > 0:
                self._sleep(response.delay_sec)
        finally:
            self.release(response)
        return response

    def _outage_end_sec(self, elapsed_sec: float) -> float | None:
        containing_ends = [end for start, end in self._profile.outage_windows_sec if start <= elapsed_sec < end]
        if not containing_ends:
            return None
        end_sec = max(containing_ends)
        # Back-to-back or overlapping windows are one outage; Retry-After points past all of it.
        extended = True
        while extended:
            extended = False
            for start, end in self._profile.outage_windows_sec:
                if start <= end_sec < end:
                    end_sec, extended = end, True
        return end_sec

    def _rate_limit_headers(self, now: float, wall_now: float) -> dict[str, str]:
        limit, window_sec = _advertised_quota(self._bucket.rate_per_sec)
        remaining = min(limit, self._bucket.remaining(now))
        reset_after_sec = _ceil(self._bucket.seconds_until_full(now))
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(_ceil(wall_now) + reset_after_sec),
            "RateLimit": f"limit={limit}, remaining={remaining}, reset={reset_after_sec}",
        }
        if self._profile.publishes_limit:
            # From the bucket, not the profile: a capacity change (set_profile) is published by the next answer.
            headers["RateLimit-Policy"] = f"{limit};w={window_sec}"
        return headers

    @staticmethod
    def _retry_after_value(retry_after_sec: float, wall_now: float, profile: DownstreamProfile) -> str:
        # Rounded up in both forms: a client that honours the header must never come back early.
        if profile.retry_after_style == "http-date":
            retry_at = datetime.fromtimestamp(_ceil(wall_now + retry_after_sec), tz=timezone.utc)
            return email.utils.format_datetime(retry_at, usegmt=True)
        return str(max(1, _ceil(retry_after_sec)))

    # ----- the control API -----

    def handle_control(self, method: str, path: str, body: bytes | str | None = None) -> tuple[int, dict[str, Any]]:
        """Serve ``/__sim/*``: never rate-limited or recorded. Returns ``(status, json_body)``."""
        route = urlsplit(path).path[len(CONTROL_PREFIX) :].rstrip("/")
        if (method, route) == ("GET", "requests"):
            return 200, {"requests": [dataclasses.asdict(record) for record in self.requests]}
        if (method, route) == ("GET", "stats"):
            return 200, self.stats()
        if (method, route) == ("GET", "in-flight"):
            return 200, {"timeline": [[at, count] for at, count in self.in_flight_timeline()]}
        if (method, route) == ("GET", "profile"):
            return 200, {"profile": self.profile.to_dict()}
        if (method, route) == ("POST", "profile"):
            changes = _parse_body(body)
            if not isinstance(changes, dict):
                message = f"body must be a JSON object of profile fields, got {changes!r}"
                return 400, {"error": "invalid_profile", "message": message}
            try:
                new_profile = self.profile.merged_with(changes)
            except (TypeError, ValueError) as error:
                return 400, {"error": "invalid_profile", "message": str(error)}
            self.set_profile(new_profile)
            return 200, {"profile": new_profile.to_dict()}
        if (method, route) == ("POST", "reset"):
            self.reset()
            return 200, {"profile": self.profile.to_dict()}
        endpoints = ["GET requests", "GET stats", "GET in-flight", "GET profile", "POST profile", "POST reset"]
        return 404, {
            "error": "unknown_control_endpoint",
            "message": f"no control endpoint {method} {path}; use one of {', '.join(endpoints)} under {CONTROL_PREFIX}",
        }


class _LoopbackServer(ThreadingHTTPServer):
    # The stdlib's listen backlog of 5 drops connections under a burst, and the kernel's 1 s SYN retry would
    # then shape the traffic before the bucket sees it, hiding exactly the bursts the referee must catch.
    request_queue_size = 128
    daemon_threads = True


def _make_handler(simulator: DownstreamSimulator) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        server_version = "DownstreamSimulator/1.0"

        def do_GET(self) -> None:
            body = self._read_body()
            if _is_control_path(self.path):
                status, answer = simulator.handle_control(self.command, self.path, body)
                self._send(status, {"Content-Type": "application/json"}, json.dumps(answer).encode("utf-8"))
                return
            profile = simulator.profile
            if (self.command, urlsplit(self.path).path) == ("POST", profile.token_path) and profile.oauth_client_id:
                status, answer = simulator.issue_token(dict(self.headers.items()), body)
                self._send(status, {"Content-Type": "application/json", "Cache-Control": "no-store"},
                           json.dumps(answer).encode("utf-8"))
                return
            response = simulator.handle(self.command, self.path, dict(self.headers.items()), body)
            self._send(response.status, response.headers, response.body_bytes())

        do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

        def _read_body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length > 0 else b""

        def _send(self, status: int, headers: Mapping[str, str], payload: bytes) -> None:
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                # The caller gave up first, which is exactly what a simulated timeout is for.
                logger.debug("client disconnected before the %s answer", status)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's parameter name
            logger.debug("%s " + format, self.address_string(), *args)

    return _Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localcloud.referee.downstream_simulator",
        description="Serve a rate-limited third-party stand-in on 127.0.0.1 until interrupted.",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="crm")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed for latency and fault draws (default: 0)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    # SIGTERM (docker stop, Popen.terminate) should leave through the same clean shutdown as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with DownstreamSimulator(PROFILES[args.profile], seed=args.seed, port=args.port) as simulator:
        print(f"listening on {simulator.base_url}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
        finally:
            stats = simulator.stats()
            print(f"stopped after {stats['total_requests']} requests: {stats['by_status']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
