"""`make demo`: synthesize the app with the CDK CLI, deploy it into the embedded emulator, and drive a smoke path.

Every downstream is a local simulator with its real rate limit, so what the demo prints is what the
deployed handlers did against a referee, not a mock's canned answer.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from localcloud import app_assembly
from localcloud.drivers import (
    control_loop,
    credentials,
    crm_batch,
    crm_segment_large,
    fair_queue,
    ingress,
    inner_loop,
    legacy,
    moderation,
    payments,
    tenants,
    tuning,
)
from localcloud.emulator.cloud import LocalCloud
from localcloud.emulator.deployer import DeployedStack
from localcloud.referee.downstream_simulator import PROFILES, DownstreamSimulator

ROOT = Path(__file__).resolve().parents[1]
STAGE = "dev"


def main() -> int:
    simulators = {name: DownstreamSimulator(profile).start() for name, profile in PROFILES.items()}
    try:
        cdk_out = synthesize({name: sim.base_url for name, sim in simulators.items()})
        with LocalCloud(work_dir=ROOT / ".demo" / "localcloud") as cloud:
            stacks = cloud.deploy(cdk_out)
            credentials.provision_credentials(cloud, stacks, simulators)  # as an operator does after a first deploy
            section("Deployed into the emulator")
            for stack in stacks.values():
                kinds = Counter(kind for t in stack.resource_types.values() if (kind := t.removeprefix("AWS::")))
                print(f"  {stack.name}: {len(stack.resource_types)} resources ({_counts(kinds)})")
            smoke(cloud, stacks, simulators)
    finally:
        for simulator in simulators.values():
            simulator.stop()
    return 0


def synthesize(base_urls: dict[str, str]) -> Path:
    section("Synthesizing with the CDK CLI (offline, cdk-nag on)")
    out = app_assembly.synthesize(base_urls, ROOT / ".demo" / "cdk.out", stage=STAGE)
    print(f"  {out.relative_to(ROOT)}: {', '.join(sorted(p.name for p in out.glob('*.template.json')))}")
    return out


def smoke(cloud: LocalCloud, stacks: dict[str, Any], simulators: dict[str, DownstreamSimulator]) -> None:
    callers = stacks[f"Throttling-{STAGE}-Workflows"].outputs
    section("1. Each deployed caller calls its downstream once")
    for name, simulator in simulators.items():
        result, error = invoke(cloud, callers[f"{_pascal(name)}CallerName"], {"path": f"/{name}/ping"})
        print(f"  {name:17} -> {result.get('status', error)} in {result.get('latency_ms', '?')} ms;"
              f" tunables in force {result.get('tunables_in_force')}")

    section("2. A burst of 15 CRM calls at once (the CRM admits 10/s, burst 10; our limiter plans 9.9/s, burst 5)")
    crm_caller = callers["CrmCallerName"]
    simulators["crm"].reset()
    with ThreadPoolExecutor(max_workers=15) as pool:
        outcomes = list(pool.map(lambda i: invoke(cloud, crm_caller, {"path": f"/users/{i}"}), range(15)))
    tally = Counter("200 OK" if error is None else result["errorType"] for result, error in outcomes)
    print(f"  outcomes: {dict(tally)}")
    waits = sorted({json.loads(r["errorMessage"]).get("retry_after_sec") for r, e in outcomes if e})
    if waits:
        print(f"  refused calls carry the wait for the workflow to honour, e.g. {waits[:3]} s")
    stats = simulators["crm"].stats()
    print(f"  the CRM answered {stats['by_status'].get(429, 0)} 429s and saw at most"
          f" {stats['max_in_1s_window_all']} requests in any 1 s window: the shared limiter refused the excess"
          f" before it left")

    section("3. The use cases, each against its downstream's simulator")
    for run in (run_crm_batch, run_crm_segment_large, run_moderation, run_model_slots, run_payments,
                run_payment_follow_ups, run_credentials, run_legacy, run_fair_queue, run_tenants, run_ingress,
                run_control_loop, run_inner_loop, run_inner_loop_published):
        print(f"  {run(cloud, stacks, simulators)}", flush=True)

    section("4. An operator tunes the CRM through SSM, then someone writes garbage")
    cloud.lambda_runtime.shutdown()  # one warm environment from here on, so its memory of the last good value shows
    for line in tune_then_break(cloud, crm_caller):
        print(f"  {line}", flush=True)

    section("Done")
    print(f"  {len(cloud.lambda_runtime.invocations)} invocations ran the deployed handler code;"
          f" function logs are in {cloud.work_dir.relative_to(ROOT) / 'logs'}")


# -- one line per use case, from what its driver returns ---------------------------------------------

Simulators = Mapping[str, DownstreamSimulator]


def run_crm_batch(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Simulators, *,
                  users: int = 30) -> str:
    """Use case 1 once, and what the CRM saw."""
    crm = simulators["crm"]
    run = crm_batch.run(cloud, stacks, crm, users=users)
    result, stats = run.execution, run.crm_stats
    if result.status != "SUCCEEDED":
        return f"crm batch e-mail: execution {result.status} ({result.error}: {result.cause})"
    report = result.output
    return (
        f"crm batch e-mail: {report['items']} items, {report['succeeded']} sent, {report['failed']} failed,"
        f" {_peak(stats, crm.profile, 'the CRM')}, {stats['by_status'].get(429, 0)} answered 429"
    )


def run_crm_segment_large(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Simulators, *,
                          users: int = 120) -> str:
    """Use case 1 for a large segment once: users from a CSV export in S3, sent in batches, and what the CRM saw."""
    crm = simulators["crm"]
    run = crm_segment_large.run(cloud, stacks, crm, users=users)
    result, stats, counted = run.execution, run.crm_stats, run.users
    if result.status != "SUCCEEDED":
        return f"crm large segment: execution {result.status} ({result.error}: {result.cause})"
    report = result.output
    return (
        f"crm large segment: {counted['users']} users from s3 in {report['batches']} batches of up to"
        f" {report['max_items_per_batch']}, {counted['sent']} sent, {counted['dead_lettered']} dead-lettered,"
        f" {stats['total_requests']} requests to the CRM (one per user would be {counted['users']}),"
        f" {_peak(stats, crm.profile, 'the CRM')}, {stats['by_status'].get(429, 0)} answered 429,"
        f" results in s3://{report['results']['Bucket']}/{report['results']['Key']}"
    )


def run_moderation(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Simulators, *,
                   uploads: int = 10) -> str:
    """Use case 3 once: how the uploads were decided, and the most requests the model API saw in any 1 s window."""
    model = simulators["ai_model"]
    run = moderation.run(cloud, stacks, model, uploads=uploads)
    decisions = [(r.output or {}).get("decision") for r in run.results.values() if r.status == "SUCCEEDED"]
    failed = len(run.results) - len(decisions)
    stats = run.model_stats
    return (
        f"ugc moderation: {run.uploads} uploads, {decisions.count('approved')} approved,"
        f" {decisions.count('rejected')} rejected, {decisions.count('needs_review')} needs review"
        + (f", {failed} failed" if failed else "")
        + f", {_peak(stats, model.profile, 'the AI model')}, {stats['by_status'].get(429, 0)} answered 429"
    )


def run_model_slots(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Simulators, *,
                    uploads: int = 20) -> str:
    """The concurrency lock: a burst of uploads, the most requests the model API ever had in flight at once (its
    contract allows max_in_flight), and the leases left once every execution ended (0: each call gave its slot back)."""
    model = simulators["ai_model"]
    run = moderation.run(cloud, stacks, model, uploads=uploads)
    ended = sum(1 for r in run.results.values() if r.status == "SUCCEEDED")
    decisions = Counter((r.output or {}).get("decision") for r in run.results.values() if r.status == "SUCCEEDED")
    return (
        f"model slots: {run.uploads} uploads at once ({run.model_stats['total_requests']} model calls),"
        f" at most {run.most_in_flight} in flight at the AI model at any instant (it takes"
        f" {model.profile.max_concurrency}), {ended} of {run.uploads} executions ended ({dict(sorted(decisions.items()))}),"
        f" {len(run.leases_left)} leases left, {run.model_stats['by_status'].get(429, 0)} answered 429"
    )


def run_payments(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Simulators, *,
                 orders: int = 12, declined: int = 2, parked: int = 2) -> str:
    """Use case 2 once: how the orders ended, and the most requests the gateway saw in any 1 s window."""
    gateway = simulators["payment_gateway"]
    run = payments.run(cloud, stacks, gateway, orders=orders, declined=declined, parked=parked)
    ended = [(r.status, (r.output or {}).get("status") if r.status == "SUCCEEDED" else r.error)
             for r in run.results.values()]
    paid, still_parked = ended.count(("SUCCEEDED", "paid")), ended.count(("SUCCEEDED", "parked"))
    declined_count = ended.count(("FAILED", "PaymentDeclined"))
    others = len(ended) - paid - still_parked - declined_count
    stats = run.gateway_stats
    return (
        f"payments: {run.orders} orders, {paid} paid, {declined_count} declined"
        + (f" ({run.parked} parked while the breaker was open, {run.resumed} resumed once it closed)"
           if run.parked else "")
        + (f", {still_parked} still parked" if still_parked else "")
        + (f", {others} failed otherwise" if others else "")
        + f", {_peak(stats, gateway.profile, 'the gateway')}, {stats['by_status'].get(429, 0)} answered 429"
    )


def run_payment_follow_ups(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Simulators, *,
                           orders: int = 6) -> str:
    """Use case 2's Parallel follow-ups: orders paid after all three, then one order during a ledger outage, and
    what the warehouse, the messaging provider and the gateway received for it."""
    run = payments.run_follow_ups(cloud, stacks, simulators, orders=orders)
    requests = run.failed_requests
    undone = ("warehouse released" if ("/inventory/releases", 200) in requests["warehouse"]
              else "warehouse not released")
    kept = "confirmation kept" if ("/messages", 200) in requests["messaging"] else "no confirmation"
    paths = [path for path, status in run.gateway_requests if status == 200]
    ended = "cancelled" if run.failed_result.error == "PaymentFailed" else f"ended {run.failed_result.error}"
    peaks = ", ".join(f"{name} {peak}" for name, peak in run.peaks.items())
    return (
        f"payment follow-ups: {run.orders} orders, {run.paid} paid after inventory, confirmation and ledger in"
        f" parallel (peak req/s {peaks}; {run.answered_429} answered 429); with the {run.down} down, 1 order"
        f" {ended}: {undone}, {kept}, authorized {paths.count('/authorize')} and voided {paths.count('/void')}"
        " at the gateway"
    )


def run_credentials(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Simulators, *,
                    messages: int = 5) -> str:
    """The authenticated downstreams: an OAuth2 token shared by the messaging caller's calls, and a rotation of the
    ledger's API key under its warm caller."""
    run = credentials.run(cloud, stacks, simulators, messages=messages)
    statuses = " then ".join(str(status) for status in run.rotated_call_statuses)
    return (
        f"authenticated downstreams: {run.messages} messages on {run.tokens_issued} OAuth2 token"
        f"{'s' if run.tokens_issued != 1 else ''} ({run.messaging_refused} refused); the ledger's API key rotated"
        f" under a warm caller: {statuses} (the secret read again once); {run.leaked} credentials in the logs"
    )


