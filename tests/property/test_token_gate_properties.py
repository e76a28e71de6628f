"""Properties of the one token gate, on a fake clock: whatever the limiter answers and however slowly.

The limiter is scripted: each answer takes its latency on the clock, and after the script it
admits at once. The gate sleeps on the same clock, so every wait and every deadline is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from throttling.core.clock import FakeClock
from throttling.core.rate_limiter import RateDecision, RatePolicy
from throttling.runtime.token_gate import GateKnobs, GateOutcome, TokenGate

POLICY = RatePolicy(rate_per_sec=1.0, burst=1)
STALE_AFTER_SEC = 0.1


@dataclass
class ScriptedLimiter:
    """Answers `script` in turn, each (allowed, retry_after_sec, latency_sec), then admits at once."""

    clock: FakeClock
    script: list[tuple[bool, float, float]]
    asked_at: list[float] = field(default_factory=list)
    answers: list[RateDecision] = field(default_factory=list)

    def try_acquire(self, bucket: str, policy: RatePolicy) -> RateDecision:
        self.asked_at.append(self.clock.now())
        allowed, retry_after_sec, latency_sec = self.script.pop(0) if self.script else (True, 0.0, 0.0)
        self.clock.advance(latency_sec)
        decision = RateDecision(allowed=allowed, retry_after_sec=0.0 if allowed else retry_after_sec, remaining=0,
                                reset_after_sec=retry_after_sec, new_tat=1.0 if allowed else None, based_on_tat=0.0)
        self.answers.append(decision)
        return decision


answers = st.lists(
    st.tuples(st.booleans(), st.floats(0.0, 5.0), st.sampled_from([0.0, 0.01, 0.05, 0.2, 0.5])), max_size=30
)
knobs = st.builds(
    GateKnobs,
    max_wait_sec=st.one_of(st.just(math.inf), st.floats(0.0, 10.0)),
    max_waits=st.one_of(st.none(), st.integers(0, 5)),
    wake_up_jitter_sec=st.sampled_from([0.0, 0.05]),
    min_pause_sec=st.sampled_from([0.0, 0.005]),
    max_stale_tokens=st.one_of(st.none(), st.integers(1, 5)),
)


def run(script: list[tuple[bool, float, float]], gate_knobs: GateKnobs, time_left_sec: float):
    clock = FakeClock(1_000.0)
    limiter = ScriptedLimiter(clock, list(script))
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    gate = TokenGate(limiter, gate_knobs, clock=clock.now, sleep=sleep)
    outcome = gate.take("crm", POLICY, time_left_sec=time_left_sec, stale_after_sec=STALE_AFTER_SEC)
    deadline = 1_000.0 + min(gate_knobs.max_wait_sec, time_left_sec)
    return outcome, limiter, slept, deadline


@given(script=answers, gate_knobs=knobs, time_left_sec=st.floats(0.0, 20.0))
def test_the_gate_never_asks_for_a_token_after_its_deadline(script, gate_knobs, time_left_sec):
    # GIVEN any limiter answers WHEN a token is taken
    _, limiter, _, deadline = run(script, gate_knobs, time_left_sec)
    # THEN every ask but the first starts no later than the deadline (the first starts the take)
    assert all(asked_at <= deadline + 1e-9 for asked_at in limiter.asked_at[1:])


@given(script=answers, gate_knobs=knobs, time_left_sec=st.floats(0.0, 20.0))
def test_the_gate_waits_at_most_its_knobs(script, gate_knobs, time_left_sec):
    outcome, _, slept, _ = run(script, gate_knobs, time_left_sec)
    # THEN it sleeps at most max_wait_sec and the time left in all, and at most max_waits times
    assert sum(slept) <= min(gate_knobs.max_wait_sec, time_left_sec) + 1e-9
    assert gate_knobs.max_waits is None or len(slept) <= gate_knobs.max_waits
    assert math.isclose(outcome.waited_sec, sum(slept), abs_tol=1e-9) and outcome.waits == len(slept)
    # AND each wait is at least the limiter's (and the knob's minimum), at most it plus the jitter
    refusals = [d.retry_after_sec for d in _refusals_waited_out(script, len(slept))]
    for pause, retry_after_sec in zip(slept, refusals):
        assert max(retry_after_sec, gate_knobs.min_pause_sec) <= pause
        assert pause <= max(retry_after_sec + gate_knobs.wake_up_jitter_sec, gate_knobs.min_pause_sec) + 1e-9


@given(script=answers, gate_knobs=knobs, time_left_sec=st.floats(0.0, 20.0))
def test_every_refusal_carries_the_wait_the_limiter_returned(script, gate_knobs, time_left_sec):
    outcome, limiter, _, _ = run(script, gate_knobs, time_left_sec)
    last = limiter.answers[-1]
    if outcome.admitted:
        # THEN an admission is the last answer, and it came back in time to be spent
        assert last.allowed
        assert limiter.clock.now() - limiter.asked_at[-1] <= STALE_AFTER_SEC
    elif last.allowed:
        # THEN a refusal after tokens that came back too late asks for no wait: the limiter is slow, not empty
        assert outcome.retry_after_sec == 0.0 and outcome.stale_tokens >= 1
    else:
        # THEN a refusal carries exactly the limiter's last wait
        assert outcome.retry_after_sec == last.retry_after_sec


@given(script=answers, gate_knobs=knobs, time_left_sec=st.floats(0.0, 20.0))
def test_stale_tokens_are_bounded_by_the_knob(script, gate_knobs, time_left_sec):
    outcome, _, _, _ = run(script, gate_knobs, time_left_sec)
    assert isinstance(outcome, GateOutcome)
    assert gate_knobs.max_stale_tokens is None or outcome.stale_tokens <= gate_knobs.max_stale_tokens


def _refusals_waited_out(script: list[tuple[bool, float, float]], waits: int) -> list[RateDecision]:
    """The first `waits` refusals of the script: the ones the gate slept after, in order."""
    refused = [RateDecision(False, retry_after, 0, retry_after, None, 0.0) for allowed, retry_after, _ in script
               if not allowed]
    return refused[:waits]
