"""Benchmark: every throttling strategy of the lab on every scenario, in virtual time, over several seeds.

    .venv/bin/python -m bench.strategies [--seed 1] [--seeds 5] [--headroom 0.01] [--jobs 2] [--out bench/results]

Runs each strategy of `lab.strategies` (the baselines also behind the same limiter as ours: the
`+limiter` rows) through each scenario of `lab.scenarios` and the unknown-limit scenario, an hour of
traffic each (one to three seconds of CPU), with the seeds `--seed` to `--seed + --seeds - 1`, then
writes to `--out`:
- `summary.json`: one record per strategy x scenario x seed (the figures of `lab.run.summarize`),
  their mean and worst over the seeds, issue 14's targets for ours and whether the worst seed meets
  them, where ours loses to a baseline given the same limiter, the headroom sweep and the costs;
- `summary.md`: the same as tables;
- `<scenario>.png`: throughput against the downstream's limit, the concurrency limit in force and
  429s per second over the hour of the first seed, one line per strategy;
- `cost.md`: AWS cost per million calls for each architecture choice (`lab.costs`).
It prints the tables and the cost breakdown. The same seeds give the same files.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lambdas"))

from lab.costs import (  # noqa: E402
    ARCHITECTURES,
    CallProfile,
    cost_per_million_calls,
    load_prices,
    naive,
    recommended,
)
from lab.mechanisms import INLINE_MAP_MAX_CONCURRENCY  # noqa: E402
from lab.run import PERIOD_SEC, run, summarize  # noqa: E402
from lab.scenarios import SCENARIOS, UNKNOWN_LIMIT, scenario  # noqa: E402
from lab.strategies import HEADROOM, STRATEGIES, plan_for, strategy  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# Ours: the shared limiter's inner loop, and the controller alone (its default mode).
OURS = ("inner_loop", "adaptive_aimd")
BENCH_SCENARIOS = (*SCENARIOS, UNKNOWN_LIMIT)
SEEDS = 5
HEADROOM_SWEEP = (0.0, 0.01, 0.02, 0.05, 0.1)
SMOOTHING_SEC = 30
# Above the controllers' ceiling (4x Little's law's 2, rounded down): the inline Map's 40 would flatten everything else.
CONCURRENCY_AXIS_TOP = 9
# The capacity change is judged twice: from a downstream that says nothing but 429s, and from one that
# publishes its limit in every answer (`lab.scenarios`: only the second lets both targets be met).
HALVED_SCENARIOS = {"capacity_halved": " (silent)", "capacity_halved_published": " (limit published)"}
# Issue 14's targets, judged on the worst of the seeds.
TARGETS = {
    "steady_goodput_at_least": 0.99,
    "steady_throttled_share_at_most": 0.0,
    "halved_worst_10s_throttled_share_below": 0.01,
    "halved_first_minute_throttled_share_at_most": 0.01,
    "restored_recover_sec_at_most": 60,
    "unknown_reach_95_sec_at_most": 120,
    "unknown_throttled_share_after_30s_at_most": 0.01,
}
# The figures reported as mean and worst over the seeds, and which way is better.
HIGHER_IS_BETTER = {"goodput_fraction_of_limit": True, "net_goodput_fraction_of_limit": True,
                    "throttled_share": False}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.strategies", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="the first seed (default 1)")
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"how many seeds from --seed (default {SEEDS})")
    parser.add_argument("--headroom", type=float, default=HEADROOM,
                        help=f"share of the limit our limiter leaves unused (default {HEADROOM}, the stage's)")
    parser.add_argument("--jobs", type=int, default=2, help="processes to run the scenarios in (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    started = time.monotonic()

    document, series = benchmark(range(args.seed, args.seed + args.seeds), args.headroom, jobs=args.jobs)
    costs = cost_table()
    document["cost_per_million_calls"] = costs
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    markdown = summary_markdown(document)
    (args.out / "summary.md").write_text(markdown)
    (args.out / "cost.md").write_text(cost_markdown(costs))
    _plot(series, args.out)
    print(markdown)
    print(cost_markdown(costs))
    print(f"wrote {args.out}/summary.json, summary.md, cost.md and {len(BENCH_SCENARIOS)} plots "
          f"in {time.monotonic() - started:.0f} s")
    return 0


def benchmark(seeds: Sequence[int], headroom: float = HEADROOM, *, jobs: int = 1,
              scenarios: Sequence[Any] = BENCH_SCENARIOS, headroom_sweep: Sequence[float] = HEADROOM_SWEEP,
              ) -> tuple[dict[str, Any], dict[tuple[str, str], dict[str, list[float]]]]:
    """Every strategy through `scenarios` with every seed; the figures, aggregated and judged, and the
    first seed's time series (for the plots)."""
    seeds = list(seeds)
    runs_wanted = [(s.name, c, seed, headroom, seed == seeds[0], schedule_phase(index, len(seeds)))
                   for c in scenarios for s in STRATEGIES for index, seed in enumerate(seeds)]
    sweep_wanted = [(OURS[1], scenario("steady_overload"), seeds[0], h, False, schedule_phase(0, len(seeds)))
                    for h in headroom_sweep]
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(_run_one, runs_wanted + sweep_wanted))
    runs, sweep = results[:len(runs_wanted)], results[len(runs_wanted):]
    records = [summary for summary, _ in runs]
    series = {(summary["scenario"], summary["strategy"]): points for summary, points in runs if points}
    aggregates = aggregate(records)
    document = {
        "generated_by": "python -m bench.strategies",
        "seeds": seeds,
        "headroom": headroom,
        "period_sec": PERIOD_SEC,
        "strategies": {s.name: s.label for s in STRATEGIES},
        "scenarios": {c.name: c.title for c in scenarios},
        "aggregates": aggregates,
        "targets": evaluate_targets(aggregates) if {c.name for c in scenarios} >= {c.name for c in BENCH_SCENARIOS}
        else None,
        "where_ours_loses": where_ours_loses(aggregates),
        "headroom_sweep": [
            {"headroom": h, **_limiter_of(plan_for(scenario("steady_overload"), h)),
             **{k: summary[k] for k in ("goodput_fraction_of_limit", "throttled_share")}}
            for h, (summary, _) in zip(headroom_sweep, sweep)
        ],
        "records": records,
    }
    return document, series


