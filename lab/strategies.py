"""The ways to protect a downstream that the benchmark compares, on the same scenarios and seeds.

Every strategy sends each item through the same workflow Task (the deployed workflow's `Retry`,
then its wait-as-asked `Catch` loop: `lab.mechanisms.workflow_retry_policy`) in an inline Map; they
differ only in what holds the traffic back:

| name | Map MaxConcurrency | shared limiter | who moves them |
|---|---|---|---|
| retries_only | 0 (the inline Map's 40) | none | nobody: retries are the only brake |
| static_guess | 5, the seed's guess | none | nobody |
| static_littles_law | floor(limit x latency) = 2 | none | nobody |
| token_bucket | 5 | the advertised limit and burst | nobody |
| adaptive_aimd | the plan's | the plan's rate and burst | the project's controller, aimd mode |
| adaptive_gradient | the plan's | the plan's rate and burst | the project's controller, gradient mode |
| inner_loop | the plan's | the plan's rate and burst as the ceiling of the inner loop | the rate: every 429 at once (the shared limiter's inner loop); the concurrency: the project's controller, aimd mode, once a minute |
| aimd_baseline | the plan's | none | plain AIMD (+1 / x0.5 on 429s) |
| gradient2_baseline | the plan's | none | Netflix Gradient2 |
| static_guess+limiter | 5, the seed's guess | the plan's rate and burst | nobody |
| aimd_baseline+limiter | the plan's | the plan's rate and burst | plain AIMD, on the concurrency |
| gradient2_baseline+limiter | the plan's | the plan's rate and burst | Gradient2, on the concurrency |
| static_guess+inner_loop | 5, the seed's guess | the inner loop, as inner_loop's | the inner loop; nobody on the concurrency |
| aimd_baseline+inner_loop | the plan's | the inner loop, as inner_loop's | the inner loop; plain AIMD on the concurrency |
| gradient2_baseline+inner_loop | the plan's | the inner loop, as inner_loop's | the inner loop; Gradient2 on the concurrency |

The `+limiter` rows give a baseline the same shared limiter `adaptive_aimd` runs behind (9.9 req/s,
burst 5 for the CRM), and the `+inner_loop` rows the same limiter as `inner_loop` (its inner loop
included: every 429 and every published limit heard by the whole fleet), so the benchmark compares
like with like: without one, a concurrency controller cannot hold a rate limit at any setting, and
against the `+inner_loop` rows what ours adds is the controller on the concurrency alone. Retries only and Little's law get none: the first would be the
static guess with a wider Map, the second never reaches the planned rate (2 calls of 200 ms in flight).

"The plan" is `throttling.core.planning.plan_capacity` on the advertised limit and latency, with the
headroom of the run (the stage's default, 1 %, unless the run is given another). Its Map concurrency
is sized for a caller behind the shared limiter: 3 for the CRM, enough to spend every token at 300 ms
a call; `static_littles_law` takes its floor(limit x latency), 2, concurrency alone as the brake. The
controller's bounds and p99 threshold are `planning.controller_bounds` and `planning.p99_latency_threshold_ms` with
the control loop's defaults, as the control-loop stack gives them to a stage without a `control_loop`
block (concurrency 1 to 4x the Little's-law 2, rate 10 % to 100 % of the planned rate, burst scaled with the
rate, the p99 threshold at 5x the expected latency but never above the timeout).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from throttling.core import planning
from throttling.core.planning import DEFAULT_HEADROOM, CapacityPlan, plan_capacity

from lab.scenarios import Scenario

__all__ = ["HEADROOM", "STRATEGIES", "Strategy", "controller_bounds_for", "plan_for", "strategy"]

# What a deployed downstream keeps below its contract unless cdk.json says otherwise, so the
# benchmark measures the defaults we ship (its headroom sweep shows what other values would do).
HEADROOM = DEFAULT_HEADROOM
# The seed's Map concurrency for the CRM: 5 calls of 200 ms in flight (25 req/s for a 10 req/s limit).
SEED_MAP_CONCURRENCY = 5

ControllerKind = Literal["none", "aimd", "gradient", "plain_aimd", "gradient2"]
LimiterKind = Literal["none", "advertised", "planned", "adaptive"]


@dataclass(frozen=True)
class Strategy:
    name: str
    label: str
    map_concurrency: Literal["inline_max", "seed", "littles_law", "plan"]
    limiter: LimiterKind
    controller: ControllerKind

    @property
    def baseline_with_our_limiter(self) -> bool:
        """Not ours, behind the same limiter one of ours has: the fair comparison."""
        return not self.ours and self.limiter in ("planned", "adaptive")

    @property
    def ours(self) -> bool:
        """The project's controller drives it (a baseline may borrow our limiter, never our controller)."""
        return self.controller in ("aimd", "gradient")

    def initial_map_concurrency(self, plan: CapacityPlan) -> int:
        if self.map_concurrency == "inline_max":
            return 0
        if self.map_concurrency == "seed":
            return SEED_MAP_CONCURRENCY
        if self.map_concurrency == "littles_law":
            # Concurrency alone as the brake, with no limiter: the plan's floor, not its limiter-backed figure.
            return plan.littles_law_concurrency
        return plan.map_concurrency


