"""moto's Map state: a Distributed Map's failure threshold and result files, and `MaxConcurrencyPath` as AWS reads it."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timezone
from typing import Any

from localcloud.emulator.patches.registry import Undo, patch, replace, undo_all
from localcloud.emulator.patches.stepfunctions import iso_millis
from localcloud.emulator.patches.stepfunctions_quotas import INT32_RANGE

_EXCEEDED_CAUSE = "The specified tolerated failure threshold was exceeded"


class _ToleranceExceeded(Exception):
    """Stops a Map Run's job pool; the Map Run turns it into `States.ExceedToleratedFailureThreshold`."""


def _tolerance_exceeded(record: Any, total_items: int, declared: tuple[bool, bool]) -> bool:
    """AWS's rule: failed (or timed out) items above the count, or above the percentage of all items.

    A threshold the definition does not set does not apply; with neither set, one failure is too many.
    """
    failed = record.item_counter.failed.get() + record.item_counter.timed_out.get()
    count_declared, percentage_declared = declared
    if not (count_declared or percentage_declared):
        return failed > 0
    over_count = count_declared and failed > record.tolerated_failure_count
    over_percentage = percentage_declared and failed * 100 > record.tolerated_failure_percentage * total_items
    return over_count or over_percentage


def _with_float_percentages(definition: str) -> str:
    try:
        document = json.loads(definition)
    except ValueError:
        return definition  # moto's parser reports it
    changed = False

    def visit(node: Any) -> None:
        nonlocal changed
        if isinstance(node, dict):
            value = node.get("ToleratedFailurePercentage")
            if isinstance(value, int) and not isinstance(value, bool):
                node["ToleratedFailurePercentage"] = float(value)
                changed = True
            for inner in node.values():
                visit(inner)
        elif isinstance(node, list):
            for inner in node:
                visit(inner)

    visit(document)
    return json.dumps(document) if changed else definition


