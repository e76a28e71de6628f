"""A noisy tenant and a quiet one share the CRM: whose calls the shared limiter lets through, and in what order.

The noisy tenant starts several CRM batch e-mail executions at once: at the CRM's Map concurrency each
offers far more than its share of the CRM's bucket. Once the CRM has received `quiet_after_noisy_calls`
of its calls (the bucket is saturated by then, whatever the machine's speed), the quiet tenant starts
one small execution. With `shares=True` every execution names its tenant and the CRM's tunables give
each one a share, as an operator sets them; with `shares=False` the executions name no tenant, so
every call is the default tenant's, whose share is then the whole bucket: one bucket, first come first
served, as before tenants. Each run starts from a full bucket and a warm fleet of callers (as many
as it has calls in flight), so the order says nothing of cold starts. What comes back is counted,
not timed (the tests must not depend on the machine's speed): the CRM's calls in the order it
received them, each tenant's refusals from the CRM caller's log (one line
`names.LIMITER_REFUSED_LOG_MESSAGE` per refused take), and the dead letters. Shared by the e2e test
and the demo.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from localcloud.drivers.common import POLL_INTERVAL_SEC, ExecutionResult, drain_queue, layer_stack, run_execution
from localcloud.drivers.crm_batch import crm_batch_outputs, seed_segment
from localcloud.drivers.inner_loop import CRM_BUCKET_KEYS
from localcloud.emulator.cloud import LocalCloud
from localcloud.emulator.deployer import DeployedStack
from localcloud.referee.downstream_simulator import DownstreamSimulator, RecordedRequest
from throttling.core import names

NOISY, QUIET = "noisy", "quiet"
# The operator's tuning for the run with shares: the quiet tenant's share covers what it asks for (its
# few users at once, one call each per expected latency, paced by its bucket), the noisy tenant's is
# small, and what neither uses (0.3) is lent to whoever is busy (borrow_depth: the seeds' default, said
# out loud). Without shares the default tenant's share is the whole bucket: one bucket as before tenants.
QUIET_SHARE, NOISY_SHARE = 0.5, 0.2
SHARES_TUNING: Mapping[str, float] = {
    f"{names.TUNABLE_TENANT_SHARE_PREFIX}{QUIET}": QUIET_SHARE,
    f"{names.TUNABLE_TENANT_SHARE_PREFIX}{NOISY}": NOISY_SHARE,
    names.TUNABLE_BORROW_DEPTH: 0.5,
}
ONE_BUCKET_TUNING: Mapping[str, float] = {names.TUNABLE_DEFAULT_TENANT_SHARE: 1.0}

# `tune("crm", **changes)`: an operator's write of the CRM's tunables (`localcloud.drivers.tuning.operator_tuning`).
Tune = Callable[..., None]


@dataclass(frozen=True)
class CrmCall:
    """One request the CRM received: whose it was (the tenant that started its execution), and its answer."""

    tenant: str
    execution: str
    user_id: str
    method: str
    status: int


@dataclass(frozen=True)
class Refusal:
    """One take the shared limiter refused, from the CRM caller's log line."""

    tenant: str  # the tenant that started the execution
    logged_tenant: str | None  # the tenant the take was for (the default tenant when the run named none)
    retry_after_sec: float


