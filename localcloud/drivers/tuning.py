"""An operator tunes a downstream through Parameter Store, then writes two bad values, on the emulator.

What each write does to the deployed caller: a good document is in force after the tunables cache,
text that is not JSON is refused by Parameter Store itself (the tunables' `AllowedPattern`), and JSON
the caller cannot use (a rate that is not a number) reaches it, which keeps the last good value and
logs the refusal. The seed document is put back whatever happens. `operator_tuning` is the
operator's write alone, for the tests and drivers that run a use case under a tuning.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from localcloud.emulator.cloud import LocalCloud
from throttling.core import names

TUNED = {"rate_per_sec": 4, "burst": 4, "max_concurrency": 1, "mode": "manual"}
NOT_JSON = '{"rate_per_sec": "fast"'
UNUSABLE = {"rate_per_sec": "fast", "burst": 4, "max_concurrency": 1}
RATE_LIMITED_ATTEMPTS = 5


@dataclass(frozen=True)
class TuningRun:
    after_tuning: dict[str, Any]  # the tunables the caller answered with once the tuning was read
    not_json_refused: bool  # Parameter Store refused text that is not JSON
    after_unusable: dict[str, Any]  # what it answered with once the unusable document was read


def run(cloud: LocalCloud, caller: str, *, downstream: str = "crm", stage: str = "dev",
        on_wait: Callable[[float], None] = lambda _seconds: None) -> TuningRun:
    """Tune `downstream`, then break its document twice; `on_wait` hears of each wait for the tunables cache."""
    ssm = cloud.client("ssm")
    name = names.downstream_tunables_parameter(stage, downstream)
    seed = ssm.get_parameter(Name=name)["Parameter"]["Value"]
    try:
        ssm.put_parameter(Name=name, Overwrite=True, Type="String", Value=json.dumps(TUNED))
        after_tuning = tunables_after_cache(cloud, caller, on_wait)
        try:
            ssm.put_parameter(Name=name, Overwrite=True, Type="String", Value=NOT_JSON)
            not_json_refused = False
        except ssm.exceptions.ParameterPatternMismatchException:
            not_json_refused = True
        ssm.put_parameter(Name=name, Overwrite=True, Type="String", Value=json.dumps(UNUSABLE))
        after_unusable = tunables_after_cache(cloud, caller, on_wait)
    finally:
        ssm.put_parameter(Name=name, Overwrite=True, Type="String", Value=seed)
    return TuningRun(after_tuning, not_json_refused, after_unusable)


def tunables_after_cache(cloud: LocalCloud, caller: str, on_wait: Callable[[float], None]) -> dict[str, Any]:
    """Wait out the caller's tunables cache, so its next call reads SSM afresh; the tunables it called with.

    A call the limiter has no token for in time (`RateLimited`: on a loaded machine the caller's one
    short wait can run out) is made again after the wait it names, as its workflow's Retry would;
    any other error is raised with the caller's answer, since no tunables can be read from it.
    """
    lambda_client = cloud.client("lambda")
    variables = lambda_client.get_function_configuration(FunctionName=caller)["Environment"]["Variables"]
    cache_sec = float(variables[names.ENV_TUNABLES_CACHE_SEC])
    if cache_sec:
        on_wait(cache_sec)
        time.sleep(cache_sec + 0.5)
    for _ in range(RATE_LIMITED_ATTEMPTS):
        answer = lambda_client.invoke(FunctionName=caller, Payload=json.dumps({"path": "/users/1"}))
        payload = json.loads(answer["Payload"].read())
        if "FunctionError" not in answer:
            return payload["tunables_in_force"]
        if payload.get("errorType") != "RateLimited":
            break
        time.sleep(json.loads(payload["errorMessage"]).get("retry_after_sec", 1.0))
    raise RuntimeError(f"the {caller} call failed, so it shows no tunables: {payload}")


@contextlib.contextmanager
def operator_tuning(cloud: LocalCloud, *, stage: str = "dev") -> Iterator[Callable[..., None]]:
    """`tune(downstream, **changes)` writes a downstream's tunables document as an operator would (the changes
    merged into the seeded document, pinned with `"mode": "manual"`); the seeds are back on leaving.

    Each call starts from the seed, not from the previous call, so a tuning never carries over by accident.
    """
    ssm = cloud.client("ssm")
    seeds: dict[str, str] = {}

    def tune(downstream: str, **changes: Any) -> None:
        name = names.downstream_tunables_parameter(stage, downstream)
        if name not in seeds:
            seeds[name] = ssm.get_parameter(Name=name)["Parameter"]["Value"]
        document = {**json.loads(seeds[name]), **changes, "mode": "manual"}
        ssm.put_parameter(Name=name, Value=json.dumps(document), Type="String", Overwrite=True)

    try:
        yield tune
    finally:
        for name, seed in seeds.items():
            ssm.put_parameter(Name=name, Value=seed, Type="String", Overwrite=True)
