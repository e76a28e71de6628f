"""moto's Map state: a Distributed Map's failure threshold and result files, and `MaxConcurrencyPath` as AWS reads it."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import datetime, timezone
from typing import Any

from localcloud.emulator.patches.registry import Undo, patch, replace, undo_all
from localcloud.emulator.patches.stepfunctions import iso_millis
from localcloud.emulator.patches.stepfunctions_quotas import INT32_RANGE, states_failure

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
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.inline_iteration_component import (
        InlineIterationComponent,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.max_concurrency import MaxConcurrencyPath

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
        raise _runtime_failure(env, cause)

    return undo_all(
        replace(MaxConcurrencyPath, _eval_max_concurrency=eval_max_concurrency),
        replace(InlineIterationComponent, _launch_worker=launch_worker),
    )


# A Map state's ItemBatcher travels through moto's parser inside the state's Comment, the one free-text field
# moto keeps on every state: `<marker><base64 of {"ItemBatcher": ..., "Comment": <its own comment or null>}>`
# (base64, since moto keeps a string's JSON escapes as they were written).
_BATCHER_MARKER = "localcloud:ItemBatcher:"
_BATCHER_FIELDS = ("MaxItemsPerBatch", "MaxItemsPerBatchPath", "MaxInputBytesPerBatch", "MaxInputBytesPerBatchPath",
                   "BatchInput")
MAX_INPUT_BYTES_PER_BATCH = 256 * 1024  # AWS's ceiling for MaxInputBytesPerBatch, and its default


def _item_batcher_errors(state_name: str, batcher: Any, mode: Any) -> list[str]:
    """What AWS refuses in an ItemBatcher at CreateStateMachine, in its words where it has them."""
    where = f"/States/{state_name}/ItemBatcher"
    if not isinstance(batcher, dict):
        return [f"{where}: ItemBatcher must be an object, got {batcher!r}"]
    errors = [f"{where}: unknown field {name!r}; ItemBatcher takes {', '.join(_BATCHER_FIELDS)}"
              for name in batcher if name not in _BATCHER_FIELDS]
    if mode != "DISTRIBUTED":
        errors.append(f"{where}: ItemBatcher is allowed only in a Map whose ProcessorConfig Mode is DISTRIBUTED")
    for name, high in (("MaxItemsPerBatch", INT32_RANGE[1]), ("MaxInputBytesPerBatch", MAX_INPUT_BYTES_PER_BATCH)):
        value = batcher.get(name)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= high):
            errors.append(f"{where}/{name}: must be a whole number from 1 to {high}, got {value!r}")
        if name in batcher and f"{name}Path" in batcher:
            errors.append(f"{where}: give {name} or {name}Path, not both")
    if not any(name in batcher for name in _BATCHER_FIELDS[:4]):
        errors.append(f"{where}: give MaxItemsPerBatch, MaxInputBytesPerBatch or a Path of either")
    return errors


def _carry_item_batchers(definition: str) -> str:
    """The definition with every Map's ItemBatcher moved into its Comment, where moto's grammar lets it pass.

    Raises `ValueError` with AWS's reasons for an ItemBatcher AWS would refuse.
    """
    try:
        document = json.loads(definition)
    except ValueError:
        return definition  # moto's parser reports it
    errors: list[str] = []
    carried = False

    def visit(states: Any) -> None:
        nonlocal carried
        if not isinstance(states, dict):
            return
        for name, state in states.items():
            if not isinstance(state, dict):
                continue
            processor = state.get("ItemProcessor") or state.get("Iterator") or {}
            if "ItemBatcher" in state:
                mode = (processor.get("ProcessorConfig") or {}).get("Mode") if isinstance(processor, dict) else None
                batcher = state.pop("ItemBatcher")
                errors.extend(_item_batcher_errors(name, batcher, mode))
                state["Comment"] = _BATCHER_MARKER + base64.urlsafe_b64encode(json.dumps(
                    {"ItemBatcher": batcher, "Comment": state.get("Comment")}).encode()).decode()
                carried = True
            for branch in [processor, *(state.get("Branches") or [])]:
                if isinstance(branch, dict):
                    visit(branch.get("States"))

    visit(document.get("States") if isinstance(document, dict) else None)
    if errors:
        raise ValueError("; ".join(errors))
    return json.dumps(document) if carried else definition


def _resolve_batch_input(template: Any, state_input: Any, context: Any) -> Any:
    """BatchInput as AWS evaluates it against the Map state's input: fields ending in `.$` are paths (`$` or `$$`)."""
    from moto.stepfunctions.parser.asl.utils.json_path import extract_json

    if isinstance(template, list):
        return [_resolve_batch_input(value, state_input, context) for value in template]
    if not isinstance(template, dict):
        return template
    resolved = {}
    for key, value in template.items():
        if key.endswith(".$"):
            if not isinstance(value, str) or not value.startswith("$"):
                raise ValueError(f"BatchInput field {key!r}: the emulator evaluates paths ($ or $$) only, got {value!r}")
            resolved[key[:-2]] = (extract_json("$" + value[2:], context) if value.startswith("$$")
                                  else extract_json(value, state_input))
        else:
            resolved[key] = _resolve_batch_input(value, state_input, context)
    return resolved


