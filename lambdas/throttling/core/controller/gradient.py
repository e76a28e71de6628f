"""Gradient, in the spirit of Netflix's Gradient2 and Envoy's adaptive concurrency (see README.md)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from throttling.core.controller._checks import num, require_in, require_tolerance
from throttling.core.controller.algorithm import LatencyJudgement

if TYPE_CHECKING:
    from throttling.core.controller.period import PeriodMetrics
    from throttling.core.controller.setting import Bounds, Setting
    from throttling.core.controller.state import ControllerState

__all__ = ["Gradient", "GradientState"]


@dataclass(frozen=True)
class GradientState:
    """The gradient's memory.

    :param baseline_latency_ms: the long-term latency baseline (an EWMA of healthy period medians).
    :param floor_latency_ms: the median last measured at the floor concurrency, which may lift the
        baseline above the latency the plan assumes.
    :param estimated_limit: the float limit, published rounded down, so small steps add up.
    """

    baseline_latency_ms: float | None = None
    floor_latency_ms: float | None = None
    estimated_limit: float | None = None


@dataclass(frozen=True)
class Gradient:
    """`gradient = clamp(rtt_tolerance x baseline / median, min_gradient, 1)`, and the limit moves to
    `limit x gradient + sqrt(limit)`, smoothed.

    :param rtt_tolerance: how much slower than the baseline still counts as healthy.
    :param baseline_weight: the EWMA weight of a new (healthy) median in the baseline.
    :param smoothing: the weight of the newly computed limit against the old one.
    :param min_gradient: the largest latency-driven cut of one period (0.5 = halve).
    """

    name: ClassVar[str] = "gradient"

    rtt_tolerance: float = 1.5
    baseline_weight: float = 0.1
    smoothing: float = 0.5
    min_gradient: float = 0.5

    def __post_init__(self) -> None:
        require_in("baseline_weight", self.baseline_weight, 0.0, 1.0, open_low=True)
        require_in("smoothing", self.smoothing, 0.0, 1.0, open_low=True)
        require_in("min_gradient", self.min_gradient, 0.0, 1.0, open_low=True, open_high=True)
        require_tolerance(self.rtt_tolerance)

    def with_p99_latency_threshold(self, threshold_ms: float) -> Gradient:
        return self  # the gradient reads the median against its baseline, not a p99 bar

    def judge(
        self, metrics: PeriodMetrics, current: Setting, bounds: Bounds, state: ControllerState, *,
        new_period: bool, overloaded: bool, held: bool, cooling: bool,
    ) -> LatencyJudgement:
        if not new_period:
            return LatencyJudgement(state)
        # 429s answer fast and errors distort latency: such periods do not teach the baseline.
        memory, limit, slow_down = self._step(metrics, current, bounds, state.gradient, distorted=overloaded)
        return LatencyJudgement(dataclasses.replace(state, gradient=memory), slow_down=slow_down, limit=limit)

    def forget(self, state: ControllerState) -> ControllerState:
        return dataclasses.replace(state, gradient=dataclasses.replace(state.gradient, estimated_limit=None))

    def remember(self, state: ControllerState, concurrency: int) -> ControllerState:
        return dataclasses.replace(state, gradient=dataclasses.replace(state.gradient,
                                                                       estimated_limit=float(concurrency)))

    def grow(self, current: Setting, bounds: Bounds, limit: float | None, step: int,
             state: ControllerState) -> tuple[int, ControllerState]:
        if limit is None:
            return current.max_concurrency + step, state
        # The float limit moves even when the rounded one does not, so small steps add up; it never
        # runs ahead of what one period may add, nor past the ceiling.
        estimate = min(limit, float(current.max_concurrency + step), float(bounds.max_concurrency))
        memory = dataclasses.replace(state.gradient, estimated_limit=max(estimate, float(current.max_concurrency)))
        return max(current.max_concurrency, math.floor(limit)), dataclasses.replace(state, gradient=memory)

    def _step(
        self, metrics: PeriodMetrics, current: Setting, bounds: Bounds, memory: GradientState, *, distorted: bool,
    ) -> tuple[GradientState, float | None, str | None]:
        """Gradient2's step: the memory, the new float limit, and a note when the latency says slow down."""
        short = metrics.typical_latency_ms
        if short is None or short <= 0:
            return memory, None, None
        baseline = memory.baseline_latency_ms
        if baseline is None:
            baseline = short
        elif distorted:
            pass
        elif short <= self.rtt_tolerance * baseline:
            baseline += (short - baseline) * self.baseline_weight
        elif current.max_concurrency <= bounds.min_concurrency:
            # Slow even at the lowest load we offer: the downstream itself got slower (Envoy measures
            # its minRTT at minimum concurrency for the same reason). Re-baseline instead of sticking here.
            baseline = short
            memory = dataclasses.replace(memory, floor_latency_ms=short)
        # else: overload by latency, which must not teach the baseline (Gradient2's upward drift).
        if bounds.expected_latency_ms is not None:
            # Healthy periods one after another can still walk the baseline up into the queue; above the
            # latency the plan assumes it may only go by a measurement at the floor.
            baseline = min(baseline, max(bounds.expected_latency_ms, memory.floor_latency_ms or 0.0))
        estimate = memory.estimated_limit
        if estimate is None or math.floor(estimate) != current.max_concurrency:
            estimate = float(current.max_concurrency)
        gradient = max(self.min_gradient, min(1.0, self.rtt_tolerance * baseline / short))
        target = estimate * gradient + math.sqrt(estimate)
        limit = estimate * (1 - self.smoothing) + target * self.smoothing
        memory = dataclasses.replace(memory, baseline_latency_ms=baseline)
        if gradient < 1.0:
            return memory, limit, (
                f"latency gradient {gradient:.2f} < 1 (median {num(short)} ms vs baseline {num(baseline)} ms"
                f" x tolerance {num(self.rtt_tolerance)})"
            )
        return memory, limit, None