def _limiter_of(plan: Any) -> dict[str, float]:
    return {"limiter_rate_per_sec": plan.limiter_rate_per_sec, "limiter_burst": plan.limiter_burst,
            "jitter_margin_sec": plan.jitter_margin_sec}


def schedule_phase(index: int, seeds: int) -> float:
    """The second of the minute the controller runs at for the `index`-th of `seeds` seeds: spread
    evenly over the period, so the worst of the seeds is also the worst of as many phases
    (EventBridge's `rate(1 minute)` fixes none; `bench.phases` sweeps every phase for the controller alone)."""
    return PERIOD_SEC * index / seeds


def _run_one(job: tuple[str, Any, int, float, bool, float | None]) -> tuple[dict[str, Any], dict[str, list[float]]]:
    strategy_name, scenario_spec, seed, headroom, keep_series, phase = job
    result = run(strategy(strategy_name), scenario_spec, seed=seed, headroom=headroom, schedule_phase_sec=phase)
    ledger = result.ledger
    seconds = len(ledger.running)
    # Only the plotted seed's series cross back from the worker: the others would be megabytes for nothing.
    points = {
        "successes": [float(x) for x in ledger.successes[:seconds]],
        "throttled": [float(x) for x in ledger.throttled[:seconds]],
        "capacity": list(ledger.capacity_rps),
        "concurrency_limit": [float(x) for x in ledger.concurrency_limit],
    } if keep_series else {}
    return {**summarize(result), "schedule_phase_sec": phase}, points


# -- mean and worst over the seeds ---------------------------------------------------------------


def worst(values: Sequence[float | None], *, higher_is_better: bool) -> float | None:
    """The worst of the seeds: the lowest of a figure where higher is better, else the highest; a time
    that never came (None) is the worst of all."""
    if higher_is_better:
        return min(v for v in values if v is not None) if None not in values else None
    return None if None in values else max(values)  # type: ignore[type-var]


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.fmean(present), 5) if present else None


def _change(record: dict[str, Any], what: str) -> dict[str, Any] | None:
    return next((c for c in record["by_change"] if c["what"] == what), None)


