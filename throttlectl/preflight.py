"""Before a deploy: will this account take the stage as synthesized? Each check says what to do if not.

`make deploy` synthesizes the stage into `cdk.out`, runs `throttlectl preflight` on it, and deploys
exactly that assembly. The checks read the stage's templates and ask the account:

- **Lambda concurrency.** The reservations the templates ask for (`ReservedConcurrentExecutions`),
  less what the stage's deployed functions hold now (an update frees those), must leave Lambda its
  unreserved minimum: 100 executions, or the whole limit on an account below 100 (a new account's
  limit is 10, or 50, so it can reserve nothing). Otherwise the first stack rolls back with
  "UnreservedConcurrentExecution below its minimum value". The remedy is a quota increase
  (Service Quotas, quota `L-B99A9384`) or the stage's `reserve_concurrency: false`.
- **Powertools' layer.** Each `/aws/service/powertools/...` parameter the templates resolve exists
  in the region (Powertools has missed publishing one for a release before); otherwise the deploy
  fails with "Unable to fetch parameters".
- **Parameter Store throughput.** A stage that asks for the higher throughput (its templates'
  `Throttling::AccountSettings` metadata) gets the account-wide setting
  `/ssm/parameter-store/high-throughput-enabled` turned on with `--apply` (it is billed per API
  interaction, so never without it), or is refused saying how; it is never turned off here, since
  other applications of the account may rely on it.

Adapters take injected clients (boto3's, a stub's or the emulator's); the arithmetic is pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from throttlectl.exceptions import NotFound, Refused

__all__ = [
    "CONCURRENCY_QUOTA_CODE",
    "Check",
    "ConcurrencyVerdict",
    "Reservation",
    "StageAssembly",
    "check_concurrency",
    "check_parameter_store_throughput",
    "check_powertools_parameters",
    "concurrency_verdict",
    "read_stage_assembly",
    "reservations_in",
]

# Service Quotas' code for Lambda's "Concurrent executions" (service code `lambda`).
CONCURRENCY_QUOTA_CODE = "L-B99A9384"
# What Lambda keeps for functions without a reservation (the whole limit when the limit is lower).
UNRESERVED_MINIMUM = 100
# AWS's usual limit, what an increase request for a new account normally asks for.
USUAL_CONCURRENCY_LIMIT = 1_000
POWERTOOLS_PARAMETER_PREFIX = "/aws/service/powertools/"
# Where the CDK app writes the account settings a stage needs (stacks.app_stacks.ACCOUNT_SETTINGS_METADATA).
ACCOUNT_SETTINGS_METADATA = "Throttling::AccountSettings"
HIGH_THROUGHPUT_SETTING = "/ssm/parameter-store/high-throughput-enabled"


@dataclass(frozen=True)
class StageAssembly:
    """The stacks of one stage in a synthesized cloud assembly (`cdk.out`)."""

    stage: str
    directory: Path
    region: str | None
    templates: Mapping[str, Mapping[str, Any]]


def read_stage_assembly(directory: Path, stage: str) -> StageAssembly:
    """The stage's stacks (`Throttling-<stage>-*`) in `directory`; `NotFound` when it holds none."""
    manifest_path = Path(directory) / "manifest.json"
    if not manifest_path.is_file():
        raise NotFound(f"no cloud assembly at {directory}: synthesize the stage first (make synth STAGE={stage})")
    templates: dict[str, Mapping[str, Any]] = {}
    regions: set[str] = set()
    for artifact_id, artifact in json.loads(manifest_path.read_text()).get("artifacts", {}).items():
        if artifact.get("type") != "aws:cloudformation:stack":
            continue
        properties = artifact.get("properties", {})
        name = properties.get("stackName", artifact_id)
        if not name.startswith(f"Throttling-{stage}-"):
            continue
        templates[name] = json.loads((Path(directory) / properties["templateFile"]).read_text())
        environment = str(artifact.get("environment", ""))  # aws://<account>/<region>
        region = environment.rsplit("/", 1)[-1]
        if region and region != "unknown-region":
            regions.add(region)
    if not templates:
        raise NotFound(f"{directory} holds no stack of stage {stage!r}: synthesize it (make synth STAGE={stage})")
    return StageAssembly(stage, Path(directory), regions.pop() if len(regions) == 1 else None, templates)


@dataclass(frozen=True)
class Check:
    """One check's verdict: `ok`, what was found, and (when not ok) what to do."""

    name: str
    ok: bool
    summary: str
    remedy: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- Lambda concurrency ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reservation:
    """A function's reserved concurrency: what the templates ask for and what it holds now (0 if new)."""

    stack: str
    logical_id: str
    wanted: int = 0
    held: int = 0


