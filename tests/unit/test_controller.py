"""The pure controller driven through scripted metric sequences against a simulated downstream.

The plant below is deliberately crude (Little's law plus either refusals or queueing above a
capacity); what is asserted is the controller's contract: always within bounds, never up under
overload, back up after recovery at a bounded pace, and a stated steady-state amplitude.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar

import pytest

from throttling.adapters.dynamodb_controller_state import state_from_item, state_to_item
from throttling.core.controller import (
    Aimd,
    AimdState,
    AlarmSignal,
    Bounds,
    ControllerPolicy,
    ControllerState,
    Decision,
    Gradient,
    GradientState,
    LatencyJudgement,
    PeriodMetrics,
    Setting,
    decide,
    evaluated_period,
)

# The CRM of the dev stage: 10 req/s contract planned at 9, Little's-law concurrency 2, ceiling 4x.
BOUNDS = Bounds(min_concurrency=1, max_concurrency=8, min_rate_per_sec=0.9, max_rate_per_sec=9.0, max_burst=9,
                expected_latency_ms=1000)
AIMD = ControllerPolicy()
GRADIENT = ControllerPolicy(algorithm=Gradient())
PERIOD_SEC = 60.0
# Our own increase, in force from the start of the period ending at 60: that period is the first to show it.
AFTER_OUR_INCREASE = ControllerState(last_change_at=-AIMD.setting_propagation_sec)


@dataclass
class Downstream:
    """A downstream with a batch of work always waiting (demand is never the bottleneck unless set).

    Up to `capacity_in_flight` calls in flight it answers in `latency_ms`. Above it, a refusing
    downstream answers the excess with 429 (fast), a queueing one slows every call down in
    proportion. `noise` jitters the latency by up to that fraction either way.
    """

    capacity_in_flight: float
    latency_ms: float = 1000.0
    refuses: bool = True
    noise: float = 0.0
    demand_per_sec: float = math.inf

    def period(self, setting: Setting, rng: random.Random) -> PeriodMetrics:
        latency = self.latency_ms * (1 + rng.uniform(-self.noise, self.noise))
        rate = min(setting.rate_per_sec, setting.max_concurrency * 1000 / latency, self.demand_per_sec)
        in_flight = rate * latency / 1000
        throttled = 0.0
        if in_flight > self.capacity_in_flight:
            if self.refuses:
                throttled = rate * PERIOD_SEC * (in_flight - self.capacity_in_flight) / in_flight
            else:
                latency *= in_flight / self.capacity_in_flight
                rate = min(rate, setting.max_concurrency * 1000 / latency)
        return PeriodMetrics(
            calls=rate * PERIOD_SEC,
            throttled=throttled,
            latency_p50_ms=latency,
            latency_p99_ms=latency * 2,
            latency_mean_ms=latency,
            period_sec=PERIOD_SEC,
        )


def in_force_next(period_end: float) -> dict[str, float]:
    """When the decision on the period ending at `period_end` is made, so that these simulations may make the
    next period's metrics from the setting it writes: at the period's end, on metrics complete at once
    (with a metrics delay the next period would begin before the setting took effect, and not count)."""
    return {"now": period_end - AIMD.setting_propagation_sec, "period_end": period_end, "metrics_delay_sec": 0.0}


def run(
    downstream: Downstream,
    periods: int,
    *,
    setting: Setting = Setting(2, 9.0),
    state: ControllerState = ControllerState(),
    policy: ControllerPolicy = AIMD,
    start_sec: float = 1_000_000.0,
    seed: int = 7,
) -> list[Decision]:
    """One decision per period, each on the metrics the previous decision's setting produced."""
    rng = random.Random(seed)
    decisions = []
    for index in range(periods):
        period_end = start_sec + index * PERIOD_SEC
        decision = decide(downstream.period(setting, rng), setting, BOUNDS, state, policy, **in_force_next(period_end))
        decisions.append(decision)
        setting, state = decision.setting, decision.state
    return decisions


def stored(state: ControllerState) -> ControllerState:
    """The state as the control loop gets it back from DynamoDB: through `state_to_item`, numbers as Decimal."""
    return state_from_item({key: Decimal(str(value)) for key, value in state_to_item(state).items()})


def script(
    periods: list[Callable[[Setting], PeriodMetrics]],
    *,
    setting: Setting,
    state: ControllerState | None = None,
    policy: ControllerPolicy = AIMD,
    start_sec: float = 1_000_000.0,
) -> list[Decision]:
    """One decision per scripted period, a minute apart on a fake clock (each evaluated 30 s after it
    ends), each period's metrics made from the setting in force, and the state stored and loaded
    between periods as the control loop does."""
    state = ControllerState() if state is None else state
    decisions = []
    for index, period in enumerate(periods):
        period_end = start_sec + index * PERIOD_SEC
        decision = decide(period(setting), setting, BOUNDS, state, policy, **in_force_next(period_end))
        decisions.append(decision)
        setting, state = decision.setting, stored(decision.state)
    return decisions


def busy_with_p99(p99_ms: float) -> Callable[[Setting], PeriodMetrics]:
    """A period of 1 s calls that fill every slot (the limit is used), with the given p99."""
    def period(setting: Setting) -> PeriodMetrics:
        per_sec = min(setting.rate_per_sec, float(setting.max_concurrency))
        return PeriodMetrics(calls=per_sec * PERIOD_SEC, latency_p50_ms=1000, latency_mean_ms=1000,
                             latency_p99_ms=p99_ms, period_sec=PERIOD_SEC)
    return period


def concurrencies(decisions: list[Decision]) -> list[int]:
    return [d.setting.max_concurrency for d in decisions]


def assert_within_bounds(decisions: list[Decision]) -> None:
    for decision in decisions:
        assert BOUNDS.contains(decision.setting), decision


# -- scripted sequences --------------------------------------------------------------------------


def test_overload_halves_with_the_reason_and_never_increases():
    # GIVEN a downstream answering 12 % of 600 calls with 429
    metrics = PeriodMetrics(calls=600, throttled=72, latency_p50_ms=200)
    # WHEN the controller sees the period
    decision = decide(metrics, Setting(4, 9.0), BOUNDS, ControllerState(), AIMD, now=1090, period_end=1080)
    # THEN it halves both values and says why
    assert decision.action == "decrease"
    assert decision.setting == Setting(2, 4.5)
    assert decision.reason == (
        "429 rate 12.0% > 1.0%: multiplicative decrease x0.5 (max_concurrency 4 -> 2, rate_per_sec 9 -> 4.5)"
    )


def test_sustained_overload_walks_down_to_the_floor_once_per_cooldown_and_stays():
    # GIVEN a downstream that refuses 30 % of everything whatever we do
    always_refusing = Downstream(capacity_in_flight=0.7 * 8)
    always_refusing.period = lambda setting, rng: PeriodMetrics(  # type: ignore[method-assign]
        calls=300, throttled=90, latency_p50_ms=200, latency_mean_ms=200)
    # WHEN it goes on for 20 periods
    decisions = run(always_refusing, 20, setting=Setting(8, 9.0))
    # THEN nothing ever goes up, and both values reach the floor
    for before, after in zip([Setting(8, 9.0)] + [d.setting for d in decisions], [d.setting for d in decisions]):
        assert after.max_concurrency <= before.max_concurrency
        assert after.rate_per_sec <= before.rate_per_sec
    assert decisions[-1].setting == Setting(BOUNDS.min_concurrency, BOUNDS.min_rate_per_sec)
    # AND decreases are at least one cooldown apart (the period after a cut still shows the old setting)
    cuts = [i for i, d in enumerate(decisions) if d.action == "decrease"]
    assert all((b - a) * PERIOD_SEC >= AIMD.cooldown_sec for a, b in zip(cuts, cuts[1:]))
    assert "already at the floor" in decisions[-1].reason