def run_legacy(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Simulators, *,
               records: int = 10) -> str:
    """Use case 4 once: the records published and delivered, and what the mainframe saw."""
    mainframe = simulators["legacy_mainframe"]
    run = legacy.run(cloud, stacks, mainframe, records=records)
    result = run.execution
    if result.status != "SUCCEEDED":
        return f"legacy integration: execution {result.status} ({result.error}: {result.cause})"
    return (
        f"legacy integration: {result.output['published']} records, {run.delivered} delivered,"
        f" {run.dead_letters} in DLQ,"
        f" {_peak(run.mainframe_stats, mainframe.profile, 'the mainframe')}"
    )


def run_fair_queue(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Simulators, *,
                   noisy_records: int = 20, quiet_records: int = 3) -> str:
    """Issue 16's noisy neighbour on the legacy buffer: how long the quiet tenant waited behind the flood."""
    run = fair_queue.run(cloud, stacks, simulators["legacy_mainframe"], noisy_records=noisy_records,
                         quiet_records=quiet_records)
    return fair_queue_line(run, fair_queue.quiet_tenants_alarm_threshold_sec(cloud))


def fair_queue_line(run: fair_queue.FairQueueRun, alarm_threshold_sec: float) -> str:
    quiet, noisy = len(run.quiet_waits_sec), len(run.noisy_waits_sec)
    lost = quiet + noisy - run.delivered - run.dead_letters - run.left_in_queue
    return (f"fair queue: a noisy tenant's {noisy} records, then a quiet tenant's {quiet}, through POST"
            f" /legacy-records: the quiet tenant's last reached the mainframe {run.quiet_worst_wait_sec:.1f} s"
            f" after it was posted (its alarm: {alarm_threshold_sec:g} s), behind {run.noisy_accepted_before(-1)}"
            f" of the noisy ones; {run.delivered} delivered, {run.dead_letters} in DLQ, {lost} lost")


