"""AWS cost per million downstream calls for each architecture choice, from list prices kept in one file.

`prices.json` holds every price (us-east-1, on-demand, first tier, free tiers left out) and the
date it was read; this module holds only arithmetic and the architectures. Each architecture is a
set of per-call counts, so its bill reads as a sum anyone can redo:

- Step Functions Standard: state transitions x $0.025 per 1,000 (retries are transitions too);
  Express: one request per execution plus its duration (rounded up to 100 ms) x its memory
  (rounded up to 64 MB) x the GB-second price. An execution that makes N calls lasts N / rate: the
  limiter paces it.
- Lambda: one request per invocation plus the seconds it is billed x its memory x the GB-second
  price. A caller is billed while it waits for the downstream, batched or not.
- SQS: one request per SendMessageBatch, ReceiveMessage and DeleteMessageBatch of up to 10
  messages (each 64 KB chunk of a message is a request; calls here are small).
- DynamoDB on-demand: the limiter's write request units: the project's GCRA makes one conditional
  UpdateItem per admitted call; the "refill, then consume" bucket of public samples makes two
  (see `bench/limiter.py`, which counts them on the emulator).

What it leaves out: free tiers, CloudWatch (logs, metrics, alarms: the same for every design),
data transfer, the controller's own runs (one a minute whatever the traffic: about $0.01 a day),
and retries (each retry adds what one call costs, in every design).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = ["ARCHITECTURES", "PRICES_FILE", "Architecture", "CallProfile", "cost_per_million_calls", "load_prices",
           "naive", "recommended"]

PRICES_FILE = Path(__file__).with_name("prices.json")
MILLION = 1_000_000


def load_prices(path: Path = PRICES_FILE) -> dict[str, Any]:
    prices = json.loads(path.read_text())
    for section in ("step_functions", "lambda", "sqs", "dynamodb"):
        if section not in prices:
            raise ValueError(f"{path} has no {section!r} prices; it needs step_functions, lambda, sqs and dynamodb")
    return prices


@dataclass(frozen=True)
class CallProfile:
    """One call, the same in every design.

    :param call_sec: what a caller waits for one call: the CRM's 200 ms, the network both ways and
        the limiter's write (the lab's scenarios measure about 0.24 s, plus 0.03 s of invoke).
    :param lambda_memory_mb: the callers' memory (`HandlerFunction`'s default).
    :param rate_per_sec: the pace calls go at (the limiter's rate): what an Express execution that
        makes many calls is billed for while it waits its turn.
    """

    call_sec: float = 0.27
    lambda_memory_mb: int = 256
    rate_per_sec: float = 9.9


@dataclass(frozen=True)
class Architecture:
    """Per-call counts of one design; see the module docstring for what each is billed at."""

    name: str
    label: str
    workflow: Literal["standard", "express", "none"]
    transitions_per_call: float = 0.0
    calls_per_execution: int = 1
    express_memory_mb: int = 64
    lambda_invocations_per_call: float = 1.0
    limiter_writes_per_call: float = 1.0
    sqs_requests_per_call: float = 0.0
    role: Literal["naive", "recommended", ""] = ""
    note: str = ""


ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture(
        "seed_standard_per_item", "seed: Standard workflow, a Lambda per item, refill-then-consume limiter",
        "standard", transitions_per_call=1.0, limiter_writes_per_call=2.0, role="naive",
        note="counting only the Task's own transition per item, the least a Standard Map iteration costs",
    ),
    Architecture(
        "standard_per_item_gcra", "Standard workflow, a Lambda per item, GCRA limiter",
        "standard", transitions_per_call=1.0,
        note="the limiter's write saved; the transitions still dominate",
    ),
    Architecture(
        "express_per_item", "Express workflow per item, a Lambda per item, GCRA limiter",
        "express", calls_per_execution=1,
    ),
    Architecture(
        "express_batch_lambda_per_item", "Express workflow per 100 items (inline Map), a Lambda per item, GCRA limiter",
        "express", calls_per_execution=100,
    ),
    Architecture(
        "express_batch_lambda_per_10", "Express workflow per 100 items, a Lambda per 10 items, GCRA limiter",
        "express", calls_per_execution=100, lambda_invocations_per_call=0.1,
    ),
    Architecture(
        "sqs_batched_consumer", "SQS queue, event-source mapping in batches of 10, GCRA limiter (ThrottledQueueConsumer)",
        "none", lambda_invocations_per_call=0.1, sqs_requests_per_call=0.3, role="recommended",
        note="send, receive and delete in batches of 10; the project's buffered design",
    ),
    Architecture(
        "express_batch_direct", "Express workflow per 100 items, direct integrations (HTTP Task, DynamoDB UpdateItem)",
        "express", calls_per_execution=100, lambda_invocations_per_call=0.0,
        note="only where the downstream can be called by an HTTP Task; the GCRA update in the workflow itself",
    ),
)


def naive() -> Architecture:
    return next(a for a in ARCHITECTURES if a.role == "naive")


def recommended() -> Architecture:
    return next(a for a in ARCHITECTURES if a.role == "recommended")


def cost_per_million_calls(architecture: Architecture, prices: Mapping[str, Any] | None = None,
                           profile: CallProfile = CallProfile()) -> dict[str, float]:
    """Dollars per million downstream calls, by line, and `total`."""
    prices = prices or load_prices()
    sfn, lam, sqs, ddb = prices["step_functions"], prices["lambda"], prices["sqs"], prices["dynamodb"]
    step_functions = 0.0
    if architecture.workflow == "standard":
        step_functions = MILLION * architecture.transitions_per_call * sfn["standard_per_state_transition"]
    elif architecture.workflow == "express":
        executions = MILLION / architecture.calls_per_execution
        rounding_sec = sfn["express_duration_rounding_ms"] / 1000
        duration_sec = max(architecture.calls_per_execution / profile.rate_per_sec, profile.call_sec)
        billed_sec = math.ceil(duration_sec / rounding_sec - 1e-9) * rounding_sec
        chunk_mb = sfn["express_memory_chunk_mb"]
        billed_gb = math.ceil(architecture.express_memory_mb / chunk_mb) * chunk_mb / 1024
        step_functions = executions * (sfn["express_per_request"] + billed_sec * billed_gb * sfn["express_per_gb_second"])
    invocations = MILLION * architecture.lambda_invocations_per_call
    lambda_requests = invocations * lam["per_request"]
    lambda_duration = 0.0
    if architecture.lambda_invocations_per_call > 0:
        lambda_duration = MILLION * profile.call_sec * profile.lambda_memory_mb / 1024 * lam["x86_per_gb_second"]
    sqs_cost = MILLION * architecture.sqs_requests_per_call * sqs["standard_per_request"]
    dynamodb = MILLION * architecture.limiter_writes_per_call * ddb["on_demand_per_write_request_unit"]
    lines = {
        "step_functions": step_functions,
        "lambda_requests": lambda_requests,
        "lambda_duration": lambda_duration,
        "sqs": sqs_cost,
        "dynamodb_limiter": dynamodb,
    }
    lines = {name: round(value, 4) for name, value in lines.items()}
    lines["total"] = round(sum(lines.values()), 4)
    return lines
