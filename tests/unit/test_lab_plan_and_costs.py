"""`make plan`'s arithmetic through the command it runs, and the cost model's claim against the seed's design."""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.costs import (
    ARCHITECTURES,
    CallProfile,
    cost_per_million_calls,
    load_prices,
    naive,
    recommended,
)
from throttlectl.cli import main

ROOT = Path(__file__).resolve().parents[2]


def make_plan_argv(*assignments: str) -> list[str]:
    """The throttlectl arguments `make plan ...` would run (from `make -n`, which runs nothing)."""
    dry_run = subprocess.run(["make", "--no-print-directory", "-n", "plan", *assignments], cwd=ROOT,
                             capture_output=True, text=True, check=True)
    (line,) = [line for line in dry_run.stdout.splitlines() if "-m throttlectl plan" in line]
    words = shlex.split(line)
    return words[words.index("throttlectl") + 1:]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_plan_reproduces_the_seeds_example_five_calls_of_200_ms_make_25_rps():
    # GIVEN the command `make plan LIMIT_RPS=10 LATENCY_MS=200 CONCURRENCY=5` runs
    argv = make_plan_argv("LIMIT_RPS=10", "LATENCY_MS=200", "CONCURRENCY=5")
    assert argv == ["plan", "--limit-rps", "10", "--latency-ms", "200", "--concurrency", "5"]
    # WHEN it runs
    out = io.StringIO()
    code = main(argv, stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    # THEN it shows the arithmetic: 5 in flight at 0.2 s offer 25 req/s, 2.5 times the limit, and fails the check
    assert code == 2
    assert "check: 5 concurrent calls / 0.2 s = 25 req/s: too many for a 10 req/s limit (2.5x it)" in text
    # AND it answers every setting, each with the arithmetic behind it
    assert "concurrency alone (no limiter) = max(1, floor(10 req/s x 0.2 s)) = max(1, floor(2)) = 2" in text
    assert "a call holds its slot W x 1.25 + 50 ms = 300 ms" in text
    assert "Map concurrency = max(1, ceil(10 req/s x 0.3 s)) = max(1, ceil(3)) = 3: the shared limiter holds the rate" in text
    assert "queue consumer MaximumConcurrency = max(2 (Lambda's minimum for SQS), 3) = 3" in text
    assert "limiter rate_per_sec = 10 x (1 - 0.01) = 9.9 req/s; burst = max(1, min(floor(10 / 2), floor(10 x (1 - 0.01)))) = 5" in text
    assert "jitter margin = (10 + 1 - 5) / 9.9 req/s - 1 / 10 req/s = 0.506 s" in text
    assert "retry MaxAttempts = 8" in text and '"JitterStrategy": "FULL"' in text


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_plan_without_a_concurrency_to_check_succeeds_and_answers_in_json_too():
    argv = make_plan_argv("LIMIT_RPS=10", "LATENCY_MS=200", "BURST=10")
    out = io.StringIO()
    assert main([*argv, "--json"], stdout=out, stderr=io.StringIO()) == 0
    plan = json.loads(out.getvalue())
    assert (plan["map_concurrency"], plan["consumer_max_concurrency"], plan["littles_law_concurrency"]) == (3, 3, 2)
    assert (plan["slot_time_ms"], plan["max_in_flight"]) == (300, None)
    assert (plan["limiter_rate_per_sec"], plan["limiter_burst"]) == (9.9, 5)
    assert plan["retry"]["asl"]["MaxAttempts"] == 8


# -- costs ---------------------------------------------------------------------------------------


def test_the_recommended_design_is_at_least_ten_times_cheaper_per_million_calls_than_the_seeds():
    # GIVEN the list prices and one call's profile
    prices, profile = load_prices(), CallProfile()
    # WHEN both designs are priced per million downstream calls
    seed = cost_per_million_calls(naive(), prices, profile)
    ours = cost_per_million_calls(recommended(), prices, profile)
    # THEN ours costs a tenth or less, and the seed's bill is mostly Standard state transitions
    assert seed["total"] >= 10 * ours["total"]
    assert seed["step_functions"] > 0.8 * seed["total"]
    # AND each bill is the sum of its lines
    for bill in (seed, ours):
        assert bill["total"] == pytest.approx(sum(v for k, v in bill.items() if k != "total"), abs=1e-3)


def test_the_limiter_line_is_one_write_per_call_for_gcra_and_two_for_refill_then_consume():
    prices = load_prices()
    write = prices["dynamodb"]["on_demand_per_write_request_unit"]
    assert cost_per_million_calls(naive(), prices)["dynamodb_limiter"] == pytest.approx(2 * 1e6 * write, abs=1e-3)
    assert cost_per_million_calls(recommended(), prices)["dynamodb_limiter"] == pytest.approx(1e6 * write, abs=1e-3)


def test_standard_transitions_and_express_duration_are_priced_from_the_prices_file():
    prices = load_prices()
    # $0.025 per 1,000 transitions: one transition per call is $25 per million calls
    assert prices["step_functions"]["standard_per_state_transition"] * 1e6 == pytest.approx(25.0)
    by_name = {a.name: a for a in ARCHITECTURES}
    # an Express execution per item lasts one call (0.27 s, billed 0.3 s) at 64 MB
    per_item = cost_per_million_calls(by_name["express_per_item"], prices, CallProfile(call_sec=0.27))
    expected = 1e6 * (prices["step_functions"]["express_per_request"]
                      + 0.3 * 64 / 1024 * prices["step_functions"]["express_per_gb_second"])
    assert per_item["step_functions"] == pytest.approx(expected, abs=1e-3)


def test_the_prices_file_says_when_and_where_it_was_read():
    prices = load_prices()
    assert prices["region"] == "us-east-1" and prices["currency"] == "USD"
    assert len(prices["read_on"]) == 10 and prices["read_on"].count("-") == 2
    # AND every section of prices names the page it was read from
    sections = {name for name, value in prices.items() if isinstance(value, dict) and name != "sources"}
    assert set(prices["sources"]) == sections >= {"step_functions", "lambda", "sqs", "dynamodb", "cloudwatch"}
