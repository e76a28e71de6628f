"""Issue 16, item 4 on the emulator: one tenant's backlog in the legacy buffer does not hold up another's.

A noisy tenant posts 40 records to `POST /legacy-records`, then a quiet tenant posts 3. The API sends
each with its tenant (the API key's client) as `MessageGroupId`, which makes the standard queue a
fair queue; SQS's reordering is modelled by the emulator (`localcloud.emulator.patches.sqs`). The bound
on the quiet tenant's wait is the one its alarm uses (`quiet_tenant_max_wait_sec`): the batches in
flight, then its own and those beside it, at the mainframe's planned rate, 0.8 of its 1 req/s contract. Every record is
accounted for: delivered, dead-lettered or still queued (none may be lost).
"""

from __future__ import annotations

import re

import pytest

from localcloud.demo import fair_queue_line
from localcloud.drivers import fair_queue, legacy
from stacks.use_cases.legacy_buffer import LEGACY_BATCH_SIZE, LEGACY_MAX_CONCURRENCY, quiet_tenant_max_wait_sec
from throttling.core import names

pytestmark = pytest.mark.emulator

NOISY, QUIET = 40, 3
# The records of the batches in flight when a record arrives, and of its own and those beside it.
AHEAD_AT_MOST = 2 * LEGACY_MAX_CONCURRENCY * LEGACY_BATCH_SIZE


@pytest.fixture
def quiet_bound_sec(dev_config) -> int:
    mainframe = next(d for d in dev_config.downstreams if d.name == "legacy_mainframe")
    return quiet_tenant_max_wait_sec(mainframe, batch_size=LEGACY_BATCH_SIZE, max_concurrency=LEGACY_MAX_CONCURRENCY)


def test_with_tenants_as_message_groups_a_quiet_tenant_is_served_within_its_bound_behind_a_flood(
        cloud, deployed, fresh_simulators, quiet_bound_sec):
    mainframe = fresh_simulators["legacy_mainframe"]
    # WHEN a noisy tenant floods the API and a quiet one then posts a few records
    run = fair_queue.run(cloud, deployed, mainframe, noisy_records=NOISY, quiet_records=QUIET, group_ids=True)
    # THEN every record reaches the mainframe: none dead-lettered, none left, none lost
    assert (run.delivered, run.dead_letters, run.left_in_queue) == (NOISY + QUIET, 0, 0), run
    # AND the quiet tenant's records are delivered within the bound, ahead of the noisy backlog: before its
    # last one, at most the noisy records of the batches in flight, of its own and of those beside it
    assert run.quiet_worst_wait_sec <= quiet_bound_sec, run
    assert run.noisy_accepted_before(-1) <= AHEAD_AT_MOST - QUIET, run
    # AND the quiet groups' oldest message, the metric the quiet-tenants alarm reads, stayed within its threshold
    assert 0 < run.max_quiet_groups_age_sec <= quiet_bound_sec, run
    # AND the mainframe never saw 2 requests in a 1 s window
    assert mainframe.stats()["max_in_1s_window_all"] <= 1
    # AND the demo's line says so, with the deployed alarm's threshold
    threshold = fair_queue.quiet_tenants_alarm_threshold_sec(cloud)
    assert threshold == quiet_bound_sec
    line = fair_queue_line(run, threshold)
    assert re.fullmatch(r"fair queue: a noisy tenant's 40 records, then a quiet tenant's 3, through POST"
                        r" /legacy-records: the quiet tenant's last reached the mainframe \d+\.\d s after it was"
                        r" posted \(its alarm: 25 s\), behind \d+ of the noisy ones; 43 delivered, 0 in DLQ, 0 lost",
                        line), line


def test_without_message_groups_the_quiet_tenant_waits_behind_the_whole_flood(
        cloud, deployed, fresh_simulators, quiet_bound_sec):
    mainframe = fresh_simulators["legacy_mainframe"]
    # WHEN the same records go to the queue without a group id (as before tenants)
    run = fair_queue.run(cloud, deployed, mainframe, noisy_records=NOISY, quiet_records=QUIET, group_ids=False)
    # THEN every record is still delivered, none lost
    assert (run.delivered, run.dead_letters, run.left_in_queue) == (NOISY + QUIET, 0, 0), run
    # BUT the quiet tenant's records wait past the bound, behind the noisy backlog: before its first one,
    # every noisy record but those of the batches running beside it
    assert min(run.quiet_waits_sec.values()) > quiet_bound_sec, run  # type: ignore[type-var]
    assert run.noisy_accepted_before(0) >= NOISY - LEGACY_BATCH_SIZE * LEGACY_MAX_CONCURRENCY, run
    assert mainframe.stats()["max_in_1s_window_all"] <= 1


def test_the_publishing_workflow_queues_records_under_its_starter_s_tenant_or_else_the_default(
        cloud, deployed, fresh_simulators):
    mainframe = fresh_simulators["legacy_mainframe"]
    # WHEN the publishing workflow runs once for a tenant, once without one, once with a tenant that is no string
    named = legacy.run(cloud, deployed, mainframe, records=2, tenant="example-partner-client")
    unnamed = legacy.run(cloud, deployed, mainframe, records=2)
    not_a_name = legacy.run(cloud, deployed, mainframe, records=1, tenant=7)  # type: ignore[arg-type]
    # THEN every record is delivered, each under the starter's tenant, or else the default tenant's
    for run, records, tenant in ((named, 2, "example-partner-client"), (unnamed, 2, names.DEFAULT_TENANT),
                                 (not_a_name, 1, names.DEFAULT_TENANT)):
        assert run.execution.status == "SUCCEEDED", run.execution
        assert (run.delivered, run.dead_letters) == (records, 0)
        assert {item["tenant"] for item in run.statuses.values()} == {tenant}