def form_batches(items: list[Any], *, max_items: int | None, max_bytes: int,
                 batch_input: Any | None) -> list[dict[str, Any]]:
    """Group items in order as AWS does: each batch `{"Items": [...]}` (and `"BatchInput"` when given), at most
    `max_items` items and `max_bytes` bytes of its compact JSON, BatchInput included.

    Raises `ValueError` for an item that alone does not fit in `max_bytes`.
    """
    def size(value: Any) -> int:
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))

    shell = {"Items": []} if batch_input is None else {"Items": [], "BatchInput": batch_input}
    empty_bytes = size(shell)
    batches: list[dict[str, Any]] = []
    current: list[Any] = []
    current_bytes = empty_bytes
    for index, item in enumerate(items):
        item_bytes = size(item) + (1 if current else 0)  # the comma before every item but the first
        if empty_bytes + size(item) > max_bytes:
            raise ValueError(f"item {index} takes {empty_bytes + size(item)} bytes in a batch, over MaxInputBytesPerBatch"
                             f" {max_bytes}: raise the limit or make the item smaller")
        if current and ((max_items is not None and len(current) >= max_items) or current_bytes + item_bytes > max_bytes):
            batches.append({**shell, "Items": current})
            current, current_bytes, item_bytes = [], empty_bytes, size(item)
        current.append(item)
        current_bytes += item_bytes
    if current:
        batches.append({**shell, "Items": current})
    return batches


class _BatchingSource:
    """Stands in for a Map's ItemReader (or ItemsPath): the items it reads, selected one by one, then batched."""

    def __init__(self, source: Any, batcher: dict[str, Any], item_selector: Any) -> None:
        self.source, self.batcher, self.item_selector = source, batcher, item_selector

    def eval(self, env: Any) -> None:
        from moto.stepfunctions.parser.asl.eval.states import ItemData
        from moto.stepfunctions.parser.asl.utils.json_path import extract_json

        self.source.eval(env=env)
        items = env.stack.pop()
        state_input = env.states.get_input()
        context = env.states.context_object.context_object_data

        def bound(name: str, default: int) -> int:
            if name in self.batcher:
                return self.batcher[name]
            if f"{name}Path" not in self.batcher:
                return default
            value = extract_json(self.batcher[f"{name}Path"], state_input)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise _runtime_failure(env, f"The {name}Path field refers to value {json.dumps(value)} which is not"
                                            f" a positive integer: {self.batcher[f'{name}Path']}")
            return value

        selected = items
        if self.item_selector is not None and isinstance(items, list):
            # AWS applies ItemSelector to each item, with $$.Map.Item as that item, before batching.
            selected = []
            saved_map = context.get("Map")
            try:
                for index, item in enumerate(items):
                    frame = env.open_inner_frame()
                    try:
                        frame.states.context_object.context_object_data["Map"] = {"Item": ItemData(Index=index,
                                                                                                   Value=item)}
                        frame.states.reset(input_value=state_input)
                        frame.stack.append(state_input)
                        self.item_selector.eval(frame)
                        selected.append(frame.stack.pop())
                    finally:
                        env.delete_frame(frame)
            finally:
                if saved_map is None:
                    context.pop("Map", None)
                else:
                    context["Map"] = saved_map
        try:
            batch_input = (_resolve_batch_input(self.batcher["BatchInput"], state_input, context)
                           if "BatchInput" in self.batcher else None)
            # Without MaxItemsPerBatch only the bytes bound a batch.
            batches = form_batches(selected if isinstance(selected, list) else [],
                                   max_items=bound("MaxItemsPerBatch", INT32_RANGE[1]),
                                   max_bytes=min(bound("MaxInputBytesPerBatch", MAX_INPUT_BYTES_PER_BATCH),
                                                 MAX_INPUT_BYTES_PER_BATCH), batch_input=batch_input)
        except ValueError as error:
            raise _runtime_failure(env, str(error)) from error
        env.stack.append(batches if isinstance(selected, list) else selected)


def _runtime_failure(env: Any, cause: str) -> Exception:
    return states_failure(env, "StatesRuntime", cause)


