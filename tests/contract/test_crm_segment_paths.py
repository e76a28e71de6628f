"""The large-segment workflow treats each user exactly as the inline CRM batch does.

Both files carry the per-user states (FetchUser ... Sent), one in an inline Map, one in a Distributed
Map's child executions; a retry, a wait or a dead letter changed in one and not in the other fails here.
Only a user's last state differs: an inline iteration returns a one-flag count (the run's state must not grow
with the users' ids), while a child execution returns its user for the results written to S3, and fails
to count against the tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def states(name: str) -> dict:
    return json.loads((ROOT / "statemachines" / name).read_text())["States"]


def test_each_child_execution_treats_its_user_as_an_inline_iteration_does():
    inline = states("crm_batch_email.asl.json")["EmailEachUser"]["ItemProcessor"]["States"]
    large = states("crm_segment_large.asl.json")["EmailEachUser"]["ItemProcessor"]["States"]
    last = ("Sent", "Failed")
    assert {n: s for n, s in large.items() if n not in last} == {n: s for n, s in inline.items() if n not in last}
    assert (inline["Failed"]["Type"], large["Failed"]["Type"]) == ("Pass", "Fail")
    assert (inline["Sent"]["Result"], inline["Failed"]["Result"]) == ({"sent": 1}, {"failed": 1})
    assert large["Sent"]["Parameters"]["user_id.$"] == "$.user_id"


def test_both_read_the_crm_concurrency_and_replace_an_unusable_value_alike():
    inline, large = states("crm_batch_email.asl.json"), states("crm_segment_large.asl.json")
    assert large["ReadCrmTunables"] == inline["ReadCrmTunables"]
    assert large["CheckMaxConcurrency"]["Choices"] == inline["CheckMaxConcurrency"]["Choices"]
    assert large["UseSafeConcurrency"]["Result"] == inline["UseSafeConcurrency"]["Result"]
    inline_map, large_map = inline["EmailEachUser"], large["EmailEachUser"]
    assert large_map["MaxConcurrencyPath"] == inline_map["MaxConcurrencyPath"]
    assert {k: v for k, v in large_map["ItemSelector"].items() if k not in ("user_id.$", "segment_id.$")} == {
        k: v for k, v in inline_map["ItemSelector"].items() if k not in ("user_id.$", "segment_id.$")}
