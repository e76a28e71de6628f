"""AIMD: additive increase, multiplicative decrease; its latency guard is a p99 bar (see README.md)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from throttling.core.controller._checks import num, require_tolerance
from throttling.core.controller.algorithm import LatencyJudgement
from throttling.core.validation import is_finite_number

if TYPE_CHECKING:
    from throttling.core.controller.period import PeriodMetrics
    from throttling.core.controller.setting import Bounds, Setting
    from throttling.core.controller.state import ControllerState

__all__ = ["Aimd", "AimdState"]


@dataclass(frozen=True)
class AimdState:
    """AIMD's memory: `floor_p99_latency_ms`, the downstream's own p99, measured at the floor or in a
    period our setting held through (the name stays: stored items carry it)."""

    floor_p99_latency_ms: float | None = None


@dataclass(frozen=True)
class Aimd:
    """AIMD's latency parameters (the increase and decrease steps are the policy's, shared by every algorithm).

    :param p99_latency_threshold_ms: a p99 above it slows down; None ignores latency.
    :param rtt_tolerance: how far above the downstream's own measured p99 still counts as its own.
    """

    name: ClassVar[str] = "aimd"

    p99_latency_threshold_ms: float | None = None
    rtt_tolerance: float = 1.5

    def __post_init__(self) -> None:
        require_tolerance(self.rtt_tolerance)
        if self.p99_latency_threshold_ms is not None and not (
            is_finite_number(self.p99_latency_threshold_ms) and self.p99_latency_threshold_ms > 0
        ):
            raise ValueError(f"p99_latency_threshold_ms must be a number > 0 or None, got {self.p99_latency_threshold_ms!r}")

    def with_p99_latency_threshold(self, threshold_ms: float) -> Aimd:
        return dataclasses.replace(self, p99_latency_threshold_ms=threshold_ms)

    def judge(
        self, metrics: PeriodMetrics, current: Setting, bounds: Bounds, state: ControllerState, *,
        new_period: bool, overloaded: bool, held: bool, cooling: bool,
    ) -> LatencyJudgement:
        if self.p99_latency_threshold_ms is None or metrics.latency_p99_ms is None:
            return LatencyJudgement(state)
        memory, slow_down, note = self._p99_check(metrics.latency_p99_ms, self.p99_latency_threshold_ms, current,
                                                  bounds, state.aimd, cooling=cooling, held=held and not overloaded)
        if memory is not state.aimd:
            state = dataclasses.replace(state, aimd=memory)
        if slow_down is None:
            return LatencyJudgement(state, note=note)
        # A p99 over the bar just after a change of ours says the last step was one too many, not
        # that the downstream is overloaded (a 429 or an error says that, and halves): one slot back.
        # A halving here gave up the calls the downstream still answered, which it did at every
        # schedule phase whose period straddles the change, and at no other.
        return LatencyJudgement(state, slow_down=slow_down, note=note, limit=current.max_concurrency - 1)

    def forget(self, state: ControllerState) -> ControllerState:
        return state

    def remember(self, state: ControllerState, concurrency: int) -> ControllerState:
        return state

    def grow(self, current: Setting, bounds: Bounds, limit: float | None, step: int,
             state: ControllerState) -> tuple[int, ControllerState]:
        return current.max_concurrency + step, state

    def _p99_check(
        self, p99_ms: float, threshold: float, current: Setting, bounds: Bounds, memory: AimdState, *,
        cooling: bool, held: bool,
    ) -> tuple[AimdState, str | None, str | None]:
        """The memory, a note when the p99 says slow down, and a note when a slow p99 is taken as the
        downstream's own.

        `held`: the setting was in force through the whole period, and no 429s, errors or alarm came with it."""
        if p99_ms <= threshold:
            # Fast again: a p99 learnt at the floor no longer raises the bar.
            return (memory if memory.floor_p99_latency_ms is None else AimdState()), None, None
        note = f"p99 latency {num(p99_ms)} ms > {num(threshold)} ms"
        if current.max_concurrency <= bounds.min_concurrency:
            if cooling:
                # Just cut: this period still shows the load before the cut, not the downstream's own
                # latency. Nothing is learnt from it (and the cooldown holds the setting).
                return memory, note, None
            # Too slow even with the fewest calls we send: the downstream's own latency, which no cut can
            # lower. Pinned at the floor it would stay there for good; it is measured here, every period
            # at the floor (as gradient mode measures its baseline), and only a p99 well above the last
            # such measure, once there are more calls in flight, means our load again.
            return AimdState(floor_p99_latency_ms=p99_ms), None, None
        if memory.floor_p99_latency_ms is not None:
            threshold = max(threshold, self.rtt_tolerance * memory.floor_p99_latency_ms)
            if p99_ms <= threshold:
                return memory, None, None
            note = f"p99 latency {num(p99_ms)} ms > {num(threshold)} ms"
        if held:
            # Our load did not change, yet the p99 crossed the bar: the downstream got slower on its own,
            # and a cut would give up calls it still answers (429s or errors would say it cannot). It is
            # measured as at the floor; only a p99 above the raised bar just after a change of ours cuts.
            return (AimdState(floor_p99_latency_ms=p99_ms), None,
                    f"{note} with our setting unchanged: the downstream's own latency, no cut")
        return memory, note, None