def test_steady_state_at_a_refusing_capacity_saws_within_the_stated_amplitude():
    # GIVEN a downstream that refuses above 6 calls in flight (1 s calls, so 6 req/s)
    downstream = Downstream(capacity_in_flight=6)
    # WHEN the controller runs for three hours
    decisions = run(downstream, 180)
    # THEN after the first hour concurrency saws between floor((C + 1) x beta) and C + 1, never wider
    steady = concurrencies(decisions[60:])
    assert min(steady) >= math.floor((6 + 1) * AIMD.decrease_factor)
    assert max(steady) <= 6 + 1
    # AND the downstream refuses in few periods (one probe above capacity per cycle)
    refused = [d for d in decisions[60:] if "429 rate" in d.reason]
    assert len(refused) <= len(steady) * 0.15
    assert_within_bounds(decisions)


def test_steady_state_below_capacity_is_flat_once_the_limit_stops_being_used():
    # GIVEN a downstream with room to spare, 200 ms calls, and our limiter holding 9 req/s
    downstream = Downstream(capacity_in_flight=100, latency_ms=200)
    # WHEN the controller runs for an hour
    decisions = run(downstream, 60)
    # THEN concurrency grows while it is used (1.8 of 2 in flight: 9 req/s x 0.2 s), then stops once
    # the rate binds instead (1.8 of 3), and stays flat
    steady = concurrencies(decisions[20:])
    assert set(steady) == {3}
    assert "max_concurrency not used and rate_per_sec at its ceiling" in decisions[-1].reason
    assert all(d.setting.rate_per_sec == 9.0 for d in decisions)


def test_when_capacity_halves_the_controller_follows_it_down_within_a_few_periods():
    # GIVEN an hour at a capacity of 8 in flight
    before = run(Downstream(capacity_in_flight=8), 60)
    # WHEN the downstream's capacity halves to 4
    after = run(Downstream(capacity_in_flight=4), 120, setting=before[-1].setting, state=before[-1].state,
                start_sec=1_000_000.0 + 60 * PERIOD_SEC)
    # THEN within 3 periods (one decrease, one cooldown) the concurrency is at or below the new capacity
    assert min(concurrencies(after[:3])) <= 4
    # AND from then on it saws in the band of the new capacity
    steady = concurrencies(after[30:])
    assert math.floor((4 + 1) * AIMD.decrease_factor) <= min(steady) and max(steady) <= 4 + 1
    assert_within_bounds(before + after)


def test_recovery_climbs_back_to_the_ceiling_one_step_per_hysteresis_window():
    # GIVEN a controller at its floor after an outage, and a healthy downstream with 1 s calls
    decisions = run(Downstream(capacity_in_flight=100), 45, setting=Setting(1, 0.9))
    # THEN it climbs back to the ceiling and no further
    assert decisions[-1].setting == Setting(BOUNDS.max_concurrency, BOUNDS.max_rate_per_sec)
    assert_within_bounds(decisions)
    # AND no step adds more than one slot or a tenth of the rate ceiling
    previous = Setting(1, 0.9)
    for decision in decisions:
        assert decision.setting.max_concurrency - previous.max_concurrency <= AIMD.concurrency_step
        assert decision.setting.rate_per_sec - previous.rate_per_sec <= AIMD.rate_step_fraction * 9.0 + 1e-9
        previous = decision.setting
    # AND increases are at least `clean_periods_to_increase` periods apart (hysteresis)
    ups = [i for i, d in enumerate(decisions) if d.action == "increase"]
    assert all(b - a >= AIMD.clean_periods_to_increase for a, b in zip(ups, ups[1:]))


def test_no_data_holds_and_neither_counts_as_clean_nor_breaks_a_streak():
    # GIVEN two clean periods already counted
    state = ControllerState(clean_periods=2, last_period_end=0.0, written=Setting(2, 9.0))
    # WHEN ten periods pass with no data at all, or too few calls to judge
    for index in range(10):
        metrics = None if index % 2 else PeriodMetrics(calls=3, throttled=3)
        decision = decide(metrics, Setting(2, 9.0), BOUNDS, state, AIMD, now=60.0 * (index + 1) + 30,
                          period_end=60.0 * (index + 1))
        # THEN each one holds, saying why
        assert (decision.action, decision.setting) == ("hold", Setting(2, 9.0))
        assert ("no data" in decision.reason) or ("too few calls to judge (3 < 10)" in decision.reason)
        state = decision.state
    assert state.clean_periods == 2


def test_a_limit_that_is_not_used_does_not_grow():
    # GIVEN clean periods in which 2 req/s of 200 ms calls use 0.4 of 4 slots and 2 of 9 req/s
    decisions = run(Downstream(capacity_in_flight=100, latency_ms=200, demand_per_sec=2), 30, setting=Setting(4, 9.0))
    # THEN nothing grows however long it stays clean
    assert {d.setting for d in decisions} == {Setting(4, 9.0)}
    assert "(0.4 of 4 in flight, 2 of 9 req/s), but max_concurrency not used and rate_per_sec not used" in (
        decisions[-1].reason)


def test_a_period_counts_once_even_when_a_schedule_and_an_alarm_both_evaluate_it():
    clean = PeriodMetrics(calls=540, latency_p50_ms=1000)
    first = decide(clean, Setting(2, 9.0), BOUNDS, ControllerState(), AIMD, now=90, period_end=60)
    again = decide(clean, Setting(2, 9.0), BOUNDS, first.state, AIMD, now=95, period_end=60)
    assert first.state.clean_periods == 1
    assert again.state.clean_periods == 1
    assert "already evaluated" in again.reason


def test_an_alarm_slows_down_even_on_a_period_already_evaluated_and_then_cools_down():
    # GIVEN a period the schedule found clean
    clean = PeriodMetrics(calls=540, latency_p50_ms=1000)
    scheduled = decide(clean, Setting(4, 9.0), BOUNDS, ControllerState(), AIMD, now=90, period_end=60)
    # WHEN the 429-rate alarm's state change arrives in the same minute
    alarm = AlarmSignal("Throttling-dev-crm-ThrottleRate", "throttled")
    alarmed = decide(clean, scheduled.setting, BOUNDS, scheduled.state, AIMD, now=100, period_end=60, alarms=[alarm])
    # THEN it halves on the alarm's word, and a second delivery within the cooldown changes nothing
    assert alarmed.setting == Setting(2, 4.5)
    assert alarmed.reason.startswith("alarm Throttling-dev-crm-ThrottleRate in ALARM: multiplicative decrease")
    repeated = decide(clean, alarmed.setting, BOUNDS, alarmed.state, AIMD, now=130, period_end=60, alarms=[alarm])
    assert repeated.action == "hold" and "cooling down until 310" in repeated.reason


def test_a_latency_alarm_lowers_the_concurrency_but_not_the_rate():
    alarm = AlarmSignal("Throttling-dev-crm-LatencyP99", "latency")
    decision = decide(None, Setting(4, 9.0), BOUNDS, ControllerState(), AIMD, now=90, period_end=60, alarms=[alarm])
    assert decision.setting == Setting(2, 9.0)


def test_errors_above_the_threshold_slow_down_like_429s():
    metrics = PeriodMetrics(calls=100, server_errors=4, timeouts=4, latency_p50_ms=200)
    decision = decide(metrics, Setting(4, 9.0), BOUNDS, ControllerState(), AIMD, now=90, period_end=60)
    assert decision.reason.startswith("error rate 8.0% > 5.0%")
    assert decision.setting == Setting(2, 4.5)


# -- a downstream that said it is down -------------------------------------------------------------


