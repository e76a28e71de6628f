"""A pure controller that tunes one downstream's concurrency and rate from one period's metrics.

Each call of `decide` takes what one period (a minute, by default) showed for one downstream, the
setting in force (read from SSM: SSM is the source of truth), the bounds the controller may move
within and the controller's own state, and returns the next setting, the next state and a reason.
It imports no AWS library and never reads the clock: the caller passes `now` and the period.

Two modes decide how the concurrency moves while the downstream is healthy; both share the
overload path and every guard:

- `aimd` (default): additive increase, multiplicative decrease. After `clean_periods_to_increase`
  clean periods in a row, if the limit is actually used, concurrency grows by `concurrency_step`
  and the rate by `rate_step_fraction` of its ceiling. On 429s above `throttle_rate_threshold`,
  errors (5xx, timeouts) above `error_rate_threshold`, a p99 latency above
  `p99_latency_threshold_ms`, or a slow-down alarm, both shrink to `decrease_factor` times
  (1.5 slots rounded up to 2, not down to 1). A period whose only trouble is a few 429s (at most
  `probe_throttle_rate`) is a probe just over the limit: the rate backs off to what got through
  (the period's successes per second, less `fallback_margin`), with the concurrency that carries
  it, rather than to half: halving after every probe would saw well below the limit.
- `gradient`, in the spirit of Netflix's Gradient2 and Envoy's adaptive concurrency: a long-term
  latency baseline (an EWMA of the period medians) against this period's median gives
  `gradient = clamp(rtt_tolerance * baseline / median, min_gradient, 1)`, and the limit moves to
  `limit * gradient + sqrt(limit)` (the square root is the queue allowance), smoothed by
  `smoothing`. The limit is kept as a float in the state and published rounded down. 429s,
  errors and alarms still shrink it by `decrease_factor` as in `aimd`.

The known failure modes of both, and the guard for each:

- Unbounded growth while the caller, not the downstream, is the bottleneck (the limit rises
  because nothing pushes back): a limit grows only when it is used, i.e. the mean calls in flight
  (Little's law: call rate x mean latency) reach `utilization_to_increase` of the concurrency, or
  the call rate reaches that fraction of the rate (or our own limiter refused calls).
- Overshoot from one noisy period: growth needs `clean_periods_to_increase` clean periods in a
  row (hysteresis) and is at most `concurrency_step` per period, whatever the mode computes.
- Collapse from repeated decreases on the same evidence (the metrics of the period after a
  decrease still show the old setting): `cooldown_sec` after a decrease, nothing moves.
- A limit driven to nothing: never below the floor of `Bounds`; a downstream that is really down
  is the circuit breaker's job, not the controller's.
- aimd: a downstream whose own p99 rises above the threshold (no cut can lower it) would pin the
  concurrency to the floor for good: a p99 above the threshold at the floor is taken as the
  downstream's own (`floor_p99_latency_ms`), and only a p99 `rtt_tolerance` times above it slows
  down again, until the p99 is back under the threshold.
- aimd: a downstream whose latency creeps up on its own (it queues what it cannot serve at once,
  and refuses nothing) would be cut by the p99 guard as if we overloaded it, though it still
  answers every call we send: halving then gives up throughput and lowers nothing but our share
  of its queue. The guard cuts only for a rise our load can explain, as Gradient2 compares latency
  before and after: a p99 above the bar in a period our setting held through (the one before it
  evaluated too, no change of ours or anyone's since), with no 429s, errors or alarm, is measured
  as the downstream's own, as at the floor, and raises the bar to `rtt_tolerance` times it; the
  same p99 in the period of a change (our increase, someone else's write) or of no known history
  still cuts. What it still misreads: a demand that grows under an unchanged setting reads as the
  downstream's own; a creep that crosses the bar just after our increase reads as ours (one
  halving; the bar follows from the next crossing on).
- Acting on no evidence: no data, or fewer than `min_calls` calls, holds (and neither counts as
  clean nor breaks a clean streak, so a bursty daily batch can still recover).
- Reading an outage as overload: a downstream that answers 5xx with a Retry-After (`down`) says it
  is unavailable until a time, not that we send too much; slowing down does not bring it back
  sooner, and the additive climb afterwards would take many periods. Such answers are not errors
  (the error rate counts the other 5xx and timeouts), and a period where they are more than
  `error_rate_threshold` of the calls holds as with no data (not clean, the streak kept): the
  outage is the circuit breaker's business. 429s, the other errors, latency and alarms in that
  period still slow down.
- Counting one period twice (a schedule and an alarm in the same minute): a period at or before
  the last one evaluated does not advance the clean streak; only an alarm may act on it.
- Gradient: a baseline that drifts up with sustained load (so the gradient creeps back to 1 and
  the limit grows into the downstream's queue) is fed only by healthy periods (no 429s or
  errors, a median within `rtt_tolerance` of it), and never rises above the latency the plan
  assumes (`Bounds.expected_latency_ms`) except by a measurement at the floor concurrency: a
  downstream that is slow even there got slower for good, and is re-measured (as Envoy measures
  its minRTT at minimum concurrency) instead of pinning the limit to the floor. At small limits
  the queue allowance outweighs any gradient, so a latency-driven decrease is at least one slot.
  The tolerance must exceed the spread of the per-period medians, or noise alone cuts. aimd's
  re-measuring at a setting that held is not used here: the gradient moves a slot at a time, so
  the period after its cut still sits near the tolerance, where noise is read as the
  downstream's own and the baseline walks up into the queue (the limit then reaches its ceiling
  against a downstream that queues above 4 calls).

Defaults (see `ControllerPolicy`): AIMD, 1 % 429s, 5 % errors, x0.5 decrease, +1 concurrency and
+10 % of the rate ceiling per increase, 3 clean periods, 120 s cooldown, at least 10 calls, 80 %
utilization to grow, a probe's back-off for up to 5 % 429s to 5 % below what got through;
gradient tolerance 1.5, baseline EWMA weight 0.1, smoothing 0.5, gradient floor 0.5. With
these, steady-state AIMD against a downstream that refuses above `C` calls in flight saws between
`floor(C x 0.5)` and `C + 1`, and is flat at its ceiling when nothing refuses. The lab
(`make bench`) shows what the defaults do against a modelled downstream, next to the baselines.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ACTIONS",
    "ALARM_KINDS",
    "MODES",
    "AlarmSignal",
    "Bounds",
    "ControllerPolicy",
    "ControllerState",
    "Decision",
    "PeriodMetrics",
    "Setting",
    "decide",
    "evaluated_period",
]

MODES = ("aimd", "gradient")
ACTIONS = ("increase", "decrease", "clamp", "hold")
# What a slow-down alarm watches: 429s and errors also lower the rate; latency only the concurrency.
ALARM_KINDS = ("throttled", "errors", "latency")

Mode = Literal["aimd", "gradient"]
Action = Literal["increase", "decrease", "clamp", "hold"]


def evaluated_period(now: float, period_sec: float = 60.0, delay_sec: float = 30.0) -> tuple[float, float]:
    """The last whole period whose metrics are complete at `now`: `(start, end)` in epoch seconds.

    Metrics land in CloudWatch some time after the calls (EMF is shipped from the logs), so the
    period ends at or before `now - delay_sec`, on a multiple of `period_sec`.
    """
    if not (_finite(period_sec) and period_sec > 0) or not (_finite(delay_sec) and delay_sec >= 0):
        raise ValueError(f"period_sec must be > 0 and delay_sec >= 0, got {period_sec!r} and {delay_sec!r}")
    end = math.floor((now - delay_sec) / period_sec) * period_sec
    return end - period_sec, end


@dataclass(frozen=True)
class PeriodMetrics:
    """What one period showed for one downstream, summed over every function that calls it.

    `calls` is None when CloudWatch had no datapoint (nobody called). `server_errors` are 5xx and
    refused connections, `timeouts` calls that got no answer in time (the callers here count both
    as `DownstreamUnavailable`, so `timeouts` may stay 0). `down` are 5xx that came with a
    Retry-After (`DownstreamDown`): the downstream said it is unavailable until a time; they are
    not in `server_errors`. `limiter_refused` counts calls our own limiter turned away
    (`RateLimited`): demand above the rate in force. Successes are what is left:
    `calls - throttled - server_errors - timeouts - down`. Latencies are of answered calls.
    """

    calls: float | None = None
    throttled: float = 0.0
    server_errors: float = 0.0
    timeouts: float = 0.0
    limiter_refused: float = 0.0
    down: float = 0.0
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    latency_mean_ms: float | None = None
    period_sec: float = 60.0

    def __post_init__(self) -> None:
        for name in ("throttled", "server_errors", "timeouts", "limiter_refused", "down"):
            _require_non_negative(name, getattr(self, name))
        for name in ("calls", "latency_p50_ms", "latency_p99_ms", "latency_mean_ms"):
            value = getattr(self, name)
            if value is not None:
                _require_non_negative(name, value)
        if not (_finite(self.period_sec) and self.period_sec > 0):
            raise ValueError(f"period_sec must be a number > 0, got {self.period_sec!r}")

    @property
    def has_calls(self) -> bool:
        return self.calls is not None and self.calls > 0

    @property
    def throttle_rate(self) -> float:
        """429s per call (capped at 1: counters come from separate metrics and may disagree)."""
        return min(1.0, self.throttled / self.calls) if self.has_calls else 0.0  # type: ignore[operator]

    @property
    def error_rate(self) -> float:
        """5xx and timeouts per call, answers of a downstream that said it is down left out."""
        return min(1.0, (self.server_errors + self.timeouts) / self.calls) if self.has_calls else 0.0  # type: ignore[operator]

    @property
    def successes(self) -> float:
        return max(0.0, (self.calls or 0.0) - self.throttled - self.server_errors - self.timeouts - self.down)

    @property
    def down_rate(self) -> float:
        """Answers "down until a time" (5xx with a Retry-After) per call."""
        return min(1.0, self.down / self.calls) if self.has_calls else 0.0  # type: ignore[operator]

    @property
    def call_rate_per_sec(self) -> float:
        return (self.calls or 0.0) / self.period_sec

    @property
    def typical_latency_ms(self) -> float | None:
        """The median if known, else the mean: the "short RTT" of the gradient."""
        return self.latency_p50_ms if self.latency_p50_ms is not None else self.latency_mean_ms

    @property
    def mean_in_flight(self) -> float | None:
        """Calls in flight on average, by Little's law (rate x mean latency); None without a latency."""
        latency_ms = self.latency_mean_ms if self.latency_mean_ms is not None else self.latency_p50_ms
        if latency_ms is None:
            return None
        return self.call_rate_per_sec * latency_ms / 1000


