"""Deploy a synthesized cloud assembly (`cdk.out`) into the emulator, as `cdk deploy` would.

Stacks go in dependency order; each stack's file assets are uploaded to the bootstrap bucket named
in its `*.assets.json` (folders zipped, as the CDK CLI does), the bootstrap version parameter the
templates check is present, and each stack's outputs and physical resource ids are returned.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BOOTSTRAP_VERSION_PARAMETER = "/cdk-bootstrap/hnb659fds/version"
BOOTSTRAP_VERSION = "30"
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]


class DeploymentFailed(RuntimeError):
    """A stack did not reach CREATE_COMPLETE/UPDATE_COMPLETE; the message carries CloudFormation's reasons."""


@dataclass(frozen=True)
class DeployedStack:
    name: str
    outputs: dict[str, str]
    physical_ids: dict[str, str]
    resource_types: dict[str, str] = field(default_factory=dict)

    def physical_id(self, logical_id_prefix: str) -> str:
        """The physical id of the one resource whose logical id starts with `logical_id_prefix`."""
        matches = [pid for lid, pid in self.physical_ids.items() if lid.startswith(logical_id_prefix)]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources of {self.name} start with {logical_id_prefix!r}; be more precise")
        return matches[0]


@dataclass(frozen=True)
class StackArtifact:
    name: str
    template_path: Path
    assets_path: Path | None
    dependencies: tuple[str, ...]


def read_assembly(cdk_out: Path) -> list[StackArtifact]:
    """The stacks of a cloud assembly, in an order where each comes after the stacks it depends on."""
    manifest = json.loads((cdk_out / "manifest.json").read_text())
    artifacts: dict[str, Any] = manifest["artifacts"]
    stacks: dict[str, StackArtifact] = {}
    for artifact_id, artifact in artifacts.items():
        if artifact.get("type") != "aws:cloudformation:stack":
            continue
        properties = artifact.get("properties", {})
        dependencies = tuple(artifact.get("dependencies", []))
        assets = next(
            (artifacts[d]["properties"]["file"] for d in dependencies
             if artifacts.get(d, {}).get("type") == "cdk:asset-manifest"),
            None,
        )
        stacks[artifact_id] = StackArtifact(
            name=properties.get("stackName", artifact_id),
            template_path=cdk_out / properties["templateFile"],
            assets_path=cdk_out / assets if assets else None,
            dependencies=tuple(d for d in dependencies if artifacts.get(d, {}).get("type") == "aws:cloudformation:stack"),
        )
    ordered: list[StackArtifact] = []
    visiting: set[str] = set()

    def visit(artifact_id: str) -> None:
        if any(s.name == stacks[artifact_id].name for s in ordered):
            return
        if artifact_id in visiting:
            raise DeploymentFailed(f"stack dependency cycle through {artifact_id}")
        visiting.add(artifact_id)
        for dependency in stacks[artifact_id].dependencies:
            visit(dependency)
        ordered.append(stacks[artifact_id])

    for artifact_id in stacks:
        visit(artifact_id)
    return ordered


class Deployer:
    """Deploys assemblies through the emulator's CloudFormation, S3 and SSM APIs (clients injected)."""

    def __init__(self, *, cloudformation: Any, s3: Any, ssm: Any, account: str, region: str) -> None:
        self._cfn = cloudformation
        self._s3 = s3
        self._ssm = ssm
        self._account = account
        self._region = region

    def deploy(self, cdk_out: Path) -> dict[str, DeployedStack]:
        self._ensure_bootstrap()
        deployed: dict[str, DeployedStack] = {}
        for stack in read_assembly(Path(cdk_out)):
            if stack.assets_path:
                self._publish_assets(stack.assets_path)
            deployed[stack.name] = self._deploy_stack(stack)
        return deployed

    def _ensure_bootstrap(self) -> None:
        self._ssm.put_parameter(Name=BOOTSTRAP_VERSION_PARAMETER, Value=BOOTSTRAP_VERSION, Type="String", Overwrite=True)

    def _publish_assets(self, assets_path: Path) -> None:
        manifest = json.loads(assets_path.read_text())
        if manifest.get("dockerImages"):
            raise DeploymentFailed(f"{assets_path.name} has container image assets; the emulator has no Docker")
        for asset in manifest.get("files", {}).values():
            source = assets_path.parent / asset["source"]["path"]
            body = _zip_folder(source) if asset["source"].get("packaging") == "zip" and source.is_dir() else source.read_bytes()
            for destination in asset["destinations"].values():
                bucket = self._substitute(destination["bucketName"])
                self._ensure_bucket(bucket)
                self._s3.put_object(Bucket=bucket, Key=self._substitute(destination["objectKey"]), Body=body)

    def _ensure_bucket(self, bucket: str) -> None:
        existing = {b["Name"] for b in self._s3.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            self._s3.create_bucket(Bucket=bucket)

    def _deploy_stack(self, stack: StackArtifact) -> DeployedStack:
        template = stack.template_path.read_text()
        try:
            self._cfn.describe_stacks(StackName=stack.name)
            exists = True
        except self._cfn.exceptions.ClientError:
            exists = False
        # moto raises a resource's refusal (a Lambda limit, a bad property) from the API call itself, where
        # CloudFormation would roll the stack back with the reason: either way the deploy fails with it.
        try:
            if exists:
                self._cfn.update_stack(StackName=stack.name, TemplateBody=template, Capabilities=CAPABILITIES)
            else:
                self._cfn.create_stack(StackName=stack.name, TemplateBody=template, Capabilities=CAPABILITIES)
        except self._cfn.exceptions.ClientError as error:
            if not exists or "No updates are to be performed" not in str(error):
                raise DeploymentFailed(f"{stack.name} was refused: {error}") from error
        description = self._cfn.describe_stacks(StackName=stack.name)["Stacks"][0]
        if description["StackStatus"] not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
            reasons = [
                f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason')}"
                for e in self._cfn.describe_stack_events(StackName=stack.name)["StackEvents"]
                if "FAILED" in e.get("ResourceStatus", "")
            ]
            raise DeploymentFailed(f"{stack.name} ended {description['StackStatus']}: {reasons}")
        resources = self._cfn.list_stack_resources(StackName=stack.name)["StackResourceSummaries"]
        return DeployedStack(
            name=stack.name,
            outputs={o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])},
            physical_ids={r["LogicalResourceId"]: r.get("PhysicalResourceId", "") for r in resources},
            resource_types={r["LogicalResourceId"]: r["ResourceType"] for r in resources},
        )

    def _substitute(self, text: str) -> str:
        return (text.replace("${AWS::AccountId}", self._account)
                .replace("${AWS::Region}", self._region)
                .replace("${AWS::Partition}", "aws"))


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(files):
                path = Path(root) / name
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()
