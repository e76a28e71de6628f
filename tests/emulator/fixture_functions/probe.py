"""Handlers that probe the emulator's Lambda runtime (not part of the app)."""

import os
import time


class CustomThrottle(Exception):
    """Raised on demand so tests can see Step Functions retry and catch it by name."""


def echo_environment(event, context):
    time.sleep(event.get("hold_sec", 0))
    return {"marker": os.environ.get("MARKER"), "item": event.get("item"), "pid": os.getpid(),
            "function_name": context.function_name, "remaining_ms": context.get_remaining_time_in_millis()}


def fail(event, context):
    raise CustomThrottle(f"asked to fail for item {event.get('item')}")


def sleep(event, context):
    time.sleep(event["sec"])
    return {"slept": event["sec"]}


def partial_batch(event, context):
    """Fail the records whose body is "poison"; report them as partial batch failures."""
    failures = [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "poison"]
    return {"batchItemFailures": failures, "batch_size": len(event["Records"])}
