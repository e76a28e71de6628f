"""Benchmark: what our own deployed workflows cost per downstream call, counted from their runs on the emulator.

    .venv/bin/python -m bench.workflow_costs [--out bench/results]

`lab/costs.py` prices designs from per-call counts written down by hand (the seed's design: one
Standard transition and a Lambda per item). This prices the app's own workflows by the same
function, on the same work (one downstream call), from what their executions did: it deploys the
app into the embedded emulator, runs each use case's driver, and counts per call the downstream saw

- Standard state transitions: every `*StateEntered` event of every execution the run started (a
  retried Task enters once but is billed per attempt: its retries are counted from the
  `TaskScheduled` events beyond the first of each state entered; a Distributed Map's child
  executions run inside the parent here, and their states are counted where the history shows them);
- Lambda invocations (the emulator records each), and one limiter write per caller invocation (a
  refused take is a failed conditional write, which DynamoDB bills too);
- SQS requests, for the buffer: send, receive and delete per message (not batched by the emulator's
  poller as the real one may: an upper bound).

Lambda duration is priced with the lab's `CallProfile` (0.27 s a call at 256 MB), not the emulator's
clock, so the only measured figures are counts (they vary by a few per cent between runs: a retry
here, a parked order there). It writes `results/workflow_costs.md` and
`workflow_costs.json` next to the seed's row and the recommended design's, and says where ours cost
more. Runs in about a minute (the deploy is most of it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lambdas"))

from lab.costs import Architecture, cost_per_million_calls, naive, recommended  # noqa: E402
from localcloud import app_assembly  # noqa: E402
from localcloud.drivers import credentials, crm_batch, crm_segment_large, legacy, moderation, payments  # noqa: E402
from localcloud.emulator.cloud import LocalCloud  # noqa: E402
from localcloud.referee.downstream_simulator import PROFILES, DownstreamSimulator  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# What each workflow's states do beyond the one Task a call needs (read from its ASL file).
WHAT_THE_TRANSITIONS_BUY = {
    "crm_batch_email": "the user's CRM record before the e-mail, and the Map's own states",
    "crm_segment_large": "reading the segment, the Map Run, writing the results and checking the failures",
    "payments": "the order's states, the breaker check, the stock reservation, the Parallel follow-ups",
    "ugc_moderation": "a model slot leased and released around every call, the scores gathered, the verdict",
    "legacy_buffer": "the publish workflow's record write and enqueue, before the queue's cheap delivery",
}


@dataclass(frozen=True)
class Counted:
    """What one use case's run did, and the downstream calls it made."""

    use_case: str
    label: str
    downstream_calls: int
    executions: int
    transitions: int
    lambda_invocations: int
    limiter_writes: int
    sqs_requests: int

    def architecture(self) -> Architecture:
        per_call = 1 / self.downstream_calls
        return Architecture(
            f"ours_{self.use_case}", self.label, "standard" if self.executions else "none",
            transitions_per_call=self.transitions * per_call,
            lambda_invocations_per_call=self.lambda_invocations * per_call,
            limiter_writes_per_call=self.limiter_writes * per_call,
            sqs_requests_per_call=self.sqs_requests * per_call,
        )


def executions_of(cloud: LocalCloud) -> set[str]:
    sfn = cloud.client("stepfunctions")
    return {execution["executionArn"]
            for machine in sfn.list_state_machines()["stateMachines"]
            for execution in sfn.list_executions(stateMachineArn=machine["stateMachineArn"])["executions"]}


def transitions_of(cloud: LocalCloud, execution_arn: str) -> int:
    sfn = cloud.client("stepfunctions")
    return billed_transitions([event for page in sfn.get_paginator("get_execution_history").paginate(
        executionArn=execution_arn) for event in page["events"]])


def billed_transitions(events: list[Mapping[str, Any]]) -> int:
    """State transitions as Standard bills them, from an execution's history: each state entered, and each
    retry of a Task (a Task state is entered once, and scheduled once per attempt)."""
    entered = sum(1 for event in events if event["type"].endswith("StateEntered"))
    scheduled = sum(1 for event in events if event["type"] == "TaskScheduled")
    tasks_entered = sum(1 for event in events if event["type"] == "TaskStateEntered")
    return entered + max(0, scheduled - tasks_entered)


# The functions that take a limiter token per invocation (a caller, the authorizer, the buffer's consumer).
TOKEN_TAKERS = ("Caller", "PaymentAuthorizer", "LegacyConsumer")