@dataclass(frozen=True)
class Setting:
    """The two values the controller owns in a downstream's tunables document."""

    max_concurrency: int
    rate_per_sec: float

    def __post_init__(self) -> None:
        if isinstance(self.max_concurrency, bool) or not isinstance(self.max_concurrency, int) or self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an int >= 1, got {self.max_concurrency!r}")
        if not (_finite(self.rate_per_sec) and self.rate_per_sec > 0):
            raise ValueError(f"rate_per_sec must be a number > 0, got {self.rate_per_sec!r}")

    def describe(self) -> str:
        return f"max_concurrency {self.max_concurrency}, rate_per_sec {_num(self.rate_per_sec)}"


@dataclass(frozen=True)
class Bounds:
    """Where the controller may move a downstream's setting.

    `max_rate_per_sec` is the downstream's contract (less any headroom we keep); the controller
    never writes a rate above it. `max_concurrency` is typically a few times the Little's-law
    concurrency (rate x expected latency). `max_burst`, when given, is the burst at the rate
    ceiling: a rate change sets the burst in proportion (`burst_for`), so a lowered rate does not
    keep a burst sized for the full one; None leaves the burst alone. `expected_latency_ms` is the
    latency the plan assumes (Little's law); in gradient mode the latency baseline may rise above
    it only by a measurement at the floor concurrency. None: no such anchor.
    """

    min_concurrency: int
    max_concurrency: int
    min_rate_per_sec: float
    max_rate_per_sec: float
    max_burst: int | None = None
    expected_latency_ms: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.min_concurrency, bool) or not isinstance(self.min_concurrency, int) or self.min_concurrency < 1:
            raise ValueError(f"min_concurrency must be an int >= 1, got {self.min_concurrency!r}")
        if not isinstance(self.max_concurrency, int) or self.max_concurrency < self.min_concurrency:
            raise ValueError(
                f"max_concurrency must be an int >= min_concurrency, got {self.max_concurrency!r} < {self.min_concurrency}"
            )
        if not (_finite(self.min_rate_per_sec) and self.min_rate_per_sec > 0):
            raise ValueError(f"min_rate_per_sec must be a number > 0, got {self.min_rate_per_sec!r}")
        if not (_finite(self.max_rate_per_sec) and self.max_rate_per_sec >= self.min_rate_per_sec):
            raise ValueError(
                f"max_rate_per_sec must be a number >= min_rate_per_sec, got {self.max_rate_per_sec!r}"
                f" < {self.min_rate_per_sec!r}"
            )
        if self.max_burst is not None and (not isinstance(self.max_burst, int) or self.max_burst < 1):
            raise ValueError(f"max_burst must be an int >= 1 or None, got {self.max_burst!r}")
        if self.expected_latency_ms is not None and not (_finite(self.expected_latency_ms) and self.expected_latency_ms > 0):
            raise ValueError(f"expected_latency_ms must be a number > 0 or None, got {self.expected_latency_ms!r}")

    def contains(self, setting: Setting) -> bool:
        return (
            self.min_concurrency <= setting.max_concurrency <= self.max_concurrency
            and self.min_rate_per_sec <= setting.rate_per_sec <= self.max_rate_per_sec
        )

    def clamp(self, setting: Setting) -> Setting:
        return Setting(
            max_concurrency=min(max(setting.max_concurrency, self.min_concurrency), self.max_concurrency),
            rate_per_sec=min(max(setting.rate_per_sec, self.min_rate_per_sec), self.max_rate_per_sec),
        )

    def burst_for(self, rate_per_sec: float) -> int | None:
        """The burst that goes with `rate_per_sec`: the ceiling's burst, scaled down with the rate."""
        if self.max_burst is None:
            return None
        return max(1, math.floor(self.max_burst * rate_per_sec / self.max_rate_per_sec + 1e-9))

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Bounds:
        return _from_mapping(cls, raw, "bounds")


