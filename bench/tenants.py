"""Benchmark: many tenants and priority classes on one downstream, in virtual time, against two baselines in the same run.

    .venv/bin/python -m bench.tenants [--seed 1] [--seeds 5] [--out bench/results]

Three limiters over the same core (`throttling.core.hierarchical_rate`), the same downstream model and the same
arrivals (one seeded stream per flow, so a flow's arrivals do not change when another flow is added):

- `ours`: each tenant a bucket of its share under the downstream's bucket, borrowing the idle room (half the
  depth), the priority classes' thresholds (the tunables' defaults);
- `single_bucket`: today's limiter: one bucket, tenants and classes ignored;
- `hard_partition`: each tenant held to its share, no borrowing (`borrow_depth` 0), the same classes.

The downstream: 100 req/s with a burst of 100, 200 +- 50 ms per call (`lab.downstream`); the limiter runs at
`planning.limiter_settings` of it (99 req/s, burst 50). Each flow (a tenant's requests of one class) arrives as a
Poisson process into its own queue; callers in flight take tokens for its head requests through the token gate's
own decisions (`TokenTake`: a refusal's Retry-After is waited out, then the limiter is asked again), and their
number follows the flow's load (Little's law over 100 ms per take, at least 1): a tenant that offers ten times
more runs ten times as many callers, as a Lambda fleet does. An admitted call goes out at once; a 429 puts the
request back at the head of its queue. A request is never dropped: what a run does not serve by its end is
counted against goodput.

Scenarios (each 120 s of arrivals, figures from 10 s on, then 30 s for the queues to drain):

- `noisy_neighbour`: ten tenants of equal shares; one offers 10x its share, nine offer half their share each
  (Poisson: a steady rate, not a constant one). Quiet tenants' goodput against their demand, their p99 latency
  (arrival to answer) against the same tenants with the noisy one absent (`solo`, same limiter, same seeds).
- `weighted_backlog`: four tenants of shares 0.4, 0.3, 0.2, 0.1, each offering half the limit (2x in all, so
  the same number of callers each). Jain's index of `goodput / fair share` among them (the weighted max-min
  fair split of the limiter's rate: every one is backlogged); the same index is given for `noisy_neighbour`,
  over its backlogged tenants (the noisy one alone, so 1 by definition).
- `priority_overload`: three tenants of equal shares, each offering critical 10 %, standard 30 % and batch
  60 % of the limit: 3x in all. Critical goodput against its demand, each class's share of what was shed,
  over-admission of the global limit (admissions a plain GCRA at the limiter's policy would refuse, replayed).
- `weighted_borrowing`: shares 0.4 and 0.1 each offering the whole limit, half the shares idle: Jain's index
  as above (the fair split gives the idle half 4:1).
- `small_noisy_neighbour` (and `small_solo`): the noisy neighbour on the CRM as deployed (10 req/s, burst 10:
  our limiter's burst is 5, a tenth's is 1).
- `returning_tenant`: the noisy neighbour's ten tenants, one of the quiet ones idle until 60 s and then offering
  twice its share: seconds from its return to the end of the first 2 s window from which on every 2 s window
  serves it at least 95 % of its share.

Goodput of a quiet tenant is per request (served by the end of the run / arrived from 10 s to 120 s); every other
goodput is throughput from 10 s to 120 s against the demand arriving then.

The figures are the worst of the seeds (`--seeds`, default 5). Writes `tenants.md` and `tenants.json` to `--out`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lambdas"))

from throttling.core import names, planning  # noqa: E402
from throttling.core.hierarchical_rate import InMemoryHierarchicalRateLimiter, TenantShares  # noqa: E402
from throttling.core.rate_limiter import InMemoryRateLimiter, RatePolicy  # noqa: E402
from throttling.runtime.token_gate import GateKnobs, GateOutcome, TokenTake  # noqa: E402

from lab.downstream import OK, Downstream, DownstreamModel, Latency  # noqa: E402
from lab.engine import Simulation  # noqa: E402
from lab.ledger import percentile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DOWNSTREAM = DownstreamModel(rate_per_sec=100.0, burst=100, concurrency=64, latency=Latency("uniform", 200.0, 50.0))
LIMITER_RATE, LIMITER_BURST = planning.limiter_settings(DOWNSTREAM.rate_per_sec, DOWNSTREAM.burst, 0.01)
LIMITER = RatePolicy(LIMITER_RATE, LIMITER_BURST)
# The CRM as the dev stage declares it (10 req/s, burst 10): the limiter's burst is 5, a tenant's of a tenth is 1.
CRM = DownstreamModel(rate_per_sec=10.0, burst=10, concurrency=8, latency=Latency("uniform", 200.0, 50.0))
ARRIVALS_SEC, WARMUP_SEC, DRAIN_SEC = 120.0, 10.0, 30.0
TAKE_SEC = 0.1  # what one caller's take holds it for, for Little's law of the callers in flight
RETURN_AT_SEC = 60.0
REGAIN_WINDOW_SEC = 2.0
WAKE_UP_JITTER_SEC = 0.05  # handlers/authorize_payment.py's
STRATEGIES = ("ours", "single_bucket", "hard_partition")
CRITICAL, STANDARD, BATCH = names.PRIORITY_CLASSES
TARGETS = {
    "quiet_goodput": ">= 0.98 of demand",
    "quiet_p99_vs_solo": "<= 1.2x",
    "jain_backlogged": ">= 0.95",
    "critical_goodput": ">= 0.995 of demand",
    "over_admission": "0",
    "regain_sec": "<= 5 s",
}


@dataclass(frozen=True)
class Flow:
    """One tenant's requests of one class: Poisson at `rate_per_sec` from `start_sec` until the arrivals end."""

    tenant: str
    priority: str | None
    rate_per_sec: float
    start_sec: float = 0.0

    @property
    def name(self) -> str:
        return self.tenant if self.priority is None else f"{self.tenant}/{self.priority}"