@patch("stepfunctions")
def distributed_map_failure_tolerance() -> Undo:
    """Apply a Distributed Map's tolerated failure threshold, written as AWS accepts it.

    moto limitations: its grammar takes `ToleratedFailurePercentage` only with a decimal point (`10` is
    a parse error that refuses the whole state machine, where AWS takes any number from 0 to 100), and
    it ignores both thresholds: a failed child execution is counted and the Map Run carries on, so a
    Map Run never fails. AWS fails the Map Run with `States.ExceedToleratedFailureThreshold` once the
    failed or timed-out items exceed `ToleratedFailureCount`, or `ToleratedFailurePercentage` of all the
    items (one failure when neither is set), and starts no child execution after that; children already
    running may still finish.
    """
    from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import job as job_module
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component import (
        DistributedIterationComponent,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.max_concurrency import (
        DEFAULT_MAX_CONCURRENCY_VALUE,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.state_map import StateMap
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.tolerated_failure import (
        ToleratedFailureCountDecl,
        ToleratedFailurePercentageDecl,
    )
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    JobPool = job_module.JobPool
    originals = {
        "parse": AmazonStateLanguageParser.__dict__["parse"],
        "from_state_props": StateMap.from_state_props,
        "map_run": DistributedIterationComponent._map_run,
        "next_job": JobPool.next_job,
        "close_job": JobPool.close_job,
    }

    def parse(definition: str) -> Any:
        return originals["parse"].__func__(_with_float_percentages(definition))

    def from_state_props(self: Any, state_props: Any) -> None:
        originals["from_state_props"](self, state_props)
        # The defaults moto fills in cannot be told from declared zeros, and an undeclared threshold must not apply.
        self.iteration_component._localcloud_tolerance_declared = (
            state_props.get(ToleratedFailureCountDecl) is not None,
            state_props.get(ToleratedFailurePercentageDecl) is not None,
        )

    def map_run(self: Any, env: Any, eval_input: Any) -> None:
        # moto's own _map_run, with the threshold checked as each child execution ends.
        input_items = env.stack.pop()
        job_pool = JobPool(job_program=self._get_iteration_program(), job_inputs=input_items)
        record = eval_input.map_run_record
        job_pool._localcloud_threshold = (
            record, len(input_items), getattr(self, "_localcloud_tolerance_declared", (False, False)))
        max_concurrency = record.max_concurrency
        workers = len(input_items) if max_concurrency == DEFAULT_MAX_CONCURRENCY_VALUE else max_concurrency
        for _ in range(workers):
            self._launch_worker(env=env, eval_input=eval_input, job_pool=job_pool)
        job_pool.await_jobs()
        worker_exception = job_pool.get_worker_exception()
        if isinstance(worker_exception, _ToleranceExceeded):
            error = StatesErrorNameType.StatesExceedToleratedFailureThreshold.to_name()
            raise FailureEventException(failure_event=FailureEvent(
                env=env,
                error_name=StatesErrorName(typ=StatesErrorNameType.StatesExceedToleratedFailureThreshold),
                event_type=HistoryEventType.MapRunFailed,
                event_details=EventDetails(
                    mapRunFailedEventDetails=MapRunFailedEventDetails(error=error, cause=_EXCEEDED_CAUSE)),
            ))
        if worker_exception is not None:
            raise worker_exception
        env.stack.append([closed.job_output for closed in job_pool.get_closed_jobs()])

    def stop_if_exceeded(pool: Any) -> None:
        threshold = getattr(pool, "_localcloud_threshold", None)
        if threshold is not None and _tolerance_exceeded(*threshold):
            with pool._mutex:
                if pool._worker_exception is None:
                    pool._worker_exception = _ToleranceExceeded()
                    pool._termination_event.set()

    def next_job(self: Any) -> Any:
        # A worker asks for its next item as soon as its child execution ends: past the threshold, none is started.
        stop_if_exceeded(self)
        return originals["next_job"](self)

    def close_job(self: Any, job: Any) -> None:
        # Closing the last job wakes the Map Run, which must by then see the verdict on it.
        stop_if_exceeded(self)
        originals["close_job"](self, job)

    return undo_all(
        replace(AmazonStateLanguageParser, parse=staticmethod(parse)),
        replace(StateMap, from_state_props=from_state_props),
        replace(DistributedIterationComponent, _map_run=map_run),
        replace(JobPool, next_job=next_job, close_job=close_job),
    )


_RESULTS_LOCK = threading.Lock()


@patch("stepfunctions")
def distributed_map_result_writer() -> Undo:
    """Export a Distributed Map's child executions to S3 as AWS does: result files and a manifest that lists them.

    moto limitation: its `ResultWriter` writes only `<prefix>/<map run id>/manifest.json` with empty
    result file lists (a TODO in moto), so what each child execution returned, or why it failed, is
    nowhere. AWS writes `SUCCEEDED_0.json` and `FAILED_0.json` beside the manifest, each a JSON array
    of the child executions with that outcome (ARN, name, input, output or error and cause, dates,
    status), and lists each file with its key and size in the manifest's `ResultFiles`.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor.distributed_item_processor_worker import (
        DistributedItemProcessorWorker,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.result_writer.resource_eval.resource_eval_s3 import (
        ResourceEvalS3,
    )
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramEnded, ProgramError, ProgramStopped

    originals = {
        "eval_input": DistributedItemProcessorWorker._eval_input,
        "eval_job": DistributedItemProcessorWorker._eval_job,
        "put_object": ResourceEvalS3.__dict__["_handle_put_object"],
    }

    def eval_input(self: Any, env_frame: Any) -> None:
        originals["eval_input"](self, env_frame)
        # The child execution's input is the item after ItemSelector, which the job itself does not keep.
        env_frame._localcloud_child_input = env_frame.states.get_input()

    def eval_job(self: Any, env: Any, job: Any) -> None:
        started = datetime.now(timezone.utc)
        originals["eval_job"](self, env, job)
        record = self._map_run_record
        name = str(uuid.uuid4())
        result: dict[str, Any] = {
            "ExecutionArn": f"{record.map_state_machine_arn.replace(':stateMachine:', ':execution:')}:{name}",
            "Input": json.dumps(getattr(env, "_localcloud_child_input", job.job_input)),
            "InputDetails": {"Included": True},
            "Name": name,
            "StartDate": iso_millis(started),
            "StateMachineArn": record.map_state_machine_arn,
            "StopDate": iso_millis(datetime.now(timezone.utc)),
        }
        state = env.program_state()
        if isinstance(state, ProgramEnded):
            result.update(Status="SUCCEEDED", Output=json.dumps(job.job_output), OutputDetails={"Included": True})
        else:
            details = (state.error if isinstance(state, ProgramError) else None) or {}
            result.update(Status="ABORTED" if isinstance(state, ProgramStopped) else "FAILED",
                          Error=details.get("error", "States.Runtime"), Cause=details.get("cause", ""))
        with _RESULTS_LOCK:
            record.__dict__.setdefault("_localcloud_results", []).append((job.job_index, result))

    def put_object(env: Any, resource_runtime_part: Any, state_credentials: Any) -> None:
        parameters = env.stack.pop()
        env.stack.pop()  # the children's outputs: AWS writes them to S3 instead of the state's output
        s3 = ResourceEvalS3._get_s3_client(resource_runtime_part=resource_runtime_part,
                                           state_credentials=state_credentials)
        record = env.map_run_record_pool_manager.get_all()[-1]
        bucket, prefix = parameters["Bucket"], parameters.get("Prefix", "")
        folder = f"{prefix.rstrip('/')}/" if prefix else ""
        folder += record.map_run_arn.split(":")[-1] + "/"
        with _RESULTS_LOCK:
            results = [result for _, result in sorted(record.__dict__.get("_localcloud_results", []),
                                                      key=lambda indexed: indexed[0])]
        files: dict[str, list[dict[str, Any]]] = {"FAILED": [], "PENDING": [], "SUCCEEDED": []}
        for status in ("SUCCEEDED", "FAILED"):
            entries = [r for r in results if (r["Status"] == "SUCCEEDED") == (status == "SUCCEEDED")]
            if entries:
                body = json.dumps(entries).encode()
                key = f"{folder}{status}_0.json"
                s3.put_object(Bucket=bucket, Key=key, Body=body)
                files[status].append({"Key": key, "Size": len(body)})
        manifest_key = f"{folder}manifest.json"
        s3.put_object(Bucket=bucket, Key=manifest_key, Body=json.dumps(
            {"DestinationBucket": bucket, "MapRunArn": record.map_run_arn, "ResultFiles": files}).encode())
        env.stack.append({"MapRunArn": record.map_run_arn,
                          "ResultWriterDetails": {"Bucket": bucket, "Key": manifest_key}})

    return undo_all(
        replace(DistributedItemProcessorWorker, _eval_input=eval_input, _eval_job=eval_job),
        replace(ResourceEvalS3, _handle_put_object=staticmethod(put_object)),
    )


@patch("stepfunctions")
def strict_max_concurrency_path() -> Undo:
    """Refuse a `MaxConcurrencyPath` value that is not a whole JSON number from 0 to 2^31 - 1, as AWS does.

    moto limitation: it passes the value through Python's `int()`, so `2.5` runs at 2, the string
    `"3"` at 3, and `1e15` starts a thread per item; AWS fails the execution with `States.Runtime`
    ("not a valid integer"), which no Catch can take. A whole number written with a fraction
    (`2.0`) is refused here too: AWS does not document it, and a workflow never needs to pass one.
    moto also starts one thread per unit of concurrency, items or not (1,000 threads for three
    models); at most one per item is started here, which changes nothing but the emulator's load.
    """
    from moto.stepfunctions.parser.api import ExecutionFailedEventDetails, HistoryEventType
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import StatesErrorName
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.inline_iteration_component import (
        InlineIterationComponent,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.max_concurrency import MaxConcurrencyPath
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    original_launch = InlineIterationComponent.__dict__["_launch_worker"]

    def launch_worker(self: Any, env: Any, eval_input: Any, job_pool: Any) -> Any:
        launched = job_pool.__dict__.setdefault("_localcloud_workers", 0)
        if launched >= job_pool._jobs_number:
            return None
        job_pool._localcloud_workers = launched + 1
        return original_launch(self, env=env, eval_input=eval_input, job_pool=job_pool)

    def eval_max_concurrency(self: Any, env: Any) -> int:
        self.string_sampler.eval(env=env)
        value = env.stack.pop()
        whole = isinstance(value, int) and not isinstance(value, bool)
        if whole and 0 <= value <= INT32_RANGE[1]:
            return value
        path = self.string_sampler.literal_value
        cause = (f"Expected non-negative integer for MaxConcurrency, got '{value}' instead." if whole and value < 0
                 else f'The MaxConcurrencyPath field refers to value "{value if isinstance(value, str) else json.dumps(value)}"'
                      f" which is not a valid integer: {path}")
        runtime = StatesErrorNameType.StatesRuntime
        raise FailureEventException(failure_event=FailureEvent(
            env=env,
            error_name=StatesErrorName(typ=runtime),
            event_type=HistoryEventType.ExecutionFailed,
            event_details=EventDetails(executionFailedEventDetails=ExecutionFailedEventDetails(
                error=runtime.to_name(), cause=cause)),
        ))

    return undo_all(
        replace(MaxConcurrencyPath, _eval_max_concurrency=eval_max_concurrency),
        replace(InlineIterationComponent, _launch_worker=launch_worker),
    )