@dataclass(frozen=True)
class ConcurrencyVerdict:
    """Whether the account can give the stage its reservations (`GetAccountSettings`' two numbers)."""

    limit: int
    unreserved: int
    reservations: tuple[Reservation, ...]

    @property
    def wanted(self) -> int:
        return sum(r.wanted for r in self.reservations)

    @property
    def held(self) -> int:
        return sum(r.held for r in self.reservations)

    @property
    def minimum_unreserved(self) -> int:
        return min(UNRESERVED_MINIMUM, self.limit)

    @property
    def unreserved_after(self) -> int:
        return self.unreserved + self.held - self.wanted

    @property
    def ok(self) -> bool:
        # Reserving no more than the stage holds never lowers the unreserved pool.
        return self.wanted <= self.held or self.unreserved_after >= self.minimum_unreserved

    @property
    def limit_needed(self) -> int:
        """The smallest limit that takes the stage: what other functions reserve, the stage's, and 100 unreserved."""
        reserved_by_others = self.limit - self.unreserved - self.held
        return reserved_by_others + self.wanted + UNRESERVED_MINIMUM


def reservations_in(templates: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str, str], int]:
    """(stack, logical id) -> the reserved concurrency each function of the templates asks for."""
    wanted: dict[tuple[str, str], int] = {}
    for stack, template in templates.items():
        for logical_id, resource in (template.get("Resources") or {}).items():
            if resource.get("Type") != "AWS::Lambda::Function":
                continue
            reserved = (resource.get("Properties") or {}).get("ReservedConcurrentExecutions")
            if reserved is not None:
                wanted[(stack, logical_id)] = int(reserved)
    return wanted


def concurrency_verdict(account_limit: Mapping[str, Any], wanted: Mapping[tuple[str, str], int],
                        held: Mapping[tuple[str, str], int]) -> ConcurrencyVerdict:
    """Pure: the verdict from `GetAccountSettings`' `AccountLimit` and the two maps of reservations."""
    keys = sorted(set(wanted) | set(held))
    return ConcurrencyVerdict(
        limit=int(account_limit["ConcurrentExecutions"]),
        unreserved=int(account_limit["UnreservedConcurrentExecutions"]),
        reservations=tuple(Reservation(stack, logical_id, wanted.get((stack, logical_id), 0),
                                       held.get((stack, logical_id), 0)) for stack, logical_id in keys),
    )


def held_by_stage(cloudformation: Any, lambda_client: Any, stacks: list[str]) -> dict[tuple[str, str], int]:
    """(stack, logical id) -> the reserved concurrency each deployed function of these stacks holds now."""
    held: dict[tuple[str, str], int] = {}
    for stack in stacks:
        try:
            pages = list(cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack))
        except Exception as error:  # noqa: BLE001 - botocore's ClientError, told apart by its message
            if "does not exist" in str(error):
                continue  # a first deploy of this stack
            raise
        for page in pages:
            for resource in page.get("StackResourceSummaries", []):
                if resource["ResourceType"] != "AWS::Lambda::Function" or not resource.get("PhysicalResourceId"):
                    continue
                answer = lambda_client.get_function_concurrency(FunctionName=resource["PhysicalResourceId"])
                reserved = answer.get("ReservedConcurrentExecutions")
                if reserved:
                    held[(stack, resource["LogicalResourceId"])] = int(reserved)
    return held


def check_concurrency(assembly: StageAssembly, *, lambda_client: Any, cloudformation: Any,
                      region: str | None) -> Check:
    wanted = reservations_in(assembly.templates)
    held = held_by_stage(cloudformation, lambda_client, sorted(assembly.templates))
    verdict = concurrency_verdict(lambda_client.get_account_settings()["AccountLimit"], wanted, held)
    asks = ", ".join(f"{r.logical_id} {r.wanted}" for r in verdict.reservations if r.wanted) or "nothing"
    summary = (f"the stage reserves {verdict.wanted} concurrent executions ({asks}), its functions hold"
               f" {verdict.held} now; the account's limit is {verdict.limit} with {verdict.unreserved} unreserved,"
               f" {verdict.unreserved_after} after the deploy, and Lambda keeps {verdict.minimum_unreserved}"
               f" unreserved ({UNRESERVED_MINIMUM}, or the whole limit below {UNRESERVED_MINIMUM})")
    details = {"limit": verdict.limit, "unreserved": verdict.unreserved, "wanted": verdict.wanted,
               "held": verdict.held, "unreserved_after": verdict.unreserved_after,
               "minimum_unreserved": verdict.minimum_unreserved, "limit_needed": verdict.limit_needed,
               "reservations": [asdict(r) for r in verdict.reservations]}
    if verdict.ok:
        return Check("lambda concurrency", True, summary, details=details)
    desired = max(verdict.limit_needed, USUAL_CONCURRENCY_LIMIT)
    remedy = (
        "the deploy would roll back (\"UnreservedConcurrentExecution below its minimum value\"). Either raise the"
        f" account's limit to at least {verdict.limit_needed}: aws service-quotas request-service-quota-increase"
        f" --service-code lambda --quota-code {CONCURRENCY_QUOTA_CODE} --desired-value {desired}"
        f"{f' --region {region}' if region else ''} (or the Service Quotas console: AWS Lambda > Concurrent"
        " executions; new accounts are usually raised to 1,000) and deploy once it is granted; or deploy the stage"
        f" without reservations: set \"reserve_concurrency\": false under stages.{assembly.stage} in cdk.json (the"
        " SQS mappings' MaximumConcurrency and the shared limiter still bound the calls, and the controller keeps"
        " one writer with its lease)"
    )
    return Check("lambda concurrency", False, summary, remedy, details)