def count(cloud: LocalCloud, use_case: str, label: str, downstreams: tuple[DownstreamSimulator, ...],
          run: Callable[[], Any], *, sqs_requests_per_message: int = 0) -> Counted:
    """Run one use case and count what it did, from the emulator's records and the simulators'."""
    for simulator in downstreams:
        simulator.reset()
    started_executions, started_invocations = executions_of(cloud), len(cloud.lambda_runtime.invocations)
    run()
    new_executions = executions_of(cloud) - started_executions
    invocations = cloud.lambda_runtime.invocations[started_invocations:]
    calls = sum(len(simulator.requests) for simulator in downstreams)
    caller_invocations = sum(1 for i in invocations if any(part in i.function_name for part in TOKEN_TAKERS))
    return Counted(
        use_case, label, calls, len(new_executions),
        sum(transitions_of(cloud, arn) for arn in new_executions),
        len(invocations), caller_invocations, sqs_requests_per_message * calls,
    )


def measure() -> list[Counted]:
    simulators = {name: DownstreamSimulator(profile).start() for name, profile in PROFILES.items()}
    try:
        with tempfile.TemporaryDirectory(prefix="workflow-costs-") as work:
            cdk_out = app_assembly.synthesize({n: s.base_url for n, s in simulators.items()}, Path(work) / "cdk.out")
            with LocalCloud(work_dir=Path(work) / "localcloud") as cloud:
                stacks = cloud.deploy(cdk_out)
                credentials.provision_credentials(cloud, stacks, simulators)
                crm, model, mainframe = simulators["crm"], simulators["ai_model"], simulators["legacy_mainframe"]
                payment = tuple(simulators[name] for name in ("payment_gateway", "warehouse", "messaging", "ledger"))
                return [
                    count(cloud, "crm_batch_email", "our CrmBatchEmail: Standard, inline Map, a caller Lambda per call",
                          (crm,), lambda: crm_batch.run(cloud, stacks, crm, users=30)),
                    count(cloud, "crm_segment_large",
                          "our CrmSegmentLarge: Standard, Distributed Map batching 50 users a call",
                          (crm,), lambda: crm_segment_large.run(cloud, stacks, crm)),
                    count(cloud, "payments", "our PaymentAuthorization: Standard, an execution per order and its follow-ups",
                          payment, lambda: payments.run(cloud, stacks, payment[0])),
                    count(cloud, "ugc_moderation", "our UgcModeration: Standard, a model slot leased from ASL",
                          (model,), lambda: moderation.run(cloud, stacks, model)),
                    count(cloud, "legacy_buffer", "our LegacyBuffer: a publish workflow, then an SQS consumer",
                          (mainframe,), lambda: legacy.run(cloud, stacks, mainframe), sqs_requests_per_message=3),
                ]
    finally:
        for simulator in simulators.values():
            simulator.stop()


def report(counted: list[Counted]) -> str:
    seed, best = naive(), recommended()
    seed_total = cost_per_million_calls(seed)["total"]
    lines = [
        "# Our own workflows: AWS cost per million downstream calls, counted on the emulator",
        "",
        "Counts per downstream call from each use case's run (`bench/workflow_costs.py`); priced by `lab/costs.py`"
        " as the designs of `cost.md` are. Standard transitions include every state entered and each Task retry.",
        "",
        "| design | calls | transitions / call | Lambda invocations / call | limiter writes / call | SQS requests / call"
        " | $ per million calls | x the seed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows: list[tuple[Architecture, str]] = [(seed, "(by hand)"), (best, "(by hand)")]
    rows += [(c.architecture(), str(c.downstream_calls)) for c in counted]
    for architecture, calls in rows:
        total = cost_per_million_calls(architecture)["total"]
        lines.append(
            f"| {architecture.label} | {calls} | {architecture.transitions_per_call:.2f} |"
            f" {architecture.lambda_invocations_per_call:.2f} | {architecture.limiter_writes_per_call:.2f} |"
            f" {architecture.sqs_requests_per_call:.2f} | ${total:,.2f} | {total / seed_total:.2f} |")
    lines += ["", "Where ours costs more per call than the seed's design, and what for:", ""]
    for c in counted:
        bill = cost_per_million_calls(c.architecture())
        if bill["total"] <= seed_total:
            continue
        biggest = max((name for name in bill if name != "total"), key=lambda name: bill[name])
        lines.append(f"- {c.use_case}: {bill['total'] / seed_total:.1f}x, ${bill[biggest]:,.2f} of ${bill['total']:,.2f}"
                     f" is {biggest.replace('_', ' ')} ({c.architecture().transitions_per_call:.1f} transitions a call: "
                     f"{WHAT_THE_TRANSITIONS_BUY[c.use_case]})")
    lines += ["", "Not counted: a Distributed Map's child executions (the emulator runs them inside the parent and its"
              " history does not show their states), so crm_segment_large's figure is its parent's alone, a lower bound;"
              " each of its calls e-mails up to 50 users."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    counted = measure()
    text = report(counted)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "workflow_costs.md").write_text(text)
    (args.out / "workflow_costs.json").write_text(json.dumps([asdict(c) for c in counted], indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