def _worst_of_changes(runs: list[dict[str, Any]], what: str, figure: str) -> float | None:
    changes = [_change(r, what) for r in runs]
    if None in changes:
        return None
    return worst([c[figure] for c in changes], higher_is_better=False)  # type: ignore[index]


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per scenario x strategy: the mean and the worst over its seeds of goodput, net goodput
    and 429 share, and the worst of the settling figures."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["scenario"], record["strategy"]), []).append(record)
    rows = []
    for (scenario_name, strategy_name), runs in groups.items():
        row: dict[str, Any] = {"scenario": scenario_name, "strategy": strategy_name,
                               "seeds": [r["seed"] for r in runs]}
        for figure, higher in HIGHER_IS_BETTER.items():
            values = [r[figure] for r in runs]
            row[figure] = {"mean": _mean(values), "worst": worst(values, higher_is_better=higher)}
        row["latency_p50_sec_mean"] = _mean([r["latency_p50_sec"] for r in runs])
        row["latency_p99_sec_mean"] = _mean([r["latency_p99_sec"] for r in runs])
        row["latency_p99_sec_worst"] = worst([r["latency_p99_sec"] for r in runs], higher_is_better=False)
        row["reconverge_periods_worst"] = (None if runs[0]["reconverged"] is None
                                           else worst([r["reconverge_periods"] for r in runs], higher_is_better=False))
        row["has_changes"] = runs[0]["reconverged"] is not None
        row["halved_worst_10s_throttled_share"] = _worst_of_changes(runs, "capacity halved", "worst_10s_throttled_share")
        row["halved_first_minute_throttled_share"] = _worst_of_changes(runs, "capacity halved",
                                                                       "first_minute_throttled_share")
        row["restored_recover_sec"] = _worst_of_changes(runs, "capacity restored", "recover_sec")
        row["reach_95_sec_worst"] = worst([r["reach_95_sec"] for r in runs], higher_is_better=False)
        row["throttled_share_after_30s_worst"] = worst([r["throttled_share_after_30s"] for r in runs],
                                                       higher_is_better=False)
        row["backlog_at_end_mean"] = _mean([r["backlog_at_end"] for r in runs])
        row["failed_worst"] = max(r["failed"] for r in runs)
        rows.append(row)
    return rows


# -- targets -------------------------------------------------------------------------------------


def _check(value: float | None, wanted: str, met: Callable[[float], bool]) -> dict[str, Any]:
    return {"value": value, "target": wanted, "met": value is not None and met(value)}


def evaluate_targets(aggregates: list[dict[str, Any]]) -> dict[str, Any]:
    """Issue 14's targets for each of ours, on the worst seed."""
    by = {(a["scenario"], a["strategy"]): a for a in aggregates}
    t = TARGETS
    judged = {}
    for ours in OURS:
        steady, unknown = (by[(name, ours)] for name in ("steady_overload", "unknown_limit"))
        judged[ours] = {
            "steady overload: goodput": _check(
                steady["goodput_fraction_of_limit"]["worst"], f">= {t['steady_goodput_at_least']}",
                lambda v: v >= t["steady_goodput_at_least"]),
            "steady overload: 429 share": _check(
                steady["throttled_share"]["worst"], "0 %", lambda v: v <= t["steady_throttled_share_at_most"]),
        }
        for halved_scenario, how in HALVED_SCENARIOS.items():
            halved = by[(halved_scenario, ours)]
            judged[ours] |= {
                f"capacity halved{how}: worst 10 s window's 429 share (from 10 s after)": _check(
                    halved["halved_worst_10s_throttled_share"], f"< {t['halved_worst_10s_throttled_share_below']:.0%}",
                    lambda v: v < t["halved_worst_10s_throttled_share_below"]),
                f"capacity halved{how}: 429 share in the first minute": _check(
                    halved["halved_first_minute_throttled_share"],
                    f"<= {t['halved_first_minute_throttled_share_at_most']:.0%}",
                    lambda v: v <= t["halved_first_minute_throttled_share_at_most"]),
                f"capacity restored{how}: seconds to 0.95 of the limit": _check(
                    halved["restored_recover_sec"], f"<= {t['restored_recover_sec_at_most']} s",
                    lambda v: v <= t["restored_recover_sec_at_most"]),
            }
        judged[ours] |= {
            "unknown limit: seconds to 0.95 of the real rate": _check(
                unknown["reach_95_sec_worst"], f"<= {t['unknown_reach_95_sec_at_most']} s",
                lambda v: v <= t["unknown_reach_95_sec_at_most"]),
            "unknown limit: 429 share after the first 30 s": _check(
                unknown["throttled_share_after_30s_worst"], f"<= {t['unknown_throttled_share_after_30s_at_most']:.0%}",
                lambda v: v <= t["unknown_throttled_share_after_30s_at_most"]),
        }
        losses = [loss for loss in where_ours_loses(aggregates) if loss["ours"] == ours]
        judged[ours]["net goodput at least every baseline's with the same limiter (mean and worst)"] = {
            "value": f"{len(losses)} losses", "target": "no loss", "met": not losses}
    return judged


