"""Benchmark: a large CRM segment e-mailed one request per user vs one request per batch, in one run.

    .venv/bin/python -m bench.batching [--users 10000] [--seed 1] [--out bench/results]

Both designs run in the throttling lab (`lab/`), in virtual time, with the same seed, against the
same model of the CRM (its contract from `cdk.json`: 10 req/s, burst 10) behind the same shared
limiter (`throttling.core.planning.limiter_settings`: 9.9 req/s, burst 5), the same Task retries
(read from the ASL files) and a Distributed Map at the concurrency both workflows read from the CRM's
tunables as deployed (Little's law over its expected latency: 2):

- per user: one child execution and one `POST /emails` per user (the path the large segment took
  before the batch endpoint made only this e-mail call and a `GET /users/<id>` before it, so it
  made twice these calls);
- batched: one child execution and one `POST /emails/batch` per `max_batch_size` users (50), the
  Distributed Map's ItemBatcher (`statemachines/crm_segment_large.asl.json`).

A batch request takes longer at the CRM than a single e-mail: modelled as 200 ms plus
`PER_RECIPIENT_MS` per recipient after the first (396 ms for 50), an assumption, not a measurement;
the figures below hold for any per-recipient cost up to the point where one batch takes longer
than the 50 single requests it replaces. Each run prints and writes to `--out`: calls made (each
one limiter token), 429s, time until the last user is e-mailed, and the AWS bill of the run
(`lab.costs` with `lab/prices.json`: Standard state transitions of the child executions on their
happy path, counted from the ASL files, Lambda requests and duration, one limiter write per
call): `batching.md` and `batching.json`. The same seed gives the same files. Not modelled: the
CRM deferring or rejecting single recipients of a batch (the e2e test covers those on the
emulator); each deferred recipient adds one request per batch it is in, and a wait.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lambdas"))

from throttling.core import planning  # noqa: E402
from throttling.core.rate_limiter import InMemoryRateLimiter, RatePolicy  # noqa: E402

from lab.costs import Architecture, CallProfile, cost_per_million_calls, load_prices  # noqa: E402
from lab.downstream import Downstream, DownstreamModel, Latency  # noqa: E402
from lab.engine import Simulation  # noqa: E402
from lab.ledger import SUCCEEDED, Ledger  # noqa: E402
from lab.mechanisms import Caller, MapState, StepFunctionsTask, workflow_retry_policy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STATEMACHINES = ROOT / "statemachines"
SINGLE_REQUEST_MS = 200.0  # the CRM's expected latency (cdk.json) for one e-mail
PER_RECIPIENT_MS = 4.0  # what each further recipient adds to a batch request (an assumption; see above)
NETWORK_AND_INVOKE_SEC = 0.07  # both ways on the network (lab default 10-30 ms each) and the Lambda invoke
HEADROOM = 0.01  # the stage's default (`throttling.core.planning`)


@dataclass(frozen=True)
class Design:
    """One way to e-mail a segment: how many users a request carries, and the child execution that sends it."""

    name: str
    label: str
    users_per_request: int
    asl_file: str
    task_state: str
    happy_path_states: tuple[str, ...]  # the child's states when its request succeeds at once: its transitions


def crm_contract() -> dict[str, Any]:
    """The CRM as the dev stage declares it: the benchmark's downstream follows the config, never a copy of it."""
    from stacks.config import merge_defaults

    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    return merge_defaults(context.get("defaults", {}), context["stages"]["dev"])["downstreams"]["crm"]


def designs(max_batch_size: int) -> tuple[Design, Design]:
    return (
        Design("per_user", "one child execution and one e-mail request per user", 1,
               "crm_batch_email.asl.json", "SendEmail", ("SendEmail", "Sent")),
        Design("batched", f"one child execution and one batch request per {max_batch_size} users (ItemBatcher)",
               max_batch_size, "crm_segment_large.asl.json", "SendBatch",
               ("StartBatch", "SendBatch", "DeadLetterRejected", "Tally", "AnyDeferred", "BatchDone")),
    )


def _states_of(asl_file: str) -> set[str]:
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("States"), dict):
                found.update(node["States"])
            for value in node.values():
                visit(value)

    visit(json.loads((STATEMACHINES / asl_file).read_text()))
    return found


def request_latency(users_in_request: int) -> Latency:
    return Latency("uniform", median_ms=SINGLE_REQUEST_MS + PER_RECIPIENT_MS * (users_in_request - 1), jitter_ms=50.0)