def run_tenants(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Simulators) -> str:
    """Issue 16's noisy neighbour on the CRM: how far behind the noisy tenant's calls the quiet tenant's were done,
    with the two tenants' shares in the CRM's tunables and without them (one bucket, as before tenants)."""
    with tuning.operator_tuning(cloud, stage=STAGE) as tune:
        with_shares = tenants.run(cloud, stacks, simulators["crm"], tune, shares=True)
        without = tenants.run(cloud, stacks, simulators["crm"], tune, shares=False)
    # The seed is back in SSM; the lines after this one run under it, not under what warm callers cached.
    tenants.wait_for_tunables_cache(cloud, stacks)
    return tenants_line(with_shares, without)


def tenants_line(with_shares: tenants.TenantRun, without: tenants.TenantRun) -> str:
    users = sum(len(ids) for ids in with_shares.users.values())
    emailed = sum(len(with_shares.emailed(tenant)) for tenant in with_shares.users)
    answered_429 = sum(run.crm_stats["by_status"].get(429, 0) for run in (with_shares, without))
    return (f"tenants: a quiet tenant's {len(with_shares.calls_of(tenants.QUIET))} CRM calls, started behind a noisy"
            f" tenant's {len(with_shares.calls_of(tenants.NOISY))}, were all done after"
            f" {with_shares.quiet_done_after_noisy_calls} of the noisy ones with shares (quiet {tenants.QUIET_SHARE:g},"
            f" noisy {tenants.NOISY_SHARE:g}), after {without.quiet_done_after_noisy_calls} without; the noisy tenant"
            f" refused {len(with_shares.refusals_of(tenants.NOISY))} times, the quiet one"
            f" {len(with_shares.refusals_of(tenants.QUIET))}; {emailed} of {users} users e-mailed,"
            f" {len(with_shares.dead_letters)} in DLQ, {answered_429} answered 429")


