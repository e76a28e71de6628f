"""moto's S3 under CloudFormation: versioning as the template says, and a bucket that refuses deletion while it holds anything."""

from __future__ import annotations

from typing import Any

from localcloud.emulator.patches.cloudformation import SERVICE_ERRORS
from localcloud.emulator.patches.registry import Undo, patch, replace, undo_all


@patch("s3")
def cloudformation_bucket_deletion() -> Undo:
    """Fail a stack's deletion, as CloudFormation does, while one of its buckets holds anything.

    moto limitation: deleting a stack whose bucket holds objects (or, versioned, any object version or
    delete marker) succeeds and silently leaves the bucket behind, so a stage whose `cdk destroy`
    fails on AWS ("The bucket you tried to delete is not empty") is destroyed here. With this patch
    the bucket refuses, the stack's other resources are deleted, and the stack stays, in
    `DELETE_FAILED`, with that resource's event; deleting it again once the bucket is empty succeeds.
    """
    from moto.cloudformation.models import CloudFormationBackend
    from moto.s3.models import FakeBucket, s3_backends
    from moto.utilities.utils import get_partition

    original_bucket_delete = FakeBucket.delete_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    original_delete_stack = CloudFormationBackend.delete_stack

    def delete_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any, account_id: str,
                                        region_name: str) -> None:
        from moto.s3.exceptions import BucketNotEmpty

        bucket = s3_backends[account_id][get_partition(region_name)].buckets.get(resource_name)
        if bucket is not None and bucket.keys:
            error = BucketNotEmpty(resource_name)
            error.message = (f"The bucket you tried to delete is not empty. You must delete all versions in the bucket."
                             f" (Bucket: {resource_name})")
            raise error
        original_bucket_delete(cls, resource_name, cloudformation_json, account_id, region_name)

    def delete_stack(self: Any, name_or_stack_id: str) -> None:
        stacks = [s for key, s in self.stacks.items() if name_or_stack_id in (key, s.name)]
        try:
            original_delete_stack(self, name_or_stack_id)
        except SERVICE_ERRORS as error:
            for stack in stacks:  # moto took it out of the live stacks before the refusal: it stays, failed
                self.stacks[stack.stack_id] = stack
                _failed_deletion(stack, error)

    return undo_all(
        replace(FakeBucket, delete_from_cloudformation_json=classmethod(delete_from_cloudformation_json)),
        replace(CloudFormationBackend, delete_stack=delete_stack),
    )


def _failed_deletion(stack: Any, error: BaseException) -> None:
    from moto.cloudformation.models import Event

    bucket = getattr(error, "bucket_name", None)
    logical_id = next((logical for logical, resource in stack.resource_map._parsed_resources.items()
                       if getattr(resource, "physical_resource_id", None) == bucket), stack.name)
    code = getattr(error, "error_type", None) or getattr(error, "code", None) or type(error).__name__
    stack.events.append(Event(
        stack_id=stack.stack_id, stack_name=stack.name, logical_resource_id=logical_id,
        physical_resource_id=bucket or "", resource_type="AWS::S3::Bucket" if bucket else "AWS::CloudFormation::Stack",
        resource_status="DELETE_FAILED",
        resource_status_reason=f"{getattr(error, 'message', None) or error} (Error Code: {code})",
        resource_properties=None,
    ))
    stack.status = "DELETE_FAILED"
    stack._add_stack_event("DELETE_FAILED")


@patch("s3")
def s3_versioning_from_cloudformation() -> Undo:
    """Turn on a CloudFormation bucket's `VersioningConfiguration`.

    moto limitation: its CloudFormation creates `AWS::S3::Bucket` without versioning whatever the
    template says, so the uploads bucket keeps one version per key where S3 keeps them all (and
    their delete markers), which is what makes a stage that ran hard to destroy.
    """
    from moto.s3.models import FakeBucket

    original = FakeBucket.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_from_cloudformation_json(cls: Any, resource_name: str, cloudformation_json: Any, *args: Any,
                                        **kwargs: Any) -> Any:
        bucket = original(cls, resource_name, cloudformation_json, *args, **kwargs)
        status = (cloudformation_json.get("Properties", {}).get("VersioningConfiguration") or {}).get("Status")
        if status in ("Enabled", "Suspended"):
            bucket.versioning_status = status
        return bucket

    return replace(FakeBucket, create_from_cloudformation_json=classmethod(create_from_cloudformation_json))