def down_for(share: float) -> Callable[[Setting], PeriodMetrics]:
    """A busy period of 1 s calls in which `share` of them were answered 503 with a Retry-After."""
    def period(setting: Setting) -> PeriodMetrics:
        calls = min(setting.rate_per_sec, float(setting.max_concurrency)) * PERIOD_SEC
        return PeriodMetrics(calls=calls, down=calls * share, latency_p50_ms=1000, latency_mean_ms=1000,
                             latency_p99_ms=1500, period_sec=PERIOD_SEC)
    return period


@pytest.mark.parametrize("policy", [AIMD, GRADIENT], ids=["aimd", "gradient"])
def test_an_outage_holds_the_setting_instead_of_halving_it(policy):
    # GIVEN a setting in use, and a minute in which the downstream answered 400 of 480 calls 503 + Retry-After
    metrics = PeriodMetrics(calls=480, down=400, latency_p50_ms=200, latency_mean_ms=200, latency_p99_ms=300)
    # WHEN the controller sees the period
    decision = decide(metrics, Setting(4, 9.0), BOUNDS, ControllerState(), policy, now=90, period_end=60)
    # THEN it holds, says why, and the "down" answers are not errors
    assert (decision.action, decision.setting) == ("hold", Setting(4, 9.0))
    assert decision.reason == ("hold: the downstream answered 400 calls with 5xx + Retry-After"
                               " (down, not overloaded; the breaker's business)")
    assert metrics.error_rate == 0.0
    assert metrics.successes == 80


def test_an_outage_neither_counts_as_clean_nor_breaks_a_streak_so_the_climb_resumes_after_it():
    # GIVEN two clean periods, then a two-minute outage, then clean periods again
    decisions = script([busy_with_p99(1500)] * 2 + [down_for(0.9), down_for(0.3)] + [busy_with_p99(1500)],
                       setting=Setting(2, 9.0))
    # THEN the outage holds without touching the streak, and the first clean period after it is the third
    assert [d.action for d in decisions] == ["hold", "hold", "hold", "hold", "increase"]
    assert [d.state.clean_periods for d in decisions[:4]] == [1, 2, 2, 2]
    assert decisions[-1].reason.startswith("clean for 3 periods")


def test_a_few_down_answers_are_neither_errors_nor_a_hold():
    # GIVEN a period where 5 % of the calls met the end of an outage (not above the 5 % error threshold)
    decisions = script([busy_with_p99(1500)] * 2 + [down_for(0.05)], setting=Setting(2, 9.0))
    # THEN it is the third clean period, and the limit grows
    assert decisions[-1].action == "increase"
    assert decisions[-1].reason.startswith("clean for 3 periods")


@pytest.mark.parametrize(
    ("extra", "trouble"),
    [({"throttled": 60}, "429 rate 12.5% > 1.0%"), ({"server_errors": 40}, "error rate 8.3% > 5.0%")],
    ids=["429s", "errors"],
)
def test_overload_in_a_down_period_still_slows_down(extra, trouble):
    # GIVEN a period the downstream was partly down in, which also shows 429s or other 5xx
    metrics = PeriodMetrics(calls=480, down=200, latency_p50_ms=200, **extra)
    # WHEN the controller sees the period
    decision = decide(metrics, Setting(4, 9.0), BOUNDS, ControllerState(), AIMD, now=90, period_end=60)
    # THEN the overload is acted on as in any period (the outage hides nothing)
    assert decision.action == "decrease"
    assert decision.reason.startswith(f"{trouble}: multiplicative decrease x0.5")


def test_down_is_refused_when_negative_with_the_value():
    with pytest.raises(ValueError, match=r"down must be a finite number >= 0, got -1"):
        PeriodMetrics(calls=10, down=-1)


def test_aimd_slows_down_on_a_p99_above_its_threshold_when_one_is_set():
    policy = AIMD.with_p99_latency_threshold(1000)
    metrics = PeriodMetrics(calls=100, latency_p50_ms=200, latency_p99_ms=1500)
    decision = decide(metrics, Setting(4, 9.0), BOUNDS, ControllerState(), policy, now=90, period_end=60)
    assert decision.reason.startswith("p99 latency 1500 ms > 1000 ms: one slot back")
    assert decision.setting == Setting(3, 9.0)


def test_a_value_written_by_someone_else_is_adopted_not_fought():
    # GIVEN the controller last wrote 2 and was counting clean periods
    state = ControllerState(clean_periods=2, last_period_end=0.0, written=Setting(2, 9.0))
    # WHEN an operator (or a redeploy) sets 5, and the period is clean
    decision = decide(PeriodMetrics(calls=540, latency_p50_ms=1000), Setting(5, 9.0), BOUNDS, state, AIMD,
                      now=90, period_end=60)
    # THEN the controller starts from 5, with its hysteresis started over
    assert decision.setting == Setting(5, 9.0)
    assert decision.reason.startswith("adopted max_concurrency 5, rate_per_sec 9 written by someone else")
    assert decision.state.clean_periods == 1 and decision.state.written == Setting(5, 9.0)


def test_a_setting_outside_the_bounds_is_clamped_into_them():
    decision = decide(None, Setting(50, 20.0), BOUNDS, ControllerState(), AIMD, now=90, period_end=60)
    assert (decision.action, decision.setting) == ("clamp", Setting(8, 9.0))


def test_burst_follows_the_rate_at_the_ceiling_ratio():
    assert [BOUNDS.burst_for(rate) for rate in (9.0, 4.5, 0.9)] == [9, 4, 1]
    assert dataclasses.replace(BOUNDS, max_burst=None).burst_for(4.5) is None


# -- a probe just over the limit -----------------------------------------------------------------


def test_a_few_429s_back_the_rate_off_to_what_got_through_not_to_half():
    # GIVEN 9 req/s of 500 ms calls in 8 slots, of which the downstream refused 18 of 540 (3.3 %)
    metrics = PeriodMetrics(calls=540, throttled=18, latency_p50_ms=500, latency_mean_ms=500)
    # WHEN the controller sees the period
    decision = decide(metrics, Setting(8, 9.0), BOUNDS, AFTER_OUR_INCREASE, AIMD, now=90, period_end=60)
    # THEN the rate drops to the 8.7 req/s that got through less 5 % (8.265), not to 4.5, and the
    # concurrency to what 8.265 req/s of 500 ms calls need at 80 % use (ceil(5.17) = 6), not to 4
    assert decision.action == "decrease"
    assert decision.setting == Setting(6, 8.265)
    assert decision.reason == (
        "429 rate 3.3% > 1.0%: back to the 8.7 req/s that got through, less 5.0%"
        " (max_concurrency 8 -> 6, rate_per_sec 9 -> 8.27)"
    )
    # AND it is a decrease like any other: the streak restarts and the cooldown starts
    assert decision.state.clean_periods == 0 and decision.state.last_decrease_at == 90


def test_a_probe_back_off_never_raises_the_concurrency_to_what_the_rate_needs():
    # GIVEN the same small overshoot from 5 slots (the 8.265 req/s left would need 6)
    metrics = PeriodMetrics(calls=540, throttled=18, latency_p50_ms=500, latency_mean_ms=500)
    # WHEN the controller sees the period
    decision = decide(metrics, Setting(5, 9.0), BOUNDS, AFTER_OUR_INCREASE, AIMD, now=90, period_end=60)
    # THEN the concurrency stays at 5 (a decrease never raises anything) and only the rate backs off
    assert decision.setting == Setting(5, 8.265)
    assert decision.reason.endswith("(rate_per_sec 9 -> 8.27)")


