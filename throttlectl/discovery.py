"""Find a deployed stage from its CloudFormation stacks: tables, queues, seeded tunables and contracts.

Nothing is configured by hand: the stacks `Throttling-<stage>-*` say where everything is. The
shared-limits stack's outputs name the limit tables; every stack's resources name its queues;
the templates hold the seed of every tunable (the `AWS::SSM::Parameter` with that Name) and each
downstream's contract (the `DOWNSTREAM_RATE_LIMIT_PER_SEC` and `DOWNSTREAM_BURST` its functions are
deployed with), the ceilings the Lambdas clamp a tuned rate and burst to.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from throttling.core import names
from throttlectl.exceptions import NotFound

__all__ = ["SHARED_LIMITS_OUTPUTS", "Deployment", "QueueRef", "discover", "stack_prefix"]

SHARED_LIMITS_OUTPUTS = ("RateLimiterTableName", "SemaphoreTableName", "CircuitBreakerTableName", "LeaseReclaimerName")
_GONE = {"DELETE_COMPLETE"}
# CDK appends an 8-hex-digit hash of the construct path to every logical ID.
_CDK_HASH = re.compile(r"[0-9A-F]{8}\Z")


def stack_prefix(stage: str) -> str:
    return f"Throttling-{stage}-"


@dataclass(frozen=True)
class QueueRef:
    """An SQS queue of the stage, named as the stack names it."""

    stack: str
    logical_id: str
    url: str

    @property
    def name(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def label(self) -> str:
        """The logical ID without CDK's hash (`LegacyConsumerDeadLetterQueue`): short, stable across stages."""
        return _CDK_HASH.sub("", self.logical_id) or self.logical_id


@dataclass(frozen=True)
class Deployment:
    """What one deployed stage consists of, as far as the operator tool needs to know."""

    stage: str
    stacks: tuple[str, ...]
    outputs: Mapping[str, Mapping[str, str]]
    seeds: Mapping[str, str] = field(default_factory=dict)
    contracts: Mapping[str, float] = field(default_factory=dict)
    contract_bursts: Mapping[str, int] = field(default_factory=dict)
    controller_roles: tuple[str, ...] = ()
    queues: tuple[QueueRef, ...] = ()

    @property
    def prefix(self) -> str:
        """Where the stage's tunables live in Parameter Store."""
        return names.tunables_prefix(self.stage)

    @property
    def shared_limits(self) -> Mapping[str, str]:
        return self.outputs.get(f"{stack_prefix(self.stage)}SharedLimits", {})

    @property
    def rate_limiter_table(self) -> str | None:
        return self.shared_limits.get("RateLimiterTableName")

    @property
    def semaphore_table(self) -> str | None:
        return self.shared_limits.get("SemaphoreTableName")

    @property
    def breaker_table(self) -> str | None:
        return self.shared_limits.get("CircuitBreakerTableName")

    def ceiling_for(self, key: str) -> float | None:
        """The contractual rate of the downstream a `downstreams/<name>` key tunes (None if unknown)."""
        kind, _, name = key.partition("/")
        return self.contracts.get(name) if kind == "downstreams" else None

    def burst_ceiling_for(self, key: str) -> int | None:
        """The contractual burst of the downstream a `downstreams/<name>` key tunes (None if unknown)."""
        kind, _, name = key.partition("/")
        return self.contract_bursts.get(name) if kind == "downstreams" else None


def discover(cloudformation: Any, stage: str) -> Deployment:
    """Read the stage's stacks; raise `NotFound` when its shared-limits stack is not deployed."""
    prefix = stack_prefix(stage)
    every = [s for s in _stacks(cloudformation) if s["StackStatus"] not in _GONE]
    stacks = sorted((s for s in every if s["StackName"].startswith(prefix)), key=lambda s: s["StackName"])
    names = [s["StackName"] for s in stacks]
    shared = f"{prefix}SharedLimits"
    if shared not in names:
        deployed = sorted(
            match.group(1) for s in every if (match := re.fullmatch(r"Throttling-(.+)-SharedLimits", s["StackName"]))
        )
        found = f"stages deployed here: {', '.join(deployed)}" if deployed else "no stage is deployed here"
        raise NotFound(
            f"stack {shared} is not deployed ({found}); check --stage, --region and --profile "
            f"(or --endpoint-url for the emulator)"
        )
    outputs = {s["StackName"]: {o["OutputKey"]: o["OutputValue"] for o in s.get("Outputs", [])} for s in stacks}
    seeds: dict[str, str] = {}
    contracts: dict[str, float] = {}
    contract_bursts: dict[str, int] = {}
    controller_roles: list[str] = []
    queues: list[QueueRef] = []
    for name in names:
        template = _template(cloudformation, name)
        for logical_id, resource in (template.get("Resources") or {}).items():
            _collect_seed(resource, seeds)
            _collect_contract(resource, contracts, contract_bursts)
        for resource in _resources(cloudformation, name):
            kind, logical_id = resource["ResourceType"], resource["LogicalResourceId"]
            physical_id = resource.get("PhysicalResourceId")
            if not physical_id:
                continue
            if kind == "AWS::SQS::Queue":
                queues.append(QueueRef(name, logical_id, physical_id))
            elif kind == "AWS::IAM::Role" and "controller" in logical_id.lower():
                controller_roles.append(physical_id)
    return Deployment(
        stage=stage,
        stacks=tuple(names),
        outputs=outputs,
        seeds=seeds,
        contracts=contracts,
        contract_bursts=contract_bursts,
        controller_roles=tuple(controller_roles),
        queues=tuple(queues),
    )


def _stacks(cloudformation: Any) -> Iterator[dict[str, Any]]:
    for page in cloudformation.get_paginator("describe_stacks").paginate():
        yield from page.get("Stacks", [])


def _resources(cloudformation: Any, stack: str) -> Iterator[dict[str, Any]]:
    for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack):
        yield from page.get("StackResourceSummaries", [])


def _template(cloudformation: Any, stack: str) -> Mapping[str, Any]:
    body = cloudformation.get_template(StackName=stack)["TemplateBody"]
    if isinstance(body, str):  # botocore parses JSON bodies; a YAML one (not CDK's) stays text
        try:
            body = json.loads(body)
        except ValueError:
            return {}
    return body if isinstance(body, Mapping) else {}


def _collect_seed(resource: Mapping[str, Any], seeds: dict[str, str]) -> None:
    if resource.get("Type") != "AWS::SSM::Parameter":
        return
    properties = resource.get("Properties") or {}
    name, value = properties.get("Name"), properties.get("Value")
    if isinstance(name, str) and isinstance(value, str):
        seeds[name] = value


def _collect_contract(resource: Mapping[str, Any], contracts: dict[str, float], bursts: dict[str, int]) -> None:
    if resource.get("Type") != "AWS::Lambda::Function":
        return
    variables = ((resource.get("Properties") or {}).get("Environment") or {}).get("Variables") or {}
    name = variables.get(names.ENV_DOWNSTREAM_NAME)
    if not isinstance(name, str):
        return
    # Two functions calling one downstream with different contracts: the lower one binds.
    rate = _number_of(variables.get(names.ENV_DOWNSTREAM_RATE_LIMIT_PER_SEC))
    if rate is not None:
        contracts[name] = min(rate, contracts.get(name, rate))
    burst = _number_of(variables.get(names.ENV_DOWNSTREAM_BURST))
    if burst is not None and burst == int(burst):
        bursts[name] = min(int(burst), bursts.get(name, int(burst)))


def _number_of(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None