# -- Powertools' public layer parameters -----------------------------------------------------------


def powertools_parameters_in(templates: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The `/aws/service/powertools/...` parameters the templates resolve at deploy."""
    names = set()
    for template in templates.values():
        for parameter in (template.get("Parameters") or {}).values():
            default = str(parameter.get("Default", ""))
            if str(parameter.get("Type", "")).startswith("AWS::SSM::Parameter::Value") and default.startswith(
                    POWERTOOLS_PARAMETER_PREFIX):
                names.add(default)
    return sorted(names)


def check_powertools_parameters(assembly: StageAssembly, *, ssm: Any, region: str | None) -> Check:
    names = powertools_parameters_in(assembly.templates)
    missing: list[str] = []
    resolved: dict[str, str] = {}
    for name in names:
        try:
            resolved[name] = ssm.get_parameter(Name=name)["Parameter"]["Value"]
        except Exception as error:  # noqa: BLE001 - botocore's ClientError, told apart by its code
            if getattr(error, "response", {}).get("Error", {}).get("Code") != "ParameterNotFound":
                raise
            missing.append(name)
    if not names:
        # Synth's own rules make every function of the app carry the layer; nothing here to resolve.
        return Check("powertools layer", True, "the templates resolve no Powertools layer parameter")
    if missing:
        return Check(
            "powertools layer", False, f"Powertools has not published {', '.join(missing)}"
            f"{f' in {region}' if region else ''}",
            "the deploy would fail (\"Unable to fetch parameters\"): pin a release Powertools has published for this"
            " runtime and region in requirements-lambda.txt (aws ssm get-parameters-by-path --path"
            " /aws/service/powertools/python/x86_64/python3.13 lists them), then make setup and deploy again",
            {"missing": missing})
    return Check("powertools layer", True, "; ".join(f"{name} -> {arn}" for name, arn in resolved.items()),
                 details={"resolved": resolved})


# -- Parameter Store throughput --------------------------------------------------------------------


def wants_high_throughput(templates: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether any template of the stage asks for Parameter Store's higher throughput."""
    return any(bool(((template.get("Metadata") or {}).get(ACCOUNT_SETTINGS_METADATA) or {}).get(
        "ParameterStoreHighThroughput")) for template in templates.values())


def check_parameter_store_throughput(assembly: StageAssembly, *, ssm: Any, apply: bool, region: str | None) -> Check:
    wanted = wants_high_throughput(assembly.templates)
    current = ssm.get_service_setting(SettingId=HIGH_THROUGHPUT_SETTING)["ServiceSetting"]["SettingValue"]
    on = str(current).lower() == "true"
    details = {"wanted": wanted, "was": "on" if on else "off"}
    where = f" in {region}" if region else ""
    if not wanted:
        note = (" (on for the whole account; this stage does not need it: aws ssm reset-service-setting --setting-id"
                f" {HIGH_THROUGHPUT_SETTING} turns it off if nothing else does)" if on else "")
        return Check("parameter store throughput", True,
                     f"the stage does not ask for higher throughput; it is {details['was']}{where}{note}",
                     details=details)
    if on:
        return Check("parameter store throughput", True, f"higher throughput is on{where}, as the stage asks",
                     details=details)
    if apply:
        ssm.update_service_setting(SettingId=HIGH_THROUGHPUT_SETTING, SettingValue="true")
        return Check("parameter store throughput", True,
                     f"turned higher throughput on{where}, as the stage asks (billed per API interaction, account-wide)",
                     details={**details, "now": "on"})
    return Check(
        "parameter store throughput", False, f"the stage asks for Parameter Store's higher throughput, which is off{where}",
        "rerun with --apply (make deploy does), or aws ssm update-service-setting --setting-id"
        f" {HIGH_THROUGHPUT_SETTING} --setting-value true; it is billed per API interaction for the whole account and"
        f" region; or set \"parameter_store_high_throughput\": false under stages.{assembly.stage} in cdk.json",
        details)


def refusal(checks: list[Check]) -> Refused | None:
    """The refusal a failed check ends `preflight` with (exit 2), naming every failed check's remedy."""
    failed = [check for check in checks if not check.ok]
    if not failed:
        return None
    return Refused("preflight: " + "; ".join(f"{check.name}: {check.summary}: {check.remedy}" for check in failed))
