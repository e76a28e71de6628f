"""Unit tests of the jittered backoff delays."""

from __future__ import annotations

import random

import pytest

from throttling.core.backoff import decorrelated_jitter_delay, exponential_delay, full_jitter_delay


class _FixedRandom(random.Random):
    """A Random whose `random()` always returns `fraction`, so uniform(a, b) = a + (b - a) * fraction."""

    def __init__(self, fraction: float) -> None:
        super().__init__()
        self.fraction = fraction

    def random(self) -> float:
        return self.fraction


def test_exponential_delay_grows_like_a_step_functions_retrier_and_is_capped():
    # GIVEN IntervalSeconds=1, BackoffRate=2, MaxDelaySeconds=10
    # WHEN the delays of retries 1..6 are computed
    delays = [exponential_delay(attempt, base_sec=1.0, cap_sec=10.0) for attempt in range(1, 7)]

    # THEN they double from the interval and stop at the cap
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_full_jitter_spans_zero_to_the_computed_backoff():
    # GIVEN retry 3 with base 1 s, rate 2 (ceiling 4 s)
    # WHEN the random draw is at its lowest and at its highest
    lowest = full_jitter_delay(3, 1.0, 60.0, rng=_FixedRandom(0.0))
    highest = full_jitter_delay(3, 1.0, 60.0, rng=_FixedRandom(0.999999))

    # THEN the delay goes from 0 to just under 4 s
    assert lowest == 0.0
    assert highest == pytest.approx(4.0, abs=1e-5)


def test_full_jitter_is_reproducible_with_a_seeded_rng():
    # GIVEN two generators with the same seed
    # WHEN each draws the delays of five retries
    first = [full_jitter_delay(n, 0.5, 20.0, rng=random.Random(7)) for n in range(1, 6)]
    second = [full_jitter_delay(n, 0.5, 20.0, rng=random.Random(7)) for n in range(1, 6)]

    # THEN the sequences match
    assert first == second


def test_huge_attempt_numbers_stay_at_the_cap_instead_of_overflowing():
    # GIVEN / WHEN / THEN
    assert exponential_delay(5_000, base_sec=1.0, cap_sec=30.0) == 30.0


def test_decorrelated_jitter_draws_between_base_and_three_times_the_previous_delay():
    # GIVEN a previous delay of 2 s with base 1 s
    # WHEN the draw is at its lowest and its highest
    lowest = decorrelated_jitter_delay(2.0, 1.0, 100.0, rng=_FixedRandom(0.0))
    highest = decorrelated_jitter_delay(2.0, 1.0, 100.0, rng=_FixedRandom(0.999999))

    # THEN it lies between base and 6 s
    assert lowest == 1.0
    assert highest == pytest.approx(6.0, abs=1e-5)


def test_decorrelated_jitter_is_capped():
    # GIVEN / WHEN / THEN a previous delay already at the cap
    assert decorrelated_jitter_delay(10.0, 1.0, 10.0, rng=_FixedRandom(0.999)) == 10.0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: full_jitter_delay(0, 1.0, 10.0), "attempt must be an int >= 1 \\(1 is the first retry\\), got 0"),
        (lambda: full_jitter_delay(1, 1.0, 10.0, backoff_rate=0.5), "backoff_rate must be a finite number >= 1"),
        (lambda: decorrelated_jitter_delay(-1.0, 1.0, 10.0), "previous_sec must be a finite number of seconds >= 0, got -1.0"),
    ],
)
def test_bad_inputs_are_rejected_with_the_value(call, message):
    # GIVEN / WHEN / THEN
    with pytest.raises(ValueError, match=message):
        call()