STRATEGIES: tuple[Strategy, ...] = (
    Strategy("retries_only", "retries only", "inline_max", "none", "none"),
    Strategy("static_guess", "static Map concurrency 5 (a guess)", "seed", "none", "none"),
    Strategy("static_littles_law", "static concurrency by Little's law", "littles_law", "none", "none"),
    Strategy("token_bucket", "token bucket at the advertised limit", "seed", "advertised", "none"),
    Strategy("adaptive_aimd", "ours: adaptive, aimd mode", "plan", "planned", "aimd"),
    Strategy("adaptive_gradient", "ours: adaptive, gradient mode", "plan", "planned", "gradient"),
    Strategy("inner_loop", "ours: the limiter's inner loop, the controller (aimd) on concurrency", "plan", "adaptive",
             "aimd"),
    Strategy("aimd_baseline", "plain AIMD (baseline)", "plan", "none", "plain_aimd"),
    Strategy("gradient2_baseline", "Netflix Gradient2 (baseline)", "plan", "none", "gradient2"),
    Strategy("static_guess+limiter", "static Map concurrency 5 behind our limiter", "seed", "planned", "none"),
    Strategy("aimd_baseline+limiter", "plain AIMD behind our limiter", "plan", "planned", "plain_aimd"),
    Strategy("gradient2_baseline+limiter", "Netflix Gradient2 behind our limiter", "plan", "planned", "gradient2"),
    Strategy("static_guess+inner_loop", "static Map concurrency 5 behind our limiter's inner loop", "seed", "adaptive",
             "none"),
    Strategy("aimd_baseline+inner_loop", "plain AIMD behind our limiter's inner loop", "plan", "adaptive",
             "plain_aimd"),
    Strategy("gradient2_baseline+inner_loop", "Netflix Gradient2 behind our limiter's inner loop", "plan", "adaptive",
             "gradient2"),
)


def strategy(name: str) -> Strategy:
    for candidate in STRATEGIES:
        if candidate.name == name:
            return candidate
    raise ValueError(f"no strategy {name!r}; known: {[s.name for s in STRATEGIES]}")


def plan_for(scenario: Scenario, headroom: float = HEADROOM) -> CapacityPlan:
    return plan_capacity(scenario.advertised_limit_rps, scenario.expected_latency_ms,
                         burst=scenario.advertised_burst, headroom=headroom)


def controller_bounds_for(scenario: Scenario, headroom: float = HEADROOM) -> dict[str, float | int]:
    """The bounds the control-loop stack hands the controller for this downstream, by default."""
    return planning.controller_bounds(scenario.advertised_limit_rps, scenario.advertised_burst,
                                      scenario.expected_latency_ms, headroom)


def p99_threshold_ms(scenario: Scenario) -> float:
    """The p99 above which the controller slows down (aimd), as the stack sets it by default."""
    return planning.p99_latency_threshold_ms(scenario.expected_latency_ms, scenario.timeout_sec)