@pytest.mark.parametrize(
    ("throttled", "action", "expected", "how"),
    [
        # 1.0 % exactly is not above the 429 threshold: a clean period
        (5.4, "hold", Setting(8, 9.0), "clean period 1/3"),
        # just above the threshold: back to the 8.9 req/s that got through, less 5 %
        (6, "decrease", Setting(6, 8.455), "back to the 8.9 req/s that got through, less 5.0%"),
        # 5.0 % exactly is still a probe
        (27, "decrease", Setting(6, 8.123), "back to the 8.55 req/s that got through, less 5.0%"),
        # 5.2 %, just above `probe_throttle_rate`: halved as before
        (28, "decrease", Setting(4, 4.5), "multiplicative decrease x0.5"),
    ],
)
def test_the_probe_back_off_covers_429_shares_up_to_the_probe_rate_and_halving_resumes_above_it(
    throttled, action, expected, how
):
    # GIVEN 540 calls of 500 ms at 9 req/s in 8 slots, `throttled` of them refused
    metrics = PeriodMetrics(calls=540, throttled=throttled, latency_p50_ms=500, latency_mean_ms=500)
    # WHEN the controller sees the period
    decision = decide(metrics, Setting(8, 9.0), BOUNDS, AFTER_OUR_INCREASE, AIMD, now=90, period_end=60)
    # THEN it holds, backs off to what got through, or halves, by the share refused
    assert (decision.action, decision.setting) == (action, expected)
    assert how in decision.reason


@pytest.mark.parametrize("kind", ["throttled", "latency"])
def test_an_alarm_firing_halves_even_a_small_overshoot(kind):
    # GIVEN a period with only 3.3 % 429s, and a slow-down alarm of this downstream in ALARM
    metrics = PeriodMetrics(calls=540, throttled=18, latency_p50_ms=500, latency_mean_ms=500)
    alarm = AlarmSignal("Throttling-dev-crm-SlowDown", kind)
    # WHEN the controller sees both
    decision = decide(metrics, Setting(8, 9.0), BOUNDS, ControllerState(), AIMD, now=90, period_end=60,
                      alarms=[alarm])
    # THEN the alarm's word wins: both values halve
    assert decision.setting == Setting(4, 4.5)
    assert decision.reason == (
        "alarm Throttling-dev-crm-SlowDown in ALARM; 429 rate 3.3% > 1.0%: multiplicative decrease x0.5"
        " (max_concurrency 8 -> 4, rate_per_sec 9 -> 4.5)"
    )


@pytest.mark.parametrize(
    ("extra", "policy", "trouble"),
    [
        ({"server_errors": 30}, AIMD, "error rate 5.6% > 5.0%"),
        ({"latency_p99_ms": 1500}, AIMD.with_p99_latency_threshold(1000),
         "p99 latency 1500 ms > 1000 ms"),
    ],
)
def test_a_small_overshoot_with_any_other_trouble_halves(extra, policy, trouble):
    # GIVEN 3.3 % 429s and, in the same period, errors or a slow p99 above their thresholds
    metrics = PeriodMetrics(calls=540, throttled=18, latency_p50_ms=500, latency_mean_ms=500, **extra)
    # WHEN the controller sees the period
    decision = decide(metrics, Setting(8, 9.0), BOUNDS, ControllerState(), policy, now=90, period_end=60)
    # THEN it is more than a probe over the limit: both values halve
    assert decision.setting == Setting(4, 4.5)
    assert decision.reason == (
        f"429 rate 3.3% > 1.0%; {trouble}: multiplicative decrease x0.5 (max_concurrency 8 -> 4, rate_per_sec 9 -> 4.5)"
    )


def test_a_probe_back_off_never_cuts_deeper_than_halving():
    # GIVEN a demand of only 2 req/s (200 ms calls) against 8 slots and 9 req/s, and 2.5 % of it refused
    metrics = PeriodMetrics(calls=120, throttled=3, latency_p50_ms=200, latency_mean_ms=200)
    # WHEN the controller sees the period
    decision = decide(metrics, Setting(8, 9.0), BOUNDS, AFTER_OUR_INCREASE, AIMD, now=90, period_end=60)
    # THEN what got through (1.95 req/s) is the demand, not the limit: it halves, and goes no lower
    assert decision.setting == Setting(4, 4.5)
    assert "multiplicative decrease x0.5" in decision.reason


def test_gradient_mode_backs_a_small_overshoot_off_the_same_way():
    # GIVEN gradient mode with a healthy 500 ms baseline, and a period with only 3.3 % 429s
    state = dataclasses.replace(AFTER_OUR_INCREASE, gradient=GradientState(baseline_latency_ms=500),
                                last_period_end=0.0, written=Setting(8, 9.0))
    metrics = PeriodMetrics(calls=540, throttled=18, latency_p50_ms=500, latency_mean_ms=500)
    # WHEN the controller sees the period
    decision = decide(metrics, Setting(8, 9.0), BOUNDS, state, GRADIENT, now=90, period_end=60)
    # THEN it backs off to what got through, as aimd does
    assert decision.setting == Setting(6, 8.265)
    assert "back to the 8.7 req/s that got through, less 5.0%" in decision.reason


def test_steady_state_just_over_a_rate_capacity_saws_by_the_margin_not_by_half():
    # GIVEN a downstream that refuses above 4.35 calls in flight of 500 ms (8.7 req/s), so 9 req/s is
    # refused 3.3 % of the time
    downstream = Downstream(capacity_in_flight=4.35, latency_ms=500)
    # WHEN the controller runs for two hours from its ceiling
    decisions = run(downstream, 120, setting=Setting(8, 9.0),
                    state=ControllerState(last_change_at=1_000_000.0 - PERIOD_SEC - AIMD.setting_propagation_sec))
    # THEN every cut is a probe back-off, and the rate saws between 5 % under what got through and the
    # ceiling (halving would saw between 4.5 and 9)
    cuts = [d for d in decisions if d.action == "decrease"]
    assert cuts and all("back to the 8.7 req/s that got through, less 5.0%" in d.reason for d in cuts)
    assert {d.setting.rate_per_sec for d in decisions[10:]} == {8.265, 9.0}
    assert {d.setting.max_concurrency for d in decisions[10:]} == {6}
    assert_within_bounds(decisions)


def test_a_small_overshoot_while_the_concurrency_binds_does_not_halve_what_gets_through():
    # GIVEN 4 slots of 1 s calls (4 req/s) under a 9 req/s rate, and 3 % of them refused
    metrics = PeriodMetrics(calls=240, throttled=7.2, latency_p50_ms=1000, latency_mean_ms=1000)
    # WHEN the controller sees the period
    decision = decide(metrics, Setting(4, 9.0), BOUNDS, AFTER_OUR_INCREASE, AIMD, now=90, period_end=60)
    # THEN what the new setting carries is what got through (3.88 req/s) less the 5 % margin, not half of it
    after = decision.setting
    carried = min(after.rate_per_sec, after.max_concurrency * 1000 / 1000)
    assert carried == pytest.approx(3.88 * (1 - AIMD.fallback_margin), abs=0.01)


# -- x0.5 at small limits ------------------------------------------------------------------------


@pytest.mark.parametrize(("before", "after"), [(8, 4), (5, 2), (4, 2), (3, 2), (2, 1)])
def test_halving_floors_the_concurrency_except_that_three_slots_keep_two(before, after):
    # GIVEN a latency alarm (it lowers only the concurrency) at `before` slots
    alarm = AlarmSignal("Throttling-dev-crm-LatencyP99", "latency")
    # WHEN the controller halves
    decision = decide(None, Setting(before, 9.0), BOUNDS, ControllerState(), AIMD, now=90, period_end=60,
                      alarms=[alarm])
    # THEN 1.5 slots round up to 2; every other half is floored
    assert (decision.action, decision.setting) == ("decrease", Setting(after, 9.0))
    assert decision.reason.endswith(f"multiplicative decrease x0.5 (max_concurrency {before} -> {after})")