@dataclass(frozen=True)
class ControllerPolicy:
    """How the controller decides; every default is the documented one.

    :param mode: "aimd" or "gradient" (see the module docstring).
    :param min_calls: fewer calls in a period is no evidence either way: hold.
    :param throttle_rate_threshold: 429s per call above which the downstream says slow down.
    :param error_rate_threshold: 5xx and timeouts per call above which we slow down.
    :param p99_latency_threshold_ms: aimd only: a p99 above it slows down; None ignores latency.
    :param decrease_factor: the multiplicative decrease (beta), in (0, 1).
    :param concurrency_step: the additive increase, and the largest increase of one period.
    :param rate_step_fraction: the rate's additive increase, as a fraction of its ceiling.
    :param clean_periods_to_increase: clean periods in a row before any increase (hysteresis).
    :param cooldown_sec: after a decrease, nothing moves for this long.
    :param utilization_to_increase: a limit grows only when this fraction of it is used.
    :param adjust_rate: also move `rate_per_sec` (False: only the concurrency).
    :param rtt_tolerance: gradient: how much slower than the baseline still counts as healthy.
    :param baseline_weight: gradient: the EWMA weight of a new (healthy) median in the baseline.
    :param smoothing: gradient: the weight of the newly computed limit against the old one.
    :param min_gradient: gradient: the largest latency-driven cut of one period (0.5 = halve).
    :param probe_throttle_rate: 429s per call up to which a period with 429s alone is a probe just
        over the limit: back off to what got through, not by `decrease_factor`.
    :param fallback_margin: how far below what got through such a back-off goes.
    """

    mode: Mode = "aimd"
    min_calls: int = 10
    throttle_rate_threshold: float = 0.01
    error_rate_threshold: float = 0.05
    p99_latency_threshold_ms: float | None = None
    decrease_factor: float = 0.5
    concurrency_step: int = 1
    rate_step_fraction: float = 0.1
    clean_periods_to_increase: int = 3
    cooldown_sec: float = 120.0
    utilization_to_increase: float = 0.8
    adjust_rate: bool = True
    rtt_tolerance: float = 1.5
    baseline_weight: float = 0.1
    smoothing: float = 0.5
    min_gradient: float = 0.5
    probe_throttle_rate: float = 0.05
    fallback_margin: float = 0.05

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        _require_int("min_calls", self.min_calls, 1)
        _require_int("concurrency_step", self.concurrency_step, 1)
        _require_int("clean_periods_to_increase", self.clean_periods_to_increase, 1)
        for name in ("throttle_rate_threshold", "error_rate_threshold"):
            _require_in(name, getattr(self, name), 0.0, 1.0)
        _require_in("decrease_factor", self.decrease_factor, 0.0, 1.0, open_low=True, open_high=True)
        _require_in("rate_step_fraction", self.rate_step_fraction, 0.0, 1.0, open_low=True)
        _require_in("utilization_to_increase", self.utilization_to_increase, 0.0, 1.0)
        _require_in("baseline_weight", self.baseline_weight, 0.0, 1.0, open_low=True)
        _require_in("smoothing", self.smoothing, 0.0, 1.0, open_low=True)
        _require_in("min_gradient", self.min_gradient, 0.0, 1.0, open_low=True, open_high=True)
        _require_in("probe_throttle_rate", self.probe_throttle_rate, 0.0, 1.0)
        _require_in("fallback_margin", self.fallback_margin, 0.0, 1.0, open_high=True)
        if not (_finite(self.cooldown_sec) and self.cooldown_sec >= 0):
            raise ValueError(f"cooldown_sec must be a number >= 0, got {self.cooldown_sec!r}")
        if not (_finite(self.rtt_tolerance) and self.rtt_tolerance >= 1):
            raise ValueError(f"rtt_tolerance must be a number >= 1, got {self.rtt_tolerance!r}")
        if self.p99_latency_threshold_ms is not None and not (
            _finite(self.p99_latency_threshold_ms) and self.p99_latency_threshold_ms > 0
        ):
            raise ValueError(f"p99_latency_threshold_ms must be a number > 0 or None, got {self.p99_latency_threshold_ms!r}")
        if not isinstance(self.adjust_rate, bool):
            raise ValueError(f"adjust_rate must be true or false, got {self.adjust_rate!r}")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ControllerPolicy:
        return _from_mapping(cls, raw, "controller policy")


