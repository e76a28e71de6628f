"""Issue 16 on the emulator: a noisy tenant and a quiet one share the CRM, with and without their shares.

The noisy tenant starts 3 CRM batch e-mail executions of 12 users each (12 users at once at the
tuned Map concurrency of 4, about 60 req/s offered at 200 ms a call, against the 9.9 req/s the CRM's
tunables plan); once the CRM has received 10 of its calls, the quiet tenant starts one of 2 users
(`localcloud.drivers.tenants`; 14 calls in flight, within the CRM caller's reserved concurrency).
With shares the operator gives the quiet tenant 0.5 of the CRM's rate and the noisy one 0.2 (the
rest lent to whoever is busy); without them every call is the default tenant's, whose share is
then the whole bucket, as before tenants. Both runs go through the deployed workflow, the real CRM
caller and the shared DynamoDB limiter, against the CRM's referee.

Everything is counted, not timed: which tenant's calls the CRM received in what order, and each
tenant's refusals from the caller's log. The two runs are made once for the module (about 50 s).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from localcloud.demo import tenants_line
from localcloud.drivers import tenants
from localcloud.drivers.tuning import operator_tuning
from localcloud.referee.downstream_simulator import PROFILES
from throttling.core import names

pytestmark = pytest.mark.emulator

NOISY_EXECUTIONS, NOISY_USERS_EACH, QUIET_USERS = 3, 12, 2


@pytest.fixture(scope="module")
def runs(cloud, deployed, simulators) -> Iterator[dict[bool, tenants.TenantRun]]:
    """shares -> the run: first with the two tenants' shares, then without; the CRM's seed document back afterwards."""
    crm = simulators["crm"]
    crm.reset()
    with operator_tuning(cloud) as tune:
        yield {shares: tenants.run(cloud, deployed, crm, tune, shares=shares, noisy_executions=NOISY_EXECUTIONS,
                                   noisy_users_each=NOISY_USERS_EACH, quiet_users=QUIET_USERS)
               for shares in (True, False)}


@pytest.fixture(scope="module")
def crm_rate_per_sec(cloud) -> float:
    """The rate the CRM's seeded tunables plan (below its contract's 10 req/s)."""
    document = cloud.client("ssm").get_parameter(Name=names.downstream_tunables_parameter("dev", "crm"))
    return float(json.loads(document["Parameter"]["Value"])[names.TUNABLE_RATE_PER_SEC])


@pytest.mark.parametrize("shares", [True, False], ids=["with shares", "without shares"])
def test_every_user_of_both_tenants_is_emailed_once_and_the_crm_never_over_its_limit(runs, shares):
    # GIVEN a noisy tenant's three executions and a quiet tenant's one ran (WHEN: the module's `runs`)
    run = runs[shares]
    # THEN every execution succeeded, and named the tenant it was started for (the default one without shares)
    for name, result in run.executions.items():
        assert result.status == "SUCCEEDED", (name, result.error, result.cause)
        expected_tenant = run.tenant_of_execution[name] if shares else names.DEFAULT_TENANT
        assert (result.output["tenant"], result.output["failed"]) == (expected_tenant, 0), result.output
    # AND every user of both tenants was e-mailed exactly once, nobody is in the DLQ: nothing lost
    for tenant in (tenants.NOISY, tenants.QUIET):
        assert run.emailed(tenant) == {user: 1 for user in run.users[tenant]}, tenant
    assert run.dead_letters == ()
    assert run.succeeded == NOISY_EXECUTIONS * NOISY_USERS_EACH + QUIET_USERS
    # AND the CRM answered no 429 (the inner loop had nothing to correct), and no 1 s window held more than its
    # bucket allows (a full burst plus a second's refill)
    crm = PROFILES["crm"]
    assert 429 not in run.crm_stats["by_status"], run.crm_stats
    assert run.crm_stats["max_in_1s_window_all"] <= crm.rate_per_sec + crm.burst, run.crm_stats
    assert len(run.calls) == run.crm_stats["total_requests"] == 2 * run.succeeded


def test_with_shares_the_quiet_tenant_is_served_early_and_the_noisy_one_held_back(runs, crm_rate_per_sec):
    # GIVEN the run with the operator's shares: quiet 0.5, noisy 0.2 of the CRM's rate
    run = runs[True]
    noisy_calls, quiet_calls = len(run.calls_of(tenants.NOISY)), len(run.calls_of(tenants.QUIET))
    # THEN the quiet tenant's calls, started behind a saturated bucket, all reached the CRM before half the
    # noisy tenant's calls had
    assert run.quiet_started_after_noisy_calls >= 10
    assert quiet_calls == 2 * QUIET_USERS
    assert run.quiet_done_after_noisy_calls < noisy_calls / 2, run.quiet_done_after_noisy_calls
    # AND none of its takes was refused for longer than its own share's pacing makes its users wait
    # (all of them at once, at 0.5 of the rate): it never waited for the noisy tenant's calls
    own_pacing_sec = QUIET_USERS / (tenants.QUIET_SHARE * crm_rate_per_sec)
    quiet_refusals = run.refusals_of(tenants.QUIET)
    assert all(r.retry_after_sec <= own_pacing_sec and r.logged_tenant == tenants.QUIET for r in quiet_refusals)
    # AND the noisy tenant, offering far more than its share, was held back: refused, and told to wait
    noisy_refusals = run.refusals_of(tenants.NOISY)
    assert len(noisy_refusals) > len(quiet_refusals)
    assert any(r.retry_after_sec > 0 for r in noisy_refusals)
    assert {r.logged_tenant for r in noisy_refusals} == {tenants.NOISY}


def test_without_shares_the_quiet_tenant_waits_behind_the_noisy_one(runs):
    with_shares, without = runs[True], runs[False]
    # GIVEN the same executions, started the same way, with every call the default tenant's (one bucket)
    assert without.quiet_started_after_noisy_calls >= 10
    assert {r.logged_tenant for r in without.refusals} <= {names.DEFAULT_TENANT}
    # THEN the quiet tenant's calls were interleaved behind the noisy tenant's: more of the noisy tenant's calls
    # reached the CRM before its last one than with shares (measured: 26 to 68 without, 14 to 17 with: one
    # bucket serves whoever asks when a token is free, and the noisy tenant asks six times as often)
    assert without.quiet_done_after_noisy_calls > with_shares.quiet_done_after_noisy_calls, (
        without.quiet_done_after_noisy_calls, with_shares.quiet_done_after_noisy_calls)


def test_the_demo_line_gives_both_order_figures(runs):
    # WHEN the demo tells the two runs THEN its line carries both order figures
    line = tenants_line(runs[True], runs[False])
    matched = re.fullmatch(r"tenants: a quiet tenant's 4 CRM calls, started behind a noisy tenant's 72, were all done"
                        r" after (\d+) of the noisy ones with shares \(quiet 0\.5, noisy 0\.2\), after (\d+)"
                        r" without; the noisy tenant refused \d+ times, the quiet one \d+; 38 of 38 users e-mailed,"
                        r" 0 in DLQ, 0 answered 429", line)
    assert matched, line
    assert tuple(map(int, matched.groups())) == (runs[True].quiet_done_after_noisy_calls,
                                                 runs[False].quiet_done_after_noisy_calls)
