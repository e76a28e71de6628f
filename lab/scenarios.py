"""The benchmark's scenarios: one downstream like the dev stage's CRM (10 req/s, burst 10, about
200 ms per call), and seven ways the world treats it over an hour.

Each scenario lists its `changes`: the moments after which the benchmark measures how long each
strategy takes to settle again (see `lab.run`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lab.downstream import DownstreamModel, Latency
from lab.workload import Arrivals

__all__ = ["CRM", "LATENCY_MS", "LIMIT_RPS", "SCENARIOS", "UNKNOWN_LIMIT", "Scenario", "scenario"]

# The dev stage's CRM (cdk.json): its contract and the latency the plan assumes.
LIMIT_RPS = 10.0
LATENCY_MS = 200.0
CRM = DownstreamModel(rate_per_sec=LIMIT_RPS, burst=10, concurrency=8, latency=Latency("uniform", LATENCY_MS, 50.0))
HOUR_SEC = 3600.0


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    arrivals: Arrivals
    downstream: DownstreamModel = field(default_factory=lambda: CRM)
    duration_sec: float = HOUR_SEC
    changes: tuple[tuple[float, str], ...] = ()
    # What the plan is made from: the downstream's advertised contract and expected latency.
    advertised_limit_rps: float = LIMIT_RPS
    advertised_burst: int = 10
    expected_latency_ms: float = LATENCY_MS
    timeout_sec: float = 5.0
    # False: the downstream publishes no limit; `advertised_limit_rps` is then only the ceiling an
    # operator is sure of, and the inner loop discovers the real one from a seed below it.
    limit_known: bool = True
    # How many executions of the workflow run at once, each with its share of the arrivals and the
    # same Map concurrency; they share the one downstream (and our one limiter).
    executions: int = 1


_HALVED_THEN_RESTORED = replace(CRM, capacity_changes=((1215.0, 0.5), (2415.0, 1.0)))
_HALVING_CHANGES = ((1215.0, "capacity halved"), (2415.0, "capacity restored"))

SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        name="steady_overload",
        title="Steady overload: 30 req/s offered to a 10 req/s limit for an hour",
        arrivals=Arrivals(rate_per_sec=3 * LIMIT_RPS),
    ),
    Scenario(
        name="capacity_halved",
        title="Capacity halved at 20:15 (10 -> 5 req/s), restored at 40:15; 30 req/s offered",
        arrivals=Arrivals(rate_per_sec=3 * LIMIT_RPS),
        downstream=_HALVED_THEN_RESTORED,
        changes=_HALVING_CHANGES,
    ),
    # The same change, from a downstream that says so: every answer carries its current limit (as
    # `RateLimit-Policy: 5;w=1` would). Without it, no strategy can both draw no 429 in any 10 s
    # window while capacity is halved and notice within a minute that it came back: only a call
    # above the halved rate can tell, and while it is still halved that call is refused.
    Scenario(
        name="capacity_halved_published",
        title="Capacity halved at 20:15 and restored at 40:15 as above, by a downstream that publishes its limit",
        arrivals=Arrivals(rate_per_sec=3 * LIMIT_RPS),
        downstream=replace(_HALVED_THEN_RESTORED, publishes_limit=True),
        changes=_HALVING_CHANGES,
    ),
    Scenario(
        name="latency_creep",
        title="Latency creeps from 200 to 800 ms (10:00-50:00); 4 calls served at once; 30 req/s offered",
        arrivals=Arrivals(rate_per_sec=3 * LIMIT_RPS),
        downstream=DownstreamModel(
            rate_per_sec=LIMIT_RPS, burst=10, concurrency=4, latency=Latency("uniform", LATENCY_MS, 50.0),
            latency_ramp=(600.0, 3000.0, 4.0),
        ),
        changes=((3000.0, "latency stops growing"),),
    ),
    Scenario(
        name="outage",
        title="A 60-second outage at 20:15 (503 with Retry-After); 7 req/s offered",
        arrivals=Arrivals(rate_per_sec=0.7 * LIMIT_RPS),
        downstream=DownstreamModel(
            rate_per_sec=LIMIT_RPS, burst=10, concurrency=8, latency=Latency("uniform", LATENCY_MS, 50.0),
            outages=((1215.0, 1275.0),),
        ),
        changes=((1275.0, "outage over"),),
    ),
    Scenario(
        name="many_executions",
        title="Ten executions at once share the CRM: 30 req/s offered across them, each Map at the setting in force",
        arrivals=Arrivals(rate_per_sec=3 * LIMIT_RPS),
        executions=10,
    ),
    Scenario(
        name="bursty",
        title="Bursts: 20 s at 40 req/s every 2 minutes, 2 req/s between (8.3 req/s on average)",
        arrivals=Arrivals(rate_per_sec=2.0, burst_rate_per_sec=4 * LIMIT_RPS, burst_sec=20.0, every_sec=120.0),
    ),
)


# Apart from SCENARIOS because only a strategy that discovers a rate is meant for it (the others are
# run through it by the benchmark all the same, `bench.strategies.BENCH_SCENARIOS`): the real limit is
# 10 req/s, and all the operator knows is that it is below 50.
UNKNOWN_LIMIT = Scenario(
    name="unknown_limit",
    title="Unknown limit: 10 req/s in truth, configured only as 'below 50'; 30 req/s offered",
    arrivals=Arrivals(rate_per_sec=3 * LIMIT_RPS),
    advertised_limit_rps=5 * LIMIT_RPS,
    advertised_burst=10,
    limit_known=False,
)


def scenario(name: str) -> Scenario:
    for candidate in (*SCENARIOS, UNKNOWN_LIMIT):
        if candidate.name == name:
            return candidate
    raise ValueError(f"no scenario {name!r}; known: {[s.name for s in SCENARIOS]}")