@dataclass(frozen=True)
class ControllerState:
    """What the controller remembers about one downstream between periods.

    `written` is the setting it last wrote: a setting in SSM that differs from it was changed by
    someone else (an operator, a redeploy), and the controller adopts it instead of fighting it.
    `floor_p99_latency_ms` is aimd's measure of the downstream's own p99: taken at the floor, or in a
    period our setting held through (the name stays: stored items carry it).
    """

    clean_periods: int = 0
    last_period_end: float | None = None
    last_decrease_at: float | None = None
    last_change_at: float | None = None
    baseline_latency_ms: float | None = None
    floor_latency_ms: float | None = None
    floor_p99_latency_ms: float | None = None
    estimated_limit: float | None = None
    written: Setting | None = None

    def to_item(self) -> dict[str, Any]:
        """A flat dict of plain numbers (None fields left out), for a DynamoDB item."""
        item: dict[str, Any] = {}
        for name in ("clean_periods", "last_period_end", "last_decrease_at", "last_change_at",
                     "baseline_latency_ms", "floor_latency_ms", "floor_p99_latency_ms", "estimated_limit"):
            value = getattr(self, name)
            if value is not None:
                item[name] = value
        if self.written is not None:
            item["written_max_concurrency"] = self.written.max_concurrency
            item["written_rate_per_sec"] = self.written.rate_per_sec
        return item

    @classmethod
    def from_item(cls, item: Mapping[str, Any] | None) -> ControllerState:
        """The inverse of `to_item` (numbers may come back as Decimal); unknown keys are ignored."""
        if not item:
            return cls()

        def number(name: str) -> float | None:
            value = item.get(name)
            return None if value is None else float(value)

        written = None
        if item.get("written_max_concurrency") is not None and item.get("written_rate_per_sec") is not None:
            written = Setting(int(item["written_max_concurrency"]), float(item["written_rate_per_sec"]))
        return cls(
            clean_periods=int(item.get("clean_periods", 0)),
            last_period_end=number("last_period_end"),
            last_decrease_at=number("last_decrease_at"),
            last_change_at=number("last_change_at"),
            baseline_latency_ms=number("baseline_latency_ms"),
            floor_latency_ms=number("floor_latency_ms"),
            floor_p99_latency_ms=number("floor_p99_latency_ms"),
            estimated_limit=number("estimated_limit"),
            written=written,
        )


