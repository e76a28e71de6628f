"""The interface every controller algorithm implements, in the manner of Netflix concurrency-limits' `Limit`.

`decide` owns what every algorithm shares (the evidence checks, hysteresis, cooldown, bounds, the
overload path on 429s, errors and alarms, and the rate); an algorithm owns only how latency moves
the concurrency, and the memory that needs. `decide` holds one and does not know which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from throttling.core.controller.period import PeriodMetrics
    from throttling.core.controller.setting import Bounds, Setting
    from throttling.core.controller.state import ControllerState

__all__ = ["LatencyJudgement", "LimitAlgorithm"]


@dataclass(frozen=True)
class LatencyJudgement:
    """What an algorithm made of one period's latency.

    :param state: the controller state with the algorithm's memory updated.
    :param slow_down: why the latency says slow down (None: it does not).
    :param note: what was learnt without slowing down, logged with the decision.
    :param limit: the algorithm's own (float) concurrency limit for the period, for algorithms that
        compute one: a decrease on latency alone goes to it, an increase moves towards it. None:
        the shared multiplicative decrease and additive increase.
    """

    state: ControllerState
    slow_down: str | None = None
    note: str | None = None
    limit: float | None = None


@runtime_checkable
class LimitAlgorithm(Protocol):
    """How latency moves one downstream's concurrency; every method is pure.

    `name` is the algorithm's `mode` in a policy document.
    """

    name: ClassVar[str]

    def with_p99_latency_threshold(self, threshold_ms: float) -> LimitAlgorithm:
        """This algorithm for a downstream whose plan sets a p99 bar (unchanged if it reads no p99)."""
        ...

    def judge(
        self, metrics: PeriodMetrics, current: Setting, bounds: Bounds, state: ControllerState, *,
        new_period: bool, overloaded: bool, held: bool, cooling: bool,
    ) -> LatencyJudgement:
        """The period's latency judged, on a period with enough calls to judge.

        `overloaded`: 429s, errors or an alarm already say slow down. `held`: the setting was in
        force through the whole period. `cooling`: a decrease is recent.
        """
        ...

    def forget(self, state: ControllerState) -> ControllerState:
        """Someone else wrote the setting: what was learnt about ours no longer holds."""
        ...

    def remember(self, state: ControllerState, concurrency: int) -> ControllerState:
        """The concurrency just written (not the algorithm's own limit)."""
        ...

    def grow(self, current: Setting, bounds: Bounds, limit: float | None, step: int,
             state: ControllerState) -> tuple[int, ControllerState]:
        """The concurrency after a clean streak with the limit used, before the step and ceiling caps."""
        ...