def test_three_slots_halve_to_two_on_429s_too():
    # GIVEN 3 slots and 12 % 429s
    metrics = PeriodMetrics(calls=540, throttled=65, latency_p50_ms=200)
    # WHEN the controller sees the period
    decision = decide(metrics, Setting(3, 9.0), BOUNDS, ControllerState(), AIMD, now=90, period_end=60)
    # THEN the concurrency goes to 2, the rate halves
    assert decision.setting == Setting(2, 4.5)


@pytest.mark.parametrize(
    ("min_concurrency", "before", "action", "after"),
    [(1, 1, "hold", 1), (2, 3, "decrease", 2), (2, 2, "hold", 2)],
)
def test_halving_stops_at_the_floor(min_concurrency, before, action, after):
    # GIVEN a floor of `min_concurrency` slots, and a latency alarm at `before` slots
    bounds = dataclasses.replace(BOUNDS, min_concurrency=min_concurrency)
    alarm = AlarmSignal("Throttling-dev-crm-LatencyP99", "latency")
    # WHEN the controller halves
    decision = decide(None, Setting(before, 9.0), bounds, ControllerState(), AIMD, now=90, period_end=60,
                      alarms=[alarm])
    # THEN it never goes below the floor, and says so when already there
    assert (decision.action, decision.setting) == (action, Setting(after, 9.0))
    if action == "hold":
        assert "already at the floor" in decision.reason


def test_a_gentler_decrease_factor_still_takes_two_slots_to_one():
    # GIVEN a decrease factor of 0.8, a floor of 1 slot, and a latency alarm at 2 slots
    policy = dataclasses.replace(AIMD, decrease_factor=0.8)
    alarm = AlarmSignal("Throttling-dev-crm-LatencyP99", "latency")
    # WHEN the controller decreases
    decision = decide(None, Setting(2, 9.0), BOUNDS, ControllerState(), policy, now=90, period_end=60, alarms=[alarm])
    # THEN it goes to 1 slot (floor(1.6)), not "already at the floor" at 2
    assert (decision.action, decision.setting) == ("decrease", Setting(1, 9.0))


# -- aimd: a slow p99 at the floor ---------------------------------------------------------------

P99_AIMD = AIMD.with_p99_latency_threshold(1000)


def test_a_slow_p99_at_the_floor_is_remembered_as_the_downstreams_own_and_does_not_slow_down():
    # GIVEN a p99 threshold of 1 s, and a period at the floor (1 slot) with a 2 s p99
    metrics = busy_with_p99(2000)(Setting(1, 9.0))
    # WHEN the controller sees the period
    decision = decide(metrics, Setting(1, 9.0), BOUNDS, ControllerState(), P99_AIMD, now=90, period_end=60)
    # THEN no cut can lower it: it is remembered, and the period counts as clean
    assert decision.state.aimd.floor_p99_latency_ms == 2000
    assert (decision.action, decision.setting) == ("hold", Setting(1, 9.0))
    assert decision.reason == "hold: clean period 1/3: holding (hysteresis)"


def test_a_slow_p99_above_the_floor_slows_down_and_is_not_remembered():
    # GIVEN the same 2 s p99 with 2 slots in force (above the floor)
    metrics = busy_with_p99(2000)(Setting(2, 9.0))
    # WHEN the controller sees the period
    decision = decide(metrics, Setting(2, 9.0), BOUNDS, ControllerState(), P99_AIMD, now=90, period_end=60)
    # THEN it is our load: it takes a slot back, and learns nothing
    assert decision.setting == Setting(1, 9.0)
    assert decision.reason.startswith("p99 latency 2000 ms > 1000 ms: one slot back")
    assert decision.state.aimd.floor_p99_latency_ms is None


def test_a_downstream_slow_on_its_own_lets_the_limit_grow_and_only_1_5x_its_p99_slows_down():
    # GIVEN a downstream whose own p99 is 2 s (above the 1 s threshold), with the controller at its floor
    # WHEN it stays there for 10 periods, then reaches 1.5 x 2 s for two, then goes just above it in
    # the period after the next increase (the state stored and loaded between periods, as the control
    # loop does)
    decisions = script([busy_with_p99(2000)] * 10 + [busy_with_p99(3000)] * 2 + [busy_with_p99(3001)],
                       setting=Setting(1, 9.0), policy=P99_AIMD)
    # THEN the floor's p99 is remembered through every round trip, and the limit grows as if healthy
    assert all(d.state.aimd.floor_p99_latency_ms == 2000 for d in decisions)
    assert [d.setting.max_concurrency for d in decisions[:10]] == [1, 1, 2, 2, 2, 3, 3, 3, 4, 4]
    # AND exactly 1.5 x still counts as clean; just above it, with our increase, slows down against
    # 1.5 x the floor's p99
    assert decisions[10].action == "hold" and "clean period 2/3" in decisions[10].reason
    assert decisions[11].setting == Setting(5, 9.0)
    assert decisions[12].setting == Setting(4, 9.0)
    assert decisions[12].reason == "p99 latency 3001 ms > 3000 ms: one slot back (max_concurrency 5 -> 4)"


def test_the_floors_p99_is_forgotten_once_p99_is_back_under_the_threshold():
    # GIVEN a remembered floor p99 of 2 s with 3 slots in force, two clean periods into the hysteresis
    state = ControllerState(clean_periods=2, last_period_end=0.0, aimd=AimdState(2000), written=Setting(3, 9.0))
    # WHEN a period's p99 is back at the 1 s threshold (the third clean period: one slot more), and
    # the next one, with that slot, is at 1.5 s
    decisions = script([busy_with_p99(1000), busy_with_p99(1500)], setting=Setting(3, 9.0), state=state,
                       policy=P99_AIMD)
    # THEN the memory is dropped (and the stored item no longer carries it) ...
    assert decisions[0].setting == Setting(4, 9.0)
    assert decisions[0].state.aimd.floor_p99_latency_ms is None
    assert "floor_p99_latency_ms" not in state_to_item(decisions[0].state)
    # ... so 1.5 s, tolerated while the memory held, slows down against the plain threshold again
    assert decisions[1].setting == Setting(3, 9.0)
    assert decisions[1].reason.startswith("p99 latency 1500 ms > 1000 ms: one slot back")


def test_a_higher_p99_at_the_floor_is_re_measured_not_fought():
    # GIVEN a remembered floor p99 of 2 s, at the floor
    state = ControllerState(last_period_end=0.0, aimd=AimdState(2000), written=Setting(1, 9.0))
    # WHEN the downstream's p99 there goes to 4 s (above 1.5 x 2 s)
    decision = decide(busy_with_p99(4000)(Setting(1, 9.0)), Setting(1, 9.0), BOUNDS, state, P99_AIMD,
                      now=90, period_end=60)
    # THEN nothing lower is possible: 4 s becomes the floor's p99, and the period is clean
    assert decision.state.aimd.floor_p99_latency_ms == 4000
    assert decision.action == "hold" and "already at the floor" not in decision.reason


# -- aimd: a slow p99 at a setting that held -----------------------------------------------------


def test_a_p99_that_crosses_the_threshold_while_our_setting_holds_is_the_downstreams_own():
    # GIVEN 4 slots in force through a period with a 900 ms p99 (under the 1 s threshold)
    # WHEN the next period, with the same setting and no 429s or errors, has a 1.2 s p99
    decisions = script([busy_with_p99(900), busy_with_p99(1200)], setting=Setting(4, 9.0), policy=P99_AIMD)
    # THEN our load did not change, so the rise is the downstream's: no cut, and 1.2 s is remembered
    # as its own (the bar becomes 1.5 x it), the reason saying so
    assert (decisions[1].action, decisions[1].setting) == ("hold", Setting(4, 9.0))
    assert decisions[1].state.aimd.floor_p99_latency_ms == 1200
    assert decisions[1].reason == ("p99 latency 1200 ms > 1000 ms with our setting unchanged: the downstream's own"
                                   " latency, no cut; hold: clean period 2/3: holding (hysteresis)")