@dataclass(frozen=True)
class AlarmSignal:
    """A slow-down alarm of this downstream that is in ALARM (delivered by its state-change event)."""

    name: str
    kind: str = "throttled"

    def __post_init__(self) -> None:
        if self.kind not in ALARM_KINDS:
            raise ValueError(f"alarm kind must be one of {list(ALARM_KINDS)}, got {self.kind!r}")


@dataclass(frozen=True)
class Decision:
    """The next setting and state, what was done, and why (logged and emitted with every change)."""

    setting: Setting
    previous: Setting
    state: ControllerState
    action: Action
    reason: str

    @property
    def changed(self) -> bool:
        return self.setting != self.previous


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
) -> Decision:
    """The next setting for one downstream after the period ending at `period_end`.

    `metrics` None means CloudWatch had nothing for the period. `alarms` are this downstream's
    slow-down alarms in ALARM right now. Never returns a setting outside `bounds`; never
    increases anything when the period or an alarm shows overload.
    """
    notes: list[str] = []
    adopted = state.written is not None and state.written != current
    if adopted:
        # Someone else wrote the document since our last write: their value is the new truth.
        notes.append(f"adopted {current.describe()} written by someone else (ours was {state.written.describe()})")
        state = dataclasses.replace(state, written=current, clean_periods=0, estimated_limit=None)
    elif state.written is None:
        state = dataclasses.replace(state, written=current)

    if not bounds.contains(current):
        clamped = bounds.clamp(current)
        return _change(
            "clamp", clamped, current, state, now, notes,
            f"{current.describe()} is outside the bounds (max_concurrency {bounds.min_concurrency}-"
            f"{bounds.max_concurrency}, rate_per_sec {_num(bounds.min_rate_per_sec)}-{_num(bounds.max_rate_per_sec)}):"
            f" clamped to {clamped.describe()}",
        )

    # Our load was the same through the whole period, and the one before it was evaluated too: what
    # changed in it was not of our making.
    held = (not adopted and state.last_period_end is not None and metrics is not None
            and (state.last_change_at is None or state.last_change_at <= period_end - metrics.period_sec))
    new_period = state.last_period_end is None or period_end > state.last_period_end
    if not new_period and not alarms:
        return _hold(current, state, notes, f"the period ending at {_num(period_end)} was already evaluated")
    if new_period:
        state = dataclasses.replace(state, last_period_end=period_end)

    usable = metrics is not None and metrics.has_calls and metrics.calls >= policy.min_calls  # type: ignore[operator]
    overload: list[str] = []
    slows_rate = False
    for alarm in alarms:
        overload.append(f"alarm {alarm.name} in ALARM")
        slows_rate = slows_rate or alarm.kind != "latency"
    if usable:
        assert metrics is not None
        if metrics.throttle_rate > policy.throttle_rate_threshold:
            overload.append(f"429 rate {_pct(metrics.throttle_rate)} > {_pct(policy.throttle_rate_threshold)}")
            slows_rate = True
        if metrics.error_rate > policy.error_rate_threshold:
            overload.append(f"error rate {_pct(metrics.error_rate)} > {_pct(policy.error_rate_threshold)}")
            slows_rate = True
        if policy.mode == "aimd" and policy.p99_latency_threshold_ms is not None and metrics.latency_p99_ms is not None:
            state, latency_note, own = _p99_check(metrics.latency_p99_ms, current, bounds, state, policy,
                                                  cooling=_cooling(state, policy, now), held=held and not overload)
            if latency_note is not None:
                overload.append(latency_note)
            if own is not None:
                notes.append(own)

    gradient_limit: float | None = None
    latency_only = False
    if policy.mode == "gradient" and usable and new_period:
        assert metrics is not None
        state, gradient_limit, gradient_note = _gradient(metrics, current, bounds, state, policy,
                                                         distorted=bool(overload))
        if gradient_note is not None:
            latency_only = not overload
            overload.append(gradient_note)

    # 429s alone, and only a few: we are just over the limit (our own probe, or a small drop), and
    # what got through in the period is the best estimate of it; halving would undershoot.
    probe_overshoot = (
        usable and not alarms and len(overload) == 1
        and policy.throttle_rate_threshold < metrics.throttle_rate <= policy.probe_throttle_rate  # type: ignore[union-attr]
    )
    if overload:
        return _decrease(current, bounds, state, policy, now, notes, overload, slows_rate,
                         gradient_limit if latency_only else None, metrics if probe_overshoot else None)

    if metrics is None or not metrics.has_calls:
        return _hold(current, state, notes, "no data for the period")
    if not usable:
        return _hold(current, state, notes, f"too few calls to judge ({_num(metrics.calls)} < {policy.min_calls})")
    if metrics.down_rate > policy.error_rate_threshold:
        # An outage says nothing of our load: neither clean nor overloaded, so the streak is kept.
        return _hold(current, state, notes, f"the downstream answered {_num(metrics.down)} calls with 5xx + Retry-After"
                                            " (down, not overloaded; the breaker's business)")
    if not new_period:
        return _hold(current, state, notes, "the period was already counted")

    clean = state.clean_periods + 1
    state = dataclasses.replace(state, clean_periods=clean)
    if _cooling(state, policy, now):
        return _hold(current, state, notes, f"clean period {clean}/{policy.clean_periods_to_increase}; cooling down"
                                            f" {_num(now - state.last_decrease_at)} s after a decrease"  # type: ignore[operator]
                                            f" (< {_num(policy.cooldown_sec)} s)")
    if clean < policy.clean_periods_to_increase:
        return _hold(current, state, notes, f"clean period {clean}/{policy.clean_periods_to_increase}: holding (hysteresis)")
    return _increase(metrics, current, bounds, state, policy, now, notes, clean, gradient_limit)


