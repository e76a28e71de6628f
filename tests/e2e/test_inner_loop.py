"""The shared limiter's inner loop end to end: the deployed CRM batch against a CRM that halves its capacity mid-run.

The real workflow calls the real CRM caller, which takes its tokens from the shared DynamoDB limiter
and reports every 429 to it; the CRM simulator, the referee, halves its rate and burst a few seconds
into the run and records every request. Counts, not timings: what the limiter let through after the
change is bounded by the halved rate whatever the machine's speed (a slower machine sends fewer).
"""

from __future__ import annotations

import re

import pytest

from localcloud.demo import run_inner_loop, run_inner_loop_published
from localcloud.drivers.inner_loop import run_capacity_halved

pytestmark = pytest.mark.emulator


def test_a_crm_that_halves_its_capacity_mid_run_is_followed_within_seconds_and_nobody_is_lost(
        cloud, deployed, crm, crm_tunables, crm_dead_letters):
    # GIVEN a Map allowed 5 users at once (about twice the CRM's 10 req/s offered), and a CRM that
    # halves to 5 req/s (burst 5) once it has answered 40 requests of the run
    crm_tunables(max_concurrency=5)
    # WHEN 60 users (120 requests) are e-mailed
    run = run_capacity_halved(cloud, deployed, crm, users=60, halve_after_requests=40, settle_sec=4.0)

    # THEN every user was e-mailed exactly once or is in the dead-letter queue with its error; nobody is lost
    assert run.execution.status == "SUCCEEDED", (run.execution.error, run.execution.cause)
    dead_users = [message["user_id"] for message in run.dead_letters]
    assert sorted([*run.emailed, *dead_users]) == sorted(run.users)
    assert all(keys == [f"{run.execution.name}/{user}"] for user, keys in run.emailed.items())
    assert (run.execution.output["succeeded"], run.execution.output["failed"]) == (len(run.emailed), len(dead_users))
    # AND the change came mid-run, and the CRM did refuse calls once its capacity halved (it was real)
    assert run.sent_before >= 40 and run.throttled_before == 0
    assert run.throttled_total > 0
    # AND from 4 s after the change on, what our limiter let through fell to the CRM's new rate: no more
    # than its halved rate over the span plus its halved burst
    assert run.sent_settled > 0
    assert run.sent_settled <= run.rate_after_per_sec * run.settled_span_sec + run.burst_after + 1, run
    # AND the 429s stopped: under one in ten of the calls it sent after that (the old rate would draw one in two)
    assert run.throttled_settled <= 0.1 * run.sent_settled, run


def test_the_demo_line(cloud, deployed, fresh_simulators, crm_dead_letters):
    line = run_inner_loop(cloud, deployed, fresh_simulators, users=30)
    assert re.fullmatch(r"inner loop: the CRM halved to 5 req/s after \d+ requests; from 4 s later our limiter sent"
                        r" \d+\.\d req/s, \d+ of \d+ answered 429 \(\d+ in all\); 30 of 30 users e-mailed,"
                        r" 0 dead letters", line), line


def test_a_crm_that_publishes_its_limit_is_followed_from_its_next_answer_with_no_429s_and_nobody_lost(
        cloud, deployed, crm, crm_tunables, crm_dead_letters):
    # GIVEN the same run, but the CRM states its limit in every answer (RateLimit-Policy: 10;w=1, then 5;w=1)
    crm_tunables(max_concurrency=5)
    # WHEN 60 users are e-mailed and the CRM halves after 40 requests
    run = run_capacity_halved(cloud, deployed, crm, users=60, halve_after_requests=40, settle_sec=1.0,
                              publishes_limit=True)

    # THEN every user was e-mailed exactly once or is in the dead-letter queue with its error; nobody is lost
    assert run.execution.status == "SUCCEEDED", (run.execution.error, run.execution.cause)
    dead_users = [message["user_id"] for message in run.dead_letters]
    assert sorted([*run.emailed, *dead_users]) == sorted(run.users)
    assert all(keys == [f"{run.execution.name}/{user}"] for user, keys in run.emailed.items())
    assert (run.execution.output["succeeded"], run.execution.output["failed"]) == (len(run.emailed), len(dead_users))
    # AND the deployed callers wrote the CRM's new word into the shared bucket
    assert run.sent_before >= 40 and run.throttled_before == 0
    assert run.published_per_sec_stored == run.rate_after_per_sec
    # AND from 1 s after the change on, what our limiter let through is within the published rate over the span
    # plus the halved burst (the silent run needs 4 s and 429s to get there)
    assert run.sent_settled > 0
    assert run.sent_settled <= run.rate_after_per_sec * run.settled_span_sec + run.burst_after + 1, run
    # AND the halving drew (near) no 429s: the CRM's next answer said it, the calls admitted at the old rate before
    # every caller learnt it were absorbed by what was left of the CRM's burst
    assert run.throttled_after_change <= 2, run


def test_the_demo_line_of_a_crm_that_publishes_its_limit(cloud, deployed, fresh_simulators, crm_dead_letters):
    line = run_inner_loop_published(cloud, deployed, fresh_simulators, users=30)
    assert re.fullmatch(r"inner loop, limit published: the CRM said 5 req/s after \d+ requests and the bucket stored"
                        r" 5 req/s; from 1 s later our limiter sent \d+\.\d req/s, [0-2] 429s after the change;"
                        r" 30 of 30 users e-mailed, 0 dead letters", line), line
