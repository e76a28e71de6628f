"""`decide`: the next setting of one downstream after one period, whatever the algorithm (see README.md)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from throttling.core import planning
from throttling.core.controller import guards
from throttling.core.controller._checks import num, pct
from throttling.core.controller.algorithm import LatencyJudgement
from throttling.core.controller.period import AlarmSignal, PeriodMetrics
from throttling.core.controller.policy import ControllerPolicy
from throttling.core.controller.setting import Bounds, Setting
from throttling.core.controller.state import Action, ControllerState, Decision

__all__ = ["decide"]


def decide(
    metrics: PeriodMetrics | None,
    current: Setting,
    bounds: Bounds,
    state: ControllerState,
    policy: ControllerPolicy,
    *,
    now: float,
    period_end: float,
    alarms: Sequence[AlarmSignal] = (),
    period_sec: float = float(planning.DEFAULT_PERIOD_SEC),
    metrics_delay_sec: float = float(planning.DEFAULT_METRICS_DELAY_SEC),
) -> Decision:
    """The next setting for one downstream after the period ending at `period_end`.

    `metrics` None means CloudWatch had nothing for the period. `alarms` are this downstream's
    slow-down alarms in ALARM right now. `period_sec` and `metrics_delay_sec` are the caller's
    schedule (how long a period is, how long after its end its metrics are read): with them a
    change's cooldown counts from when it can show in the metrics. Never returns a setting outside
    `bounds`; never increases anything when the period or an alarm shows overload; never judges a
    period that began before our last change took effect as evidence of that change.
    """
    algorithm = policy.algorithm
    period_start = period_end - period_sec

    def cooldown(state: ControllerState) -> str | None:
        """Why the last decrease still cools down (None: it does not)."""
        if not guards.cooling(state, policy, now, period_sec=period_sec, metrics_delay_sec=metrics_delay_sec):
            return None
        assert state.last_decrease_at is not None
        visible = guards.change_visible_at(state.last_decrease_at, period_sec=period_sec,
                                           metrics_delay_sec=metrics_delay_sec)
        return (f"cooling down until {num(visible + policy.cooldown_sec)} ({num(policy.cooldown_sec)} s after the"
                f" decrease at {num(state.last_decrease_at)} could first show in the metrics, at {num(visible)})")

    notes: list[str] = []
    adopted = guards.adopted(state, current)
    if state.written is not None and adopted:
        notes.append(f"adopted {current.describe()} written by someone else (ours was {state.written.describe()})")
        state = algorithm.forget(dataclasses.replace(state, written=current, clean_periods=0))
    elif state.written is None:
        state = dataclasses.replace(state, written=current)

    if not bounds.contains(current):
        clamped = bounds.clamp(current)
        return _change(
            "clamp", clamped, current, state, now, notes,
            f"{current.describe()} is outside the bounds (max_concurrency {bounds.min_concurrency}-"
            f"{bounds.max_concurrency}, rate_per_sec {num(bounds.min_rate_per_sec)}-{num(bounds.max_rate_per_sec)}):"
            f" clamped to {clamped.describe()}",
        )

    held = guards.setting_held(state, policy, metrics, period_end, adopted_now=adopted)
    new_period = guards.is_new_period(state, period_end)
    if not new_period and not alarms:
        return _hold(current, state, notes, f"the period ending at {num(period_end)} was already evaluated")
    if new_period:
        state = dataclasses.replace(state, last_period_end=period_end)

    if guards.predates_change(state, policy, period_start):
        # Its 429s, errors and latency were answered by the change already, and a clean minute of the
        # setting before says nothing of the new one: only an alarm in ALARM now may still act.
        overload, slows_rate = guards.overload(None, alarms, policy, evidence=False)
        if overload:
            return _decrease(current, bounds, state, policy, now, notes, overload, slows_rate, None,
                             cooldown=cooldown(state))
        effective = guards.effect_at(state, policy)
        return _hold(current, state, notes, f"the period {num(period_start)}-{num(period_end)} began before the last"
                                            f" change took effect at {num(effective)}: no evidence of it")

    evidence = guards.has_evidence(metrics, policy)
    overload, slows_rate = guards.overload(metrics, alarms, policy, evidence=evidence)
    if (evidence and metrics is not None and not policy.adjust_rate
            and metrics.throttle_rate > policy.throttle_rate_threshold):
        notes.append(f"429 rate {pct(metrics.throttle_rate)} > {pct(policy.throttle_rate_threshold)}: the limiter's"
                     " inner loop answered them")
    judgement = LatencyJudgement(state)
    latency_only = False
    if evidence and metrics is not None:
        judgement = algorithm.judge(metrics, current, bounds, state, new_period=new_period, overloaded=bool(overload),
                                    held=held, cooling=cooldown(state) is not None)
        state = judgement.state
        if judgement.slow_down is not None:
            latency_only = not overload
            overload.append(judgement.slow_down)
        if judgement.note is not None:
            notes.append(judgement.note)

    if overload:
        probe = guards.is_probe_overshoot(metrics, alarms, overload, policy, state, period_start, period_sec,
                                          evidence=evidence)
        return _decrease(current, bounds, state, policy, now, notes, overload, slows_rate,
                         judgement.limit if latency_only else None, metrics if probe else None, cooldown=cooldown(state))

    if metrics is None or not metrics.has_calls:
        return _hold(current, state, notes, "no data for the period")
    if not evidence:
        return _hold(current, state, notes, f"too few calls to judge ({num(metrics.calls)} < {policy.min_calls})")
    if guards.is_outage(metrics, policy):
        # An outage says nothing of our load: neither clean nor overloaded, so the streak is kept.
        return _hold(current, state, notes, f"the downstream answered {num(metrics.down)} calls with 5xx + Retry-After"
                                            " (down, not overloaded; the breaker's business)")
    if not new_period:
        return _hold(current, state, notes, "the period was already counted")

    clean = state.clean_periods + 1
    state = dataclasses.replace(state, clean_periods=clean)
    if (cooling := cooldown(state)) is not None:
        return _hold(current, state, notes, f"clean period {clean}/{policy.clean_periods_to_increase}; {cooling}")
    if clean < policy.clean_periods_to_increase:
        return _hold(current, state, notes, f"clean period {clean}/{policy.clean_periods_to_increase}: holding (hysteresis)")
    return _increase(metrics, current, bounds, state, policy, now, notes, clean, judgement.limit)


# -- the two moves -------------------------------------------------------------------------------


def _decrease(
    current: Setting,
    bounds: Bounds,
    state: ControllerState,
    policy: ControllerPolicy,
    now: float,
    notes: list[str],
    overload: list[str],
    slows_rate: bool,
    latency_limit: float | None,
    overshoot: PeriodMetrics | None = None,
    *,
    cooldown: str | None,
) -> Decision:
    """`latency_limit` is the algorithm's limit when latency alone says slow down (else None: x beta);
    `overshoot` the period of a probe just over the limit (back to what got through, not x beta);
    `cooldown` why the last decrease still cools down (None: it does not)."""
    state = dataclasses.replace(state, clean_periods=0)
    why = "; ".join(overload)
    if cooldown is not None:
        return _hold(current, state, notes, f"{why}: {cooldown}")
    if latency_limit is None:
        concurrency = _multiplicative_decrease(current.max_concurrency, policy.decrease_factor)
        how = f"multiplicative decrease x{num(policy.decrease_factor)}"
    else:
        # At small limits the queue allowance outweighs the gradient: still at least one slot less.
        concurrency = min(current.max_concurrency - 1, math.floor(latency_limit))
        how = "one slot back" if policy.mode == "aimd" else f"{policy.mode} decrease"
    concurrency = min(current.max_concurrency, max(bounds.min_concurrency, concurrency))
    rate = current.rate_per_sec
    if policy.adjust_rate and slows_rate:
        rate = current.rate_per_sec * policy.decrease_factor
        if overshoot is not None:
            accepted = min(current.rate_per_sec, overshoot.successes / overshoot.period_sec)
            fallback = accepted * (1 - policy.fallback_margin)
            # Compared with what the halved setting would carry, not with half the rate: when the
            # concurrency is what binds, half the rate may be more than halving leaves to get through.
            if fallback > _carried(Setting(concurrency, rate), overshoot):
                rate = fallback
                needed = _in_flight_for(rate, overshoot, policy)
                concurrency = current.max_concurrency if needed is None else max(
                    concurrency, min(current.max_concurrency, needed))
                how = f"back to the {num(round(accepted, 3))} req/s that got through, less {pct(policy.fallback_margin)}"
        rate = min(current.rate_per_sec, max(bounds.min_rate_per_sec, _round_rate(rate)))
    proposed = Setting(concurrency, rate)
    if proposed == current:
        return _hold(current, state, notes, f"{why}: already at the floor ({current.describe()})")
    state = policy.algorithm.remember(dataclasses.replace(state, last_decrease_at=now), concurrency)
    return _change("decrease", proposed, current, state, now, notes, f"{why}: {how} ({_delta(current, proposed)})")


def _multiplicative_decrease(max_concurrency: int, factor: float) -> int:
    halved = max_concurrency * factor
    concurrency = math.floor(halved)
    if concurrency == 1 and halved >= 1.5 and max_concurrency > 2:
        # Flooring 1.5 slots to 1 would cut two thirds, and one call in flight carries less than
        # the halved rate; from 4 slots up, flooring is the halving the stated amplitude assumes.
        # (From 2 slots a gentle factor must still reach 1, or the decrease would be no decrease.)
        concurrency = 2
    return concurrency


def _increase(
    metrics: PeriodMetrics,
    current: Setting,
    bounds: Bounds,
    state: ControllerState,
    policy: ControllerPolicy,
    now: float,
    notes: list[str],
    clean: int,
    limit: float | None,
) -> Decision:
    """`limit` is the algorithm's own limit for the period (None: the additive increase)."""
    in_flight = metrics.mean_in_flight
    concurrency_used = guards.concurrency_used(metrics, current, policy)
    rate_used = guards.rate_used(metrics, current, policy)
    usage = (
        f"{num(in_flight) if in_flight is not None else 'unknown'} of {current.max_concurrency} in flight,"
        f" {num(metrics.call_rate_per_sec)} of {num(current.rate_per_sec)} req/s"
    )

    concurrency = current.max_concurrency
    if concurrency_used:
        concurrency, state = policy.algorithm.grow(current, bounds, limit, policy.concurrency_step, state)
        concurrency = min(concurrency, current.max_concurrency + policy.concurrency_step, bounds.max_concurrency)
    rate = current.rate_per_sec
    if policy.adjust_rate and rate_used:
        rate = min(bounds.max_rate_per_sec, _round_rate(current.rate_per_sec + policy.rate_step_fraction * bounds.max_rate_per_sec))
    proposed = Setting(concurrency, rate)
    if proposed == current:
        why_not = [
            "max_concurrency " + ("not used" if not concurrency_used
                                  else "at its ceiling" if current.max_concurrency >= bounds.max_concurrency
                                  else "below the next whole slot"),
            "rate_per_sec " + ("not adjusted" if not policy.adjust_rate else "not used" if not rate_used
                               else "at its ceiling"),
        ]
        return _hold(current, state, notes, f"clean for {clean} periods ({usage}), but {' and '.join(why_not)}")
    how = "additive increase" if limit is None else f"{policy.mode} increase"
    state = dataclasses.replace(state, clean_periods=0)
    if limit is None or not concurrency_used:
        # An algorithm that grew towards a limit of its own has remembered it already.
        state = policy.algorithm.remember(state, concurrency)
    return _change("increase", proposed, current, state, now, notes,
                   f"clean for {clean} periods and the limit is used ({usage}): {how} ({_delta(current, proposed)})")


