"""A noisy tenant and a quiet one share the legacy buffer: how long each waits for the mainframe.

The noisy tenant floods `POST /legacy-records`, then the quiet one posts a few. Through the API each
record carries its tenant as `MessageGroupId`, so the queue is a fair queue (the emulator models SQS's
reordering: `localcloud.emulator.patches.sqs`); `group_ids=False` sends the same records straight to
the queue without one, as the API did before tenants, for the baseline. Shared by the e2e test and
the demo.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from localcloud.drivers.common import POLL_INTERVAL_SEC, discard_messages, queue_depth, record_statuses
from localcloud.drivers.ingress import api_key, local_api
from localcloud.drivers.legacy import legacy_outputs
from localcloud.emulator.cloud import LocalCloud
from localcloud.emulator.deployer import DeployedStack
from localcloud.emulator.patches.sqs import AGE_OF_OLDEST_MESSAGE_IN_QUIET_GROUPS, publish_fair_queue_metrics
from localcloud.referee.downstream_simulator import DownstreamSimulator

NOISY_CLIENT = "example-standard-client"
QUIET_CLIENT = "example-free-client"


@dataclass(frozen=True)
class FairQueueRun:
    """Each record's wait, from its post's answer to the mainframe's acceptance (None: never delivered)."""

    group_ids: bool
    noisy_waits_sec: dict[str, float | None]
    quiet_waits_sec: dict[str, float | None]
    dead_letters: int
    left_in_queue: int
    # The emulator's ApproximateAgeOfOldestMessageInQuietGroups, sampled while the records drained.
    max_quiet_groups_age_sec: float
    # Record ids in the order the mainframe accepted them.
    accepted_order: tuple[str, ...] = ()

    def noisy_accepted_before(self, quiet_index: int) -> int:
        """How many noisy records the mainframe accepted before the quiet tenant's `quiet_index`-th (0: first,
        -1: last) accepted record."""
        quiet_positions = [i for i, record_id in enumerate(self.accepted_order) if record_id in self.quiet_waits_sec]
        position = quiet_positions[quiet_index]
        return sum(1 for record_id in self.accepted_order[:position] if record_id in self.noisy_waits_sec)

    @property
    def quiet_worst_wait_sec(self) -> float:
        waits = self.quiet_waits_sec.values()
        return float("inf") if None in waits else max(waits, default=0.0)  # type: ignore[type-var]

    @property
    def delivered(self) -> int:
        return sum(w is not None for w in (*self.noisy_waits_sec.values(), *self.quiet_waits_sec.values()))


def run(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], mainframe: DownstreamSimulator, *,
        noisy_records: int = 30, quiet_records: int = 3, group_ids: bool = True) -> FairQueueRun:
    """Flood from the noisy tenant, then a few from the quiet one; wait until every record is delivered or
    dead-lettered (or the time is up)."""
    outputs = legacy_outputs(stacks)
    for queue in ("queue_url", "dead_letter_queue_url"):
        discard_messages(cloud, outputs[queue])
    mainframe.reset()
    prefix = uuid.uuid4().hex[:6]
    noisy = [f"noisy-{prefix}-{i:03d}" for i in range(noisy_records)]
    quiet = [f"quiet-{prefix}-{i:03d}" for i in range(quiet_records)]
    sent_at = _post(cloud, stacks, outputs["queue_url"], [(NOISY_CLIENT, noisy), (QUIET_CLIENT, quiet)], group_ids)

    total = noisy_records + quiet_records
    deadline = time.monotonic() + 2.5 * total / max(0.1, mainframe.profile.rate_per_sec) + 15
    max_quiet_age = 0.0
    while True:
        published = publish_fair_queue_metrics(cloud.account_id, cloud.region)
        queue_name = outputs["queue_url"].rsplit("/", 1)[-1]
        max_quiet_age = max(max_quiet_age, published.get(queue_name, {}).get(AGE_OF_OLDEST_MESSAGE_IN_QUIET_GROUPS, 0))
        statuses = record_statuses(cloud, outputs["records_table"], noisy + quiet)
        delivered = sum(1 for item in statuses.values() if item.get("status") == "delivered")
        dead = queue_depth(cloud, outputs["dead_letter_queue_url"])
        if delivered + dead >= total or time.monotonic() > deadline:
            break
        time.sleep(POLL_INTERVAL_SEC)
    accepted_at = {r.body["record_id"]: r.wall_time_epoch_sec for r in mainframe.requests
                   if r.path == "/records" and r.status < 300 and isinstance(r.body, dict)}
    order = tuple(sorted((i for i in accepted_at if i in sent_at), key=accepted_at.__getitem__))

    def waits(ids: list[str]) -> dict[str, float | None]:
        return {i: (accepted_at[i] - sent_at[i]) if i in accepted_at else None for i in ids}

    return FairQueueRun(group_ids, waits(noisy), waits(quiet), dead, queue_depth(cloud, outputs["queue_url"]),
                        max_quiet_age, order)


def quiet_tenants_alarm_threshold_sec(cloud: LocalCloud) -> float:
    """The deployed quiet-tenants alarm's threshold (seconds), as CloudWatch holds it."""
    alarms = cloud.client("cloudwatch").describe_alarms()["MetricAlarms"]
    (alarm,) = [a for a in alarms if a["AlarmName"].endswith("-LegacyConsumerQueue-QuietTenantsMessageAge")]
    return float(alarm["Threshold"])


def _post(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], queue_url: str,
          tenants: list[tuple[str, list[str]]], group_ids: bool) -> dict[str, float]:
    """Queue each tenant's records in turn; record id -> when its queueing was answered (epoch seconds)."""
    api, sqs = local_api(cloud, stacks), cloud.client("sqs")
    sent_at: dict[str, float] = {}
    for client, record_ids in tenants:
        headers = {"x-api-key": api_key(cloud, stacks, client)}
        for record_id in record_ids:
            record: dict[str, Any] = {"record_id": record_id, "payload": {"tenant_of_record": client}}
            if group_ids:
                answer = api.request("POST", "/legacy-records", body=record, headers=headers)
                if answer.status != 202:
                    raise RuntimeError(f"POST /legacy-records answered {answer.status}: {answer.body}")
            else:
                sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(record))
            sent_at[record_id] = time.time()
    return sent_at
