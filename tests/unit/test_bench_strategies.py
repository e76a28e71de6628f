"""The strategy benchmark's report: reproducible from its seeds, fair to the baselines, honest about the worst seed."""

from __future__ import annotations

import dataclasses

import pytest

from bench.strategies import OURS, benchmark, summary_markdown, where_ours_loses, worst
from lab.scenarios import scenario
from lab.strategies import STRATEGIES, strategy

# Two minutes of traffic per run keep the whole matrix of strategies to a few seconds.
SHORT_SEC = 120.0


def short_halving() -> object:
    halved = scenario("capacity_halved")
    return dataclasses.replace(
        halved, duration_sec=SHORT_SEC,
        downstream=dataclasses.replace(halved.downstream, capacity_changes=((40.0, 0.5), (80.0, 1.0))),
        changes=((40.0, "capacity halved"), (80.0, "capacity restored")))


def short_benchmark(seeds: list[int]) -> dict:
    document, _ = benchmark(seeds, scenarios=[short_halving()], headroom_sweep=())
    return document


def test_the_same_seeds_give_the_same_report_and_other_seeds_another():
    # WHEN the benchmark runs twice with seeds 3 and 4, and once with 5 and 6
    first, again, other = short_benchmark([3, 4]), short_benchmark([3, 4]), short_benchmark([5, 6])
    # THEN the two runs agree in every figure and every line of the report; the other seeds differ
    assert first == again
    assert summary_markdown(first) == summary_markdown(again)
    assert first["records"] != other["records"]


def test_the_worst_of_the_seeds_is_the_lowest_goodput_and_the_highest_429_share():
    # GIVEN the benchmark over three seeds
    document = short_benchmark([1, 2, 3])
    for row in document["aggregates"]:
        runs = [r for r in document["records"] if (r["scenario"], r["strategy"]) == (row["scenario"], row["strategy"])]
        # THEN each row summarizes one run per seed
        assert sorted(r["seed"] for r in runs) == [1, 2, 3]
        # AND its worst goodput and net goodput are the minimum over the seeds, never the best
        for figure in ("goodput_fraction_of_limit", "net_goodput_fraction_of_limit"):
            assert row[figure]["worst"] == min(r[figure] for r in runs)
            assert row[figure]["mean"] == pytest.approx(sum(r[figure] for r in runs) / 3, abs=1e-5)
        # AND its worst 429 share is the maximum
        assert row["throttled_share"]["worst"] == max(r["throttled_share"] for r in runs)


def test_worst_treats_a_time_that_never_came_as_the_worst():
    assert worst([0.9, 0.8, 0.95], higher_is_better=True) == 0.8
    assert worst([12, 40, 7], higher_is_better=False) == 40
    assert worst([12, None, 7], higher_is_better=False) is None


def test_ours_are_the_inner_loop_and_the_controller_alone():
    assert all(strategy(name).ours for name in OURS)
    assert {s.name for s in STRATEGIES if s.baseline_with_our_limiter} == {
        "static_guess+limiter", "aimd_baseline+limiter", "gradient2_baseline+limiter",
        "static_guess+inner_loop", "aimd_baseline+inner_loop", "gradient2_baseline+inner_loop"}


def test_each_of_ours_is_compared_with_the_baselines_behind_its_own_limiter():
    # GIVEN every baseline one point of net goodput above both of ours in one scenario
    rows = []
    for spec in STRATEGIES:
        net = 0.5 if spec.ours else 0.6
        rows.append({"scenario": "steady_overload", "strategy": spec.name,
                     "net_goodput_fraction_of_limit": {"mean": net, "worst": net}})
    # WHEN the losses are listed
    losses = where_ours_loses(rows)
    # THEN the inner loop is measured against the baselines behind its own limiter, inner loop included,
    # and the controller alone against those behind the planned limiter; never across
    pairs = {(loss["ours"], loss["baseline"]) for loss in losses}
    assert pairs == {
        ("inner_loop", "static_guess+inner_loop"), ("inner_loop", "aimd_baseline+inner_loop"),
        ("inner_loop", "gradient2_baseline+inner_loop"),
        ("adaptive_aimd", "static_guess+limiter"), ("adaptive_aimd", "aimd_baseline+limiter"),
        ("adaptive_aimd", "gradient2_baseline+limiter")}


def test_each_seed_runs_the_controllers_at_another_second_of_the_minute():
    # WHEN the benchmark runs with two seeds
    document = short_benchmark([1, 2])
    # THEN the first seed's runs have the controller at second 0 of each period, the second's at 30
    phases = {(r["seed"], r["schedule_phase_sec"]) for r in document["records"]}
    assert phases == {(1, 0.0), (2, 30.0)}
    # AND the report says so, so the worst seed reads as the worst of those phases too
    assert "at another second of the minute (0, 30 s)" in summary_markdown(document)