# -- the three paths -----------------------------------------------------------------------------


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
) -> Decision:
    """`latency_limit` is the gradient's limit when latency alone says slow down (else None: x beta);
    `overshoot` the period of a probe just over the limit (back to what got through, not x beta)."""
    state = dataclasses.replace(state, clean_periods=0)
    why = "; ".join(overload)
    if _cooling(state, policy, now):
        return _hold(current, state, notes, f"{why}: cooling down {_num(now - state.last_decrease_at)} s after a"  # type: ignore[operator]
                                            f" decrease (< {_num(policy.cooldown_sec)} s)")
    if latency_limit is None:
        halved = current.max_concurrency * policy.decrease_factor
        concurrency = math.floor(halved)
        if concurrency == 1 and halved >= 1.5 and current.max_concurrency > 2:
            # Flooring 1.5 slots to 1 would cut two thirds, and one call in flight carries less than
            # the halved rate; from 4 slots up, flooring is the halving the stated amplitude assumes.
            # (From 2 slots a gentle factor must still reach 1, or the decrease would be no decrease.)
            concurrency = 2
        how = f"multiplicative decrease x{_num(policy.decrease_factor)}"
    else:
        # At small limits the queue allowance outweighs the gradient: still at least one slot less.
        concurrency = min(current.max_concurrency - 1, math.floor(latency_limit))
        how = "gradient decrease"
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
                how = f"back to the {_num(round(accepted, 3))} req/s that got through, less {_pct(policy.fallback_margin)}"
        rate = min(current.rate_per_sec, max(bounds.min_rate_per_sec, _round_rate(rate)))
    proposed = Setting(concurrency, rate)
    if proposed == current:
        return _hold(current, state, notes, f"{why}: already at the floor ({current.describe()})")
    state = dataclasses.replace(state, last_decrease_at=now, estimated_limit=float(concurrency))
    return _change("decrease", proposed, current, state, now, notes, f"{why}: {how} ({_delta(current, proposed)})")


