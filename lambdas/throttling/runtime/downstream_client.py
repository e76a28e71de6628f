"""HTTP calls to a rate-limited downstream, with its answers turned into errors Step Functions can route.

The exception class names are the error names workflows retry and catch on (`RateLimited` when our
own shared limiter refused the call before it was sent, `DownstreamThrottled` for a 429,
`DownstreamUnavailable` for 5xx, timeouts and refused connections, `DownstreamRejected` for other
4xx, which retrying cannot fix, and `DownstreamUnauthorized` for credentials refused even once
renewed). Their message is a JSON document so a workflow can read
`retry_after_sec` from the error's cause and wait exactly as long as the downstream asked.
An error raised for an answer keeps what its rate-limit headers said (`rate_limit`), as a response
does, so a limit the downstream publishes in a 429 reaches the shared limiter like one in a 200
(`published_rate`).
"""

from __future__ import annotations

import io
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3

from throttling.core.rate_limit_headers import RateLimitInfo, parse_rate_limit_headers


class DownstreamError(Exception):
    """Base of the downstream errors; `details` is what the message carries as JSON, `rate_limit` what the
    answer's headers said (`RateLimitInfo()` when there was no answer, or it said nothing)."""

    def __init__(self, details: Mapping[str, Any], *, rate_limit: RateLimitInfo | None = None) -> None:
        self.details = dict(details)
        self.rate_limit = rate_limit if rate_limit is not None else RateLimitInfo()
        super().__init__(json.dumps(self.details, sort_keys=True))


class RateLimited(DownstreamError):
    """Our shared limiter had no token for this call; it was not sent. Wait `retry_after_sec`."""


class DownstreamThrottled(DownstreamError):
    """The downstream answered 429: slow down, and wait `retry_after_sec` if it said so."""


class DownstreamUnavailable(DownstreamError):
    """5xx, a timeout or a refused connection: worth retrying with backoff."""


class DownstreamRejected(DownstreamError):
    """A 4xx other than 429: the request itself is wrong, so retrying cannot help."""


class DownstreamUnauthorized(DownstreamRejected):
    """The downstream refused our credentials even after they were read again (or they cannot be read): put the
    right value in the secret the message names; retrying with the same secret cannot help."""


@dataclass(frozen=True)
class ThrottlingSignal:
    """A downstream's answer that may ask the whole fleet to slow down (`adaptive_rate.is_throttling_signal`
    decides): its status, and its Retry-After (None when it gave none)."""

    status: int
    retry_after_sec: float | None


def throttling_signal(error: BaseException) -> ThrottlingSignal | None:
    """The answer an error carries when it could be a throttling signal: a 429, or a 503 with a Retry-After
    (a downstream shedding load, as AWS services and many APIs answer it). A 503 without one, another
    5xx or a timeout is a failure, the breaker's business, not a rate to cut: None."""
    if isinstance(error, DownstreamThrottled):
        return ThrottlingSignal(429, _seconds(error.details.get("retry_after_sec")))
    if isinstance(error, DownstreamUnavailable) and error.details.get("status") == 503:
        retry_after_sec = _seconds(error.details.get("retry_after_sec"))
        if retry_after_sec is not None:
            return ThrottlingSignal(503, retry_after_sec)
    return None


def published_rate(answer: DownstreamResponse | BaseException) -> float | None:
    """The rate limit (requests per second) an answer published, a response or an error raised for one; None
    when it published none (`RateLimitInfo.published_per_sec`: only a policy with its window counts)."""
    if isinstance(answer, DownstreamResponse):
        return answer.rate_limit.published_per_sec
    if isinstance(answer, DownstreamError):
        return answer.rate_limit.published_per_sec
    return None


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        return None
    return float(value)


@dataclass(frozen=True)
class DownstreamResponse:
    status: int
    body: Any
    latency_ms: float
    rate_limit: RateLimitInfo = field(default_factory=RateLimitInfo)


Opener = Callable[..., Any]


