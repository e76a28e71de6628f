"""Retry delays with jitter, so retrying clients spread out instead of hitting a downstream in waves.

`full_jitter_delay` is what a Step Functions retrier with `JitterStrategy: FULL` does, so code
retrying inside a Lambda behaves like the workflows around it: for retry number n (1 for the
first retry) Step Functions computes `min(MaxDelaySeconds, IntervalSeconds * BackoffRate**(n-1))`
and, with FULL jitter, waits a random time between 0 and that.

`decorrelated_jitter_delay` is the "decorrelated jitter" of the AWS Architecture Blog post
"Exponential Backoff And Jitter": `min(cap, random_between(base, previous * 3))`. It needs the
previous delay, which a Step Functions retrier cannot carry, so it is for in-process retry loops.
Both take an injectable `random.Random` so tests and the lab are reproducible.

`postpone_for_sec` is the visibility timeout an SQS consumer postpones a record by: the wait asked
for, doubling with each receive, within SQS's 12-hour cap (the legacy consumer's rule, and the lab's).
"""

from __future__ import annotations

import math
import random

from throttling.core.validation import is_finite_number, is_int

__all__ = [
    "SQS_MAX_VISIBILITY_SEC",
    "decorrelated_jitter_delay",
    "exponential_delay",
    "full_jitter_delay",
    "postpone_for_sec",
]

# SQS refuses a visibility timeout beyond 12 hours counted from the receive.
SQS_MAX_VISIBILITY_SEC = 43_200

_DEFAULT_RNG = random.Random()


def exponential_delay(attempt: int, base_sec: float, cap_sec: float, backoff_rate: float = 2.0) -> float:
    """The un-jittered delay before retry `attempt` (1-based): min(cap, base * rate**(attempt - 1))."""
    _check_attempt(attempt)
    _check_seconds("base_sec", base_sec)
    _check_seconds("cap_sec", cap_sec)
    if not math.isfinite(backoff_rate) or backoff_rate < 1:
        raise ValueError(f"backoff_rate must be a finite number >= 1 (as in Step Functions), got {backoff_rate}")
    try:
        uncapped = base_sec * backoff_rate ** (attempt - 1)
    except OverflowError:
        # Float powers raise rather than return inf; such a delay is far beyond any cap anyway.
        return cap_sec if base_sec > 0 else 0.0
    return min(cap_sec, uncapped)


def full_jitter_delay(
    attempt: int,
    base_sec: float,
    cap_sec: float,
    backoff_rate: float = 2.0,
    rng: random.Random | None = None,
) -> float:
    """A random delay in [0, exponential_delay(...)]: Step Functions `JitterStrategy: FULL`."""
    ceiling = exponential_delay(attempt, base_sec, cap_sec, backoff_rate)
    return min(ceiling, (rng or _DEFAULT_RNG).uniform(0.0, ceiling))


def decorrelated_jitter_delay(
    previous_sec: float,
    base_sec: float,
    cap_sec: float,
    rng: random.Random | None = None,
) -> float:
    """The next delay after waiting `previous_sec` (pass `base_sec` before the first retry).

    Returns min(cap, random between base and 3 * previous); each delay grows from the last one
    actually drawn rather than from the attempt number.
    """
    _check_seconds("previous_sec", previous_sec)
    _check_seconds("base_sec", base_sec)
    _check_seconds("cap_sec", cap_sec)
    high = max(base_sec, previous_sec * 3)
    if math.isinf(high):
        # Only a previous delay near the float maximum gets here; uniform() would return inf or nan.
        return cap_sec
    return min(cap_sec, (rng or _DEFAULT_RNG).uniform(base_sec, high))


def _check_attempt(attempt: int) -> None:
    if not is_int(attempt) or attempt < 1:
        raise ValueError(f"attempt must be an int >= 1 (1 is the first retry), got {attempt!r}")


def _check_seconds(name: str, value: float) -> None:
    if not is_finite_number(value) or value < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


def postpone_for_sec(
    retry_after_sec: float | None, receive_count: int, held_sec: float = 0.0, *, hold_before_invoke_sec: float = 0.0
) -> int:
    """The visibility timeout that postpones a record received `receive_count` times.

    At least the wait the downstream or the limiter asked for (rounded up to whole seconds, as SQS
    takes them), and at least 2^(receive_count - 1) s, so repeated postponements back off instead
    of spending the receive count one Retry-After at a time; never past SQS's 12-hour limit from
    the receive, less `hold_before_invoke_sec` (how long an event-source mapping may hold a batch
    before invoking) and `held_sec` (how long this invocation has held it).
    """
    asked_sec = math.ceil(max(0.0, retry_after_sec or 0.0) - 1e-9)
    backoff_sec = 2 ** min(max(receive_count, 1) - 1, 16)
    cap_sec = SQS_MAX_VISIBILITY_SEC - math.ceil(hold_before_invoke_sec) - math.ceil(max(0.0, held_sec))
    return max(0, min(max(asked_sec, backoff_sec, 1), cap_sec))
