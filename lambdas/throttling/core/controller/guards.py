"""The controller's guards, one small function each (README.md says which failure mode each one answers)."""

from __future__ import annotations

from collections.abc import Sequence

from throttling.core.controller._checks import pct
from throttling.core.controller.period import AlarmSignal, PeriodMetrics
from throttling.core.controller.policy import ControllerPolicy
from throttling.core.controller.setting import Setting
from throttling.core.controller.state import ControllerState
from throttling.core.names import ALARM_LATENCY

__all__ = [
    "adopted",
    "change_visible_at",
    "concurrency_used",
    "cooling",
    "effect_at",
    "has_evidence",
    "is_new_period",
    "is_outage",
    "is_probe_overshoot",
    "overload",
    "predates_change",
    "rate_used",
    "setting_held",
]


def adopted(state: ControllerState, current: Setting) -> bool:
    """Someone else wrote the document since our last write: their value is the new truth."""
    return state.written is not None and state.written != current


def effect_at(state: ControllerState, policy: ControllerPolicy) -> float | None:
    """When the last change (ours) reached every caller; None when none is remembered."""
    return None if state.last_change_at is None else state.last_change_at + policy.setting_propagation_sec


def predates_change(state: ControllerState, policy: ControllerPolicy, period_start: float) -> bool:
    """The period began before the last change took effect: its data show the setting the change replaced
    (in whole or in part), so they are no evidence of the change, neither an overload to answer again
    nor a clean period of the new setting."""
    at = effect_at(state, policy)
    return at is not None and period_start < at


def change_visible_at(changed_at: float, *, period_sec: float, metrics_delay_sec: float) -> float:
    """The earliest moment a change made at `changed_at` can show in the metrics the controller reads: a
    whole period after it, complete `metrics_delay_sec` later. Before then, every period read predates it."""
    return changed_at + period_sec + metrics_delay_sec


def cooling(state: ControllerState, policy: ControllerPolicy, now: float, *, period_sec: float,
            metrics_delay_sec: float) -> bool:
    """A decrease is recent: `cooldown_sec` has not passed since it could first show in the metrics.

    Counted from when the decrease can show, not from the decision: counted from the decision, a
    schedule that runs late in the minute judges periods from before the decrease after the
    cooldown ran out, and cuts a second time on the evidence it already answered.
    """
    if state.last_decrease_at is None:
        return False
    visible = change_visible_at(state.last_decrease_at, period_sec=period_sec, metrics_delay_sec=metrics_delay_sec)
    return now < visible + policy.cooldown_sec


def setting_held(state: ControllerState, policy: ControllerPolicy, metrics: PeriodMetrics | None, period_end: float,
                 *, adopted_now: bool) -> bool:
    """Our load was the same through the whole period and the one before it, which was evaluated too: what
    changed between them was not of our making. (The first period after a change is the first that shows
    it, never one the setting held through.)"""
    if adopted_now or state.last_period_end is None or metrics is None:
        return False
    at = effect_at(state, policy)
    return at is None or at <= period_end - 2 * metrics.period_sec


def is_new_period(state: ControllerState, period_end: float) -> bool:
    """A period after the last one evaluated: a schedule and an alarm in the same minute count it once."""
    return state.last_period_end is None or period_end > state.last_period_end


def has_evidence(metrics: PeriodMetrics | None, policy: ControllerPolicy) -> bool:
    """Enough calls to judge: fewer is no evidence either way."""
    return metrics is not None and metrics.has_calls and metrics.call_count >= policy.min_calls


def overload(metrics: PeriodMetrics | None, alarms: Sequence[AlarmSignal], policy: ControllerPolicy, *,
             evidence: bool) -> tuple[list[str], bool]:
    """Why alarms, 429s and errors say slow down (empty: they do not), and whether the rate must slow down too
    (latency alarms slow the concurrency only)."""
    reasons = [f"alarm {alarm.name} in ALARM" for alarm in alarms]
    slows_rate = any(alarm.kind != ALARM_LATENCY for alarm in alarms)
    if evidence and metrics is not None:
        # Where the rate is the limiter's inner loop's (`adjust_rate` False), it answered each 429 within
        # the call: cutting the concurrency too, a minute late, would count them twice and leave it low
        # long after the capacity came back. Only the 429 alarm (sustained: 2 of 3 minutes) speaks for them.
        if policy.adjust_rate and metrics.throttle_rate > policy.throttle_rate_threshold:
            reasons.append(f"429 rate {pct(metrics.throttle_rate)} > {pct(policy.throttle_rate_threshold)}")
            slows_rate = True
        if metrics.error_rate > policy.error_rate_threshold:
            reasons.append(f"error rate {pct(metrics.error_rate)} > {pct(policy.error_rate_threshold)}")
            slows_rate = True
    return reasons, slows_rate


def is_probe_overshoot(metrics: PeriodMetrics | None, alarms: Sequence[AlarmSignal], reasons: Sequence[str],
                       policy: ControllerPolicy, state: ControllerState, period_start: float, period_sec: float, *,
                       evidence: bool) -> bool:
    """429s alone, and only a few, in the first period of our own increase: our probe went just over the
    limit, and what got through in the period is the best estimate of it; halving would undershoot.

    Not after a decrease or under a setting that held: then the downstream changed, and a few 429s may
    be the first seconds of a large drop late in the period, whose successes still count the capacity
    before it (backing off to them would take a second cut a period later)."""
    increased_last = state.last_change_at is not None and state.last_change_at != state.last_decrease_at
    first_period_of_it = (increased_last and (at := effect_at(state, policy)) is not None
                          and period_start < at + period_sec)
    return (evidence and metrics is not None and not alarms and len(reasons) == 1 and first_period_of_it
            and policy.throttle_rate_threshold < metrics.throttle_rate <= policy.probe_throttle_rate)


def is_outage(metrics: PeriodMetrics, policy: ControllerPolicy) -> bool:
    """The downstream said it is down (5xx with a Retry-After): that says nothing of our load."""
    return metrics.down_rate > policy.error_rate_threshold


def concurrency_used(metrics: PeriodMetrics, current: Setting, policy: ControllerPolicy) -> bool:
    """The mean calls in flight (Little's law) reach `utilization_to_increase` of the concurrency."""
    in_flight = metrics.mean_in_flight
    return in_flight is not None and in_flight >= policy.utilization_to_increase * current.max_concurrency


def rate_used(metrics: PeriodMetrics, current: Setting, policy: ControllerPolicy) -> bool:
    """The call rate reaches `utilization_to_increase` of the rate, or our own limiter refused calls."""
    return (metrics.call_rate_per_sec >= policy.utilization_to_increase * current.rate_per_sec
            or metrics.limiter_refused > 0)