class KeepAliveOpener:
    """`urllib.request.urlopen`'s contract over connections kept open between calls.

    A connection opened per call puts a TCP and TLS handshake between the limiter's token and the
    call's arrival, after the token was granted: tens of ms on a good day, and the uneven part of it
    is what the downstream's spare burst must absorb (see `throttling.core.rate_limiter.stale_token_after_sec`).
    One pool per execution environment keeps the connections warm across invocations. urllib3 (in
    Lambda's runtime with botocore) does the pooling; this only adapts its answers and errors to
    urlopen's, so `DownstreamClient` reads both alike: an `HTTPError` for 4xx and 5xx, a `URLError`
    whose reason is a `TimeoutError` for a timeout. No retries and no redirects: those are the
    workflow's and the limiter's decisions, not the transport's.
    """

    def __init__(self, connections_per_host: int = 10) -> None:
        self._pool = urllib3.PoolManager(maxsize=connections_per_host, retries=False)

    def __call__(self, request: urllib.request.Request, timeout: float) -> _Answer:
        try:
            answer = self._pool.request(
                request.get_method(), request.full_url, body=request.data, headers=dict(request.header_items()),
                timeout=urllib3.Timeout(total=timeout), retries=False, redirect=False, preload_content=True,
            )
        except urllib3.exceptions.NewConnectionError as error:
            # Caught first: urllib3 derives it from its connect-timeout error, but a refusal is not slowness.
            raise urllib.error.URLError(error) from error
        except urllib3.exceptions.TimeoutError as error:
            raise urllib.error.URLError(TimeoutError(str(error))) from error
        except urllib3.exceptions.HTTPError as error:
            raise urllib.error.URLError(error) from error
        # urllib3's own header dict, not dict() of it: that folds a header sent twice into "120, 120".
        headers = answer.headers
        if answer.status >= 400:
            raise urllib.error.HTTPError(request.full_url, answer.status, answer.reason or "", headers,  # type: ignore[arg-type]
                                         io.BytesIO(answer.data))
        return _Answer(answer.status, answer.data, headers)


@dataclass
class _Answer:
    status: int
    body: bytes
    headers: Any  # urllib3.HTTPHeaderDict: items() yields a repeated header once per value

    def read(self) -> bytes:
        return self.body

    def __enter__(self) -> _Answer:
        return self

    def __exit__(self, *_: Any) -> None:
        return None


# One pool per execution environment: every client of the process shares its warm connections.
KEEP_ALIVE = KeepAliveOpener()


class DownstreamClient:
    """Calls one downstream; `opener` is injectable (defaults to the process's keep-alive pool)."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout_sec: float,
        opener: Opener = KEEP_ALIVE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.timeout_sec = timeout_sec
        self._open = opener
        self._clock = clock

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> DownstreamResponse:
        url = f"{self.base_url}/{path.lstrip('/')}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method.upper())
        request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        started = self._clock()
        try:
            with self._open(request, timeout=self.timeout_sec) as response:
                status, raw, response_headers = response.status, response.read(), _header_pairs(response.headers)
        except urllib.error.HTTPError as error:
            status, raw, response_headers = error.code, error.read(), _header_pairs(error.headers)
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise DownstreamUnavailable(
                {"downstream": self.name, "url": url, "reason": str(reason),
                 # A slow downstream and a failing one call for different remedies; the metrics tell them apart.
                 "timed_out": isinstance(reason, (socket.timeout, TimeoutError))}
            ) from error
        latency_ms = (self._clock() - started) * 1000
        rate_limit = parse_rate_limit_headers(response_headers, now=time.time())
        details = {"downstream": self.name, "status": status, "url": url}
        if status == 429:
            raise DownstreamThrottled({**details, "retry_after_sec": rate_limit.wait_sec}, rate_limit=rate_limit)
        if status >= 500:
            raise DownstreamUnavailable({**details, "retry_after_sec": rate_limit.wait_sec}, rate_limit=rate_limit)
        if status >= 400:
            raise DownstreamRejected({**details, "body": _decode(raw)}, rate_limit=rate_limit)
        return DownstreamResponse(status=status, body=_decode(raw), latency_ms=latency_ms, rate_limit=rate_limit)


def _header_pairs(headers: Any) -> list[tuple[str, str]]:
    """Every (name, value) line of an answer's headers, a header sent twice included twice.

    Both transports' header objects (urllib3's HTTPHeaderDict, http.client's HTTPMessage) list each
    line in items(); a dict() of either keeps one value (urllib) or folds them into one (urllib3).
    """
    if headers is None:
        return []
    return [(str(name), str(value)) for name, value in headers.items()]


def _decode(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text