# -- helpers -------------------------------------------------------------------------------------


def _carried(setting: Setting, metrics: PeriodMetrics) -> float:
    """The calls per second `setting` lets through at the period's latency (its rate alone without one)."""
    latency_ms = metrics.latency_mean_ms or metrics.latency_p50_ms
    if not latency_ms:
        return setting.rate_per_sec
    return min(setting.rate_per_sec, setting.max_concurrency * 1000 / latency_ms)


def _in_flight_for(rate_per_sec: float, metrics: PeriodMetrics, policy: ControllerPolicy) -> int | None:
    """The concurrency that carries `rate_per_sec` at the period's latency, used at `utilization_to_increase`."""
    latency_ms = metrics.latency_mean_ms or metrics.latency_p50_ms
    if not latency_ms:
        return None
    return math.ceil(rate_per_sec * latency_ms / 1000 / policy.utilization_to_increase - 1e-9)


def _change(action: Action, proposed: Setting, current: Setting, state: ControllerState, now: float,
            notes: list[str], reason: str) -> Decision:
    state = dataclasses.replace(state, last_change_at=now, written=proposed)
    return Decision(proposed, current, state, action, "; ".join([*notes, reason]))


def _hold(current: Setting, state: ControllerState, notes: list[str], reason: str) -> Decision:
    return Decision(current, current, state, "hold", "; ".join([*notes, f"hold: {reason}"]))


def _delta(before: Setting, after: Setting) -> str:
    parts = []
    if before.max_concurrency != after.max_concurrency:
        parts.append(f"max_concurrency {before.max_concurrency} -> {after.max_concurrency}")
    if before.rate_per_sec != after.rate_per_sec:
        parts.append(f"rate_per_sec {num(before.rate_per_sec)} -> {num(after.rate_per_sec)}")
    return ", ".join(parts)


def _round_rate(rate: float) -> float:
    return round(rate, 3)
