"""The large-segment workflow treats its users as the inline CRM batch does, a batch at a time.

The inline batch sends one e-mail per user (FetchUser, SendEmail); the large-segment path sends a batch
of users per request to the CRM's batch endpoint. What must not drift between them: the retries of the
call and the waits that follow them (the same errors, backoff, hints and bounds), the idempotency key
of a user's e-mail (execution name + user id), the dead-letter message an operator reads and
redrives, and how the CRM's concurrency tunable is read and made usable.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAME_WAIT_STATES = ("ReadErrorCause", "ReadRetryHint", "PlanRequestedWait", "PlanJitteredWait")


def states(name: str) -> dict:
    return json.loads((ROOT / "statemachines" / name).read_text())["States"]


def test_a_batch_request_retries_and_waits_as_an_inline_e_mail_does():
    # GIVEN each workflow's per-user (inline) and per-batch (large) states
    inline = states("crm_batch_email.asl.json")["EmailEachUser"]["ItemProcessor"]["States"]
    large = states("crm_segment_large.asl.json")["EmailEachUser"]["ItemProcessor"]["States"]
    # THEN the batch request retries exactly as the inline e-mail, and waits out the same hints the same way
    assert large["SendBatch"]["Retry"] == inline["SendEmail"]["Retry"]
    assert [c["ErrorEquals"] for c in large["SendBatch"]["Catch"]] == [c["ErrorEquals"] for c in inline["SendEmail"]["Catch"]]
    for name in SAME_WAIT_STATES:
        assert large[name]["Parameters"] == inline[name]["Parameters"], name
    # AND gives up under the same bounds, parking its users where the inline one parks its user
    assert [{k: v for k, v in c.items() if k != "Next"} for c in large["DecideRetry"]["Choices"]] == [
        {k: v for k, v in c.items() if k != "Next"} for c in inline["DecideRetry"]["Choices"]]
    give_ups = {c["Next"] for c in large["DecideRetry"]["Choices"]} - {"PlanJitteredWait"}
    assert give_ups == {"DeadLetterBatch"}


def test_a_users_idempotency_key_and_dead_letter_are_the_same_in_both():
    inline_states = states("crm_batch_email.asl.json")
    large_states = states("crm_segment_large.asl.json")
    inline = inline_states["EmailEachUser"]["ItemProcessor"]["States"]
    large = large_states["EmailEachUser"]["ItemProcessor"]["States"]
    # GIVEN the inline key, built in each iteration from the ItemSelector's execution name and user id
    assert inline["SendEmail"]["Parameters"]["Payload"]["idempotency_key.$"] == (
        "States.Format('{}/{}', $.execution_name, $.user_id)")
    assert inline_states["EmailEachUser"]["ItemSelector"]["execution_name.$"] == "$$.Execution.Name"
    # THEN the large path's key per recipient is the same execution name + user id
    assert large_states["EmailEachUser"]["ItemSelector"]["idempotency_key.$"] == (
        "States.Format('{}/{}', $$.Execution.Name, $$.Map.Item.Value.user_id)")
    # AND every user it parks, whatever the reason, is a message with the inline one's fields
    inline_fields = set(inline["RecordFailure"]["Parameters"]["MessageBody"])
    parks = [name for name, state in large.items() if state["Type"] == "Map"]
    assert sorted(parks) == ["DeadLetterBatch", "DeadLetterDeferred", "DeadLetterRejected"]
    for name in parks:
        (task,) = large[name]["ItemProcessor"]["States"].values()
        assert task["Parameters"]["QueueUrl"] == inline["RecordFailure"]["Parameters"]["QueueUrl"]
        assert set(task["Parameters"]["MessageBody"]) == inline_fields, name


def test_both_read_the_crm_concurrency_and_replace_an_unusable_value_alike():
    inline, large = states("crm_batch_email.asl.json"), states("crm_segment_large.asl.json")
    assert large["ReadCrmTunables"] == inline["ReadCrmTunables"]
    assert large["CheckMaxConcurrency"]["Choices"] == inline["CheckMaxConcurrency"]["Choices"]
    assert large["UseSafeConcurrency"]["Result"] == inline["UseSafeConcurrency"]["Result"]
    inline_map, large_map = inline["EmailEachUser"], large["EmailEachUser"]
    assert large_map["MaxConcurrencyPath"] == inline_map["MaxConcurrencyPath"]
    # The run's own name and segment reach each batch as the ItemBatcher's BatchInput, as each inline iteration's.
    assert large_map["ItemBatcher"]["BatchInput"]["execution_name.$"] == inline_map["ItemSelector"]["execution_name.$"]
