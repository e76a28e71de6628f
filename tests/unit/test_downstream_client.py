"""The downstream client over real HTTP: kept-alive connections, and every kind of answer mapped to its error."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from throttling.runtime.downstream_client import (
    DownstreamClient,
    DownstreamRejected,
    DownstreamThrottled,
    DownstreamUnavailable,
    KeepAliveOpener,
    published_rate,
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps the connection open between requests, as real APIs do
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.server.connections.add(self.client_address)
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.bodies.append((self.path, body, self.headers.get("X-Correlation-Id")))
        # An HTTP-date two minutes ahead: its own comma must not split it from itself.
        in_two_minutes = formatdate(time.time() + 120, usegmt=True)
        status, headers, delay = {
            "/ok": (200, [], 0.0),
            "/throttled": (429, [("Retry-After", "3")], 0.0),
            "/broken": (503, [], 0.0),
            "/missing": (404, [], 0.0),
            "/slow": (200, [], 1.0),
            # The same header on two lines, as servers and proxies send it
            "/throttled-twice": (429, [("Retry-After", "120"), ("Retry-After", "120")], 0.0),
            "/throttled-disagreeing": (429, [("Retry-After", "2"), ("retry-after", "120")], 0.0),
            "/throttled-dates": (429, [("Retry-After", in_two_minutes), ("Retry-After", in_two_minutes)], 0.0),
            "/down-twice": (503, [("Retry-After", "120"), ("Retry-After", "120")], 0.0),
            "/quota-twice": (200, [("X-RateLimit-Remaining", "7"), ("X-RateLimit-Remaining", "0"),
                                   ("X-RateLimit-Reset", "30"), ("X-RateLimit-Reset", "30")], 0.0),
            "/published": (200, [("RateLimit-Policy", "5;w=1")], 0.0),
            "/throttled-published": (429, [("Retry-After", "1"), ("RateLimit-Policy", '"default";q=10;w=4')], 0.0),
            "/windowless": (200, [("X-RateLimit-Limit", "5000")], 0.0),
        }[self.path]
        time.sleep(delay)
        answer = json.dumps({"echo": body}).encode()
        self.send_response(status)
        for name, value in [*headers, ("Content-Type", "application/json"), ("Content-Length", str(len(answer)))]:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections: set[tuple[str, int]] = set()
        self.bodies: list = []


@pytest.fixture
def server() -> Iterator[_Server]:
    started = _Server()
    thread = threading.Thread(target=started.serve_forever, daemon=True)
    thread.start()
    yield started
    started.shutdown()
    started.server_close()


@pytest.fixture
def client(server) -> DownstreamClient:
    host, port = server.server_address
    return DownstreamClient("crm", f"http://{host}:{port}", timeout_sec=0.5, opener=KeepAliveOpener())


def test_calls_reuse_one_connection_instead_of_a_handshake_each(client, server):
    for i in range(5):
        response = client.call("POST", "/ok", body={"n": i}, headers={"X-Correlation-Id": f"c-{i}"})
        assert (response.status, response.body) == (200, {"echo": {"n": i}})
    # One connection carried all five, with every body and header as sent
    assert len(server.connections) == 1
    assert server.bodies == [("/ok", {"n": i}, f"c-{i}") for i in range(5)]


@pytest.mark.parametrize(
    ("path", "error", "details"),
    [
        ("/throttled", DownstreamThrottled, {"status": 429, "retry_after_sec": 3.0}),
        ("/broken", DownstreamUnavailable, {"status": 503}),
        ("/missing", DownstreamRejected, {"status": 404, "body": {"echo": {}}}),
        ("/slow", DownstreamUnavailable, {"timed_out": True}),
    ],
    ids=["429", "503", "404", "timeout"],
)
def test_each_refusal_becomes_the_error_a_workflow_routes_on(client, path, error, details):
    with pytest.raises(error) as raised:
        client.call("POST", path, body={})
    assert details.items() <= raised.value.details.items()


def test_a_refused_connection_is_unavailable_and_not_a_timeout(server):
    host, port = server.server_address
    server.shutdown()
    server.server_close()
    client = DownstreamClient("crm", f"http://{host}:{port}", timeout_sec=0.5, opener=KeepAliveOpener())
    with pytest.raises(DownstreamUnavailable) as raised:
        client.call("POST", "/ok", body={})
    assert raised.value.details["timed_out"] is False


def _urlopen(request: urllib.request.Request, timeout: float):
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - a local test server


@pytest.mark.parametrize("opener", [KeepAliveOpener(), _urlopen], ids=["urllib3-pool", "urllib"])
@pytest.mark.parametrize(
    ("path", "error", "at_least_sec"),
    [
        ("/throttled-twice", DownstreamThrottled, 120),
        ("/throttled-disagreeing", DownstreamThrottled, 120),
        ("/throttled-dates", DownstreamThrottled, 60),  # two minutes, less the whole seconds a date rounds off
        ("/down-twice", DownstreamUnavailable, 120),
    ],
    ids=["same-twice", "disagreeing", "http-dates", "503-twice"],
)
def test_a_retry_after_sent_twice_is_read_through_the_real_client(server, opener, path, error, at_least_sec):
    # GIVEN a downstream that sends its Retry-After on two lines
    host, port = server.server_address
    client = DownstreamClient("crm", f"http://{host}:{port}", timeout_sec=2, opener=opener)
    # WHEN it refuses a call
    with pytest.raises(error) as raised:
        client.call("POST", path, body={})
    # THEN the workflow is told to wait the (longest) time asked, not left to retry after seconds
    assert at_least_sec <= raised.value.details["retry_after_sec"] <= 120


@pytest.mark.parametrize("opener", [KeepAliveOpener(), _urlopen], ids=["urllib3-pool", "urllib"])
def test_rate_limit_headers_sent_twice_keep_the_safest_reading(server, opener):
    host, port = server.server_address
    client = DownstreamClient("crm", f"http://{host}:{port}", timeout_sec=2, opener=opener)
    # GIVEN an answer saying 7 and 0 remaining / WHEN read THEN 0 remaining and a wait until the reset
    response = client.call("POST", "/quota-twice", body={})
    assert (response.rate_limit.remaining, response.rate_limit.wait_sec) == (0, 30.0)


def test_a_published_limit_comes_with_a_response_and_with_a_429_alike(client):
    # GIVEN / WHEN a 200 publishing 5 per second, and a 429 publishing 10 per 4 seconds
    response = client.call("POST", "/published", body={})
    with pytest.raises(DownstreamThrottled) as throttled:
        client.call("POST", "/throttled-published", body={})

    # THEN each carries its rate for the shared limiter, the error keeping its answer's headers
    assert published_rate(response) == 5.0
    assert throttled.value.rate_limit.wait_sec == 1.0
    assert published_rate(throttled.value) == 2.5
    # AND a limit with no window publishes nothing, nor does an error that never had an answer
    assert published_rate(client.call("POST", "/windowless", body={})) is None
    with pytest.raises(DownstreamUnavailable) as timed_out:
        client.call("POST", "/slow", body={})
    assert published_rate(timed_out.value) is None
    assert published_rate(ValueError("not an answer")) is None
