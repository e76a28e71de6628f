"""The shared limiter's inner loop on the emulator: the CRM batch runs while the CRM halves its capacity.

Once the CRM has answered `halve_after_requests` requests of the run (the run is in full flow,
whatever the machine's speed), its simulator is set to half its rate and burst, as its control API
does for a downstream whose capacity changes; the deployed workflow's callers report each 429 to the
shared limiter, which blocks and cuts for all of them. With `publishes_limit` the CRM also states its
limit in every answer (`RateLimit-Policy`), which the callers report before any signal, so the halving
is met by the next answer rather than by 429s. What comes back is what the referee recorded, counted
before and after the change, how the run ended, and what the bucket held of the published limit.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from localcloud.drivers.common import ExecutionResult, drain_queue, layer_stack, run_execution
from localcloud.drivers.crm_batch import crm_batch_outputs, seed_segment
from localcloud.emulator.cloud import LocalCloud
from localcloud.emulator.deployer import DeployedStack
from localcloud.referee.downstream_simulator import DownstreamSimulator, RecordedRequest

# The CRM's limiter bucket: the downstream's name, one shard at its rate (`rate_limiter_key`'s format).
CRM_BUCKET_KEYS = ("crm#0",)


@dataclass(frozen=True)
class CapacityHalvedRun:
    """One CRM batch across a capacity halving, as the CRM's referee saw it.

    `sent_*` count every request the CRM received (what our limiter let through), `throttled_*` the
    429s among them; `*_before` up to the change, `*_after_change` from it, `*_settled` from `settle_sec`
    after it to the last request, whose span is `settled_span_sec`. `dead_letters` are the users the run
    gave up on. `published_per_sec_stored` is the published rate the CRM's bucket held at the end of the
    run (None: none was written).
    """

    execution: ExecutionResult
    users: tuple[str, ...]
    emailed: dict[str, list[str | None]]
    dead_letters: list[dict]
    halve_after_requests: int
    settle_sec: float
    rate_before_per_sec: float
    rate_after_per_sec: float
    burst_after: int
    sent_before: int
    throttled_before: int
    sent_settled: int
    throttled_settled: int
    settled_span_sec: float
    throttled_total: int
    publishes_limit: bool = False
    sent_after_change: int = 0
    throttled_after_change: int = 0
    published_per_sec_stored: float | None = None

    @property
    def sent_settled_per_sec(self) -> float:
        return self.sent_settled / self.settled_span_sec if self.settled_span_sec > 0 else 0.0


def run_capacity_halved(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], crm: DownstreamSimulator, *,
                        users: int = 60, halve_after_requests: int = 40, settle_sec: float = 4.0,
                        publishes_limit: bool = False) -> CapacityHalvedRun:
    """Run the CRM batch for `users` users; halve the CRM's capacity once it has seen `halve_after_requests`.

    With `publishes_limit`, the CRM publishes its limit in every answer, before and after the halving.
    The CRM's limiter bucket is emptied before and after (a cut or a publication would otherwise slow
    what runs next), and the simulator is back at its own profile afterwards.
    """
    outputs = crm_batch_outputs(stacks)
    limiter_table = layer_stack(stacks, "SharedLimits").outputs["RateLimiterTableName"]
    segment_id = f"halved-{uuid.uuid4().hex[:8]}"
    user_ids = tuple(f"user-{i:03d}" for i in range(users))
    seed_segment(cloud, outputs["segments_table"], segment_id, list(user_ids))
    drain_queue(cloud, outputs["dead_letter_queue_url"])
    _forget_bucket(cloud, limiter_table)
    crm.reset()
    profile = crm.profile.merged_with({"publishes_limit": publishes_limit})
    crm.set_profile(profile)
    halved = profile.merged_with({"rate_per_sec": profile.rate_per_sec * 0.5, "burst": max(1, round(profile.burst * 0.5))})
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            running = pool.submit(run_execution, cloud, outputs["state_machine_arn"], {"segment_id": segment_id},
                                  timeout_sec=300)
            while len(crm.requests) < halve_after_requests and not running.done():
                time.sleep(0.05)
            crm.set_profile(halved)
            # On the simulator's own clock (time.monotonic unless a test gave it another), as its records are.
            change_at = time.monotonic()
            execution = running.result()
        requests = crm.requests
        published = _stored_published_per_sec(cloud, limiter_table)
    finally:
        crm.reset()
        _forget_bucket(cloud, limiter_table)
    dead = drain_queue(cloud, outputs["dead_letter_queue_url"])
    before = [r for r in requests if r.monotonic_sec < change_at]
    after = [r for r in requests if r.monotonic_sec >= change_at]
    settled = [r for r in requests if r.monotonic_sec >= change_at + settle_sec]
    span = (settled[-1].monotonic_sec - (change_at + settle_sec)) if settled else 0.0
    return CapacityHalvedRun(
        execution=execution,
        users=user_ids,
        emailed=_emailed(requests),
        dead_letters=dead,
        halve_after_requests=halve_after_requests,
        settle_sec=settle_sec,
        rate_before_per_sec=profile.rate_per_sec,
        rate_after_per_sec=halved.rate_per_sec,
        burst_after=halved.burst,
        sent_before=len(before),
        throttled_before=sum(1 for r in before if r.status == 429),
        sent_settled=len(settled),
        throttled_settled=sum(1 for r in settled if r.status == 429),
        settled_span_sec=span,
        throttled_total=sum(1 for r in requests if r.status == 429),
        publishes_limit=publishes_limit,
        sent_after_change=len(after),
        throttled_after_change=sum(1 for r in after if r.status == 429),
        published_per_sec_stored=published,
    )


def _emailed(requests: list[RecordedRequest]) -> dict[str, list[str | None]]:
    """user id -> the idempotency keys of the CRM's 2xx answers to `POST /emails` for that user."""
    sent: dict[str, list[str | None]] = {}
    for request in requests:
        if request.method == "POST" and request.path == "/emails" and 200 <= request.status < 300:
            sent.setdefault(request.body["user_id"], []).append(request.headers.get("Idempotency-Key"))
    return sent


def _stored_published_per_sec(cloud: LocalCloud, table_name: str) -> float | None:
    """The published rate the CRM's bucket holds (its shards' shares added up); None when none holds one."""
    dynamodb = cloud.client("dynamodb")
    shares = []
    for key in CRM_BUCKET_KEYS:
        item = dynamodb.get_item(TableName=table_name, Key={"pk": {"S": key}}, ConsistentRead=True).get("Item", {})
        if "published_rate" in item:
            shares.append(float(item["published_rate"]["N"]))
    return sum(shares) if shares else None


def _forget_bucket(cloud: LocalCloud, table_name: str) -> None:
    dynamodb = cloud.client("dynamodb")
    for key in CRM_BUCKET_KEYS:
        dynamodb.delete_item(TableName=table_name, Key={"pk": {"S": key}})