def _increase(
    metrics: PeriodMetrics,
    current: Setting,
    bounds: Bounds,
    state: ControllerState,
    policy: ControllerPolicy,
    now: float,
    notes: list[str],
    clean: int,
    gradient_limit: float | None,
) -> Decision:
    target = policy.utilization_to_increase
    in_flight = metrics.mean_in_flight
    concurrency_used = in_flight is not None and in_flight >= target * current.max_concurrency
    rate_used = metrics.call_rate_per_sec >= target * current.rate_per_sec or metrics.limiter_refused > 0
    usage = (
        f"{_num(in_flight) if in_flight is not None else 'unknown'} of {current.max_concurrency} in flight,"
        f" {_num(metrics.call_rate_per_sec)} of {_num(current.rate_per_sec)} req/s"
    )

    concurrency = current.max_concurrency
    if concurrency_used:
        if gradient_limit is not None:
            concurrency = max(current.max_concurrency, math.floor(gradient_limit))
            # The float limit moves even when the rounded one does not, so small steps add up; it
            # never runs ahead of what one period may add, nor past the ceiling.
            estimate = min(gradient_limit, float(current.max_concurrency + policy.concurrency_step),
                           float(bounds.max_concurrency))
            state = dataclasses.replace(state, estimated_limit=max(estimate, float(current.max_concurrency)))
        else:
            concurrency = current.max_concurrency + policy.concurrency_step
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
    how = "additive increase" if gradient_limit is None else "gradient increase"
    state = dataclasses.replace(state, clean_periods=0)
    if gradient_limit is None or not concurrency_used:
        state = dataclasses.replace(state, estimated_limit=float(concurrency))
    return _change("increase", proposed, current, state, now, notes,
                   f"clean for {clean} periods and the limit is used ({usage}): {how} ({_delta(current, proposed)})")


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


def _p99_check(
    p99_ms: float, current: Setting, bounds: Bounds, state: ControllerState, policy: ControllerPolicy,
    *, cooling: bool, held: bool,
) -> tuple[ControllerState, str | None, str | None]:
    """aimd's latency test: a note when the p99 says slow down, the state (the downstream's own p99),
    and a note when a slow p99 is taken as the downstream's own.

    `held`: the setting was in force through the whole period, and no 429s, errors or alarm came with it."""
    threshold = policy.p99_latency_threshold_ms
    assert threshold is not None
    if p99_ms <= threshold:
        # Fast again: a p99 learnt at the floor no longer raises the bar.
        return (state if state.floor_p99_latency_ms is None
                else dataclasses.replace(state, floor_p99_latency_ms=None)), None, None
    note = f"p99 latency {_num(p99_ms)} ms > {_num(threshold)} ms"
    if current.max_concurrency <= bounds.min_concurrency:
        if cooling:
            # Just cut: this period still shows the load before the cut, not the downstream's own
            # latency. Nothing is learnt from it (and the cooldown holds the setting).
            return state, note, None
        # Too slow even with the fewest calls we send: the downstream's own latency, which no cut can
        # lower. Pinned at the floor it would stay there for good; it is measured here, every period
        # at the floor (as gradient mode measures its baseline), and only a p99 well above the last
        # such measure, once there are more calls in flight, means our load again.
        return dataclasses.replace(state, floor_p99_latency_ms=p99_ms), None, None
    if state.floor_p99_latency_ms is not None:
        threshold = max(threshold, policy.rtt_tolerance * state.floor_p99_latency_ms)
        if p99_ms <= threshold:
            return state, None, None
        note = f"p99 latency {_num(p99_ms)} ms > {_num(threshold)} ms"
    if held:
        # Our load did not change, yet the p99 crossed the bar: the downstream got slower on its own,
        # and a cut would give up calls it still answers (429s or errors would say it cannot). It is
        # measured as at the floor; only a p99 above the raised bar just after a change of ours cuts.
        return (dataclasses.replace(state, floor_p99_latency_ms=p99_ms), None,
                f"{note} with our setting unchanged: the downstream's own latency, no cut")
    return state, note, None