@patch("stepfunctions")
def distributed_map_item_batcher() -> Undo:
    """Run a Distributed Map's `ItemBatcher`: one child execution per batch of items, as AWS forms them.

    moto limitation: its grammar has no `ItemBatcher`, so a definition with one is refused as a whole
    (`InvalidDefinition`). AWS applies `ItemSelector` to each item, then groups the items in order into
    batches of at most `MaxItemsPerBatch` items (or `MaxItemsPerBatchPath`, read from the state's input)
    and at most `MaxInputBytesPerBatch` bytes (256 KiB at most and by default), each child's input being
    `{"Items": [...], "BatchInput": ...}` with `BatchInput` evaluated against the Map state's input.
    What the emulator does not do: count a failed batch's items one by one in the Map Run's `ItemCounts`
    and tolerated failures (it counts child executions there, as `ExecutionCounts` does on AWS), and
    evaluate intrinsic functions in `BatchInput` (paths only; anything else fails the run, saying so).
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.state_map import StateMap
    from moto.stepfunctions.parser.asl.parse import asl_parser

    original_input_stream = asl_parser.InputStream
    original_eval_execution = StateMap.__dict__["_eval_execution"]

    def input_stream(definition: str) -> Any:
        # The one point every parse of a definition (create, update, each execution's start) passes text through.
        try:
            carried = _carry_item_batchers(definition)
        except ValueError as error:
            raise asl_parser.ASLParserException(errors=[str(error)]) from error
        return original_input_stream(carried)

    def eval_execution(self: Any, env: Any) -> None:
        if "_localcloud_batcher" not in self.__dict__:
            # Once per parsed state: every execution parses its own definition, so states are never shared by runs.
            comment = self.comment.comment if self.comment is not None else ""
            self._localcloud_batcher = None
            if comment.startswith(_BATCHER_MARKER):
                carried = json.loads(base64.urlsafe_b64decode(comment[len(_BATCHER_MARKER):]))
                self._localcloud_batcher = carried["ItemBatcher"]
                self.comment.__dict__["comment"] = carried["Comment"] or ""
                selector, self.item_selector = self.item_selector, None
                if self.item_reader is not None:
                    self.item_reader = _BatchingSource(self.item_reader, carried["ItemBatcher"], selector)
                elif self.items_path is not None:
                    self.items_path = _BatchingSource(self.items_path, carried["ItemBatcher"], selector)
        original_eval_execution(self, env)

    return undo_all(
        replace(asl_parser, InputStream=input_stream),
        replace(StateMap, _eval_execution=eval_execution),
    )


class _MapRunGate:
    """How many child executions of one Map Run run at once: at most its `max_concurrency` now (0: no limit).

    A worker takes a slot before it starts each child execution and gives it back when that child
    ends; a lowered limit makes workers wait for a slot (children already running finish), a raised
    one wakes them and starts more workers.
    """

    def __init__(self, record: Any) -> None:
        self.record = record
        self.condition = threading.Condition()
        self.running = 0
        self.holders: set[int] = set()
        self.workers = 0
        self.launch: Any = None  # starts one more worker of this Map Run (set when its first worker starts)
        self.job_pool: Any = None

    def limit(self) -> int | None:
        value = self.record.max_concurrency
        return None if not value else int(value)

    def take(self, worker: Any) -> bool:
        """Wait for a slot for `worker`'s next child; False when the Map Run ended meanwhile (failed, stopped)."""
        with self.condition:
            while True:
                limit = self.limit()
                if limit is None or self.running < limit:
                    self.running += 1
                    self.holders.add(id(worker))
                    return True
                if self.job_pool is not None and self.job_pool._termination_event.is_set():
                    return False
                self.condition.wait(timeout=0.1)

    def give_back(self, worker: Any) -> None:
        with self.condition:
            if id(worker) in self.holders:
                self.holders.discard(id(worker))
                self.running -= 1
                self.condition.notify_all()

    def more_workers(self) -> int:
        """How many workers to start so that a raised limit is used (no more than the items left)."""
        with self.condition:
            self.condition.notify_all()
            if self.launch is None or self.job_pool is None:
                return 0
            left = len(self.job_pool._open_jobs)
            limit = self.limit()
            wanted = left if limit is None else limit
            return max(0, min(wanted - self.workers, left))


_GATES_LOCK = threading.Lock()


def _gate(record: Any) -> _MapRunGate:
    with _GATES_LOCK:
        gate = record.__dict__.get("_localcloud_gate")
        if gate is None:
            gate = record._localcloud_gate = _MapRunGate(record)
        return gate


