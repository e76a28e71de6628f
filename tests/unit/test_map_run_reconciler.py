"""The control loop's Step Functions adapter: which Map Runs it retunes, and what a failure does.

The calls are checked with botocore's Stubber, request by request (moto's in-process Step Functions
runs no Map, so it has no Map Run to retune; tests/e2e/test_crm_segment_large_workflow.py retunes
a real one on the emulator).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import boto3
import pytest
from botocore.stub import Stubber

from throttling.adapters.stepfunctions_map_runs import MapRunReconciler, MapRunsUnavailable

MACHINE = "arn:aws:states:us-east-1:123456789012:stateMachine:CrmSegmentLarge"
EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:CrmSegmentLarge:run-1"
MAP_RUN = "arn:aws:states:us-east-1:123456789012:mapRun:CrmSegmentLarge/EmailUsers:1a2b"
ENDED_MAP_RUN = "arn:aws:states:us-east-1:123456789012:mapRun:CrmSegmentLarge/EmailUsers:0f0f"
STARTED = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)


@pytest.fixture
def sfn() -> Iterator[tuple[MapRunReconciler, Stubber]]:
    client = boto3.client("stepfunctions", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield MapRunReconciler(client), stubber
        stubber.assert_no_pending_responses()


def running(stubber: Stubber, *executions: str, next_token: str | None = None, token: str | None = None) -> None:
    expected = {"stateMachineArn": MACHINE, "statusFilter": "RUNNING", **({"nextToken": token} if token else {})}
    response = {"executions": [{"executionArn": arn, "stateMachineArn": MACHINE, "name": arn.rsplit(":", 1)[1],
                                "status": "RUNNING", "startDate": STARTED} for arn in executions]}
    if next_token:
        response["nextToken"] = next_token
    stubber.add_response("list_executions", response, expected)


def map_runs(stubber: Stubber, execution: str, *runs: tuple[str, bool]) -> None:
    items = [{"executionArn": execution, "mapRunArn": arn, "stateMachineArn": f"{MACHINE}/EmailUsers",
              "startDate": STARTED, **({"stopDate": STARTED} if stopped else {})} for arn, stopped in runs]
    stubber.add_response("list_map_runs", {"mapRuns": items}, {"executionArn": execution})


def described(stubber: Stubber, arn: str, *, status: str = "RUNNING", max_concurrency: int = 4) -> None:
    counts = {k: 0 for k in ("pending", "running", "succeeded", "failed", "timedOut", "aborted", "total",
                             "resultsWritten")}
    stubber.add_response("describe_map_run", {
        "mapRunArn": arn, "executionArn": EXECUTION, "status": status, "startDate": STARTED,
        "maxConcurrency": max_concurrency, "toleratedFailurePercentage": 10.0, "toleratedFailureCount": 0,
        "itemCounts": counts, "executionCounts": counts}, {"mapRunArn": arn})


def test_a_running_map_run_at_another_concurrency_is_updated_and_reported(sfn):
    reconciler, stubber = sfn
    # GIVEN one running execution whose Map Run runs 4 children at once (and an earlier Map Run that stopped)
    running(stubber, EXECUTION)
    map_runs(stubber, EXECUTION, (ENDED_MAP_RUN, True), (MAP_RUN, False))
    described(stubber, MAP_RUN, max_concurrency=4)
    stubber.add_response("update_map_run", {}, {"mapRunArn": MAP_RUN, "maxConcurrency": 2})
    # WHEN the tunables say 2
    changes = reconciler.reconcile(MACHINE, 2)
    # THEN only the open Map Run is updated, to 2, and the change says from what
    assert changes == [{"map_run": MAP_RUN, "execution": EXECUTION, "from": 4, "to": 2}]


def test_a_map_run_already_at_the_setting_or_no_longer_running_is_left_alone(sfn):
    reconciler, stubber = sfn
    # GIVEN two running executions (listed over two pages): one Map Run at 2 already, one that is ending
    other = EXECUTION.replace("run-1", "run-2")
    running(stubber, EXECUTION, next_token="page-2")
    running(stubber, other, token="page-2")
    map_runs(stubber, EXECUTION, (MAP_RUN, False))
    described(stubber, MAP_RUN, max_concurrency=2)
    map_runs(stubber, other, (ENDED_MAP_RUN, False))
    described(stubber, ENDED_MAP_RUN, status="SUCCEEDED", max_concurrency=4)
    # WHEN the tunables say 2 THEN nothing is updated (the Stubber would refuse an UpdateMapRun)
    assert reconciler.reconcile(MACHINE, 2) == []


def test_a_map_run_that_ends_between_the_listing_and_the_update_is_skipped(sfn):
    reconciler, stubber = sfn
    # GIVEN a Map Run that is gone when the update arrives
    running(stubber, EXECUTION)
    map_runs(stubber, EXECUTION, (MAP_RUN, False))
    described(stubber, MAP_RUN, max_concurrency=4)
    stubber.add_client_error("update_map_run", "ResourceNotFound", "Map Run not found", 400,
                             expected_params={"mapRunArn": MAP_RUN, "maxConcurrency": 2})
    # WHEN the run retunes THEN there was nothing left to retune, and no error
    assert reconciler.reconcile(MACHINE, 2) == []


@pytest.mark.parametrize("code", ["AccessDeniedException", "ThrottlingException", "ValidationException"])
def test_any_other_step_functions_error_is_told_apart_as_map_runs_unavailable(sfn, code):
    reconciler, stubber = sfn
    # GIVEN Step Functions refusing the update with `code`
    running(stubber, EXECUTION)
    map_runs(stubber, EXECUTION, (MAP_RUN, False))
    described(stubber, MAP_RUN, max_concurrency=4)
    stubber.add_client_error("update_map_run", code, "no", 400)
    # WHEN the run retunes THEN it raises MapRunsUnavailable, naming the workflow, the value and the cause
    with pytest.raises(MapRunsUnavailable, match=rf"running Map Runs of {MACHINE} to max_concurrency 2: .*{code}"):
        reconciler.reconcile(MACHINE, 2)