@dataclass(frozen=True)
class Scenario:
    name: str
    shares: dict[str, float]
    flows: tuple[Flow, ...]
    downstream: DownstreamModel = DOWNSTREAM

    @property
    def limiter(self) -> RatePolicy:
        """Our limiter in front of the downstream, as the stage plans it (1 % rate headroom, half its burst)."""
        return RatePolicy(*planning.limiter_settings(self.downstream.rate_per_sec, self.downstream.burst, 0.01))


def _share_rate(share: float) -> float:
    return share * LIMITER_RATE


def scenarios() -> dict[str, Scenario]:
    tenths = {f"t{n}": 0.1 for n in range(10)}
    quiet = tuple(Flow(f"t{n}", None, 0.5 * _share_rate(0.1)) for n in range(1, 10))
    small_rate = RatePolicy(*planning.limiter_settings(CRM.rate_per_sec, CRM.burst, 0.01)).rate_per_sec
    small_quiet = tuple(Flow(f"t{n}", None, 0.5 * 0.1 * small_rate) for n in range(1, 10))
    weights = {"w40": 0.4, "w30": 0.3, "w20": 0.2, "w10": 0.1}
    thirds = {f"p{n}": 1 / 3 for n in range(3)}
    mix = ((CRITICAL, 0.1), (STANDARD, 0.3), (BATCH, 0.6))
    returning = tuple(Flow(f"t{n}", None, 0.5 * _share_rate(0.1)) for n in range(2, 10))
    return {
        "noisy_neighbour": Scenario("noisy_neighbour", tenths, (Flow("t0", None, 10 * _share_rate(0.1)), *quiet)),
        "solo": Scenario("solo", tenths, quiet),
        "weighted_backlog": Scenario("weighted_backlog", weights,
                                     tuple(Flow(t, None, 0.5 * LIMITER_RATE) for t in weights)),
        "priority_overload": Scenario("priority_overload", thirds, tuple(
            Flow(t, priority, part * LIMITER_RATE) for t in thirds for priority, part in mix)),
        "returning_tenant": Scenario("returning_tenant", tenths, (
            Flow("t0", None, 10 * _share_rate(0.1)), *returning,
            Flow("t1", None, 2 * _share_rate(0.1), start_sec=RETURN_AT_SEC))),
        "weighted_borrowing": Scenario("weighted_borrowing", {"w40": 0.4, "w10": 0.1, **{f"idle{n}": 0.1 for n in range(5)}},
                                       (Flow("w40", None, LIMITER_RATE), Flow("w10", None, LIMITER_RATE))),
        "small_noisy_neighbour": Scenario("small_noisy_neighbour", tenths,
                                          (Flow("t0", None, small_rate), *small_quiet), downstream=CRM),
        "small_solo": Scenario("small_solo", tenths, small_quiet, downstream=CRM),
    }


