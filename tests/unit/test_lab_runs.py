"""The lab's runs: every request accounted for, one seed one history, and the figures the benchmark reports."""

from __future__ import annotations

import dataclasses

import pytest

from throttling.core.adaptive_rate import PUBLISHED_TTL_SEC

from lab.engine import Simulation
from lab.ledger import FAILED, QUEUED, RUNNING, STATES, SUCCEEDED, Ledger
from lab.run import run, seconds_to_reach, summarize, worst_window_throttled_share
from lab.scenarios import LIMIT_RPS, SCENARIOS, scenario
from lab.strategies import STRATEGIES, plan_for, strategy

# Ten minutes of each scenario's traffic is plenty to exercise every path and keeps these fast.
SHORT_SEC = 600.0


def short(name: str, **changes) -> object:
    return dataclasses.replace(scenario(name), duration_sec=SHORT_SEC, **changes)


@pytest.mark.parametrize("strategy_name", [s.name for s in STRATEGIES])
def test_every_request_ends_succeeded_failed_or_still_waiting_and_they_add_up(strategy_name):
    # GIVEN ten minutes of a capacity that halves at 5:00, under three times the limit
    halved = short("capacity_halved", downstream=dataclasses.replace(
        scenario("capacity_halved").downstream, capacity_changes=((300.0, 0.5),)), changes=((300.0, "halved"),))
    # WHEN a strategy runs through it
    result = run(strategy(strategy_name), halved, seed=3)
    ledger = result.ledger
    # THEN each request is in exactly one state, and the states add up to the arrivals
    by_state = {state: sum(1 for r in ledger.requests if r.state == state) for state in STATES}
    assert by_state == {state: ledger.count(state) for state in STATES}
    assert sum(by_state.values()) == len(ledger.requests) == sum(ledger.arrivals) > 0
    # AND a succeeded request has a finish time and at least one call; a failed one says why; the
    # rest are still queued (never taken) or running (calling, or waiting out a retry or a Retry-After)
    for request in ledger.requests:
        if request.state == SUCCEEDED:
            assert request.finished_at is not None and request.calls >= 1
        elif request.state == FAILED:
            assert request.finished_at is not None and request.why_failed
        else:
            assert request.state in (QUEUED, RUNNING) and request.finished_at is None
    # AND the summary says the same
    summary = summarize(result)
    assert summary["succeeded"] + summary["failed"] + summary["queued_at_end"] + summary["running_at_end"] == (
        summary["arrived"])
    assert summary["backlog_at_end"] == summary["queued_at_end"] + summary["running_at_end"]
    assert sum(ledger.successes) == summary["succeeded"] and sum(ledger.failures) == summary["failed"]


def test_the_same_seed_gives_the_same_summary_and_another_seed_another():
    # GIVEN one strategy and one scenario
    ours, steady = strategy("adaptive_aimd"), short("steady_overload")
    # WHEN it runs twice with seed 7, and once with seed 8
    first, again, other = (summarize(run(ours, steady, seed=seed)) for seed in (7, 7, 8))
    # THEN the two runs with the same seed agree in every figure, and the other seed differs
    assert first == again
    assert first != other


def test_simulation_runs_actions_in_time_order_and_same_instant_in_scheduling_order():
    sim, seen = Simulation(), []
    sim.at(2.0, seen.append, "late")
    sim.at(1.0, seen.append, "first")
    sim.at(1.0, seen.append, "second")
    sim.run(until=1.5)
    assert (seen, sim.now) == (["first", "second"], 1.5)
    with pytest.raises(ValueError, match="finite time >= now"):
        sim.at(1.0, seen.append, "in the past")


def test_random_streams_are_named_so_one_purpose_does_not_reshuffle_another():
    one, two = Simulation(seed=5), Simulation(seed=5)
    one.rng("latency").random()  # an extra draw for one purpose...
    assert one.rng("arrivals").random() == two.rng("arrivals").random()  # ...leaves the others as they were


def test_a_request_that_already_finished_cannot_change_state():
    ledger = Ledger(10.0)
    request = ledger.arrive(0.0)
    ledger.move(request, RUNNING)
    ledger.succeed(request, 1.0)
    with pytest.raises(ValueError, match="already succeeded"):
        ledger.fail(request, 2.0, "late")


def test_goodput_is_measured_against_the_limit_and_429s_count_against_it():
    # GIVEN the seed's guess of 5 calls in flight against a 10 req/s limit, unprotected
    summary = summarize(run(strategy("static_guess"), short("steady_overload")))
    # THEN it saturates the limit but pays for it in 429s, which net goodput subtracts
    assert summary["goodput_fraction_of_limit"] >= 0.95
    assert summary["throttled_share"] > 0.05
    assert summary["net_goodput_fraction_of_limit"] < summary["goodput_fraction_of_limit"] - 0.05


