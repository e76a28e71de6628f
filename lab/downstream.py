"""A model of a rate-limited third party in virtual time: the lab's stand-in for the CRM and its kin.

What it models, in the order a call meets it:
- the network: each way takes a uniform draw from `network_ms` (so calls admitted apart by our
  limiter can arrive together, which the room our limiter leaves in the downstream's bucket absorbs:
  `throttling.core.planning.limiter_settings`);
- outages: inside an outage window every call is answered 503 with a Retry-After pointing at the
  window's end (whole seconds, at least 1), and spends nothing;
- a hard rate limit: a token bucket of `burst` tokens refilled at `rate_per_sec`; a call that finds
  no token is answered 429 with `Retry-After: max(1, ceil(seconds until the next token))`, as HTTP
  gives it in whole seconds;
- a concurrency capacity: `concurrency` calls are served at once, the rest wait first-come
  first-served (the downstream's own queue: latency grows, nothing is refused);
- a latency distribution for the service time, scaled by a ramp over time;
- a 5xx rate: that share of the admitted calls is answered 500 after its service time;
- capacity that changes over time: at each `capacity_changes` time the rate and the burst become
  that factor of the model's (tokens already earned are kept, clamped to the new burst, as
  `localcloud.referee.downstream_simulator` does);
- with `publishes_limit`, every answer carries the rate its bucket had when the call reached it, as
  a `RateLimit-Policy: <limit>;w=1` header would (the referee's simulator sends one); without it, a
  caller learns the limit only from 429s.

What it simplifies: one bucket for every caller (real APIs may key it by account or token); no
per-call retry of its own; a call the caller stopped waiting for (a timeout) is still served, so
its work and its slot are wasted; the network never loses a call; Retry-After is the exact wait
rounded up, where real services may send a fixed value.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from lab.engine import Simulation
from localcloud.referee.downstream_simulator import TokenBucket

__all__ = ["OK", "SERVER_ERROR", "THROTTLED", "TIMED_OUT", "UNAVAILABLE", "Downstream", "DownstreamModel", "Latency"]

OK, THROTTLED, SERVER_ERROR, UNAVAILABLE, TIMED_OUT = 200, 429, 500, 503, 504
# Float noise must not turn an exact wait of 1 s into a Retry-After of 2.
_EPSILON = 1e-9

AnswerCallback = Callable[..., Any]


@dataclass(frozen=True)
class Latency:
    """A service-time distribution: `uniform` (median +- jitter), `lognormal` (median, sigma) or `fixed`."""

    kind: Literal["uniform", "lognormal", "fixed"] = "uniform"
    median_ms: float = 200.0
    jitter_ms: float = 50.0
    sigma: float = 0.5
    max_ms: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("uniform", "lognormal", "fixed"):
            raise ValueError(f"latency kind must be uniform, lognormal or fixed, got {self.kind!r}")
        if not self.median_ms > 0 or not 0 <= self.jitter_ms <= self.median_ms:
            raise ValueError(f"latency needs median_ms > 0 and 0 <= jitter_ms <= median_ms, "
                             f"got {self.median_ms!r} and {self.jitter_ms!r}")

    def sample_sec(self, rng: random.Random) -> float:
        if self.kind == "uniform":
            sample_ms = rng.uniform(self.median_ms - self.jitter_ms, self.median_ms + self.jitter_ms)
        elif self.kind == "lognormal":
            sample_ms = rng.lognormvariate(math.log(self.median_ms), self.sigma)
        else:
            sample_ms = self.median_ms
        if self.max_ms is not None:
            sample_ms = min(sample_ms, self.max_ms)
        return sample_ms / 1000.0

    @property
    def mean_ms(self) -> float:
        if self.kind == "lognormal":
            return self.median_ms * math.exp(self.sigma ** 2 / 2)
        return self.median_ms


@dataclass(frozen=True)
class DownstreamModel:
    """A downstream's contract and behaviour (see the module docstring for what each field does).

    :param capacity_changes: `(at_sec, factor)`: from `at_sec` on, rate and burst are `factor` times these.
    :param latency_ramp: `(start_sec, end_sec, factor)`: service times grow linearly from x1 at
        `start_sec` to x`factor` at `end_sec`, and stay there.
    :param outages: `(start_sec, end_sec)` windows answered 503.
    """

    rate_per_sec: float = 10.0
    burst: int = 10
    concurrency: int = 8
    latency: Latency = field(default_factory=Latency)
    network_ms: tuple[float, float] = (10.0, 30.0)
    server_error_rate: float = 0.0
    outages: tuple[tuple[float, float], ...] = ()
    capacity_changes: tuple[tuple[float, float], ...] = ()
    latency_ramp: tuple[float, float, float] | None = None
    publishes_limit: bool = False

    def __post_init__(self) -> None:
        if not self.rate_per_sec > 0 or self.burst < 1 or self.concurrency < 1:
            raise ValueError(f"a downstream needs rate_per_sec > 0, burst >= 1 and concurrency >= 1, got "
                             f"{self.rate_per_sec!r}, {self.burst!r}, {self.concurrency!r}")
        if not 0 <= self.server_error_rate <= 1:
            raise ValueError(f"server_error_rate must be in [0, 1], got {self.server_error_rate!r}")
        for start, end in self.outages:
            if not 0 <= start < end:
                raise ValueError(f"an outage must be (start_sec, end_sec) with 0 <= start < end, got {(start, end)!r}")
        for at_sec, factor in self.capacity_changes:
            if not (at_sec >= 0 and factor > 0):
                raise ValueError(f"a capacity change must be (at_sec >= 0, factor > 0), got {(at_sec, factor)!r}")

    def latency_factor_at(self, t: float) -> float:
        if self.latency_ramp is None:
            return 1.0
        start, end, factor = self.latency_ramp
        if t <= start:
            return 1.0
        if t >= end:
            return factor
        return 1.0 + (factor - 1.0) * (t - start) / (end - start)

    def capacity_factor_at(self, t: float) -> float:
        factor = 1.0
        for at_sec, changed in sorted(self.capacity_changes):
            if t >= at_sec:
                factor = changed
        return factor

    def in_outage(self, t: float) -> bool:
        return any(start <= t < end for start, end in self.outages)

    def capacity_rps_at(self, t: float) -> float:
        """The most it can answer successfully per second at `t`: its rate limit, or its concurrency over
        its mean service time when that is lower; zero in an outage. Goodput is measured against this."""
        if self.in_outage(t):
            return 0.0
        service_sec = self.latency.mean_ms * self.latency_factor_at(t) / 1000
        return min(self.rate_per_sec * self.capacity_factor_at(t), self.concurrency / service_sec) * (
            1.0 - self.server_error_rate)


class Downstream:
    """The model running in a `Simulation`: `send` a call, get
    `on_answer(status, latency_sec, retry_after_sec, published_per_sec, *args)` (published_per_sec None
    unless the model `publishes_limit`, and on a timeout)."""

    def __init__(self, sim: Simulation, model: DownstreamModel) -> None:
        self.sim = sim
        self.model = model
        self._bucket = TokenBucket(model.rate_per_sec, model.burst, now=0.0)
        self._servers_free_at = [0.0] * model.concurrency
        self._network = sim.rng("network")
        self._service = sim.rng("service")
        self._faults = sim.rng("faults")
        self.arrived = 0
        self.admitted = 0
        self.in_flight = 0
        self.max_in_flight = 0
        for at_sec, factor in model.capacity_changes:
            sim.at(at_sec, self._change_capacity, factor)

    def send(self, timeout_sec: float, on_answer: AnswerCallback, *args: Any) -> None:
        """A call leaves the caller now; the caller hears back after the answer or after `timeout_sec`."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        sent_at = self.sim.now
        self.sim.after(self._one_way_sec(), self._arrive, sent_at, timeout_sec, on_answer, args)

    def _arrive(self, sent_at: float, timeout_sec: float, on_answer: AnswerCallback, args: tuple[Any, ...]) -> None:
        now = self.sim.now
        self.arrived += 1
        outage_end = self._outage_end(now)
        if outage_end is not None:
            self._answer_after(self._one_way_sec(), sent_at, timeout_sec, UNAVAILABLE, outage_end - now, on_answer, args)
            return
        if not self._bucket.try_take(now):
            wait = self._bucket.seconds_until_next_token(now)
            self._answer_after(self._one_way_sec(), sent_at, timeout_sec, THROTTLED, wait, on_answer, args,
                               self._published())
            return
        self.admitted += 1
        starts_at = max(now, heapq.heappop(self._servers_free_at))
        done_at = starts_at + self.model.latency.sample_sec(self._service) * self.model.latency_factor_at(now)
        heapq.heappush(self._servers_free_at, done_at)
        status = SERVER_ERROR if self._faults.random() < self.model.server_error_rate else OK
        self._answer_after(done_at - now + self._one_way_sec(), sent_at, timeout_sec, status, None, on_answer, args,
                           self._published())

    def _published(self) -> float | None:
        return self._bucket.rate_per_sec if self.model.publishes_limit else None

    def _answer_after(self, delay_sec: float, sent_at: float, timeout_sec: float, status: int,
                      wait_sec: float | None, on_answer: AnswerCallback, args: tuple[Any, ...],
                      published_per_sec: float | None = None) -> None:
        retry_after = None if wait_sec is None else max(1, math.ceil(wait_sec - _EPSILON))
        answered_at = self.sim.now + delay_sec
        if answered_at - sent_at > timeout_sec:
            self.sim.at(sent_at + timeout_sec, self._deliver, TIMED_OUT, timeout_sec, None, None, on_answer, args)
        else:
            self.sim.at(answered_at, self._deliver, status, answered_at - sent_at, retry_after, published_per_sec,
                        on_answer, args)

    def _deliver(self, status: int, latency_sec: float, retry_after: int | None, published_per_sec: float | None,
                 on_answer: AnswerCallback, args: tuple[Any, ...]) -> None:
        self.in_flight -= 1
        on_answer(status, latency_sec, retry_after, published_per_sec, *args)

    @property
    def rate_per_sec(self) -> float:
        return self._bucket.rate_per_sec

    @property
    def burst(self) -> int:
        return self._bucket.capacity

    def _change_capacity(self, factor: float) -> None:
        self._bucket.resize(self.sim.now, self.model.rate_per_sec * factor,
                            max(1, math.floor(self.model.burst * factor + _EPSILON)))

    def _outage_end(self, t: float) -> float | None:
        ends = [end for start, end in self.model.outages if start <= t < end]
        return max(ends) if ends else None

    def _one_way_sec(self) -> float:
        low, high = self.model.network_ms
        return self._network.uniform(low, high) / 1000.0