@dataclass(frozen=True)
class TenantRun:
    """One run of both tenants' executions, as the CRM's referee and the caller's log saw it."""

    shares: bool
    users: Mapping[str, tuple[str, ...]]  # tenant -> its users, each to be e-mailed once
    executions: Mapping[str, ExecutionResult]  # execution name -> how it ended
    tenant_of_execution: Mapping[str, str]
    calls: tuple[CrmCall, ...]  # in the order the CRM received them
    refusals: tuple[Refusal, ...]
    dead_letters: tuple[dict[str, Any], ...]
    crm_stats: Mapping[str, Any] = field(default_factory=dict)
    quiet_started_after_noisy_calls: int = 0

    def calls_of(self, tenant: str) -> list[CrmCall]:
        return [call for call in self.calls if call.tenant == tenant]

    def emailed(self, tenant: str) -> Counter[str]:
        """user id -> how many times the CRM accepted an e-mail for it, for `tenant`'s users."""
        return Counter(call.user_id for call in self.calls_of(tenant) if call.method == "POST" and call.status < 300)

    def refusals_of(self, tenant: str) -> list[Refusal]:
        return [refusal for refusal in self.refusals if refusal.tenant == tenant]

    @property
    def quiet_done_after_noisy_calls(self) -> int | None:
        """How many of the noisy tenant's calls the CRM received before the quiet tenant's last one (None: the
        quiet tenant's calls never reached it)."""
        quiet_positions = [i for i, call in enumerate(self.calls) if call.tenant == QUIET]
        if not quiet_positions:
            return None
        return sum(1 for call in self.calls[:quiet_positions[-1]] if call.tenant == NOISY)

    @property
    def succeeded(self) -> int:
        return sum((result.output or {}).get("succeeded", 0) for result in self.executions.values())


def run(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], crm: DownstreamSimulator, tune: Tune, *,
        shares: bool = True, noisy_executions: int = 3, noisy_users_each: int = 12, quiet_users: int = 2,
        max_concurrency: int = 4, quiet_after_noisy_calls: int = 10, timeout_sec: float = 180) -> TenantRun:
    """Tune the CRM (`tune("crm", **changes)` writes its tunables document as an operator would), start the noisy
    tenant's executions, then the quiet tenant's once the CRM has received `quiet_after_noisy_calls` noisy
    calls; wait for all of them to end.

    The calls in flight at once (each noisy execution's `max_concurrency`, and the quiet tenant's users, fewer
    than that) must fit the CRM caller's reserved concurrency: past it Lambda throttles the invocations, and
    the order would be Lambda's retries rather than the limiter's (the tenants' shares do not cover the
    function's concurrency, which a noisy tenant can hold as much of as it asks for).
    """
    outputs = crm_batch_outputs(stacks)
    in_flight = noisy_executions * max_concurrency + min(quiet_users, max_concurrency)
    reserved = _caller_reserved_concurrency(cloud, stacks)
    if reserved is not None and in_flight > reserved:
        raise ValueError(f"{in_flight} calls in flight at once ({noisy_executions} noisy executions x max_concurrency"
                         f" {max_concurrency}, and the quiet tenant's) exceed the CRM caller's reserved concurrency"
                         f" {reserved}: run fewer noisy executions or a lower max_concurrency")
    tune("crm", max_concurrency=max_concurrency, **(SHARES_TUNING if shares else ONE_BUCKET_TUNING))
    wait_for_tunables_cache(cloud, stacks)
    prefix = uuid.uuid4().hex[:6]
    noisy = [f"{NOISY}-{prefix}-{i}" for i in range(noisy_executions)]
    quiet = f"{QUIET}-{prefix}"
    tenant_of = {**{name: NOISY for name in noisy}, quiet: QUIET}
    users = {NOISY: tuple(f"{NOISY}-user-{i:03d}" for i in range(noisy_executions * noisy_users_each)),
             QUIET: tuple(f"{QUIET}-user-{i:03d}" for i in range(quiet_users))}
    each = noisy_users_each
    segments = {name: list(users[NOISY][i * each:(i + 1) * each]) for i, name in enumerate(noisy)}
    segments[quiet] = list(users[QUIET])
    for name, user_ids in segments.items():
        seed_segment(cloud, outputs["segments_table"], f"segment-{name}", user_ids)
    drain_queue(cloud, outputs["dead_letter_queue_url"])
    _warm_callers(cloud, stacks, in_flight)
    _forget_bucket(cloud, stacks)
    crm.reset()

    def start(name: str) -> ExecutionResult:
        execution_input: dict[str, Any] = {"segment_id": f"segment-{name}"}
        if shares:
            execution_input["tenant"] = tenant_of[name]
        return run_execution(cloud, outputs["state_machine_arn"], execution_input, name=name, timeout_sec=timeout_sec)

    with ThreadPoolExecutor(max_workers=len(tenant_of)) as pool:
        running = {name: pool.submit(start, name) for name in noisy}
        deadline = time.monotonic() + timeout_sec
        while len(crm.requests) < quiet_after_noisy_calls and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_SEC / 4)
        started_after = len(crm.requests)
        running[quiet] = pool.submit(start, quiet)
        executions = {name: future.result() for name, future in running.items()}
    requests = crm.requests
    return TenantRun(
        shares=shares,
        users=users,
        executions=executions,
        tenant_of_execution=tenant_of,
        calls=tuple(call for r in requests if (call := _crm_call(r, tenant_of)) is not None),
        refusals=tuple(_refusals(cloud, stacks, tenant_of)),
        dead_letters=tuple(drain_queue(cloud, outputs["dead_letter_queue_url"])),
        crm_stats=crm.stats(),
        quiet_started_after_noisy_calls=started_after,
    )