def test_reconvergence_is_counted_in_periods_after_each_change():
    # GIVEN our controller through a capacity halving at 5:15
    halved = short("capacity_halved", downstream=dataclasses.replace(
        scenario("capacity_halved").downstream, capacity_changes=((315.0, 0.5),)), changes=((315.0, "halved"),))
    summary = summarize(run(strategy("adaptive_aimd"), halved))
    (change,) = summary["by_change"]
    # THEN it settles again, measured from the change in 60 s periods, and the 429s it took are counted
    assert change["what"] == "halved" and change["periods"] is not None
    assert summary["reconverge_periods"] == change["periods"] and summary["reconverged"] is True
    assert summary["excess_throttled_share"] == pytest.approx(change["throttled"] / summary["calls_answered"], abs=1e-5)
    # AND a scenario without changes reports none
    assert summarize(run(strategy("adaptive_aimd"), short("steady_overload")))["reconverge_periods"] is None


def test_every_scenario_and_strategy_has_a_unique_name():
    assert len({s.name for s in SCENARIOS}) == len(SCENARIOS) == 7
    assert len({s.name for s in STRATEGIES}) == len(STRATEGIES)
    with pytest.raises(ValueError, match="no scenario 'nope'"):
        scenario("nope")


def test_the_inner_loop_slows_the_fleet_within_seconds_of_a_capacity_drop_and_climbs_back_when_it_returns():
    # GIVEN ten minutes at three times the limit, capacity halved at 3:00 and restored at 6:00
    halved = short("capacity_halved", downstream=dataclasses.replace(
        scenario("capacity_halved").downstream, capacity_changes=((180.0, 0.5), (360.0, 1.0))),
        changes=((180.0, "halved"), (360.0, "restored")))
    # WHEN the inner loop runs through it
    result = run(strategy("inner_loop"), halved, seed=3)
    ledger, ceiling = result.ledger, result.limiter_policy.rate_per_sec
    # THEN its rate was the plan's until the drop, and below three quarters of it within 5 s after
    assert set(ledger.rate_limit[:180]) == {ceiling}
    assert max(ledger.rate_limit[185:360]) < 0.75 * ceiling
    # AND from 10 s after the drop, fewer than 1 % of the answers were 429s (counted, not timed)
    settled = slice(190, 360)
    assert sum(ledger.throttled[settled]) < 0.01 * sum(ledger.answered[settled])
    # AND within a minute of the capacity's return it is back at the plan's rate
    assert min(ledger.rate_limit[420:]) == ceiling
    summary = summarize(result)
    assert summary["succeeded"] + summary["failed"] + summary["backlog_at_end"] == summary["arrived"]


@pytest.mark.parametrize("phase", [0.0, 30.0])
def test_the_outer_loop_leaves_the_inner_loops_429s_alone_so_the_concurrency_is_there_when_capacity_returns(phase):
    # GIVEN ten minutes at three times the limit, capacity halved at 3:00 and restored at 6:00, by a silent downstream
    halved = short("capacity_halved", downstream=dataclasses.replace(
        scenario("capacity_halved").downstream, capacity_changes=((180.0, 0.5), (360.0, 1.0))),
        changes=((180.0, "halved"), (360.0, "restored")))
    # WHEN the inner loop runs through it, its controller at either phase of the minute
    result = run(strategy("inner_loop"), halved, seed=3, schedule_phase_sec=phase)
    # THEN the minutes' 429s (the inner loop's cuts and probes) never cut the concurrency below what it was
    before = result.ledger.concurrency_limit[179]
    assert min(result.ledger.concurrency_limit[180:]) >= before
    assert not any(a.action == "decrease" for _, a in result.decisions)
    # AND within a minute of the capacity's return the successes are back at 0.95 of the limit
    change = summarize(result)["by_change"][1]
    assert change["recover_sec"] is not None and change["recover_sec"] <= 60


