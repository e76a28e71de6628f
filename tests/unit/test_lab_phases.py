"""The controller's result no longer depends on the second of the minute its schedule fires at."""

from __future__ import annotations

from lab.phases import halved_at, sweep, worst
from lab.strategies import strategy

# The 24 combinations: six schedule phases, four seconds of a period the capacity halves at.
PHASES_SEC = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0)
CHANGE_SECONDS = (0.0, 15.0, 30.0, 45.0)
TARGET_PERIODS = 3.0


def test_after_the_capacity_halves_the_controller_reconverges_within_3_periods_at_every_phase_and_change_time():
    # GIVEN the default controller, and the capacity halving at each of four seconds of a period
    # WHEN its schedule fires at each of six seconds of the minute
    results = sweep(strategy("adaptive_aimd"), PHASES_SEC, CHANGE_SECONDS)
    # THEN every one of the 24 combinations reconverges, within 3 periods, the worst included
    assert len(results) == len(PHASES_SEC) * len(CHANGE_SECONDS)
    assert all(r.reconverge_periods is not None for r in results), results
    assert worst(results).reconverge_periods <= TARGET_PERIODS, worst(results)


def test_the_sweeps_scenario_halves_the_capacity_once_at_the_second_given():
    # GIVEN a halving at 645 s WHEN the sweep builds its world THEN it is the capacity-halved downstream, halved there
    world = halved_at(645.0)
    assert world.downstream.capacity_changes == ((645.0, 0.5),)
    assert world.changes == ((645.0, "capacity halved"),)
    assert world.duration_sec > 645.0