def _crm_call(request: RecordedRequest, tenant_of: Mapping[str, str]) -> CrmCall | None:
    """The call as one of this run's, from its correlation id (`<execution name>/<user id>`, set by the workflow)."""
    execution, _, user_id = request.headers.get("X-Correlation-Id", "").partition("/")
    if execution not in tenant_of:
        return None
    return CrmCall(tenant_of[execution], execution, user_id, request.method, request.status)


def _refusals(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], tenant_of: Mapping[str, str]) -> list[Refusal]:
    """The CRM caller's refusal lines for this run's executions (its log holds every run since the deploy)."""
    caller = layer_stack(stacks, "Workflows").outputs["CrmCallerName"]
    path = cloud.lambda_runtime.log_path(caller)
    refusals = []
    for line in path.read_text().splitlines() if path.exists() else ():
        if names.LIMITER_REFUSED_LOG_MESSAGE not in line or not line.startswith("{"):
            continue
        entry = json.loads(line)
        execution = str(entry.get("correlation_id", "")).partition("/")[0]
        if entry.get("message") == names.LIMITER_REFUSED_LOG_MESSAGE and execution in tenant_of:
            refusals.append(Refusal(tenant_of[execution], entry.get("tenant"), float(entry["retry_after_sec"])))
    return refusals


def _warm_callers(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], count: int) -> None:
    """As many warm CRM callers as the run has calls in flight, as in a fleet that has been busy: otherwise the
    tenant started second would meet the cold starts the first one's calls had left it, and the order would say
    more about starting processes than about sharing the bucket. Their calls are refused or not: either warms."""
    caller = layer_stack(stacks, "Workflows").outputs["CrmCallerName"]
    lambda_client = cloud.client("lambda")
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(lambda i: lambda_client.invoke(FunctionName=caller, Payload=json.dumps(
            {"path": f"/users/warm-up-{i}", "correlation_id": f"warm-up/{i}"})), range(count)))


def _caller_reserved_concurrency(cloud: LocalCloud, stacks: Mapping[str, DeployedStack]) -> int | None:
    caller = layer_stack(stacks, "Workflows").outputs["CrmCallerName"]
    return cloud.client("lambda").get_function_concurrency(FunctionName=caller).get("ReservedConcurrentExecutions")


def wait_for_tunables_cache(cloud: LocalCloud, stacks: Mapping[str, DeployedStack]) -> None:
    """A warm caller reads the tunables again only after its cache: wait it out, as an operator would."""
    caller = layer_stack(stacks, "Workflows").outputs["CrmCallerName"]
    variables = cloud.client("lambda").get_function_configuration(FunctionName=caller)["Environment"]["Variables"]
    cache_sec = float(variables[names.ENV_TUNABLES_CACHE_SEC])
    if cache_sec:
        time.sleep(cache_sec + 0.5)


def _forget_bucket(cloud: LocalCloud, stacks: Mapping[str, DeployedStack]) -> None:
    """Each run starts from a full bucket: the last run's TATs (the global one and each tenant's) would hold it back."""
    table = layer_stack(stacks, "SharedLimits").outputs["RateLimiterTableName"]
    dynamodb = cloud.client("dynamodb")
    for key in CRM_BUCKET_KEYS:
        dynamodb.delete_item(TableName=table, Key={"pk": {"S": key}})
