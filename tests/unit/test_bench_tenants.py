"""The tenants benchmark's own arithmetic and a short run: fair shares, Jain's index, the regain clock, the replayed
global limit, and one seed giving one history."""

from __future__ import annotations

import pytest

from bench import tenants


def test_the_weighted_max_min_fair_split_gives_the_small_demands_theirs_and_splits_the_rest_by_weight():
    fair = tenants.max_min_fair({"a": 1.0, "b": 50.0, "c": 50.0}, {"a": 0.5, "b": 0.25, "c": 0.25}, 21.0)
    assert fair == pytest.approx({"a": 1.0, "b": 10.0, "c": 10.0})


def test_jains_index_is_one_for_equal_values_and_one_over_n_for_one_hog():
    assert tenants.jain([2.0, 2.0, 2.0]) == pytest.approx(1.0)
    assert tenants.jain([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)


def test_the_regain_clock_stops_at_the_end_of_the_first_window_from_which_on_the_share_is_served():
    # GIVEN a tenant back at 60 s, admitted 10/s from 64 s on (2 s windows: the third one is the first full one)
    admitted_at = [64.0 + k / 10 for k in range(int((tenants.ARRIVALS_SEC - 64.0) * 10))]
    run = {"flows": {"t1": {"admitted_at": admitted_at}}}
    assert tenants.regain_sec(run, "t1", 10.0) == 6.0
    # AND never admitted: never
    assert tenants.regain_sec({"flows": {"t1": {"admitted_at": []}}}, "t1", 10.0) is None


def test_a_short_run_never_over_admits_and_one_seed_gives_one_history(monkeypatch):
    # GIVEN a short noisy neighbour
    monkeypatch.setattr(tenants, "ARRIVALS_SEC", 20.0)
    monkeypatch.setattr(tenants, "WARMUP_SEC", 2.0)
    monkeypatch.setattr(tenants, "DRAIN_SEC", 5.0)
    scenario = tenants.scenarios()["noisy_neighbour"]
    # WHEN our limiter and today's single bucket run it with the same seed
    ours = tenants.simulate(scenario, "ours", seed=3)
    single = tenants.simulate(scenario, "single_bucket", seed=3)
    # THEN neither admits past the global limit, and the quiet tenants are all served under ours
    assert tenants.over_admitted(ours["admissions"]) == 0 and tenants.over_admitted(single["admissions"]) == 0
    quiet = [flow for name, flow in ours["flows"].items() if name != "t0"]
    assert all(flow["served"] == flow["arrived"] > 0 for flow in quiet)
    # AND the same seed gives the same history
    assert tenants.simulate(scenario, "ours", seed=3) == ours


def test_a_replayed_admission_past_the_limit_is_counted():
    # GIVEN the limiter's burst at one instant, and one more
    burst = tenants.LIMITER.burst
    assert tenants.over_admitted([100.0] * burst) == 0
    assert tenants.over_admitted([100.0] * (burst + 1)) == 1
