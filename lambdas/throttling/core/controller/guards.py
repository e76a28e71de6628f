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
    "concurrency_used",
    "cooling",
    "has_evidence",
    "is_new_period",
    "is_outage",
    "is_probe_overshoot",
    "overload",
    "rate_used",
    "setting_held",
]


def adopted(state: ControllerState, current: Setting) -> bool:
    """Someone else wrote the document since our last write: their value is the new truth."""
    return state.written is not None and state.written != current


def cooling(state: ControllerState, policy: ControllerPolicy, now: float) -> bool:
    """A decrease is recent: the next periods still show the load before it, so nothing moves."""
    return state.last_decrease_at is not None and now - state.last_decrease_at < policy.cooldown_sec


def setting_held(state: ControllerState, metrics: PeriodMetrics | None, period_end: float, *,
                 adopted_now: bool) -> bool:
    """Our load was the same through the whole period, and the one before it was evaluated too: what
    changed in it was not of our making."""
    return (not adopted_now and state.last_period_end is not None and metrics is not None
            and (state.last_change_at is None or state.last_change_at <= period_end - metrics.period_sec))


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
        if metrics.throttle_rate > policy.throttle_rate_threshold:
            reasons.append(f"429 rate {pct(metrics.throttle_rate)} > {pct(policy.throttle_rate_threshold)}")
            slows_rate = True
        if metrics.error_rate > policy.error_rate_threshold:
            reasons.append(f"error rate {pct(metrics.error_rate)} > {pct(policy.error_rate_threshold)}")
            slows_rate = True
    return reasons, slows_rate


def is_probe_overshoot(metrics: PeriodMetrics | None, alarms: Sequence[AlarmSignal], reasons: Sequence[str],
                       policy: ControllerPolicy, *, evidence: bool) -> bool:
    """429s alone, and only a few: we are just over the limit (our own probe, or a small drop), and what
    got through in the period is the best estimate of it; halving would undershoot."""
    return (evidence and metrics is not None and not alarms and len(reasons) == 1
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
