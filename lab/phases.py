"""The controller's schedule against the moment the world changes: every phase, every change time.

EventBridge's `rate(1 minute)` fixes no second of the minute, and a downstream changes when it
likes, so a result that holds at one phase proves little. `sweep` runs one strategy through the
capacity-halved scenario with the change moved to each given second of a period and the controller
run at each given second of the minute, and reports the periods to reconverge after the halving for
every combination (`lab.run.summarize`'s `reconverge_periods` of that change). `bench.phases`
prints the table and the worst.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from lab.run import run, summarize
from lab.scenarios import Scenario, scenario
from lab.strategies import Strategy

__all__ = ["PhaseResult", "halved_at", "sweep", "worst"]

# Long enough to settle before the change and to climb back after it; shorter than the hour to keep
# a sweep of dozens of runs to seconds.
SETTLE_BEFORE_SEC = 600.0
WATCH_AFTER_SEC = 900.0


@dataclass(frozen=True)
class PhaseResult:
    """One combination: the schedule's second of the minute, the change's second of its period, the result."""

    phase_sec: float
    change_second: float
    change_at_sec: float
    reconverge_periods: float | None
    excess_throttled: int


def halved_at(change_at_sec: float, *, watch_after_sec: float = WATCH_AFTER_SEC) -> Scenario:
    """The capacity-halved scenario with the halving at `change_at_sec`, ending `watch_after_sec` later."""
    base = scenario("capacity_halved")
    downstream = dataclasses.replace(base.downstream, capacity_changes=((change_at_sec, 0.5),))
    return dataclasses.replace(base, downstream=downstream, duration_sec=change_at_sec + watch_after_sec,
                               changes=((change_at_sec, "capacity halved"),))


def sweep(strategy: Strategy, phases_sec: Iterable[float], change_seconds: Iterable[float], *, seed: int = 1,
          settle_before_sec: float = SETTLE_BEFORE_SEC) -> list[PhaseResult]:
    """Every phase with every change second (the halving at `settle_before_sec` plus that second)."""
    results = []
    for change_second in change_seconds:
        change_at = settle_before_sec + change_second
        world = halved_at(change_at)
        for phase in phases_sec:
            summary = summarize(run(strategy, world, seed=seed, schedule_phase_sec=phase))
            (halving,) = summary["by_change"]
            results.append(PhaseResult(phase, change_second, change_at, halving["periods"], halving["throttled"]))
    return results


def worst(results: Iterable[PhaseResult]) -> PhaseResult:
    """The combination that took longest to reconverge (one that never did is the worst)."""
    return max(results, key=lambda r: float("inf") if r.reconverge_periods is None else r.reconverge_periods)