def test_a_downstream_that_publishes_its_limit_is_followed_without_a_single_settled_429_and_at_once_back():
    # GIVEN the same halving and restoring, by a downstream whose every answer carries its current limit
    published = scenario("capacity_halved_published")
    halved = short("capacity_halved_published", downstream=dataclasses.replace(
        published.downstream, capacity_changes=((180.0, 0.5), (360.0, 1.0))),
        changes=((180.0, "halved"), (360.0, "restored")))
    # WHEN the inner loop runs through it
    result = run(strategy("inner_loop"), halved, seed=3)
    ledger, ceiling = result.ledger, result.limiter_policy.rate_per_sec
    # THEN within 2 s of the drop its rate is the published one less its headroom: no probe, no cut
    assert max(ledger.rate_limit[182:360]) == pytest.approx(0.5 * LIMIT_RPS * 0.99)
    # AND not one 429 was answered from 10 s after the drop, nor in the minute after it
    assert sum(ledger.throttled[190:360]) == 0
    assert sum(ledger.throttled[180:240]) <= 0.01 * sum(ledger.answered[180:240])
    # AND within 2 s of the return it is back at the plan's rate, and stays there
    assert min(ledger.rate_limit[362:]) == ceiling
    # AND every published rate cost a write only when it was news: the two changes, and a refresh
    # every half TTL in between
    assert result.limiter_publications <= 2 + 1 + len(ledger.rate_limit) / (PUBLISHED_TTL_SEC / 2)


def test_many_executions_at_once_keep_many_times_the_setting_in_flight_and_our_limiter_holds_them_all():
    # GIVEN ten executions sharing the CRM for ten minutes, at three times its limit in all
    many = short("many_executions")
    plan = plan_for(many)
    # WHEN the inner loop runs them, and the same Maps run with no limiter at the plan's concurrency
    ours = run(strategy("inner_loop"), many, seed=2)
    unlimited = run(strategy("aimd_baseline"), many, seed=2)
    # THEN every execution ran at the setting in force: together up to ten times it in flight
    assert max(ours.ledger.running) > 2 * plan.map_concurrency
    assert max(ours.ledger.concurrency_limit) == 10 * max(d.max_concurrency for _, d in ours.decisions)
    # AND our one shared limiter held all of them together to its rate and burst in every window
    calls = ours.ledger.calls
    for window in (1, 10, 60):
        assert max(sum(calls[s:s + window]) for s in range(len(calls) - window + 1)) <= (
            plan.limiter_burst + plan.limiter_rate_per_sec * window)
    assert sum(ours.ledger.throttled) == 0
    # AND without it the same ten Maps drew 429s (a concurrency brake per execution is no rate limit)
    assert sum(unlimited.ledger.throttled) > 0.1 * sum(unlimited.ledger.answered)
    for result in (ours, unlimited):
        summary = summarize(result)
        assert summary["succeeded"] + summary["failed"] + summary["backlog_at_end"] == summary["arrived"]


@pytest.mark.parametrize("name", [s.name for s in STRATEGIES if s.baseline_with_our_limiter])
def test_a_baseline_behind_our_limiter_never_calls_faster_than_the_limiter_allows(name):
    # GIVEN ten minutes at three times the limit, and the limiter ours runs behind
    steady = dataclasses.replace(scenario("steady_overload"), duration_sec=600.0)
    plan = plan_for(steady)
    # WHEN a baseline runs behind it
    result = run(strategy(name), steady, seed=2)
    calls = result.ledger.calls
    # THEN its policy is still the plan's (no baseline moves the rate)
    assert (result.limiter_policy.rate_per_sec, result.limiter_policy.burst) == (
        plan.limiter_rate_per_sec, plan.limiter_burst) == (9.9, 5)
    # AND in every window of 1, 10 and 60 s, it made at most the burst plus the rate over the window
    for window in (1, 10, 60):
        busiest = max(sum(calls[s:s + window]) for s in range(len(calls) - window + 1))
        assert busiest <= plan.limiter_burst + plan.limiter_rate_per_sec * window
    # AND it did keep the limiter busy: the bound is not met by doing nothing
    assert sum(calls) >= 0.9 * plan.limiter_rate_per_sec * 600


def test_settling_windows_are_measured_on_the_worst_ten_seconds_and_recovery_on_the_first_full_ones():
    # GIVEN a ledger of 40 s: 10 answers a second, 2 of them 429s in seconds 15-17, and successes at
    # 4 a second until second 20, 10 after, against a limit of 10 req/s
    ledger = Ledger(40.0)
    ledger.answered = [10] * 40
    ledger.throttled = [2 if 15 <= s < 18 else 0 for s in range(40)]
    ledger.successes = [4] * 20 + [10] * 20
    ledger.capacity_rps = [10.0] * 40
    # THEN the worst 10 s window holds all six 429s of its 100 answers
    assert worst_window_throttled_share(ledger, 0, 40) == 0.06
    # AND from second 18 on no window holds a 429
    assert worst_window_throttled_share(ledger, 18, 40) == 0.0
    # AND 0.95 of the limit is first reached by the window [20, 30): 30 s from the start, 10 from second 20
    assert seconds_to_reach(ledger, 0, 40) == 30
    assert seconds_to_reach(ledger, 20, 40) == 10
    # AND never when no window reaches it
    assert seconds_to_reach(ledger, 0, 25) is None