def test_the_same_p99_in_the_period_after_our_increase_is_our_load_and_cuts():
    # GIVEN three clean periods at 3 slots with a 900 ms p99: the third adds a slot
    # WHEN the period with that slot has a 1.2 s p99
    decisions = script([busy_with_p99(900)] * 3 + [busy_with_p99(1200)], setting=Setting(3, 9.0), policy=P99_AIMD)
    # THEN the rise came with our added slot: that slot is taken back (a 429 or an error would halve), and
    # nothing is remembered
    assert decisions[2].setting == Setting(4, 9.0)
    assert decisions[3].setting == Setting(3, 9.0)
    assert decisions[3].reason == "p99 latency 1200 ms > 1000 ms: one slot back (max_concurrency 4 -> 3)"
    assert decisions[3].state.aimd.floor_p99_latency_ms is None


def test_a_p99_that_keeps_creeping_while_our_setting_holds_never_cuts_and_the_bar_follows_it():
    # GIVEN the ceiling (8 slots, 9 req/s) in force, so nothing of ours changes
    # WHEN the downstream's p99 creeps 4 % a period, from 900 ms to over 3 s in 32 periods
    creep = [900 * 1.04 ** k for k in range(32)]
    decisions = script([busy_with_p99(p99) for p99 in creep], setting=Setting(8, 9.0), policy=P99_AIMD)
    # THEN it never cuts: each crossing of the bar is re-measured as the downstream's own
    assert all(d.action == "hold" and d.setting == Setting(8, 9.0) for d in decisions)
    learnt = [d.state.aimd.floor_p99_latency_ms for d in decisions if d.state.aimd.floor_p99_latency_ms is not None]
    assert learnt[0] == pytest.approx(creep[3]) and learnt[-1] > 2000


def test_a_slow_p99_with_429s_is_not_taken_as_the_downstreams_own_even_while_our_setting_holds():
    # GIVEN 8 slots in force through a clean period with a 900 ms p99
    first = decide(busy_with_p99(900)(Setting(8, 9.0)), Setting(8, 9.0), BOUNDS, ControllerState(), P99_AIMD,
                   now=90, period_end=60)
    # WHEN the next period, same setting, has 3.3 % 429s and a 1.2 s p99
    metrics = PeriodMetrics(calls=540, throttled=18, latency_p50_ms=1000, latency_mean_ms=1000, latency_p99_ms=1200)
    decision = decide(metrics, Setting(8, 9.0), BOUNDS, first.state, P99_AIMD, now=150, period_end=120)
    # THEN it is overload, not the downstream's own latency: both halve, and nothing is remembered
    assert decision.setting == Setting(4, 4.5)
    assert decision.reason.startswith("429 rate 3.3% > 1.0%; p99 latency 1200 ms > 1000 ms: multiplicative decrease")
    assert decision.state.aimd.floor_p99_latency_ms is None


def test_a_setting_written_by_someone_else_is_a_change_of_load_not_a_setting_that_held():
    # GIVEN the controller last wrote 2 slots and evaluated the period before
    state = ControllerState(last_period_end=0.0, written=Setting(2, 9.0))
    # WHEN an operator set 4, and the period shows a 1.2 s p99
    decision = decide(busy_with_p99(1200)(Setting(4, 9.0)), Setting(4, 9.0), BOUNDS, state, P99_AIMD,
                      now=90, period_end=60)
    # THEN the load changed during the period, so the rise may come with it: it takes a slot back
    assert decision.setting == Setting(3, 9.0)
    assert "p99 latency 1200 ms > 1000 ms: one slot back" in decision.reason
    assert decision.state.aimd.floor_p99_latency_ms is None


# -- gradient mode -------------------------------------------------------------------------------


def test_gradient_mode_ignores_latency_noise_inside_its_tolerance():
    # GIVEN a healthy downstream whose 1 s latency jitters by +-30 %
    decisions = run(Downstream(capacity_in_flight=100, noise=0.3), 60, policy=GRADIENT, setting=Setting(2, 9.0))
    # THEN the controller never cuts, and climbs to the ceiling
    assert all(d.action != "decrease" for d in decisions)
    assert decisions[-1].setting.max_concurrency == BOUNDS.max_concurrency
    assert_within_bounds(decisions)


def test_gradient_mode_settles_near_a_queueing_capacity():
    # GIVEN a downstream that queues (latency grows) above 4 calls in flight, with +-10 % noise
    decisions = run(Downstream(capacity_in_flight=4, refuses=False, noise=0.1), 240, policy=GRADIENT)
    # THEN after the first hour the concurrency stays within [C, tolerance x C + 1]: it lets the
    # latency grow up to the tolerance (1.5 x), and no further
    steady = concurrencies(decisions[60:])
    assert min(steady) >= 4 and max(steady) <= 1.5 * 4 + 1, steady
    assert_within_bounds(decisions)


def test_gradient_mode_cuts_at_least_one_slot_when_latency_alone_says_so():
    # GIVEN a baseline of 200 ms and a period at 800 ms (gradient 1.5 x 200 / 800 < 1)
    state = ControllerState(gradient=GradientState(baseline_latency_ms=200),
                            last_period_end=0.0, written=Setting(2, 9.0))
    metrics = PeriodMetrics(calls=120, latency_p50_ms=800, latency_mean_ms=800)
    decision = decide(metrics, Setting(2, 9.0), BOUNDS, state, GRADIENT, now=90, period_end=60)
    # THEN the concurrency drops by at least one (the queue allowance alone would keep it) and the rate stays
    assert decision.setting == Setting(1, 9.0)
    assert "latency gradient 0.50 < 1" in decision.reason and "gradient decrease" in decision.reason


def test_gradient_mode_still_halves_on_429s():
    state = ControllerState(gradient=GradientState(baseline_latency_ms=200),
                            last_period_end=0.0, written=Setting(6, 9.0))
    metrics = PeriodMetrics(calls=540, throttled=60, latency_p50_ms=200)
    decision = decide(metrics, Setting(6, 9.0), BOUNDS, state, GRADIENT, now=90, period_end=60)
    assert decision.setting == Setting(3, 4.5)
    assert "multiplicative decrease" in decision.reason


def test_the_baseline_learns_healthy_periods_only_and_not_above_the_planned_latency():
    state = ControllerState(gradient=GradientState(baseline_latency_ms=800),
                            last_period_end=0.0, written=Setting(2, 9.0))
    # a healthy period (within the tolerance) moves it by the EWMA weight
    healthy = decide(PeriodMetrics(calls=540, latency_p50_ms=900), Setting(2, 9.0), BOUNDS, state, GRADIENT,
                     now=90, period_end=60)
    assert healthy.state.gradient.baseline_latency_ms == pytest.approx(810)
    # a period far slower (latency overload) leaves it where it was
    slow = decide(PeriodMetrics(calls=540, latency_p50_ms=10_000), Setting(2, 9.0), BOUNDS, healthy.state, GRADIENT,
                  now=150, period_end=120)
    assert slow.state.gradient.baseline_latency_ms == pytest.approx(810)
    # and healthy periods one after another cannot walk it above the planned 1 s
    walked = ControllerState(gradient=GradientState(baseline_latency_ms=1000), last_period_end=0.0,
                             written=Setting(2, 9.0))
    higher = decide(PeriodMetrics(calls=540, latency_p50_ms=1400), Setting(2, 9.0), BOUNDS, walked, GRADIENT,
                    now=90, period_end=60)
    assert higher.state.gradient.baseline_latency_ms == 1000


