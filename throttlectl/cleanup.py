"""Before `cdk destroy`: empty a stage's buckets, every object version and delete marker, if the stage lets go of its data.

CloudFormation cannot delete a bucket that holds anything, and a versioned bucket (the uploads
bucket) keeps every version and delete marker of every key: `cdk destroy` of a stage that ever ran
fails with "The bucket you tried to delete is not empty". `make destroy` runs `empty-buckets` first.

Only a stage whose buckets CloudFormation would delete (`DeletionPolicy: Delete`, the `destroy`
removal policy) is emptied. A stage that retains its data (`retain`, as prod) is refused as a
whole: its buckets outlive the stacks by design, and emptying them would destroy what the policy
keeps. The deployed templates decide, not cdk.json: they are what CloudFormation will act on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from throttlectl.exceptions import AwsFailure, NotFound, Refused

__all__ = ["EmptiedBucket", "StageBucket", "empty_bucket", "stage_buckets"]

# S3's DeleteObjects takes at most this many keys per request.
DELETE_BATCH = 1_000


@dataclass(frozen=True)
class StageBucket:
    """A bucket of the stage, and what CloudFormation does with it when its stack is deleted."""

    stack: str
    logical_id: str
    name: str
    deletion_policy: str

    @property
    def deleted_with_its_stack(self) -> bool:
        return self.deletion_policy == "Delete"


@dataclass(frozen=True)
class EmptiedBucket:
    name: str
    versions: int
    delete_markers: int


def stage_buckets(cloudformation: Any, stage: str) -> list[StageBucket]:
    """Every bucket of the deployed stacks `Throttling-<stage>-*`; `NotFound` when none is deployed."""
    prefix = f"Throttling-{stage}-"
    names = sorted(s["StackName"] for page in cloudformation.get_paginator("describe_stacks").paginate()
                   for s in page.get("Stacks", [])
                   if s["StackName"].startswith(prefix) and s["StackStatus"] != "DELETE_COMPLETE")
    if not names:
        raise NotFound(f"no stack of stage {stage!r} is deployed here; check --stage, --region and --profile")
    buckets = []
    for stack in names:
        body = cloudformation.get_template(StackName=stack)["TemplateBody"]
        template = json.loads(body) if isinstance(body, str) else body
        resources = template.get("Resources") or {}
        for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack):
            for resource in page.get("StackResourceSummaries", []):
                if resource["ResourceType"] != "AWS::S3::Bucket" or not resource.get("PhysicalResourceId"):
                    continue
                logical_id = resource["LogicalResourceId"]
                # CloudFormation's default for a bucket without one is Delete.
                policy = (resources.get(logical_id) or {}).get("DeletionPolicy", "Delete")
                buckets.append(StageBucket(stack, logical_id, resource["PhysicalResourceId"], policy))
    return buckets


def refuse_kept_data(stage: str, buckets: list[StageBucket]) -> None:
    """`Refused` when the stage keeps any of its buckets: it is a retain stage, and its data stays."""
    kept = [bucket for bucket in buckets if not bucket.deleted_with_its_stack]
    if kept:
        raise Refused(
            f"stage {stage} keeps its data ({', '.join(f'{b.name} ({b.deletion_policy})' for b in kept)}): its"
            " removal policy is retain, so its buckets, tables, queues, key and log groups outlive its stacks by"
            " design, and emptying them would destroy what it keeps. Nothing was deleted. To remove the stacks"
            " anyway, run cdk destroy yourself; what they retain stays, listed in the README's cleanup section"
        )


def empty_bucket(s3: Any, name: str) -> EmptiedBucket:
    """Delete every object version and delete marker of `name` (an unversioned object is version "null")."""
    versions = markers = 0
    while True:
        batch = list(_first_versions(s3, name))
        if not batch:
            return EmptiedBucket(name, versions, markers)
        for start in range(0, len(batch), DELETE_BATCH):
            chunk = batch[start:start + DELETE_BATCH]
            answer = s3.delete_objects(Bucket=name, Delete={
                "Objects": [{"Key": key, "VersionId": version} for key, version, _ in chunk], "Quiet": True})
            errors = answer.get("Errors") or []
            if errors:
                shown = ", ".join(f"{e.get('Key')} ({e.get('Code')}: {e.get('Message')})" for e in errors[:5])
                raise AwsFailure(f"could not delete {len(errors)} object versions of {name}: {shown}; fix the cause"
                                 " (permissions, object lock) and run it again: it resumes where it stopped")
            versions += sum(1 for _, _, marker in chunk if not marker)
            markers += sum(1 for _, _, marker in chunk if marker)


def _first_versions(s3: Any, name: str) -> Iterator[tuple[str, str, bool]]:
    """Up to 1,000 (key, version id, is a delete marker) of the bucket, listed afresh each round."""
    page = s3.list_object_versions(Bucket=name, MaxKeys=DELETE_BATCH)
    for version in page.get("Versions") or []:
        yield version["Key"], version["VersionId"], False
    for marker in page.get("DeleteMarkers") or []:
        yield marker["Key"], marker["VersionId"], True