@patch("stepfunctions")
def distributed_map_run_follows_update() -> Undo:
    """Make `UpdateMapRun`'s `maxConcurrency` change how many child executions a running Map Run starts at once.

    moto limitation: `UpdateMapRun` stores the new value (and `DescribeMapRun` shows it), but the Map
    Run started its workers from the value it began with and keeps that many running to the end (a
    TODO in moto), so lowering it slows nothing. AWS applies it to the running Map Run: after a
    lower value no new child execution starts while as many as it allows are running (those already
    running finish), and after a higher one more start. Here a worker takes a slot before each
    child execution, within the Map Run's current `maxConcurrency`, and a raise starts more workers.
    """
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.distributed_iteration_component import (
        DistributedIterationComponent,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.inline_iteration_component import (
        InlineIterationComponent,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor.distributed_item_processor_worker import (
        DistributedItemProcessorWorker,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration.itemprocessor.map_run_record import (
        MapRunRecord,
    )

    originals = {
        "eval_pool": DistributedItemProcessorWorker.__dict__["_eval_pool"],
        "eval": DistributedItemProcessorWorker.__dict__["eval"],
        "update": MapRunRecord.__dict__["update"],
    }

    def launch_worker(self: Any, env: Any, eval_input: Any, job_pool: Any) -> Any:
        gate = _gate(eval_input.map_run_record)
        with gate.condition:
            if gate.launch is None:
                gate.job_pool = job_pool
                # One more worker of this Map Run, counted as the first ones are (for a raised `maxConcurrency`).
                gate.launch = lambda: launch_worker(self, env, eval_input, job_pool)
            gate.workers += 1
        # Whatever starts a worker now (the Map Run's cap on workers included), looked up when it runs.
        worker = InlineIterationComponent._launch_worker(self, env=env, eval_input=eval_input, job_pool=job_pool)
        if worker is None:
            with gate.condition:
                gate.workers -= 1
        return worker

    def eval_pool(self: Any, job: Any, worker_frame: Any) -> None:
        # moto's worker evaluates a child, then asks for the next one and comes back here with it: the
        # child before it has ended, so its slot is free before the next one waits for a slot.
        gate = _gate(self._map_run_record)
        gate.give_back(self)
        if job is not None and not gate.take(self):
            job = None  # the Map Run ended while this child waited: it never starts
        try:
            originals["eval_pool"](self, job, worker_frame)
        finally:
            gate.give_back(self)

    def worker_eval(self: Any) -> None:
        try:
            originals["eval"](self)
        finally:
            gate = _gate(self._map_run_record)
            with gate.condition:
                gate.workers -= 1

    def update(self: Any, max_concurrency: Any, tolerated_failure_count: Any, tolerated_failure_percentage: Any) -> None:
        originals["update"](self, max_concurrency=max_concurrency, tolerated_failure_count=tolerated_failure_count,
                            tolerated_failure_percentage=tolerated_failure_percentage)
        gate = _gate(self)
        for _ in range(gate.more_workers()):
            gate.launch()

    return undo_all(
        replace(DistributedIterationComponent, _launch_worker=launch_worker),
        replace(DistributedItemProcessorWorker, _eval_pool=eval_pool, eval=worker_eval),
        replace(MapRunRecord, update=update),
    )


@patch("stepfunctions")
def map_runs_while_an_execution_starts() -> Undo:
    """Answer `ListMapRuns` and `DescribeMapRun` while an execution is still starting.

    moto limitation: `StartExecution` lists the execution before its interpreter exists, and in that
    instant `ListMapRuns` of it, and `DescribeMapRun` of any Map Run at all (it searches every
    execution), fail with a 500 (an `AttributeError` on the missing interpreter). AWS answers an
    execution that has not reached its Map yet with no Map Runs, and finds a Map Run whatever other
    executions are doing; a controller that lists the Map Runs of every running execution meets
    that instant whenever a workflow starts.
    """
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend
    from moto.stepfunctions.parser.api import ResourceNotFound

    original_list = StepFunctionsParserBackend.__dict__["list_map_runs"]

    def started(execution: Any) -> Any:
        worker = execution.exec_worker
        return None if worker is None or getattr(worker, "env", None) is None else worker.env

    def list_map_runs(self: Any, execution_arn: str) -> dict[str, Any]:
        if started(self.describe_execution(execution_arn=execution_arn)) is None:
            return {"mapRuns": []}
        return original_list(self, execution_arn)

    def describe_map_run(self: Any, map_run_arn: str) -> dict[str, Any]:
        for execution in self._get_executions():
            env = started(execution)
            record = env.map_run_record_pool_manager.get(map_run_arn) if env is not None else None
            if record is not None:
                return record.describe()
        raise ResourceNotFound()

    return replace(StepFunctionsParserBackend, list_map_runs=list_map_runs, describe_map_run=describe_map_run)
