"""Capacity planning by Little's law: the arithmetic the stacks seed with, the CLI shows, the lab runs.

Little's law: the calls in flight L equal the arrival rate lambda times the time each call takes W
(L = lambda x W). Read the other way, N calls kept in flight at latency W offer N / W calls per second
to the downstream: 5 concurrent calls of 200 ms offer 25 req/s, two and a half times a 10 req/s
limit. Every deployed caller takes a token from the shared limiter, which admits a little less than
the limit with half its burst (`limiter_settings`: the downstream's spare bucket is what absorbs
jitter), so the limiter, not the concurrency, is the brake: the concurrency is sized so that it never
starves the limiter (`planned_concurrency`: Little's law over the time a call really holds its slot,
rounded up), and retries back off from one emission interval of the limiter with full jitter. Where
concurrency is the brake on its own (no limiter), `littles_law_concurrency` (floor(limit x W)) is the
most in flight that never offer more than the limit.

Every number comes with the arithmetic that produced it (`CapacityPlan.steps`), so a reader can
check a plan by hand. The controller's defaults and bounds are planned here too, so a stage without
a `control_loop` block, the controller's own policy and the lab's runs start from the same numbers.
Stdlib only: nothing here calls AWS.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Final

from throttling.core import names
from throttling.core.tunables import BURST_BOUNDS, MAX_CONCURRENCY_BOUNDS, RATE_PER_SEC_BOUNDS
from throttling.core.validation import is_finite_number, is_int

__all__ = [
    "DEFAULT_CLEAN_PERIODS_TO_INCREASE",
    "DEFAULT_CONTROLLER_MODE",
    "DEFAULT_COOLDOWN_SEC",
    "DEFAULT_ERROR_RATE_THRESHOLD",
    "DEFAULT_HEADROOM",
    "DEFAULT_MAX_CONCURRENCY_FACTOR",
    "DEFAULT_METRICS_DELAY_SEC",
    "DEFAULT_MIN_CALLS",
    "DEFAULT_MIN_RATE_FRACTION",
    "DEFAULT_PERIOD_SEC",
    "DEFAULT_SETTING_PROPAGATION_SEC",
    "DEFAULT_P99_LATENCY_FACTOR",
    "DEFAULT_THROTTLE_RATE_THRESHOLD",
    "INNER_LOOP_THROTTLE_ALARM_RATE",
    "SUSTAINED_ALARM_DATAPOINTS",
    "SUSTAINED_ALARM_PERIODS",
    "EXPECTED_LATENCY_MS_BOUNDS",
    "HEADROOM_BOUNDS",
    "MAX_RETRY_ATTEMPTS",
    "MIN_CONTROLLER_RATE_PER_SEC",
    "MIN_JITTER_MARGIN_SEC",
    "SLOT_OVERHEAD_MS",
    "SLOW_CALL_FACTOR",
    "CapacityPlan",
    "ConcurrencyCheck",
    "RetryPlan",
    "controller_bounds",
    "headroom_for_margin",
    "in_flight",
    "jitter_margin_sec",
    "limiter_settings",
    "littles_law_concurrency",
    "offered_rps",
    "p99_latency_threshold_ms",
    "plan_capacity",
    "planned_concurrency",
    "retry_plan",
    "slot_time_ms",
    "tunables_document",
]

# The rate headroom a downstream gets unless its config says otherwise (`DownstreamConfig.headroom`).
# Against a burst of 2 or more the downstream's spare bucket absorbs jitter (`limiter_settings`), so
# 1 % only covers rounding and clock drift; a burst-1 downstream needs a real one, which
# `MIN_JITTER_MARGIN_SEC` enforces.
DEFAULT_HEADROOM = 0.01
# The least uneven lag between a decision and its call's arrival a plan must absorb: callers spend
# a token only within half of it (`stale_token_after_sec`), and 50 ms covers a DynamoDB write's
# round trip from Lambda with room for its tail. Every configured downstream clears it (the
# mainframe's 20 % leaves 0.25 s); a burst-1 downstream at the 1 % default would keep 10 ms.
MIN_JITTER_MARGIN_SEC = 0.1
# The time a call holds its slot (a Map iteration, a consumer's batch) is more than the downstream's
# expected latency W: calls run slower than expected (the lab's CRM answers in 200 +- 50 ms), the
# request and its answer cross the network, and the caller first makes the limiter's conditional
# write. Sized on W alone, 2 calls in flight for a 10 req/s, 200 ms CRM deliver about 7.4 req/s and
# leave a quarter of the limiter's tokens unspent (the lab, seed 1). So the plan takes a slot to be held
# a quarter longer than W (the lab's slowest calls) plus 50 ms (the network both ways, 20-60 ms in the
# lab, and a DynamoDB write's round trip, as `MIN_JITTER_MARGIN_SEC` counts it).
SLOW_CALL_FACTOR: Final = 1.25
SLOT_OVERHEAD_MS: Final = 50
# What a downstream's plan may start from, as a stage's config accepts it (`stacks.config` reads these):
# a latency from 1 ms to a minute, and up to half the rate left unused. Its contract (rate, burst) is
# bounded as the Lambdas' tunables are (`throttling.core.tunables`), so a plan never names a setting
# they would clamp.
EXPECTED_LATENCY_MS_BOUNDS: Final = (1, 60_000)
HEADROOM_BOUNDS: Final = (0.0, 0.5)

# The control loop's defaults: what a stage without a `control_loop` block in cdk.json gets, what
# `ControllerPolicy` starts from, and what the lab runs (`stacks.config.ControlLoopConfig` documents each).
DEFAULT_CONTROLLER_MODE: Final = "aimd"
# The controller runs once a period and judges the callers' metrics of the last complete one.
DEFAULT_PERIOD_SEC = 60
# A period with fewer calls says nothing: the alarms and the controller both ignore it.
DEFAULT_MIN_CALLS = 10
DEFAULT_THROTTLE_RATE_THRESHOLD = 0.01
DEFAULT_ERROR_RATE_THRESHOLD = 0.05
DEFAULT_P99_LATENCY_FACTOR = 5.0
DEFAULT_MAX_CONCURRENCY_FACTOR = 4
DEFAULT_MIN_RATE_FRACTION = 0.1
DEFAULT_CLEAN_PERIODS_TO_INCREASE = 3
DEFAULT_COOLDOWN_SEC = 120
DEFAULT_METRICS_DELAY_SEC = 30
# A sustained alarm: above its threshold in 2 of the last 3 periods. The p99 alarm is one; so is the
# 429 alarm where the rate is the limiter's inner loop's, which answers a lone minute's 429s itself.
SUSTAINED_ALARM_PERIODS = 3
SUSTAINED_ALARM_DATAPOINTS = 2
# Where the inner loop owns the rate, the 429s it draws itself while it finds a limit that moved: in
# the lab, up to 2 % of a minute's answers after a silent downstream halves (one 429 per cut or
# probe), never 5 %. Above that, sustained, the inner loop is not containing them.
INNER_LOOP_THROTTLE_ALARM_RATE = 0.05
# How long a setting the controller writes takes to reach every caller: their tunables cache (the
# stages' `tunables_cache_sec`). Data before that still show the setting it replaced.
DEFAULT_SETTING_PROPAGATION_SEC = 5
# The lowest rate the controller's bounds may name (req/s): a bound rounds to 3 decimals.
MIN_CONTROLLER_RATE_PER_SEC = 0.01
# Step Functions' Retry fields: IntervalSeconds and MaxDelaySeconds are whole seconds >= 1.
MIN_RETRY_INTERVAL_SEC = 1
# Beyond this many attempts a retry policy is hiding an outage, not riding out a blip.
MAX_RETRY_ATTEMPTS = 20


@dataclass(frozen=True)
class ConcurrencyCheck:
    """What a proposed number of calls in flight offers the downstream, and whether the limit takes it."""

    concurrency: int
    offered_rps: float
    limit_rps: float

    @property
    def exceeds_limit(self) -> bool:
        return self.offered_rps > self.limit_rps

    @property
    def times_the_limit(self) -> float:
        return self.offered_rps / self.limit_rps


@dataclass(frozen=True)
class RetryPlan:
    """A Step Functions `Retry` for throttling errors (`JitterStrategy: FULL`)."""

    interval_sec: int
    backoff_rate: float
    max_delay_sec: int
    max_attempts: int
    mean_total_wait_sec: float
    worst_total_wait_sec: float

    def as_asl(self) -> dict[str, Any]:
        return {
            "IntervalSeconds": self.interval_sec,
            "BackoffRate": self.backoff_rate,
            "MaxDelaySeconds": self.max_delay_sec,
            "MaxAttempts": self.max_attempts,
            "JitterStrategy": "FULL",
        }


@dataclass(frozen=True)
class CapacityPlan:
    """The settings that keep one downstream at its limit and no further."""

    limit_rps: float
    latency_ms: float
    burst_limit: int
    headroom: float
    # Little's law rounded down: the most in flight that never offer more than the limit at the
    # expected latency, for where concurrency is the brake on its own (no shared limiter).
    littles_law_concurrency: int
    # How long a call holds its slot, as the plan counts it (`slot_time_ms`).
    slot_time_ms: float
    # The downstream's concurrency contract (its semaphore's permits), None when it sets none.
    max_in_flight: int | None
    # Behind the shared limiter: enough calls in flight to spend every token (`planned_concurrency`).
    map_concurrency: int
    # What `map_concurrency` offers at the expected latency (the limiter holds it to its rate).
    map_offered_rps: float
    consumer_max_concurrency: int
    limiter_rate_per_sec: float
    limiter_burst: int
    jitter_margin_sec: float
    retry: RetryPlan
    check: ConcurrencyCheck | None
    steps: tuple[str, ...]
    warnings: tuple[str, ...]

    def tunables_document(self) -> dict[str, Any]:
        """The SSM document (`/throttling/<stage>/downstreams/<name>`) this plan amounts to."""
        return tunables_document(self.limiter_rate_per_sec, self.limiter_burst, self.map_concurrency)

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["retry"]["asl"] = self.retry.as_asl()
        result["tunables_document"] = self.tunables_document()
        if self.check is not None:
            result["check"]["exceeds_limit"] = self.check.exceeds_limit
        result["steps"] = list(self.steps)
        result["warnings"] = list(self.warnings)
        return result


def limiter_settings(limit_rps: float, burst: int, headroom: float) -> tuple[float, int]:
    """The shared limiter's rate and burst for a downstream that allows `limit_rps` with `burst`.

    Our limiter decides when a call may go; the call reaches the downstream only after the
    limiter's write returns and the request travels, so calls decided apart can arrive closer
    together. With our rate r and burst b under the downstream's R and B, arrivals may lag their
    decisions unevenly by

        margin = (B + 1 - b) / r - 1 / R   (`jitter_margin_sec`)

    and never be refused: GCRA keeps any n decisions at least (n - b) / r apart, the downstream
    refuses n arrivals within less than (n - B) / R, and with r <= R the tightest n is B + 1. Each
    burst token we give up adds a whole emission interval (1 / r) to the margin; a rate headroom h
    adds only about h x (B + 1 - b) / R. For the CRM (10 req/s, burst 10) that is 0.1 s a token
    against 0.006 s per 1 % of rate: 10 % off both (9 req/s, burst 9) keeps 0.12 s and 90 % of the
    contract, 9.9 req/s with burst 5 keeps 0.51 s and 99 %.

    Our own burst buys nothing: whoever waits for a token waits on our side (a workflow's retry, a
    consumer that postpones its batch), and the steady rate, not the first second, is what drains a
    backlog. So the headroom goes into the burst: ours is half the downstream's, at least 1 (and
    never more than the rate headroom leaves of it), and the rate keeps only `headroom`. A burst-1
    downstream has no spare bucket: there b is 1 whatever we do, the margin is headroom / ((1 -
    headroom) x R), and only a real rate headroom buys it (the mainframe's 20 %: 0.25 s).
    """
    # Rounded to 3 decimals for people, but never past the contract (1.2656 req/s at no headroom would
    # round up to 1.266) nor below the least rate the Lambdas take: either would be clamped.
    rate = min(limit_rps, max(RATE_PER_SEC_BOUNDS[0], round(limit_rps * (1 - headroom), 3)))
    our_burst = max(1, min(burst // 2, math.floor(burst * (1 - headroom) + 1e-9)))
    return rate, our_burst


def jitter_margin_sec(limit_rps: float, burst: int, limiter_rate_per_sec: float, limiter_burst: int) -> float:
    """How unevenly calls may lag their limiter's decisions and never meet a 429 (see `limiter_settings`).

    Zero when our limiter is as loose as the downstream's own bucket: then any lag may meet a 429.
    """
    return (burst + 1 - limiter_burst) / limiter_rate_per_sec - 1 / limit_rps


def headroom_for_margin(limit_rps: float, burst: int, margin_sec: float = MIN_JITTER_MARGIN_SEC) -> float:
    """The least rate headroom, rounded up to a hundredth, whose plan keeps at least `margin_sec`.

    Solves (B + 1 - b) / (R x (1 - h)) - 1 / R >= margin for h with b = max(1, floor(B / 2)), the
    burst of any headroom up to a half (above that ours only shrinks, and the margin with it grows).
    """
    our_burst = max(1, burst // 2)
    needed = 1 - (burst + 1 - our_burst) / (1 + limit_rps * margin_sec)
    return max(0.0, math.ceil(needed * 100 - 1e-9) / 100)


def in_flight(rate_per_sec: float, latency_ms: float) -> float:
    """Little's law: calls in flight at `rate_per_sec` when each takes `latency_ms` (L = lambda x W)."""
    return rate_per_sec * latency_ms / 1000


def offered_rps(concurrency: float, latency_ms: float) -> float:
    """The rate `concurrency` calls kept in flight offer the downstream (lambda = L / W)."""
    _positive("latency_ms", latency_ms)
    return concurrency / (latency_ms / 1000)


def tunables_document(rate_per_sec: float, burst: int, max_concurrency: int) -> dict[str, Any]:
    """A downstream's tunables document as the stack seeds it: the controller's to move ("mode": "auto")."""
    return {
        names.TUNABLE_RATE_PER_SEC: rate_per_sec,
        names.TUNABLE_BURST: burst,
        names.TUNABLE_MAX_CONCURRENCY: max_concurrency,
        names.TUNABLE_MODE: names.TUNABLES_MODE_AUTO,
    }


def littles_law_concurrency(limit_rps: float, latency_ms: float) -> int:
    """Calls in flight that never offer more than `limit_rps` at `latency_ms`, rounded down, never below 1.

    The concurrency where it is the brake on its own, with no shared limiter (the lab's
    `static_littles_law`); behind the limiter the plan uses `planned_concurrency`. At 10 req/s and
    200 ms that is 2 in flight, where a guess of 5 would offer 25 req/s. The epsilon keeps float
    noise (2.9999999999) from costing a whole call.
    """
    return max(1, math.floor(in_flight(limit_rps, latency_ms) + 1e-9))


def slot_time_ms(latency_ms: float) -> float:
    """How long a call holds its slot when the downstream answers in `latency_ms`: a quarter slower than
    expected plus the network both ways and the limiter's round trip (`SLOW_CALL_FACTOR`, `SLOT_OVERHEAD_MS`)."""
    return latency_ms * SLOW_CALL_FACTOR + SLOT_OVERHEAD_MS


def planned_concurrency(limit_rps: float, latency_ms: float, max_in_flight: int | None = None) -> int:
    """Calls in flight that spend every token of a shared limiter at `limit_rps`: Little's law over the
    time a call holds its slot (`slot_time_ms`), rounded up, never below 1.

    The limiter holds the rate, so a call too many only waits for its token; a call too few leaves
    tokens unspent. At 10 req/s and 200 ms that is ceil(10 x 0.3) = 3, where floor(10 x 0.2) = 2
    delivers about 7.4 req/s. Never above the `MAX_CONCURRENCY_BOUNDS` the Lambdas take, nor above the
    downstream's `max_in_flight` (its semaphore lets no more through: the rest would only queue for a
    permit). The epsilon keeps float noise (3.0000000001) from adding a whole call.
    """
    needed = max(1, math.ceil(in_flight(limit_rps, slot_time_ms(latency_ms)) - 1e-9))
    if max_in_flight is not None:
        needed = min(needed, max_in_flight)
    return min(needed, MAX_CONCURRENCY_BOUNDS[1])


def controller_bounds(
    limit_rps: float,
    burst: int,
    expected_latency_ms: int,
    headroom: float = DEFAULT_HEADROOM,
    *,
    max_concurrency_factor: int = DEFAULT_MAX_CONCURRENCY_FACTOR,
    min_rate_fraction: float = DEFAULT_MIN_RATE_FRACTION,
    max_in_flight: int | None = None,
) -> dict[str, float | int]:
    """Where the controller may move a downstream (read by `throttling.core.controller.Bounds.from_document`).

    The rate and burst ceilings are the planned ones (`limiter_settings`: the contract less the
    headroom, half the downstream's burst, the room kept for jitter); the concurrency ceiling is
    `max_concurrency_factor` times the Little's-law concurrency (`littles_law_concurrency`), and never
    below the planned one the seed starts from (`planned_concurrency`), nor above the
    `MAX_CONCURRENCY_BOUNDS` the Lambdas take or the downstream's `max_in_flight`; the rate floor
    `min_rate_fraction` of the planned rate (a downstream that is down is the breaker's job, not the
    controller's).

    The ceiling stays a multiple of Little's law rounded down, not of the plan: concurrency above it piles calls
    onto a downstream that has slowed down (the lab's latency creep, where it serves 4 at once: a
    ceiling of 4 x 3 = 12 for the CRM netted 0.92 of the limit at worst against 0.995 at 4 x 2 = 8).
    """
    rate, our_burst = limiter_settings(limit_rps, burst, headroom)
    planned = planned_concurrency(limit_rps, expected_latency_ms, max_in_flight)
    ceiling = max(planned, min(littles_law_concurrency(limit_rps, expected_latency_ms) * max_concurrency_factor,
                               MAX_CONCURRENCY_BOUNDS[1]))
    if max_in_flight is not None:
        ceiling = min(ceiling, max_in_flight)
    return {
        "min_concurrency": 1,
        "max_concurrency": max(1, ceiling),
        "min_rate_per_sec": max(MIN_CONTROLLER_RATE_PER_SEC, round(rate * min_rate_fraction, 3)),
        "max_rate_per_sec": rate,
        "max_burst": our_burst,
        "expected_latency_ms": expected_latency_ms,
    }


def p99_latency_threshold_ms(
    expected_latency_ms: float, timeout_sec: float, p99_latency_factor: float = DEFAULT_P99_LATENCY_FACTOR
) -> float:
    """A p99 this slow means slow down: a slow call as the breaker counts it, never beyond the timeout."""
    return float(min(expected_latency_ms * p99_latency_factor, timeout_sec * 1000))


def retry_plan(
    limiter_rate_per_sec: float,
    *,
    ride_out_sec: float = 60.0,
    max_delay_sec: int = 30,
    backoff_rate: float = 2.0,
) -> tuple[RetryPlan, list[str]]:
    """Retries that start one emission interval out and, on average, ride out `ride_out_sec`.

    The first wait is one emission interval of the limiter (sooner, no token is there to take),
    rounded up to whole seconds. With full jitter a wait is uniform in [0, delay], so its mean is
    half the delay: attempts are added until the mean waits add up to `ride_out_sec`.
    """
    _positive("limiter_rate_per_sec", limiter_rate_per_sec)
    _positive("ride_out_sec", ride_out_sec)
    if not is_int(max_delay_sec) or max_delay_sec < MIN_RETRY_INTERVAL_SEC:
        raise ValueError(f"max_delay_sec must be a whole number of seconds >= 1, got {max_delay_sec!r}")
    if not is_finite_number(backoff_rate) or backoff_rate < 1:
        raise ValueError(f"backoff_rate must be a number >= 1, got {backoff_rate!r}")
    emission_interval = 1 / limiter_rate_per_sec
    interval = max(MIN_RETRY_INTERVAL_SEC, math.ceil(emission_interval - 1e-9))
    cap = max(max_delay_sec, interval)
    delays: list[float] = []
    while sum(delays) / 2 < ride_out_sec and len(delays) < MAX_RETRY_ATTEMPTS:
        delays.append(min(interval * backoff_rate ** len(delays), cap))
    plan = RetryPlan(
        interval_sec=interval,
        backoff_rate=backoff_rate,
        max_delay_sec=cap,
        max_attempts=len(delays),
        mean_total_wait_sec=round(sum(delays) / 2, 3),
        worst_total_wait_sec=round(sum(delays), 3),
    )
    steps = [
        f"retry IntervalSeconds = max(1, ceil(1 / {_n(limiter_rate_per_sec)} req/s)) = "
        f"max(1, ceil({_n(round(emission_interval, 3))} s)) = {interval} s (sooner, the limiter has no token yet)",
        f"retry delays (BackoffRate {_n(backoff_rate)}, MaxDelaySeconds {cap}): "
        f"{' + '.join(_n(d) for d in delays)} = {_n(plan.worst_total_wait_sec)} s at worst",
        f"retry MaxAttempts = {plan.max_attempts}: with FULL jitter the mean wait is half the delay, "
        f"{_n(plan.worst_total_wait_sec)} / 2 = {_n(plan.mean_total_wait_sec)} s "
        f"{'>=' if plan.mean_total_wait_sec >= ride_out_sec else '<'} {_n(ride_out_sec)} s to ride out",
    ]
    return plan, steps


def plan_capacity(
    limit_rps: float,
    latency_ms: float,
    *,
    burst: int | None = None,
    headroom: float = DEFAULT_HEADROOM,
    check_concurrency: int | None = None,
    ride_out_sec: float = 60.0,
    max_retry_delay_sec: int = 30,
    max_in_flight: int | None = None,
) -> CapacityPlan:
    """Plan one downstream from its contract (`limit_rps`, `burst`) and its expected latency.

    - Map concurrency: every deployed caller takes the shared limiter's token, so the limiter holds
      the rate and the concurrency must never starve it: ceil(limit x slot time), where a call holds
      its slot W x `SLOW_CALL_FACTOR` + `SLOT_OVERHEAD_MS` (`planned_concurrency`), never below 1.
      At W it offers more than the limit; the limiter holds that to its rate. Never above the
      downstream's `max_in_flight` (its semaphore lets no more through) nor the 1,000 the Lambdas
      take (`MAX_CONCURRENCY_BOUNDS`: beyond it they would clamp the document); a cap that leaves
      tokens unspent is a warning. The plan also gives floor(limit x W) (`littles_law_concurrency`),
      the most in flight that never offer more than the limit, for where concurrency is the brake on
      its own; where even 1 call offers more, a warning says only the limiter holds the rate.
    - Queue consumer: the Map's, but never below 2 (Lambda's minimum for SQS); extra batches wait
      at the limiter, which holds the rate whatever the concurrency.
    - Limiter: the limit less `headroom` and half the burst (`limiter_settings`, which
      `DownstreamConfig` seeds too), with the jitter margin that leaves; a margin below
      `MIN_JITTER_MARGIN_SEC` is a warning naming the headroom that would keep it.
    - Retries: see `retry_plan`.

    Every input is refused outside the bounds a stage's config and the Lambdas' tunables apply
    (`RATE_PER_SEC_BOUNDS`, `BURST_BOUNDS`, `EXPECTED_LATENCY_MS_BOUNDS`, `HEADROOM_BOUNDS`).

    :param burst: the downstream's burst allowance; default one second's worth, floor(limit), in `BURST_BOUNDS`.
    :param headroom: fraction of the limit left unused; default `DEFAULT_HEADROOM` (1 %).
    :param check_concurrency: a proposed number of calls in flight to test against the limit.
    :param max_in_flight: the downstream's concurrency contract (the permits of its semaphore); default
        None, no such contract. The plan never names more calls in flight.
    """
    _within("limit_rps", limit_rps, RATE_PER_SEC_BOUNDS, "req/s, the rates the Lambdas' tunables take")
    _within("latency_ms", latency_ms, EXPECTED_LATENCY_MS_BOUNDS, "ms, the latencies a stage's config takes")
    _within("headroom", headroom, HEADROOM_BOUNDS, "the share of the limit left unused; 0.01 leaves 1%")
    if burst is None:
        burst = min(BURST_BOUNDS[1], max(BURST_BOUNDS[0], math.floor(limit_rps)))
    if not is_int(burst) or not BURST_BOUNDS[0] <= burst <= BURST_BOUNDS[1]:
        raise ValueError(f"burst must be a whole number in [{BURST_BOUNDS[0]}, {BURST_BOUNDS[1]}] (the bursts the"
                         f" Lambdas' tunables take), got {burst!r}")
    if check_concurrency is not None and (
        not is_int(check_concurrency) or check_concurrency < 1
    ):
        raise ValueError(f"check_concurrency must be a whole number >= 1, got {check_concurrency!r}")
    if max_in_flight is not None and (not is_int(max_in_flight) or max_in_flight < 1):
        raise ValueError(f"max_in_flight must be a whole number >= 1 (the calls the downstream takes at once) or None"
                         f" (no such contract), got {max_in_flight!r}")

    latency_sec = latency_ms / 1000
    steps = [
        "Little's law: calls in flight L = rate x latency W; so N calls in flight offer N / W req/s",
        f"W = {_n(latency_ms)} ms = {_n(latency_sec)} s",
    ]
    warnings: list[str] = []

    exact = in_flight(limit_rps, latency_ms)
    littles_law = littles_law_concurrency(limit_rps, latency_ms)
    littles_law_offered = offered_rps(littles_law, latency_ms)
    steps.append(
        f"concurrency alone (no limiter) = max(1, floor({_n(limit_rps)} req/s x {_n(latency_sec)} s)) = "
        f"max(1, floor({_n(round(exact, 6))})) = {littles_law}: it offers {littles_law} / {_n(latency_sec)} s = "
        f"{_n(round(littles_law_offered, 6))} req/s "
        + (f"<= {_n(limit_rps)} req/s, the most that never offer more, but calls slower than W leave part of it unused"
           if littles_law_offered <= limit_rps else f"> {_n(limit_rps)} req/s: concurrency alone cannot hold it")
    )
    if littles_law_offered > limit_rps:
        warnings.append(
            f"even 1 call in flight offers {_n(round(littles_law_offered, 6))} req/s > {_n(limit_rps)} req/s: "
            f"concurrency alone cannot hold this limit; every caller must take the shared limiter's token"
        )

    slot_ms = slot_time_ms(latency_ms)
    slot_sec = slot_ms / 1000
    steps.append(
        f"a call holds its slot W x {_n(SLOW_CALL_FACTOR)} + {SLOT_OVERHEAD_MS} ms = {_n(slot_ms)} ms "
        f"(a quarter slower than expected, plus the network both ways and the limiter's round trip)"
    )
    needed = max(1, math.ceil(in_flight(limit_rps, slot_ms) - 1e-9))
    map_concurrency = planned_concurrency(limit_rps, latency_ms, max_in_flight)
    ceiling = MAX_CONCURRENCY_BOUNDS[1]
    caps = []
    if max_in_flight is not None and max_in_flight < needed and max_in_flight <= ceiling:
        caps.append(f"min({max_in_flight} (its max_in_flight: the semaphore lets no more through), {needed}) = "
                    f"{map_concurrency}")
    elif needed > ceiling:
        caps.append(f"min({ceiling} (the most the Lambdas take), {needed}) = {map_concurrency}")
    map_offered = round(offered_rps(map_concurrency, latency_ms), 6)
    spends = round(offered_rps(map_concurrency, slot_ms), 6)
    steps.append(
        f"Map concurrency = max(1, ceil({_n(limit_rps)} req/s x {_n(slot_sec)} s)) = "
        f"max(1, ceil({_n(round(in_flight(limit_rps, slot_ms), 6))})) = {needed}"
        f"{''.join('; ' + cap for cap in caps)}: the shared limiter holds the rate, so as many as spend every token:"
        f" {map_concurrency} / {_n(slot_sec)} s = {_n(spends)} req/s at that pace, "
        f"{map_concurrency} / {_n(latency_sec)} s = {_n(map_offered)} req/s at W"
    )
    if needed > map_concurrency:
        held_by = (f"its max_in_flight of {max_in_flight}" if caps and caps[0].startswith(f"min({max_in_flight} ")
                   else f"the {ceiling} the Lambdas take (they clamp max_concurrency to it)")
        warnings.append(
            f"{needed} calls in flight would be needed to spend every token of {_n(limit_rps)} req/s at"
            f" {_n(slot_ms)} ms a call, but {held_by} caps them: {map_concurrency} in flight offer {_n(spends)} req/s"
            f" at that pace ({_n(map_offered)} req/s at {_n(latency_ms)} ms), so concurrency, not the limiter, may"
            f" hold the rate there"
        )

    check = None
    if check_concurrency is not None:
        offered = offered_rps(check_concurrency, latency_ms)
        check = ConcurrencyCheck(check_concurrency, round(offered, 6), limit_rps)
        times = f"{_n(round(check.times_the_limit, 2))}x it"
        if check.exceeds_limit and check_concurrency > map_concurrency:
            verdict = (f"too many for a {_n(limit_rps)} req/s limit ({times}): more than the {map_concurrency} that"
                       f" spend every token of the shared limiter; the rest only wait for one")
        elif check.exceeds_limit:
            verdict = (f"more than the {_n(limit_rps)} req/s limit ({times}) at W, which the shared limiter holds to"
                       f" its rate; within the plan's {map_concurrency}")
        else:
            verdict = f"within the {_n(limit_rps)} req/s limit"
            if check_concurrency < map_concurrency:
                verdict += f"; fewer than the plan's {map_concurrency}: calls slower than W leave tokens unspent"
        # Third, after the latency, where a reader looks for the verdict on the number they brought.
        steps.insert(2, f"check: {check_concurrency} concurrent calls / {_n(latency_sec)} s = "
                        f"{_n(check.offered_rps)} req/s: {verdict}")

    consumer = max(names.SQS_MIN_MAXIMUM_CONCURRENCY, map_concurrency)
    steps.append(
        f"queue consumer MaximumConcurrency = max({names.SQS_MIN_MAXIMUM_CONCURRENCY} (Lambda's minimum for SQS), "
        f"{map_concurrency}) = {consumer}; reserve at least {consumer} for the function; the limiter holds the rate"
    )

    limiter_rate, limiter_burst = limiter_settings(limit_rps, burst, headroom)
    margin = jitter_margin_sec(limit_rps, burst, limiter_rate, limiter_burst)
    steps.append(
        f"limiter rate_per_sec = {_n(limit_rps)} x (1 - {_n(headroom)}) = {_n(limiter_rate)} req/s; "
        f"burst = max(1, min(floor({burst} / 2), floor({burst} x (1 - {_n(headroom)})))) = {limiter_burst} "
        f"(the downstream's spare bucket absorbs jitter; ours would only let calls leave together)"
    )
    steps.append(
        f"jitter margin = ({burst} + 1 - {limiter_burst}) / {_n(limiter_rate)} req/s - 1 / {_n(limit_rps)} req/s = "
        f"{_n(round(margin, 3))} s: calls may lag their limiter's decisions this unevenly and never meet a 429"
    )
    if margin < MIN_JITTER_MARGIN_SEC:
        warnings.append(
            f"a jitter margin of {_n(round(margin, 3))} s is below {_n(MIN_JITTER_MARGIN_SEC)} s: a call delayed that much "
            f"more than another meets a 429; a headroom of {_n(headroom_for_margin(limit_rps, burst))} keeps "
            f"{_n(MIN_JITTER_MARGIN_SEC)} s"
        )
    if limiter_burst > limiter_rate * 10:
        warnings.append(f"burst {limiter_burst} is more than 10 s worth of {_n(limiter_rate)} req/s")

    retry, retry_steps = retry_plan(limiter_rate, ride_out_sec=ride_out_sec, max_delay_sec=max_retry_delay_sec)
    steps.extend(retry_steps)
    if retry.mean_total_wait_sec < ride_out_sec:
        warnings.append(
            f"{MAX_RETRY_ATTEMPTS} attempts wait {_n(retry.mean_total_wait_sec)} s on average, less than "
            f"{_n(ride_out_sec)} s: raise max_retry_delay_sec or send the rest to a dead-letter queue"
        )

    return CapacityPlan(
        limit_rps=limit_rps,
        latency_ms=latency_ms,
        burst_limit=burst,
        headroom=headroom,
        littles_law_concurrency=littles_law,
        slot_time_ms=slot_ms,
        max_in_flight=max_in_flight,
        map_concurrency=map_concurrency,
        map_offered_rps=map_offered,
        consumer_max_concurrency=consumer,
        limiter_rate_per_sec=limiter_rate,
        limiter_burst=limiter_burst,
        jitter_margin_sec=round(margin, 6),
        retry=retry,
        check=check,
        steps=tuple(steps),
        warnings=tuple(warnings),
    )


def _n(value: float) -> str:
    """A number as people write it: 25, 0.2, 9.5 (no trailing .0, no float noise)."""
    return f"{round(value, 6):g}" if isinstance(value, float) else str(value)


def _within(name: str, value: Any, bounds: tuple[float, float], meaning: str) -> None:
    low, high = bounds
    if not is_finite_number(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{_n(low)}, {_n(high)}] ({meaning}), got {value!r}")


def _positive(name: str, value: Any) -> None:
    if not is_finite_number(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