def test_a_downstream_slower_for_good_is_re_measured_at_the_floor():
    # GIVEN a 900 ms baseline and a downstream now answering in 3 s even at the floor concurrency
    state = ControllerState(gradient=GradientState(baseline_latency_ms=900),
                            last_period_end=0.0, written=Setting(1, 9.0))
    metrics = PeriodMetrics(calls=60, latency_p50_ms=3000)
    decision = decide(metrics, Setting(1, 9.0), BOUNDS, state, GRADIENT, now=90, period_end=60)
    # THEN 3 s becomes the baseline (above the planned 1 s), so the limit can grow again from there
    assert decision.state.gradient.baseline_latency_ms == 3000


# -- the small parts -----------------------------------------------------------------------------


def test_the_evaluated_period_is_the_last_whole_minute_before_the_metrics_delay():
    assert evaluated_period(1_000_000_050.0, 60, 30) == (999_999_960.0, 1_000_000_020.0)
    with pytest.raises(ValueError, match="period_sec must be > 0"):
        evaluated_period(0.0, 0, 30)


def test_state_round_trips_through_an_item_with_decimals():
    from decimal import Decimal

    state = ControllerState(clean_periods=2, last_period_end=60.0, last_decrease_at=30.5, written=Setting(2, 4.5),
                            gradient=GradientState(baseline_latency_ms=210.25, floor_latency_ms=900.0,
                                                   estimated_limit=2.5))
    item = {key: Decimal(str(value)) for key, value in state_to_item(state).items()}
    assert state_from_item(item) == state
    assert state_from_item(None) == ControllerState()


def test_the_floors_p99_round_trips_through_an_item_with_decimals_and_none_leaves_no_key():
    # GIVEN a state that remembers a floor p99
    state = ControllerState(clean_periods=1, last_period_end=60.0, aimd=AimdState(2345.5), written=Setting(1, 9.0))
    # WHEN it is stored and loaded (DynamoDB hands numbers back as Decimal)
    item = state_to_item(state)
    # THEN the field is in the item and comes back as it was
    assert item["floor_p99_latency_ms"] == 2345.5
    assert stored(state) == state
    # AND a forgotten one leaves no key behind (the whole item is replaced on save)
    assert "floor_p99_latency_ms" not in state_to_item(dataclasses.replace(state, aimd=AimdState()))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "pid"}, "mode must be one of ['aimd', 'gradient'], got 'pid'"),
        ({"decrease_factor": 1.0}, "decrease_factor must be a number in (0.0, 1.0), got 1.0"),
        ({"clean_periods_to_increase": 0}, "clean_periods_to_increase must be an int >= 1, got 0"),
        ({"rtt_tolerance": 0.5}, "rtt_tolerance must be a number >= 1, got 0.5"),
        ({"cooldown_sec": -1}, "cooldown_sec must be a number >= 0, got -1"),
    ],
)
def test_a_bad_policy_is_refused_with_the_value(changes, message):
    with pytest.raises(ValueError) as error:
        ControllerPolicy.from_document({**AIMD.to_document(), **changes})
    assert message in str(error.value)


@pytest.mark.parametrize("policy", [AIMD, GRADIENT, ControllerPolicy(algorithm=Aimd(p99_latency_threshold_ms=800),
                                                                     cooldown_sec=60, adjust_rate=False)])
def test_a_policy_round_trips_through_its_flat_document(policy):
    # GIVEN a policy WHEN it is written as its document and read back THEN it is the same policy
    assert ControllerPolicy.from_document(policy.to_document()) == policy
    # AND a document may carry only some fields: the others take their defaults
    assert ControllerPolicy.from_document(policy.to_document(["mode", "cooldown_sec"])) == ControllerPolicy(
        algorithm=type(policy.algorithm)(), cooldown_sec=policy.cooldown_sec)


def test_a_field_of_another_algorithm_is_refused_with_the_mode_named():
    with pytest.raises(ValueError, match=r"unknown controller policy fields \['smoothing'\] for mode 'aimd'"):
        ControllerPolicy.from_document({"mode": "aimd", "smoothing": 0.5})


def test_a_plan_sets_the_p99_bar_of_the_algorithm_that_reads_one():
    assert AIMD.with_p99_latency_threshold(900).algorithm == Aimd(p99_latency_threshold_ms=900)
    assert GRADIENT.with_p99_latency_threshold(900) == GRADIENT


def test_policies_and_bounds_parse_from_plain_mappings_and_refuse_unknown_fields():
    assert ControllerPolicy.from_document({"mode": "gradient", "cooldown_sec": 60}).cooldown_sec == 60
    assert Bounds.from_document({"min_concurrency": 1, "max_concurrency": 8, "min_rate_per_sec": 0.9,
                                "max_rate_per_sec": 9}) == dataclasses.replace(BOUNDS, max_burst=None,
                                                                                expected_latency_ms=None)
    with pytest.raises(ValueError, match=r"unknown controller policy fields \['beta'\]"):
        ControllerPolicy.from_document({"beta": 0.5})
    with pytest.raises(ValueError, match="max_concurrency must be an int >= min_concurrency, got 0 < 1"):
        Bounds(1, 0, 1.0, 2.0)


def test_the_period_just_after_a_cut_does_not_teach_the_floor_its_p99():
    # GIVEN a cut to the floor (1 slot) for a slow p99 a minute ago, still cooling down
    cut_at = 30.0
    state = ControllerState(last_decrease_at=cut_at)
    # WHEN the next period, which still mostly shows the load before the cut, has a 2.9 s p99
    decision = decide(busy_with_p99(2900)(Setting(1, 9.0)), Setting(1, 9.0), BOUNDS, state, P99_AIMD, now=90,
                      period_end=60)
    # THEN nothing is learnt from it, and the cooldown holds the setting
    assert decision.state.aimd.floor_p99_latency_ms is None
    assert decision.action == "hold" and "cooling down" in decision.reason


def test_the_floor_re_measures_its_p99_every_period_so_a_faster_downstream_lowers_the_bar():
    # GIVEN a floor p99 of 2.9 s learnt earlier, at the floor, out of the cooldown
    state = ControllerState(aimd=AimdState(2900))
    # WHEN the downstream's own p99 is now 1.1 s (still above the 1 s threshold)
    decision = decide(busy_with_p99(1100)(Setting(1, 9.0)), Setting(1, 9.0), BOUNDS, state, P99_AIMD, now=500,
                      period_end=480)
    # THEN the memory follows it down, so only 1.65 s (1.5 x 1.1 s) will slow down once there are more slots
    assert decision.state.aimd.floor_p99_latency_ms == 1100
    above = decide(busy_with_p99(1700)(Setting(2, 9.0)), Setting(2, 9.0), BOUNDS, decision.state, P99_AIMD,
                   now=560, period_end=540)
    assert above.action == "decrease" and "p99 latency 1700 ms > 1650 ms" in above.reason


@dataclass(frozen=True)
class HalveOnSlowMedian:
    """A third algorithm, for the test only: a median above 2 s asks for half the concurrency."""

    name: ClassVar[str] = "halve-on-slow-median"

    def with_p99_latency_threshold(self, threshold_ms: float) -> HalveOnSlowMedian:
        return self

    def judge(self, metrics, current, bounds, state, *, new_period, overloaded, held, cooling) -> LatencyJudgement:
        if (metrics.latency_p50_ms or 0) > 2000:
            return LatencyJudgement(state, slow_down="median above 2 s", limit=current.max_concurrency / 2)
        return LatencyJudgement(state)

    def forget(self, state: ControllerState) -> ControllerState:
        return state

    def remember(self, state: ControllerState, concurrency: int) -> ControllerState:
        return state

    def grow(self, current, bounds, limit, step, state) -> tuple[int, ControllerState]:
        return current.max_concurrency + step, state


