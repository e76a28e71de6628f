"""Benchmark: every throttling strategy of the lab on every scenario, in virtual time, with the same seed.

    .venv/bin/python -m bench.strategies [--seed 1] [--headroom 0.01] [--jobs 2] [--out bench/results]

Runs each strategy of `lab.strategies` through each scenario of `lab.scenarios` (an hour of traffic
each, about a second of CPU each), then writes to `--out`:
- `summary.json`: one record per strategy x scenario (the figures of `lab.run.summarize`), the
  targets and whether they are met, the headroom sweep and the cost comparison;
- `summary.md`: the same as tables;
- `<scenario>.png`: throughput against the downstream's limit, the concurrency limit in force and
  429s per second over the hour, one line per strategy;
- `cost.md`: AWS cost per million calls for each architecture choice (`lab.costs`).
It prints the tables and the cost breakdown. The same seed gives the same files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
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
from lab.scenarios import SCENARIOS, scenario  # noqa: E402
from lab.strategies import HEADROOM, STRATEGIES, plan_for, strategy  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
OURS = "adaptive_aimd"  # the controller's default mode
BASELINES = ("aimd_baseline", "gradient2_baseline")
HEADROOM_SWEEP = (0.0, 0.01, 0.02, 0.05, 0.1)
SMOOTHING_SEC = 30
# Above the controllers' ceiling (4x the plan's 2): the inline Map's 40 would flatten everything else.
CONCURRENCY_AXIS_TOP = 9
TARGETS = {
    "steady_goodput_at_least": 0.97,
    "steady_throttled_share_at_most": 0.001,
    "halved_reconverge_periods_at_most": 3,
    "halved_excess_throttled_share_at_most": 0.01,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.strategies", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--headroom", type=float, default=HEADROOM,
                        help=f"share of the limit our limiter leaves unused (default {HEADROOM}, the stage's)")
    parser.add_argument("--jobs", type=int, default=2, help="processes to run the scenarios in (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.monotonic()

    jobs = [(s.name, c.name, args.seed, args.headroom) for c in SCENARIOS for s in STRATEGIES]
    sweep_jobs = [(OURS, "steady_overload", args.seed, h) for h in HEADROOM_SWEEP]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(_run_one, jobs + sweep_jobs))
    runs, sweep = results[:len(jobs)], results[len(jobs):]
    records = [summary for summary, _ in runs]
    series = {(summary["scenario"], summary["strategy"]): points for summary, points in runs}

    targets = evaluate_targets(records)
    costs = cost_table()
    args.out.mkdir(parents=True, exist_ok=True)
    document = {
        "generated_by": "python -m bench.strategies",
        "seed": args.seed,
        "headroom": args.headroom,
        "period_sec": PERIOD_SEC,
        "strategies": {s.name: s.label for s in STRATEGIES},
        "scenarios": {c.name: c.title for c in SCENARIOS},
        "records": records,
        "targets": targets,
        "headroom_sweep": [
            {"headroom": h, **_limiter_of(plan_for(scenario("steady_overload"), h)),
             **{k: summary[k] for k in ("goodput_fraction_of_limit", "throttled_share")}}
            for h, (summary, _) in zip(HEADROOM_SWEEP, sweep)
        ],
        "cost_per_million_calls": costs,
    }
    (args.out / "summary.json").write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    markdown = summary_markdown(document)
    (args.out / "summary.md").write_text(markdown)
    (args.out / "cost.md").write_text(cost_markdown(costs))
    _plot(series, args.out)
    print(markdown)
    print(cost_markdown(costs))
    print(f"wrote {args.out}/summary.json, summary.md, cost.md and {len(SCENARIOS)} plots "
          f"in {time.monotonic() - started:.0f} s")
    return 0


def _limiter_of(plan: Any) -> dict[str, float]:
    return {"limiter_rate_per_sec": plan.limiter_rate_per_sec, "limiter_burst": plan.limiter_burst,
            "jitter_margin_sec": plan.jitter_margin_sec}


def _run_one(job: tuple[str, str, int, float]) -> tuple[dict[str, Any], dict[str, list[float]]]:
    strategy_name, scenario_name, seed, headroom = job
    result = run(strategy(strategy_name), scenario(scenario_name), seed=seed, headroom=headroom)
    ledger = result.ledger
    seconds = len(ledger.running)
    points = {
        "successes": [float(x) for x in ledger.successes[:seconds]],
        "throttled": [float(x) for x in ledger.throttled[:seconds]],
        "capacity": list(ledger.capacity_rps),
        "concurrency_limit": [float(x) for x in ledger.concurrency_limit],
    }
    return summarize(result), points


# -- targets -------------------------------------------------------------------------------------


def evaluate_targets(records: list[dict[str, Any]]) -> dict[str, Any]:
    by = {(r["scenario"], r["strategy"]): r for r in records}
    steady = by[("steady_overload", OURS)]
    halved = by[("capacity_halved", OURS)]
    halving = next(c for c in halved["by_change"] if c["what"] == "capacity halved")
    halving_excess = halving["throttled"] / halved["calls_answered"] if halved["calls_answered"] else 0.0
    checks = {
        "steady_overload_goodput": {
            "value": steady["goodput_fraction_of_limit"], "target": f">= {TARGETS['steady_goodput_at_least']}",
            "met": steady["goodput_fraction_of_limit"] >= TARGETS["steady_goodput_at_least"]},
        "steady_overload_throttled_share": {
            "value": steady["throttled_share"], "target": f"<= {TARGETS['steady_throttled_share_at_most']}",
            "met": steady["throttled_share"] <= TARGETS["steady_throttled_share_at_most"]},
        "capacity_halved_reconverge_periods": {
            "value": halving["periods"], "target": f"<= {TARGETS['halved_reconverge_periods_at_most']}",
            "met": halving["periods"] is not None
            and halving["periods"] <= TARGETS["halved_reconverge_periods_at_most"]},
        "capacity_halved_excess_throttled_share": {
            "value": round(halving_excess, 5), "target": f"<= {TARGETS['halved_excess_throttled_share_at_most']}",
            "met": halving_excess <= TARGETS["halved_excess_throttled_share_at_most"]},
    }
    versus = {}
    for scenario_spec in SCENARIOS:
        ours = by[(scenario_spec.name, OURS)]["net_goodput_fraction_of_limit"]
        theirs = {b: by[(scenario_spec.name, b)]["net_goodput_fraction_of_limit"] for b in BASELINES}
        versus[scenario_spec.name] = {"ours": ours, **theirs, "better_than_both": all(ours > v for v in theirs.values())}
    checks["better_than_aimd_and_gradient2"] = {
        "value": {name: v["better_than_both"] for name, v in versus.items()},
        "target": "higher net goodput than both baselines in every scenario",
        "met": all(v["better_than_both"] for v in versus.values()),
    }
    return {"strategy": OURS, "checks": checks, "net_goodput_versus_baselines": versus,
            "where_ours_loses": where_ours_loses(by)}


def where_ours_loses(by: dict[tuple[str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """Every figure in which another strategy does clearly better than ours, scenario by scenario."""
    losses = []
    for scenario_spec in SCENARIOS:
        ours = by[(scenario_spec.name, OURS)]
        for other_spec in STRATEGIES:
            if other_spec.name == OURS:
                continue
            other = by[(scenario_spec.name, other_spec.name)]
            for figure, better in LOSS_TESTS.items():
                if figure == "reconverge_periods" and ours["reconverged"] is None:
                    continue  # the scenario has no change to reconverge after
                if better(other[figure], ours[figure]):
                    losses.append({"scenario": scenario_spec.name, "strategy": other_spec.name, "figure": figure,
                                   "theirs": other[figure], "ours": ours[figure]})
    return losses


def _periods_or_never(value: float | None) -> float:
    return float("inf") if value is None else value


# A figure counts as lost only past a margin: noise between seeds is about that size.
LOSS_TESTS = {
    "net_goodput_fraction_of_limit": lambda theirs, ours: theirs > ours + 0.01,
    "latency_p99_sec": lambda theirs, ours: theirs is not None and ours is not None and theirs < 0.9 * ours,
    "reconverge_periods": lambda theirs, ours: _periods_or_never(theirs) + 1 <= _periods_or_never(ours),
}


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
    lines = [
        "# Strategy benchmark",
        "",
        f"`python -m bench.strategies` (seed {document['seed']}, our limiter's headroom "
        f"{document['headroom']:.0%} and half the downstream's burst, controller period {document['period_sec']:.0f} s). One hour of virtual "
        "time per run; the downstream is the dev stage's CRM (10 req/s, burst 10, 200 +- 50 ms). "
        "Goodput and net goodput are fractions of what the downstream's limit allowed over the hour; "
        "p50/p99 are end to end (arrival to success); reconverge is in controller periods (worst change); "
        "excess 429s are those answered while settling after a change, over all calls answered.",
        "",
    ]
    lines += overview_markdown(document) + [""]
    header = ("| strategy | goodput | net of 429s | 429s | p50 (s) | p99 (s) | reconverge | excess 429s "
              "| backlog at end | failed |")
    for scenario_spec in SCENARIOS:
        lines += [f"## {scenario_spec.name}: {scenario_spec.title}", "", header, "|" + "---|" * 10]
        for record in document["records"]:
            if record["scenario"] != scenario_spec.name:
                continue
            lines.append("| " + " | ".join([
                record["strategy"],
                f"{record['goodput_fraction_of_limit']:.3f}",
                f"{record['net_goodput_fraction_of_limit']:.3f}",
                _pct(record["throttled_share"]),
                _num(record["latency_p50_sec"]),
                _num(record["latency_p99_sec"]),
                _periods(record),
                "-" if record["excess_throttled_share"] is None else _pct(record["excess_throttled_share"]),
                str(record["backlog_at_end"]),
                str(record["failed"]),
            ]) + " |")
        lines.append("")
    targets = document["targets"]
    lines += [f"## Targets ({targets['strategy']}, the controller's default mode)", "",
              "| target | value | wanted | met |", "|---|---|---|---|"]
    for name, check in targets["checks"].items():
        value = check["value"]
        shown = ", ".join(f"{k}: {'yes' if v else 'no'}" for k, v in value.items()) if isinstance(value, dict) else value
        lines.append(f"| {name} | {shown} | {check['target']} | {'yes' if check['met'] else '**no**'} |")
    lines += ["", "Net goodput against the baselines:", "", "| scenario | ours | plain AIMD | Gradient2 |",
              "|---|---|---|---|"]
    for name, row in targets["net_goodput_versus_baselines"].items():
        lines.append(f"| {name} | {row['ours']:.3f} | {row['aimd_baseline']:.3f} | {row['gradient2_baseline']:.3f} |")
    lines += ["", f"Where {targets['strategy']} loses (another strategy better by more than 0.01 net goodput, "
              "10 % of p99 or one period of reconvergence):", "",
              "| scenario | figure | strategy | theirs | ours |", "|---|---|---|---|---|"]
    for loss in targets["where_ours_loses"]:
        lines.append(f"| {loss['scenario']} | {loss['figure']} | {loss['strategy']} | {_plain(loss['theirs'])} "
                     f"| {_plain(loss['ours'])} |")
    lines += ["", "## Headroom (adaptive_aimd, steady overload)", "",
              "| headroom | our rate / burst | jitter margin | goodput | 429s |", "|---|---|---|---|---|"]
    for row in document["headroom_sweep"]:
        lines.append(f"| {row['headroom']:.0%} | {row['limiter_rate_per_sec']:g} / {row['limiter_burst']} "
                     f"| {row['jitter_margin_sec']:.3f} s | {row['goodput_fraction_of_limit']:.3f} "
                     f"| {_pct(row['throttled_share'])} |")
    lines += ["", "Plots: " + ", ".join(f"[{c.name}]({c.name}.png)" for c in SCENARIOS) + "; costs: [cost.md](cost.md).", ""]
    return "\n".join(lines)


def overview_markdown(document: dict[str, Any]) -> list[str]:
    """Goodput and 429s of every strategy in every scenario, in one table (the README shows it)."""
    by = {(r["scenario"], r["strategy"]): r for r in document["records"]}
    lines = ["Goodput / 429 share, one hour each:", "",
             "| strategy | " + " | ".join(c.name for c in SCENARIOS) + " |", "|---" * (len(SCENARIOS) + 1) + "|"]
    for strategy_spec in STRATEGIES:
        cells = [f"{by[(c.name, strategy_spec.name)]['goodput_fraction_of_limit']:.3f} / "
                 f"{_pct(by[(c.name, strategy_spec.name)]['throttled_share'])}" for c in SCENARIOS]
        name = f"**{strategy_spec.name}**" if strategy_spec.ours else strategy_spec.name
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


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

    colors = {s.name: plt.get_cmap("tab10")(index) for index, s in enumerate(STRATEGIES)}
    for scenario_spec in SCENARIOS:
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


def _plain(value: float | None) -> str:
    return "never" if value is None else f"{value:g}"


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.2f} %"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _periods(record: dict[str, Any]) -> str:
    if record["reconverged"] is None:
        return "-"
    if not record["reconverged"]:
        return "never"
    return f"{record['reconverge_periods']:.2f}"


if __name__ == "__main__":
    raise SystemExit(main())