def limiter_shares(scenario: Scenario, strategy: str) -> TenantShares:
    borrow = 0.0 if strategy == "hard_partition" else 0.5
    return TenantShares(scenario.shares, default_share=0.1, borrow_depth=borrow)


@dataclass
class _Queue:
    flow: Flow
    callers: int
    waiting: deque = field(default_factory=deque)  # arrival times
    busy: int = 0
    arrived: int = 0
    served: int = 0
    latencies: list[float] = field(default_factory=list)
    served_at: list[float] = field(default_factory=list)
    admitted_at: list[float] = field(default_factory=list)


def simulate(scenario: Scenario, strategy: str, seed: int) -> dict[str, Any]:
    """One run: per flow, what arrived (from WARMUP_SEC on), what was served, latencies; the admissions; 429s."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; one of {list(STRATEGIES)}")
    sim = Simulation(seed)
    downstream = Downstream(sim, scenario.downstream)
    limiter = InMemoryHierarchicalRateLimiter(scenario.limiter, limiter_shares(scenario, strategy), sim.clock)
    # The payment authorizer's knobs: waiters woken by one refusal retry a few ms apart, not at one instant.
    knobs = GateKnobs(wake_up_jitter_sec=WAKE_UP_JITTER_SEC)
    admissions: list[float] = []
    throttled = [0]
    queues = [_Queue(flow, max(1, math.ceil(flow.rate_per_sec * TAKE_SEC))) for flow in scenario.flows]

    def ask(queue: _Queue, arrived_at: float, take: TokenTake) -> None:
        flow = queue.flow
        if strategy == "single_bucket":
            decision = limiter.try_acquire().decision
        else:
            decision = limiter.try_acquire(tenant=flow.tenant, priority=flow.priority).decision
        step = take.next(decision, sim.now, sim.now)
        if isinstance(step, GateOutcome):
            assert step.admitted, "callers wait as long as it takes: no deadline"
            admissions.append(sim.now)
            queue.admitted_at.append(sim.now)
            downstream.send(30.0, answered, queue, arrived_at)
            queue.busy -= 1
            serve(queue)
        else:
            sim.after(step.seconds, ask, queue, arrived_at, take)

    def answered(status: int, latency_sec: float, retry_after: Any, published_per_sec: Any, queue: _Queue,
                 arrived_at: float) -> None:
        if status != OK:
            throttled[0] += 1
            queue.waiting.appendleft(arrived_at)
            serve(queue)
            return
        if arrived_at >= WARMUP_SEC:
            queue.served += 1
            queue.latencies.append(sim.now - arrived_at)
        queue.served_at.append(sim.now)

    def serve(queue: _Queue) -> None:
        while queue.waiting and queue.busy < queue.callers:
            queue.busy += 1
            arrived_at = queue.waiting.popleft()
            take = TokenTake(knobs, started_at=sim.now, time_left_sec=math.inf, stale_after_sec=math.inf,
                             rng=sim.rng(f"jitter/{queue.flow.name}"))
            ask(queue, arrived_at, take)

    def arrive(queue: _Queue) -> None:
        if sim.now >= WARMUP_SEC:
            queue.arrived += 1
        queue.waiting.append(sim.now)
        serve(queue)
        gap = sim.rng(f"arrivals/{queue.flow.name}").expovariate(queue.flow.rate_per_sec)
        if sim.now + gap < ARRIVALS_SEC:
            sim.after(gap, arrive, queue)

    for queue in queues:
        first = queue.flow.start_sec + sim.rng(f"arrivals/{queue.flow.name}").expovariate(queue.flow.rate_per_sec)
        if first < ARRIVALS_SEC:
            sim.at(first, arrive, queue)
    sim.run(ARRIVALS_SEC + DRAIN_SEC)
    return {
        "flows": {q.flow.name: {"tenant": q.flow.tenant, "priority": q.flow.priority, "arrived": q.arrived,
                                "served": q.served, "latencies": q.latencies, "served_at": q.served_at,
                                "admitted_at": q.admitted_at}
                  for q in queues},
        "admissions": admissions,
        "throttled": throttled[0],
        "limiter": scenario.limiter,
    }


def over_admitted(admissions: Sequence[float], policy: RatePolicy = LIMITER) -> int:
    """Admissions a plain GCRA at the limiter's policy would have refused, replayed in order: the global limit's excess."""
    from throttling.core.clock import FakeClock

    clock = FakeClock(0.0)
    replay = InMemoryRateLimiter(policy, clock)
    refused = 0
    for at in sorted(admissions):
        clock.set(at)
        refused += not replay.try_acquire().allowed
    return refused


def max_min_fair(demands: dict[str, float], weights: dict[str, float], capacity: float) -> dict[str, float]:
    """The weighted max-min fair split of `capacity` among `demands` (water-filling)."""
    fair, left, active = {}, capacity, dict(demands)
    while active:
        total_weight = sum(weights[t] for t in active)
        level = left / total_weight
        capped = {t: d for t, d in active.items() if d <= level * weights[t]}
        if not capped:
            fair.update({t: level * weights[t] for t in active})
            return fair
        for tenant, demand in capped.items():
            fair[tenant] = demand
            left -= demand
            del active[tenant]
    return fair


def jain(values: Sequence[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values)) if values else 1.0


def _in_window(flow: dict[str, Any]) -> int:
    """Calls of the flow served between WARMUP_SEC and ARRIVALS_SEC: its throughput there, whenever they arrived."""
    return sum(WARMUP_SEC <= at < ARRIVALS_SEC for at in flow["served_at"])


def _per_tenant(run: dict[str, Any]) -> dict[str, dict[str, float]]:
    tenants: dict[str, dict[str, float]] = {}
    for flow in run["flows"].values():
        entry = tenants.setdefault(flow["tenant"], {"arrived": 0, "served": 0})
        entry["arrived"] += flow["arrived"]
        entry["served"] += _in_window(flow)
    return tenants


def jain_backlogged(run: dict[str, Any], scenario: Scenario) -> float:
    """Jain's index of goodput / weighted max-min fair share among the tenants the fair split holds below demand."""
    window = ARRIVALS_SEC - WARMUP_SEC
    tenants = _per_tenant(run)
    demands = {t: e["arrived"] / window for t, e in tenants.items() if e["arrived"]}
    fair = max_min_fair(demands, scenario.shares, scenario.limiter.rate_per_sec)
    backlogged = [t for t in demands if demands[t] > fair[t] * 1.0001]
    return jain([tenants[t]["served"] / window / fair[t] for t in backlogged])