def where_ours_loses(aggregates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every scenario in which a baseline given the same limiter as one of ours (its inner loop included,
    for `inner_loop`) gets a higher net goodput than that one, on the mean or on the worst seed."""
    by = {(a["scenario"], a["strategy"]): a for a in aggregates}
    losses = []
    for (scenario_name, strategy_name), row in by.items():
        if strategy_name not in OURS:
            continue
        ours = row["net_goodput_fraction_of_limit"]
        limiter = strategy(strategy_name).limiter
        for baseline in (s.name for s in STRATEGIES if s.baseline_with_our_limiter and s.limiter == limiter):
            theirs = by[(scenario_name, baseline)]["net_goodput_fraction_of_limit"]
            if theirs["mean"] > ours["mean"] or theirs["worst"] > ours["worst"]:
                losses.append({"scenario": scenario_name, "ours": strategy_name, "baseline": baseline,
                               "ours_mean": ours["mean"], "ours_worst": ours["worst"],
                               "theirs_mean": theirs["mean"], "theirs_worst": theirs["worst"]})
    return losses


# -- reports -------------------------------------------------------------------------------------


def cost_table() -> dict[str, Any]:
    prices = load_prices()
    profile = CallProfile()
    rows = {a.name: {"label": a.label, "role": a.role, "note": a.note, **cost_per_million_calls(a, prices, profile)}
            for a in ARCHITECTURES}
    naive_total = rows[naive().name]["total"]
    for row in rows.values():
        row["times_cheaper_than_seed"] = round(naive_total / row["total"], 1) if row["total"] else None
    return {
        "prices_read_on": prices["read_on"],
        "region": prices["region"],
        "profile": {"call_sec": profile.call_sec, "lambda_memory_mb": profile.lambda_memory_mb,
                    "rate_per_sec": profile.rate_per_sec},
        "naive": naive().name,
        "recommended": recommended().name,
        "architectures": rows,
    }


def summary_markdown(document: dict[str, Any]) -> str:
    seeds = document["seeds"]
    scenario_names = list(document["scenarios"])
    lines = [
        "# Strategy benchmark",
        "",
        f"`python -m bench.strategies` (seeds {seeds[0]} to {seeds[-1]}, our limiter's headroom "
        f"{document['headroom']:.0%} and half the downstream's burst, controller period {document['period_sec']:.0f} s). "
        "One hour of virtual time per run; the downstream is the dev stage's CRM (10 req/s, burst 10, 200 +- 50 ms). "
        "Each seed runs the controllers at another second of the minute ("
        + ", ".join(f"{schedule_phase(i, len(seeds)):g}" for i in range(len(seeds)))
        + " s), so the worst seed is also the worst of those schedule phases. "
        "Goodput and net goodput (less one for every 429) are fractions of what the downstream's limit allowed "
        "over the hour, each given as the mean / the worst of the seeds; p50/p99 are end to end (arrival to "
        "success), means over the seeds; reconverge is in controller periods (worst change, worst seed). "
        "The `+limiter` rows are baselines behind the same limiter as adaptive_aimd (9.9 req/s, burst 5), the "
        "`+inner_loop` rows behind the same limiter as inner_loop (its inner loop included).",
        "",
    ]
    lines += overview_markdown(document) + [""]
    by = {(a["scenario"], a["strategy"]): a for a in document["aggregates"]}
    header = ("| strategy | goodput mean / worst | net of 429s mean / worst | 429s mean / worst | p50 (s) | p99 (s) "
              "| reconverge | backlog at end | failed (worst) |")
    for name in scenario_names:
        lines += [f"## {name}: {document['scenarios'][name]}", "", header, "|" + "---|" * 9]
        for strategy_spec in STRATEGIES:
            row = by[(name, strategy_spec.name)]
            lines.append("| " + " | ".join([
                _name(strategy_spec),
                _mean_worst(row["goodput_fraction_of_limit"], _fraction),
                _mean_worst(row["net_goodput_fraction_of_limit"], _fraction),
                _mean_worst(row["throttled_share"], _pct),
                _num(row["latency_p50_sec_mean"]),
                _num(row["latency_p99_sec_mean"]),
                "-" if not row["has_changes"] else _plain(row["reconverge_periods_worst"]),
                f"{row['backlog_at_end_mean']:.0f}",
                str(row["failed_worst"]),
            ]) + " |")
        lines.append("")
    lines += settling_markdown(document, by)
    if document["targets"]:
        lines += ["## Issue 14's targets (worst of the seeds)", "",
                  "| target | wanted | " + " | ".join(OURS) + " |", "|---|---|" + "---|" * len(OURS)]
        for target in document["targets"][OURS[0]]:
            checks = [document["targets"][ours][target] for ours in OURS]
            show = _pct if "%" in checks[0]["target"] else _plain
            lines.append(f"| {target} | {checks[0]['target']} | " + " | ".join(
                f"{show(c['value'])}: {'met' if c['met'] else '**not met**'}" for c in checks) + " |")
        lines.append("")
    lines += ["## Where ours loses", "",
              "Every scenario in which a baseline behind the same limiter as one of ours (`+limiter` for "
              "adaptive_aimd, `+inner_loop` for inner_loop) gets a higher net goodput than it, on the mean or on "
              "the worst seed (net goodput, mean / worst):", "",
              "| scenario | ours | baseline | ours' | theirs |", "|---|---|---|---|---|"]
    for loss in document["where_ours_loses"]:
        lines.append(f"| {loss['scenario']} | {loss['ours']} | {loss['baseline']} "
                     f"| {loss['ours_mean']:.3f} / {loss['ours_worst']:.3f} "
                     f"| {loss['theirs_mean']:.3f} / {loss['theirs_worst']:.3f} |")
    if not document["where_ours_loses"]:
        lines.append("| none | | | | |")
    lines += ["", f"## Headroom (adaptive_aimd, steady overload, seed {seeds[0]})", "",
              "| headroom | our rate / burst | jitter margin | goodput | 429s |", "|---|---|---|---|---|"]
    for row in document["headroom_sweep"]:
        lines.append(f"| {row['headroom']:.0%} | {row['limiter_rate_per_sec']:g} / {row['limiter_burst']} "
                     f"| {row['jitter_margin_sec']:.3f} s | {row['goodput_fraction_of_limit']:.3f} "
                     f"| {_pct(row['throttled_share'])} |")
    lines += ["", "Plots (seed " + str(seeds[0]) + "): "
              + ", ".join(f"[{name}]({name}.png)" for name in scenario_names) + "; costs: [cost.md](cost.md).", ""]
    return "\n".join(lines)


def settling_markdown(document: dict[str, Any], by: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """The settling windows of the capacity change and the unknown limit's discovery, worst seed."""
    lines = ["## Settling (worst of the seeds)", "",
             "Capacity halved: the highest 429 share of any 10 s window from 10 s after the halving until the "
             "restoring, and the 429 share in the minute after it; capacity restored: seconds until a 10 s window's "
             "successes reach 0.95 of the limit. Unknown limit: the same from the start, and the 429 share after "
             "the first 30 s.", "",
             "| strategy | " + " | ".join(f"halved{how}: worst 10 s | halved{how}: first minute | restored{how}: to 0.95"
                                        for how in HALVED_SCENARIOS.values())
             + " | unknown: to 0.95 | unknown: 429s after 30 s |", "|---" * (2 + 3 * len(HALVED_SCENARIOS)) + "|---|"]
    for strategy_spec in STRATEGIES:
        halved = [by.get((name, strategy_spec.name)) for name in HALVED_SCENARIOS]
        unknown = by.get(("unknown_limit", strategy_spec.name))
        if None in halved or unknown is None:
            continue
        cells = [_name(strategy_spec)]
        for row in halved:
            assert row is not None
            cells += [_pct(row["halved_worst_10s_throttled_share"]), _pct(row["halved_first_minute_throttled_share"]),
                      _seconds(row["restored_recover_sec"])]
        cells += [_seconds(unknown["reach_95_sec_worst"]), _pct(unknown["throttled_share_after_30s_worst"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def overview_markdown(document: dict[str, Any]) -> list[str]:
    """Mean and worst net goodput of every strategy in every scenario, in one table (the README shows it)."""
    by = {(a["scenario"], a["strategy"]): a for a in document["aggregates"]}
    names = list(document["scenarios"])
    lines = [f"Net goodput (of 429s), mean / worst of {len(document['seeds'])} seeds, one hour each:", "",
             "| strategy | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for strategy_spec in STRATEGIES:
        cells = [_mean_worst(by[(name, strategy_spec.name)]["net_goodput_fraction_of_limit"], _fraction)
                 for name in names]
        lines.append(f"| {_name(strategy_spec)} | " + " | ".join(cells) + " |")
    return lines


def _name(strategy_spec: Any) -> str:
    return f"**{strategy_spec.name}**" if strategy_spec.ours else strategy_spec.name


def _mean_worst(figure: dict[str, float | None], show: Callable[[float | None], str]) -> str:
    return f"{show(figure['mean'])} / {show(figure['worst'])}"


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} s"


def cost_markdown(costs: dict[str, Any]) -> str:
    profile = costs["profile"]
    lines = [
        "# AWS cost per million downstream calls",
        "",
        f"List prices of {costs['region']} read on {costs['prices_read_on']} (`lab/prices.json`); a call waits "
        f"{profile['call_sec']} s in a {profile['lambda_memory_mb']} MB Lambda; calls go at "
        f"{profile['rate_per_sec']} req/s. Free tiers, CloudWatch and retries left out (`lab/costs.py`).",
        "",
        "| architecture | Step Functions | Lambda requests | Lambda duration | SQS | DynamoDB (limiter) "
        "| total | x cheaper than the seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in costs["architectures"].items():
        label = row["label"] + (" **(recommended)**" if row["role"] == "recommended" else "")
        lines.append("| " + " | ".join([
            label, *(f"${row[k]:.3f}" for k in ("step_functions", "lambda_requests", "lambda_duration", "sqs",
                                                 "dynamodb_limiter", "total")),
            f"{row['times_cheaper_than_seed']:.1f}",
        ]) + " |")
    naive_row, best = costs["architectures"][costs["naive"]], costs["architectures"][costs["recommended"]]
    lines += ["", f"The seed's design costs ${naive_row['total']:.2f} per million calls, {naive_row['step_functions'] / naive_row['total']:.0%} "
              f"of it Standard state transitions; the recommended one ${best['total']:.2f}, "
              f"{best['times_cheaper_than_seed']:.1f}x less, most of it the Lambda waiting on the downstream.", ""]
    for name, row in costs["architectures"].items():
        if row["note"]:
            lines.append(f"- {name}: {row['note']}.")
    lines.append("")
    return "\n".join(lines)


def _plot(series: dict[tuple[str, str], dict[str, list[float]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {s.name: plt.get_cmap("tab20")(index) for index, s in enumerate(STRATEGIES)}
    for scenario_spec in BENCH_SCENARIOS:
        if (scenario_spec.name, STRATEGIES[0].name) not in series:
            continue
        figure, (throughput, concurrency, throttled) = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
        minutes = None
        for strategy_spec in STRATEGIES:
            points = series[(scenario_spec.name, strategy_spec.name)]
            minutes = [t / 60 for t in range(len(points["successes"]))]
            width = 2.2 if strategy_spec.ours else 1.0
            style = {"color": colors[strategy_spec.name], "linewidth": width, "label": strategy_spec.label}
            throughput.plot(minutes, _smooth(points["successes"]), **style)
            concurrency.step(minutes, points["concurrency_limit"], where="post", **style)
            throttled.plot(minutes, _smooth(points["throttled"]), **style)
        capacity = series[(scenario_spec.name, STRATEGIES[0].name)]["capacity"]
        throughput.plot(minutes, capacity, color="black", linestyle="--", linewidth=1.5, label="downstream's limit")
        throughput.set_ylabel(f"successes/s ({SMOOTHING_SEC} s mean)")
        concurrency.set_ylabel("Map concurrency in force")
        concurrency.set_ylim(0, CONCURRENCY_AXIS_TOP)
        concurrency.text(0.99, 0.95, f"retries only: {INLINE_MAP_MAX_CONCURRENCY}, off the scale",
                         transform=concurrency.transAxes, ha="right", va="top", fontsize=8)
        throttled.set_ylabel(f"429s/s ({SMOOTHING_SEC} s mean)")
        throttled.set_yscale("symlog", linthresh=1)
        throttled.set_ylim(bottom=0)
        throttled.set_xlabel("minutes")
        throughput.set_title(scenario_spec.title, fontsize=10)
        throughput.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        for axes in (throughput, concurrency, throttled):
            axes.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(out / f"{scenario_spec.name}.png", dpi=80)
        plt.close(figure)


def _smooth(values: list[float], window: int = SMOOTHING_SEC) -> list[float]:
    smoothed, running = [], 0.0
    for index, value in enumerate(values):
        running += value
        if index >= window:
            running -= values[index - window]
        smoothed.append(running / min(index + 1, window))
    return smoothed


def _plain(value: float | str | None) -> str:
    if isinstance(value, str):
        return value
    return "never" if value is None else f"{value:g}"


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.2f} %"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    raise SystemExit(main())