def simulate(design: Design, users: int, contract: dict[str, Any], *, seed: int) -> dict[str, Any]:
    """E-mail `users` users the design's way; what it took."""
    missing = set(design.happy_path_states) - _states_of(design.asl_file)
    if missing:
        raise ValueError(f"{design.asl_file} has no state(s) {sorted(missing)}: update the design's happy path")
    rate, burst = contract["rate_limit_per_sec"], contract["burst"]
    requests = math.ceil(users / design.users_per_request)
    latency = request_latency(design.users_per_request)
    # What the CRM's tunables are seeded with, and so what either workflow runs with until it is tuned.
    max_concurrency = planning.littles_law_concurrency(rate, contract["expected_latency_ms"])
    limiter_rate, limiter_burst = planning.limiter_settings(rate, burst, HEADROOM)
    # Generous: every request at the limiter's pace, ten times over.
    horizon_sec = 60 + 10 * requests / limiter_rate
    sim = Simulation(seed)
    ledger = Ledger(horizon_sec)
    downstream = Downstream(sim, DownstreamModel(rate_per_sec=rate, burst=burst, latency=latency))
    limiter = InMemoryRateLimiter(RatePolicy(limiter_rate, limiter_burst), sim.clock)
    caller = Caller(sim, downstream, ledger, limiter=limiter, timeout_sec=contract.get("timeout_sec", 5.0))
    task = StepFunctionsTask(sim, caller, ledger, workflow_retry_policy(STATEMACHINES / design.asl_file,
                                                                        design.task_state))
    distributed_map = MapState(sim, ledger, task, max_concurrency)
    for _ in range(requests):
        distributed_map.submit(ledger.arrive(0.0))
    sim.run(horizon_sec)
    done = [r for r in ledger.requests if r.state == SUCCEEDED]
    if len(done) != requests:
        raise RuntimeError(f"{design.name}: {requests - len(done)} of {requests} requests did not succeed within"
                           f" {horizon_sec:.0f} s of virtual time; the model or the horizon is wrong")
    calls = sum(ledger.calls)
    call_sec = latency.mean_ms / 1000 + NETWORK_AND_INVOKE_SEC
    architecture = Architecture(design.name, design.label, "standard",
                                transitions_per_call=len(design.happy_path_states) * requests / calls)
    per_million = cost_per_million_calls(architecture, load_prices(),
                                         CallProfile(call_sec=call_sec, rate_per_sec=limiter_rate))
    cost = {line: round(value * calls / 1_000_000, 4) for line, value in per_million.items()}
    return {
        "design": design.name,
        "label": design.label,
        "users": users,
        "users_per_request": design.users_per_request,
        "child_executions": requests,
        "calls": calls,
        "limiter_tokens": calls,
        "answered_429": sum(ledger.throttled),
        "max_concurrency": max_concurrency,
        "request_latency_ms": latency.mean_ms,
        "finish_sec": round(max(r.finished_at for r in done), 1),
        "state_transitions": len(design.happy_path_states) * requests,
        "cost_usd": cost,
    }


def compare(users: int, *, seed: int = 1) -> dict[str, Any]:
    contract = crm_contract()
    results = [simulate(design, users, contract, seed=seed) for design in designs(contract["max_batch_size"])]
    per_user, batched = results
    return {
        "users": users,
        "seed": seed,
        "crm": {"rate_limit_per_sec": contract["rate_limit_per_sec"], "burst": contract["burst"],
                "max_batch_size": contract["max_batch_size"]},
        "assumptions": {"single_request_ms": SINGLE_REQUEST_MS, "per_recipient_ms": PER_RECIPIENT_MS,
                        "headroom": HEADROOM},
        "designs": results,
        "batched_vs_per_user": {
            "calls": round(batched["calls"] / per_user["calls"], 4),
            "finish_sec": round(batched["finish_sec"] / per_user["finish_sec"], 4),
            "cost_usd": round(batched["cost_usd"]["total"] / per_user["cost_usd"]["total"], 4),
        },
    }


def as_markdown(report: dict[str, Any]) -> str:
    crm = report["crm"]
    lines = [
        f"# Batching: {report['users']:,} users e-mailed per user vs in batches (seed {report['seed']})",
        "",
        f"The CRM's contract: {crm['rate_limit_per_sec']:g} req/s, burst {crm['burst']}, batches of up to"
        f" {crm['max_batch_size']}; the shared limiter at 99 % of it. A batch request is modelled as"
        f" {report['assumptions']['single_request_ms']:g} ms plus {report['assumptions']['per_recipient_ms']:g} ms per"
        " further recipient (an assumption). Cost: us-east-1 list prices (`lab/prices.json`), for this run.",
        "",
        "| design | requests (limiter tokens) | 429s | Map concurrency | time to finish | state transitions |"
        " Step Functions | Lambda | DynamoDB limiter | total cost |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in report["designs"]:
        cost = result["cost_usd"]
        lines.append(
            f"| {result['label']} | {result['calls']:,} | {result['answered_429']} | {result['max_concurrency']} |"
            f" {result['finish_sec']:,.0f} s | {result['state_transitions']:,} | ${cost['step_functions']:.4f} |"
            f" ${cost['lambda_requests'] + cost['lambda_duration']:.4f} | ${cost['dynamodb_limiter']:.4f} |"
            f" ${cost['total']:.4f} |")
    ratio = report["batched_vs_per_user"]
    lines += ["", f"Batched / per user: {ratio['calls']:.2%} of the requests, {ratio['finish_sec']:.2%} of the time,"
                  f" {ratio['cost_usd']:.2%} of the cost.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batching", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10_000, help="users in the segment (default: 10000)")
    parser.add_argument("--seed", type=int, default=1, help="the lab's seed (default: 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where to write the results")
    args = parser.parse_args(argv)
    if args.users < 1:
        parser.error(f"--users must be at least 1, got {args.users}")
    report = compare(args.users, seed=args.seed)
    markdown = as_markdown(report)
    print(markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "batching.md").write_text(markdown)
    (args.out / "batching.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