def run_ingress(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Simulators) -> str:
    """A payment, its repeat, a malformed payment and a legacy record through the API: what it answered."""
    run = ingress.run(cloud, stacks)
    return (
        f"ingress: POST /payments {run.first.status} then {run.state.json().get('status')} at GET /payments/{{id}},"
        f" repeated {run.repeat.status} ({run.repeat.json().get('status')}), malformed {run.malformed.status};"
        f" POST /legacy-records {run.queued.status} then {run.record_status}"
    )


def run_control_loop(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Simulators, *,
                     users: int = 12) -> str:
    """A 429 alarm for the CRM, the controller's answer in SSM, and the next batch at the CRM."""
    run = control_loop.run(cloud, stacks, simulators["crm"], users=users)
    return (
        f"control loop: the CRM's 429-rate alarm (20 % of 600 calls) -> {run.decision['action']} to"
        f" max_concurrency {run.document['max_concurrency']} in SSM (the rate, {run.document['rate_per_sec']} req/s,"
        " is the inner loop's ceiling and stays);"
        f" calls in flight at the CRM {run.peak_in_flight_before} before, {run.peak_in_flight_after} after"
    )


def run_inner_loop(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Simulators, *,
                   users: int = 40) -> str:
    """The CRM halves its capacity mid-batch: what the shared limiter let through once its inner loop followed."""
    run = inner_loop.run_capacity_halved(cloud, stacks, simulators["crm"], users=users, halve_after_requests=30)
    if run.execution.status != "SUCCEEDED":
        return f"inner loop: execution {run.execution.status} ({run.execution.error}: {run.execution.cause})"
    return (
        f"inner loop: the CRM halved to {_number(run.rate_after_per_sec)} req/s after {run.sent_before} requests;"
        f" from {run.settle_sec:g} s later our limiter sent {run.sent_settled_per_sec:.1f} req/s,"
        f" {run.throttled_settled} of {run.sent_settled} answered 429 ({run.throttled_total} in all);"
        f" {run.execution.output['succeeded']} of {len(run.users)} users e-mailed, {len(run.dead_letters)} dead letters"
    )


