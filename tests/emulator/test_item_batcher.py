"""A Distributed Map's ItemBatcher, which moto cannot parse, run as AWS forms its batches.

Each probe is a Distributed Map whose child execution returns its own input, so the Map's output is
the list of batches exactly as the children received them: `{"Items": [...], "BatchInput": ...}`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from localcloud.emulator import patches
from localcloud.emulator.patches.stepfunctions_map import MAX_INPUT_BYTES_PER_BATCH, form_batches

pytestmark = pytest.mark.emulator


def batching_map(batcher: dict[str, Any], *, item_selector: dict[str, Any] | None = None,
                 mode: str = "DISTRIBUTED", reader: dict[str, Any] | None = None) -> dict[str, Any]:
    each: dict[str, Any] = {
        "Type": "Map", "Comment": "one child execution per batch", "ItemBatcher": batcher,
        "ItemProcessor": {"ProcessorConfig": {"Mode": mode, **({"ExecutionType": "STANDARD"} if mode == "DISTRIBUTED"
                                                               else {})},
                          "StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "Comment": "the batch as received",
                                                                 "End": True}}},
        "End": True}
    if reader:
        each["ItemReader"] = reader
    else:
        each["ItemsPath"] = "$.items"
    if item_selector:
        each["ItemSelector"] = item_selector
    return {"Comment": "probe: a batching Distributed Map", "StartAt": "Each", "States": {"Each": each}}


def run(cloud, definition: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    sfn = cloud.client("stepfunctions")
    arn = sfn.create_state_machine(name=f"batcher-{uuid.uuid4().hex[:10]}", definition=json.dumps(definition),
                                   roleArn="arn:aws:iam::123456789012:role/probe")["stateMachineArn"]
    execution = sfn.start_execution(stateMachineArn=arn, name="batched-run", input=json.dumps(payload))["executionArn"]
    deadline = time.monotonic() + 60
    while (described := sfn.describe_execution(executionArn=execution))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "execution still RUNNING after 60 s"
        time.sleep(0.05)
    return described


def test_items_are_selected_one_by_one_then_batched_by_count_with_the_batch_input(cloud):
    # GIVEN 10 items, batches of at most 3, an ItemSelector that reads each item and its index, and a BatchInput
    # that carries the run's campaign from the state's input and the execution's name
    definition = batching_map(
        {"MaxItemsPerBatch": 3, "BatchInput": {"campaign.$": "$.campaign", "run.$": "$$.Execution.Name",
                                               "fixed": "yes"}},
        item_selector={"user.$": "$$.Map.Item.Value", "at.$": "$$.Map.Item.Index", "campaign.$": "$.campaign"})
    # WHEN it runs
    described = run(cloud, definition, {"campaign": "winter", "items": [f"u{i}" for i in range(10)]})
    # THEN there is one child per batch, in order: 3 + 3 + 3 + 1, each item selected as AWS selects it
    assert described["status"] == "SUCCEEDED", (described.get("error"), described.get("cause"))
    batches = json.loads(described["output"])
    assert [len(batch["Items"]) for batch in batches] == [3, 3, 3, 1]
    assert [item for batch in batches for item in batch["Items"]] == [
        {"user": f"u{i}", "at": i, "campaign": "winter"} for i in range(10)]
    assert {json.dumps(batch["BatchInput"]) for batch in batches} == {
        json.dumps({"campaign": "winter", "run": "batched-run", "fixed": "yes"})}


def test_a_batch_never_exceeds_its_bytes_and_takes_every_item_that_fits(cloud):
    # GIVEN items of uneven sizes and batches of at most 200 bytes of compact JSON, BatchInput included
    items = [{"id": i, "pad": "x" * (i * 7 % 50)} for i in range(30)]
    definition = batching_map({"MaxInputBytesPerBatch": 200, "BatchInput": {"c": "k"}})
    # WHEN it runs
    described = run(cloud, definition, {"items": items})
    batches = json.loads(described["output"])

    # THEN every batch fits, the next item would not have, and every item is there once, in order
    def size(batch: dict[str, Any]) -> int:
        return len(json.dumps(batch, separators=(",", ":")).encode())

    assert all(size(batch) <= 200 for batch in batches)
    for batch, following in zip(batches, batches[1:]):
        assert size({**batch, "Items": [*batch["Items"], following["Items"][0]]}) > 200
    assert [item for batch in batches for item in batch["Items"]] == items


def test_the_batch_size_may_come_from_the_state_input(cloud):
    # GIVEN MaxItemsPerBatchPath naming a number in the input
    definition = batching_map({"MaxItemsPerBatchPath": "$.size"})
    # WHEN it runs over 7 items in batches of 4, then with a size that is not a positive whole number
    described = run(cloud, definition, {"size": 4, "items": list(range(7))})
    refused = run(cloud, definition, {"size": 2.5, "items": list(range(7))})
    # THEN the batches follow the input, and a bad size fails the run saying which value and path
    assert [batch["Items"] for batch in json.loads(described["output"])] == [[0, 1, 2, 3], [4, 5, 6]]
    assert "BatchInput" not in json.loads(described["output"])[0]
    assert (refused["status"], refused["error"]) == ("FAILED", "States.Runtime")
    assert "2.5" in refused["cause"] and "$.size" in refused["cause"]


def test_the_items_a_csv_reader_reads_are_batched(cloud):
    # GIVEN a CSV export of 5 users in S3 read by the Map's ItemReader, batches of 2
    s3 = cloud.client("s3")
    bucket = f"batcher-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="s.csv", Body=b"user_id\na\nb\nc\nd\ne\n")
    reader = {"Resource": "arn:aws:states:::s3:getObject",
              "ReaderConfig": {"InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"},
              "Parameters": {"Bucket": bucket, "Key": "s.csv"}}
    definition = batching_map({"MaxItemsPerBatch": 2}, reader=reader,
                              item_selector={"user_id.$": "$$.Map.Item.Value.user_id"})
    # WHEN it runs
    described = run(cloud, definition, {})
    # THEN 3 children got 2, 2 and 1 users
    assert described["status"] == "SUCCEEDED", (described.get("error"), described.get("cause"))
    assert [[i["user_id"] for i in b["Items"]] for b in json.loads(described["output"])] == [["a", "b"], ["c", "d"], ["e"]]


@pytest.mark.parametrize(("batcher", "mode", "reason"), [
    ({"MaxItemsPerBatch": 0}, "DISTRIBUTED", "MaxItemsPerBatch: must be a whole number from 1"),
    ({"MaxInputBytesPerBatch": MAX_INPUT_BYTES_PER_BATCH + 1}, "DISTRIBUTED", "MaxInputBytesPerBatch: must be"),
    ({"MaxItemsPerBatch": 2, "MaxItemsPerBatchPath": "$.n"}, "DISTRIBUTED", "not both"),
    ({"BatchInput": {}}, "DISTRIBUTED", "give MaxItemsPerBatch, MaxInputBytesPerBatch"),
    ({"MaxItemsPerBatch": 2}, "INLINE", "only in a Map whose ProcessorConfig Mode is DISTRIBUTED"),
], ids=["zero-items", "over-256-KiB", "value-and-path", "no-bound", "inline-map"])
def test_an_item_batcher_aws_refuses_is_refused_at_creation_saying_why(cloud, batcher, mode, reason):
    # GIVEN / WHEN a state machine whose ItemBatcher AWS refuses is created
    # THEN creation fails with the reason, before any run
    with pytest.raises(ClientError, match=reason):
        run(cloud, batching_map(batcher, mode=mode), {"items": [1]})


def test_without_the_fix_moto_refuses_any_item_batcher(cloud):
    # GIVEN moto alone
    patches.remove("distributed_map_item_batcher")
    try:
        # WHEN a state machine with the plainest ItemBatcher is created THEN its parser refuses the whole definition
        with pytest.raises(ClientError, match="ASLParserException.*at \"ItemBatcher\""):
            run(cloud, batching_map({"MaxItemsPerBatch": 3}), {"items": [1, 2]})
    finally:
        patches.apply("distributed_map_item_batcher")


def test_form_batches_refuses_an_item_that_fits_no_batch():
    # GIVEN / WHEN an item larger than a whole batch may be THEN batching fails naming the item and the limit
    with pytest.raises(ValueError, match="item 1 takes .* over MaxInputBytesPerBatch 20"):
        form_batches(["a", "x" * 30], max_items=None, max_bytes=20, batch_input=None)


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.one_of(st.integers(), st.text(max_size=40),
                                st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)), max_size=60),
       max_items=st.integers(1, 12), max_bytes=st.integers(300, 700))
def test_batches_hold_every_item_once_in_order_within_both_bounds_and_close_only_when_full(items, max_items, max_bytes):
    # GIVEN any items (each fits a batch of 300 bytes), counts and byte limits, and a BatchInput
    batch_input = {"segment": "s"}
    # WHEN they are batched
    batches = form_batches(items, max_items=max_items, max_bytes=max_bytes, batch_input=batch_input)

    # THEN every item is in exactly one batch, in order, each batch within both bounds ...
    def size(batch: dict[str, Any]) -> int:
        return len(json.dumps(batch, separators=(",", ":"), ensure_ascii=False).encode())

    assert [item for batch in batches for item in batch["Items"]] == items
    assert all(1 <= len(b["Items"]) <= max_items and size(b) <= max_bytes and b["BatchInput"] == batch_input
               for b in batches)
    # ... and a batch closed only because the next item would have broken one of them
    for batch, following in zip(batches, batches[1:]):
        grown = {**batch, "Items": [*batch["Items"], following["Items"][0]]}
        assert len(grown["Items"]) > max_items or size(grown) > max_bytes
