"""Downstream credentials in the emulator: what an operator does after the first deploy, and what a rotation does.

The stack creates each `auth` downstream's secret with a generated placeholder; the operator puts the
credential the third party issued. Here the third party is a simulator, whose profile holds the
sandbox credential it accepts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from localcloud.drivers.common import layer_stack
from localcloud.emulator.cloud import LocalCloud
from localcloud.emulator.deployer import DeployedStack
from localcloud.referee.downstream_simulator import DownstreamProfile, DownstreamSimulator


def credentials_secret_arn(stacks: Mapping[str, DeployedStack], downstream: str) -> str | None:
    """The ARN of the secret the stack created for `downstream`'s credentials, or None if it has none."""
    pascal = "".join(part.title() for part in downstream.split("_"))
    return layer_stack(stacks, "Workflows").outputs.get(f"{pascal}CredentialsSecretArn")


def issued_credential(profile: DownstreamProfile) -> dict[str, str] | None:
    """The secret's value for the credential the simulated third party issued, in the shape its auth reads."""
    if profile.api_key is not None:
        return {"api_key": profile.api_key}
    if profile.oauth_client_id is not None and profile.oauth_client_secret is not None:
        return {"client_id": profile.oauth_client_id, "client_secret": profile.oauth_client_secret}
    return None


def put_credential(cloud: LocalCloud, secret_arn: str, value: Mapping[str, Any]) -> None:
    cloud.client("secretsmanager").put_secret_value(SecretId=secret_arn, SecretString=json.dumps(dict(value)))


def provision_credentials(cloud: LocalCloud, stacks: Mapping[str, DeployedStack],
                          simulators: Mapping[str, DownstreamSimulator]) -> list[str]:
    """Put every simulator's issued credential into its downstream's secret; the downstreams provisioned."""
    provisioned = []
    for name, simulator in simulators.items():
        arn, credential = credentials_secret_arn(stacks, name), issued_credential(simulator.profile)
        if arn is not None and credential is not None:
            put_credential(cloud, arn, credential)
            provisioned.append(name)
    return provisioned


@dataclass(frozen=True)
class CredentialsRun:
    """What the authenticated downstreams saw: messages sent on how many OAuth2 tokens, the ledger's answers to
    the call made just after its key was rotated under a warm caller, and credentials found in the logs."""

    messages: int
    tokens_issued: int
    messaging_refused: int
    rotated_call_statuses: list[int]
    leaked: int


def run(cloud: LocalCloud, stacks: Mapping[str, DeployedStack], simulators: Mapping[str, DownstreamSimulator], *,
        messages: int = 5) -> CredentialsRun:
    """Send `messages` through the messaging caller (OAuth2), then rotate the ledger's key under its warm caller.

    Every function's environments are started afresh first, so the messaging caller begins without a token.
    The ledger's issued key is put back afterwards (its next call renews once more, as after any rotation).
    """
    cloud.lambda_runtime.shutdown()
    workflows = layer_stack(stacks, "Workflows").outputs
    messaging, ledger = simulators["messaging"], simulators["ledger"]
    messaging.reset()
    ledger.reset()
    tokens_before = messaging.stats()["tokens_issued"]
    for i in range(messages):
        _invoke(cloud, workflows["MessagingCallerName"], {"method": "POST", "path": "/messages",
                                                          "correlation_id": f"demo-message-{i}"})
    _invoke(cloud, workflows["LedgerCallerName"], {"method": "POST", "path": "/ledger/entries",
                                                   "correlation_id": "demo-before-rotation"})
    secret_arn = credentials_secret_arn(stacks, "ledger")
    assert secret_arn is not None, "the ledger's credentials secret is a stack output"
    rotated = f"demo-rotated-{uuid.uuid4().hex}"
    try:
        ledger.set_profile(ledger.profile.merged_with({"api_key": rotated}))
        put_credential(cloud, secret_arn, {"api_key": rotated})
        _invoke(cloud, workflows["LedgerCallerName"], {"method": "POST", "path": "/ledger/entries",
                                                       "correlation_id": "demo-after-rotation"})
        statuses = [r.status for r in ledger.requests if r.headers.get("X-Correlation-Id") == "demo-after-rotation"]
    finally:
        ledger.reset()
        put_credential(cloud, secret_arn, issued_credential(ledger.profile) or {})
    credentials = {rotated, ledger.profile.api_key, messaging.profile.oauth_client_secret, *messaging.access_tokens}
    logs = [path.read_text() for path in (cloud.lambda_runtime.work_dir / "logs").glob("*.log")]
    return CredentialsRun(
        messages=messages,
        tokens_issued=messaging.stats()["tokens_issued"] - tokens_before,
        messaging_refused=messaging.stats()["by_status"].get(401, 0),
        rotated_call_statuses=statuses,
        leaked=sum(1 for credential in credentials if credential and any(credential in log for log in logs)),
    )


def _invoke(cloud: LocalCloud, function_name: str, event: Mapping[str, Any]) -> Any:
    response = cloud.client("lambda").invoke(FunctionName=function_name, Payload=json.dumps(dict(event)))
    answer = json.loads(response["Payload"].read())
    if response.get("FunctionError"):
        raise RuntimeError(f"{function_name} failed: {answer}")
    return answer