def regain_sec(run: dict[str, Any], tenant_flow: str, share_rate: float) -> float | None:
    """Seconds from RETURN_AT_SEC to the end of the first REGAIN_WINDOW_SEC window from which on every such window
    admits the flow at least 95 % of `share_rate` (None: never)."""
    served = run["flows"][tenant_flow]["admitted_at"]
    windows = int((ARRIVALS_SEC - RETURN_AT_SEC) / REGAIN_WINDOW_SEC)
    counts = [0] * windows
    for at in served:
        index = int((at - RETURN_AT_SEC) / REGAIN_WINDOW_SEC)
        if 0 <= index < windows:
            counts[index] += 1
    last_short = max((i for i, c in enumerate(counts) if c < 0.95 * share_rate * REGAIN_WINDOW_SEC), default=-1)
    if last_short >= windows - 1:
        return None
    return (last_short + 2) * REGAIN_WINDOW_SEC


def figures(runs: dict[str, dict[str, Any]], scenario_set: dict[str, Scenario]) -> dict[str, Any]:
    """One strategy's figures for one seed."""
    noisy, solo = runs["noisy_neighbour"], runs["solo"]
    quiet = [name for name in noisy["flows"] if name != "t0"]
    quiet_goodput = min(noisy["flows"][q]["served"] / noisy["flows"][q]["arrived"] for q in quiet)
    p99_noisy = percentile(sorted(x for q in quiet for x in noisy["flows"][q]["latencies"]), 99)
    p99_solo = percentile(sorted(x for q in quiet for x in solo["flows"][q]["latencies"]), 99)
    priority = runs["priority_overload"]
    by_class: dict[str, dict[str, int]] = {}
    for flow in priority["flows"].values():
        entry = by_class.setdefault(flow["priority"], {"arrived": 0, "served": 0})
        entry["arrived"] += flow["arrived"]
        entry["served"] += _in_window(flow)
    shed = {name: entry["arrived"] - entry["served"] for name, entry in by_class.items()}
    total_shed = sum(shed.values())
    return {
        "quiet_goodput": quiet_goodput,
        "quiet_p99_sec": p99_noisy,
        "solo_p99_sec": p99_solo,
        "quiet_p99_vs_solo": p99_noisy / p99_solo if p99_solo else None,
        "noisy_goodput_rps": _in_window(noisy["flows"]["t0"]) / (ARRIVALS_SEC - WARMUP_SEC),
        "jain_noisy_backlogged": jain_backlogged(noisy, scenario_set["noisy_neighbour"]),
        "jain_backlogged": jain_backlogged(runs["weighted_backlog"], scenario_set["weighted_backlog"]),
        "critical_goodput": by_class[CRITICAL]["served"] / by_class[CRITICAL]["arrived"],
        "class_goodput": {name: e["served"] / e["arrived"] for name, e in by_class.items()},
        "shed_share": {name: (shed[name] / total_shed if total_shed else 0.0) for name in shed},
        "over_admission": max(over_admitted(run["admissions"], run["limiter"]) / max(1, len(run["admissions"]))
                              for run in runs.values()),
        "jain_weighted_borrowing": jain_backlogged(runs["weighted_borrowing"], scenario_set["weighted_borrowing"]),
        "weighted_borrowing_utilization": sum(_in_window(flow) for flow in runs["weighted_borrowing"]["flows"].values())
        / (ARRIVALS_SEC - WARMUP_SEC) / scenario_set["weighted_borrowing"].limiter.rate_per_sec,
        "small_quiet_goodput": min(runs["small_noisy_neighbour"]["flows"][q]["served"] /
                                   runs["small_noisy_neighbour"]["flows"][q]["arrived"] for q in quiet),
        "small_quiet_p99_vs_solo": _p99(runs["small_noisy_neighbour"], quiet) / _p99(runs["small_solo"], quiet),
        "downstream_429s": sum(run["throttled"] for run in runs.values()),
        "regain_sec": regain_sec(runs["returning_tenant"], "t1", 0.1 * LIMITER_RATE),
    }


