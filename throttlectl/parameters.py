"""The tunables in SSM Parameter Store: read them with who changed them last, write one with an audit note.

The audit trail lives in Parameter Store itself, so it works the same in any account and in the
emulator and every operator sees it: each write by this tool sets the parameter's Description of
the new version to `throttlectl: {"by", "at", "reason", "from_version"}` (who from STS, why from
--reason); the old and new values are the two versions in the parameter's history. A later write
by someone else (the controller, the console) inherits that description unchanged, so a note
counts only for the version right after its `from_version`.

AWS asks for no personal data in a parameter description, and an assumed role's session name is
often a person's e-mail: the note keeps the role (`assumed-role/<role>`) and drops the session.
Who exactly wrote a version is what SSM itself records (`LastModifiedUser`), which is preferred
wherever it is recorded (not in moto, which says "N/A").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from throttling.core.tunables import InvalidTunables, decode_document
from throttlectl.discovery import Deployment
from throttlectl.exceptions import NotFound, Refused

__all__ = [
    "AUDIT_PREFIX",
    "Audit",
    "StoredTunable",
    "history",
    "key_of",
    "principal_of",
    "read_tunable",
    "read_tunables",
    "who_changed",
    "write_tunable",
]

AUDIT_PREFIX = "throttlectl: "
DESCRIPTION_MAX_CHARS = 1024  # SSM's limit for a parameter description


@dataclass(frozen=True)
class Audit:
    """Who changed a tunable with this tool, when, why, and from which version."""

    by: str
    at: str
    reason: str
    from_version: int

    def to_description(self) -> str:
        """The note as a parameter description, the reason shortened to fit SSM's 1,024 characters."""
        reason = self.reason
        while True:
            text = AUDIT_PREFIX + json.dumps(
                {"at": self.at, "by": self.by, "from_version": self.from_version, "reason": reason}, sort_keys=True
            )
            if len(text) <= DESCRIPTION_MAX_CHARS:
                return text
            reason = reason[: max(0, len(reason) - (len(text) - DESCRIPTION_MAX_CHARS) - 1)] + "\u2026"

    @classmethod
    def from_description(cls, description: str | None) -> Audit | None:
        if not description or not description.startswith(AUDIT_PREFIX):
            return None
        try:
            note = decode_document(description[len(AUDIT_PREFIX):])
            return cls(str(note["by"]), str(note["at"]), str(note["reason"]), int(note["from_version"]))
        except (InvalidTunables, ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class StoredTunable:
    """One version of a tunable as Parameter Store holds it."""

    name: str
    key: str
    value: str
    version: int
    last_modified: datetime | None
    last_modified_user: str | None
    description: str | None

    @property
    def audit(self) -> Audit | None:
        """This tool's note on this very version (None when the version was written otherwise)."""
        note = Audit.from_description(self.description)
        return note if note is not None and note.from_version == self.version - 1 else None


def key_of(deployment: Deployment, name: str) -> str:
    """`downstreams/crm` from `downstreams/crm`, `/downstreams/crm` or `/throttling/dev/downstreams/crm`."""
    prefix = deployment.prefix + "/"
    if name.startswith(prefix):
        return name[len(prefix):]
    if name.startswith("/throttling/"):
        other = name.split("/")[2]
        raise Refused(f"{name} belongs to stage {other!r}, not {deployment.stage!r}; pass --stage {other}")
    return name.strip("/")


def read_tunables(ssm: Any, deployment: Deployment) -> dict[str, StoredTunable]:
    """Every parameter under the stage's prefix, by key, with who last changed it."""
    values = {p["Name"]: p for p in _pages(ssm, "get_parameters_by_path", "Parameters",
                                            Path=deployment.prefix, Recursive=True)}
    described = {p["Name"]: p for p in _pages(ssm, "describe_parameters", "Parameters", ParameterFilters=[
        {"Key": "Path", "Option": "Recursive", "Values": [deployment.prefix]}])}
    return {
        key_of(deployment, name): _stored(deployment, parameter, described.get(name, {}))
        for name, parameter in sorted(values.items())
    }


def read_tunable(ssm: Any, deployment: Deployment, key: str) -> StoredTunable:
    """One tunable; `NotFound` naming the known ones when it does not exist."""
    name = f"{deployment.prefix}/{key}"
    try:
        parameter = ssm.get_parameter(Name=name)["Parameter"]
    except Exception as error:  # noqa: BLE001 - botocore's ClientError, told apart by its code
        if _code(error) != "ParameterNotFound":
            raise
        known = sorted(read_tunables(ssm, deployment))
        raise NotFound(f"no tunable {key!r} in stage {deployment.stage!r}; known: {', '.join(known) or 'none'}") from None
    described = next(iter(_pages(ssm, "describe_parameters", "Parameters", ParameterFilters=[
        {"Key": "Name", "Option": "Equals", "Values": [name]}])), {})
    return _stored(deployment, parameter, described)


def history(ssm: Any, deployment: Deployment, key: str) -> list[StoredTunable]:
    """Every version Parameter Store still keeps (up to 100), oldest first."""
    name = f"{deployment.prefix}/{key}"
    try:
        versions = list(_pages(ssm, "get_parameter_history", "Parameters", Name=name))
    except Exception as error:  # noqa: BLE001
        if _code(error) != "ParameterNotFound":
            raise
        raise NotFound(f"no tunable {key!r} in stage {deployment.stage!r}") from None
    return [_stored(deployment, version, version) for version in versions]


def write_tunable(ssm: Any, deployment: Deployment, key: str, value: str, audit: Audit) -> int:
    """Overwrite the value with the audit note as its description; returns the new version."""
    response = ssm.put_parameter(
        Name=f"{deployment.prefix}/{key}", Value=value, Overwrite=True, Description=audit.to_description()
    )
    return int(response["Version"])


def principal_of(caller_arn: str) -> str:
    """The caller without an assumed role's session name (`.../assumed-role/Ops/alice` -> `.../assumed-role/Ops`)."""
    head, marker, rest = caller_arn.partition(":assumed-role/")
    return f"{head}{marker}{rest.split('/', 1)[0]}" if marker else caller_arn


def who_changed(tunable: StoredTunable, deployment: Deployment) -> str:
    """"controller" for the controller's role, else who SSM recorded, else this tool's audit note, else a guess."""
    user = tunable.last_modified_user or ""
    if any(f"/{role}/" in user or user.endswith(f"/{role}") for role in deployment.controller_roles) or (
        "controller" in user.lower()
    ):
        return "controller"
    if user and user != "N/A":
        return user
    if tunable.audit is not None:
        return tunable.audit.by
    seed = deployment.seeds.get(tunable.name)
    if tunable.version == 1 and seed is not None and tunable.value == seed:
        return "CloudFormation (seed)"  # where SSM does not say who (the emulator): the first version is the seed
    return "unknown"


def _stored(deployment: Deployment, parameter: dict[str, Any], described: dict[str, Any]) -> StoredTunable:
    return StoredTunable(
        name=parameter["Name"],
        key=key_of(deployment, parameter["Name"]),
        value=parameter.get("Value", ""),
        version=int(parameter.get("Version", 0)),
        last_modified=described.get("LastModifiedDate") or parameter.get("LastModifiedDate"),
        last_modified_user=described.get("LastModifiedUser"),
        description=described.get("Description"),
    )


def _pages(client: Any, operation: str, key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator(operation).paginate(**kwargs):
        yield from page.get(key, [])


def _code(error: BaseException) -> str | None:
    response = getattr(error, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None