def _gradient(
    metrics: PeriodMetrics,
    current: Setting,
    bounds: Bounds,
    state: ControllerState,
    policy: ControllerPolicy,
    *,
    distorted: bool,
) -> tuple[ControllerState, float | None, str | None]:
    """Gradient2's step: the new float limit, and a note when the latency says slow down."""
    short = metrics.typical_latency_ms
    if short is None or short <= 0:
        return state, None, None
    baseline = state.baseline_latency_ms
    if baseline is None:
        baseline = short
    elif distorted:
        pass  # 429s answer fast and errors distort latency: such periods do not teach the baseline
    elif short <= policy.rtt_tolerance * baseline:
        baseline += (short - baseline) * policy.baseline_weight
    elif current.max_concurrency <= bounds.min_concurrency:
        # Slow even at the lowest load we offer: the downstream itself got slower (Envoy measures
        # its minRTT at minimum concurrency for the same reason). Re-baseline instead of sticking here.
        baseline = short
        state = dataclasses.replace(state, floor_latency_ms=short)
    # else: overload by latency, which must not teach the baseline (Gradient2's upward drift).
    if bounds.expected_latency_ms is not None:
        # Healthy periods one after another can still walk the baseline up into the queue; above the
        # latency the plan assumes it may only go by a measurement at the floor.
        baseline = min(baseline, max(bounds.expected_latency_ms, state.floor_latency_ms or 0.0))
    estimate = state.estimated_limit
    if estimate is None or math.floor(estimate) != current.max_concurrency:
        estimate = float(current.max_concurrency)
    gradient = max(policy.min_gradient, min(1.0, policy.rtt_tolerance * baseline / short))
    target = estimate * gradient + math.sqrt(estimate)
    limit = estimate * (1 - policy.smoothing) + target * policy.smoothing
    state = dataclasses.replace(state, baseline_latency_ms=baseline)
    if gradient < 1.0:
        return state, limit, (
            f"latency gradient {gradient:.2f} < 1 (median {_num(short)} ms vs baseline {_num(baseline)} ms"
            f" x tolerance {_num(policy.rtt_tolerance)})"
        )
    return state, limit, None


# -- helpers -------------------------------------------------------------------------------------


def _change(action: Action, proposed: Setting, current: Setting, state: ControllerState, now: float,
            notes: list[str], reason: str) -> Decision:
    state = dataclasses.replace(state, last_change_at=now, written=proposed)
    return Decision(proposed, current, state, action, "; ".join([*notes, reason]))


def _hold(current: Setting, state: ControllerState, notes: list[str], reason: str) -> Decision:
    return Decision(current, current, state, "hold", "; ".join([*notes, f"hold: {reason}"]))


def _cooling(state: ControllerState, policy: ControllerPolicy, now: float) -> bool:
    return state.last_decrease_at is not None and now - state.last_decrease_at < policy.cooldown_sec


def _delta(before: Setting, after: Setting) -> str:
    parts = []
    if before.max_concurrency != after.max_concurrency:
        parts.append(f"max_concurrency {before.max_concurrency} -> {after.max_concurrency}")
    if before.rate_per_sec != after.rate_per_sec:
        parts.append(f"rate_per_sec {_num(before.rate_per_sec)} -> {_num(after.rate_per_sec)}")
    return ", ".join(parts)


def _round_rate(rate: float) -> float:
    return round(rate, 3)


def _num(value: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require_non_negative(name: str, value: Any) -> None:
    if not (_finite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _require_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _require_in(name: str, value: Any, low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> None:
    ok = _finite(value) and (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not ok:
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


def _from_mapping(cls: type, raw: Mapping[str, Any], what: str) -> Any:
    if not isinstance(raw, Mapping):
        raise ValueError(f"the {what} must be an object, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - known
    if unknown:
        raise ValueError(f"unknown {what} fields {sorted(unknown)}; known: {sorted(known)}")
    try:
        return cls(**raw)
    except TypeError as error:
        raise ValueError(f"the {what} is incomplete: {error}") from None