def test_decide_runs_any_algorithm_behind_the_interface_with_the_shared_guards():
    # GIVEN a policy holding an algorithm decide has never heard of
    policy = ControllerPolicy(algorithm=HalveOnSlowMedian())
    slow = PeriodMetrics(calls=600, latency_p50_ms=2500, latency_mean_ms=2500)
    # WHEN its latency judgement alone says slow down THEN the concurrency goes to the algorithm's own limit
    cut = decide(slow, Setting(8, 9.0), BOUNDS, ControllerState(), policy, now=90, period_end=60)
    assert (cut.action, cut.setting) == ("decrease", Setting(4, 9.0))
    assert cut.reason == "median above 2 s: halve-on-slow-median decrease (max_concurrency 8 -> 4)"
    # AND the shared guards still hold it: the first period after the cut is inside the cooldown
    after = decide(slow, cut.setting, BOUNDS, cut.state, policy, now=210, period_end=180)
    assert after.action == "hold" and "cooling down" in after.reason
    # AND something that is not an algorithm is refused with what to pass instead
    expected = r"algorithm must implement LimitAlgorithm \(e.g. Aimd\(\) or Gradient\(\)\), got 'aimd'"
    with pytest.raises(ValueError, match=expected):
        ControllerPolicy(algorithm="aimd")  # type: ignore[arg-type]


# -- evidence, not our own echo ------------------------------------------------------------------

OVERLOADED = PeriodMetrics(calls=540, throttled=108, latency_p50_ms=200, latency_mean_ms=200)


def test_a_period_that_began_before_our_decrease_took_effect_is_not_cut_on_again():
    # GIVEN a cut on 20 % 429s at 12:01:30 (the period 12:00-12:01), no cooldown, the callers 5 s behind
    policy = dataclasses.replace(AIMD, cooldown_sec=0)
    cut = decide(OVERLOADED, Setting(8, 9.0), BOUNDS, ControllerState(), policy, now=90, period_end=60)
    assert (cut.action, cut.setting) == ("decrease", Setting(4, 4.5))
    # WHEN the next run reads the period 12:01-12:02, as overloaded (it ran at the old setting until 12:01:35)
    echo = decide(OVERLOADED, cut.setting, BOUNDS, cut.state, policy, now=150, period_end=120)
    # THEN it is the echo of what was answered: no second cut, and the reason says why
    assert (echo.action, echo.setting) == ("hold", Setting(4, 4.5))
    assert echo.reason == "hold: the period 60-120 began before the last change took effect at 95: no evidence of it"
    assert echo.state.clean_periods == 0
    # AND the period 12:02-12:03, all of it at the new setting, is evidence: still overloaded, it cuts again
    again = decide(OVERLOADED, echo.setting, BOUNDS, echo.state, policy, now=210, period_end=180)
    assert (again.action, again.setting) == ("decrease", Setting(2, 2.25))


def test_a_clean_period_of_the_setting_before_an_increase_does_not_count_for_the_new_one():
    # GIVEN an increase at 12:01:30
    state = ControllerState(last_change_at=90.0, last_period_end=60.0, written=Setting(4, 9.0))
    clean = PeriodMetrics(calls=540, latency_p50_ms=400, latency_mean_ms=400)
    # WHEN the period 12:01-12:02 (mostly the old setting) is clean
    decision = decide(clean, Setting(4, 9.0), BOUNDS, state, AIMD, now=150, period_end=120)
    # THEN it is no evidence of the new setting: the clean streak does not start
    assert decision.action == "hold" and decision.state.clean_periods == 0
    assert "began before the last change took effect" in decision.reason


def test_an_alarm_still_acts_on_a_period_that_predates_our_change():
    # GIVEN an increase at 12:01:30 WHEN the 429-rate alarm fires at 12:02:10, on the period 12:01-12:02
    state = ControllerState(last_change_at=90.0, last_period_end=60.0, written=Setting(4, 9.0))
    alarm = AlarmSignal("Throttling-dev-crm-ThrottleRate", "throttled")
    decision = decide(OVERLOADED, Setting(4, 9.0), BOUNDS, state, AIMD, now=130, period_end=120, alarms=[alarm])
    # THEN the alarm's word is enough: it halves
    assert (decision.action, decision.setting) == ("decrease", Setting(2, 4.5))


@pytest.mark.parametrize(("now", "action"), [(309.0, "hold"), (310.0, "decrease")])
def test_the_cooldown_counts_from_when_the_decrease_can_show_in_the_metrics(now, action):
    # GIVEN a decrease at 100 s: it can first show in the metrics at 100 + 60 (a period) + 30 (their delay)
    state = ControllerState(last_change_at=100.0, last_decrease_at=100.0, last_period_end=180.0,
                            written=Setting(4, 4.5))
    # WHEN an overloaded period that is evidence of it is judged just before and at 190 + 120 s
    decision = decide(OVERLOADED, Setting(4, 4.5), BOUNDS, state, AIMD, now=now, period_end=240)
    # THEN it holds until the cooldown, counted from 190 s, is over, then cuts
    assert decision.action == action
    if action == "hold":
        assert decision.reason.endswith("cooling down until 310 (120 s after the decrease at 100 could first show"
                                        " in the metrics, at 190)")


def test_a_few_429s_under_a_setting_that_held_halve_instead_of_backing_off_to_what_got_through():
    # GIVEN a setting nobody changed for long, and a period with 3.3 % 429s (a drop late in the period looks so)
    metrics = PeriodMetrics(calls=540, throttled=18, latency_p50_ms=500, latency_mean_ms=500)
    decision = decide(metrics, Setting(8, 9.0), BOUNDS, ControllerState(), AIMD, now=90, period_end=60)
    # THEN the downstream changed, by how much one period cannot tell: halve (not back to the 8.7 that got through)
    assert (decision.action, decision.setting) == ("decrease", Setting(4, 4.5))
    assert "multiplicative decrease x0.5" in decision.reason


# -- the rate left to the limiter's inner loop (adjust_rate false) --------------------------------

INNER_LOOP_AIMD = ControllerPolicy(adjust_rate=False)


def test_where_the_inner_loop_owns_the_rate_a_minutes_429s_do_not_cut_the_concurrency():
    # GIVEN 4 slots, the rate left to the callers' inner loop, and a period with 3 % 429s (a capacity drop the
    # inner loop answered within the call, or its probes)
    metrics = PeriodMetrics(calls=540, throttled=16, latency_p50_ms=200, latency_p99_ms=400)
    # WHEN the controller sees the period
    decision = decide(metrics, Setting(4, 9.0), BOUNDS, ControllerState(), INNER_LOOP_AIMD, now=90, period_end=60)
    # THEN it holds the concurrency (the period counts as clean) and says who answered the 429s
    assert (decision.action, decision.setting) == ("hold", Setting(4, 9.0))
    assert decision.reason == ("429 rate 3.0% > 1.0%: the limiter's inner loop answered them; hold: clean period 1/3:"
                               " holding (hysteresis)")
    # AND the same period with the rate the controller's halves both, as before
    assert decide(metrics, Setting(4, 9.0), BOUNDS, ControllerState(), AIMD, now=90,
                  period_end=60).setting == Setting(2, 4.5)


def test_where_the_inner_loop_owns_the_rate_the_sustained_429_alarm_still_halves_the_concurrency_only():
    # GIVEN the same period, and the 429 alarm in ALARM (2 of 3 minutes: 429s the inner loop did not contain)
    metrics = PeriodMetrics(calls=540, throttled=16, latency_p50_ms=200, latency_p99_ms=400)
    alarm = AlarmSignal("Throttling-dev-crm-ThrottleRate", "throttled")
    # WHEN the controller sees them
    decision = decide(metrics, Setting(4, 9.0), BOUNDS, ControllerState(), INNER_LOOP_AIMD, now=90, period_end=60,
                      alarms=[alarm])
    # THEN the concurrency halves and the rate, the inner loop's ceiling, stays
    assert (decision.action, decision.setting) == ("decrease", Setting(2, 9.0))
