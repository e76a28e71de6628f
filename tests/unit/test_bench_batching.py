"""The batching benchmark's arithmetic on a small segment, in virtual time: counts, never durations of this machine."""

from __future__ import annotations

import math

from bench import batching


def test_batched_requests_are_ceil_users_over_the_batch_size_and_each_is_one_token():
    # GIVEN a segment of 230 users and the CRM's configured batch size
    contract = batching.crm_contract()
    size = contract["max_batch_size"]
    # WHEN both designs e-mail it
    report = batching.compare(230, seed=3)
    per_user, batched = report["designs"]
    # THEN one request (one limiter token) per user, against one per batch: ceil(230 / 50) = 5
    assert (per_user["calls"], per_user["limiter_tokens"], per_user["child_executions"]) == (230, 230, 230)
    assert (batched["calls"], batched["limiter_tokens"], batched["child_executions"]) == (math.ceil(230 / size),) * 3
    # AND neither met a 429 behind the shared limiter, and the batched run finished first and cost less
    assert per_user["answered_429"] == batched["answered_429"] == 0
    assert batched["finish_sec"] < per_user["finish_sec"]
    assert batched["cost_usd"]["total"] < per_user["cost_usd"]["total"]
    # AND its transitions are its children's happy paths, counted per child
    assert batched["state_transitions"] == 6 * batched["child_executions"]


def test_the_same_seed_gives_the_same_report_and_the_markdown_names_both_designs():
    # GIVEN / WHEN the comparison is run twice with one seed
    first, second = batching.compare(120, seed=5), batching.compare(120, seed=5)
    # THEN the reports are equal, and the table has a row per design
    assert first == second
    table = batching.as_markdown(first)
    assert "one e-mail request per user" in table and "(ItemBatcher)" in table