HIGHER_IS_BETTER = {"quiet_goodput": True, "quiet_p99_vs_solo": False, "jain_backlogged": True,
                    "jain_noisy_backlogged": True, "critical_goodput": True, "over_admission": False,
                    "regain_sec": False, "downstream_429s": False, "noisy_goodput_rps": True,
                    "jain_weighted_borrowing": True, "weighted_borrowing_utilization": True, "small_quiet_goodput": True, "small_quiet_p99_vs_solo": False}


def _p99(run: dict[str, Any], flows: Sequence[str]) -> float:
    return percentile(sorted(x for name in flows for x in run["flows"][name]["latencies"]), 99)


def worst_of(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    worst: dict[str, Any] = {}
    for name, higher in HIGHER_IS_BETTER.items():
        values = [f[name] for f in per_seed]
        if any(v is None for v in values):
            worst[name] = None  # never reached on some seed: the worst there is
        else:
            worst[name] = min(values) if higher else max(values)
    worst["class_goodput"] = {c: min(f["class_goodput"][c] for f in per_seed) for c in per_seed[0]["class_goodput"]}
    worst["shed_share"] = {c: min(f["shed_share"][c] for f in per_seed) if c == BATCH else
                           max(f["shed_share"][c] for f in per_seed) for c in per_seed[0]["shed_share"]}
    return worst


def benchmark(seeds: Sequence[int]) -> dict[str, Any]:
    scenario_set = scenarios()
    results: dict[str, Any] = {}
    for strategy in STRATEGIES:
        per_seed = []
        for seed in seeds:
            runs = {name: simulate(scenario, strategy, seed) for name, scenario in scenario_set.items()}
            per_seed.append(figures(runs, scenario_set))
        results[strategy] = {"worst": worst_of(per_seed),
                             "seeds": [{k: v for k, v in f.items()} for f in per_seed]}
    return {"seeds": list(seeds), "limiter": {"rate_per_sec": LIMITER_RATE, "burst": LIMITER_BURST},
            "downstream": {"rate_per_sec": DOWNSTREAM.rate_per_sec, "burst": DOWNSTREAM.burst},
            "targets": TARGETS, "strategies": results}


def _met(name: str, value: float | None) -> str:
    if value is None:
        return "no"
    return "yes" if {
        "quiet_goodput": value >= 0.98, "quiet_p99_vs_solo": value <= 1.2, "jain_backlogged": value >= 0.95,
        "critical_goodput": value >= 0.995, "over_admission": value == 0, "regain_sec": value <= 5.0,
    }[name] else "no"


def _show(value: Any, kind: str = "num") -> str:
    if value is None:
        return "never"
    if kind == "pct":
        return f"{100 * value:.2f} %"
    if kind == "sec":
        return f"{value:.2f} s"
    return f"{value:.3f}"


ROWS = (
    ("quiet_goodput", "noisy neighbour: quiet tenants' goodput / demand (lowest tenant)", "num"),
    ("quiet_p99_vs_solo", "noisy neighbour: quiet tenants' p99 latency / without the noisy one", "num"),
    ("jain_backlogged", "weighted backlog: Jain's index among backlogged tenants", "num"),
    ("critical_goodput", "priority overload 3x: critical goodput / demand", "pct"),
    ("over_admission", "over-admission of the global limit (every scenario)", "pct"),
    ("regain_sec", "returning idle tenant: seconds to its full share", "sec"),
)


def markdown(document: dict[str, Any]) -> str:
    strategies = document["strategies"]
    lines = [
        "# Tenants and priority classes on one downstream (lab, virtual time)",
        "",
        f"Worst of {len(document['seeds'])} seeds ({', '.join(map(str, document['seeds']))}). Downstream "
        f"{document['downstream']['rate_per_sec']:g} req/s, burst {document['downstream']['burst']}; limiter "
        f"{document['limiter']['rate_per_sec']:g} req/s, burst {document['limiter']['burst']}. `python -m bench.tenants`; "
        "the module docstring says what each scenario does.",
        "",
        "| figure | target | " + " | ".join(STRATEGIES) + " | ours meets it |",
        "|---|---|" + "---|" * len(STRATEGIES) + "---|",
    ]
    for name, label, kind in ROWS:
        values = [_show(strategies[s]["worst"][name], kind) for s in STRATEGIES]
        lines.append(f"| {label} | {TARGETS[name]} | " + " | ".join(values) +
                     f" | {_met(name, strategies['ours']['worst'][name])} |")
    lines += ["", "More figures (worst of the seeds):", "",
              "| figure | " + " | ".join(STRATEGIES) + " |", "|---|" + "---|" * len(STRATEGIES)]
    extra = (
        ("quiet p99 latency with the noisy tenant", lambda w: _show(None if w.get("quiet_p99_sec") is None else w["quiet_p99_sec"], "sec")),
        ("noisy tenant's goodput, req/s (its share: 9.9)", lambda w: f"{w['noisy_goodput_rps']:.1f}"),
        ("noisy neighbour: Jain's index among backlogged tenants (the noisy one alone)", lambda w: _show(w["jain_noisy_backlogged"])),
        ("priority overload: standard goodput / demand", lambda w: _show(w["class_goodput"][STANDARD], "pct")),
        ("priority overload: batch goodput / demand", lambda w: _show(w["class_goodput"][BATCH], "pct")),
        ("priority overload: batch's share of what was shed (lowest)", lambda w: _show(w["shed_share"][BATCH], "pct")),
        ("downstream 429s (all scenarios)", lambda w: str(w["downstream_429s"])),
        ("weighted borrowing (0.4 and 0.1 backlogged, half idle): Jain's index", lambda w: _show(w["jain_weighted_borrowing"])),
        ("weighted borrowing: both tenants' goodput / the limit", lambda w: _show(w["weighted_borrowing_utilization"])),
        ("noisy neighbour on the CRM (10 req/s): quiet goodput / demand", lambda w: _show(w["small_quiet_goodput"])),
        ("noisy neighbour on the CRM (10 req/s): quiet p99 / without the noisy one",
         lambda w: _show(w["small_quiet_p99_vs_solo"])),
    )
    for label, show in extra:
        row = []
        for s in STRATEGIES:
            worst = dict(strategies[s]["worst"])
            if label.startswith("quiet p99"):
                worst["quiet_p99_sec"] = max(f["quiet_p99_sec"] for f in strategies[s]["seeds"])
            row.append(show(worst))
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    document = benchmark(range(args.seed, args.seed + args.seeds))
    text = markdown(document)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tenants.md").write_text(text)
    (args.out / "tenants.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
