"""The one token-taking loop of every caller of the shared limiter, its behaviours as explicit knobs.

A caller asks the limiter for a token before each downstream call. What it does with the answer
is the gate's, in the same order for every caller:
- admitted in time: the token is used;
- admitted too late (the answer took longer than `stale_after_sec`): the token is not spent, since
  a call sent now could reach the downstream too close to calls decided after it; another is
  asked for, at most `max_stale_tokens` per take and only before the deadline, after which the
  caller is refused with a wait of 0 (the limiter is slow right now, not the bucket empty);
- refused: the limiter's wait, plus up to `wake_up_jitter_sec` (waiters woken by one refusal
  would otherwise all ask at the same instant) and at least `min_pause_sec` (a lost race answers
  0 s), is waited out here while it ends before the deadline and fewer than `max_waits` waits were
  made; otherwise the caller is refused with the limiter's own wait, to spend it somewhere cheaper
  (a workflow's Wait state, an SQS visibility timeout).

The deadline is `min(max_wait_sec, time_left_sec)` after the take starts: `time_left_sec` is what
the caller's invocation can afford (its remaining time less the call's own timeout and reserve).

The inner loop: given the tunables' `adaptive` policy, the take is decided under the bucket's current
rate and block, and `report` tells the limiter how the call the token paid for was answered: first
the rate limit the answer published, if any (`RateLimit-Policy` and its kin, in a 2xx or a 429 alike:
believed as the bucket's ceiling for a while, `adaptive_rate.on_published`), then whether it was a
throttling signal (a 429, or a 503 with a short Retry-After: `adaptive_rate.is_throttling_signal`), so
the whole fleet slows at its next take, and a 429 under a lowered limit cuts from the lowered rate. A
publication that is no news costs no DynamoDB call (the adapter decides on the state its last write
returned). A report that fails is logged and dropped: the downstream's own error is what the caller
must raise, and the next answer reports again.
Tenants and classes: a take may name the `tenant` it is for and its `priority` class
(`names.PRIORITY_CLASSES`), decided under the tunables' `shares` (`throttling.core.hierarchical_rate`):
the tenant's share of the bucket, what it may borrow, and the depth its class may reach. A tenant counts
only on a downstream whose tunables name some tenant's share (see `TokenGate.take`). A take that names
neither asks the limiter exactly as before tenants.
`TokenTake` is the decision for one take, pure and clock-free, so the lab drives it in virtual
time; `TokenGate.take` runs it against a limiter with an injected clock, sleep and random source.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from throttling.core.adaptive_rate import AdaptiveRatePolicy, is_throttling_signal
from throttling.core.hierarchical_rate import TenantShares
from throttling.core.rate_limiter import RateDecision, RatePolicy
from throttling.runtime.downstream_client import DownstreamResponse, published_rate, throttling_signal

__all__ = ["GateKnobs", "GateOutcome", "Pause", "TokenGate", "TokenTake"]

_LOGGER = logging.getLogger(__name__)


class Limiter(Protocol):
    def try_acquire(self, bucket: str, policy: RatePolicy) -> RateDecision: ...


class AdaptiveLimiter(Protocol):
    """A limiter with the inner loop (`throttling.adapters.dynamodb_rate_limiter.DynamoDbRateLimiter`)."""

    def try_acquire(self, bucket: str, policy: RatePolicy, cost: int = 1,
                    adaptive: AdaptiveRatePolicy | None = None, *, tenant: str | None = None,
                    priority: str | None = None, shares: TenantShares | None = None) -> RateDecision: ...

    def report_signal(self, bucket: str, policy: RatePolicy, adaptive: AdaptiveRatePolicy, *, admitted_at: float,
                      retry_after_sec: float | None) -> Any: ...

    def report_published(self, bucket: str, policy: RatePolicy, adaptive: AdaptiveRatePolicy, *, admitted_at: float,
                         published_per_sec: float | None) -> Any: ...


@dataclass(frozen=True)
class GateKnobs:
    """How one caller takes tokens.

    :param max_wait_sec: the most a take waits in the function, from its start; default no limit
        but the invocation's `time_left_sec`.
    :param max_waits: refusals waited out before the wait goes to the caller; default None (as
        many as the deadline allows).
    :param wake_up_jitter_sec: a random 0..this added to each wait; default 0.
    :param min_pause_sec: the shortest wait after a refusal; default 0.
    :param max_stale_tokens: tokens that came back too late, in one take, before the caller is
        refused (with a wait of 0); default 3; None: only the deadline bounds them.
    """

    max_wait_sec: float = math.inf
    max_waits: int | None = None
    wake_up_jitter_sec: float = 0.0
    min_pause_sec: float = 0.0
    max_stale_tokens: int | None = 3

    def __post_init__(self) -> None:
        if math.isnan(self.max_wait_sec) or self.max_wait_sec < 0:
            raise ValueError(f"max_wait_sec must be >= 0 (math.inf for no limit), got {self.max_wait_sec!r}")
        if self.max_waits is not None and (isinstance(self.max_waits, bool) or self.max_waits < 0):
            raise ValueError(f"max_waits must be an int >= 0 or None, got {self.max_waits!r}")
        for name in ("wake_up_jitter_sec", "min_pause_sec"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.max_stale_tokens is not None and (isinstance(self.max_stale_tokens, bool) or self.max_stale_tokens < 1):
            raise ValueError(f"max_stale_tokens must be an int >= 1 or None, got {self.max_stale_tokens!r}")


@dataclass(frozen=True)
class Pause:
    """Wait `seconds`, then ask the limiter again."""

    seconds: float


@dataclass(frozen=True)
class GateOutcome:
    """How a take ended: admitted, or refused with the wait to spend elsewhere (0 after stale tokens).

    `admitted_at` is when the limiter admitted the token (its `RateDecision.decided_at`; None when
    refused): what a report of the call's throttling signal names it by.
    """

    admitted: bool
    retry_after_sec: float
    waited_sec: float
    waits: int
    stale_tokens: int
    admitted_at: float | None = None


ASK_AGAIN = Pause(0.0)


class TokenTake:
    """The decisions of one take, fed each limiter answer with the time it was asked and answered."""

    def __init__(
        self,
        knobs: GateKnobs,
        *,
        started_at: float,
        time_left_sec: float,
        stale_after_sec: float,
        rng: random.Random | None = None,
    ) -> None:
        self.knobs = knobs
        self.deadline = started_at + max(0.0, min(knobs.max_wait_sec, time_left_sec))
        self.stale_after_sec = stale_after_sec
        self._rng = rng or random.Random()
        self.waited_sec = 0.0
        self.waits = 0
        self.stale_tokens = 0
        self.last_late_sec = 0.0

    def next(self, decision: RateDecision, asked_at: float, answered_at: float) -> GateOutcome | Pause:
        """What to do with `decision`: an outcome ends the take; a `Pause` says how long to wait before asking again
        (`ASK_AGAIN`, 0 s, after a stale token)."""
        if decision.allowed:
            self.last_late_sec = answered_at - asked_at
            if self.last_late_sec <= self.stale_after_sec:
                return self._outcome(True, 0.0, admitted_at=decision.decided_at)
            self.stale_tokens += 1
            out_of_stale_tokens = self.knobs.max_stale_tokens is not None and self.stale_tokens >= self.knobs.max_stale_tokens
            if out_of_stale_tokens or answered_at >= self.deadline:
                return self._outcome(False, 0.0)
            return ASK_AGAIN
        pause_sec = decision.retry_after_sec
        if self.knobs.wake_up_jitter_sec:
            pause_sec += self._rng.uniform(0, self.knobs.wake_up_jitter_sec)
        pause_sec = max(pause_sec, self.knobs.min_pause_sec)
        out_of_waits = self.knobs.max_waits is not None and self.waits >= self.knobs.max_waits
        if out_of_waits or answered_at + pause_sec > self.deadline:
            return self._outcome(False, decision.retry_after_sec)
        self.waits += 1
        self.waited_sec += pause_sec
        return Pause(pause_sec)

    def _outcome(self, admitted: bool, retry_after_sec: float, admitted_at: float | None = None) -> GateOutcome:
        return GateOutcome(admitted, retry_after_sec, self.waited_sec, self.waits, self.stale_tokens, admitted_at)


def _monotonic() -> float:
    return time.monotonic()


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


class TokenGate:
    """Takes one token of `bucket` from `limiter` as `knobs` say; never raises for a refusal (see `GateOutcome`).

    `clock` times the limiter's answers and the deadline (default `time.monotonic`, looked up at
    each call); `sleep` waits (default `time.sleep`); `logger` gets a warning per stale token.
    """

    def __init__(
        self,
        limiter: Limiter,
        knobs: GateKnobs,
        *,
        clock: Callable[[], float] = _monotonic,
        sleep: Callable[[float], None] = _sleep,
        rng: random.Random | None = None,
        logger: Any = _LOGGER,
    ) -> None:
        self.limiter = limiter
        self.knobs = knobs
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._logger = logger

    def take(self, bucket: str, policy: RatePolicy, *, time_left_sec: float, stale_after_sec: float,
             adaptive: AdaptiveRatePolicy | None = None, tenant: str | None = None, priority: str | None = None,
             shares: TenantShares | None = None) -> GateOutcome:
        """One token of `bucket`; with `adaptive`, under the bucket's inner loop, `policy` being its ceiling.

        With a `tenant` or a `priority`, under `shares` (the tunables' `shares`; default `TenantShares()`): a
        refusal's wait is then the one for this tenant and class. With neither, the limiter is asked as before.

        A downstream is shared out between tenants once its tunables name at least one tenant's share
        (`share_<tenant>`); until then a tenant takes from the bucket as a whole. Dividing a bucket nobody
        configured would give every tenant the default share, and on a small bucket (the mainframe's 1 req/s,
        burst 1) a tenth of it is a tenth of the rate with no burst: every caller slowed, nobody protected.
        """
        if tenant is not None and (shares is None or not shares.shares):
            tenant = None
        take = TokenTake(self.knobs, started_at=self._clock(), time_left_sec=time_left_sec,
                         stale_after_sec=stale_after_sec, rng=self._rng)
        shared = tenant is not None or priority is not None
        while True:
            asked_at = self._clock()
            if shared:
                decision = self.limiter.try_acquire(bucket, policy, adaptive=adaptive, tenant=tenant,  # type: ignore[call-arg]
                                                    priority=priority, shares=shares)
            elif adaptive is None:
                decision = self.limiter.try_acquire(bucket, policy)
            else:
                decision = self.limiter.try_acquire(bucket, policy, adaptive=adaptive)  # type: ignore[call-arg]
            step = take.next(decision, asked_at, self._clock())
            if decision.allowed and not (isinstance(step, GateOutcome) and step.admitted):
                self._logger.warning("a token came back too late to use; taking another",
                                     extra={"late_sec": round(take.last_late_sec, 3),
                                            "stale_after_sec": round(stale_after_sec, 3)})
            if isinstance(step, GateOutcome):
                return step
            if not decision.allowed:
                self._sleep(step.seconds)

    def report(self, bucket: str, policy: RatePolicy, adaptive: AdaptiveRatePolicy | None, outcome: GateOutcome,
               answer: DownstreamResponse | BaseException) -> bool:
        """Tell the limiter how the call `outcome` admitted was answered: the rate limit `answer` published (a
        response, or the error raised for one), then whether it was a throttling signal; whether it was one.
        Never raises: the caller is about to raise the downstream's error, or return its answer, which is
        what its workflow needs."""
        signal = throttling_signal(answer) if isinstance(answer, BaseException) else None
        return self.report_answered(bucket, policy, adaptive, outcome, published_per_sec=published_rate(answer),
                                    status=None if signal is None else signal.status,
                                    retry_after_sec=None if signal is None else signal.retry_after_sec)

    def report_answered(self, bucket: str, policy: RatePolicy, adaptive: AdaptiveRatePolicy | None,
                        outcome: GateOutcome, *, status: int | None, retry_after_sec: float | None,
                        published_per_sec: float | None) -> bool:
        """`report` from the answer's numbers (`status` None: no HTTP answer, a timeout); whether it was a
        throttling signal.

        Publication first, as the lab's callers do: a 429 that also publishes a lowered limit then cuts from
        the lowered rate. Never raises: a report is advice, and the next answer reports again.
        """
        if adaptive is None or outcome.admitted_at is None:
            return False
        if published_per_sec is not None:
            try:
                self.limiter.report_published(bucket, policy, adaptive,  # type: ignore[attr-defined]
                                              admitted_at=outcome.admitted_at, published_per_sec=published_per_sec)
            except Exception:  # noqa: BLE001 - a report is advice; the next answer publishes again
                self._logger.warning("could not report a published rate limit to the shared limiter", exc_info=True,
                                     extra={"bucket": bucket, "published_per_sec": published_per_sec})
        if status is None or not is_throttling_signal(status, retry_after_sec, adaptive):
            return False
        try:
            self.limiter.report_signal(bucket, policy, adaptive,  # type: ignore[attr-defined]
                                       admitted_at=outcome.admitted_at, retry_after_sec=retry_after_sec)
        except Exception:  # noqa: BLE001 - a report is advice; the next throttling answer reports again
            self._logger.warning("could not report a throttling signal to the shared limiter", exc_info=True,
                                 extra={"bucket": bucket})
        return True
