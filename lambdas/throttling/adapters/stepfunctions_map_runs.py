"""The control loop's Step Functions adapter: the running Distributed Map runs of a workflow follow `max_concurrency`.

A Distributed Map reads its `MaxConcurrencyPath` once, when its Map Run starts: a 10,000-user run
started before the controller slowed the downstream would keep the old concurrency for hours. So
the controller retunes every Map Run still running: `ListExecutions` (RUNNING) of the workflow,
`ListMapRuns` of each, `DescribeMapRun` for its status and concurrency, and `UpdateMapRun` where
that concurrency differs. The IAM actions and the resources each acts on are in
`stacks/control_loop_stack.py` (the execution for `ListMapRuns`, the Map Run for the other two).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from types_boto3_stepfunctions import SFNClient

__all__ = ["MapRunReconciler", "MapRunsUnavailable"]

# A Map Run or execution that ended, and was cleaned away, between the listing and the update: nothing to retune.
_GONE = frozenset({"ResourceNotFound", "ExecutionDoesNotExist"})
_RUNNING = "RUNNING"


class MapRunsUnavailable(RuntimeError):
    """Step Functions refused or failed a call: the workflow's Map Runs keep their concurrency until the next run."""


class MapRunReconciler:
    """Sets `maxConcurrency` of a workflow's running Map Runs (`UpdateMapRun`) from the tunables."""

    def __init__(self, client: SFNClient) -> None:
        self._client = client

    def reconcile(self, state_machine_arn: str, max_concurrency: int) -> list[dict[str, Any]]:
        """The changes made: `[{"map_run", "execution", "from", "to"}]` (empty when every running Map Run agrees).

        `MapRunsUnavailable` when Step Functions fails a call (the changes made before it are lost from the
        answer, not undone: the next run finds them in force).
        """
        try:
            return self._reconcile(state_machine_arn, max_concurrency)
        except (ClientError, BotoCoreError) as error:
            raise MapRunsUnavailable(
                f"could not retune the running Map Runs of {state_machine_arn} to max_concurrency {max_concurrency}:"
                f" {error}") from error

    def _reconcile(self, state_machine_arn: str, max_concurrency: int) -> list[dict[str, Any]]:
        changes = []
        for execution_arn in self._running_executions(state_machine_arn):
            for map_run_arn in self._open_map_runs(execution_arn):
                try:
                    described = self._client.describe_map_run(mapRunArn=map_run_arn)
                    if described.get("status") != _RUNNING or described.get("maxConcurrency") == max_concurrency:
                        continue
                    self._client.update_map_run(mapRunArn=map_run_arn, maxConcurrency=max_concurrency)
                except ClientError as error:
                    if error.response.get("Error", {}).get("Code") in _GONE:
                        continue
                    raise
                changes.append({"map_run": map_run_arn, "execution": execution_arn,
                                "from": described.get("maxConcurrency"), "to": max_concurrency})
        return changes

    def _running_executions(self, state_machine_arn: str) -> list[str]:
        found: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = self._client.list_executions(stateMachineArn=state_machine_arn, statusFilter=_RUNNING, **token)
            found += [execution["executionArn"] for execution in page.get("executions", [])]
            if not page.get("nextToken"):
                return found
            token = {"nextToken": page["nextToken"]}

    def _open_map_runs(self, execution_arn: str) -> list[str]:
        found: list[str] = []
        token: dict[str, str] = {}
        while True:
            try:
                page = self._client.list_map_runs(executionArn=execution_arn, **token)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in _GONE:
                    return found
                raise
            found += [run["mapRunArn"] for run in page.get("mapRuns", []) if not run.get("stopDate")]
            if not page.get("nextToken"):
                return found
            token = {"nextToken": page["nextToken"]}