def run_inner_loop_published(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Simulators, *,
                             users: int = 40) -> str:
    """The same halving by a CRM that publishes its limit in every answer: believed from the next answer."""
    run = inner_loop.run_capacity_halved(cloud, stacks, simulators["crm"], users=users, halve_after_requests=30,
                                         settle_sec=1.0, publishes_limit=True)
    if run.execution.status != "SUCCEEDED":
        return f"inner loop, limit published: execution {run.execution.status} ({run.execution.error}: {run.execution.cause})"
    stored = "nothing" if run.published_per_sec_stored is None else f"{_number(run.published_per_sec_stored)} req/s"
    return (
        f"inner loop, limit published: the CRM said {_number(run.rate_after_per_sec)} req/s after {run.sent_before}"
        f" requests and the bucket stored {stored}; from {run.settle_sec:g} s later our limiter sent"
        f" {run.sent_settled_per_sec:.1f} req/s, {run.throttled_after_change} 429s after the change;"
        f" {run.execution.output['succeeded']} of {len(run.users)} users e-mailed, {len(run.dead_letters)} dead letters"
    )


def tune_then_break(cloud: LocalCloud, crm_caller: str) -> list[str]:
    """An operator's tuning of the CRM, then two bad values: what Parameter Store and the caller made of each."""
    run = tuning.run(cloud, crm_caller, stage=STAGE,
                     on_wait=lambda sec: print(f"  (waiting {sec:.0f} s for the tunables cache)", flush=True))
    refused = ("refused by Parameter Store (the tunables' AllowedPattern)" if run.not_json_refused
               else "stored (Parameter Store should have refused it)")
    return [
        f"after tuning: {run.after_tuning}",
        f"text that is not JSON: {refused}",
        f"after a rate that is not a number: {run.after_unusable} (last good value kept, error logged)",
    ]


def invoke(cloud: LocalCloud, function_name: str, event: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    response = cloud.client("lambda").invoke(FunctionName=function_name, Payload=json.dumps(event))
    return json.loads(response["Payload"].read()), response.get("FunctionError")


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _counts(kinds: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))


def _peak(stats: Mapping[str, Any], profile: Any, where: str) -> str:
    """The most requests a downstream saw in any 1 s window, beside what its bucket allows in one: a full burst
    plus a second's refill, so a peak above the rate is within the contract up to that."""
    allowed = profile.burst + profile.rate_per_sec
    return (f"peak {stats['max_in_1s_window_all']} in a 1 s window at {where} (its {_number(profile.rate_per_sec)}/s"
            f" bucket with burst {profile.burst} allows {_number(allowed)})")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _pascal(snake: str) -> str:
    return "".join(part.title() for part in snake.split("_"))


if __name__ == "__main__":
    sys.exit(main())
